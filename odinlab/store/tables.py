"""The store's tables: polars DataFrames persisted as Parquet, committed together by a manifest swap.

A table is rewritten whole on every change (tables hold rows of metadata, not pixels, so they
stay small). Object stores have no rename, and a logical change often touches two tables
(``record_experiment`` writes ``experiments`` and ``image_sets``), so a change is committed like this:

1. every changed table goes to a new, uniquely named object ``tables/<name>/<commit>-<token>.parquet``
   (invisible to readers: nothing names it yet);
2. one small object, ``tables/manifest.json`` (table -> object, the store's classes and a commit
   counter), is replaced with ONE put: the commit point. On a folder that put is an
   ``os.replace``, on S3 a whole-object PUT; either way a reader gets the old manifest or the new.

Every :meth:`Backend.writing <odinlab.store.backend.Backend.writing>` hold (every write method) is
one such commit (:meth:`Tables.transaction`): a kill before the manifest put leaves the previous
commit whole, an exception rolls the staged tables back. A reader reads the manifest once per
refresh and so sees every table of one commit. Superseded objects stay readable for a while
(:data:`KEEP_COMMITS` commits and :data:`KEEP_SECONDS` seconds) so that a reader that read the
previous manifest still finds its files; a reader that took even longer re-reads the manifest
and starts a new snapshot. Stores written before manifests (``tables/<name>.parquet``) still
read; the first write names their files in a first manifest (no copy).
"""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import polars as pl

from odinlab.errors import CorruptStoreError
from odinlab.store.fs import StoreFS

FORMAT_VERSION = 2  # 2: tables committed through tables/manifest.json (1: one file per table)
MANIFEST = ("tables", "manifest.json")
# A superseded table object is deleted once it is this many commits old AND this many seconds
# old (by the clock of the writer that superseded it): readers need longer than that between
# reading a manifest and reading its tables only when they stall; they then re-read the manifest.
KEEP_COMMITS = 4
KEEP_SECONDS = 120.0
SWEEP_EVERY = 16  # every so many commits, objects no manifest names (a killed commit's) are removed
_UNREAD = object()

# The columns every table starts with; user metadata extends `images` on ingest.
SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    "images": {
        "image_id": pl.String,
        "split": pl.String,
        "label": pl.Int64,
        "_row": pl.Int64,  # position in arrays/images/pixels; internal, hidden from users
    },
    "models": {
        "model_id": pl.String,
        "name": pl.String,
        "version": pl.Int64,
        "parent": pl.String,
        "created_at": pl.Datetime("us", "UTC"),
        "num_params": pl.Int64,
        "num_layers": pl.Int64,
        "input_shape": pl.List(pl.Int64),
        "classes": pl.List(pl.String),
        "weights_digest": pl.String,
        "new_weight_bytes": pl.Int64,
        "hyperparams": pl.String,
        "description": pl.String,
    },
    "experiments": {
        "experiment_id": pl.String,
        "model_id": pl.String,
        "kind": pl.String,
        "created_at": pl.Datetime("us", "UTC"),
        "train_set": pl.String,
        "test_set": pl.String,
        "n_train": pl.Int64,
        "n_test": pl.Int64,
        "test_splits": pl.List(pl.String),
        "hyperparams": pl.String,
        "accuracy": pl.Float64,
        "loss": pl.Float64,
        "precision": pl.List(pl.Float64),
        "recall": pl.List(pl.Float64),
        "f1": pl.List(pl.Float64),
        "confusion": pl.List(pl.List(pl.Int64)),
        "metrics": pl.String,
        "test_look": pl.Int64,
        "test_reuse": pl.Boolean,
        "notes": pl.String,
        "label_set": pl.String,  # the label set the run's labels came from; null: the original labels
    },
    # Image sets used by experiments, in long form so SQL can join them to images.
    "image_sets": {"set_id": pl.String, "image_id": pl.String},
    # Reviewers' label decisions and their undos, never deleted (see odinlab.store.labels).
    "label_corrections": {
        "correction_id": pl.String,
        "label_set": pl.String,
        "image_id": pl.String,
        "action": pl.String,
        "old_label": pl.Int64,
        "new_label": pl.Int64,
        "who": pl.String,
        "at": pl.Datetime("us", "UTC"),
        "model_id": pl.String,
        "score": pl.Float64,
        "method": pl.String,
        "note": pl.String,
        "undoes": pl.String,
    },
}

