"""Images in the store: the images table, selections, and reading pixels back."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import polars as pl
import zarr
from tqdm.auto import tqdm

from odinlab.errors import UnknownImageError, listing
from odinlab.store.arrays import read_rows
from odinlab.store.pixels import to_model_input

RESERVED_COLUMNS = ("image_id", "split", "label")

# What `images=` accepts everywhere: None (all), a split name, ids, or a frame with image_id.
ImageSelection = str | Sequence[str] | pl.DataFrame | pl.Series | None


class ImagesMixin:
    """Store methods for images; mixed into :class:`odinlab.Store`."""

    @property
    def images(self) -> pl.DataFrame:
        """The images table: image_id, split, label, label_name and metadata columns.

        >>> store.images.filter(pl.col("split") == "test").height
        270
        """
        return self._present(self._tables.read("images"))

    @property
    def classes(self) -> list[str]:
        """Class names; label ``i`` means ``classes[i]``."""
        return list(self._meta.get("classes", []))

    def select(self, images: ImageSelection = None) -> pl.DataFrame:
        """Resolve an image selection to rows of ``store.images``, in the order given.

        ``images`` is None (all), a split name, a list of ids, a frame with ``image_id``, or a
        SQL query over the store's tables that returns ``image_id``. Unknown ids and splits are
        refused with what the store has.

        >>> store.select("test").height
        270
        >>> store.select("SELECT image_id FROM images WHERE label = 3 AND split = 'val'").height
        27
        """
        return self._present(self._select_rows(images))

    def pixels(self, images: ImageSelection = None) -> np.ndarray:
        """The pixels of the selected images, (N, C, H, W) in the order selected.

        >>> store.pixels(["digits-0000"]).shape
        (1, 1, 8, 8)
        """
        return self._read_rows(self._select_rows(images)["_row"].to_numpy())

    def batches(self, images: ImageSelection = None, batch_size: int = 256,
                progress: str | None = None) -> Iterator[tuple[pl.DataFrame, np.ndarray]]:
        """Yield (rows, float32 model input) for the selected images, one batch at a time.

        uint8 pixels are scaled to [0, 1]. Memory holds one batch, whatever the selection size.

        >>> [x.shape for rows, x in store.batches("val", batch_size=200)]
        [(200, 1, 8, 8), (69, 1, 8, 8)]
        """
        rows = self._select_rows(images)
        with tqdm(total=rows.height, desc=progress, disable=progress is None, unit="img", delay=2) as bar:
            for start in range(0, rows.height, batch_size):
                chunk = rows.slice(start, batch_size)
                yield self._present(chunk), to_model_input(self._read_rows(chunk["_row"].to_numpy()))
                bar.update(chunk.height)

    @property
    def pixel_array(self) -> zarr.Array:
        """The Zarr array of all pixels (rows ordered by the hidden ``_row`` of the images table).

        Plain Zarr v3: ``dask.array.from_zarr(store.pixel_array)`` reads it in parallel.
        """
        group = self._arrays()
        if "images/pixels" not in group:
            raise UnknownImageError("The store holds no images yet, so it has no pixel array; ingest some first.")
        return group["images/pixels"]

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

    def _select_rows(self, images: ImageSelection) -> pl.DataFrame:
        table = self._tables.read("images")
        if images is None:
            return table
        if isinstance(images, str) and images.lstrip().lower().startswith(("select ", "with ")):
            images = self.sql(images)  # a query: its image_id column is the selection
            if "image_id" not in images.columns:
                raise UnknownImageError(
                    f"The query returned columns {images.columns}; select image_id to choose images."
                )
        if isinstance(images, str):
            if images in table["image_id"]:
                return table.filter(pl.col("image_id") == images)
            found = table.filter(pl.col("split") == images)
            if found.height == 0:
                splits = sorted(s for s in table["split"].unique().to_list() if s is not None)
                raise UnknownImageError(
                    f"{images!r} is neither an image id nor a split. Splits: {listing(splits)}."
                )
            return found
        wanted = images["image_id"] if isinstance(images, pl.DataFrame) else pl.Series(list(images))
        wanted = pl.DataFrame({"image_id": wanted.cast(pl.String)})
        found = wanted.join(table, on="image_id", how="left", maintain_order="left")
        missing = found.filter(pl.col("_row").is_null())["image_id"]
        if missing.len():
            raise UnknownImageError(
                f"{missing.len()} unknown image ids, e.g. {listing(missing.head(5).to_list())}. "
                "See store.images for the ids the store holds."
            )
        return found

    def _read_rows(self, rows: np.ndarray) -> np.ndarray:
        if len(rows) == 0:
            if "images/pixels" not in self._arrays():
                return np.zeros((0, 0, 0, 0), np.uint8)
        return read_rows(self.pixel_array, rows)

def _metadata_columns(table: pl.DataFrame) -> list[str]:
    return [c for c in table.columns if c not in (*RESERVED_COLUMNS, "_row")]
