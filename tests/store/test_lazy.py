"""Out-of-core reads: stored rows as Dask arrays over dask.array.from_zarr (odinlab.store.lazy)."""

import pickle

import dask
import dask.array as da
import numpy as np
import pytest
import torch

import odinlab
from odinlab.errors import CorruptStoreError, NotMaterializedError, OptionError
from odinlab.nets import SmallCNN
from odinlab.store.lazy import compute, in_memory_limit, lazy_layer, lazy_rows, out_of_core, unit_means

N = 3000  # three Zarr chunks of 1024 rows for features.relu2 of SmallCNN(width=4)
TINY = {"odinlab.in-memory-limit": "1KB"}


@pytest.fixture(scope="module")
def folder_store(tmp_path_factory):
    """A local folder store: N random 8x8 images, relu2 stored as float16, uint8 and float32."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    store = odinlab.open_store(str(tmp_path_factory.mktemp("lazy") / "store"), create=True)
    store.ingest(rng.integers(0, 256, size=(N, 8, 8), dtype=np.uint8), labels=rng.integers(0, 3, N),
                 classes=["a", "b", "c"], ids=[f"img-{i:04d}" for i in range(N)])
    net = SmallCNN(1, 3, width=4)
    store.register_model(net, "cnn")
    for dtype in ("float16", "uint8", "float32"):
        store.materialize(net, ["features.relu2"], dtype=dtype, progress=False)
    return store, net


def _row_sets():
    rng = np.random.default_rng(1)
    return {"contiguous": np.arange(500, 2600), "sorted sparse": np.sort(rng.choice(N, 700, replace=False)),
            "any order with repeats": rng.integers(0, N, 900)}


@pytest.mark.parametrize("dtype", ["float16", "uint8", "float32"])
def test_lazy_rows_decode_to_what_the_array_reads(folder_store, dtype):
    store, _ = folder_store
    target = store.layer_array("cnn@1", "features.relu2", dtype)
    for name, rows in _row_sets().items():
        x = lazy_rows(target, rows)
        assert isinstance(x, da.Array) and x.dtype == np.float32 and x.shape == (len(rows), 8, 8, 8)
        np.testing.assert_array_equal(compute(x)[0], target.read(rows), err_msg=name)


def test_a_contiguous_selection_keeps_the_zarr_chunking(folder_store):
    store, _ = folder_store
    target = store.layer_array("cnn@1", "features.relu2", "float16")
    assert target.values.chunks[0] == 1024
    assert lazy_rows(target, np.arange(N)).chunks[0] == (1024, 1024, N - 2048)
    # a dense but scattered selection is gathered into chunks no bigger than the Zarr chunks
    rows = np.sort(np.random.default_rng(2).choice(N, 2500, replace=False))
    x = lazy_rows(target, rows)
    assert max(x.chunks[0]) <= 1024 and len(x.chunks[0]) <= 4


def test_the_limit_comes_from_dask_config():
    with dask.config.set({"odinlab.in-memory-limit": "3MB"}):
        assert in_memory_limit() == 3_000_000
        assert out_of_core(3_000_001) and not out_of_core(3_000_000)
    with dask.config.set({"odinlab.in-memory-limit": 123}):
        assert in_memory_limit() == 123
    assert in_memory_limit() == 2_000_000_000  # the default, 2GB
    with dask.config.set({"odinlab.in-memory-limit": "lots"}), pytest.raises(OptionError, match="'lots'"):
        in_memory_limit()


def test_rows_not_materialized_are_refused(folder_store, tmp_path):
    store = odinlab.open_store(str(tmp_path / "partial"), create=True)
    store.ingest(np.zeros((20, 8, 8), np.uint8), labels=[0] * 20, classes=["a"], ids=[f"p{i}" for i in range(20)])
    net = SmallCNN(1, 1, width=4)
    store.register_model(net, "cnn")
    store.materialize(net, ["head.fc1"], images=[f"p{i}" for i in range(10)], progress=False)
    target = store.layer_array("cnn@1", "head.fc1")
    assert compute(lazy_rows(target, np.arange(10)))[0].shape == (10, 16)
    with pytest.raises(NotMaterializedError, match="not materialized"):
        lazy_rows(target, np.arange(15))


def test_a_missing_chunk_is_damage_not_zeros(tmp_path):
    store = odinlab.open_store(str(tmp_path / "damaged"), create=True)
    store.ingest(np.random.default_rng(0).integers(0, 256, (2100, 8, 8), dtype=np.uint8), labels=[0] * 2100,
                 classes=["a"], ids=[f"d{i}" for i in range(2100)])
    net = SmallCNN(1, 1, width=4)
    store.register_model(net, "cnn")
    store.materialize(net, ["features.relu2"], progress=False)
    target = store.layer_array("cnn@1", "features.relu2")
    chunk = next(p for p in (tmp_path / "damaged").rglob("values/c/1/*/*/*") if p.is_file())
    chunk.unlink()
    x = lazy_rows(target, np.arange(2100))
    with pytest.raises(CorruptStoreError, match=r"Chunk 1 of array .*rows 1024\.\.2047\) is missing"):
        compute(x)
    np.testing.assert_array_equal(compute(x[:1024])[0], target.read(np.arange(1024)))  # the rest still reads


def test_lazy_rows_travel_to_other_processes(folder_store):
    store, _ = folder_store
    target = store.layer_array("cnn@1", "features.relu2", "uint8")
    x = lazy_rows(target, np.arange(N))
    copy = pickle.loads(pickle.dumps(x))  # what a distributed worker receives: it opens the folder itself
    np.testing.assert_array_equal(copy.compute(scheduler="sync"), target.read(np.arange(N)))


def test_lazy_layer_goes_out_of_core_only_above_the_limit(folder_store):
    store, _ = folder_store
    selection = store.select(None)
    assert lazy_layer(store, "cnn@1", "features.relu2", selection) is None  # 6 MB fits under 2GB
    with dask.config.set(TINY):
        x = lazy_layer(store, "cnn@1", "features.relu2", selection, units=True)
    expected = store.activations("cnn@1", "features.relu2", selection).values.reshape(N, 8, -1).mean(axis=2)
    np.testing.assert_array_equal(compute(x)[0], expected)  # the same numpy mean per row, bit for bit


def test_lazy_layer_materializes_missing_rows_first(folder_store):
    store, net = folder_store
    selection = store.select(None)
    assert store.layer_array("cnn@1", "head.fc1") is None
    with dask.config.set(TINY):
        x = lazy_layer(store, "cnn@1", "head.fc1", selection, module=net)
    assert store.layer_array("cnn@1", "head.fc1").done_rows(selection.rows).all()
    stored = store.activations("cnn@1", "head.fc1", selection, store=False)  # the module's own float32 output
    np.testing.assert_allclose(compute(x)[0], stored.values, rtol=1e-2, atol=1e-3)  # stored as float16


def test_unit_means_average_conv_maps_per_channel():
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 2, 2)
    np.testing.assert_array_equal(compute(unit_means(da.from_array(x, chunks=1)))[0], x.mean(axis=(2, 3)))
