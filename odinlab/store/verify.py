"""Check a whole store for damage: every chunk, table (and the tables' manifest), model manifest and weights file.

``store.verify()`` (and ``odinlab verify STORE``) reads everything once and reports what is
damaged, without stopping at the first problem: a frame with one row per problem (``what``,
``where``, the ``images`` affected, the ``error``), empty when the store is healthy. Reading
the same data through the store raises :class:`~odinlab.errors.CorruptStoreError` instead.
"""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import Iterator

import numpy as np
import polars as pl
import zarr
from zarr.codecs import BloscCodec
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from odinlab.errors import CorruptStoreError
from odinlab.store.arrays import has_checksums
from odinlab.store.backend import MARKER, Backend
from odinlab.store.tables import MANIFEST, Tables
from odinlab.store.weights import WeightStore

COLUMNS = {"what": pl.String, "where": pl.String, "images": pl.List(pl.String), "error": pl.String}
PIXELS = "images/pixels"


def verify(store) -> pl.DataFrame:
    """Every problem of the store (a Store or its backend) as a frame; empty when healthy.

    >>> verify(store)
    shape: (0, 4)
    ...
    >>> store._backend.fs.remove(tuple(store._backend.tables.object_of("images").split("/")))
    >>> verify(store).select("what", "where").row(0)
    ('table', 'tables/images/...parquet')
    """
    backend: Backend = getattr(store, "_backend", store)
    checks = (_marker, _tables, _arrays, _weights)
    problems = [problem for check in checks for problem in check(backend)]
    return pl.DataFrame(problems, schema=COLUMNS, orient="row")


def _problem(what: str, where: str, error: str, images=()) -> tuple:
    return what, where, [str(i) for i in images], error


# -- files -------------------------------------------------------------------------------

def _marker(backend: Backend) -> Iterator[tuple]:
    try:
        json.loads(backend.fs.read_bytes(MARKER))
    except (OSError, ValueError) as error:
        yield _problem("marker", MARKER[0], f"{type(error).__name__}: {error}")


def _tables(backend: Backend) -> Iterator[tuple]:
    """The manifest parses and names objects that are there; every Parquet file reads.

    Files no manifest names (superseded, or left by a killed commit) are read too, since a
    damaged one hints at trouble, but one removed meanwhile by a writer's tidying is no damage.
    """
    fs, manifest = backend.fs, None
    try:
        manifest = Tables(fs).manifest()  # the latest commit, not the snapshot this handle reads
    except CorruptStoreError as error:
        yield _problem("table", "/".join(MANIFEST), str(error))
    named = {f"tables/{obj}": name for name, obj in (manifest or {}).get("tables", {}).items()}
    for where, name in named.items():
        if not fs.fs.exists(fs.path(tuple(where.split("/")))):
            yield _problem("table", where, f"missing, although {'/'.join(MANIFEST)} names it for the {name} table")
    for path in _files(backend, "tables/*.parquet", "tables/*/*.parquet", "results/**/*.parquet"):
        try:
            pl.read_parquet(io.BytesIO(fs.fs.cat_file(path)))
        except FileNotFoundError:
            continue  # a superseded object removed since the listing (named ones are checked above)
        except Exception as error:  # noqa: BLE001 - any failure to read is damage to report
            yield _problem("table", _relative(backend, path), f"unreadable Parquet: {type(error).__name__}: {error}")
    # Without a manifest (older stores) a missing images table beside pixels is damage; with one,
    # pixels beyond the committed images are a killed ingest's, not damage.
    if manifest is None and not fs.exists(("tables", "images.parquet")) and _pixel_rows(backend):
        yield _problem("table", "tables/images.parquet",
                       f"missing, although the pixel array holds {_pixel_rows(backend)} images")


def _files(backend: Backend, *patterns: str) -> list[str]:
    root = backend.fs.path(())
    return sorted({p for pattern in patterns for p in backend.fs.fs.glob(f"{root}/{pattern}")})


def _relative(backend: Backend, path: str) -> str:
    return path[len(backend.fs.path(())):].lstrip("/")


def _pixel_rows(backend: Backend) -> int:
    group = backend.arrays()
    return group[PIXELS].shape[0] if PIXELS in group else 0


# -- arrays ------------------------------------------------------------------------------

def _arrays(backend: Backend) -> Iterator[tuple]:
    try:
        table = backend.tables.read("images").select("image_id", "_row")
    except Exception:  # noqa: BLE001 - reported by _tables; chunks are still checked, without image ids
        table = pl.DataFrame(schema={"image_id": pl.String, "_row": pl.Int64})
    ids = dict(zip(table["_row"].to_list(), table["image_id"].to_list()))
    group = backend.arrays()
    for path, node in group.members(max_depth=None):
        if isinstance(node, zarr.Array):
            yield from _check_array(node, _required_rows(group, path, table), ids)


