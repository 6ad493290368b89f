"""Images in the store: the images table, selections, pixels and thumbnails."""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence

import numpy as np
import polars as pl
import zarr
from tqdm.auto import tqdm

from odinlab.errors import (
    CorruptStoreError,
    OptionError,
    SelectionError,
    UnknownColumnError,
    UnknownImageError,
    listing,
)
from odinlab.store.arrays import read_rows
from odinlab.store.backend import Backend
from odinlab.store.labels import TABLE as CORRECTIONS
from odinlab.store.labels import apply_label_set, check_label_set
from odinlab.store.pixels import to_model_input, to_rgb8
from odinlab.store.query import looks_like_query
from odinlab.store.selection import ImageSelection, Selection, describe

RESERVED_COLUMNS = ("image_id", "split", "label")
IMAGES_TABLE = ("tables", "images.parquet")  # where stores without a table manifest keep it
ROW = "_row"  # the hidden column of the images table: an image's row in every row-aligned array


class ImageCatalog:
    """The images table and its pixels; ``store.images``, ``store.select`` and friends."""

    def __init__(self, backend: Backend, sql):
        self._backend = backend
        self._sql = sql  # runs a SQL selection over the store's tables

    @property
    def table(self) -> pl.DataFrame:
        """The images table: image_id, split, label, label_name and metadata columns.

        >>> store.images.filter(pl.col("split") == "test").height
        270
        """
        return self._present(self._rows())

    @property
    def classes(self) -> list[str]:
        """Class names; label ``i`` means ``classes[i]``.

        >>> store.classes[:3]
        ['0', '1', '2']
        """
        return list(self._backend.meta.get("classes", []))

    def select(self, images: ImageSelection = None, *, labels: str | None = None) -> Selection:
        """Resolve an image selection once, into a :class:`~odinlab.store.selection.Selection`.

        ``images`` is None (all), a split name, an image id, a list of ids, a frame or Series
        with ``image_id``, a SQL query over the store's tables that returns ``image_id``, a
        polars expression over ``store.images``, or a selection (returned as is). Every function
        that takes ``images=`` accepts the same, so resolve once and pass the selection on.
        Unknown ids and splits are refused with what the store has.

        ``labels`` names a label set (:meth:`~odinlab.Store.correct_labels`): the selection's
        ``label`` and ``label_name`` are then the set's, and so are the labels an expression
        filters on (SQL reads the tables as stored). None keeps a selection's own labels, and
        gives the original labels otherwise.

        >>> store.select("test")
        <Selection of 270 images 'test' from 'memory://...'>
        >>> len(store.select("SELECT image_id FROM images WHERE label = 3 AND split = 'val'"))
        27
        >>> len(store.select((pl.col("split") == "val") & (pl.col("label_name") == "3")))
        27
        >>> _ = store.correct_labels(["digits-0000"], ["8"])
        >>> store.select(["digits-0000"], labels="reviewed").labels, store.select(["digits-0000"]).labels
        (array([8]), array([0]))
        """
        if isinstance(images, Selection):
            if images.store_url != self._backend.url:
                raise SelectionError(f"This selection was made in the store at {images.store_url!r}, "
                                     f"not this one ({self._backend.url!r}); select again here.")
            if labels is None or labels == images.label_set:
                return images
            again = self.select(pl.DataFrame({"image_id": images.ids}), labels=labels)  # same rows, the set's labels
            return Selection(again.frame, again.rows, self._backend.url, images.description, labels)
        rows = self._select_rows(images, labels)
        return Selection(self._present(rows), rows[ROW].to_numpy(), self._backend.url, describe(images), labels)

    def pixels(self, images: ImageSelection = None) -> np.ndarray:
        """The pixels of the selected images, (N, C, H, W) in the order selected.

        >>> store.pixels(["digits-0000"]).shape
        (1, 1, 8, 8)
        """
        selection = self.select(images)
        if len(selection) == 0 and "images/pixels" not in self._backend.arrays():
            return np.zeros((0, 0, 0, 0), np.uint8)
        return read_rows(self.pixel_array, selection.rows, ids=selection.ids)  # damage names the images

    def model_input(self, images: ImageSelection) -> np.ndarray:
        """float32 model input of the selected images (uint8 pixels scaled to [0, 1]).

        >>> store.model_input("digits-0000").dtype
        dtype('float32')
        """
        return to_model_input(self.pixels(images))

    def batches(self, images: ImageSelection = None, batch_size: int = 256,
                progress: str | None = None) -> Iterator[tuple[pl.DataFrame, np.ndarray]]:
        """Yield (rows of ``store.images``, float32 model input), one batch at a time.

        uint8 pixels are scaled to [0, 1]. Memory holds one batch, whatever the selection size.

        >>> [x.shape for rows, x in store.batches("val", batch_size=200)]
        [(200, 1, 8, 8), (69, 1, 8, 8)]
        """
        selection = self.select(images)
        with tqdm(total=len(selection), desc=progress, disable=progress is None, unit="img", delay=2) as bar:
            for chunk in selection.chunks(batch_size):
                yield chunk.frame, self.model_input(chunk)
                bar.update(len(chunk))

    def thumbnails(self, images: ImageSelection, size: int = 64, format: str = "png") -> list[bytes]:
        """The selected images as small PNG (or WebP) files, for galleries and reports.

        The longer side becomes ``size`` pixels: small images are enlarged with sharp pixels
        (nearest neighbour), large ones reduced smoothly. Returns one ``bytes`` per image, in order.

        >>> import io, PIL.Image
        >>> png = store.thumbnails(["digits-0000"], size=32)[0]
        >>> png[:4], PIL.Image.open(io.BytesIO(png)).size
        (b'\\x89PNG', (32, 32))
        """
        from PIL import Image

        if format.lower() not in ("png", "webp"):
            raise OptionError(f"Unknown thumbnail format {format!r}; use 'png' or 'webp'.")
        if not isinstance(size, int) or size < 1:
            raise OptionError(f"Thumbnail size must be a positive number of pixels, not {size!r}.")
        # The pixels are read in one call: each chunk of the pixel array is read and decompressed
        # once, however the images are spread over it, and only their rows are copied out (keeping
        # whole decoded chunks for later thumbnails measured 2x slower when nothing was cached yet).
        # zlib level 1: about 1.8x faster than PNG's default level 6 on a page of 96-pixel
        # thumbnails, for files about 10% larger (bench/gallery.py prints both).
        options = {"compress_level": 1} if format.lower() == "png" else {}
        out = []
        for rgb in to_rgb8(self.pixels(images)):
            picture = Image.fromarray(rgb)
            scale = size / max(picture.size)
            resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.LANCZOS
            picture = picture.resize((max(1, round(picture.width * scale)), max(1, round(picture.height * scale))),
                                     resample)
            buffer = io.BytesIO()
            picture.save(buffer, format=format.upper(), **options)
            out.append(buffer.getvalue())
        return out

    @property
    def pixel_array(self) -> zarr.Array:
        """The Zarr array of all pixels, one row per image (a selection's ``rows`` index it).

        Plain Zarr v3: ``dask.array.from_zarr(store.pixel_array)`` reads it in parallel.
        """
        group = self._backend.arrays()
        if "images/pixels" not in group:
            held = self._rows().height
            if held:
                raise CorruptStoreError(
                    f"The images table of the store at {self._backend.url!r} lists {held} images but their pixel "
                    "array (arrays/images/pixels/zarr.json) is missing: the store is damaged. Restore it from a "
                    "copy; odinlab verify STORE lists what else is damaged."
                )
            raise UnknownImageError("The store holds no images yet, so it has no pixel array; ingest some first.")
        return group["images/pixels"]

    @property
    def capacity(self) -> int:
        """Rows in the pixel array: the length every row-aligned array must reach."""
        return self.pixel_array.shape[0]

    # -- internals -------------------------------------------------------------------------

    def _present(self, table: pl.DataFrame) -> pl.DataFrame:
        """Rows of the images table as users see them: label_name added, ``_row`` hidden."""
        classes = self.classes
        label_name = pl.col("label").replace_strict(
            list(range(len(classes))), classes, default=None, return_dtype=pl.String
        )
        return table.with_columns(label_name=label_name).select(
            ["image_id", "split", "label", "label_name", *_metadata_columns(table)]
        )

    def _rows(self) -> pl.DataFrame:
        """The images table with its hidden row column; a missing table beside pixels is damage.

        With a table manifest, a table it does not name is "no images committed yet" (pixels of
        a killed first ingest are not images), and one it names but is gone is damage. Older
        stores have no manifest: there a missing file beside pixels is damage.
        """
        tables = self._backend.tables
        try:
            table = tables.read("images")
        except CorruptStoreError as error:
            if self._pixel_rows():
                raise self._missing_table(tables.object_of("images")) from error
            raise
        if table.height == 0 and tables.manifest() is None and not tables.exists("images") and self._pixel_rows():
            raise self._missing_table("/".join(IMAGES_TABLE))
        return table

    def _pixel_rows(self) -> int:
        group = self._backend.arrays()
        return group["images/pixels"].shape[0] if "images/pixels" in group else 0

    def _missing_table(self, where: str) -> CorruptStoreError:
        return CorruptStoreError(
            f"The store at {self._backend.url!r} holds {self._pixel_rows()} images' pixels but its images "
            f"table ({where}) is missing: the store is damaged. Restore that file from a copy; odinlab "
            "verify STORE lists what else is damaged."
        )

    def _select_rows(self, images, labels: str | None = None) -> pl.DataFrame:
        table = self._rows() if labels is None else self._labelled_rows(labels)
        if images is None:
            return table
        if isinstance(images, pl.Expr):
            return self._filter(table, images)
        if isinstance(images, str):
            return self._from_text(table, images, labels)
        if isinstance(images, pl.DataFrame):
            if "image_id" not in images.columns:
                raise SelectionError(f"A frame given as images= needs an image_id column; it has {images.columns}.")
            wanted = images["image_id"]
        elif isinstance(images, pl.Series | Sequence | np.ndarray) and not isinstance(images, bytes):
            wanted = pl.Series(list(images))
        else:
            raise SelectionError(
                f"images={type(images).__name__} is not an image selection. Give None (all images), a split, "
                "an image id, a list of ids, a frame with image_id, a SQL query, a polars expression, "
                "or store.select(...)."
            )
        wanted = pl.DataFrame({"image_id": wanted.cast(pl.String)})
        found = wanted.join(table, on="image_id", how="left", maintain_order="left")
        missing = found.filter(pl.col(ROW).is_null())["image_id"]
        if missing.len():
            raise UnknownImageError(
                f"{missing.len()} unknown image ids, e.g. {listing(missing.head(5).to_list())}. "
                "See store.images for the ids the store holds."
            )
        return found

    def _labelled_rows(self, label_set: str) -> pl.DataFrame:
        """The images table (hidden row column included) with a label set's labels."""
        corrections = self._backend.tables.read(CORRECTIONS)
        check_label_set(corrections, label_set)
        return apply_label_set(self._rows(), corrections, label_set)

    def _from_text(self, table: pl.DataFrame, text: str, labels: str | None = None) -> pl.DataFrame:
        """An image id, else a split, else (if it reads like one) a SQL query returning image_id.

        Ids and splits come first, so that any id works, even one such as 'with love'.
        """
        if text in table["image_id"]:
            return table.filter(pl.col("image_id") == text)
        found = table.filter(pl.col("split") == text)
        if found.height:
            return found
        if looks_like_query(text):
            result = self._sql(text)  # a query: its image_id column is the selection
            if "image_id" not in result.columns:
                raise UnknownImageError(
                    f"The query returned columns {result.columns}; select image_id to choose images."
                )
            return self._select_rows(result, labels)
        splits = sorted(s for s in table["split"].unique().to_list() if s is not None)
        raise UnknownImageError(f"{text!r} is neither an image id nor a split. Splits: {listing(splits)}.")

    def _filter(self, table: pl.DataFrame, expression: pl.Expr) -> pl.DataFrame:
        presented = self._present(table).with_columns(table[ROW])
        try:
            return presented.filter(expression).select(table.columns)
        except pl.exceptions.ColumnNotFoundError as error:
            raise UnknownColumnError(
                f"The expression {expression} names a column the images table lacks ({error}). "
                f"Columns: {listing(self._present(table).columns)}."
            ) from error


def _metadata_columns(table: pl.DataFrame) -> list[str]:
    return [c for c in table.columns if c not in (*RESERVED_COLUMNS, ROW)]
