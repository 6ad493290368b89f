"""Operators over sets of stored gradients, summed over layers (and checkpoints): pairwise dot
products and cosines, top-k, and dense-query scores. The per-layer math is in
:mod:`~odinlab.debug.gradients.kernels`; this module sums terms and walks blocks of rows so that
memory stays bounded whatever the number of images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import polars as pl
import torch

from odinlab.debug.gradients.kernels import Grads
from odinlab.debug.gradients.layers import LayerSpec
from odinlab.errors import OptionError, QueryShapeError

READ_BYTES = 256 << 20  # gradients of one block of rows read from the store at once

# One term of a sum: (weight, gradients of the first set, reader of a slice of the second set).
Term = tuple[float, Grads, Callable[..., Grads]]


def block_rows(spec: LayerSpec, form: str, itemsize: int) -> int:
    """Rows per read so that one block of stored gradients stays near ``READ_BYTES``.

    >>> block_rows(LayerSpec("fc", "Linear", (512,), (10,), (10, 512), True), "compact", 4)
    128561
    """
    values = spec.compact_values if form == "compact" else spec.full_values
    return max(1, READ_BYTES // (values * itemsize))


def pairwise(terms: Sequence[Term], n_a: int, rows_b, block: int):
    """(Σ w·⟨a, b⟩ matrix, Σ w·‖a‖², Σ w·‖b‖²) over ``terms``, reading ``rows_b`` in blocks.

    ``rows_b`` is anything with ``len`` and slices (a Selection, or row positions); each term's
    reader gets one slice of it at a time.

    >>> spec = LayerSpec("fc", "Linear", (2,), (1,), (1, 2), False)
    >>> a = Grads(spec, prefix=torch.tensor([[1.0, 0.0]]), suffix=torch.tensor([[2.0]]))
    >>> dots, sq_a, sq_b = pairwise([(1.0, a, lambda rows: a)], 1, np.array([0]), 10)
    >>> dots.tolist(), sq_a.tolist()
    ([[4.0]], [4.0])
    """
    dots = np.zeros((n_a, len(rows_b)))
    sq_a, sq_b = np.zeros(n_a), np.zeros(len(rows_b))
    for weight, grads_a, read_b in terms:
        sq_a += weight * grads_a.sq_norms().double().cpu().numpy()
        for start in range(0, len(rows_b), block):
            grads_b = read_b(rows_b[start : start + block])
            dots[:, start : start + len(grads_b)] += weight * grads_a.dot(grads_b).double().cpu().numpy()
            sq_b[start : start + len(grads_b)] += weight * grads_b.sq_norms().double().cpu().numpy()
    return dots, sq_a, sq_b


def cosine(dots: np.ndarray, sq_a: np.ndarray, sq_b: np.ndarray) -> np.ndarray:
    """Dot products divided by both norms; 0 where a gradient is zero.

    >>> cosine(np.array([[2.0, 0.0]]), np.array([4.0]), np.array([1.0, 0.0])).tolist()
    [[1.0, 0.0]]
    """
    scale = np.sqrt(np.maximum(sq_a, 0))[:, None] * np.sqrt(np.maximum(sq_b, 0))[None, :]
    return np.divide(dots, scale, out=np.zeros_like(dots), where=scale > 0)


def check_k(k) -> int:
    """``k`` if it is a positive int, else :class:`OptionError`."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise OptionError(f"k must be a positive int, not {k!r}.")
    return int(k)


def top_k(scores: np.ndarray, query_ids: Sequence[str], ids: Sequence[str], k: int) -> pl.DataFrame:
    """The ``k`` highest scores of every row: image_id_a (the query), image_id_b (its neighbour),
    rank, score; ties by position.

    >>> top_k(np.array([[0.1, 0.9, 0.5]]), ["q"], ["a", "b", "c"], 2).rows()
    [('q', 'b', 1, 0.9), ('q', 'c', 2, 0.5)]
    """
    k = min(check_k(k), scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return pl.DataFrame({
        "image_id_a": np.repeat(np.asarray(query_ids, dtype=object), k).astype(str),
        "image_id_b": np.asarray(ids, dtype=object)[order.ravel()].astype(str),
        "rank": np.tile(np.arange(1, k + 1), len(scores)),
        "score": np.take_along_axis(scores, order, axis=1).ravel(),
    }, schema={"image_id_a": pl.String, "image_id_b": pl.String, "rank": pl.Int64, "score": pl.Float64})


def flat_query(spec: LayerSpec, query, dtype: torch.dtype) -> torch.Tensor:
    """A dense query for one layer, flattened like the full form (weight, then bias).

    ``query`` is a tensor of the weight's shape, or ``{"weight": ..., "bias": ...}`` (a missing
    bias counts as zeros), e.g. what :meth:`GradientStore.restore` returns.

    >>> spec = LayerSpec("fc", "Linear", (2,), (1,), (1, 2), True)
    >>> flat_query(spec, torch.ones(1, 2), torch.float32).tolist()
    [1.0, 1.0, 0.0]
    """
    parts = dict(query) if isinstance(query, dict) else {"weight": query}
    unknown = set(parts) - {"weight", "bias"}
    if unknown or "weight" not in parts:
        raise QueryShapeError(f"A query for {spec.name} is a weight-shaped tensor or a dict with 'weight' "
                              f"(and 'bias'); got keys {sorted(parts)}.")
    weight = torch.as_tensor(parts["weight"], dtype=dtype)
    if tuple(weight.shape) != spec.weight_shape:
        raise QueryShapeError(f"The query for {spec.name} has shape {tuple(weight.shape)}; the layer's weight "
                              f"has shape {spec.weight_shape}.")
    pieces = [weight.reshape(-1)]
    if spec.bias:
        bias = torch.as_tensor(parts.get("bias", torch.zeros(spec.out_features)), dtype=dtype).reshape(-1)
        if len(bias) != spec.out_features:
            raise QueryShapeError(f"The query bias for {spec.name} has {len(bias)} values; the layer has "
                                  f"{spec.out_features} outputs.")
        pieces.append(bias)
    elif "bias" in parts:
        raise QueryShapeError(f"{spec.name} has no bias, but the query gives one; drop it.")
    return torch.cat(pieces)
