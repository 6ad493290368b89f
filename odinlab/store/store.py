"""The odinlab store: one friendly front over components with narrow interfaces.

``Store`` is what users hold: ``store.ingest``, ``store.select``, ``store.materialize``... Each
of its methods forwards to one component, and each component receives only what it needs::

    Backend          files (StoreFS), tables (Parquet), the marker, the Zarr root
    ImageCatalog     images table, selections, pixels, thumbnails       (backend)
    Ingestor         adding images, all or nothing                      (backend, images)
    ModelRegistry    versions, weights, lineage, this session's modules (backend, images)
    ExperimentLog    runs, image sets, metrics, the test-set guard      (backend, images, models)
    Materializer     predictions and activations                        (backend, images, models)
    ResultCache      cached debugging results (``store.results``)       (backend, images, models)
    LabelBook        label corrections, label sets, undo                (backend, images, models)

On disk (or under any fsspec URL) see :mod:`odinlab.store.layout` and the README.
"""

from __future__ import annotations

import functools
import json
import os
import types
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import zarr

from odinlab.errors import CorruptStoreError, StoreError, closest
from odinlab.store import crossval
from odinlab.store import query as query_module
from odinlab.store.backend import LOCK_TIMEOUT, MARKER, Backend, check_timeout
from odinlab.store.experiments import ExperimentLog
from odinlab.store.fs import StoreFS
from odinlab.store.images import ImageCatalog
from odinlab.store.ingest import PENDING, Ingestor, settle_classes
from odinlab.store.labels import LabelBook
from odinlab.store.materialize import Materializer
from odinlab.store.models import ModelRegistry
from odinlab.store.results import ResultCache
from odinlab.store.tables import FORMAT_VERSION, SCHEMAS
from odinlab.store.verify import verify as verify_store

FORMAT = "odinlab-store"


def _forward(component: str, method):
    """A Store method that calls ``self.<component>.<method>``, with the method's name and docs.

    The function gets the globals of the component's module, so doctest finds each docstring
    example once, beside the code it documents, instead of twice.
    """
    name = method.__name__

    def call(self, *args, **kwargs):
        return getattr(getattr(self, component), name)(*args, **kwargs)

    forwarded = types.FunctionType(call.__code__, method.__globals__, name, None, call.__closure__)
    return functools.update_wrapper(forwarded, method)


def _with_store(function):
    """A Store method that calls ``function(self, ...)``, with its name and docs (found once, as above)."""
    def call(self, *args, **kwargs):
        return function(self, *args, **kwargs)

    forwarded = types.FunctionType(call.__code__, function.__globals__, function.__name__, None, call.__closure__)
    return functools.update_wrapper(forwarded, function)


