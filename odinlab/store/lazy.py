"""Out-of-core reads: stored rows as Dask arrays over ``dask.array.from_zarr``, decoded by blocks.

An analysis that reads more than :func:`in_memory_limit` bytes (decoded float32) of a layer,
or that is given a Dask client, reads it through :func:`lazy_layer` instead of
``store.activations``: a Dask array chunked like the Zarr array, so every task holds one chunk,
and reductions (sums, cross-products) are trees of chunk-sized steps. :func:`compute` runs the
graph on the client (its workers open the Zarr store themselves: a local folder or ``s3://``
store, never ``memory://``) or on local threads.

Set the limit with Dask's configuration::

    dask.config.set({"odinlab.in-memory-limit": "512MB"})   # or DASK_ODINLAB__IN_MEMORY_LIMIT=512MB

Damage never reads back as data: a chunk missing where rows are done raises
:class:`~odinlab.errors.CorruptStoreError` naming the array and its rows, as ``RowArray.read`` does.
"""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import zarr
from dask.utils import parse_bytes
from zarr.core.array import AsyncArray
from zarr.storage import StorePath, WrapperStore

from odinlab.errors import CorruptStoreError, NotMaterializedError, OptionError
from odinlab.parallel import current_client
from odinlab.store import quantize
from odinlab.store.arrays import RowArray

LIMIT_KEY = "odinlab.in-memory-limit"
DEFAULT_LIMIT = "2GB"


def in_memory_limit() -> int:
    """Bytes an analysis may read into memory at once: ``odinlab.in-memory-limit`` in Dask's config.

    >>> with dask.config.set({"odinlab.in-memory-limit": "1MB"}):
    ...     in_memory_limit()
    1000000
    """
    value = dask.config.get(LIMIT_KEY, DEFAULT_LIMIT)
    try:
        limit = parse_bytes(value) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        limit = -1
    if limit <= 0:
        raise OptionError(f"{LIMIT_KEY} must be a positive size such as '2GB' or 500_000_000, not {value!r}; "
                          f"set it with dask.config.set({{{LIMIT_KEY!r}: '2GB'}}).")
    return limit


def out_of_core(nbytes: int) -> bool:
    """Whether reading ``nbytes`` exceeds :func:`in_memory_limit` (then analyses stream by chunks).

    >>> with dask.config.set({"odinlab.in-memory-limit": "1KB"}):
    ...     out_of_core(4096), out_of_core(10)
    (True, False)
    """
    return int(nbytes) > in_memory_limit()


def lazy_rows(target: RowArray, rows) -> da.Array:
    """Decoded float32 values of ``rows`` (any order) of a stored array, as a lazy Dask array.

    Built on ``dask.array.from_zarr``, so it keeps the Zarr chunking: a contiguous range of
    rows is a slice of the chunks, other selections are gathered by Dask into chunks of about
    the same size; uint8 arrays are decoded (``q · step + low``) block by block. Every row must
    be done (materialized), else :class:`~odinlab.errors.NotMaterializedError`.

    >>> _ = store.materialize(net, ["head.fc1"], "val", progress=False)
    >>> arr = store.layer_array("cnn@1", "head.fc1")
    >>> x = lazy_rows(arr, store.select("val").rows)
    >>> x.shape, x.dtype, x.chunksize[0] <= arr.values.chunks[0]
    ((269, 64), dtype('float32'), True)
    """
    rows = np.asarray(rows, np.int64)
    if len(rows) and not bool(target.done_rows(np.unique(rows)).all()):
        raise NotMaterializedError(f"Some of these {len(rows)} rows of {target.group.path!r} are not materialized; "
                                   "materialize them first (store.materialize(...)).")
    values = _pick(_from_zarr(target.values), rows)
    if not target.quantized:
        return values.astype(np.float32)
    # Rechunks here use Dask's "tasks" method: "p2p", which Dask picks when a client exists, runs
    # only on that client's workers, and these graphs also run on local threads.
    step, low = (_pick(_from_zarr(target.group[name]), rows).rechunk({0: values.chunks[0]}, method="tasks")
                 for name in ("step", "low"))
    index = "abcdefgh"[: values.ndim]
    return da.blockwise(quantize.decode, index, values, index, step, index[0] + "z", low, index[0] + "z",
                        dtype=np.float32, concatenate=True)


