"""Attributions on a Dask cluster: each worker attributes whole chunks of images and writes their maps.

The calling process finds the images not stored yet for the attributor's settings, splits them
at the maps array's chunk boundaries, and sends each part to a worker with the attributor's
settings and a weightless skeleton of the network (see :mod:`odinlab.parallel.skeleton`). The
worker builds the same attributor over the version's stored weights, computes the part in the
same batches as a local run, writes the maps' chunks and returns each image's scale, delta and
encoding error; the calling process commits them (``aux`` first, then the maps' done marks).
"""

from __future__ import annotations

import numpy as np

from odinlab.parallel.partition import chunk_parts
from odinlab.parallel.runner import n_parts, run_parts
from odinlab.parallel.skeleton import pack, worker_module
from odinlab.parallel.worker import prepare_worker
from odinlab.store.selection import Selection


def scale_maps(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(per-image scale, maps divided by it): the largest |value| of each map, so that small and
    large maps keep float16's relative precision once stored.

    >>> scale, scaled = scale_maps(np.array([[[[0.5, -2.0]]], [[[0.0, 0.0]]]], np.float32))
    >>> scale.tolist(), scaled[0].ravel().tolist()
    ([2.0, 1.0], [0.25, -1.0])
    """
    scale = np.abs(values).reshape(len(values), -1).max(axis=1)
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0).astype(np.float32)
    return scale, values / scale[:, None, None, None]


def attribute_on(client, attributor, missing: Selection, target, base, key: dict, maps, aux,
                 batch_size: int, progress: bool) -> None:
    """Compute and store the maps of ``missing`` (unique, in row order) on ``client``'s workers."""
    row_bytes = 4 * int(np.prod(maps.values.shape[1:]))
    parts = chunk_parts(missing.rows, maps.values.chunks[0], n_parts(client, len(missing), row_bytes))
    work = [(missing[p],) for p in parts]

    def commit(i: int, result: dict) -> None:
        rows = work[i][0].rows
        aux.write(rows, np.stack([result["scale"], result["delta"]], axis=1))  # first, as a local run
        maps.commit(rows, error=result["error"])

    run_parts(client, attribute_part, work, sizes=[len(p) for p in parts], commit=commit,
              desc=f"{attributor.method} {attributor.model_id}", progress=progress,
              url=attributor.store.url, model_id=attributor.model_id, packed=pack(attributor.module),
              settings=attributor.settings, cache_key=key, target=target, base=base, batch_size=batch_size)


def attribute_part(part: Selection, *, url: str, model_id: str, packed: bytes, settings: dict, cache_key: dict,
                   target, base, batch_size: int) -> dict:
    """On a worker: the maps of ``part`` written to their chunks; their scale, delta and error returned."""
    from odinlab.debug.attribution.attributor import Attributor
    from odinlab.store.store import open_store

    prepare_worker()
    store = open_store(url)
    attributor = Attributor(store, worker_module(store, model_id, packed), **settings)
    maps = store.results.find_rows(model_id, "attribution", cache_key)
    values, deltas = zip(*(attributor._attribute_batch(batch, target, base) for batch in part.chunks(batch_size)))
    scale, scaled = scale_maps(np.concatenate(values))
    written = maps.write_values(part.rows, scaled)
    return {"scale": scale, "delta": np.concatenate(deltas), "error": written["error"]}
