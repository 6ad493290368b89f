"""Checking and normalizing image arrays to the store's layout: (N, C, H, W), uint8 or float32."""

from __future__ import annotations

import hashlib

import numpy as np

from odinlab.errors import ImageFormatError

CHANNEL_COUNTS = (1, 3, 4)
LAYOUTS = ("auto", "NCHW", "NHWC", "NHW")


def to_nchw(images: object, layout: str = "auto", offset: int = 0) -> np.ndarray:
    """Return images as a channels-first (N, C, H, W) array of uint8 or float32.

    Accepts (N, H, W), (N, H, W, C) and (N, C, H, W) with C in 1, 3, 4. ``layout="auto"``
    tells the two 4-D layouts apart by which axis has a channel count; pass "NHWC" or
    "NCHW" when both could be (e.g. 3×3 images). ``offset`` is the position of the first
    image in the whole call, so that errors name the image's index there, not in the batch.

    >>> to_nchw(np.zeros((2, 8, 8, 3), np.uint8)).shape
    (2, 3, 8, 8)
    """
    if layout not in LAYOUTS:
        raise ImageFormatError(f"Unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}.")
    array = _as_numpy(images)
    if array.ndim == 3 and layout in ("auto", "NHW"):
        array = array[:, None]
    elif array.ndim == 4 and layout != "NHW":
        array = _channels_first(array, layout)
    else:
        raise ImageFormatError(
            f"Images must be (N, H, W), (N, H, W, C) or (N, C, H, W); got shape {array.shape}"
            + (f" with layout={layout!r}." if layout != "auto" else ".")
            + (" For a single image, add a leading axis: images[None]." if array.ndim == 2 else "")
        )
    return np.ascontiguousarray(_check_values(array, offset))


def _as_numpy(images: object) -> np.ndarray:
    if hasattr(images, "detach"):  # a torch tensor, without importing torch here
        images = images.detach().cpu().numpy()
    array = np.asarray(images)
    if array.dtype == object:
        raise ImageFormatError("Images must be a numeric array; got an object array (ragged images?).")
    return array


def _channels_first(array: np.ndarray, layout: str) -> np.ndarray:
    if layout == "NCHW":
        return array
    if layout == "NHWC":
        return array.transpose(0, 3, 1, 2)
    first, last = array.shape[1] in CHANNEL_COUNTS, array.shape[3] in CHANNEL_COUNTS
    if first and last:  # e.g. (N, 3, 5, 3): 3-channel 5x3 images, or 3x5 images with 3 channels
        raise ImageFormatError(
            f"Cannot tell channels from shape {array.shape}: axis 1 and axis 3 could both be "
            "channels; pass layout='NCHW' or layout='NHWC'."
        )
    if first:
        return array
    if last:
        return array.transpose(0, 3, 1, 2)
    raise ImageFormatError(
        f"No channel axis in shape {array.shape}: axis 1 or axis 3 must have 1, 3 or 4 channels."
    )


def _check_values(array: np.ndarray, offset: int = 0) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            bad = offset + int((~np.isfinite(array)).reshape(len(array), -1).any(axis=1).argmax())
            raise ImageFormatError(
                f"Images contain NaN or infinite pixels (first at image {bad}); "
                "clean them (np.nan_to_num) before ingesting."
            )
        return array.astype(np.float32, copy=False)
    if array.dtype.kind in "iu":
        if array.size == 0 or (array.min() >= 0 and array.max() <= 255):
            return array.astype(np.uint8)
        raise ImageFormatError(
            f"Integer pixels must lie in 0..255 to be stored as uint8; these ({array.dtype}) range "
            f"from {array.min()} to {array.max()}. Rescale them, or convert to float."
        )
    raise ImageFormatError(
        f"Unsupported pixel dtype {array.dtype}: use uint8 (0-255) or a float array."
    )


def content_ids(images: np.ndarray) -> list[str]:
    """Stable ids from pixel content: the first 16 hex digits of SHA-256 over shape, dtype and bytes.

    >>> ids = content_ids(np.zeros((2, 1, 2, 2), np.uint8))
    >>> len(ids[0]), ids[0] == ids[1]
    (16, True)
    """
    header = f"{images.shape[1:]}|{images.dtype.str}|".encode()
    return [hashlib.sha256(header + image.tobytes()).hexdigest()[:16] for image in images]


def to_model_input(pixels: np.ndarray) -> np.ndarray:
    """Pixels as float32 model input: uint8 scaled to [0, 1], floats passed through.

    >>> to_model_input(np.array([[255]], np.uint8))
    array([[1.]], dtype=float32)
    """
    if pixels.dtype == np.uint8:
        return pixels.astype(np.float32) / 255.0
    return pixels.astype(np.float32, copy=False)


def to_rgb8(pixels: np.ndarray) -> np.ndarray:
    """Images (N, C, H, W), uint8 or float, as (N, H, W, 3) uint8 for display.

    One channel is repeated to grey, an alpha channel dropped; float images in [0, 1] are
    scaled, any other float range is stretched per image to the full range.

    >>> to_rgb8(np.zeros((2, 1, 8, 8), np.uint8)).shape
    (2, 8, 8, 3)
    """
    pixels = np.asarray(pixels)
    if pixels.ndim != 4 or pixels.shape[1] not in CHANNEL_COUNTS:
        raise ImageFormatError(f"Images are (N, C, H, W) with C in 1, 3, 4; got shape {pixels.shape}.")
    if pixels.dtype != np.uint8:
        pixels = pixels.astype(np.float32)
        low = pixels.min(axis=(1, 2, 3), keepdims=True)
        high = pixels.max(axis=(1, 2, 3), keepdims=True)
        stretch = (low < 0) | (high > 1)  # not [0, 1] model input: stretch to the full range
        span = np.where(high > low, high - low, 1.0)
        pixels = np.where(stretch, (pixels - low) / span, pixels)
        pixels = np.rint(np.clip(pixels, 0, 1) * 255).astype(np.uint8)
    pixels = pixels[:, :3] if pixels.shape[1] >= 3 else np.repeat(pixels, 3, axis=1)
    return np.ascontiguousarray(pixels.transpose(0, 2, 3, 1))
