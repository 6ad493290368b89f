"""The odinlab store: one place for images, model versions and experiments.

On disk (or under any fsspec URL)::

    odinlab.json                 marker, format version, class names
    arrays/                      Zarr v3 group
      images/pixels              (N, C, H, W) uint8 or float32, chunked along N, zstd (Blosc)
    tables/                      polars tables as Parquet, each replaced atomically
      images.parquet             image_id, split, label, metadata..., _row (pixel row)
      models.parquet             model_id name@N, parent, architecture counts, weights digest
      experiments.parquet        runs, image sets, hyper-parameters, metrics, test-set looks
      image_sets.parquet         (set_id, image_id) of every experiment's image sets
    models/<name>/v<N>.json      manifest: tensor name -> digest, architecture summary
    weights/<ab>/<sha256>.safetensors   one tensor per file, shared between versions
"""

from __future__ import annotations

import json
import os
import weakref
from datetime import UTC, datetime

import polars as pl
import zarr

from odinlab.errors import ReadOnlyStoreError, StoreError
from odinlab.store.experiments import ExperimentsMixin
from odinlab.store.fs import StoreFS
from odinlab.store.images import ImagesMixin
from odinlab.store.ingest import IngestMixin
from odinlab.store.materialize import MaterializeMixin
from odinlab.store.models import ModelsMixin
from odinlab.store.tables import SCHEMAS, Tables

FORMAT = "odinlab-store"
FORMAT_VERSION = 1
MARKER = ("odinlab.json",)


class Store(ImagesMixin, IngestMixin, ModelsMixin, ExperimentsMixin, MaterializeMixin):
    """A store of images, model versions and experiments; open one with :func:`open_store`.

    >>> store = odinlab.open_store("memory://store-class-example")
    >>> store.ingest(odinlab.datasets.digits()).height
    1797
    """

    def __init__(self, fs: StoreFS):
        self._fs = fs
        self._tables = Tables(fs)
        self._meta = json.loads(fs.read_bytes(MARKER))
        self._group: zarr.Group | None = None
        # Modules registered, loaded or materialized in this session, so a model id is enough
        # to compute on demand; weak, so the store never keeps a network alive.
        self._modules: weakref.WeakValueDictionary = weakref.WeakValueDictionary()

    @property
    def url(self) -> str:
        """Where the store lives (a path or fsspec URL)."""
        return self._fs.root if self._fs.is_local else self._fs.url

    @property
    def read_only(self) -> bool:
        return self._fs.read_only

    def sql(self, query: str) -> pl.DataFrame:
        """Run SQL over the store's tables and return a polars DataFrame.

        Tables: ``images`` (with metadata columns), ``models``, ``experiments``, ``image_sets``,
        and ``predictions`` (every materialized model version's predictions).

        >>> store.sql("SELECT split, COUNT(*) AS n FROM images GROUP BY split ORDER BY split").rows()
        [('test', 270), ('train', 1258), ('val', 269)]
        """
        frames = {name: getattr(self, name) for name in SCHEMAS}
        if "predictions" in query.lower():  # built from Zarr on demand: only when asked for
            frames["predictions"] = self._all_predictions()
        with pl.SQLContext(frames, eager=True) as context:
            return context.execute(query)

    def size_on_disk(self, *parts: str) -> int:
        """Bytes on disk of the store, or of one part of it (``"weights"``, ``"arrays"``...).

        >>> 0 < store.size_on_disk("weights") < store.size_on_disk()
        True
        """
        return self._fs.size(tuple(parts))

    def summary(self) -> dict:
        """Counts and sizes at a glance: images per split, models, experiments, bytes on disk.

        >>> store.summary()["splits"]
        {'test': 270, 'train': 1258, 'val': 269}
        """
        images = self._tables.read("images")
        return {
            "url": self.url,
            "images": images.height,
            "splits": dict(images.group_by("split").len().sort("split").iter_rows()),
            "classes": self.classes,
            "models": self.models["model_id"].to_list(),
            "experiments": self.experiments.height,
            "bytes_on_disk": self.size_on_disk(),
        }

    def _all_predictions(self) -> pl.DataFrame:
        frames = [self.predictions(model_id).drop("probabilities")
                  for model_id in self.models["model_id"].to_list()]
        return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame(
            schema={"model_id": pl.String, "image_id": pl.String, "predicted": pl.Int64})

    def refresh(self) -> "Store":
        """Re-read tables written by another process since this store was opened.

        >>> store.refresh().images.height
        1797
        """
        self._tables.forget()
        self._meta = json.loads(self._fs.read_bytes(MARKER))
        self._group = None
        return self

    def __repr__(self) -> str:
        images = self._tables.read("images").height
        return (f"<odinlab.Store {self.url!r}: {images} images, {self.models.height} model versions, "
                f"{self.experiments.height} experiments>")

    # -- shared internals used by the mixins ------------------------------------------------

    def _arrays(self, mode: str = "r") -> zarr.Group:
        """The root Zarr group; ``mode`` documents intent, writes are refused on read-only stores."""
        if self._group is None:
            self._group = zarr.open_group(self._fs.zarr_store(("arrays",)),
                                          mode="r" if self.read_only else "a")
        return self._group

    def _write_meta(self, meta: dict) -> None:
        self._fs.write_bytes(MARKER, json.dumps(meta, indent=1).encode())
        self._meta = meta

    def _check_writable(self) -> None:
        if self.read_only:
            raise ReadOnlyStoreError(f"The store at {self.url!r} is open read-only; open it with mode='a'.")


