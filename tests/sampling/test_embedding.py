import time

import numpy as np
import pytest
import torch
from torch import nn

import odinlab
from odinlab.errors import NotMaterializedError, OdinError, UnknownLayerError
from odinlab.sampling import Embedding, EmbeddingError, boundary_scores
from odinlab.sampling import embedding as embedding_module

IMAGES = "SELECT image_id FROM images WHERE split = 'train' AND source_index < 700"


@pytest.fixture(scope="module")
def fitted(digits_store):
    """The one UMAP fit of this module (numba compiles UMAP on the first call)."""
    store, _ = digits_store
    start = time.perf_counter()
    emb = Embedding(store, "cnn@1", "head.fc1", pca=20, n_neighbors=10, seed=0, progress=False).fit(IMAGES)
    return emb, time.perf_counter() - start


def test_fit_stores_coordinates_and_second_fit_is_a_read(digits_store, fitted, monkeypatch):
    store, _ = digits_store
    emb, fit_s = fitted
    assert emb.embedding_.shape == (len(emb.image_ids_), 2) and not emb.from_cache_
    calls = []
    monkeypatch.setattr(embedding_module, "layer_features", lambda *a, **k: calls.append(1))
    start = time.perf_counter()
    again = Embedding(store, "cnn@1", "head.fc1", pca=20, n_neighbors=10, seed=0, progress=False).fit(IMAGES)
    read_s = time.perf_counter() - start
    assert again.from_cache_ and calls == [] and read_s < fit_s / 5
    np.testing.assert_array_equal(again.embedding_, emb.embedding_)
    assert again.image_ids_ == emb.image_ids_


def test_other_parameters_are_another_fit(digits_store, fitted):
    store, _ = digits_store
    other = Embedding(store, "cnn@1", "head.fc1", reducer="pca", progress=False).fit(IMAGES)
    assert not other.from_cache_ and other.key != fitted[0].key


def test_deterministic_refit_in_a_new_session_reproduces_the_coordinates(digits_store, fitted):
    store, _ = digits_store
    emb, _ = fitted
    first = emb.transform(["digits-0001", "digits-0003"]).values
    reopened = odinlab.open_store(store.url)  # a new Store object: no fitted reducer in its session
    embedding_module._SESSION.pop(store, None)
    emb2 = Embedding(reopened, "cnn@1", "head.fc1", pca=20, n_neighbors=10, seed=0, progress=False).fit(IMAGES)
    assert emb2.from_cache_
    second = emb2.transform(["digits-0001", "digits-0003"]).values  # refits with the same seed
    np.testing.assert_allclose(second, first, atol=1e-4)
    _, reducer = embedding_module._SESSION[reopened][("cnn@1", emb2.key)]
    np.testing.assert_allclose(reducer.embedding_, emb.embedding_, atol=1e-4)


def test_transformed_new_images_land_near_their_neighbours(digits_store, fitted):
    store, _ = digits_store
    emb, _ = fitted
    new = store.select("test")["image_id"]
    assert not set(new) & set(emb.image_ids_)
    transformed = emb.transform(new)
    assert transformed.dims == ("image_id", "component") and transformed.image_id.values.tolist() == new.to_list()
    points = transformed.values
    # the 5 fitted images nearest to each new one are mostly predicted like it (chance: ~0.1)
    predicted_fit = store.predictions("cnn@1", emb.image_ids_)["predicted"].to_numpy()
    predicted_new = store.predictions("cnn@1", new)["predicted"].to_numpy()
    nearest = np.argsort(((points[:, None, :] - emb.embedding_[None, :, :]) ** 2).sum(-1), axis=1)[:, :5]
    agreement = (predicted_fit[nearest] == predicted_new[:, None]).mean()
    assert agreement > 0.8
    # coordinates() reads the fitted ones and transforms the rest
    mixed = emb.coordinates([emb.image_ids_[0], new[0]])
    assert mixed.image_id.values.tolist() == [emb.image_ids_[0], new[0]]
    np.testing.assert_array_equal(mixed.values[0], emb.embedding_[0])
    np.testing.assert_allclose(mixed.values[1], emb.transform([new[0]]).values[0], atol=1e-4)  # same result


def test_inverse_transform_and_predict(digits_store, fitted):
    store, net = digits_store
    emb, _ = fitted
    features = emb.inverse_transform(emb.embedding_[:20])
    assert features.shape == (20, 64)
    probs = emb.predict(emb.embedding_[:50], module=net)
    assert probs.shape == (50, 10) and np.allclose(probs.sum(1), 1, atol=1e-5)
    predicted = store.predictions("cnn@1", emb.image_ids_[:50])["predicted"].to_numpy()
    assert (probs.argmax(1) == predicted).mean() > 0.6


