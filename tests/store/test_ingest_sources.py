"""Ingesting from folders of PNG/JPEG files and from torch Datasets."""

import uuid

import numpy as np
import polars as pl
import pytest
import torch
from PIL import Image

import odinlab


def memory_store():
    return odinlab.open_store(f"memory://sources-{uuid.uuid4().hex}", create=True)


def rgb(seed, size=(6, 5)):
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def gray(seed, size=(6, 5)):
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8)


def save(path, pixels):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


@pytest.fixture
def class_folder(tmp_path):
    """cat/ (2 PNG) and dog/ (1 PNG, 1 JPEG) of 6x5 RGB images, and a stray text file."""
    root = tmp_path / "pets"
    pixels = {"cat/a.png": rgb(0), "cat/b.png": rgb(1), "dog/c.png": rgb(2), "dog/d.jpg": rgb(3)}
    for name, array in pixels.items():
        save(root / name, array)
    (root / "dog" / "notes.txt").write_text("not an image")
    return root, pixels


@pytest.fixture
def flat_folder(tmp_path):
    """Three grayscale PNGs and labels.csv with filename, label, split, age and patient_id."""
    root = tmp_path / "scans"
    pixels = {f"s{i}.png": gray(10 + i) for i in range(3)}
    for name, array in pixels.items():
        save(root / name, array)
    (root / "labels.csv").write_text(
        "filename,label,split,age,patient_id\n"
        "s2.png,sick,test,70,p2\n"
        "s0.png,healthy,train,30,p1\n"
        "s1.png,sick,train,50,p1\n"
    )
    return root, pixels


# -- folders -----------------------------------------------------------------------------------


def test_class_folders_give_labels_and_source_paths(class_folder):
    root, pixels = class_folder
    store = memory_store()
    added = store.ingest(root)
    assert store.classes == ["cat", "dog"]
    assert added.height == 4
    assert added.sort("source_path").select("source_path", "label_name").rows() == [
        ("cat/a.png", "cat"), ("cat/b.png", "cat"), ("dog/c.png", "dog"), ("dog/d.jpg", "dog")]
    assert store.pixel_array.shape == (4, 3, 6, 5)
    for name in ("cat/a.png", "cat/b.png", "dog/c.png"):  # PNG is lossless: bit-identical
        image_id = added.filter(pl.col("source_path") == name)["image_id"].item()
        np.testing.assert_array_equal(store.pixels([image_id])[0], pixels[name].transpose(2, 0, 1))
    jpeg_id = added.filter(pl.col("source_path") == "dog/d.jpg")["image_id"].item()
    with Image.open(root / "dog" / "d.jpg") as jpeg:
        decoded = np.asarray(jpeg.convert("RGB"))
    np.testing.assert_array_equal(store.pixels([jpeg_id])[0], decoded.transpose(2, 0, 1))


def test_class_folder_given_as_string_path(class_folder):
    root, _ = class_folder
    store = memory_store()
    assert store.ingest(str(root), split="train").height == 4
    assert store.images["split"].unique().to_list() == ["train"]


def test_class_folders_with_a_new_class_are_refused_listing_the_classes(class_folder, tmp_path):
    root, _ = class_folder
    store = memory_store()
    store.ingest(root)
    save(tmp_path / "more" / "eel" / "e.png", rgb(9))
    with pytest.raises(odinlab.LabelError, match=r"\['eel'\] are not classes.*Classes: cat, dog"):
        store.ingest(tmp_path / "more")
    store.ingest(tmp_path / "more", classes=["cat", "dog", "eel"])
    assert store.classes == ["cat", "dog", "eel"]


def test_flat_folder_with_csv_gives_labels_split_and_metadata(flat_folder):
    root, pixels = flat_folder
    store = memory_store()
    added = store.ingest(root, labels="labels.csv")  # a file name inside the folder
    assert store.classes == ["healthy", "sick"]
    assert added.height == 3
    rows = store.images.select("source_path", "label_name", "split", "age", "patient_id").rows()
    assert rows == [("s2.png", "sick", "test", 70, "p2"), ("s0.png", "healthy", "train", 30, "p1"),
                    ("s1.png", "sick", "train", 50, "p1")]
    assert store.pixel_array.shape == (3, 1, 6, 5)
    np.testing.assert_array_equal(store.pixels(added["image_id"])[:, 0],
                                  np.stack([pixels["s2.png"], pixels["s0.png"], pixels["s1.png"]]))
    means = store.sql("SELECT patient_id, AVG(age) AS age FROM images GROUP BY patient_id ORDER BY patient_id")
    assert means.rows() == [("p1", 40.0), ("p2", 70.0)]


