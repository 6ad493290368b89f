"""Results of debugging questions kept in the store, so that asking twice is a read.

Every result is keyed by (model version, kind of result, parameters); the parameters are
hashed into a digest that names where the result lives (:mod:`odinlab.store.layout` decides
where). Per-image results are :class:`~odinlab.store.arrays.RowArray` s aligned with the
store's pixel rows, so that a later question about more images computes only the new ones;
whole-set results are Parquet tables; free-form arrays (a maximization's images, gradients,
a sample's compact copies) get a Zarr group in one of the version's areas.

What this cache creates (arrays, groups, tables) is created under the store's writer lock, so
two processes never create one array twice. Rows written later into a returned array are the
caller's: they are not under the lock.
"""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Callable

import polars as pl
import zarr

from odinlab.store.arrays import ArraySpec, RowArray
from odinlab.store.backend import Backend
from odinlab.store.images import ImageCatalog
from odinlab.store.layout import area_path, digest, table_parts
from odinlab.store.models import ModelRef, ModelRegistry


class ResultCache:
    """Cached results of model versions: ``store.results``."""

    def __init__(self, backend: Backend, images: ImageCatalog, models: ModelRegistry):
        self._backend = backend
        self._images = images
        self._models = models

    def rows(self, model: ModelRef, kind: str, params: dict, shape: tuple[int, ...],
             dtype: str = "float16") -> RowArray:
        """The per-image result array for (model, kind, params), created on first use.

        >>> arr = store.results.rows("cnn@1", "saliency", {"target": "label"}, (1, 8, 8))
        >>> arr.values.shape, arr.done_rows(np.arange(3)).tolist()
        ((1797, 1, 8, 8), [False, False, False])
        """
        attrs = (("kind", kind), ("params", json.dumps(params, default=str)))
        return self.row_array(model, "debug", kind, digest(params), shape=shape, dtype=dtype, attrs=attrs)

    def find_rows(self, model: ModelRef, kind: str, params: dict) -> RowArray | None:
        """The per-image result array for (model, kind, params) if stored, else None.

        Never creates anything, so it works on a read-only store.

        >>> store.results.find_rows("cnn@1", "saliency", {"target": "never"}) is None
        True
        """
        return self.find_row_array(model, "debug", kind, digest(params))

    def table(self, model: ModelRef, kind: str, params: dict,
              compute: Callable[[], pl.DataFrame]) -> pl.DataFrame:
        """The table result for (model, kind, params): read if stored, else computed and stored.

        A read-only store computes and keeps nothing.

        >>> calls = []
        >>> make = lambda: calls.append(1) or pl.DataFrame({"x": [1]})
        >>> first = store.results.table("cnn@1", "example", {"k": 1}, make)
        >>> again = store.results.table("cnn@1", "example", {"k": 1}, make)
        >>> len(calls), again.equals(first)
        (1, True)
        """
        parts = table_parts(self._models.resolve_any(model), kind, digest(params))
        fs = self._backend.fs
        if fs.exists(parts):
            return pl.read_parquet(io.BytesIO(fs.read_bytes(parts)))
        result = compute()  # outside the lock: computing may take long, and other writers may go on
        if not self._backend.read_only:
            buffer = io.BytesIO()
            result.write_parquet(buffer, compression="zstd")
            with self._backend.writing("results.table"):  # atomic replace: a twin result is replaced whole
                fs.write_bytes(parts, buffer.getvalue())
        return result

    def row_array(self, model: ModelRef, area: str, *parts: str, shape: tuple[int, ...], dtype: str = "float32",
                  attrs: tuple = (), extras: tuple[str, ...] = (), capacity: int | None = None) -> RowArray:
        """Open or create a row array in one of a version's areas (``debug``, ``samples``...).

        Rows default to the store's pixel rows; give ``capacity`` for arrays of another length.

        >>> store.results.row_array("cnn@1", "samples", "s1", "x", shape=(2,), capacity=5).values.shape
        (5, 2)
        """
        self._backend.check_writable()
        path = area_path(self._models.resolve_any(model), area, *parts)
        spec = ArraySpec(path, tuple(shape), dtype, tuple(attrs), tuple(extras))
        with self._backend.writing("results.row_array"):  # creating (or growing) it is a write
            array = spec.open(self._backend.arrays(), self._images.capacity if capacity is None else capacity)
        array.guard = functools.partial(self._backend.writing, f"write {path}")
        return array

    def find_row_array(self, model: ModelRef, area: str, *parts: str) -> RowArray | None:
        """The row array at that place if it exists, else None (never creates anything).

        >>> store.results.find_row_array("cnn@1", "samples", "never", "x") is None
        True
        """
        group = self.group(model, area, *parts)
        if group is None or "values" not in group:
            return None
        return RowArray(group, guard=functools.partial(self._backend.writing, f"write {group.path}"))

    def group(self, model: ModelRef, area: str, *parts: str, create: bool = False) -> zarr.Group | None:
        """The Zarr group at that place in a version's area; None if absent (unless ``create``).

        >>> store.results.group("cnn@1", "debug", "maximize") is None
        True
        """
        path = area_path(self._models.resolve_any(model), area, *parts)
        root = self._backend.arrays()
        if create:
            self._backend.check_writable()
            with self._backend.writing("results.group"):
                return self._backend.arrays().require_group(path)
        if path not in root:
            return None
        found = root[path]
        return found if isinstance(found, zarr.Group) else None

    def size(self, model: ModelRef, area: str, *parts: str) -> int:
        """Bytes on disk under that place (0 when absent).

        >>> store.results.size("cnn@1", "gradients")
        0
        """
        path = area_path(self._models.resolve_any(model), area, *parts)
        return self._backend.fs.size(("arrays", *path.split("/")))
