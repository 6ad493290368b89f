"""Ingest: images from arrays, folders, torch Datasets or ImageData into the store, all or nothing."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
from tqdm.auto import tqdm
from zarr.codecs import BloscCodec, Crc32cCodec

from odinlab.errors import (
    DuplicateImageError,
    ImageFormatError,
    LabelError,
    UnknownImageError,
    listing,
)
from odinlab.store import sources
from odinlab.store.arrays import WRITE_ALL
from odinlab.store.backend import Backend, writes
from odinlab.store.images import RESERVED_COLUMNS, ROW, ImageCatalog
from odinlab.store.pixels import content_ids, to_nchw

CHUNK_BYTES = 1 << 20  # ~1 MiB uncompressed per chunk: cheap to read any handful of images
# Checksummed last, so a damaged chunk is refused before Blosc decodes it (see arrays.py).
PIXEL_CODECS = (BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle"), Crc32cCodec())
# Integer labels without class names make classes "0".."max"; past this many, a typo is likelier.
MAX_INFERRED_CLASSES = 1000
PENDING = "pending_classes"  # in odinlab.json of older stores, while an ingest that adds classes committed


class Ingestor:
    """Adds images to the store, all or nothing."""

    def __init__(self, backend: Backend, images: ImageCatalog):
        self._backend = backend
        self._images = images

    @writes("ingest")
    def ingest(self, source, labels=None, *, split=None, ids=None, metadata=None,
               classes: Sequence[str] | None = None, layout: str = "auto",
               size: tuple[int, int] | None = None, batch_size: int = 1024) -> pl.DataFrame:
        """Add images with labels, split and metadata; return their rows of ``store.images``.

        ``source`` is an array ((N,H,W), (N,H,W,C) or (N,C,H,W)), a folder of PNG/JPEG files
        (one sub-folder per class, or flat with ``labels="labels.csv"``), a torch Dataset, or an
        :class:`odinlab.datasets.ImageData`. Ids are content hashes unless ``ids`` are given;
        ``metadata`` (polars/pandas frame or dict of columns) is aligned by position, or joined
        on its ``image_id`` column. Nothing is written unless the whole call succeeds.

        >>> fresh = odinlab.open_store("memory://ingest-doc", create=True)
        >>> rows = fresh.ingest(np.zeros((2, 8, 8), np.uint8) + [[[0]], [[9]]], labels=["cat", "dog"],
        ...                     split="train", metadata={"age": [3, 5]})
        >>> rows.select("label", "label_name", "age").rows()
        [(0, 'cat', 3), (1, 'dog', 5)]
        """
        self._backend.check_writable()
        settle_classes(self._backend)
        src = _to_source(source, labels, layout, size)
        src.labels = labels if labels is not None and src.labels is None else src.labels
        classes = self._classes_for(src, classes)
        split_values = _per_image(split if split is not None else src.split, src.n, "split")
        given_ids = _per_image(ids if ids is not None else src.ids, src.n, "ids")
        upfront = _label_indices(src.labels, classes, src.n) if src.labels is not None else None
        _check_class_count(upfront, classes)
        frames = _metadata_frames(src, metadata, self._backend.tables.read("images"))
        if given_ids is not None:  # refuse repeated or known ids before writing any pixels
            _check_new_ids(given_ids, set(self._backend.tables.read("images")["image_id"].to_list()), set())
        # Everything up to the table commit runs inside the transaction, so that a failure
        # anywhere (pixels, ids, metadata, the commit itself) rolls the pixels back.
        with PixelWriter(self._backend, src.n) as writer:
            new_ids, streamed = writer.write(src, given_ids, classes, batch_size)
            labels_all = upfront if upfront is not None else streamed
            rows = pl.DataFrame({
                "image_id": new_ids, "split": split_values,
                "label": labels_all if labels_all is not None else [None] * src.n,
                ROW: np.arange(writer.start, writer.start + src.n),
            }, schema_overrides={"image_id": pl.String, "split": pl.String, "label": pl.Int64})
            rows = _attach_metadata(rows, src.extra, frames)
            _check_class_count(streamed if upfront is None else None, classes)
            if labels_all is not None and len(labels_all) and not classes:
                classes = [str(i) for i in range(int(np.max(labels_all)) + 1)]
            self._commit_images(rows, classes, writer)
        return self._images.table.filter(pl.col("image_id").is_in(new_ids))

    def _classes_for(self, src: sources.Source, classes: Sequence[str] | None) -> list[str]:
        """The classes after this ingest: the store's, extended only by an explicit list."""
        known = self._images.classes
        wanted = list(classes if classes is not None else src.classes or [])
        labels = src.labels
        if not wanted and not known and labels is not None and len(labels):
            if isinstance(_first(labels), str):  # class names given as labels, no list: sort them
                wanted = sorted(set(labels))
        if not wanted:
            return known
        if known and wanted[: len(known)] != known:
            raise LabelError(
                f"Classes {wanted} do not extend the store's classes {known}; "
                "new classes can only be added after the existing ones."
            )
        return wanted

    def _commit_images(self, rows: pl.DataFrame, classes: list[str], writer: "PixelWriter") -> None:
        """Append the rows and extend the classes: one commit, made when the ingest's hold ends.

        Both go into the same manifest put (see :mod:`odinlab.store.tables`), so a kill leaves
        the images and classes of before or of after, and a failure rolls the pixels back.
        """
        backend = self._backend
        try:
            backend.tables.append("images", rows)
            if classes != self._images.classes:
                backend.write_meta({**backend.meta, "classes": list(classes)})
        except BaseException:
            writer.rollback()
            raise


