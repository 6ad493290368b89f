"""What every part of a store shares: its files, its tables, its marker, its Zarr root and its writer lock.

The store's components (images, models, experiments, materialize, results) each receive the
backend and the components they need, and nothing else, so that what depends on what can
be read off their constructors.

Many writers: every write runs inside :meth:`Backend.writing`, which holds the store's writer
lock, so that two processes (or threads) writing one store take turns, and ids (image rows,
model versions, experiment numbers) are allocated from the latest committed tables. Each
outermost hold is one commit of the tables (and the store's classes): a manifest swap, see
:mod:`odinlab.store.tables`. Readers take no lock: they read one commit's manifest, so they
see every table of that commit or of the next, never half of one.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime

import filelock
import zarr

from odinlab.errors import OptionError, ReadOnlyStoreError, StoreBusyError
from odinlab.store.fs import StoreFS
from odinlab.store.tables import FORMAT_VERSION, Tables

MARKER = ("odinlab.json",)
LOCK_TIMEOUT = 60.0  # seconds a writer waits for another one before StoreBusyError


class Backend:
    """Files, tables and arrays of one store.

    >>> backend = Backend(StoreFS(store.url))
    >>> backend.tables.read("images").height, backend.read_only
    (1797, False)
    """

    def __init__(self, fs: StoreFS, lock_timeout: float | None = LOCK_TIMEOUT):
        self.fs = fs
        self.tables = Tables(fs)
        self._marker: dict | None = json.loads(fs.read_bytes(MARKER))
        self._group: zarr.Group | None = None
        self.lock_timeout = check_timeout(lock_timeout)
        self._lock = None if fs.read_only else writer_lock(fs)

    @property
    def url(self) -> str:
        """Where the store lives (a path or fsspec URL)."""
        return self.fs.root if self.fs.is_local else self.fs.url

    @property
    def read_only(self) -> bool:
        return self.fs.read_only

    def arrays(self) -> zarr.Group:
        """The root Zarr group (opened read-only on a read-only store)."""
        if self._group is None:
            store = self.fs.zarr_store(("arrays",))
            if hasattr(store, "fs"):  # object storage: Zarr's own filesystem may hold stale listings
                store.fs.invalidate_cache()
            self._group = zarr.open_group(store, mode="r" if self.read_only else "a")
        return self._group

    @property
    def meta(self) -> dict:
        """The store's metadata (format, classes...): from the tables' manifest, else ``odinlab.json``."""
        committed = self.tables.meta()
        if committed is not None:
            return committed
        if self._marker is None:
            self._marker = json.loads(self.fs.read_bytes(MARKER))
        return self._marker

    def write_meta(self, meta: dict) -> None:
        """Change the metadata; committed with the tables, in the same manifest put."""
        self.tables.set_meta(meta)

    def check_writable(self) -> None:
        if self.read_only:
            raise ReadOnlyStoreError(f"The store at {self.url!r} is open read-only; open it with mode='a'.")

    def refresh(self) -> None:
        """Forget cached tables and handles, so that changes of other processes are seen."""
        self.tables.forget()
        # Object storage filesystems (s3fs, gcsfs, ...) cache listings, and answer "exists" from
        # them: a table another process wrote since would look missing.
        self.fs.fs.invalidate_cache()
        self._marker = None  # read again only where the manifest holds no metadata (older stores)
        self._group = None

    @contextmanager
    def writing(self, what: str = "write") -> Iterator[None]:
        """Hold the store's writer lock for a write; re-entrant; a no-op on a read-only store.

        The outermost hold re-reads tables and marker, so that what the write allocates (rows,
        versions, ids) follows the latest commit of any other writer, and commits all it wrote to
        the tables at its end, in one manifest put (an exception commits nothing). Waits up to
        ``lock_timeout`` seconds for another writer, then raises :class:`StoreBusyError` naming it.

        >>> with store._backend.writing("example"):
        ...     with store._backend.writing("nested"):  # re-entrant: the same thread may nest
        ...         store._backend.lock_holder()["what"]
        'example'
        """
        if self._lock is None:  # read-only: writes are refused by check_writable, reads need no lock
            yield
            return
        with self._lock.hold(self.lock_timeout, what, self.url) as outermost:
            if outermost:
                self.refresh()
                if self.tables.manifest() is None:
                    self._upgrade()
            with self.tables.transaction():
                yield

    def _upgrade(self) -> None:
        """Move a store written before table manifests to them (under the writer lock).

        The marker first says the new format (so an older odinlab refuses the store instead of
        missing its new tables), then the first manifest names the old table files as they are.
        A kill between the two leaves an old-layout store that this odinlab reads and upgrades.
        """
        marker = json.loads(self.fs.read_bytes(MARKER))
        if marker.get("format_version", 0) < FORMAT_VERSION:
            marker["format_version"] = FORMAT_VERSION
            self.fs.write_bytes(MARKER, json.dumps(marker, indent=1).encode())
        self.tables.migrate(meta=marker)

    def lock_holder(self) -> dict | None:
        """Who holds the writer lock now (pid, host, since, what), or None."""
        return None if self._lock is None else self._lock.holder()


def check_timeout(timeout) -> float | None:
    """A lock timeout in seconds (>= 0), or None to wait as long as it takes.

    >>> check_timeout(5), check_timeout(None)
    (5.0, None)
    """
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout >= 0:
        raise OptionError(f"lock_timeout must be a number of seconds >= 0 (or None to wait forever), "
                          f"not {timeout!r}.")
    return float(timeout)


# -- the writer lock ----------------------------------------------------------------------------

_LOCKS: dict[tuple[int, str], WriterLock] = {}
_LOCKS_GUARD = threading.Lock()


def writer_lock(fs: StoreFS) -> WriterLock:
    """The one writer lock of a store location in this process (shared by all its Store handles).

    >>> writer_lock(StoreFS("memory://lock-doc")) is writer_lock(StoreFS("memory://lock-doc"))
    True
    """
    protocol = fs.fs.protocol if isinstance(fs.fs.protocol, str) else fs.fs.protocol[0]
    # The pid is part of the key: a forked child must not inherit its parent's held lock.
    key = (os.getpid(), f"{protocol}://{fs.root}")
    with _LOCKS_GUARD:
        if key not in _LOCKS:
            _LOCKS[key] = WriterLock(fs)
        return _LOCKS[key]


class WriterLock:
    """A store's writer lock: threads of this process first, then other processes.

    Threads take turns on an RLock (re-entrant, so a write may call another write). The
    outermost hold then takes the lock between processes: ``filelock`` on a local folder,
    a lease object created exclusively on other fsspec filesystems, nothing more for
    ``memory://`` (which lives in this process only).

    >>> lock = WriterLock(StoreFS("memory://writer-lock-doc"))
    >>> with lock.hold(1.0, "doc", "memory://writer-lock-doc") as outermost:
    ...     outermost, lock.holder()["what"]
    (True, 'doc')
    """

    def __init__(self, fs: StoreFS):
        self._threads = threading.RLock()
        self._depth = 0
        self._info: dict | None = None  # this process's hold, when it holds the lock
        self._between = _between_processes(fs)

    @contextmanager
    def hold(self, timeout: float | None, what: str, where: str) -> Iterator[bool]:
        """Hold the lock; yields True for the outermost hold of this thread."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._threads.acquire(timeout=-1 if timeout is None else timeout):
            raise self._busy(where, timeout)
        try:
            if self._depth == 0:
                self._take(deadline, what, where, timeout)
            self._depth += 1
            try:
                yield self._depth == 1
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._let_go()
        finally:
            self._threads.release()

    def holder(self) -> dict | None:
        """Who holds the lock: this process's hold, else what the other writer wrote down."""
        if self._info is not None:
            return self._info
        return self._between.holder() if self._between is not None else None

    def _take(self, deadline: float | None, what: str, where: str, timeout: float | None) -> None:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "thread": threading.current_thread().name,
                "since": datetime.now(UTC).isoformat(timespec="seconds"), "what": what}
        if self._between is not None:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._between.acquire(left, info):
                raise self._busy(where, timeout)
        self._info = info

    def _let_go(self) -> None:
        self._info = None
        if self._between is not None:
            self._between.release()

    def _busy(self, where: str, timeout: float | None) -> StoreBusyError:
        holder = self.holder()
        who = (f"held by pid {holder.get('pid')} on host {holder.get('host')} since {holder.get('since')} "
               f"({holder.get('what')}, thread {holder.get('thread')})") if holder else "held by another writer"
        return StoreBusyError(
            f"The store at {where!r} is busy: its writer lock is {who}, and it was not released within "
            f"lock_timeout={timeout} s. Wait for that writer to finish, or open the store with a longer "
            "lock_timeout (odinlab.open_store(..., lock_timeout=600))."
        )


