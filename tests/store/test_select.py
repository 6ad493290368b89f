"""Selecting images (all, a split, ids, a frame) and reading their pixels and model batches."""

import uuid

import numpy as np
import polars as pl
import pytest
import zarr

import odinlab
from odinlab.store import ingest as ingest_module

N = 40
IDS = [f"im{i:02d}" for i in range(N)]
SPLITS = ["train"] * 20 + ["val"] * 10 + ["test"] * 10


@pytest.fixture
def pixels():
    images = np.random.default_rng(0).integers(0, 256, (N, 6, 6), dtype=np.uint8)
    images[0] = 0      # the extremes, to check the [0, 1] scaling
    images[1] = 255
    return images


@pytest.fixture
def store(monkeypatch, pixels):
    """40 labelled 1x6x6 images, chunks of 3 images, split 20/10/10 in order."""
    monkeypatch.setattr(ingest_module, "CHUNK_BYTES", 3 * 36)
    store = odinlab.open_store(f"memory://select-{uuid.uuid4().hex}", create=True)
    store.ingest(pixels, labels=np.arange(N) % 4, classes=list("abcd"), split=SPLITS, ids=IDS,
                 metadata={"age": np.arange(N) * 2}, batch_size=16)
    assert store.pixel_array.chunks[0] == 3
    return store


@pytest.fixture
def gathers(monkeypatch):
    """Reads that gather rows by an index array (Zarr's orthogonal selection), not by a slice."""
    calls = []
    real = zarr.Array.get_orthogonal_selection

    def spy(self, selection, *args, **kwargs):
        parts = selection if isinstance(selection, tuple) else (selection,)
        if any(isinstance(part, np.ndarray) for part in parts):
            calls.append(selection)
        return real(self, selection, *args, **kwargs)

    monkeypatch.setattr(zarr.Array, "get_orthogonal_selection", spy)
    return calls


def rows_of(ids):
    return [IDS.index(i) for i in ids]


def test_select_all_returns_every_image_without_internal_columns(store):
    table = store.select()
    assert table["image_id"].to_list() == IDS
    assert "_row" not in table.frame.columns
    assert table.frame.columns == ["image_id", "split", "label", "label_name", "age"]
    np.testing.assert_array_equal(store.pixels()[:, 0], np.stack(
        [store.pixels([i])[0, 0] for i in IDS]))


def test_select_a_split(store, pixels):
    val = store.select("val")
    assert val["image_id"].to_list() == IDS[20:30]
    assert set(val["split"]) == {"val"}
    np.testing.assert_array_equal(store.pixels("val")[:, 0], pixels[20:30])


def test_select_a_single_id_by_string(store, pixels):
    assert store.select("im07")["image_id"].to_list() == ["im07"]
    np.testing.assert_array_equal(store.pixels("im07")[:, 0], pixels[7:8])


def test_pixels_follow_a_shuffled_id_order(store, pixels):
    order = np.random.default_rng(1).permutation(N)
    ids = [IDS[i] for i in order]
    assert store.select(ids)["image_id"].to_list() == ids
    np.testing.assert_array_equal(store.pixels(ids)[:, 0], pixels[order])


def test_dense_selection_is_one_contiguous_read(store, pixels, gathers):
    ids = ["im12", "im10", "im11", "im13"]
    np.testing.assert_array_equal(store.pixels(ids)[:, 0], pixels[rows_of(ids)])
    assert gathers == []


def test_sparse_selection_far_apart_uses_the_gather_path(store, pixels, gathers):
    ids = ["im39", "im00", "im21", "im05"]  # 4 rows spread over 40: a contiguous read would waste
    got = store.pixels(ids)
    assert len(gathers) == 1
    np.testing.assert_array_equal(gathers[0][0], [0, 5, 21, 39])  # sorted rows, one gather
    np.testing.assert_array_equal(got[:, 0], pixels[rows_of(ids)])


def test_repeated_ids_are_read_once_per_mention(store, pixels, gathers):
    sparse = ["im30", "im02", "im30", "im38"]
    np.testing.assert_array_equal(store.pixels(sparse)[:, 0], pixels[rows_of(sparse)])
    dense = ["im04", "im04", "im05"]
    np.testing.assert_array_equal(store.pixels(dense)[:, 0], pixels[rows_of(dense)])
    assert store.select(sparse)["image_id"].to_list() == sparse


def test_selection_by_frame_series_and_numpy_array(store, pixels):
    frame = store.images.filter(pl.col("age") >= 70).sort("age", descending=True)
    assert store.select(frame)["image_id"].to_list() == ["im39", "im38", "im37", "im36", "im35"]
    np.testing.assert_array_equal(store.pixels(frame)[:, 0], pixels[[39, 38, 37, 36, 35]])
    series = pl.Series(["im03", "im01"])
    np.testing.assert_array_equal(store.pixels(series)[:, 0], pixels[[3, 1]])
    np.testing.assert_array_equal(store.pixels(np.array(["im03", "im01"]))[:, 0], pixels[[3, 1]])