def settle_classes(backend: Backend) -> None:
    """Finish what a killed ingest left pending: keep its classes if its rows were committed.

    Only stores written before table manifests can hold such a note (``odinlab.json``): ingests
    now commit their classes with their rows.

    >>> backend = store._backend
    >>> backend.write_meta({**backend.meta, PENDING: {"classes": ["x"], "first_row": 10**9}})
    >>> settle_classes(backend); PENDING in backend.meta, store.classes[:2]
    (False, ['0', '1'])
    """
    pending = backend.meta.get(PENDING)
    if pending is None or backend.read_only:
        return
    meta = {k: v for k, v in backend.meta.items() if k != PENDING}
    if (backend.tables.read("images")[ROW] >= pending["first_row"]).any():
        meta["classes"] = pending["classes"]
    backend.write_meta(meta)


class PixelWriter:
    """Appends pixels to the Zarr array; on any failure, truncates back to the committed rows."""

    def __init__(self, backend: Backend, n: int):
        self.backend, self.n = backend, n
        table = backend.tables.read("images")
        self.start = int(table[ROW].max()) + 1 if table.height else 0
        self.created = False
        self.rolled_back = False

    def __enter__(self) -> "PixelWriter":
        return self

    def __exit__(self, kind, error, trace) -> None:
        if error is not None and not self.rolled_back:
            self.rollback()

    def write(self, src: sources.Source, ids: list | None, classes: list[str], batch_size: int):
        existing = set(self.backend.tables.read("images")["image_id"].to_list())
        new_ids, labels, offset, seen = [], [], 0, set()
        for raw, raw_labels in tqdm(src.batches(batch_size), total=-(-src.n // batch_size),
                                    desc="ingest", unit="batch", delay=2):
            batch = to_nchw(raw, src.layout, offset=offset)
            batch_ids = ids[offset : offset + len(batch)] if ids is not None else content_ids(batch)
            _check_new_ids(batch_ids, existing, seen)
            if raw_labels is not None:
                labels.extend(_label_indices(raw_labels, classes, len(batch)))
            self._store_batch(batch, offset)
            new_ids.extend(batch_ids)
            offset += len(batch)
        if offset != src.n:
            raise ImageFormatError(f"The source yielded {offset} images but has length {src.n}.")
        return new_ids, (np.array(labels, dtype=np.int64) if labels else None)

    def _store_batch(self, batch: np.ndarray, offset: int) -> None:
        if offset == 0:
            self._prepare(batch)
        array = self.backend.arrays()["images/pixels"]
        if array.shape[1:] != batch.shape[1:] or array.dtype != batch.dtype:
            raise ImageFormatError(
                f"Image shape mismatch: the store holds {array.shape[1:]} {array.dtype} images "
                f"(C, H, W); these are {batch.shape[1:]} {batch.dtype}. Resize or convert them "
                "(folders: size=(H, W)), or use another store."
            )
        if offset == 0:
            array.resize((self.start + self.n, *array.shape[1:]))
            array = self.backend.arrays()["images/pixels"]
        array.with_config(WRITE_ALL)[self.start + offset : self.start + offset + len(batch)] = batch

    def _prepare(self, batch: np.ndarray) -> None:
        """Create the pixel array on the first ingest; drop one a killed first ingest left."""
        group = self.backend.arrays()
        if self.start == 0 and "images/pixels" in group:  # no committed image: it holds nothing
            del group["images/pixels"]
        if "images/pixels" not in group:
            # Pixels beside no committed images table are "no images yet", not damage: the
            # store has a table manifest (Backend.writing made one), which names no images table.
            group.create_array(
                "images/pixels", shape=(0, *batch.shape[1:]), dtype=batch.dtype,
                chunks=(max(1, min(65536, CHUNK_BYTES // batch[0].nbytes)), *batch.shape[1:]),
                compressors=PIXEL_CODECS,
            )
            self.created = True

    def rollback(self) -> None:
        self.rolled_back = True
        group = self.backend.arrays()
        if self.created and "images/pixels" in group:
            del group["images/pixels"]
        elif "images/pixels" in group:
            array = group["images/pixels"]
            array.resize((self.start, *array.shape[1:]))


def _to_source(source, labels, layout: str, size) -> sources.Source:
    from odinlab.datasets import ImageData

    if isinstance(source, ImageData):
        return sources.from_image_data(source)
    if isinstance(source, str | Path):
        return sources.from_folder(Path(source), labels, size)
    if hasattr(source, "__getitem__") and hasattr(source, "__len__") and not hasattr(source, "shape"):
        if type(source).__module__.split(".")[0] in ("torch", "torchvision") or hasattr(source, "classes") \
                or _is_torch_dataset(source):
            return sources.from_dataset(source, layout)
    return sources.from_array(source, layout)


def _is_torch_dataset(obj) -> bool:
    try:
        from torch.utils.data import Dataset
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return isinstance(obj, Dataset)


def _per_image(value, n: int, what: str) -> list | None:
    if value is None:
        return None
    if isinstance(value, str):  # one split for all images; one id only fits one image
        if what == "split":
            return [value] * n
        value = [value]
    values = list(value.to_list() if hasattr(value, "to_list") else value)
    if len(values) != n:
        _bad_len(what, len(values), n)
    return [None if v is None else str(v) for v in values]


def _bad_len(what: str, got: int, n: int):
    raise LabelError(f"{what} has {got} entries but there are {n} images; give one per image.")


def _label_indices(labels, classes: list[str], n: int) -> np.ndarray:
    values = list(labels.tolist() if hasattr(labels, "tolist") else labels)
    if len(values) != n:
        _bad_len("labels", len(values), n)
    if values and isinstance(_first(values), str):
        lookup = {name: i for i, name in enumerate(classes)}
        bad = sorted({v for v in values if v not in lookup})
        if bad:
            raise LabelError(f"Labels {bad[:5]} are not classes of this store. Classes: {listing(classes)}.")
        return np.array([lookup[v] for v in values], dtype=np.int64)
    array = np.asarray(values)
    if array.dtype.kind == "f" and np.all(array == np.round(array)):
        array = array.astype(np.int64)
    if array.dtype.kind not in "iu":
        raise LabelError(f"Labels must be class indices or class names; got dtype {array.dtype}.")
    limit = len(classes) if classes else None
    bad = array[(array < 0) | (array >= limit if limit else False)]
    if bad.size:
        raise LabelError(
            f"Labels {sorted(set(bad.tolist()))[:5]} are outside the classes 0..{(limit or 1) - 1} "
            f"({listing(classes)}). Pass classes=[...] naming every class."
        )
    return array.astype(np.int64)


def _check_new_ids(batch_ids: list[str], existing: set[str], seen: set[str]) -> None:
    """Refuse ids in the store (``existing``) or earlier in this call (``seen``, updated)."""
    for image_id in batch_ids:
        if image_id in existing or image_id in seen:
            where = "already in the store" if image_id in existing else "repeated in this call"
            raise DuplicateImageError(
                f"Image id {image_id!r} is {where}. Ids must be unique (content-hash ids repeat "
                "when the same pixels are ingested twice; pass ids=[...] to keep both)."
            )
        seen.add(image_id)


def _metadata_frames(src: sources.Source, metadata, table: pl.DataFrame) -> list[pl.DataFrame]:
    """The metadata as polars frames, refused before anything is written if the store cannot keep it."""
    frames = [_as_polars(frame) for frame in (src.metadata, metadata) if frame is not None]
    for frame in frames:
        _check_storable(frame, table)
    return frames


def _check_storable(frame: pl.DataFrame, table: pl.DataFrame) -> None:
    """Refuse columns Parquet cannot hold (Python objects) or that clash with the stored column's type."""
    for name in frame.columns:
        column = frame.select(name)
        try:
            column.head(100).write_parquet(io.BytesIO())  # the same writer as the commit, on a sample
        except Exception as error:  # noqa: BLE001 - whatever the writer refuses, the commit would too
            raise LabelError(
                f"Metadata column {name!r} has type {column.dtypes[0]}, which the store cannot save "
                f"({type(error).__name__}); convert it to text, numbers, dates or lists of them."
            ) from None
        if name in table.columns:
            try:
                pl.concat([table.select(name).head(0), column.head(0)], how="vertical_relaxed")
            except pl.exceptions.PolarsError:
                raise LabelError(
                    f"Metadata column {name!r} is {column.dtypes[0]} here but {table.schema[name]} in the "
                    "store; convert it to the stored type (or use another column name)."
                ) from None


def _attach_metadata(rows: pl.DataFrame, extra: dict, frames: list[pl.DataFrame]) -> pl.DataFrame:
    for name, values in extra.items():
        rows = rows.with_columns(pl.Series(name, values))
    for frame in frames:
        # label_name is computed by store.images; columns already set (e.g. source_path) stay.
        taken = {*RESERVED_COLUMNS, "label_name", *rows.columns} - {"image_id"}
        clash = [c for c in frame.columns if c in taken or c.startswith("_")]
        if clash:
            raise LabelError(f"Metadata columns {clash} clash with the store's own columns; rename them.")
        if "image_id" in frame.columns:
            frame = frame.with_columns(pl.col("image_id").cast(pl.String))  # ids are stored as text
            repeated = frame.filter(pl.col("image_id").is_duplicated())["image_id"].unique(maintain_order=True)
            if repeated.len():
                raise DuplicateImageError(
                    f"Metadata has more than one row for image ids {listing(repeated.head(3).to_list())}; "
                    "give one row per image."
                )
            unknown = frame.filter(~pl.col("image_id").is_in(rows["image_id"].implode()))
            if unknown.height:
                raise UnknownImageError(
                    f"Metadata has {unknown.height} image ids not in this ingest, "
                    f"e.g. {listing(unknown['image_id'].head(3).to_list())}."
                )
            rows = rows.join(frame, on="image_id", how="left", maintain_order="left")
        elif frame.height != rows.height:
            _bad_len("metadata", frame.height, rows.height)
        else:
            rows = pl.concat([rows, frame], how="horizontal")
    return rows


def _as_polars(frame) -> pl.DataFrame:
    """A polars frame of the metadata; a column of mixed types is refused by name."""
    if isinstance(frame, pl.DataFrame):
        return frame
    if isinstance(frame, dict):
        try:
            return pl.DataFrame(frame)
        except pl.exceptions.ShapeError as error:
            lengths = {name: len(values) for name, values in frame.items()}
            raise LabelError(f"Metadata columns differ in length: {lengths}; give one value per image.") from error
        except (TypeError, ValueError, pl.exceptions.PolarsError):
            _refuse_mixed({name: lambda v=values, n=name: pl.Series(n, v) for name, values in frame.items()})
            raise
    frame = frame.reset_index(drop=True) if hasattr(frame, "reset_index") else frame
    try:
        return pl.from_pandas(frame)
    except Exception:
        _refuse_mixed({name: lambda n=name: pl.from_pandas(frame[[n]]) for name in frame.columns})
        raise


def _refuse_mixed(builders: dict) -> None:
    """Raise a LabelError naming the first column whose builder fails."""
    for name, build in builders.items():
        try:
            build()
        except Exception as error:  # noqa: BLE001 - the failing column is what we are looking for
            raise LabelError(
                f"Metadata column {name!r} mixes value types ({str(error).splitlines()[0]}); "
                "give one type per column (e.g. all numbers, or all text)."
            ) from None


def _check_class_count(labels: np.ndarray | None, classes: list[str]) -> None:
    """Refuse integer labels that would invent an implausible number of unnamed classes."""
    if classes or labels is None or not len(labels) or int(np.max(labels)) < MAX_INFERRED_CLASSES:
        return
    raise LabelError(
        f"Label {int(np.max(labels))} would create {int(np.max(labels)) + 1:,} classes named '0', '1', …; "
        f"without classes=, at most {MAX_INFERRED_CLASSES:,} are made. Pass classes=[...] naming every class "
        "(or fix the labels)."
    )


def _first(values):
    return next(iter(values))