def _required_rows(group: zarr.Group, path: str, table: pl.DataFrame) -> np.ndarray:
    """Rows of ``path`` that were written: pixels of listed images, or rows a ``done`` mask commits."""
    if path == PIXELS:
        return table["_row"].to_numpy()
    parent, _, name = path.rpartition("/")
    done = f"{parent}/done" if parent else "done"
    if name != "done" and done in group:
        try:
            return np.flatnonzero(np.asarray(group[done][:], bool))
        except Exception:  # noqa: BLE001 - the done mask is damaged itself: reported with its own chunks
            return np.zeros(0, np.int64)
    return np.zeros(0, np.int64)


def _check_array(array: zarr.Array, required: np.ndarray, ids: dict) -> Iterator[tuple]:
    """Decode every chunk of ``array``; a missing chunk holding ``required`` rows is damage too."""
    stored = _stored_keys(array)
    needed = set(np.unique(required // array.chunks[0]).tolist()) if array.ndim and len(required) else set()
    checked = has_checksums(array)
    for coords in itertools.product(*(range(-(-n // c)) for n, c in zip(array.shape, array.chunks))):
        key = array.metadata.encode_chunk_key(coords)
        where = f"arrays/{array.path}/{key}"
        rows = _chunk_rows(array, coords)
        if key not in stored:
            if checked and coords and coords[0] in needed:
                held = [ids[r] for r in rows if r in ids]
                yield _problem("chunk", where, "missing, although it holds written rows", held)
            continue
        error = _decode_error(array, coords, key, checked)
        if error:
            yield _problem("chunk", where, error, [ids[r] for r in rows if r in ids])


def _stored_keys(array: zarr.Array) -> set[str]:
    prefix = f"{array.path}/"

    async def keys() -> set[str]:
        return {key[len(prefix):] async for key in array.store.list_prefix(prefix)}

    return sync(keys()) - {"zarr.json"}


def _chunk_rows(array: zarr.Array, coords: tuple) -> range:
    if not coords:
        return range(0)
    size = array.chunks[0]
    return range(coords[0] * size, min((coords[0] + 1) * size, array.shape[0]))


def _decode_error(array: zarr.Array, coords: tuple, key: str, checked: bool) -> str | None:
    """Why the chunk at ``coords`` cannot be read, or None."""
    if not checked and any(isinstance(c, BloscCodec) for c in array.metadata.codecs):
        # No checksum: a truncated Blosc frame can crash the decoder, so check its length first.
        data = sync(array.store.get(f"{array.path}/{key}", default_buffer_prototype())).to_bytes()
        if len(data) < 16 or int.from_bytes(data[12:16], "little") != len(data):
            return f"truncated or damaged Blosc frame ({len(data)} bytes)"
    try:
        array.get_block_selection(coords)
    except Exception as error:  # noqa: BLE001 - any failure to read is damage to report
        return f"{type(error).__name__}: {error}"
    return None


# -- weights -----------------------------------------------------------------------------

def _weights(backend: Backend) -> Iterator[tuple]:
    """Manifests parse and match the models table; each weights file hashes to its name."""
    weights, users = WeightStore(backend.fs), {}
    for path in _files(backend, "models/*/*.json"):
        manifest, problem = _manifest(backend, path)
        if problem:
            yield problem
            continue
        for tensor in manifest["tensors"].values():
            users.setdefault(tensor["digest"], []).append(manifest["model_id"])
    for path in _files(backend, "weights/*/*.safetensors"):
        digest = path.rsplit("/", 1)[-1].removesuffix(".safetensors")
        models = users.pop(digest, [])  # what is left in users at the end has no file
        try:
            weights.check(digest, backend.fs.fs.cat_file(path), ", ".join(models) or None)
        except Exception as error:  # noqa: BLE001 - any failure to read is damage to report
            yield _problem("weights", _relative(backend, path), str(error))
    for digest, models in users.items():
        yield _problem("weights", "/".join(WeightStore._parts(digest)), f"missing; used by {', '.join(models)}")


def _manifest(backend: Backend, path: str) -> tuple[dict | None, tuple | None]:
    """The parsed manifest at ``path``, or the problem with it."""
    from odinlab.store.models import (
        weights_digest,  # imported late: models imports weights
    )

    where = _relative(backend, path)
    try:
        manifest = json.loads(backend.fs.fs.cat_file(path))
        tensors = manifest["tensors"]
        model_id = manifest["model_id"]
    except Exception as error:  # noqa: BLE001 - any failure to read is damage to report
        return None, _problem("manifest", where, f"unreadable: {type(error).__name__}: {error}")
    try:
        models = backend.tables.read("models")
    except Exception:  # noqa: BLE001 - reported by _tables
        return manifest, None
    listed = models.filter(pl.col("model_id") == model_id)["weights_digest"].to_list()
    if listed and listed[0] != weights_digest(tensors):
        return None, _problem("manifest", where, f"lists other tensors than {model_id}'s weights digest in the "
                              "models table: it was altered or damaged")
    return manifest, None