def _between_processes(fs: StoreFS):
    if fs.is_local:
        return LocalLock(fs)
    protocol = fs.fs.protocol if isinstance(fs.fs.protocol, str) else fs.fs.protocol[0]
    if protocol == "memory":  # fsspec's memory filesystem is this process's: threads are all
        return None
    return LeaseLock(fs)


class LocalLock:
    """``filelock`` on ``<store>/.lock``, and who holds it in ``<store>/.lock.info``.

    The operating system releases the lock when its process dies, so a crash never leaves the
    store locked. filelock removes the (empty) lock file on release.
    """

    def __init__(self, fs: StoreFS):
        self._lock = filelock.FileLock(fs.lock_path(), thread_local=False)
        self._info = fs.lock_path(".info")

    def acquire(self, timeout: float | None, info: dict) -> bool:
        try:
            self._lock.acquire(timeout=-1 if timeout is None else timeout)
        except filelock.Timeout:
            return False
        tmp = f"{self._info}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(info, f)
        os.replace(tmp, self._info)  # whole, so a waiter never reads half of it
        return True

    def release(self) -> None:
        try:
            with suppress(FileNotFoundError):
                os.remove(self._info)
        finally:
            self._lock.release()

    def holder(self) -> dict | None:
        try:
            with open(self._info) as f:
                return json.load(f)
        except (OSError, ValueError):  # released meanwhile, or not written yet
            return None


