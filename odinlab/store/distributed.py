"""Materialize on a Dask cluster: workers run the model over whole chunks and write them.

The calling process checks the arguments, creates the arrays and holds the store's writer lock
for the run, as a local run does. The pending images are split at chunk boundaries common to
every array written (:mod:`odinlab.parallel.partition`), so a worker writes whole chunks of
``values`` that no other worker touches; it sends back the small per-row columns (loss,
quantization error, uint8 scales), which the calling process commits with the ``done`` marks.
"""

from __future__ import annotations

import numpy as np

from odinlab.parallel.partition import chunk_parts, chunk_unit
from odinlab.parallel.runner import n_parts, run_parts
from odinlab.parallel.skeleton import pack, worker_module
from odinlab.parallel.worker import prepare_worker
from odinlab.store.arrays import RowArray
from odinlab.store.selection import Selection


def materialize_on(client, url: str, module, record, layers, pool, targets: dict[str, RowArray],
                   selection: Selection, size: int, computed: dict, progress: bool) -> None:
    """Compute and store, on ``client``'s workers, every target row of ``selection`` not done yet."""
    rows = selection.rows
    fresh = {name: ~t.done_rows(rows) for name, t in targets.items()}
    needed = np.logical_or.reduce(list(fresh.values()))
    selection, rows, fresh = selection[needed], rows[needed], {n: f[needed] for n, f in fresh.items()}
    if not len(rows):
        return
    unit = chunk_unit([t.values.chunks[0] for t in targets.values()])
    row_bytes = sum(4 * int(np.prod(t.values.shape[1:])) for t in targets.values())  # float32 until written
    parts = chunk_parts(rows, unit, n_parts(client, len(rows), row_bytes))
    work = [(selection[p], {name: np.flatnonzero(f[p]) for name, f in fresh.items() if f[p].any()})
            for p in parts]

    def commit(i: int, written: dict) -> None:
        for name, per_row in written.items():
            targets[name].commit(work[i][0].rows[work[i][1][name]], **per_row)
            computed[name] += len(work[i][1][name])

    run_parts(client, materialize_part, work, sizes=[len(p) for p in parts], commit=commit,
              desc=f"materialize {record.model_id}", progress=progress, url=url,
              model_id=record.model_id, packed=pack(module), layers=list(layers), pool=pool,
              paths={name: t.group.path for name, t in targets.items()}, batch_size=size)


def materialize_part(part: Selection, todo: dict[str, np.ndarray], *, url: str, model_id: str, packed: bytes,
                     layers: list[str], pool, paths: dict[str, str], batch_size: int) -> dict:
    """On a worker: run the version over ``part``, write the ``values`` of the rows in ``todo``
    (indices into ``part``, per target), return their per-row columns for the commit."""
    from odinlab.store.store import open_store

    prepare_worker()
    store = open_store(url)
    module = worker_module(store, model_id, packed)
    materializer = store._materializer
    outputs: dict[str, list] = {}
    for batch in part.chunks(batch_size):
        for name, (values, extras) in materializer._forward(module, batch, layers, pool).items():
            outputs.setdefault(name, []).append((values, extras))
    group, written = store._backend.arrays(), {}
    for name, index in todo.items():
        kept = outputs[name.rsplit("/", 1)[0]]
        values = np.concatenate([v for v, _ in kept])[index]
        extras = {k: np.concatenate([e[k] for _, e in kept])[index] for k in kept[0][1]}
        written[name] = RowArray(group[paths[name]]).write_values(part.rows[index], values) | extras
    return written