class Store:
    """A store of images, model versions, experiments and results; open one with :func:`open_store`.

    >>> store = odinlab.open_store("memory://store-class-example", create=True)
    >>> store.ingest(odinlab.datasets.digits()).height
    1797
    """

    def __init__(self, fs: StoreFS, lock_timeout: float | None = LOCK_TIMEOUT):
        self._backend = backend = Backend(fs, lock_timeout)
        self._images = ImageCatalog(backend, sql=self.sql)
        self._ingestor = Ingestor(backend, self._images)
        self._models = ModelRegistry(backend, self._images)
        self._experiments = ExperimentLog(backend, self._images, self._models)
        self._materializer = Materializer(backend, self._images, self._models)
        self.results = ResultCache(backend, self._images, self._models)  # locks its own writes
        self._labels = LabelBook(backend, self._images, self._models)
        # Every write holds the store's writer lock: the components' writing methods are marked
        # @writes (see Backend.writing). evaluate's forward pass runs unlocked, its record locked.
        if not backend.read_only and PENDING in _meta_if_readable(backend):  # an older ingest was killed
            with backend.writing("settle classes"):
                settle_classes(backend)

    # -- the store itself ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Where the store lives (a path or fsspec URL)."""
        return self._backend.url

    @property
    def read_only(self) -> bool:
        """True when opened with ``mode="r"``: every write is refused."""
        return self._backend.read_only

    def check_writable(self) -> None:
        """Raise :class:`~odinlab.ReadOnlyStoreError` on a read-only store."""
        self._backend.check_writable()

    @property
    def lock_timeout(self) -> float | None:
        """Seconds a write waits for another writer before :class:`~odinlab.StoreBusyError` (None: forever).

        >>> store.lock_timeout
        60.0
        """
        return self._backend.lock_timeout

    @lock_timeout.setter
    def lock_timeout(self, seconds: float | None) -> None:
        self._backend.lock_timeout = check_timeout(seconds)

    def sql(self, query: str) -> pl.DataFrame:
        """Run SQL over the store's tables and return a polars DataFrame.

        Tables: ``images`` (with metadata columns), ``models``, ``experiments``, ``image_sets``,
        ``label_corrections`` and ``predictions`` (every materialized model version's predictions). Only these: table
        functions that read files (``read_csv(...)``) are refused with a :class:`~odinlab.QueryError`.

        >>> store.sql("SELECT split, COUNT(*) AS n FROM images GROUP BY split ORDER BY split").rows()
        [('test', 270), ('train', 1258), ('val', 269)]
        >>> store.sql("SELECT * FROM model")
        Traceback (most recent call last):
        odinlab.errors.UnknownTableError: No table 'model' in the store. Did you mean: models? Tables: ...
        """
        query_module.check_query(query)  # before any table is read
        frames = {name: self._backend.tables.read(name) for name in SCHEMAS}
        frames["images"] = self.images
        if "predictions" in query.lower():  # built from Zarr on demand: only when asked for
            frames["predictions"] = self._all_predictions()
        else:
            frames["predictions"] = pl.DataFrame(schema={"model_id": pl.String, "image_id": pl.String})
        return query_module.run(frames, query)

    def verify(self) -> pl.DataFrame:
        """Check every chunk, table, manifest and weights file; one row per problem found.

        Empty when the store is healthy (``odinlab verify STORE`` does the same from a shell).

        >>> store.verify().height
        0
        """
        return verify_store(self._backend)

    def size_on_disk(self, *parts: str) -> int:
        """Bytes on disk of the store, or of one part of it (``"weights"``, ``"arrays"``...).

        >>> 0 < store.size_on_disk("weights") < store.size_on_disk()
        True
        """
        return self._backend.fs.size(tuple(parts))

    def summary(self) -> dict:
        """Counts and sizes at a glance: images per split, models, experiments, bytes on disk.

        >>> store.summary()["splits"]
        {'test': 270, 'train': 1258, 'val': 269}
        """
        images = self.images
        return {
            "url": self.url,
            "images": images.height,
            "splits": dict(images.group_by("split").len().sort("split").iter_rows()),
            "classes": self.classes,
            "models": self.models["model_id"].to_list(),
            "experiments": self.experiments.height,
            "bytes_on_disk": self.size_on_disk(),
        }

    def refresh(self) -> Store:
        """Re-read tables written by another process since this store was opened.

        >>> store.refresh().images.height
        1797
        """
        self._backend.refresh()
        return self

    def close(self) -> None:
        """Let go of the modules this session attached and of cached tables and handles.

        >>> with odinlab.open_store("memory://closing", create=True) as s:
        ...     s.read_only
        False
        """
        self._models.forget_modules()
        self._backend.refresh()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<odinlab.Store {self.url!r}: {self.images.height} images, {self.models.height} model versions, "
                f"{self.experiments.height} experiments>")

    def _all_predictions(self) -> pl.DataFrame:
        frames = [self.predictions(model_id).drop("probabilities") for model_id in self.models["model_id"]]
        return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame(
            schema={"model_id": pl.String, "image_id": pl.String, "predicted": pl.Int64})

    # -- images ---------------------------------------------------------------------------------

    @property
    def images(self) -> pl.DataFrame:
        """The images table: image_id, split, label, label_name and metadata columns."""
        return self._images.table

    @property
    def classes(self) -> list[str]:
        """Class names; label ``i`` means ``classes[i]``."""
        return self._images.classes

    @property
    def pixel_array(self) -> zarr.Array:
        """The Zarr array of all pixels, one row per image (a selection's ``rows`` index it)."""
        return self._images.pixel_array

    select = _forward("_images", ImageCatalog.select)
    pixels = _forward("_images", ImageCatalog.pixels)
    model_input = _forward("_images", ImageCatalog.model_input)
    batches = _forward("_images", ImageCatalog.batches)
    thumbnails = _forward("_images", ImageCatalog.thumbnails)
    ingest = _forward("_ingestor", Ingestor.ingest)

    # -- models ---------------------------------------------------------------------------------

    @property
    def models(self) -> pl.DataFrame:
        """The models table: one row per version (model_id ``name@N``, parent, params, digest...)."""
        return self._models.table

    register_model = _forward("_models", ModelRegistry.register)
    note_training = _forward("_models", ModelRegistry.note_training)
    model = _forward("_models", ModelRegistry.record)
    module = _forward("_models", ModelRegistry.module)
    resolve_model = _forward("_models", ModelRegistry.resolve)
    model_id_of = _forward("_models", ModelRegistry.model_id_of)
    state_dict = _forward("_models", ModelRegistry.state_dict)
    load_weights = _forward("_models", ModelRegistry.load_weights)
    architecture = _forward("_models", ModelRegistry.architecture)
    layers = _forward("_models", ModelRegistry.layers)
    check_layers = _forward("_models", ModelRegistry.check_layers)
    check_input_shape = _forward("_models", ModelRegistry.check_input_shape)
    check_module = _forward("_models", ModelRegistry.check_module)
    ancestors = _forward("_models", ModelRegistry.ancestors)
    descendants = _forward("_models", ModelRegistry.descendants)
    lineage = _forward("_models", ModelRegistry.lineage)

    # -- experiments ----------------------------------------------------------------------------

    @property
    def experiments(self) -> pl.DataFrame:
        """The experiments table: model, image sets, hyper-parameters, metrics, test-set looks."""
        return self._experiments.table

    @property
    def image_sets(self) -> pl.DataFrame:
        """Image sets of experiments in long form (set_id, image_id), for joins with ``images``."""
        return self._experiments.image_sets

    record_experiment = _forward("_experiments", ExperimentLog.record)
    evaluate = _forward("_experiments", ExperimentLog.evaluate)
    metrics = _forward("_experiments", ExperimentLog.metrics)

    # -- materialized predictions and activations -----------------------------------------------

    materialize = _forward("_materializer", Materializer.materialize)
    activations = _forward("_materializer", Materializer.activations)
    predictions = _forward("_materializer", Materializer.predictions)
    materialized = _forward("_materializer", Materializer.materialized)
    layer_array = _forward("_materializer", Materializer.layer_array)


    cross_validate = _with_store(crossval.cross_validate)

    # -- label corrections ----------------------------------------------------------------------

    @property
    def label_corrections(self) -> pl.DataFrame:
        """Every label decision and undo, in commit order (see :mod:`odinlab.store.labels`).

        >>> store.label_corrections.height
        0
        """
        return self._labels.table

    correct_labels = _forward("_labels", LabelBook.correct_labels)
    keep_labels = _forward("_labels", LabelBook.keep_labels)
    undo_correction = _forward("_labels", LabelBook.undo_correction)
    label_set = _forward("_labels", LabelBook.label_set)