def test_flat_folder_csv_given_by_full_path_and_split_argument(flat_folder, tmp_path):
    root, _ = flat_folder
    csv = tmp_path / "elsewhere.csv"
    csv.write_text("file,label\ns0.png,0\ns1.png,1\n")
    store = memory_store()
    store.ingest(root, labels=csv, split="val", classes=["healthy", "sick"])
    assert store.images.select("label_name", "split").rows() == [("healthy", "val"), ("sick", "val")]


def test_flat_folder_csv_with_image_ids_keeps_them(flat_folder):
    root, _ = flat_folder
    (root / "ids.csv").write_text("filename,label,image_id\ns0.png,a,scan-0\ns1.png,b,scan-1\n")
    store = memory_store()
    store.ingest(root, labels="ids.csv")
    assert store.images["image_id"].to_list() == ["scan-0", "scan-1"]
    assert "image_id" == store.images.columns[0] and store.images.columns.count("image_id") == 1


def test_flat_folder_csv_errors_name_the_problem(flat_folder):
    root, _ = flat_folder
    store = memory_store()
    with pytest.raises(odinlab.LabelError, match="'missing.csv' not found"):
        store.ingest(root, labels="missing.csv")
    (root / "bad.csv").write_text("name,label\ns0.png,a\n")
    with pytest.raises(odinlab.LabelError, match="needs a file-name column .*it has: name, label"):
        store.ingest(root, labels="bad.csv")
    (root / "gone.csv").write_text("filename,label\ns0.png,a\nnope.png,b\n")
    with pytest.raises(odinlab.ImageFormatError, match=r"1 files listed in gone.csv are missing.*nope.png"):
        store.ingest(root, labels="gone.csv")
    assert store.images.height == 0


def test_folder_with_labels_that_are_not_a_csv_is_refused(class_folder):
    root, _ = class_folder
    with pytest.raises(odinlab.LabelError, match="labels= names a CSV file"):
        memory_store().ingest(root, labels=[0, 1, 0, 1])


def test_flat_folder_csv_inside_the_folder_wins_over_one_in_the_working_directory(flat_folder, tmp_path,
                                                                                  monkeypatch):
    root, _ = flat_folder
    (tmp_path / "labels.csv").write_text("filename,label\nunrelated.png,x\n")
    monkeypatch.chdir(tmp_path)
    store = memory_store()
    assert store.ingest(root, labels="labels.csv").height == 3


def test_flat_folder_without_labels_is_refused_with_a_hint(flat_folder):
    root, _ = flat_folder
    with pytest.raises(odinlab.ImageFormatError, match="No class sub-folders.*labels='labels.csv'"):
        memory_store().ingest(root)


def test_images_of_different_sizes_are_refused_naming_both_shapes(tmp_path):
    save(tmp_path / "imgs" / "a" / "big.png", rgb(0, size=(8, 6)))
    save(tmp_path / "imgs" / "a" / "small.png", rgb(1, size=(4, 5)))
    store = memory_store()
    with pytest.raises(odinlab.ImageFormatError,
                       match=r"Image sizes differ: small.png is \(4, 5, 3\), big.png is \(8, 6, 3\).*size="):
        store.ingest(tmp_path / "imgs", batch_size=1)
    assert store.images.height == 0 and "images/pixels" not in store._backend.arrays()
    added = store.ingest(tmp_path / "imgs", size=(7, 9))
    assert added.height == 2 and store.pixel_array.shape == (2, 3, 7, 9)
    with Image.open(tmp_path / "imgs" / "a" / "small.png") as image:
        expected = np.asarray(image.resize((9, 7), Image.Resampling.BILINEAR))
    small = added.filter(pl.col("source_path").str.ends_with("small.png"))["image_id"]
    np.testing.assert_array_equal(store.pixels(small)[0], expected.transpose(2, 0, 1))


def test_grayscale_folder_is_one_channel_and_rgb_is_three(tmp_path):
    save(tmp_path / "g" / "x" / "a.png", gray(0))
    save(tmp_path / "c" / "x" / "a.png", rgb(0))
    grey_store, colour_store = memory_store(), memory_store()
    grey_store.ingest(tmp_path / "g")
    colour_store.ingest(tmp_path / "c")
    assert grey_store.pixel_array.shape == (1, 1, 6, 5)
    assert colour_store.pixel_array.shape == (1, 3, 6, 5)
    np.testing.assert_array_equal(grey_store.pixels()[0, 0], gray(0))


def test_mixed_grayscale_and_rgb_folder_keeps_colour(tmp_path):
    save(tmp_path / "m" / "x" / "a.png", gray(0))  # sorted first
    save(tmp_path / "m" / "x" / "b.png", rgb(1))
    store = memory_store()
    added = store.ingest(tmp_path / "m")
    assert store.pixel_array.shape == (2, 3, 6, 5)
    pixels = store.pixels(added.sort("source_path")["image_id"])
    np.testing.assert_array_equal(pixels[1], rgb(1).transpose(2, 0, 1))
    np.testing.assert_array_equal(pixels[0], np.stack([gray(0)] * 3))


