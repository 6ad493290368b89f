"""Per-image arrays of a model version, aligned with the store's pixel rows.

Every materialized array has one row per pixel row of the store (the images table's hidden
``_row``), so an image id finds its row in any array through one table, and a subset of
images is a subset of rows. Beside its values each array keeps a ``done`` mask: a batch is
committed when its rows are marked done, after the values were written (Zarr replaces each
chunk file atomically), which makes materialization resumable after a crash.

Damage never reads back as data. Every chunk carries a CRC-32C checksum (Zarr's ``crc32c``
codec, after Blosc), and every chunk is written even when it equals the fill value, so a
chunk missing inside a written region is damage, not zeros. :func:`read_rows` raises
:class:`~odinlab.errors.CorruptStoreError` naming the array, the chunk and its rows or images.
Arrays written before checksums (no ``crc32c`` codec) still read, without those guarantees.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import zarr
from zarr.abc.store import Store
from zarr.codecs import BloscCodec, Crc32cCodec
from zarr.core.array import AsyncArray
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import MemoryStore, StorePath, WrapperStore

from odinlab.errors import CorruptStoreError, NotMaterializedError, listing
from odinlab.store import quantize

CHUNK_BYTES = 1 << 20
DONE_CHUNK = 16384
MAX_CHUNK_ROWS = 1024  # see chunk_rows
# zstd level 1 with byte shuffle: measured 1.6x faster to write than level 3 + bitshuffle on
# ReLU maps, and 7-15% smaller (bench/storage.py). The checksum comes last, so it is checked
# before Blosc ever sees the bytes: a truncated chunk cannot crash the decoder.
COMPRESSOR = (BloscCodec(cname="zstd", clevel=1, shuffle="shuffle"), Crc32cCodec())
# Every chunk is stored, even one equal to the fill value: only then is a missing chunk damage.
WRITE_ALL = {"write_empty_chunks": True}
# Rows (or written rows) may be given as a mask function, e.g. RowArray.done_rows.
Written = bool | Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class ArraySpec:
    """What to store for one output: where, its per-image shape, and how it is encoded."""

    path: str  # group path under arrays/, e.g. models/cnn/v1/layers/features.conv1/float16
    shape: tuple[int, ...]
    dtype: str = "float32"
    attrs: tuple = ()
    extras: tuple[str, ...] = ()  # per-row float32 scalars stored beside the values (e.g. loss)

    def open(self, group: zarr.Group, capacity: int) -> "RowArray":
        return RowArray.open_or_create(group, self, capacity)

    def members(self) -> list[str]:
        """The arrays of the group; ``done`` is listed last."""
        quantized = ["step", "low"] if self.dtype == "uint8" else []
        return ["values", *quantized, "error", *self.extras, "done"]


class RowArray:
    """A group holding ``values`` (rows × shape), optional ``step``/``low`` for uint8, ``error`` and ``done``.

    >>> spec = ArraySpec("doc/relu", (4,), "float16")
    >>> arr = spec.open(zarr.open_group(MemoryStore()), capacity=10)
    >>> arr.write(np.array([2, 3]), np.ones((2, 4), np.float32))
    0.0
    >>> arr.read(np.array([3])).tolist(), arr.done_rows(np.arange(4)).tolist()
    ([[1.0, 1.0, 1.0, 1.0]], [False, False, True, True])
    """

    def __init__(self, group: zarr.Group, guard=None):
        # ``guard()`` is held around each write (the store's writer lock, for arrays handed out
        # by store.results), so that two processes never interleave writes into one chunk.
        self.guard = guard or contextlib.nullcontext
        if "done" not in group or "dtype" not in group.attrs:
            raise NotMaterializedError(
                f"The array {group.path!r} was being created when a process stopped, and holds nothing; "
                "materialize again to create it anew."
            )
        self.group = group
        self.values = group["values"]
        self.done = group["done"]
        self.dtype = group.attrs["dtype"]
        self.quantized = self.dtype == "uint8"

    @classmethod
    def open_or_create(cls, root: zarr.Group, spec: ArraySpec, capacity: int) -> "RowArray":
        if spec.path in root and _complete(root[spec.path], spec):
            existing = cls(root[spec.path])
            if min(existing.group[name].shape[0] for name in spec.members()) >= capacity:
                return existing
            existing.grow(capacity)  # also finishes a grow that a crash cut short
            return cls(root[spec.path])  # fresh handles: the old ones keep the old shape
        if spec.path in root:  # created by an older odinlab that was stopped half-way: holds nothing
            del root[spec.path]
        _create(root, spec, capacity)
        return cls(root[spec.path])

    def grow(self, capacity: int) -> None:
        """Make room for rows of images ingested after the array was created."""
        for name in self.group.array_keys():
            array = self.group[name]
            if array.shape[0] < capacity:
                array.resize((capacity, *array.shape[1:]))

    def done_rows(self, rows: np.ndarray) -> np.ndarray:
        # A done chunk is missing where nothing was done yet: that reads as False, rightly.
        return read_rows(self.done, rows, written=False) if len(rows) else np.zeros(0, bool)

    def write(self, rows: np.ndarray, x: np.ndarray, **extras: np.ndarray) -> float:
        """Encode and write a batch for ``rows`` (sorted), then mark it done; return its mean error."""
        with self.guard():
            return self._write(rows, x, **extras)

    def _write(self, rows: np.ndarray, x: np.ndarray, **extras: np.ndarray) -> float:
        per_row = self.write_values(rows, x)
        self._commit(rows, per_row["error"], per_row.get("step"), per_row.get("low"), extras)
        return float(per_row["error"].mean()) if len(rows) else 0.0

    def write_values(self, rows: np.ndarray, x: np.ndarray) -> dict[str, np.ndarray]:
        """Encode ``x`` and write it to ``values`` only; return what :meth:`commit` writes for these rows.

        The first half of a write, for a worker that owns whole chunks of ``values`` (the other
        arrays have bigger chunks, shared by many workers: the caller commits them).

        >>> arr = ArraySpec("doc/split", (2,), "uint8").open(zarr.open_group(MemoryStore()), capacity=4)
        >>> per_row = arr.write_values(np.array([0, 1]), np.array([[0, 1], [2, 4]], np.float32))
        >>> sorted(per_row), arr.done_rows(np.array([0, 1])).tolist()
        (['error', 'low', 'step'], [False, False])
        >>> arr.commit(np.array([0, 1]), **per_row); arr.read(np.array([1])).tolist()
        [[2.0, 4.0]]
        """
        values, step, low = quantize.encode(x, self.dtype)
        write_rows(self.values, rows, values)
        per_row = {"error": quantize.relative_error(x, quantize.decode(values, step, low))}
        if self.quantized:
            per_row |= {"step": step, "low": low}
        return per_row

    def commit(self, rows: np.ndarray, *, error: np.ndarray, step: np.ndarray | None = None,
               low: np.ndarray | None = None, **extras: np.ndarray) -> None:
        """Write the per-row arrays of rows whose ``values`` are written, and mark them done (last)."""
        with self.guard():
            self._commit(rows, error, step, low, extras)

    def _commit(self, rows, error, step, low, extras) -> None:
        for name, column in extras.items():
            write_rows(self.group[name], rows, column.astype(np.float32))
        if self.quantized:
            write_rows(self.group["step"], rows, step)
            write_rows(self.group["low"], rows, low)
        write_rows(self.group["error"], rows, error)
        write_rows(self.done, rows, np.ones(len(rows), bool))  # the commit point of these rows

    def read_extra(self, name: str, rows: np.ndarray, ids: Sequence[str] | None = None) -> np.ndarray:
        if not len(rows):
            return np.zeros(0, np.float32)
        return read_rows(self.group[name], rows, ids=ids, written=self.done_rows)

    def read(self, rows: np.ndarray, ids: Sequence[str] | None = None) -> np.ndarray:
        """Decoded float32 values for ``rows`` (any order); ``ids`` (one per row) name damaged images."""
        values = read_rows(self.values, rows, ids=ids, written=self.done_rows)
        if not self.quantized:
            return values.astype(np.float32, copy=False)
        step, low = (read_rows(self.group[n], rows, ids=ids, written=self.done_rows) for n in ("step", "low"))
        return quantize.decode(values, step, low)


def chunk_rows(shape: tuple[int, ...], dtype: str) -> int:
    """Rows per chunk of a new ``values`` array: about :data:`CHUNK_BYTES`, a power of two, at most
    :data:`MAX_CHUNK_ROWS`.

    Powers of two make the chunks of all arrays nest (each divides the largest), so work split at
    the largest chunk's boundaries gives every worker whole chunks of every array; the cap keeps
    enough chunks of small per-image arrays (predictions, pooled maps) to split among workers.

    >>> chunk_rows((10,), "float32"), chunk_rows((32, 16, 16), "float16")
    (1024, 64)
    """
    per_row = max(1, int(np.prod(shape)) * np.dtype(dtype).itemsize)
    rows = int(np.clip(CHUNK_BYTES // per_row, 1, MAX_CHUNK_ROWS))
    return 1 << (rows.bit_length() - 1)


def _complete(group: zarr.Group, spec: ArraySpec) -> bool:
    """Whether every member exists and the attributes were written (a crash can cut creation short)."""
    return "dtype" in group.attrs and all(name in group for name in spec.members())


def _create(root: zarr.Group, spec: ArraySpec, capacity: int) -> None:
    """Create the group with all its arrays, the group's own node last.

    The arrays are built in memory and their metadata copied into the store, the group's
    ``zarr.json`` last: a process stopped half-way leaves no group that readers could open
    without its ``done`` (only member metadata, which the next creation overwrites).
    """
    staging = zarr.open_group(MemoryStore(), mode="w")
    rows = chunk_rows(spec.shape, spec.dtype)
    staging.create_array("values", shape=(capacity, *spec.shape), chunks=(rows, *spec.shape),
                         dtype=spec.dtype, compressors=COMPRESSOR, fill_value=0)
    if spec.dtype == "uint8":
        channels = spec.shape[0] if len(spec.shape) > 1 else 1
        for name in ("step", "low"):
            staging.create_array(name, shape=(capacity, channels), chunks=(DONE_CHUNK, channels),
                                 dtype="float32", compressors=COMPRESSOR, fill_value=0)
    for name in ("error", *spec.extras):
        staging.create_array(name, shape=(capacity,), chunks=(DONE_CHUNK,), dtype="float32",
                             compressors=COMPRESSOR, fill_value=0)
    staging.create_array("done", shape=(capacity,), chunks=(DONE_CHUNK,), dtype="bool",
                         compressors=COMPRESSOR, fill_value=False)
    staging.attrs.update({"dtype": spec.dtype, "shape": list(spec.shape), **dict(spec.attrs)})
    parent = spec.path.rpartition("/")[0]
    if parent:
        root.require_group(parent)
    sync(_copy_metadata(staging.store_path.store, root.store_path.store, _join(root.store_path.path, spec.path)))


async def _copy_metadata(source: Store, target: Store, prefix: str) -> None:
    keys = sorted([key async for key in source.list()], key=lambda k: k == "zarr.json")  # the group's last
    prototype = default_buffer_prototype()
    for key in keys:
        await target.set(_join(prefix, key), await source.get(key, prototype))


def _join(prefix: str, key: str) -> str:
    return f"{prefix.rstrip('/')}/{key}" if prefix else key


def has_checksums(array: zarr.Array) -> bool:
    """Whether the array's chunks carry CRC-32C checksums (arrays of older stores do not).

    >>> has_checksums(zarr.create_array(MemoryStore(), shape=(2,), dtype="f4", compressors=COMPRESSOR))
    True
    """
    return any(isinstance(codec, Crc32cCodec) for codec in getattr(array.metadata, "codecs", ()))


def write_rows(array: zarr.Array, rows: np.ndarray, data: np.ndarray) -> None:
    """``array[rows] = data`` for sorted row indices: one slice write when they are contiguous."""
    array = array.with_config(WRITE_ALL)
    if len(rows) and rows[-1] - rows[0] + 1 == len(rows):
        array[int(rows[0]) : int(rows[-1]) + 1] = data
    elif len(rows):
        array.set_orthogonal_selection((rows,), data)


def read_rows(array: zarr.Array, rows: np.ndarray, *, ids: Sequence[str] | None = None,
              written: Written = True) -> np.ndarray:
    """``array[rows]`` for row indices in any order (repeats allowed), refusing damaged chunks.

    Dense selections (whole splits usually are) are one contiguous read; sparse ones one gather.
    A chunk that fails its checksum, or (in an array with checksums) a chunk missing although
    it holds ``written`` rows (all requested rows by default, or a mask function such as
    ``RowArray.done_rows``), raises :class:`CorruptStoreError`; ``ids`` (one per row) name the
    images it holds. Missing chunks are noticed during the read itself: no extra request.

    >>> array = zarr.create_array(MemoryStore(), shape=(4,), chunks=(2,), dtype="i4", compressors=COMPRESSOR)
    >>> write_rows(array, np.arange(4), np.arange(4))
    >>> read_rows(array, np.array([3, 0]))
    array([3, 0], dtype=int32)
    >>> sync(array.store.delete("c/1"))
    >>> read_rows(array, np.array([3, 0]), ids=["d", "a"])
    Traceback (most recent call last):
    odinlab.errors.CorruptStoreError: Chunk 1 of array '' (rows 2..3; images d) is missing...
    """
    if len(rows) == 0:
        return np.zeros((0, *array.shape[1:]), array.dtype)
    rows = np.asarray(rows)
    watched, missing = _watched(array)
    try:
        out = _gather(watched, rows)
    except Exception as error:  # a checksum or decoder failure: find the chunk, else re-raise
        damaged = damaged_chunks(array, np.unique(rows // array.chunks[0]))
        if not damaged:
            raise
        raise corrupt_error(array, damaged, rows, ids) from error
    if missing and has_checksums(array) and written is not False:
        lost = _lost_chunks(array, rows, missing, written)
        if lost:
            raise corrupt_error(array, {c: "is missing" for c in lost}, rows, ids)
    return out


def _gather(array: zarr.Array, rows: np.ndarray) -> np.ndarray:
    order = np.argsort(rows, kind="stable")
    ordered = rows[order]
    if ordered[-1] - ordered[0] + 1 <= 2 * len(rows):
        picked = array[int(ordered[0]) : int(ordered[-1]) + 1][ordered - ordered[0]]
    else:
        picked = array.get_orthogonal_selection((ordered,))
    out = np.empty_like(picked)
    out[order] = picked
    return out


class _MissingKeys(WrapperStore):
    """A store view that records the keys a read asked for and did not find."""

    def __init__(self, store: Store):
        super().__init__(store)
        self.missing: set[str] = set()

    def _with_store(self, store: Store) -> "_MissingKeys":
        return type(self)(store)

    async def get(self, key, prototype, byte_range=None):
        value = await self._store.get(key, prototype, byte_range)
        if value is None:
            self.missing.add(key)
        return value


def _watched(array: zarr.Array) -> tuple[zarr.Array, set[str]]:
    """The same array read through :class:`_MissingKeys` (about 15 µs to build)."""
    recorder = _MissingKeys(array.store_path.store)
    path = StorePath(recorder, array.store_path.path)
    return zarr.Array(AsyncArray(array.metadata, path, config=array.async_array.config)), recorder.missing


def chunk_keys(array: zarr.Array, chunk: int) -> list[str]:
    """Store keys of the chunks holding rows of row-chunk ``chunk`` (one unless other axes are chunked)."""
    grid = [range(-(-n // c)) for n, c in zip(array.shape[1:], array.chunks[1:])]
    return [_join(array.store_path.path, array.metadata.encode_chunk_key((chunk, *rest)))
            for rest in itertools.product(*grid)]


def _lost_chunks(array: zarr.Array, rows: np.ndarray, missing: set[str], written: Written) -> list[int]:
    """Row chunks that hold rows which must have been written, yet are missing."""
    size = array.chunks[0]
    candidates = [int(c) for c in np.unique(rows // size) if missing.intersection(chunk_keys(array, int(c)))]
    if not candidates or written is True:
        return candidates
    inside = rows[np.isin(rows // size, candidates)]
    held = inside[np.asarray(written(inside), bool)]
    return sorted({int(c) for c in np.unique(held // size)})


def damaged_chunks(array: zarr.Array, chunks: Sequence[int]) -> dict[int, str]:
    """``{chunk: why}`` for the row chunks among ``chunks`` that fail to decode (checksum, decoder)."""
    size, damaged = array.chunks[0], {}
    for chunk in chunks:
        try:
            array[int(chunk) * size : min((int(chunk) + 1) * size, array.shape[0])]
        except Exception as error:  # noqa: BLE001 - any decoding failure is damage
            damaged[int(chunk)] = f"is damaged ({type(error).__name__}: {error})"
    return damaged


def corrupt_error(array: zarr.Array, damaged: dict[int, str], rows: np.ndarray,
                  ids: Sequence[str] | None) -> CorruptStoreError:
    """A :class:`CorruptStoreError` naming the array, each chunk, its rows and the images read from it."""
    size, parts, images = array.chunks[0], [], []
    for chunk, why in sorted(damaged.items()):
        low, high = chunk * size, min((chunk + 1) * size, array.shape[0]) - 1
        inside = np.flatnonzero((rows >= low) & (rows <= high))
        held = [str(ids[i]) for i in inside[np.argsort(rows[inside], kind="stable")]] if ids is not None else []
        images.extend(held)
        names = f"; images {listing(dict.fromkeys(held), 10)}" if held else ""
        parts.append(f"Chunk {chunk} of array {array.path!r} (rows {low}..{high}{names}) {why}")
    error = CorruptStoreError(
        "; ".join(parts) + ". The store is damaged: restore that file from a copy (or recompute what it "
        "held); `odinlab verify STORE` lists everything that is damaged."
    )
    error.array, error.chunks, error.images = array.path, sorted(damaged), list(dict.fromkeys(images))
    return error