# Columns added to a table after stores were written without them: they read as nulls there.
ADDED_COLUMNS: dict[str, tuple[str, ...]] = {"experiments": ("label_set",)}


class Tables:
    """Read the store's tables from one commit, and commit changes to them all at once.

    >>> from odinlab.store.fs import StoreFS
    >>> t = Tables(StoreFS("memory://tables-doc"))
    >>> t.read("models").height
    0
    >>> with t.transaction():  # one commit: both tables, or neither
    ...     t.write("image_sets", pl.DataFrame({"set_id": ["s"], "image_id": ["a"]}))
    ...     t.write("experiments", pl.DataFrame({"experiment_id": ["exp-00001"], "test_set": ["s"]}))
    >>> t.manifest()["commit"], sorted(t.manifest()["tables"])
    (1, ['experiments', 'image_sets'])
    """

    def __init__(self, fs: StoreFS):
        self._fs = fs
        self._cache: dict[str, pl.DataFrame] = {}
        self._manifest: dict | None | object = _UNREAD  # None: a store without one (older layout)
        self._depth = 0
        self._staged: dict[str, pl.DataFrame] = {}
        self._staged_meta: dict | None = None

    # -- reading ------------------------------------------------------------------------------

    def read(self, name: str) -> pl.DataFrame:
        """The table, with the columns it gained since an older odinlab wrote it (as nulls).

        >>> t = Tables(StoreFS("memory://tables-read-doc"))
        >>> t.write("experiments", pl.DataFrame({"experiment_id": ["exp-00001"]}))  # an older table
        >>> t.forget(); t.read("experiments")["label_set"].to_list()
        [None]
        """
        if name in self._staged:
            return self._staged[name]
        if name not in self._cache:
            self._cache[name] = self._load(name)
        return self._cache[name]

    def manifest(self) -> dict | None:
        """The manifest of the commit this handle reads (read once per refresh); None on older stores.

        >>> Tables(StoreFS("memory://tables-manifest-doc")).manifest() is None
        True
        """
        if self._manifest is _UNREAD:
            self._manifest = self._read_manifest()
        return self._manifest

    def exists(self, name: str) -> bool:
        """Whether the table was ever written (staged, named by the manifest, or an older store's file).

        >>> Tables(StoreFS("memory://tables-exists-doc")).exists("images")
        False
        """
        if name in self._staged:
            return True
        manifest = self.manifest()
        if manifest is not None:
            return name in manifest["tables"]
        return self._fs.exists(("tables", f"{name}.parquet"))

    def object_of(self, name: str) -> str | None:
        """Where the committed table lives, relative to the store (``tables/...parquet``), or None.

        >>> t = Tables(StoreFS("memory://tables-object-doc"))
        >>> t.write("models", pl.DataFrame(schema=SCHEMAS["models"])); t.object_of("models")
        'tables/models/00000001-....parquet'
        """
        manifest = self.manifest()
        if manifest is None:
            return f"tables/{name}.parquet" if self._fs.exists(("tables", f"{name}.parquet")) else None
        found = manifest["tables"].get(name)
        return None if found is None else f"tables/{found}"

    def meta(self) -> dict | None:
        """The store's metadata (classes...) as staged or committed; None where the marker holds it."""
        if self._staged_meta is not None:
            return self._staged_meta
        manifest = self.manifest()
        return None if manifest is None else manifest.get("meta")

    def forget(self) -> None:
        """Drop the snapshot so the next read sees the latest commit (of this or any other process)."""
        self._cache.clear()
        self._manifest = _UNREAD

    # -- writing ------------------------------------------------------------------------------

    def write(self, name: str, frame: pl.DataFrame) -> None:
        """Replace the table: staged in a transaction, else committed at once."""
        with self.transaction():
            self._staged[name] = frame

    def append(self, name: str, rows: pl.DataFrame) -> pl.DataFrame:
        """Write the table with ``rows`` added (new columns allowed) and return it."""
        frame = pl.concat([self.read(name), rows], how="diagonal_relaxed")
        self.write(name, frame)
        return frame

    def set_meta(self, meta: dict) -> None:
        """Replace the store's metadata, committed with the tables (staged in a transaction)."""
        with self.transaction():
            self._staged_meta = dict(meta)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Everything written inside is one commit, made when the outermost transaction ends.

        Nested transactions are savepoints: one that raises takes back only its own writes.
        The caller must hold the store's writer lock (Backend.writing does).

        >>> t = Tables(StoreFS("memory://tables-transaction-doc"))
        >>> try:
        ...     with t.transaction():
        ...         t.write("models", pl.DataFrame(schema=SCHEMAS["models"]))
        ...         raise KeyboardInterrupt
        ... except KeyboardInterrupt:
        ...     pass
        >>> t.manifest() is None, t.exists("models")
        (True, False)
        """
        saved = (dict(self._staged), self._staged_meta)
        self._depth += 1
        try:
            yield
            if self._depth == 1:
                self._commit()
        except BaseException:
            self._staged, self._staged_meta = saved
            if self._depth == 1:  # nothing was committed: read the last commit afresh
                self._discard()
            raise
        finally:
            self._depth -= 1

    def migrate(self, meta: dict | None = None) -> None:
        """Give a store without a manifest its first one, naming its table files as they are.

        >>> t = Tables(StoreFS("memory://tables-migrate-doc"))
        >>> t.migrate(); t.manifest()["commit"], t.manifest()["tables"]
        (0, {})
        """
        if self._read_manifest() is None:
            manifest = self._old_layout()
            if meta is not None:
                manifest["meta"] = dict(meta)
            self._put_manifest(manifest)
        self.forget()

    # -- internals -----------------------------------------------------------------------------

    def _load(self, name: str) -> pl.DataFrame:
        for attempt in range(2):
            manifest = self.manifest()
            where = ("tables", f"{name}.parquet") if manifest is None else _parts(manifest["tables"].get(name))
            if where is None:
                return pl.DataFrame(schema=SCHEMAS[name])
            try:
                data = self._fs.read_bytes(where)
            except FileNotFoundError:
                if manifest is None:
                    return pl.DataFrame(schema=SCHEMAS[name])
                if attempt == 0 and self._depth == 0 and self._moved_on(manifest):
                    continue  # our snapshot is so old that its objects were removed: take the latest
                raise CorruptStoreError(
                    f"The {name} table of the store at {self._fs.url!r} is missing: tables/manifest.json "
                    f"names {'/'.join(where)}, which is not there. The store is damaged; restore that file "
                    "from a copy (odinlab verify STORE lists what else is damaged)."
                ) from None
            return _with_new_columns(name, pl.read_parquet(io.BytesIO(data)))
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _moved_on(self, manifest: dict) -> bool:
        """Whether a newer commit exists; if so, read from it from now on."""
        latest = self._read_manifest()
        if latest is None or latest["commit"] == manifest["commit"]:
            return False
        self._cache.clear()
        self._manifest = latest
        return True

    def _read_manifest(self) -> dict | None:
        try:
            raw = self._fs.read_bytes(MANIFEST)
        except FileNotFoundError:
            return None
        try:
            manifest = json.loads(raw)
            if not isinstance(manifest.get("tables"), dict) or not isinstance(manifest.get("commit"), int):
                raise ValueError("no tables or commit")
        except (ValueError, AttributeError) as error:
            raise CorruptStoreError(
                f"The table manifest of the store at {self._fs.url!r} ({'/'.join(MANIFEST)}) is damaged "
                f"({error}); restore it from a copy (odinlab verify STORE lists what else is damaged)."
            ) from None
        return manifest

    def _old_layout(self) -> dict:
        """A first manifest for an older store: its table files, named as they are."""
        names = [n for n in SCHEMAS if self._fs.exists(("tables", f"{n}.parquet"))]
        return {"commit": 0, "tables": {n: f"{n}.parquet" for n in names}, "retired": []}

    def _commit(self) -> None:
        """Write the staged tables to new objects, then the manifest in one put; tidy up after."""
        if not self._staged and self._staged_meta is None:
            return
        # Re-read: we hold the writer lock, so this is the latest commit, even one another handle
        # of this process made inside our hold.
        base = self._read_manifest() or self._old_layout()
        number, token, now = base["commit"] + 1, uuid.uuid4().hex[:8], time.time()
        tables, retired = dict(base["tables"]), list(base.get("retired", []))
        for name, frame in self._staged.items():
            buffer = io.BytesIO()
            frame.write_parquet(buffer, compression="zstd")
            tables[name] = f"{name}/{number:08d}-{token}.parquet"
            self._fs.write_bytes(_parts(tables[name]), buffer.getvalue())
            if name in base["tables"]:
                retired.append({"object": base["tables"][name], "commit": number, "at": now})
        expired = [r for r in retired if number - r["commit"] >= KEEP_COMMITS and now - r["at"] >= KEEP_SECONDS]
        manifest = {**base, "commit": number, "tables": tables, "retired": [r for r in retired if r not in expired]}
        if self._staged_meta is not None:
            manifest["meta"] = self._staged_meta
        self._put_manifest(manifest)  # the commit point
        self._cache.update(self._staged)
        self._manifest, self._staged, self._staged_meta = manifest, {}, None
        for old in expired:  # no manifest from the last KEEP_COMMITS commits names them
            self._delete(_parts(old["object"]))
        if number % SWEEP_EVERY == 0:
            self._sweep(manifest)

    def _put_manifest(self, manifest: dict) -> None:
        self._fs.write_bytes(MANIFEST, json.dumps(manifest, indent=1, default=str).encode())

    def _sweep(self, manifest: dict) -> None:
        """Remove table objects that no manifest names: left by commits killed before their manifest put.

        Safe under the writer lock: no other commit is in flight, and every object a reader may
        still use is named by the manifest, current or retired.
        """
        kept = set(manifest["tables"].values()) | {r["object"] for r in manifest["retired"]}
        root = self._fs.path(("tables",))
        # *.tmp: half-written files of a killed writer on a folder (see StoreFS.write_bytes).
        found = [p for pattern in ("*.parquet", "*/*.parquet", "*.tmp", "*/*.tmp")
                 for p in self._fs.fs.glob(f"{root}/{pattern}")]
        for path in found:
            relative = path[len(root):].lstrip("/")
            if relative not in kept:
                self._delete(_parts(relative))

    def _delete(self, parts: tuple[str, ...] | None) -> None:
        with suppress(OSError):  # already gone, or not ours to remove: a later sweep tries again
            self._fs.remove(parts)

    def _discard(self) -> None:
        self._staged, self._staged_meta = {}, None
        self.forget()


def _parts(relative: str | None) -> tuple[str, ...] | None:
    """Path parts of a table object named by the manifest (relative to ``tables/``)."""
    return None if relative is None else ("tables", *relative.split("/"))


def _with_new_columns(name: str, frame: pl.DataFrame) -> pl.DataFrame:
    """Add the columns added since the table's format that ``frame`` lacks, as nulls (older stores).

    Only those: any other missing column is damage, and reads report it as before.
    """
    missing = {c: SCHEMAS[name][c] for c in ADDED_COLUMNS.get(name, ()) if c not in frame.columns}
    return frame.with_columns(pl.lit(None, dtype=t).alias(c) for c, t in missing.items()) if missing else frame