class LeaseLock:
    """A lease object ``<store>/.lock`` created exclusively (mode ``"xb"``), removed on release.

    The lease holds who took it (pid, host, since, what). A writer that finds it there waits
    and tries again until its timeout. On S3 (s3fs) the exclusive create is a conditional put
    (``If-None-Match: *``): the object store itself lets exactly one of two racing writers
    create the lease, and the other gets ``412 Precondition Failed`` (``FileExistsError``).
    Where a filesystem only emulates ``"xb"`` by "exists, then put", two writers racing within
    one round trip may both get it. A writer that dies keeps its lease: after checking that no
    writer runs, delete ``<store>/.lock``.
    """

    POLL = 0.2
    # S3 answers 409 ConditionalRequestConflict while another conditional put of the same key is
    # in flight: the lease is being taken by someone, so wait as if it were taken.
    CONTENDED = frozenset({"ConditionalRequestConflict", "OperationAborted"})

    def __init__(self, fs: StoreFS):
        self._fs, self._path = fs.fs, fs.lock_path()

    def acquire(self, timeout: float | None, info: dict) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        token = uuid.uuid4().hex  # tells this lease from any other, even one with the same pid and host
        while True:
            try:
                with self._fs.open(self._path, "xb") as f:
                    f.write(json.dumps({**info, "lease": token}).encode())
                return True
            except FileExistsError:
                # A put the client retried (its first answer lost) finds the lease it made itself.
                if self._read().get("lease") == token:
                    return True
            except OSError as error:
                if self._error_code(error) not in self.CONTENDED:
                    raise
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(self.POLL)

    def release(self) -> None:
        with suppress(FileNotFoundError):  # removed by hand meanwhile: nothing is held either way
            self._fs.rm(self._path)

    def holder(self) -> dict | None:
        info = self._read()
        info.pop("lease", None)
        return info or None

    def _read(self) -> dict:
        try:
            info = json.loads(self._fs.cat_file(self._path))
        except (OSError, ValueError):  # released meanwhile, or not a lease
            return {}
        return info if isinstance(info, dict) else {}

    @staticmethod
    def _error_code(error: OSError) -> str | None:
        """The object store's error code behind an ``OSError`` (s3fs keeps the boto error as cause)."""
        response = getattr(error.__cause__, "response", None)
        return response.get("Error", {}).get("Code") if isinstance(response, dict) else None


def writes(what: str):
    """Mark a component method that writes: it runs holding the store's writer lock.

    The component must keep its :class:`Backend` as ``self._backend``. Re-entrant, so a write
    that calls another (evaluate -> record, activations -> materialize) holds it once.
    """
    def decorate(method):
        @functools.wraps(method)
        def locked(self, *args, **kwargs):
            with self._backend.writing(what):
                return method(self, *args, **kwargs)
        return locked
    return decorate
