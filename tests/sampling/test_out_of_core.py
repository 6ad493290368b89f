"""Out-of-core class means, top units and embedding features: the same answers, memory bounded by chunks."""

import dask
import dask.array as da
import numpy as np
import polars as pl
import pytest
import torch
from polars.testing import assert_frame_equal
from sklearn.decomposition import PCA
from sklearn.manifold import trustworthiness

import odinlab
from odinlab.nets import SmallCNN
from odinlab.sampling import Embedding, class_means, layer_features, top_units
from odinlab.sampling.pca import BlockPCA
from tests.dask_watch import LargestResult

N = 8192  # eight Zarr chunks of 1024 rows for features.relu2 of SmallCNN(width=4)
TINY = {"odinlab.in-memory-limit": "1KB"}  # forces the out-of-core path


@pytest.fixture(scope="module")
def folder_store(tmp_path_factory):
    """A local folder store (workers in other processes open it too): N random 8x8 images whose label
    follows their brightness, a site column, and relu2 / head.fc1 of a small CNN stored."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(N, 8, 8), dtype=np.uint8)
    labels = np.digitize(images.mean(axis=(1, 2)), np.quantile(images.mean(axis=(1, 2)), [0.25, 0.5, 0.75]))
    store = odinlab.open_store(str(tmp_path_factory.mktemp("ooc") / "store"), create=True)
    store.ingest(images, labels=labels, classes=["q1", "q2", "q3", "q4"], ids=[f"img-{i:05d}" for i in range(N)],
                 split=rng.choice(["train", "val"], N).tolist(), metadata={"site": rng.choice(["x", "y", "z"], N)})
    net = SmallCNN(1, 4, width=4)
    store.register_model(net, "cnn")
    store.materialize(net, ["features.relu2", "head.fc1"], progress=False)
    return store, net


def _layer_bytes(store, layer):
    return N * int(np.prod(store.layer_array("cnn@1", layer).values.shape[1:])) * 4  # decoded float32


@pytest.mark.parametrize("layer", ["features.relu2", "head.fc1"])
@pytest.mark.parametrize("by", ["label", "site"])
def test_class_means_out_of_core_equal_the_in_memory_answer(folder_store, layer, by):
    store, _ = folder_store
    expected = class_means(store, "cnn@1", layer, by=by)
    with dask.config.set(TINY):
        got = class_means(store, "cnn@1", layer, by=by)
    assert_frame_equal(got, expected, check_exact=False, rel_tol=1e-9, abs_tol=1e-12)
    assert got.unique(by)["n"].sum() == N and float(got["estimate"].std()) > 0  # real, varied means


def test_class_means_out_of_core_hold_chunks_not_the_layer(folder_store):
    store, _ = folder_store
    with dask.config.set(TINY), LargestResult() as watch:
        class_means(store, "cnn@1", "features.relu2")
    total = _layer_bytes(store, "features.relu2")
    assert 0 < watch.largest <= total / 6  # one chunk of 1024 of the 8192 rows (and small partial sums)


@pytest.mark.parametrize("layer", ["features.relu2", "head.fc1"])
def test_top_units_out_of_core_equal_the_in_memory_answer(folder_store, layer):
    store, _ = folder_store
    expected = top_units(store, "cnn@1", layer, k=None)
    with dask.config.set(TINY):
        got = top_units(store, "cnn@1", layer, k=None)
    # Sums in another order can swap units whose scores tie to the last bit: compare unit by unit.
    key = ["label", "unit"]
    assert_frame_equal(got.drop("rank").sort(key), expected.drop("rank").sort(key), check_exact=False, rel_tol=1e-9)
    assert float(expected["score"].max()) > 0.05
    for frame in (got, expected):  # ranks follow the score within each class
        ranked = frame.sort(["label", "rank"])
        assert ranked.group_by("label").agg(pl.col("score").diff().max())["score"].max() <= 1e-12


def test_top_units_of_one_value_out_of_core(folder_store):
    store, _ = folder_store
    expected = top_units(store, "cnn@1", "features.relu2", by="site", value="y", k=3)
    with dask.config.set(TINY):
        got = top_units(store, "cnn@1", "features.relu2", by="site", value="y", k=3)
    assert_frame_equal(got, expected, check_exact=False, rel_tol=1e-9)


def test_top_units_out_of_core_hold_unit_blocks_not_the_layer(folder_store):
    store, _ = folder_store
    with dask.config.set(TINY), LargestResult() as watch:
        top_units(store, "cnn@1", "features.relu2", k=2)
    # the raw layer is 8192 x 512 floats; the unit blocks are 8192 x 1 spatial means
    assert 0 < watch.largest <= _layer_bytes(store, "features.relu2") / 6


def test_layer_features_out_of_core_are_lazy_and_equal(folder_store):
    store, _ = folder_store
    expected = layer_features(store, "cnn@1", "features.relu2", "val", spatial="mean")
    with dask.config.set(TINY):
        got = layer_features(store, "cnn@1", "features.relu2", "val", spatial="mean")
        flat = layer_features(store, "cnn@1", "features.relu2", "val")
    assert isinstance(got.data, da.Array) and got.dims == expected.dims == ("image_id", "feature")
    assert got.image_id.values.tolist() == expected.image_id.values.tolist()
    np.testing.assert_array_equal(got.data.compute(), expected.values)
    assert flat.shape == (expected.shape[0], 512) and flat.chunks[0][0] <= 1024


def test_block_pca_equals_scikit_learn_pca_on_tall_features(folder_store):
    store, _ = folder_store
    with dask.config.set(TINY):
        lazy = layer_features(store, "cnn@1", "head.fc1", None).data
    x = lazy.compute().astype(np.float64)  # in float32, scikit-learn's own covariance loses ~1e-3
    reference = PCA(n_components=6, svd_solver="covariance_eigh").fit(x)
    fitted = BlockPCA(6).fit(lazy)
    np.testing.assert_allclose(fitted.components_, reference.components_, atol=1e-6)
    np.testing.assert_allclose(fitted.explained_variance_, reference.explained_variance_, rtol=1e-6)
    scale = np.abs(reference.transform(x)).max()
    np.testing.assert_allclose(fitted.transform(lazy), reference.transform(x), atol=1e-4 * scale)
    back = fitted.inverse_transform(fitted.transform(x))
    assert np.abs(back - x).mean() < np.abs(x - x.mean(axis=0)).mean()  # the 6 components explain most


def test_pca_embedding_out_of_core_equals_the_in_memory_one(folder_store):
    store, _ = folder_store
    selection = store.select("val")
    expected = Embedding(store, "cnn@1", "head.fc1", reducer="pca", progress=False).fit(selection)
    with dask.config.set(TINY):  # reversed: another image set, so it is fitted, not read from the cache
        got = Embedding(store, "cnn@1", "head.fc1", reducer="pca", progress=False).fit(selection[::-1])
        placed = got.transform(selection[:40]).values
    assert not got.from_cache_
    scale = np.abs(expected.embedding_).max()
    np.testing.assert_allclose(got.embedding_[::-1], expected.embedding_, atol=1e-4 * scale)
    np.testing.assert_allclose(placed, expected.embedding_[:40], atol=1e-4 * scale)


def test_umap_out_of_core_runs_on_the_pca_features_and_keeps_neighbours(folder_store):
    store, _ = folder_store
    selection = store.select(None)[:1500]
    expected = Embedding(store, "cnn@1", "features.relu2", pca=8, progress=False).fit(selection)
    with dask.config.set(TINY):
        got = Embedding(store, "cnn@1", "features.relu2", pca=8, progress=False).fit(selection[::-1])
    features = store.activations("cnn@1", "features.relu2", selection).values.reshape(len(selection), -1)
    # UMAP is chaotic under 1e-6 input changes, so coordinates are not compared; its quality is.
    kept = [trustworthiness(features, e, n_neighbors=10) for e in (expected.embedding_, got.embedding_[::-1])]
    assert min(kept) > 0.7 and abs(kept[0] - kept[1]) < 0.03  # a random layout scores about 0.5


def test_pca_of_features_out_of_core_holds_chunks_not_the_layer(folder_store):
    store, _ = folder_store
    with dask.config.set(TINY), LargestResult() as watch:
        emb = Embedding(store, "cnn@1", "features.relu2", reducer="pca", spatial="mean", progress=False).fit()
    assert emb.embedding_.shape == (N, 2)
    assert 0 < watch.largest <= _layer_bytes(store, "features.relu2") / 6  # a chunk, then N x 2 coordinates


def test_class_means_and_top_units_on_a_cluster_equal_the_local_answers(folder_store, client):
    store, _ = folder_store
    assert len(client.scheduler_info()["workers"]) == 2
    local_means = class_means(store, "cnn@1", "features.relu2", "val")
    local_top = top_units(store, "cnn@1", "features.relu2", "val", k=4)
    assert_frame_equal(class_means(store, "cnn@1", "features.relu2", "val", scheduler=client), local_means,
                       check_exact=False, rel_tol=1e-9)
    with odinlab.parallel(client):
        on_cluster = top_units(store, "cnn@1", "features.relu2", "val", k=4)
    assert_frame_equal(on_cluster.drop("rank"), local_top.drop("rank"), check_exact=False, rel_tol=1e-9)
    tasks = client.run(lambda dask_worker: len(dask_worker.data) + dask_worker.state.executed_count)
    assert all(count > 0 for count in tasks.values())  # both workers took part