def unit_means(x: da.Array) -> da.Array:
    """(rows, units) from (rows, C, ...): a conv channel's spatial mean, per block as numpy does it.

    The same numpy mean per row as the in-memory path, so values (and ties) are bit for bit equal.

    >>> unit_means(da.ones((4, 3, 2, 2), chunks=2)).shape
    (4, 3)
    """
    if x.ndim <= 2:
        return x
    x = x.rechunk({i: -1 for i in range(1, x.ndim)}, method="tasks")
    return x.map_blocks(lambda b: b.reshape(len(b), b.shape[1], -1).mean(axis=2), dtype=x.dtype,
                        drop_axis=list(range(2, x.ndim)))


def lazy_layer(store, model, layer: str, selection, *, module=None, pool: int | None = None,
               scheduler=None, units: bool = False, force: bool = False) -> da.Array | None:
    """The layer's values for ``selection`` as a lazy Dask array when they go out of core, else None.

    Out of core means more than :func:`in_memory_limit` decoded bytes, or a Dask client given
    (``scheduler=``, or ``odinlab.parallel``). Rows not yet materialized are materialized first
    (with ``module``, or this session's module of the version; on the same client). None says:
    read them in memory (``store.activations``), as before. ``units=True`` gives conv channels'
    spatial means (:func:`unit_means`); ``force=True`` a lazy array however small.

    >>> lazy_layer(store, "cnn@1", "head.fc1", store.select("val")) is None   # 269 x 64 floats fit
    True
    """
    record = store.model(model)
    shape = _layer_shape(store, record, layer, pool)
    rows = selection.rows
    client = current_client(scheduler)
    if client is None and not force and not out_of_core(len(rows) * int(np.prod(shape)) * 4):
        return None
    target = store.layer_array(record, layer, None, pool)
    if target is None or not bool(target.done_rows(np.unique(rows)).all()):
        if store.read_only:
            return None  # computed without storing, in memory (store.activations(store=False))
        _materialize(store, model, record, layer, selection, module, pool, scheduler)
        target = store.layer_array(record, layer, "float16", pool)
    x = lazy_rows(target, rows)
    return unit_means(x) if units else x


