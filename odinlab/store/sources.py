"""What `Store.ingest` reads from: arrays, folders of PNG/JPEG files, torch Datasets, ImageData.

Each source becomes a :class:`Source`: its length, whatever it knows up front (labels,
classes, ids, split, metadata) and a generator of raw pixel batches, so that a large folder
or Dataset is read a batch at a time instead of all at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from odinlab.errors import ImageFormatError, LabelError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
FILENAME_COLUMNS = ("filename", "file", "path", "image")

Batches = Iterator[tuple[np.ndarray, list | None]]


@dataclass
class Source:
    """A source of images, read in batches by :meth:`batches`."""

    n: int
    read: Callable[[int], Batches]
    labels: Sequence | None = None  # all labels, when known before reading pixels
    classes: Sequence[str] | None = None
    ids: Sequence[str] | None = None
    split: object = None
    metadata: pl.DataFrame | None = None
    layout: str = "auto"
    extra: dict = field(default_factory=dict)  # per-image columns found in the source itself

    def batches(self, batch_size: int) -> Batches:
        return self.read(batch_size)


def from_array(images: object, layout: str) -> Source:
    array = images.detach().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
    if array.ndim < 3:
        raise ImageFormatError(
            f"Images must be (N, H, W), (N, H, W, C) or (N, C, H, W); got shape {array.shape}."
        )

    def read(batch_size: int) -> Batches:
        for start in range(0, len(array), batch_size):
            yield array[start : start + batch_size], None

    return Source(n=len(array), read=read, layout=layout)


def from_image_data(data) -> Source:
    source = from_array(data.images, "NCHW")
    source.labels, source.classes, source.ids = data.labels, data.classes, data.ids
    source.split, source.metadata = data.split, data.metadata
    return source


def from_dataset(dataset, layout: str) -> Source:
    """A map-style torch Dataset whose items are ``image`` or ``(image, label, ...)``."""

    def read(batch_size: int) -> Batches:
        for start in range(0, len(dataset), batch_size):
            items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            pairs = [item if isinstance(item, tuple | list) else (item, None) for item in items]
            images = np.stack([_item_pixels(pair[0]) for pair in pairs])
            labels = [_scalar(pair[1]) if len(pair) > 1 else None for pair in pairs]
            yield images, None if all(label is None for label in labels) else labels

    classes = getattr(dataset, "classes", None)  # torchvision-style datasets carry their names
    return Source(n=len(dataset), read=read, classes=classes, layout=layout)


def from_folder(folder: Path, labels: object, size: tuple[int, int] | None) -> Source:
    """One sub-folder per class, or a flat folder with ``labels`` naming a CSV of file,label."""
    if not folder.is_dir():
        raise ImageFormatError(f"{str(folder)!r} is not a folder of images.")
    if isinstance(labels, str | Path) and str(labels).lower().endswith(".csv"):
        return _flat_folder(folder, Path(labels), size)
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise ImageFormatError(
            f"No class sub-folders in {str(folder)!r}: use one sub-folder per class, "
            "or pass labels='labels.csv' (columns: filename, label) for a flat folder."
        )
    files, names = [], []
    for class_dir in class_dirs:
        for file in sorted(class_dir.rglob("*")):
            if file.suffix.lower() in IMAGE_SUFFIXES:
                files.append(file)
                names.append(class_dir.name)
    source = _files_source(files, folder, size)
    source.labels = names  # class names as labels: the store sorts or checks them
    return source


def _flat_folder(folder: Path, csv: Path, size: tuple[int, int] | None) -> Source:
    table = pl.read_csv(csv, infer_schema_length=10_000)
    name_column = next((c for c in FILENAME_COLUMNS if c in table.columns), None)
    if name_column is None or "label" not in table.columns:
        raise LabelError(
            f"{csv.name} needs a file-name column ({', '.join(FILENAME_COLUMNS)}) and a 'label' "
            f"column; it has: {', '.join(table.columns)}."
        )
    files = [folder / name for name in table[name_column].cast(pl.String)]
    missing = [str(f.name) for f in files if not f.is_file()]
    if missing:
        raise ImageFormatError(f"{len(missing)} files listed in {csv.name} are missing, e.g. {missing[:3]}.")
    source = _files_source(files, folder, size)
    source.labels = table["label"].to_list()
    if "split" in table.columns:
        source.split = table["split"].cast(pl.String).to_list()
    rest = table.drop([name_column, "label", "split"], strict=False)
    source.metadata = rest if rest.width else None
    return source


def _files_source(files: list[Path], folder: Path, size: tuple[int, int] | None) -> Source:
    if not files:
        raise ImageFormatError(f"No image files ({', '.join(IMAGE_SUFFIXES)}) in {str(folder)!r}.")
    mode = _common_mode(files[0])

    def read(batch_size: int) -> Batches:
        first_shape = None
        for start in range(0, len(files), batch_size):
            arrays = []
            for file in files[start : start + batch_size]:
                pixels = _load_image(file, mode, size)
                first_shape = first_shape or (pixels.shape, file)
                if pixels.shape != first_shape[0]:
                    raise ImageFormatError(
                        f"Image sizes differ: {file.name} is {pixels.shape}, {first_shape[1].name} is "
                        f"{first_shape[0]}. Pass size=(height, width) to resize them all."
                    )
                arrays.append(pixels)
            yield np.stack(arrays), None

    paths = [str(f.relative_to(folder)) for f in files]
    return Source(n=len(files), read=read, layout="NHW" if mode == "L" else "NHWC",
                  extra={"source_path": paths})


def _common_mode(file: Path) -> str:
    from PIL import Image

    with Image.open(file) as image:
        return "L" if image.mode in ("L", "1", "I;16", "I", "F") else "RGB"


def _load_image(file: Path, mode: str, size: tuple[int, int] | None) -> np.ndarray:
    from PIL import Image

    with Image.open(file) as image:
        image = image.convert(mode)
        if size is not None:
            image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8)


def _item_pixels(image: object) -> np.ndarray:
    if hasattr(image, "detach"):
        return image.detach().cpu().numpy()
    if type(image).__module__.startswith("PIL."):
        return np.asarray(image.convert("RGB" if image.mode not in ("L", "1") else "L"))
    return np.asarray(image)


def _scalar(label: object) -> object:
    return label.item() if hasattr(label, "item") else label
