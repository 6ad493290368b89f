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
from odinlab.store.pixels import CHANNEL_COUNTS, _channels_first

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
FILENAME_COLUMNS = ("filename", "file", "path", "image")
GRAY_MODES = ("L", "1", "LA", "I;16", "I", "F")

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
    try:
        array = images.detach().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
    except ValueError as error:  # numpy refuses ragged nested lists
        raise ImageFormatError(
            f"Images must be one numeric array of equal-sized images; got ragged input ({error}). "
            "Resize them to one size first."
        ) from error
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

    # With layout="auto", items are made channels-first one by one: tensors are (C, H, W) by
    # torch's convention and PIL images (H, W, C), so e.g. a 3x4x4 tensor is not ambiguous.
    channels_first = layout == "auto"

    def read(batch_size: int) -> Batches:
        first_shape = None
        for start in range(0, len(dataset), batch_size):
            items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            pairs = [item if isinstance(item, tuple | list) else (item, None) for item in items]
            arrays = [_item_pixels(pair[0], channels_first) for pair in pairs]
            for index, pixels in enumerate(arrays, start):
                first_shape = first_shape or pixels.shape
                if pixels.shape != first_shape:
                    raise ImageFormatError(
                        f"Dataset items differ in shape: item {index} is {pixels.shape}, item 0 is "
                        f"{first_shape}. Resize them in the Dataset's transform."
                    )
            labels = [_scalar(pair[1]) if len(pair) > 1 else None for pair in pairs]
            yield np.stack(arrays), None if all(label is None for label in labels) else labels

    classes = getattr(dataset, "classes", None)  # torchvision-style datasets carry their names
    return Source(n=len(dataset), read=read, classes=classes,
                  layout="NCHW" if channels_first else layout)


def from_folder(folder: Path, labels: object, size: tuple[int, int] | None) -> Source:
    """One sub-folder per class, or a flat folder with ``labels`` naming a CSV of file,label."""
    if not folder.is_dir():
        raise ImageFormatError(f"{str(folder)!r} is not a folder of images.")
    if isinstance(labels, str | Path) and str(labels).lower().endswith(".csv"):
        csv = Path(labels)
        if not csv.is_absolute() and (folder / csv).is_file():
            csv = folder / csv  # labels="labels.csv" names a file inside the folder first
        if not csv.is_file():
            raise LabelError(f"Labels file {str(labels)!r} not found, neither as given nor in {str(folder)!r}.")
        return _flat_folder(folder, csv, size)
    if labels is not None:  # class sub-folders name the labels; anything else would be ignored
        raise LabelError(
            f"For a folder, labels= names a CSV file (columns: filename, label); got {labels!r}. "
            "With one sub-folder per class, leave labels out."
        )
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
    if "image_id" in table.columns:
        source.ids = table["image_id"].cast(pl.String).to_list()
    rest = table.drop([name_column, "label", "split", "image_id"], strict=False)
    source.metadata = rest if rest.width else None
    return source


def _files_source(files: list[Path], folder: Path, size: tuple[int, int] | None) -> Source:
    if not files:
        raise ImageFormatError(f"No image files ({', '.join(IMAGE_SUFFIXES)}) in {str(folder)!r}.")
    # Colour if any file is colour: converting by the first file alone would drop colour.
    mode = "RGB" if any(_file_mode(file) == "RGB" for file in files) else "L"

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


def _file_mode(file: Path) -> str:
    """"L" for a grayscale file, "RGB" for anything else; reads only the file's header."""
    from PIL import Image

    with Image.open(file) as image:
        return "L" if image.mode in GRAY_MODES else "RGB"


def _load_image(file: Path, mode: str, size: tuple[int, int] | None) -> np.ndarray:
    from PIL import Image

    with Image.open(file) as image:
        image = image.convert(mode)
        if size is not None:
            image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8)


def _item_pixels(image: object, channels_first: bool) -> np.ndarray:
    """One Dataset item as an array; with ``channels_first``, as (C, H, W)."""
    if type(image).__module__.startswith("PIL."):
        array = np.asarray(image.convert("L" if image.mode in GRAY_MODES else "RGB"))
        if channels_first:
            array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
        return array
    is_tensor = hasattr(image, "detach")
    array = image.detach().cpu().numpy() if is_tensor else np.asarray(image)
    if not channels_first or array.ndim not in (2, 3):
        return array
    if array.ndim == 2:
        return array[None]
    # Tensors are (C, H, W) by torch's convention, so a 3x4x4 tensor is read as channels-first.
    layout = "NCHW" if is_tensor and array.shape[0] in CHANNEL_COUNTS else "auto"
    return _channels_first(array[None], layout)[0]


def _scalar(label: object) -> object:
    return label.item() if hasattr(label, "item") else label