def test_rgba_and_palette_files_are_read_as_rgb(tmp_path):
    rgba = np.dstack([rgb(0), np.full((6, 5), 128, np.uint8)])
    save(tmp_path / "f" / "x" / "a.png", rgba)
    Image.fromarray(rgb(1)).convert("P").save(tmp_path / "f" / "x" / "b.png")
    store = memory_store()
    added = store.ingest(tmp_path / "f")
    assert store.pixel_array.shape == (2, 3, 6, 5)
    first = added.filter(pl.col("source_path") == "x/a.png")["image_id"]
    np.testing.assert_array_equal(store.pixels(first)[0], rgb(0).transpose(2, 0, 1))


def test_a_path_that_is_not_a_folder_is_refused(tmp_path):
    with pytest.raises(odinlab.ImageFormatError, match="is not a folder of images"):
        memory_store().ingest(tmp_path / "nowhere")


def test_class_folders_without_images_are_refused(tmp_path):
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(odinlab.ImageFormatError, match="No image files"):
        memory_store().ingest(tmp_path / "empty")


# -- torch Datasets ----------------------------------------------------------------------------


class TinyDataset(torch.utils.data.Dataset):
    """Five 3x4x4 float images in [0, 1] (channels-first tensors) with int labels."""

    def __init__(self, n=5):
        self.images = torch.rand(n, 3, 4, 4, generator=torch.Generator().manual_seed(0))
        self.labels = [i % 2 for i in range(n)]

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return self.images[index], self.labels[index]


class NamedDataset(TinyDataset):
    classes = ["cat", "dog"]


class TensorLabelDataset(TinyDataset):
    def __getitem__(self, index):
        return self.images[index], torch.tensor(self.labels[index])


class PilDataset(torch.utils.data.Dataset):
    def __len__(self):
        return 3

    def __getitem__(self, index):
        return Image.fromarray(rgb(index, size=(4, 4))), index


def test_torch_dataset_with_int_labels():
    store = memory_store()
    dataset = TinyDataset()
    added = store.ingest(dataset, split="train", batch_size=2)
    assert added.height == 5 and store.classes == ["0", "1"]
    assert store.images["label"].to_list() == [0, 1, 0, 1, 0]
    assert store.pixel_array.shape == (5, 3, 4, 4) and store.pixel_array.dtype == np.float32
    np.testing.assert_array_equal(store.pixels(added["image_id"]), dataset.images.numpy())


def test_torch_dataset_with_classes_attribute_names_the_classes():
    store = memory_store()
    store.ingest(NamedDataset(), batch_size=3)
    assert store.classes == ["cat", "dog"]
    assert store.images["label_name"].to_list() == ["cat", "dog", "cat", "dog", "cat"]


def test_torch_dataset_with_tensor_labels():
    store = memory_store()
    store.ingest(TensorLabelDataset(4))
    assert store.images["label"].to_list() == [0, 1, 0, 1]


def test_torch_dataset_labels_can_be_overridden_by_the_labels_argument():
    store = memory_store()
    store.ingest(TinyDataset(3), labels=["b", "a", "b"])
    assert store.classes == ["a", "b"] and store.images["label"].to_list() == [1, 0, 1]


def test_torch_dataset_of_pil_images():
    store = memory_store()
    added = store.ingest(PilDataset())
    assert store.pixel_array.shape == (3, 3, 4, 4) and store.pixel_array.dtype == np.uint8
    np.testing.assert_array_equal(store.pixels(added["image_id"])[2], rgb(2, size=(4, 4)).transpose(2, 0, 1))


def test_torch_dataset_with_explicit_channels_last_layout():
    class ChannelsLast(TinyDataset):
        def __getitem__(self, index):
            return self.images[index].permute(1, 2, 0), self.labels[index]

    store = memory_store()
    dataset = ChannelsLast()
    store.ingest(dataset, layout="NHWC")
    np.testing.assert_array_equal(store.pixels(), dataset.images.numpy())


def test_torch_dataset_with_items_of_different_shapes_is_refused():
    class Ragged(TinyDataset):
        def __getitem__(self, index):
            size = 4 if index < 3 else 5
            return torch.zeros(3, size, size) + index / 10, 0

    store = memory_store()
    with pytest.raises(odinlab.ImageFormatError, match=r"item 3 is \(3, 5, 5\), item 0 is \(3, 4, 4\)"):
        store.ingest(Ragged(), batch_size=2)
    assert store.images.height == 0


def test_dataset_failing_midway_leaves_the_store_empty():
    class Liar(TinyDataset):
        def __len__(self):
            return 3

        def __getitem__(self, index):
            if index >= 2:
                raise IndexError(index)
            return super().__getitem__(index)

    store = memory_store()
    with pytest.raises(IndexError):
        store.ingest(Liar(), batch_size=1)
    assert store.images.height == 0 and "images/pixels" not in store._backend.arrays()
