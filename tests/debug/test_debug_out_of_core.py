"""Out-of-core unit scores and layer CKA: the same answers, memory bounded by chunks."""

import dask
import numpy as np
import pytest
import torch
from polars.testing import assert_frame_equal

import odinlab
from odinlab.debug import compare, units
from odinlab.nets import SmallCNN
from tests.dask_watch import LargestResult

N = 8192  # eight Zarr chunks of 1024 rows for features.relu2 of SmallCNN(width=4)
TINY = {"odinlab.in-memory-limit": "1KB"}  # forces the out-of-core path
LAYERS = ["features.relu2", "head.fc1"]


@pytest.fixture(scope="module")
def folder_store(tmp_path_factory):
    """A local folder store: N random 8x8 images (label from brightness, a site and a numeric age), two
    versions of a small CNN (v2 = v1 with a retrained head) with relu2 and head.fc1 stored."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(N, 8, 8), dtype=np.uint8)
    brightness = images.mean(axis=(1, 2))
    store = odinlab.open_store(str(tmp_path_factory.mktemp("ooc") / "store"), create=True)
    store.ingest(images, labels=np.digitize(brightness, np.quantile(brightness, [0.25, 0.5, 0.75])),
                 classes=["q1", "q2", "q3", "q4"], ids=[f"img-{i:05d}" for i in range(N)],
                 metadata={"site": rng.choice(["x", "y", "z"], N), "age": rng.integers(0, 90, N)})
    v1 = SmallCNN(1, 4, width=4)
    store.register_model(v1, "cnn")
    v2 = store.load_weights(SmallCNN(1, 4, width=4), "cnn@1")
    torch.nn.init.normal_(v2.head.fc1.weight)
    store.register_model(v2, "cnn", parent="cnn@1")
    for net in (v1, v2):
        store.materialize(net, LAYERS, progress=False)
    return store


def _reversed(store):
    """All images in reverse order: the same answers, another cache key (so it is computed again)."""
    return store.select(None)[::-1]


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("by", ["label", "site", "age"])
def test_unit_scores_out_of_core_equal_the_in_memory_answer(folder_store, layer, by):
    store = folder_store
    expected = units.unit_scores(store, "cnn@1", layer, None, by=by)
    with dask.config.set(TINY):
        got = units.unit_scores(store, "cnn@1", layer, _reversed(store), by=by)
    key = ["unit"] if by == "age" else [by, "unit"]  # tied scores may swap: compare unit by unit
    assert_frame_equal(got.sort(key), expected.sort(key), check_exact=False, rel_tol=1e-9, abs_tol=1e-12)
    assert float(expected["score"].max()) > 0.02  # something real to compare


def test_unit_scores_out_of_core_hold_unit_blocks_not_the_layer(folder_store):
    store = folder_store
    with dask.config.set(TINY), LargestResult() as watch:
        units.unit_scores(store, "cnn@1", "features.relu2", store.select(None)[::2][::-1])
    total = N * 512 * 4  # the layer, decoded
    assert 0 < watch.largest <= total / 6


def test_cka_matrix_out_of_core_equals_the_in_memory_answer(folder_store):
    store = folder_store
    expected = compare.cka_matrix(store, "cnn@1", "cnn@2", LAYERS, LAYERS)
    with dask.config.set(TINY):
        got = compare.cka_matrix(store, "cnn@1", "cnn@2", LAYERS, LAYERS, _reversed(store))
    assert_frame_equal(got, expected, check_exact=False, rel_tol=1e-9)
    cka = dict(zip(zip(got["layer_a"], got["layer_b"]), got["cka"]))
    assert cka["features.relu2", "features.relu2"] == pytest.approx(1.0)  # the frozen features
    assert cka["head.fc1", "head.fc1"] < 0.99  # the retrained head


def test_cka_out_of_core_holds_chunks_not_the_layers(folder_store):
    store = folder_store
    selection = store.select(None)[1::2][::-1]
    with dask.config.set(TINY), LargestResult() as watch:
        got = compare.cka_matrix(store, "cnn@1", "cnn@2", ["features.relu2"], ["head.fc1"], selection)
    x = store.activations("cnn@1", "features.relu2", selection).values
    y = store.activations("cnn@2", "head.fc1", selection).values
    assert got["cka"][0] == pytest.approx(compare.linear_cka(x, y), rel=1e-9)
    # chunks of rows and 512 x 512 cross-products (2 MB): far below the 4096 x 512 floats of relu2 (8 MB)
    assert 0 < watch.largest <= x.nbytes / 3


def test_unit_scores_and_cka_on_a_cluster_equal_the_local_answers(folder_store, client):
    store = folder_store
    selection = store.select(None)[:4000]
    local = units.unit_scores(store, "cnn@1", "features.relu2", selection, by="site")
    on_cluster = units.unit_scores(store, "cnn@1", "features.relu2", selection[::-1], by="site", scheduler=client)
    assert_frame_equal(on_cluster.sort("site", "unit"), local.sort("site", "unit"), check_exact=False, rel_tol=1e-9)
    local = compare.cka_matrix(store, "cnn@1", "cnn@2", LAYERS, ["head.fc1"], selection)
    with odinlab.parallel(client):
        on_cluster = compare.cka_matrix(store, "cnn@1", "cnn@2", LAYERS, ["head.fc1"], selection[::-1])
    assert_frame_equal(on_cluster, local, check_exact=False, rel_tol=1e-9)
