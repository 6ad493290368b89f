"""What every part of a store shares: its files, its tables, its marker and its Zarr root.

The store's components (images, models, experiments, materialize, results) each receive the
backend and the components they need, and nothing else, so that what depends on what can
be read off their constructors.
"""

from __future__ import annotations

import json

import zarr

from odinlab.errors import ReadOnlyStoreError
from odinlab.store.fs import StoreFS
from odinlab.store.tables import Tables

MARKER = ("odinlab.json",)


class Backend:
    """Files, tables and arrays of one store.

    >>> backend = Backend(StoreFS(store.url))
    >>> backend.tables.read("images").height, backend.read_only
    (1797, False)
    """

    def __init__(self, fs: StoreFS):
        self.fs = fs
        self.tables = Tables(fs)
        self.meta = json.loads(fs.read_bytes(MARKER))
        self._group: zarr.Group | None = None

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
            self._group = zarr.open_group(self.fs.zarr_store(("arrays",)), mode="r" if self.read_only else "a")
        return self._group

    def write_meta(self, meta: dict) -> None:
        self.fs.write_bytes(MARKER, json.dumps(meta, indent=1).encode())
        self.meta = meta

    def check_writable(self) -> None:
        if self.read_only:
            raise ReadOnlyStoreError(f"The store at {self.url!r} is open read-only; open it with mode='a'.")

    def refresh(self) -> None:
        """Forget cached tables and handles, so that changes of other processes are seen."""
        self.tables.forget()
        self.meta = json.loads(self.fs.read_bytes(MARKER))
        self._group = None