def test_sql_result_can_select_images(store, pixels):
    picked = store.sql("SELECT image_id FROM images WHERE label_name = 'b' AND split = 'val' ORDER BY age")
    assert picked["image_id"].to_list() == ["im21", "im25", "im29"]
    np.testing.assert_array_equal(store.pixels(picked)[:, 0], pixels[[21, 25, 29]])


def test_empty_selection_has_the_stores_pixel_shape_and_dtype(store):
    empty = store.pixels([])
    assert empty.shape == (0, 1, 6, 6) and empty.dtype == np.uint8
    assert len(store.select([])) == 0
    assert list(store.batches([])) == []


def test_empty_selection_of_a_float_store_is_float32():
    store = odinlab.open_store(f"memory://select-{uuid.uuid4().hex}", create=True)
    store.ingest(np.random.default_rng(2).random((2, 5, 5)), ids=["a", "b"])
    empty = store.pixels([])
    assert empty.shape == (0, 1, 5, 5) and empty.dtype == np.float32


def test_empty_store_selects_nothing_and_has_no_pixel_array():
    store = odinlab.open_store(f"memory://select-{uuid.uuid4().hex}", create=True)
    assert len(store.select()) == 0
    assert store.pixels().shape[0] == 0
    with pytest.raises(odinlab.UnknownImageError, match="no images yet"):
        store.pixel_array


def test_unknown_ids_are_refused_naming_them(store):
    with pytest.raises(odinlab.UnknownImageError, match=r"2 unknown image ids, e\.g\. nope, zzz"):
        store.pixels(["im01", "nope", "zzz"])
    with pytest.raises(KeyError):  # UnknownImageError is a KeyError too
        store.select(["im01", "nope"])
    with pytest.raises(odinlab.UnknownImageError, match="unknown image ids"):
        list(store.batches(["nope"]))


def test_unknown_split_is_refused_listing_the_splits(store):
    with pytest.raises(odinlab.UnknownImageError,
                       match=r"'valid' is neither an image id nor a split\. Splits: test, train, val\."):
        store.select("valid")
    with pytest.raises(KeyError):
        store.pixels("tset")


def test_batches_yield_float32_in_unit_range_covering_the_selection_in_order(store, pixels):
    order = np.random.default_rng(3).permutation(N)
    ids = [IDS[i] for i in order]
    seen_ids, chunks = [], []
    for rows, x in store.batches(ids, batch_size=16):
        assert x.dtype == np.float32 and x.shape[1:] == (1, 6, 6)
        assert rows.height == len(x) <= 16
        assert rows.columns == store.images.columns  # the same rows as store.images, label_name too
        seen_ids += rows["image_id"].to_list()
        chunks.append(x)
    assert [len(c) for c in chunks] == [16, 16, 8]
    assert seen_ids == ids
    x = np.concatenate(chunks)
    assert x.min() == 0.0 and x.max() == 1.0
    np.testing.assert_allclose(x[:, 0], pixels[order].astype(np.float32) / 255, rtol=0, atol=1e-7)


def test_batches_of_a_split(store, pixels):
    batches = list(store.batches("train", batch_size=7))
    assert [rows.height for rows, _ in batches] == [7, 7, 6]
    assert pl.concat([rows for rows, _ in batches])["image_id"].to_list() == IDS[:20]
    assert np.array_equal(np.concatenate([x for _, x in batches])[:, 0] * 255, pixels[:20].astype(np.float32))


def test_batches_of_float_images_pass_values_through():
    store = odinlab.open_store(f"memory://select-{uuid.uuid4().hex}", create=True)
    images = np.random.default_rng(4).standard_normal((5, 1, 3, 3)).astype(np.float32)
    store.ingest(images, ids=list("abcde"), layout="NCHW")
    (rows, x), = list(store.batches())
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x, images)


def test_read_only_store_can_select_and_read(tmp_path, pixels):
    path = tmp_path / "store"
    odinlab.open_store(path, create=True).ingest(pixels, ids=IDS, split=SPLITS)
    reader = odinlab.open_store(path, mode="r")
    assert reader.read_only
    np.testing.assert_array_equal(reader.pixels(["im05", "im33"])[:, 0], pixels[[5, 33]])
    assert len(reader.select("test")) == 10


def test_a_sql_query_selects_images_by_metadata():
    store = odinlab.open_store(f"memory://{uuid.uuid4().hex}", create=True)
    store.ingest(np.arange(4 * 64, dtype=np.uint8).reshape(4, 8, 8), labels=[0, 1, 0, 1],
                 metadata={"age": [20, 60, 70, 30]}, ids=["a", "b", "c", "d"])
    chosen = store.select("SELECT image_id FROM images WHERE age > 50 ORDER BY age DESC")
    assert chosen["image_id"].to_list() == ["c", "b"]
    np.testing.assert_array_equal(store.pixels("select image_id from images where age < 25"), store.pixels(["a"]))
    with pytest.raises(odinlab.UnknownImageError, match="select image_id"):
        store.select("SELECT age FROM images")
