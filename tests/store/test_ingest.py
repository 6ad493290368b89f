"""Ingesting arrays: layouts, labels, splits, metadata, ids, bad input, and all-or-nothing writes."""

import uuid

import numpy as np
import pandas as pd
import polars as pl
import pytest

import odinlab
from odinlab.store import ingest as ingest_module


def memory_store():
    # fsspec's memory filesystem is global to the process: every store needs its own name.
    return odinlab.open_store(f"memory://ingest-{uuid.uuid4().hex}", create=True)


@pytest.fixture(params=["memory", "folder"])
def store(request, tmp_path):
    return memory_store() if request.param == "memory" else odinlab.open_store(tmp_path / "store", create=True)


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 4 images of 1x8x8 uint8, so that tiny stores span several chunks."""
    monkeypatch.setattr(ingest_module, "CHUNK_BYTES", 4 * 64)


def gray(n, seed=0, size=(8, 8)):
    return np.random.default_rng(seed).integers(0, 256, (n, *size), dtype=np.uint8)


def snapshot(store):
    """Everything a failed ingest must leave as it was."""
    table = store._backend.tables.read("images")
    has_pixels = "images/pixels" in store._backend.arrays()
    return {
        "images": store.images,
        "table": table,
        "classes": store.classes,
        "shape": store.pixel_array.shape if has_pixels else None,
        "pixels": store.pixels() if table.height else None,
    }


def assert_unchanged(store, before):
    after = snapshot(store)
    assert after["images"].equals(before["images"])
    assert after["table"].equals(before["table"])
    assert after["classes"] == before["classes"]
    assert after["shape"] == before["shape"]
    if before["pixels"] is None:
        assert after["pixels"] is None
    else:
        np.testing.assert_array_equal(after["pixels"], before["pixels"])
    # A store opened afresh sees the same thing (nothing half-written on disk either).
    reopened = odinlab.open_store(store.url)
    assert reopened.images.equals(before["images"]) and reopened.classes == before["classes"]


# -- stores ------------------------------------------------------------------------------------


def test_memory_and_folder_stores_open_empty_and_keep_images(store):
    assert store.images.height == 0 and store.classes == []
    store.ingest(gray(3), labels=[0, 1, 1])
    reopened = odinlab.open_store(store.url)
    assert reopened.images.height == 3
    np.testing.assert_array_equal(reopened.pixels()[:, 0], gray(3))


def test_memory_stores_with_different_names_are_separate():
    first, second = memory_store(), memory_store()
    first.ingest(gray(2))
    assert first.images.height == 2 and second.images.height == 0


def test_folder_store_lays_out_zarr_and_parquet(tmp_path):
    store = odinlab.open_store(tmp_path / "s", create=True)
    store.ingest(gray(2))
    assert (tmp_path / "s" / "odinlab.json").is_file()
    assert (tmp_path / "s" / "tables" / "manifest.json").is_file()  # names each table's Parquet file
    assert (tmp_path / "s" / store._backend.tables.object_of("images")).is_file()
    assert (tmp_path / "s" / "arrays" / "images" / "pixels" / "zarr.json").is_file()


# -- layouts and dtypes ------------------------------------------------------------------------


def test_nhw_array_is_stored_with_one_channel_bit_identical(store):
    images = gray(5, seed=1, size=(6, 7))
    added = store.ingest(images)
    assert store.pixel_array.shape == (5, 1, 6, 7) and store.pixel_array.dtype == np.uint8
    np.testing.assert_array_equal(store.pixels(added["image_id"])[:, 0], images)


def test_nhwc_array_is_stored_channels_first_bit_identical(store):
    images = np.random.default_rng(2).integers(0, 256, (5, 6, 7, 3), dtype=np.uint8)
    added = store.ingest(images)
    assert store.pixel_array.shape == (5, 3, 6, 7)
    np.testing.assert_array_equal(store.pixels(added["image_id"]), images.transpose(0, 3, 1, 2))


def test_nchw_array_is_stored_as_is_bit_identical(store):
    images = np.random.default_rng(3).integers(0, 256, (5, 3, 6, 7), dtype=np.uint8)
    added = store.ingest(images)
    assert store.pixel_array.shape == (5, 3, 6, 7)
    np.testing.assert_array_equal(store.pixels(added["image_id"]), images)


def test_torch_tensor_array_is_ingested():
    torch = pytest.importorskip("torch")
    store = memory_store()
    tensor = torch.randint(0, 256, (3, 1, 5, 5), dtype=torch.uint8)
    added = store.ingest(tensor)
    np.testing.assert_array_equal(store.pixels(added["image_id"]), tensor.numpy())


def test_float_images_are_stored_as_float32_exactly(store):
    images = np.random.default_rng(4).standard_normal((4, 3, 5, 6))  # float64, negative values too
    added = store.ingest(images, layout="NCHW")
    assert store.pixel_array.dtype == np.float32
    pixels = store.pixels(added["image_id"])
    assert pixels.dtype == np.float32
    np.testing.assert_array_equal(pixels, images.astype(np.float32))


def test_ambiguous_layout_is_refused_unless_layout_is_given(store):
    images = np.random.default_rng(5).integers(0, 256, (2, 3, 5, 3), dtype=np.uint8)
    with pytest.raises(odinlab.ImageFormatError, match=r"Cannot tell channels from shape \(2, 3, 5, 3\)"):
        store.ingest(images)
    assert store.images.height == 0
    store.ingest(images, layout="NHWC")
    assert store.pixel_array.shape == (2, 3, 3, 5)
    np.testing.assert_array_equal(store.pixels(), images.transpose(0, 3, 1, 2))


def test_pixels_come_back_in_a_shuffled_order_across_chunks(small_chunks):
    store = memory_store()
    images = gray(30, seed=6)
    added = store.ingest(images, ids=[f"im{i:02d}" for i in range(30)], batch_size=7)
    assert store.pixel_array.chunks[0] == 4
    order = np.random.default_rng(7).permutation(30)
    np.testing.assert_array_equal(store.pixels([f"im{i:02d}" for i in order])[:, 0], images[order])
    assert added["image_id"].to_list() == [f"im{i:02d}" for i in range(30)]


def test_dask_reads_the_same_pixels(small_chunks):
    da = pytest.importorskip("dask.array")
    store = memory_store()
    images = gray(10, seed=8)
    store.ingest(images)
    lazy = da.from_zarr(store.pixel_array)
    assert lazy.shape == (10, 1, 8, 8) and lazy.chunks[0][0] == 4
    np.testing.assert_array_equal(lazy.compute(), store.pixels())
    np.testing.assert_array_equal(lazy.compute()[:, 0], images)


def test_second_ingest_appends_after_the_first(store):
    first, second = gray(3, seed=9), gray(4, seed=10)
    a = store.ingest(first)
    b = store.ingest(second)
    assert store.pixel_array.shape == (7, 1, 8, 8)
    np.testing.assert_array_equal(store.pixels(b["image_id"])[:, 0], second)
    np.testing.assert_array_equal(store.pixels(a["image_id"])[:, 0], first)


# -- labels, classes and splits ----------------------------------------------------------------


def test_int_labels_with_class_names(store):
    store.ingest(gray(4), labels=np.array([0, 2, 1, 2]), classes=["cat", "dog", "eel"])
    assert store.classes == ["cat", "dog", "eel"]
    assert store.images["label"].to_list() == [0, 2, 1, 2]
    assert store.images["label_name"].to_list() == ["cat", "eel", "dog", "eel"]


def test_int_labels_without_classes_name_classes_by_number(store):
    store.ingest(gray(3), labels=[0, 3, 1])
    assert store.classes == ["0", "1", "2", "3"]


def test_label_names_become_sorted_classes(store):
    store.ingest(gray(4), labels=["dog", "cat", "dog", "ant"])
    assert store.classes == ["ant", "cat", "dog"]
    assert store.images["label"].to_list() == [2, 1, 2, 0]
    assert store.images["label_name"].to_list() == ["dog", "cat", "dog", "ant"]


def test_label_names_map_onto_the_stores_classes(store):
    store.ingest(gray(2), labels=[0, 1], classes=["cat", "dog"])
    store.ingest(gray(2, seed=1), labels=["dog", "dog"])
    assert store.images["label"].to_list() == [0, 1, 1, 1]


def test_classes_can_be_extended_only_at_the_end(store):
    store.ingest(gray(2), labels=[0, 1], classes=["cat", "dog"])
    store.ingest(gray(1, seed=1), labels=["eel"], classes=["cat", "dog", "eel"])
    assert store.classes == ["cat", "dog", "eel"]
    with pytest.raises(odinlab.LabelError, match=r"do not extend the store's classes \['cat', 'dog', 'eel'\]"):
        store.ingest(gray(1, seed=2), labels=[0], classes=["dog", "cat", "eel"])


def test_unlabelled_images_have_null_labels(store):
    store.ingest(gray(2))
    assert store.images["label"].to_list() == [None, None]
    assert store.classes == []


def test_one_split_for_all_or_one_per_image(store):
    store.ingest(gray(3), labels=[0, 1, 0], split="train")
    store.ingest(gray(3, seed=1), labels=[1, 1, 0], split=np.array(["val", "test", "val"]))
    counts = dict(store.images.group_by("split").len().iter_rows())
    assert counts == {"train": 3, "val": 2, "test": 1}
    assert len(store.select("val")) == 2


def test_label_names_outside_the_classes_are_refused_listing_the_classes(store):
    store.ingest(gray(2), labels=[0, 1], classes=["cat", "dog"])
    with pytest.raises(odinlab.LabelError, match=r"Labels \['cow'\] are not classes.*Classes: cat, dog"):
        store.ingest(gray(2, seed=1), labels=["cat", "cow"])


def test_int_labels_outside_the_classes_are_refused_listing_the_classes(store):
    with pytest.raises(odinlab.LabelError, match=r"Labels \[2\] are outside the classes 0\.\.1 \(cat, dog\)"):
        store.ingest(gray(3), labels=[0, 2, 1], classes=["cat", "dog"])
    with pytest.raises(odinlab.LabelError, match=r"Labels \[-1\]"):
        store.ingest(gray(3), labels=[0, -1, 1], classes=["cat", "dog"])
    assert store.images.height == 0 and store.classes == []


def test_labels_of_wrong_length_are_refused(store):
    with pytest.raises(odinlab.LabelError, match="labels has 2 entries but there are 3 images"):
        store.ingest(gray(3), labels=[0, 1])
    with pytest.raises(odinlab.LabelError, match="split has 4 entries but there are 3 images"):
        store.ingest(gray(3), split=["train"] * 4)
    with pytest.raises(odinlab.LabelError, match="ids has 2 entries but there are 3 images"):
        store.ingest(gray(3), ids=["a", "b"])


def test_labels_that_are_neither_indices_nor_names_are_refused(store):
    with pytest.raises(odinlab.LabelError, match="class indices or class names"):
        store.ingest(gray(2), labels=[0.5, 1.0])


# -- metadata ----------------------------------------------------------------------------------


def test_metadata_as_polars_frame_aligned_by_position(store):
    store.ingest(gray(3), metadata=pl.DataFrame({"age": [30, 40, 50], "site": ["a", "b", "a"]}))
    assert store.images.select("age", "site").rows() == [(30, "a"), (40, "b"), (50, "a")]


def test_metadata_as_pandas_frame_ignores_its_index(store):
    frame = pd.DataFrame({"age": [30, 40, 50]}, index=[10, 11, 12])
    store.ingest(gray(3), metadata=frame)
    assert store.images["age"].to_list() == [30, 40, 50]


def test_metadata_as_dict_of_columns(store):
    store.ingest(gray(3), metadata={"age": [1.5, 2.5, 3.5], "patient_id": ["p1", "p2", "p1"]})
    assert store.images["age"].to_list() == [1.5, 2.5, 3.5]
    assert store.images["patient_id"].to_list() == ["p1", "p2", "p1"]


def test_metadata_frame_with_image_id_is_joined_by_id(store):
    ids = ["x1", "x2", "x3"]
    meta = pl.DataFrame({"image_id": ["x3", "x1"], "age": [70, 10]})  # other order, one missing
    store.ingest(gray(3), ids=ids, metadata=meta)
    assert store.images.select("image_id", "age").rows() == [("x1", 10), ("x2", None), ("x3", 70)]


def test_metadata_joined_by_integer_ids(store):
    store.ingest(gray(2), ids=[7, 8], metadata=pd.DataFrame({"image_id": [8, 7], "age": [80, 70]}))
    assert store.images.select("image_id", "age").rows() == [("7", 70), ("8", 80)]


def test_metadata_with_ids_not_in_the_ingest_is_refused(store):
    with pytest.raises(odinlab.UnknownImageError, match="1 image ids not in this ingest, e.g. zz"):
        store.ingest(gray(2), ids=["a", "b"], metadata=pl.DataFrame({"image_id": ["a", "zz"], "age": [1, 2]}))
    assert store.images.height == 0


def test_metadata_with_repeated_ids_is_refused(store):
    with pytest.raises(odinlab.DuplicateImageError, match="more than one row for image ids a"):
        store.ingest(gray(2), ids=["a", "b"], metadata=pl.DataFrame({"image_id": ["a", "a"], "age": [1, 2]}))
    assert store.images.height == 0


def test_metadata_of_wrong_length_is_refused(store):
    with pytest.raises(odinlab.LabelError, match="metadata has 2 entries but there are 3 images"):
        store.ingest(gray(3), metadata={"age": [1, 2]})
    with pytest.raises(odinlab.LabelError, match="Metadata columns differ in length"):
        store.ingest(gray(3), metadata={"age": [1, 2, 3], "site": ["a"]})


@pytest.mark.parametrize("column", ["split", "label", "label_name", "_row", "_secret"])
def test_metadata_columns_clashing_with_the_stores_are_refused(store, column):
    with pytest.raises(odinlab.LabelError, match=rf"Metadata columns \['{column}'\] clash"):
        store.ingest(gray(2), metadata={column: [1, 2]})
    assert store.images.height == 0
    assert store.images.columns == ["image_id", "split", "label", "label_name"]


def test_sql_groups_images_by_metadata(store):
    store.ingest(gray(4), labels=[0, 1, 1, 0], split="train",
                 metadata={"patient_id": ["p1", "p2", "p1", "p2"], "age": [30, 50, 40, 60]})
    store.ingest(gray(2, seed=1), labels=[1, 1], split="test",
                 metadata={"patient_id": ["p3", "p1"], "age": [20, 50]})
    result = store.sql("SELECT patient_id, AVG(age) FROM images GROUP BY patient_id").sort("patient_id")
    assert result["patient_id"].to_list() == ["p1", "p2", "p3"]
    assert result[:, 1].to_list() == [40.0, 55.0, 20.0]
    per_split = store.sql("SELECT split, label_name, COUNT(*) AS n FROM images "
                          "GROUP BY split, label_name ORDER BY split, label_name")
    assert per_split.rows() == [("test", "1", 2), ("train", "0", 2), ("train", "1", 2)]


# -- ids ---------------------------------------------------------------------------------------


def test_content_ids_are_stable_across_stores(tmp_path):
    images = gray(4, seed=11)
    first = memory_store().ingest(images)["image_id"].to_list()
    second = odinlab.open_store(tmp_path / "other", create=True).ingest(images.copy())["image_id"].to_list()
    assert first == second and len(set(first)) == 4
    assert all(len(i) == 16 for i in first)
    # The same pixels in another layout are the same image, with the same id.
    third = memory_store().ingest(images[..., None])["image_id"].to_list()
    assert third == first


def test_user_ids_are_kept(store):
    added = store.ingest(gray(3), ids=["scan-a", "scan-b", "scan-c"])
    assert added["image_id"].to_list() == ["scan-a", "scan-b", "scan-c"]
    assert store.select("scan-b")["image_id"].to_list() == ["scan-b"]


def test_reingesting_the_same_pixels_is_refused_naming_the_id(store):
    images = gray(3, seed=12)
    ids = store.ingest(images)["image_id"].to_list()
    with pytest.raises(odinlab.DuplicateImageError, match=rf"Image id '{ids[0]}' is already in the store"):
        store.ingest(images[:1])
    with pytest.raises(ValueError):  # DuplicateImageError is a ValueError too
        store.ingest(images[2:])
    # Keeping both copies takes explicit ids.
    store.ingest(images[:1], ids=["copy-0"])
    assert store.images.height == 4


def test_repeated_ids_in_one_call_are_refused_naming_the_id(store):
    with pytest.raises(odinlab.DuplicateImageError, match=r"Image id 'b' is repeated in this call"):
        store.ingest(gray(3), ids=["a", "b", "b"])
    same = np.stack([gray(1, seed=13)[0]] * 2)
    expected = odinlab.store.pixels.content_ids(same[:, None])[0]
    with pytest.raises(odinlab.DuplicateImageError, match=rf"'{expected}' is repeated in this call"):
        store.ingest(same)
    assert store.images.height == 0


def test_user_id_already_in_the_store_is_refused(store):
    store.ingest(gray(2), ids=["a", "b"])
    with pytest.raises(odinlab.DuplicateImageError, match=r"Image id 'b' is already in the store"):
        store.ingest(gray(2, seed=1), ids=["c", "b"])


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(8, 8), (2, 1, 1, 8, 8)])
def test_wrong_ndim_is_refused(store, shape):
    with pytest.raises(odinlab.ImageFormatError, match=r"must be \(N, H, W\), \(N, H, W, C\) or \(N, C, H, W\); "
                                                       r"got shape"):
        store.ingest(np.zeros(shape, np.uint8))


@pytest.mark.parametrize("dtype", [np.complex128, np.bool_])
def test_unsupported_dtype_is_refused(store, dtype):
    with pytest.raises(odinlab.ImageFormatError, match=f"Unsupported pixel dtype {np.dtype(dtype)}"):
        store.ingest(np.ones((2, 4, 4), dtype))


def test_nan_pixels_are_refused(store):
    images = np.zeros((3, 4, 4), np.float32)
    images[1, 2, 2] = np.nan
    with pytest.raises(odinlab.ImageFormatError, match=r"NaN.*first at image 1"):
        store.ingest(images)


def test_ragged_images_are_refused(store):
    with pytest.raises(odinlab.ImageFormatError, match="ragged"):
        store.ingest([np.zeros((4, 4)), np.zeros((5, 5))])


def test_image_shape_different_from_the_stores_is_refused_showing_both(store):
    store.ingest(gray(2))
    with pytest.raises(odinlab.ImageFormatError,
                       match=r"the store holds \(1, 8, 8\) uint8 images.*these are \(1, 6, 6\) uint8"):
        store.ingest(gray(2, seed=1, size=(6, 6)))
    with pytest.raises(odinlab.ImageFormatError, match=r"\(1, 8, 8\) uint8.*\(1, 8, 8\) float32"):
        store.ingest(np.random.default_rng(0).random((2, 8, 8)))
    assert store.pixel_array.shape == (2, 1, 8, 8)


def test_read_only_store_refuses_ingest(tmp_path):
    path = tmp_path / "store"
    images = gray(2)
    odinlab.open_store(path, create=True).ingest(images, labels=[0, 1])
    reader = odinlab.open_store(path, mode="r")
    with pytest.raises(odinlab.ReadOnlyStoreError, match="read-only"):
        reader.ingest(gray(2, seed=1))
    with pytest.raises(PermissionError):
        reader.ingest(gray(2, seed=1))
    assert reader.images.height == 2
    np.testing.assert_array_equal(reader.pixels()[:, 0], images)
    assert odinlab.open_store(path, create=True).pixel_array.shape == (2, 1, 8, 8)


# -- a failed call leaves the store as it was --------------------------------------------------


@pytest.fixture
def filled(small_chunks, store):
    """A store with 6 labelled images (two chunks of pixels), with metadata."""
    store.ingest(gray(6, seed=20), labels=[0, 1, 2, 0, 1, 2], classes=["a", "b", "c"], split="train",
                 metadata={"age": [1, 2, 3, 4, 5, 6]})
    return store


@pytest.fixture
def written_batches(monkeypatch):
    """Offsets of the batches whose pixels reached the Zarr array, in order."""
    offsets = []
    real = ingest_module.PixelWriter._store_batch

    def spy(self, batch, offset):
        real(self, batch, offset)
        offsets.append(offset)

    monkeypatch.setattr(ingest_module.PixelWriter, "_store_batch", spy)
    return offsets


def test_nan_in_a_later_batch_leaves_the_store_unchanged(small_chunks, store, written_batches):
    rng = np.random.default_rng(21)
    store.ingest(rng.random((3, 8, 8)), labels=[0, 1, 0], split="val", metadata={"age": [1, 2, 3]})
    before = snapshot(store)
    written_batches.clear()
    bad = rng.random((7, 8, 8))
    bad[5, 0, 0] = np.nan
    with pytest.raises(odinlab.ImageFormatError, match=r"NaN or infinite pixels \(first at image 5\)"):
        store.ingest(bad, labels=[1] * 7, batch_size=2)
    assert written_batches == [0, 2]  # two batches were written before the NaN, then rolled back
    assert_unchanged(store, before)


def test_duplicate_in_a_later_batch_leaves_the_store_unchanged(filled, written_batches):
    before = snapshot(filled)
    images = gray(9, seed=25)
    images[7] = images[1]  # the same pixels again, three batches later
    with pytest.raises(odinlab.DuplicateImageError, match="is repeated in this call"):
        filled.ingest(images, batch_size=2)
    assert written_batches == [0, 2, 4]  # earlier batches were written, then rolled back
    assert_unchanged(filled, before)


def test_duplicate_of_a_stored_image_in_a_later_batch_leaves_the_store_unchanged(filled):
    before = snapshot(filled)
    images = np.concatenate([gray(5, seed=26), gray(6, seed=20)[4:5]])
    with pytest.raises(odinlab.DuplicateImageError, match="already in the store"):
        filled.ingest(images, batch_size=2)
    assert_unchanged(filled, before)


def test_bad_metadata_after_pixels_were_written_leaves_the_store_unchanged(filled):
    before = snapshot(filled)
    with pytest.raises(odinlab.UnknownImageError):
        filled.ingest(gray(5, seed=27), ids=list("vwxyz"), batch_size=2,
                      metadata=pl.DataFrame({"image_id": ["v", "nope"], "age": [1, 2]}))
    with pytest.raises(odinlab.LabelError, match="clash"):
        filled.ingest(gray(5, seed=27), batch_size=2, metadata={"label_name": list("abcde")})
    assert_unchanged(filled, before)


def test_failed_table_commit_rolls_back_pixels_and_classes(filled, monkeypatch):
    before = snapshot(filled)

    def broken_append(name, rows):
        raise OSError("disk full")

    monkeypatch.setattr(filled._backend.tables, "append", broken_append)
    with pytest.raises(OSError, match="disk full"):
        filled.ingest(gray(5, seed=28), labels=["d"] * 5, classes=["a", "b", "c", "d"], batch_size=2)
    monkeypatch.undo()
    assert_unchanged(filled, before)
    assert filled.classes == ["a", "b", "c"]


def test_labels_outside_classes_in_a_streamed_source_leave_the_store_unchanged(filled):
    torch = pytest.importorskip("torch")

    class Labelled(torch.utils.data.Dataset):
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return torch.full((1, 8, 8), i + 100, dtype=torch.uint8), 3 if i == 4 else 0

    before = snapshot(filled)
    with pytest.raises(odinlab.LabelError, match=r"Labels \[3\] are outside the classes 0\.\.2 \(a, b, c\)"):
        filled.ingest(Labelled(), batch_size=2)
    assert_unchanged(filled, before)


def test_failed_first_ingest_leaves_no_pixel_array_and_a_later_ingest_works(small_chunks, store):
    bad = np.random.default_rng(29).random((6, 5, 5))
    bad[4, 0, 0] = np.nan
    with pytest.raises(odinlab.ImageFormatError, match="NaN"):
        store.ingest(bad, labels=[0] * 6, classes=["a"], batch_size=2)
    assert "images/pixels" not in store._backend.arrays()
    assert store.images.height == 0 and store.classes == []
    with pytest.raises(odinlab.UnknownImageError, match="no images yet"):
        store.pixel_array
    # A good ingest of another shape and dtype starts a fresh array.
    images = gray(5, seed=30)
    added = store.ingest(images, labels=[1, 0, 1, 0, 1], classes=["x", "y"], batch_size=2)
    assert store.pixel_array.shape == (5, 1, 8, 8) and store.pixel_array.dtype == np.uint8
    np.testing.assert_array_equal(store.pixels(added["image_id"])[:, 0], images)
    assert odinlab.open_store(store.url).classes == ["x", "y"]


def test_ingest_after_a_failed_one_appends_at_the_right_rows(filled):
    bad = gray(5, seed=31)
    bad[3] = gray(6, seed=20)[0]
    with pytest.raises(odinlab.DuplicateImageError):
        filled.ingest(bad, batch_size=2)
    good = gray(5, seed=32)
    added = filled.ingest(good, labels=[0] * 5, batch_size=2)
    assert filled.pixel_array.shape == (11, 1, 8, 8)
    np.testing.assert_array_equal(filled.pixels(added["image_id"])[:, 0], good)
    np.testing.assert_array_equal(filled.pixels()[:6, 0], gray(6, seed=20))


# -- the bundled digits ------------------------------------------------------------------------


def test_digits_ingest_as_image_data():
    store = memory_store()
    data = odinlab.datasets.digits()
    added = store.ingest(data)
    assert added.height == 1797 and store.images.height == 1797
    assert store.classes == [str(d) for d in range(10)]
    assert store.pixel_array.shape == (1797, 1, 8, 8)
    counts = dict(store.sql("SELECT split, COUNT(*) AS n FROM images GROUP BY split").iter_rows())
    assert counts == {"train": 1258, "val": 269, "test": 270}
    assert store.images["image_id"][42] == "digits-0042"
    assert {"ink", "source_index"} <= set(store.images.columns)
    np.testing.assert_array_equal(store.pixels(["digits-0042", "digits-0007"]), data.images[[42, 7]])
    assert store.images["label"].to_list() == data.labels.tolist()


# -- input the store cannot keep: refused before anything is written ---------------------------


def test_object_metadata_is_refused_and_nothing_written(filled, written_batches):
    before = snapshot(filled)
    with pytest.raises(odinlab.LabelError, match="'thing' has type Object.*cannot save"):
        filled.ingest(gray(2, seed=30), labels=[0, 1], metadata={"thing": [object(), object()]})
    with pytest.raises(odinlab.LabelError, match="'thing'"):
        filled.ingest(gray(2, seed=30), labels=[0, 1], metadata=pd.DataFrame({"thing": [object(), 1]}))
    assert written_batches == [] and isinstance(odinlab.LabelError("x"), odinlab.OdinError)
    assert_unchanged(filled, before)


@pytest.mark.parametrize("frame", [dict, pd.DataFrame])
def test_a_metadata_column_of_mixed_types_is_refused_by_name(filled, written_batches, frame):
    before = snapshot(filled)
    with pytest.raises(odinlab.LabelError, match="'weight' mixes value types"):
        filled.ingest(gray(2, seed=31), labels=[0, 1], metadata=frame({"site": ["x", "y"], "weight": [3, "five"]}))
    assert written_batches == []
    assert_unchanged(filled, before)


def test_a_metadata_column_that_cannot_join_the_stored_one_is_refused(filled, written_batches):
    before = snapshot(filled)
    with pytest.raises(odinlab.LabelError, match=r"'age' is List\(Int64\) here but Int64 in the store"):
        filled.ingest(gray(2, seed=32), labels=[0, 1], metadata={"age": [[1], [2]]})
    assert written_batches == []
    assert_unchanged(filled, before)


def test_a_huge_label_without_classes_is_refused_not_made_into_100000_classes(store, written_batches):
    before = snapshot(store)
    with pytest.raises(odinlab.LabelError, match="Label 99999 would create 100,000 classes.*classes="):
        store.ingest(gray(2), labels=[0, 99999])
    assert written_batches == []
    assert_unchanged(store, before)
    store.ingest(gray(2), labels=[0, 999])  # up to 1,000 numbered classes are still made
    assert len(store.classes) == 1000


def test_a_huge_streamed_label_is_refused_and_the_pixels_rolled_back(store):
    import torch

    class Data(torch.utils.data.Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return torch.zeros(1, 8, 8) + i / 10, [0, 1, 5000][i]

    before = snapshot(store)
    with pytest.raises(odinlab.LabelError, match="Label 5000 would create 5,001 classes"):
        store.ingest(Data())
    assert_unchanged(store, before)