def by_unit_blocks(func, x: da.Array, k: int, *, scheduler=None, per_value: int = 64) -> np.ndarray:
    """``func`` over blocks of columns of ``x`` (rows, units) holding every row; the (k, units) results side by side.

    For per-unit statistics that need all rows of a unit at once (AUCs, ranks): ``func`` maps a
    (rows, b) numpy block to (k, b). Blocks are as wide as :func:`in_memory_limit` allows at
    ``per_value`` bytes per value of working memory (at least one unit).

    >>> by_unit_blocks(lambda b: b.max(axis=0, keepdims=True), da.arange(6.0).reshape(3, 2), 1)
    array([[4., 5.]])
    """
    rows, units = x.shape
    width = int(np.clip(in_memory_limit() // max(1, rows * per_value), 1, max(1, units)))
    x = x.rechunk({0: -1, 1: width}, method="tasks")
    out = x.map_blocks(func, dtype=np.float64, chunks=((k,), x.chunks[1]))
    return compute(out, scheduler=scheduler)[0]


def compute(*arrays, scheduler=None) -> tuple:
    """Compute Dask collections on the current client (``scheduler=`` or ``odinlab.parallel``), else
    on local threads; returns a tuple of results, as ``dask.compute``.

    A chunk that fails its checksum raises :class:`~odinlab.errors.CorruptStoreError`.

    >>> compute(da.arange(4).sum())
    (np.int64(6),)
    """
    client = current_client(scheduler)
    try:
        return dask.compute(*arrays, scheduler=client if client is not None else "threads")
    except ValueError as error:
        if "checksum" not in str(error):
            raise
        raise CorruptStoreError(f"A chunk read for this analysis is damaged ({error}). Restore it from a copy "
                                "(or recompute what it held); `odinlab verify STORE` lists every damaged chunk.") from error


# -- internals -------------------------------------------------------------------------------


def _layer_shape(store, record, layer: str, pool: int | None) -> tuple[int, ...]:
    """A layer's per-image shape as stored (pooled conv maps are C × k × k)."""
    arch = store.architecture(record)
    shapes = dict(zip(arch["layer"].to_list(), arch["output_shape"].to_list()))
    store.check_layers(record, [layer])
    shape = tuple(shapes[layer])
    return (shape[0], pool, pool) if pool and len(shape) == 3 else shape


def _materialize(store, model, record, layer, selection, module, pool, scheduler) -> None:
    """Store the layer's missing rows (materialize skips the done ones)."""
    from torch import nn

    if module is None:
        module = model if isinstance(model, nn.Module) else None
    if module is None:
        try:
            module = store.module(record)
        except NotMaterializedError:
            raise NotMaterializedError(
                f"{layer} of {record.model_id} is not materialized for all these {len(selection)} images; pass "
                f"module=<the network> to compute them, or load it once with "
                f"store.load_weights(MyNet(), {record.model_id!r})."
            ) from None
    store.materialize(module, [layer], selection, model_id=record.model_id, dtype="float16", pool=pool,
                      progress=False, scheduler=scheduler)


def _pick(x: da.Array, rows: np.ndarray) -> da.Array:
    """``x[rows]``: a slice (the Zarr chunking kept) when the rows are one ascending run."""
    if len(rows) and rows[-1] - rows[0] + 1 == len(rows) and bool((np.diff(rows) == 1).all()):
        return x[int(rows[0]) : int(rows[-1]) + 1]
    return x[rows]


def _from_zarr(array: zarr.Array) -> da.Array:
    """``da.from_zarr`` over a view of ``array`` whose missing chunks raise (they hold done rows)."""
    path = array.store_path
    strict = StorePath(_Strict(path.store, path.path, array.chunks[0]), path.path)
    return da.from_zarr(zarr.Array(AsyncArray(array.metadata, strict, config=array.async_array.config)))


class _Strict(WrapperStore):
    """A view of a store in which a missing chunk of one array is damage, not fill values.

    :func:`lazy_rows` reads only done rows, and every chunk holding a done row was written
    (arrays write all chunks, even those equal to the fill value), so a chunk that is not there
    was lost.
    """

    def __init__(self, store, path: str, chunk: int):
        super().__init__(store)
        self.path, self.chunk = path, chunk

    def _with_store(self, store) -> _Strict:
        return type(self)(store, self.path, self.chunk)

    def __getstate__(self):
        return {"store": self._store, "path": self.path, "chunk": self.chunk}

    def __setstate__(self, state):
        self.__init__(state["store"], state["path"], state["chunk"])

    async def get(self, key, prototype, byte_range=None):
        value = await self._store.get(key, prototype, byte_range)
        prefix = f"{self.path}/c/" if self.path else "c/"
        if value is None and key.startswith(prefix):
            chunk = int(key[len(prefix):].split("/")[0])
            low, high = chunk * self.chunk, (chunk + 1) * self.chunk - 1
            raise CorruptStoreError(
                f"Chunk {chunk} of array {self.path!r} (rows {low}..{high}) is missing. The store is damaged: "
                "restore that file from a copy (or recompute what it held); `odinlab verify STORE` lists "
                "everything that is damaged.")
        return value
