import numpy as np
import polars as pl
import pytest

import odinlab
from odinlab.errors import NotMaterializedError
from odinlab.sampling import (
    BoundaryError,
    boundary_pairs,
    boundary_scores,
    neighbour_mixing,
)


def test_mixing_is_high_near_a_synthetic_boundary():
    rng = np.random.default_rng(0)
    coords = rng.uniform(-1, 1, size=(2000, 2))
    predicted = (coords[:, 0] > 0).astype(int)  # the boundary is x = 0
    mixing = neighbour_mixing(coords, predicted, k=15)
    near, far = np.abs(coords[:, 0]) < 0.05, np.abs(coords[:, 0]) > 0.3
    assert mixing[near].mean() > 0.25
    assert mixing[far].mean() < 0.01
    # the score ranks boundary points first
    top = np.argsort(-mixing)[:100]
    assert np.abs(coords[top, 0]).mean() < 0.05


def test_label_mixing_counts_known_labels_only():
    coords = np.array([[0.0], [0.1], [0.2]])
    mixing = neighbour_mixing(coords, np.array([0, 0, 0]), labels=np.array([0, 1, -1]), k=2)
    assert mixing.tolist() == [0.5, 0.5, 0.0]  # unknown label: prediction mixing only


def test_boundary_scores_from_margin_and_embedding(digits_store):
    store, _ = digits_store
    scores = boundary_scores(store, "cnn@1", "val")
    assert scores["score"].is_between(0, 1).all()
    np.testing.assert_allclose(scores["score"].to_numpy(), 1 - scores["margin"].to_numpy(), atol=1e-6)
    # with an embedding: images in mixed neighbourhoods score higher than the rest
    coords = store.activations("cnn@1", "head.fc1", "val").values[:, :2]
    mixed = boundary_scores(store, "cnn@1", "val", embedding=coords, margin_weight=0.0)
    assert mixed["mixing"].is_between(0, 1).all()
    np.testing.assert_allclose(mixed["score"].to_numpy(), mixed["mixing"].to_numpy())
    # misclassified images sit nearer boundaries than correct ones, by both signals
    wrong = ~store.predictions("cnn@1", "val")["correct"].to_numpy()
    assert wrong.any()
    assert scores["score"].to_numpy()[wrong].mean() > 2 * scores["score"].to_numpy()[~wrong].mean()


def test_boundary_errors(digits_store):
    store, _ = digits_store
    with pytest.raises(BoundaryError, match="one row per selected image"):
        boundary_scores(store, "cnn@1", "val", embedding=np.zeros((3, 2)))
    with pytest.raises(BoundaryError, match="margin_weight"):
        boundary_scores(store, "cnn@1", "val", margin_weight=2)


def test_scores_need_stored_predictions(tiny_store):
    from torch import nn

    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    tiny_store.register_model(net, "lin", input_shape=(1, 8, 8))
    with pytest.raises(NotMaterializedError, match="materialize"):
        boundary_scores(tiny_store, "lin@1", "val")
    assert isinstance(NotMaterializedError("x"), odinlab.OdinError)


def test_boundary_pairs_are_close_and_disagree(digits_store):
    store, _ = digits_store
    emb = odinlab.sampling.Embedding(store, "cnn@1", "head.fc1", reducer="pca", progress=False).fit("val")
    pairs = boundary_pairs(store, "cnn@1", emb, n=10)
    assert pairs.height == 10
    assert (pairs["predicted_a"] != pairs["predicted_b"]).all()
    assert pairs["distance"].is_sorted()
    assert pairs.columns[:2] == ["image_id_a", "image_id_b"]
    ids = pairs["image_id_a"].to_list() + pairs["image_id_b"].to_list()
    assert len(set(ids)) == len(ids)  # distinct
    typical = np.median(np.linalg.norm(emb.embedding_ - emb.embedding_.mean(0), axis=1))
    assert pairs["distance"].max() < typical


def test_scores_take_a_record_a_module_and_a_selection(digits_store):
    store, net = digits_store
    by_id = boundary_scores(store, "cnn@1", "val")
    selection = store.select("val")
    assert by_id.equals(boundary_scores(store, store.model("cnn"), selection))
    assert by_id.equals(boundary_scores(store, net, pl.col("split") == "val"))
    assert by_id["image_id"].to_list() == selection.ids
