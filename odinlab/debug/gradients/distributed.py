"""Per-sample gradients on a Dask cluster: each worker captures whole chunks of images.

The images lacking some layer are split at chunk boundaries common to every array of every
layer (prefix, suffix or full), so each worker writes chunks no other worker touches. The
worker runs the same forward and backward passes as a local capture over the version's stored
weights and writes the values; the calling process marks each finished part done.
"""

from __future__ import annotations

import numpy as np
import torch

from odinlab.debug.gradients.capture import LayerArrays, forward_backward, model_input
from odinlab.debug.gradients.kernels import Grads
from odinlab.parallel.partition import chunk_parts, chunk_unit
from odinlab.parallel.runner import n_parts, run_parts
from odinlab.parallel.skeleton import pack, worker_module
from odinlab.parallel.worker import prepare_worker
from odinlab.store.selection import Selection


def capture_on(client, store, module, model_id: str, targets: dict[str, LayerArrays], selection: Selection,
               batch_size: int, progress: bool) -> dict[str, int]:
    """Capture, on ``client``'s workers, every layer's gradients for the images it lacks."""
    fresh = {layer: ~t.done_rows(selection.rows) for layer, t in targets.items()}
    needed = np.logical_or.reduce(list(fresh.values()))
    selection, fresh = selection[needed], {layer: f[needed] for layer, f in fresh.items()}
    computed = {layer: 0 for layer in targets}
    if not len(selection):
        return computed
    unit = chunk_unit([rows for t in targets.values() for rows in t.chunk_rows()])
    row_bytes = sum(4 * int(np.prod(p.values.shape[1:])) for t in targets.values() for p in t.parts.values())
    parts = chunk_parts(selection.rows, unit, n_parts(client, len(selection), row_bytes))
    work = [(selection[p], {layer: np.flatnonzero(f[p]) for layer, f in fresh.items() if f[p].any()})
            for p in parts]

    def commit(i: int, _) -> None:
        part, todo = work[i]
        for layer, index in todo.items():
            targets[layer].commit(part.rows[index])
            computed[layer] += len(index)

    layers = {layer: (t.spec, t.form, t.parts[next(iter(t.parts))].dtype) for layer, t in targets.items()}
    run_parts(client, capture_part, work, sizes=[len(p) for p in parts], commit=commit,
              desc=f"gradients {model_id}", progress=progress, url=store.url, model_id=model_id,
              packed=pack(module), layers=layers, batch_size=batch_size)
    return computed


def capture_part(part: Selection, todo: dict[str, np.ndarray], *, url: str, model_id: str, packed: bytes,
                 layers: dict, batch_size: int) -> None:
    """On a worker: the gradients of ``part`` for the layers in ``todo``, written without done marks."""
    from odinlab.store.store import open_store

    prepare_worker()
    store = open_store(url)
    module = worker_module(store, model_id, packed)
    record = store.model(model_id)
    caught: dict[str, list] = {layer: [] for layer in todo}
    for batch in part.chunks(batch_size):
        x = model_input(store, module, batch)
        y = torch.from_numpy(batch.labels).to(x.device)
        for layer, pair in forward_backward(module, x, y, list(todo)).items():
            caught[layer].append(pair)
    for layer, index in todo.items():
        spec, form, dtype = layers[layer]
        grads = Grads(spec, prefix=torch.cat([p for p, _ in caught[layer]]), suffix=torch.cat([s for _, s in caught[layer]]))
        if len(index) < len(part):
            grads = grads.take(torch.from_numpy(index))
        LayerArrays.open(store, record, spec, form, dtype).write_values(part.rows[index], grads)
