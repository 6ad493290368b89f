"""Where a store's bytes live: a local directory or any fsspec URL that Zarr accepts.

All file access of the store goes through :class:`StoreFS`, which does three things the
rest of the code relies on: it joins only validated names (nothing can escape the root),
it writes files atomically (a crash mid-write leaves the previous version readable), and
it hands Zarr a store over the same place.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem
from zarr.storage import FsspecStore, LocalStore

from odinlab.errors import InvalidNameError, ReadOnlyStoreError, StoreError

# Names that become path components: no separators, no leading dot (so "." and ".."
# and hidden temp files are impossible), a conservative alphabet that every object store accepts.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


def check_name(name: object, what: str = "name") -> str:
    """Return ``name`` if it is safe as one path component, else raise :class:`InvalidNameError`.

    >>> check_name("resnet-small")
    'resnet-small'
    """
    if not isinstance(name, str) or not _SAFE_NAME.match(name) or ".." in name:
        raise InvalidNameError(
            f"Invalid {what} {name!r}: use 1-128 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit (no '/', no '..')."
        )
    return name


class StoreFS:
    """A root folder on a filesystem, with safe joins and atomic writes.

    >>> fs = StoreFS("memory://doc-example")
    >>> fs.write_bytes(("a", "b.txt"), b"hi"); fs.read_bytes(("a", "b.txt"))
    b'hi'
    >>> StoreFS("zip://data.bin::memory://x.zip")
    Traceback (most recent call last):
    odinlab.errors.StoreError: The store path 'zip://data.bin::memory://x.zip' contains '::', ...
    """

    def __init__(self, url: str | os.PathLike, read_only: bool = False):
        self.url = str(url)
        if "::" in self.url:
            # fsspec reads "a::b" as a chain of filesystems (a inside b): writes would land in
            # another place than the path says, or in a cache that is thrown away.
            raise StoreError(
                f"The store path {self.url!r} contains '::', which fsspec reads as a chain of filesystems "
                "(writes would go somewhere else than the path says). Chained URLs are not supported: "
                "give a plain folder or URL, and rename a folder whose name contains '::'."
            )
        self.fs, root = fsspec.core.url_to_fs(self.url)
        self.is_local = isinstance(self.fs, LocalFileSystem)
        self.root = str(Path(root).resolve()) if self.is_local else root.rstrip("/")
        self.read_only = read_only

    def path(self, parts: tuple[str, ...]) -> str:
        """Absolute path of ``parts`` under the root; every part must be a safe name."""
        for part in parts:
            check_name(part, "path component")
        return "/".join((self.root, *parts))

    def lock_path(self, suffix: str = "") -> str:
        """Path of the writer lock file (``.lock``) or a file beside it, e.g. ``.lock.info``.

        Dot names on purpose: :func:`check_name` refuses them, so no table, array or weights
        file can ever collide with the lock.

        >>> StoreFS("memory://lock-path-doc").lock_path(".info")
        '/lock-path-doc/.lock.info'
        """
        return f"{self.root}/.lock{suffix}"

    def exists(self, parts: tuple[str, ...]) -> bool:
        return self.fs.exists(self.path(parts))

    def read_bytes(self, parts: tuple[str, ...]) -> bytes:
        return self.fs.cat_file(self.path(parts))

    def write_bytes(self, parts: tuple[str, ...], data: bytes) -> None:
        """Write a whole file atomically: readers see the old bytes or the new, never a mix."""
        self._check_writable()
        target = self.path(parts)
        self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        if not self.is_local:
            # Object stores (and fsspec's memory filesystem) replace a whole object in one put.
            self.fs.pipe_file(target, data)
            return
        tmp = f"{target}.{uuid.uuid4().hex}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)  # atomic on POSIX
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    def remove(self, parts: tuple[str, ...]) -> None:
        self._check_writable()
        path = self.path(parts)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)

    def size(self, parts: tuple[str, ...] = ()) -> int:
        """Bytes on disk below ``parts`` (the whole store by default).

        Files that a writer renames or removes while they are counted (a chunk's temporary
        ``.partial`` file, a superseded table) are skipped: a reader never fails on a live store.
        """
        path = self.path(parts)
        if not self.fs.exists(path):
            return 0
        for _ in range(5):
            try:
                return self.fs.du(path)  # one listing on object stores
            except FileNotFoundError:  # a file went away while it was counted: count again
                continue
        return sum(self._size_or_zero(name) for name in self.fs.find(path))

    def _size_or_zero(self, path: str) -> int:
        try:
            return self.fs.size(path) or 0
        except FileNotFoundError:
            return 0

    def zarr_store(self, parts: tuple[str, ...]) -> LocalStore | FsspecStore:
        """A Zarr v3 store rooted at ``parts``: LocalStore on disk, FsspecStore elsewhere."""
        path = self.path(parts)
        if self.is_local:
            return LocalStore(path, read_only=self.read_only)
        protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        return FsspecStore.from_url(f"{protocol}://{path.lstrip('/')}", read_only=self.read_only)

    def _check_writable(self) -> None:
        if self.read_only:
            raise ReadOnlyStoreError(
                f"The store at {self.url!r} is open read-only; open it with mode='a' to write."
            )