def test_frame_joins_predictions(digits_store, fitted):
    emb, _ = fitted
    frame = emb.frame()
    assert frame.columns[:3] == ["image_id", "x", "y"]
    assert {"label", "predicted", "margin", "correct"} <= set(frame.columns)
    assert frame.height == len(emb.image_ids_) and frame["predicted"].null_count() == 0
    assert frame["image_id"].to_list() == emb.image_ids_
    np.testing.assert_array_equal(frame.select("x", "y").to_numpy(), emb.embedding_)


def test_coordinates_come_back_labelled(fitted):
    emb, _ = fitted
    coords = emb.coordinates()
    assert coords.dims == ("image_id", "component") and coords.shape == emb.embedding_.shape
    assert coords.image_id.values.tolist() == emb.image_ids_
    np.testing.assert_array_equal(coords.values, emb.embedding_)
    one = coords.sel(image_id=emb.image_ids_[5]).values
    np.testing.assert_array_equal(one, emb.embedding_[5])


def test_model_is_an_id_a_name_a_record_or_the_module(digits_store):
    store, net = digits_store
    first = Embedding(store, "cnn@1", "head.fc1", reducer="pca", progress=False).fit("val")
    for model in ("cnn", store.model("cnn@1"), net):
        again = Embedding(store, model, "head.fc1", reducer="pca", progress=False).fit("val")
        assert again.model_id == "cnn@1" and again.key == first.key and again.from_cache_
    assert Embedding(store, net, "head.fc1", reducer="pca", progress=False).module is net


def test_predict_restores_the_mode_and_removes_its_hook(digits_store, fitted):
    from odinlab.sampling import between_classes

    _, net = digits_store
    emb, _ = fitted
    layer = dict(net.named_modules())["head.fc1"]
    hooks_before, was_training = len(layer._forward_hooks), net.training
    net.train()
    try:
        probs = emb.predict(emb.embedding_[:5], module=net)
        assert net.training and len(layer._forward_hooks) == hooks_before
    finally:
        net.train(was_training)
    np.testing.assert_allclose(probs, emb.predict(emb.embedding_[:5]), atol=1e-6)  # the session's module
    line = between_classes(emb, "0", "1", steps=3, module=net)
    assert line["t"].to_list() == [0.0, 0.5, 1.0]
    ends = emb.predict(line.select("x", "y").to_numpy(), module=net)  # p is the predicted class's probability
    np.testing.assert_allclose(line["p"].to_numpy(), ends.max(axis=1), atol=1e-6)
    assert line["predicted"].to_list() == ends.argmax(axis=1).tolist()
    with pytest.warns(DeprecationWarning, match="module="):
        old = between_classes(emb, "0", "1", steps=3, model=net)
    assert old.equals(line)


def test_two_unit_layer_is_used_as_is(store):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    store.ingest(rng.integers(0, 256, (40, 8, 8), dtype=np.uint8), labels=rng.integers(0, 2, 40), classes=["a", "b"])
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 2), nn.Linear(2, 2))
    store.register_model(net, "flat", input_shape=(1, 8, 8))
    store.materialize(net, ["1"], dtype="float32", progress=False)
    emb = Embedding(store, "flat@1", "1", progress=False).fit()  # reducer="umap", but 2-D already
    np.testing.assert_allclose(emb.embedding_, store.activations("flat@1", "1").values, atol=1e-6)
    scores = boundary_scores(store, "flat@1", embedding=emb.embedding_)  # an array is used as is too
    assert scores.height == 40


def test_never_materialized_layer_without_module_is_a_clear_error(digits_store):
    store, net = digits_store
    reopened = odinlab.open_store(store.url)  # this session has no module for cnn@1
    with pytest.raises(NotMaterializedError, match="pass module="):
        Embedding(reopened, "cnn@1", "features.conv1", reducer="pca", progress=False).fit("val")
    emb = Embedding(reopened, "cnn@1", "features.relu1", reducer="pca", spatial="mean", module=net,
                    progress=False).fit("val")
    assert emb.embedding_.shape == (269, 2)


def test_bad_input(digits_store):
    store, _ = digits_store
    with pytest.raises(UnknownLayerError, match="Did you mean"):
        Embedding(store, "cnn@1", "head.fc3", progress=False).fit("val")
    with pytest.raises(EmbeddingError):
        Embedding(store, "cnn@1", "head.fc1", reducer="tsne")
    with pytest.raises(EmbeddingError, match="n_neighbors"):
        Embedding(store, "cnn@1", "head.fc1", pca=None, progress=False).fit(["digits-0000", "digits-0001"])
    with pytest.raises(EmbeddingError, match="not fitted"):
        Embedding(store, "cnn@1", "head.fc1").transform("val")
    with pytest.raises(OdinError):
        Embedding(store, "cnn@1", "head.fc1", reducer=None, progress=False).fit("val")
    with pytest.raises(EmbeddingError, match="spatial"):
        Embedding(store, "cnn@1", "head.fc1", spatial="max")
