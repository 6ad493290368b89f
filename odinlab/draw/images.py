"""Images for display: RGB conversion, colour maps, and heat-map overlays of attribution maps.

:func:`overlay` blends a map onto its image: the colour of each pixel is weighted by the
map's magnitude there, so pixels without attribution show the image unchanged. Colour maps
are built in (``RdBu_r``, ``bwr``, ``Reds``, ``Blues``, ``hot``, ``viridis``, ``gray``); any
matplotlib colour map name works too when matplotlib is installed.
"""

from __future__ import annotations

import numpy as np

from odinlab.errors import ImageFormatError, OptionError
from odinlab.store.pixels import to_rgb8

# Anchor colours, evenly spaced from 0 to 1 (ColorBrewer / matplotlib values).
COLORMAPS = {
    "RdBu_r": [(5, 48, 97), (33, 102, 172), (67, 147, 195), (146, 197, 222), (209, 229, 240), (247, 247, 247),
               (253, 219, 199), (244, 165, 130), (214, 96, 77), (178, 24, 43), (103, 0, 31)],
    "bwr": [(0, 0, 255), (255, 255, 255), (255, 0, 0)],
    "Reds": [(255, 245, 240), (254, 224, 210), (252, 187, 161), (252, 146, 114), (251, 106, 74), (239, 59, 44),
             (203, 24, 29), (165, 15, 21), (103, 0, 13)],
    "Blues": [(247, 251, 255), (222, 235, 247), (198, 219, 239), (158, 202, 225), (107, 174, 214),
              (66, 146, 198), (33, 113, 181), (8, 81, 156), (8, 48, 107)],
    "hot": [(10, 0, 0), (230, 0, 0), (255, 210, 0), (255, 255, 255)],
    "viridis": [(68, 1, 84), (72, 40, 120), (62, 74, 137), (49, 104, 142), (38, 130, 142), (31, 158, 137),
                (53, 183, 121), (109, 205, 89), (180, 222, 44), (253, 231, 37)],
    "gray": [(0, 0, 0), (255, 255, 255)],
}
SIGNS = ("all", "absolute", "positive", "negative")


def colormap(name, values: np.ndarray) -> np.ndarray:
    """RGB floats in [0, 255] for ``values`` in [0, 1], from a colour map name or (K, 3) anchors.

    >>> colormap("RdBu_r", np.array([0.5])).round().tolist()
    [[247.0, 247.0, 247.0]]
    >>> colormap([(0, 0, 0), (255, 0, 0)], np.array([0.0, 0.5, 1.0]))[:, 0].tolist()
    [0.0, 127.5, 255.0]
    """
    if isinstance(name, str) and name in COLORMAPS:
        anchors = np.asarray(COLORMAPS[name], np.float64)
    elif isinstance(name, str):
        try:
            import matplotlib

            return matplotlib.colormaps[name](np.clip(values, 0, 1))[..., :3] * 255.0
        except (ImportError, KeyError):
            raise OptionError(f"Unknown colour map {name!r}; built in: {', '.join(COLORMAPS)} "
                              "(any matplotlib name works when matplotlib is installed).") from None
    else:
        anchors = np.asarray(name, np.float64)
        if anchors.ndim != 2 or anchors.shape[1] != 3 or len(anchors) < 2:
            raise OptionError("A colour map is a name or a (K, 3) array of RGB anchors (0-255), K >= 2.")
    positions = np.linspace(0.0, 1.0, len(anchors))
    values = np.clip(values, 0.0, 1.0)
    return np.stack([np.interp(values, positions, anchors[:, c]) for c in range(3)], axis=-1)