def open_store(path_or_url: str | os.PathLike = "odinlab-store", mode: str = "a") -> Store:
    """Open (or with ``mode="a"``, create) a store at a folder or fsspec URL.

    ``mode="r"`` opens read-only; ``"a"`` reads and writes, creating the store if the place
    is empty; ``"w-"`` creates and fails if a store is there. ``memory://name`` keeps
    everything in this process.

    >>> store = open_store("memory://my-store")
    >>> store.images.height
    0
    """
    if mode not in ("r", "a", "w-"):
        raise StoreError(f"Unknown mode {mode!r}; use 'r' (read), 'a' (read/write) or 'w-' (create).")
    fs = StoreFS(path_or_url, read_only=mode == "r")
    if fs.exists(MARKER):
        if mode == "w-":
            raise StoreError(f"A store already exists at {str(path_or_url)!r}; open it with mode='a'.")
        _check_marker(fs, path_or_url)
        return Store(fs)
    if mode == "r":
        raise StoreError(f"{str(path_or_url)!r} is not an odinlab store (no odinlab.json). "
                         "Check the path, or open it with mode='a' to create one.")
    if fs.fs.exists(fs.root) and fs.fs.isdir(fs.root) and fs.fs.ls(fs.root):
        raise StoreError(f"{str(path_or_url)!r} is a non-empty folder that is not an odinlab store; "
                         "give an empty or new folder.")
    fs.write_bytes(MARKER, json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION,
                                       "created_at": datetime.now(UTC).isoformat(),
                                       "classes": []}, indent=1).encode())
    zarr.open_group(fs.zarr_store(("arrays",)), mode="a")
    return Store(fs)


def _check_marker(fs: StoreFS, path_or_url) -> None:
    try:
        meta = json.loads(fs.read_bytes(MARKER))
    except ValueError as error:
        raise StoreError(f"{str(path_or_url)!r} has a damaged odinlab.json: {error}") from error
    if meta.get("format") != FORMAT:
        raise StoreError(f"{str(path_or_url)!r} holds an odinlab.json that is not an odinlab store's.")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise StoreError(f"The store at {str(path_or_url)!r} was written by a newer odinlab "
                         f"(format {meta['format_version']}); upgrade odinlab to read it.")
