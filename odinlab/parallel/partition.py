"""Split sorted rows into parts made of whole chunks, so that no two workers write one chunk."""

from __future__ import annotations

import math

import numpy as np


def chunk_unit(chunk_rows) -> int:
    """Rows of the smallest block made of whole chunks of every array: the least common multiple.

    With power-of-two chunks (new arrays) it is the largest chunk.

    >>> chunk_unit([64, 1024, 256]), chunk_unit([300, 200])
    (1024, 600)
    """
    return math.lcm(*(int(c) for c in chunk_rows)) if len(chunk_rows) else 1


def chunk_parts(rows: np.ndarray, unit: int, n_parts: int) -> list[np.ndarray]:
    """Index arrays into sorted ``rows``, at least about ``n_parts`` of them, each a run of whole ``unit`` blocks.

    Rows of one block are never split between two parts. Up to ``4 * n_parts`` blocks, each block
    is a part of its own (small parts even out the workers' loads, as Dask hands them out when
    workers free up); beyond, each of the ``n_parts - 1`` even cut points moves to the nearest
    block boundary.

    >>> [p.tolist() for p in chunk_parts(np.array([0, 1, 2, 5, 6, 9]), unit=4, n_parts=2)]
    [[0, 1, 2], [3, 4], [5]]
    >>> [len(p) for p in chunk_parts(np.arange(10_000), unit=1024, n_parts=8)]
    [1024, 1024, 1024, 1024, 1024, 1024, 1024, 1024, 1024, 784]
    >>> [len(p) for p in chunk_parts(np.arange(10_000), unit=256, n_parts=4)]
    [2560, 2560, 2304, 2576]
    """
    if not len(rows):
        return []
    blocks = np.asarray(rows) // unit
    starts = np.flatnonzero(np.r_[True, blocks[1:] != blocks[:-1]])  # first index of each block
    if len(starts) <= 4 * max(1, n_parts):
        cuts = [*starts.tolist(), len(rows)]
    else:
        ideal = np.arange(1, max(1, n_parts)) * len(rows) / max(1, n_parts)
        nearest = starts[np.abs(starts[None, :] - ideal[:, None]).argmin(axis=1)] if len(ideal) else []
        cuts = sorted({0, *(int(c) for c in nearest), len(rows)})
    return [np.arange(a, b) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]
