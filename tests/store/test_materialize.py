import numpy as np
import polars as pl
import pytest
import torch

import odinlab
from odinlab.nets import SmallCNN

LAYERS = ["features.relu1", "features.relu2", "head.fc1"]


@pytest.fixture
def digits_store(store):
    store.ingest(odinlab.datasets.digits())
    net = SmallCNN(1, 10, width=4)
    store.register_model(net, "cnn")
    return store, net


def _reference(net, store, images, layer):
    """Activations straight from PyTorch, one hook, no store."""
    caught = []
    handle = dict(net.named_modules())[layer].register_forward_hook(lambda m, i, o: caught.append(o))
    with torch.no_grad():
        logits = net.eval()(torch.from_numpy(store.pixels(images).astype(np.float32) / 255))
    handle.remove()
    return caught[0].numpy(), torch.softmax(logits, 1).numpy()


def test_all_layers_come_from_one_forward_pass_per_batch(digits_store):
    store, net = digits_store
    calls = []
    net.register_forward_pre_hook(lambda m, i: calls.append(len(i[0])))
    store.materialize(net, LAYERS, "val", batch_size=100, dtype="float32", progress=False)
    assert calls == [100, 100, 69]


def test_float32_activations_and_predictions_match_pytorch(digits_store):
    store, net = digits_store
    store.materialize(net, LAYERS, "val", dtype="float32", progress=False)
    ids = store.select("val")["image_id"].to_list()[::-1]  # any order, any subset
    for layer in LAYERS:
        expected, probs = _reference(net, store, ids, layer)
        np.testing.assert_allclose(store.activations("cnn@1", layer, ids), expected, rtol=1e-5, atol=1e-6)
    predictions = store.predictions("cnn@1", ids)
    assert predictions["image_id"].to_list() == ids
    np.testing.assert_allclose(np.stack(predictions["probabilities"].to_numpy()), probs, rtol=1e-5, atol=1e-6)
    top = np.sort(probs, 1)
    np.testing.assert_allclose(predictions["margin"].to_numpy(), top[:, -1] - top[:, -2], rtol=1e-4, atol=1e-6)
    labels = predictions["label"].to_numpy()
    assert (predictions["correct"].to_numpy() == (probs.argmax(1) == labels)).all()
    expected_loss = -np.log(probs[np.arange(len(ids)), labels])
    np.testing.assert_allclose(predictions["loss"].to_numpy(), expected_loss, rtol=1e-4)


def test_predictions_are_joined_to_images_and_queryable_in_sql(digits_store):
    store, net = digits_store
    store.materialize(net, images="test", progress=False)
    frame = store.predictions("cnn@1")
    assert frame.height == 270 and {"split", "label_name", "ink"} <= set(frame.columns)
    wrong = store.sql("SELECT COUNT(*) AS n FROM predictions p JOIN images i USING (image_id) "
                      "WHERE NOT p.correct AND i.split = 'test'")["n"][0]
    assert wrong == frame.filter(~pl.col("correct")).height


def test_lossy_dtypes_record_their_reconstruction_error(digits_store):
    store, net = digits_store
    for dtype in ("float32", "float16", "uint8"):
        store.materialize(net, ["features.relu2"], "val", dtype=dtype, progress=False)
    exact = store.activations("cnn@1", "features.relu2", "val", dtype="float32")
    table = store.materialized("cnn@1").filter(pl.col("layer") == "features.relu2")
    errors = dict(zip(table["dtype"], table["mean_relative_error"]))
    assert errors["float32"] == 0 and 0 < errors["float16"] < 1e-3 and errors["float16"] < errors["uint8"] < 0.02
    for dtype in ("float16", "uint8"):
        lossy = store.activations("cnn@1", "features.relu2", "val", dtype=dtype)
        measured = np.linalg.norm(lossy - exact) / np.linalg.norm(exact)
        assert measured == pytest.approx(errors[dtype], rel=0.5)


def test_spatial_summary_pools_conv_maps_to_k_by_k(digits_store):
    store, net = digits_store
    report = store.materialize(net, ["features.relu2", "head.fc1"], "val", dtype="float32",
                               pool={"features.relu2": 2}, progress=False)
    assert report.filter(pl.col("array") == "features.relu2/float32-pool2")["shape"][0].to_list() == [8, 2, 2]
    full, _ = _reference(net, store, "val", "features.relu2")
    pooled = store.activations("cnn@1", "features.relu2", "val", pool=2)
    np.testing.assert_allclose(pooled, full.reshape(-1, 8, 2, 4, 2, 4).mean(axis=(3, 5)), rtol=1e-5, atol=1e-6)


def test_second_call_computes_nothing_and_says_so(digits_store, caplog):
    caplog.set_level("INFO", logger="odinlab")
    store, net = digits_store
    first = store.materialize(net, LAYERS, "val", progress=False)
    assert first["computed"].to_list() == [269] * 4
    calls = []
    net.register_forward_hook(lambda *a: calls.append(1))
    again = store.materialize(net, LAYERS, "val")
    assert calls == [] and again["computed"].to_list() == [0] * 4 and again["reused"].to_list() == [269] * 4
    assert "already materialized" in caplog.text
    # A new layer and one new image: each array computes only the rows it lacks.
    more = store.materialize(net, [*LAYERS, "features.conv1"], ["digits-0000", *store.select("val")["image_id"]],
                             progress=False)
    computed = dict(zip(more["array"], more["computed"]))
    assert computed == {"predictions": 1, "features.relu1/float16": 1, "features.relu2/float16": 1,
                        "head.fc1/float16": 1, "features.conv1/float16": 270}


