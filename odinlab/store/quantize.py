"""Lossy storage of activations: float16, or 8-bit per image and channel (MISTIQUE-style).

uint8 keeps, for each image and channel, the minimum and the step ``(max - min) / 255`` and
stores ``round((x - min) / step)``; decoding is ``q * step + min``. With ReLU maps (many
exact zeros, a per-channel range) this keeps nearest-neighbour structure while storing a
quarter of float32's bytes before compression.
"""

from __future__ import annotations

import numpy as np
import torch

DTYPES = ("float32", "float16", "uint8")


def encode(x: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Encode a batch ``x`` of shape (B, C, ...) or (B, D): (values, step, minimum).

    ``step`` and ``minimum`` are (B, C) float32 for uint8 (C = 1 for flat vectors), else None.

    >>> values, step, low = encode(np.array([[[0.0, 1.0, 2.0]]]), "uint8")
    >>> values.tolist(), decode(values, step, low).tolist()
    ([[[0, 127, 255]]], [[[0.0, 0.9960784912109375, 2.0]]])
    """
    if dtype == "float32":
        return x.astype(np.float32, copy=False), None, None
    if dtype == "float16":  # torch's cast is ~10x faster than numpy's float32 -> float16
        return torch.from_numpy(np.ascontiguousarray(x)).half().numpy(), None, None
    channels = _per_channel(x)
    low, high = channels.min(axis=2), channels.max(axis=2)
    step = ((high - low) / 255.0).astype(np.float32)
    safe = np.where(step > 0, step, 1.0)[:, :, None]
    q = np.rint((channels - low[:, :, None]) / safe).clip(0, 255).astype(np.uint8)
    return q.reshape(x.shape), step, low.astype(np.float32)


def decode(values: np.ndarray, step: np.ndarray | None, low: np.ndarray | None) -> np.ndarray:
    """Float32 activations back from what :func:`encode` stored.

    >>> decode(np.array([[1.5]], np.float16), None, None).dtype
    dtype('float32')
    """
    if step is None:
        return torch.from_numpy(np.ascontiguousarray(values)).float().numpy()
    channels = _per_channel(values).astype(np.float32)
    return (channels * step[:, :, None] + low[:, :, None]).reshape(values.shape)


def relative_error(x: np.ndarray, restored: np.ndarray) -> np.ndarray:
    """Per-image ‖x − restored‖ / ‖x‖ (0 for an all-zero image).

    >>> relative_error(np.ones((1, 4)), np.ones((1, 4))).tolist()
    [0.0]
    """
    flat = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).reshape(len(x), -1)
    back = torch.from_numpy(np.ascontiguousarray(restored, dtype=np.float32)).reshape(len(x), -1)
    norm = torch.linalg.vector_norm(flat, dim=1)
    diff = torch.linalg.vector_norm(flat - back, dim=1)
    return torch.where(norm > 0, diff / norm.clamp_min(1e-30), 0.0).numpy().astype(np.float32)


def _per_channel(x: np.ndarray) -> np.ndarray:
    # (B, C, H, W) -> (B, C, H*W); a flat (B, D) feature vector shares one range per image.
    return x.reshape(x.shape[0], x.shape[1], -1) if x.ndim > 2 else x.reshape(x.shape[0], 1, -1)
