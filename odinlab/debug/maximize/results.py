"""Optimized images kept in the store, keyed by model version and every parameter.

A result is a small Zarr group in the version's ``debug`` area, ``maximize/<digest>`` (the
digest of its parameters; :mod:`odinlab.store.layout` decides where that is): ``images``
(n, C, H, W) float32, ``values`` (n,) the objective reached, and the parameters in its
attributes. ``complete`` is written last, so a result interrupted halfway is computed again
rather than read.
"""

from __future__ import annotations

import json

import numpy as np
import polars as pl

from odinlab.store.arrays import COMPRESSOR
from odinlab.store.layout import digest

KIND = "maximize"
AREA = "debug"


def load(store, model, params: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """The stored (images, values) for ``params``, or None when not (completely) stored.

    >>> load(store, "cnn@1", {"never": "stored"}) is None
    True
    """
    result = store.results.group(model, AREA, KIND, digest(params))
    if result is None or not result.attrs.get("complete"):
        return None
    return np.asarray(result["images"][:], np.float32), np.asarray(result["values"][:], np.float32)


def save(store, model, params: dict, images: np.ndarray, values: np.ndarray) -> None:
    """Store (images, values) for ``params``; a read-only store keeps nothing.

    >>> save(store, "cnn@1", {"example": 1}, np.zeros((1, 1, 8, 8), np.float32), np.ones(1, np.float32))
    >>> load(store, "cnn@1", {"example": 1})[1].tolist()
    [1.0]
    """
    if store.read_only:
        return
    group = store.results.group(model, AREA, KIND, digest(params), create=True)
    group.attrs.update({"complete": False})
    for name, data in (("images", images), ("values", values)):
        data = np.asarray(data, np.float32)
        array = group.create_array(name, shape=data.shape, chunks=data.shape or None, dtype="float32",
                                   compressors=COMPRESSOR, overwrite=True)
        array[...] = data
    group.attrs.update({"kind": KIND, "model_id": store.model(model).model_id,
                        "params": json.dumps(params, sort_keys=True, default=str), "complete": True})


def stored(store, model) -> pl.DataFrame:
    """Every stored maximization of a model version: digest, objective spec, n, steps, seed, values.

    >>> save(store, "cnn@1", {"objective": {"op": "class", "unit": 3}, "n": 1}, np.zeros((1, 1, 8, 8)), np.ones(1))
    >>> stored(store, "cnn@1").select("objective", "n").rows()
    [('{"op": "class", "unit": 3}', 1)]
    """
    root, rows = store.results.group(model, AREA, KIND), []
    for key in sorted(root.group_keys()) if root is not None else []:
        result = root[key]
        if not result.attrs.get("complete"):
            continue
        params = json.loads(result.attrs["params"])
        rows.append({"digest": key, "objective": json.dumps(params.get("objective"), sort_keys=True),
                     "n": params.get("n"), "steps": params.get("steps"), "seed": params.get("seed"),
                     "values": np.asarray(result["values"][:], np.float64).tolist(),
                     "params": result.attrs["params"]})
    return pl.DataFrame(rows, schema={"digest": pl.String, "objective": pl.String, "n": pl.Int64,
                                      "steps": pl.Int64, "seed": pl.Int64, "values": pl.List(pl.Float64),
                                      "params": pl.String})
