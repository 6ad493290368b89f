"""Results of debugging questions kept in the store, so that asking twice is a read.

Every result is keyed by (model version, kind of result, parameters): the parameters are
hashed into a digest that names where the result lives. Per-image results (attributions,
for example) are :class:`~odinlab.store.arrays.RowArray` s aligned with the store's pixel
rows, so that a later question about more images computes only the new ones; whole-set
results (a confusion matrix, a ranking of units) are Parquet tables.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable

import polars as pl

from odinlab.store.arrays import ArraySpec, RowArray
from odinlab.store.fs import check_name


def digest(params: dict) -> str:
    """A short, stable digest of JSON-able parameters (key order does not matter).

    >>> digest({"method": "saliency", "target": "label"}) == digest({"target": "label", "method": "saliency"})
    True
    """
    text = json.dumps(params, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def row_array(store, model_id: str, kind: str, params: dict, shape: tuple[int, ...],
              dtype: str = "float16") -> RowArray:
    """The per-image result array for (model, kind, params), created on first use.

    >>> arr = row_array(store, "cnn@1", "saliency", {"target": "label"}, (1, 8, 8))
    >>> arr.values.shape, arr.done_rows(np.arange(3)).tolist()
    ((1797, 1, 8, 8), [False, False, False])
    """
    store._check_writable()
    name, version = store.resolve_model(model_id).rsplit("@", 1)
    path = f"models/{check_name(name)}/v{int(version)}/debug/{check_name(kind, 'result kind')}/{digest(params)}"
    spec = ArraySpec(path, tuple(shape), dtype, (("kind", kind), ("params", json.dumps(params, default=str))))
    return spec.open(store._arrays(mode="a"), store.pixel_array.shape[0])


def frame(store, model_id: str, kind: str, params: dict, compute: Callable[[], pl.DataFrame]) -> pl.DataFrame:
    """The table result for (model, kind, params): read if stored, else computed and stored.

    >>> calls = []
    >>> first = frame(store, "cnn@1", "example", {"k": 1}, lambda: calls.append(1) or pl.DataFrame({"x": [1]}))
    >>> again = frame(store, "cnn@1", "example", {"k": 1}, lambda: calls.append(1) or pl.DataFrame({"x": [1]}))
    >>> len(calls), again.equals(first)
    (1, True)
    """
    name, version = store.resolve_model(model_id).rsplit("@", 1)
    parts = ("results", check_name(name), f"v{int(version)}", f"{check_name(kind, 'result kind')}-{digest(params)}.parquet")
    if store._fs.exists(parts):
        return pl.read_parquet(io.BytesIO(store._fs.read_bytes(parts)))
    result = compute()
    if not store.read_only:
        buffer = io.BytesIO()
        result.write_parquet(buffer, compression="zstd")
        store._fs.write_bytes(parts, buffer.getvalue())
    return result
