"""Run one task per part on a Dask cluster, committing each result in this process as it arrives.

Workers compute and write their own chunks; the calling process, which holds the store's
writer lock for the whole run, commits each finished part (its ``done`` marks and per-row
columns) in the order parts finish, and shows progress as a local run does. A worker that
dies mid-task is replaced by Dask, which runs its task again elsewhere; if the run stops
(an error, an interrupt, the cluster gone), the parts not committed are computed by the next
call, as after a local crash.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence

from tqdm.auto import tqdm


PART_BYTES = 256 << 20  # what a worker holds of one part's outputs before writing them


def n_parts(client, total: int, row_bytes: int = 0, per_worker: int = 4) -> int:
    """Parts to split ``total`` images into: a few per worker thread (fast workers take more), and
    enough that one part's outputs (``row_bytes`` per image) fit in :data:`PART_BYTES`.

    >>> n_parts(None, 10_000), n_parts(None, 10_000_000, row_bytes=4096)
    (4, 153)
    """
    threads = sum(client.nthreads().values()) if client is not None else 1
    by_memory = -(-total * row_bytes // PART_BYTES)
    return max(1, min(total, max(per_worker * max(1, threads), by_memory)))


def run_parts(client, task: Callable, parts: Sequence[tuple], *, sizes: Sequence[int], commit: Callable,
              desc: str, progress: bool = True, **shared) -> None:
    """``commit(i, task(*parts[i], **shared))`` for every part, the tasks running on ``client``'s workers.

    ``shared`` keyword arguments (the model skeleton, paths...) are sent to the cluster once.
    ``sizes`` are the images of each part, for the progress bar. The first failure cancels the
    parts not started and is raised here (parts committed before it stay committed).
    ``store.materialize(..., scheduler=client)`` runs its parts with it (see
    :func:`odinlab.store.distributed.materialize_on`).
    """
    from distributed import as_completed

    token = uuid.uuid4().hex[:8]
    # In a list, so that a dict or list is sent as one object and not scattered item by item.
    scattered = {name: client.scatter([value], broadcast=True, hash=False)[0] for name, value in shared.items()}
    futures = [client.submit(task, *args, **scattered, key=f"odinlab-{desc.split()[0]}-{token}-{i}", pure=False)
               for i, args in enumerate(parts)]
    index = {future.key: i for i, future in enumerate(futures)}
    try:
        with tqdm(total=sum(sizes), desc=f"{desc} on {len(client.nthreads())} workers", unit="img",
                  disable=not progress) as bar:
            for future in as_completed(futures):
                i = index[future.key]
                commit(i, future.result())
                bar.update(sizes[i])
    finally:
        client.cancel(futures)  # nothing runs on after an error or an interrupt