def test_activations_never_materialized_are_computed_on_demand(digits_store):
    store, net = digits_store
    ids = store.select("test")["image_id"].head(5).to_list()
    values = store.activations("cnn@1", "head.fc1", ids)  # this session registered the module
    expected, _ = _reference(net, store, ids, "head.fc1")
    np.testing.assert_allclose(values, expected, rtol=1e-3, atol=1e-3)
    assert store.materialized("cnn@1").filter(pl.col("layer") == "head.fc1")["images"][0] == 5
    unstored = store.activations("cnn@1", "head.relu", ids, module=net, store=False)
    assert unstored.shape == (5, 16) and store.materialized("cnn@1").filter(pl.col("layer") == "head.relu").height == 0


def test_without_a_module_missing_activations_are_refused_clearly(tmp_path):
    store = odinlab.open_store(tmp_path / "s", create=True)
    store.ingest(odinlab.datasets.digits())
    store.register_model(SmallCNN(1, 10, width=4), "cnn")
    reopened = odinlab.open_store(tmp_path / "s", create=True)
    with pytest.raises(odinlab.NotMaterializedError, match="not materialized for 270 of these 270 images; pass module="):
        reopened.activations("cnn@1", "head.fc1", "test")
    with pytest.raises(LookupError, match="the store keeps weights, not code"):
        reopened.materialize("cnn@1", ["head.fc1"])


def test_lazy_activations_are_a_dask_array_over_zarr(digits_store):
    store, net = digits_store
    store.materialize(net, ["head.fc1"], progress=False)
    lazy = store.activations("cnn@1", "head.fc1", "val", lazy=True)
    assert type(lazy.data).__module__.startswith("dask")
    np.testing.assert_array_equal(lazy.compute(), store.activations("cnn@1", "head.fc1", "val"))


def test_unknown_layer_lists_the_layers_and_closest_matches(digits_store):
    store, net = digits_store
    with pytest.raises(odinlab.UnknownLayerError, match=r"Unknown layer 'head.fc3' of cnn@1\. Did you mean: head.fc2, head.fc1"):
        store.materialize(net, ["head.fc3"], progress=False)
    with pytest.raises(ValueError, match="Layers: features, features.conv1"):
        store.materialize(net, ["conv9"], progress=False)
    assert store.materialized("cnn@1").height == 0


def test_model_whose_input_shape_differs_is_refused_with_both_shapes(digits_store):
    store, _ = digits_store
    rgb = SmallCNN(3, 10, width=4)
    store.register_model(rgb, "rgb", input_shape=(3, 32, 32))
    with pytest.raises(odinlab.ImageFormatError, match=r"expects input \(3, 32, 32\).*images are \(1, 8, 8\)"):
        store.materialize(rgb, ["head.fc1"], progress=False)


def test_auto_batch_size_follows_the_memory_budget(digits_store):
    store, net = digits_store
    small = store.materialize(net, LAYERS, "val", memory_budget="64KB", progress=False)["batch_size"][0]
    large = store.materialize(net, LAYERS, "test", memory_budget="64MB", progress=False)["batch_size"][0]
    assert 1 <= small < large
    per_image = 4 * (4 * 64 * 2 + 8 * 64 * 2 + 8 * 4 + 16 * 2 + 10)  # outputs of every layer, roughly
    assert small <= 64_000 // per_image + 1


def test_a_layer_followed_by_an_inplace_relu_keeps_its_own_output(store):
    store.ingest(odinlab.datasets.digits())
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(inplace=True),
                              torch.nn.Flatten(), torch.nn.Linear(256, 10))
    store.register_model(net, "inplace")
    store.materialize(net, ["0"], "val", dtype="float32", progress=False)
    conv = store.activations("inplace@1", "0", "val")
    with torch.no_grad():
        expected = net[0](torch.from_numpy(store.pixels("val").astype(np.float32) / 255)).numpy()
    assert (conv < 0).any()
    np.testing.assert_allclose(conv, expected, rtol=1e-5, atol=1e-6)


def test_images_ingested_after_a_materialize_can_be_materialized_too(digits_store):
    store, net = digits_store
    store.materialize(net, ["head.fc1"], "val", progress=False)
    extra = np.random.default_rng(3).integers(0, 256, (5, 1, 8, 8), dtype=np.uint8)
    new = store.ingest(extra, labels=[0, 1, 2, 3, 4], split="extra")
    report = store.materialize(net, ["head.fc1"], new["image_id"], progress=False)
    assert report["computed"].to_list() == [5, 5]
    assert store.activations("cnn@1", "head.fc1", new["image_id"]).shape == (5, 16)
    assert store.predictions("cnn@1", "extra").height == 5