def open_store(path_or_url: str | os.PathLike = "odinlab-store", mode: str = "a", *, create: bool = False,
               lock_timeout: float | None = LOCK_TIMEOUT) -> Store:
    """Open the store at a folder or fsspec URL; with ``create=True``, make it if it is not there.

    ``mode="r"`` opens read-only, ``"a"`` reads and writes, ``"w-"`` creates a new store and
    fails if one is there. Without ``create=True`` a missing store is an error, so that a typo
    in a path never leaves an empty store behind. ``memory://name`` keeps everything in this process.

    Many processes may write one store: writes take turns on the store's writer lock, and a
    write waits up to ``lock_timeout`` seconds (None: forever) for another one, then raises
    :class:`~odinlab.StoreBusyError` naming that writer (pid, host, since when). Readers never wait.

    >>> store = open_store("memory://my-store", create=True)
    >>> store.images.height
    0
    >>> open_store("memory://my-stor")
    Traceback (most recent call last):
    odinlab.errors.StoreError: No odinlab store at 'memory://my-stor'. ...create=True).
    """
    if mode not in ("r", "a", "w-"):
        raise StoreError(f"Unknown mode {mode!r}; use 'r' (read), 'a' (read/write) or 'w-' (create).")
    check_timeout(lock_timeout)
    fs = StoreFS(path_or_url, read_only=mode == "r")
    where = str(path_or_url)
    if fs.fs.exists(fs.root) and fs.fs.isfile(fs.root):
        raise StoreError(f"{where!r} is a file; a store is a folder (or URL). Give the folder's path.")
    if fs.exists(MARKER):
        if mode == "w-":
            raise StoreError(f"A store already exists at {where!r}; open it with mode='a'.")
        _check_marker(fs, where)
        return Store(fs, lock_timeout)
    if mode == "r" or not (create or mode == "w-"):
        raise StoreError(f"No odinlab store at {where!r}.{_nearby_stores(fs, where)} "
                         f"To create one: odinlab.open_store({where!r}, create=True).")
    if fs.fs.exists(fs.root) and fs.fs.isdir(fs.root) and fs.fs.ls(fs.root):
        raise StoreError(f"{where!r} is a non-empty folder that is not an odinlab store; "
                         "give an empty or new folder.")
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "created_at": datetime.now(UTC).isoformat(),
            "classes": []}
    fs.write_bytes(MARKER, json.dumps(meta, indent=1).encode())
    zarr.open_group(fs.zarr_store(("arrays",)), mode="a")
    store = Store(fs, lock_timeout)
    with store._backend.writing("create the store"):  # commit 0, the first table manifest (see tables.py)
        pass
    return store


def _meta_if_readable(backend: Backend) -> dict:
    """The store's metadata, or {} where its table manifest is damaged: the store still opens, so
    that ``store.verify()`` can say what is damaged, and reading its tables raises."""
    try:
        return backend.meta
    except CorruptStoreError:
        return {}


def _nearby_stores(fs: StoreFS, where: str) -> str:
    """`` Did you mean: ...?`` for stores beside a mistyped local path."""
    if not fs.is_local:
        return ""
    parent = Path(fs.root).parent
    if not parent.is_dir():
        return ""
    stores = [p.name for p in parent.iterdir() if (p / MARKER[0]).is_file()]
    return closest(Path(fs.root).name, stores)


def _check_marker(fs: StoreFS, where: str) -> None:
    try:
        meta = json.loads(fs.read_bytes(MARKER))
    except ValueError as error:
        raise StoreError(f"{where!r} has a damaged odinlab.json: {error}") from error
    if meta.get("format") != FORMAT:
        raise StoreError(f"{where!r} holds an odinlab.json that is not an odinlab store's.")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise StoreError(f"The store at {where!r} was written by a newer odinlab "
                         f"(format {meta['format_version']}); upgrade odinlab to read it.")