def image_rgb(image: np.ndarray) -> np.ndarray:
    """One image (C, H, W) or (H, W), uint8 or float, as (H, W, 3) uint8 for display.

    The conversion is :func:`odinlab.store.pixels.to_rgb8`'s (one channel becomes grey, floats
    in [0, 1] are scaled, other float ranges stretched).

    >>> image_rgb(np.zeros((1, 8, 8), np.uint8)).shape
    (8, 8, 3)
    >>> image_rgb(np.full((8, 8), 0.5, np.float32))[0, 0].tolist()
    [128, 128, 128]
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3:
        raise ImageFormatError(f"An image is (C, H, W) with C in 1, 3, 4, or (H, W); got shape {image.shape}.")
    return to_rgb8(image[None])[0]


def overlay(image: np.ndarray, attribution: np.ndarray, alpha: float = 0.6, cmap=None,
            sign: str = "all", percentile: float = 99.0) -> np.ndarray:
    """The attribution map (summed over channels) blended onto the image: (H, W, 3) uint8.

    ``image`` is (C, H, W) or (H, W); ``attribution`` is (C, H, W) or (H, W), e.g. one image of
    an attribution DataArray (``maps.sel(image_id=...)``). ``sign="all"`` shows positive and
    negative evidence with a diverging map (``RdBu_r``: red for, blue against);
    ``"absolute"``, ``"positive"`` and ``"negative"`` use a sequential one (``Reds``). Values
    are scaled by the ``percentile`` of |attribution|, and each pixel's colour is blended in
    with weight ``alpha`` × its scaled magnitude, so that where the map is zero the image
    shows through unchanged.

    >>> out = overlay(np.zeros((1, 8, 8), np.uint8), np.random.default_rng(0).normal(size=(1, 8, 8)))
    >>> out.shape, out.dtype
    ((8, 8, 3), dtype('uint8'))
    """
    if sign not in SIGNS:
        raise OptionError(f"Unknown sign {sign!r}; use one of {', '.join(SIGNS)}.")
    if not 0 <= alpha <= 1:
        raise OptionError(f"alpha must lie in [0, 1]; got {alpha!r}.")
    base = image_rgb(image).astype(np.float32)
    heat = np.asarray(attribution, np.float32)
    heat = heat.sum(axis=0) if heat.ndim == 3 else heat
    if heat.shape != base.shape[:2]:
        raise ImageFormatError(f"The attribution's H×W {heat.shape} differs from the image's {base.shape[:2]}.")
    colors, weight = _heat_colors(np.nan_to_num(heat), cmap, sign, percentile)
    weight = (alpha * weight)[..., None]
    return np.rint(base * (1 - weight) + colors * weight).clip(0, 255).astype(np.uint8)


def heat_rgba(attribution: np.ndarray, cmap=None, sign: str = "all", percentile: float = 99.0) -> np.ndarray:
    """An attribution map (C, H, W) or (H, W) as an (H, W, 4) uint8 layer to lay over its image.

    RGB is the colour and alpha the blending weight that :func:`overlay`
    gives each pixel at ``alpha=1``, so drawing this layer over the image with opacity ``a``
    gives ``overlay(image, attribution, alpha=a)`` (to 8-bit rounding).

    >>> layer = heat_rgba(np.array([[0.0, 1.0], [-1.0, 0.0]]))
    >>> layer.shape, layer[0, 1].tolist(), layer[1, 0].tolist(), int(layer[0, 0, 3])  # red for, blue against
    ((2, 2, 4), [103, 0, 31, 255], [5, 48, 97, 255], 0)
    """
    if sign not in SIGNS:
        raise OptionError(f"Unknown sign {sign!r}; use one of {', '.join(SIGNS)}.")
    heat = np.asarray(attribution, np.float32)
    heat = heat.sum(axis=0) if heat.ndim == 3 else heat  # as overlay() does: one value per pixel
    colors, weight = _heat_colors(np.nan_to_num(heat), cmap, sign, percentile)
    rgba = np.concatenate([colors, 255.0 * weight[..., None]], axis=-1)
    return np.rint(rgba).clip(0, 255).astype(np.uint8)


def _heat_colors(heat: np.ndarray, cmap, sign: str, percentile: float) -> tuple[np.ndarray, np.ndarray]:
    """Colours (H, W, 3) and blending weights in [0, 1] (H, W) of a map, scaled by a percentile."""
    heat = {"all": heat, "absolute": np.abs(heat), "positive": np.maximum(heat, 0),
            "negative": np.maximum(-heat, 0)}[sign]
    scale = float(np.percentile(np.abs(heat), percentile)) if heat.size else 0.0
    scale = scale if scale > 0 else float(np.abs(heat).max()) or 1.0
    values = np.clip(heat / scale, -1.0, 1.0)
    if sign == "all":  # diverging: 0 sits in the middle of the map
        return colormap(cmap or "RdBu_r", (values + 1) / 2), np.abs(values)
    return colormap(cmap or "Reds", values), values


__all__ = ["COLORMAPS", "SIGNS", "colormap", "heat_rgba", "image_rgb", "overlay"]
