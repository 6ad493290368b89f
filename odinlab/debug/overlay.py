"""Heat-map overlays of attribution maps, and a plotly grid of images with their overlays.

:func:`overlay` blends a map onto its image: the colour of each pixel is weighted by the
map's magnitude there, so pixels without attribution show the image unchanged. Colour maps
are built in (``RdBu_r``, ``bwr``, ``Reds``, ``Blues``, ``hot``, ``viridis``, ``gray``); any
matplotlib colour map name works too when matplotlib is installed.
"""

from __future__ import annotations

import numpy as np

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
    """
    if isinstance(name, str) and name in COLORMAPS:
        anchors = np.asarray(COLORMAPS[name], np.float64)
    elif isinstance(name, str):
        try:
            import matplotlib

            return matplotlib.colormaps[name](np.clip(values, 0, 1))[..., :3] * 255.0
        except (ImportError, KeyError):
            raise ValueError(f"Unknown colour map {name!r}; built in: {', '.join(COLORMAPS)} "
                             "(any matplotlib name works when matplotlib is installed).") from None
    else:
        anchors = np.asarray(name, np.float64)
        if anchors.ndim != 2 or anchors.shape[1] != 3 or len(anchors) < 2:
            raise ValueError("A colour map is a name or a (K, 3) array of RGB anchors (0-255), K >= 2.")
    positions = np.linspace(0.0, 1.0, len(anchors))
    values = np.clip(values, 0.0, 1.0)
    return np.stack([np.interp(values, positions, anchors[:, c]) for c in range(3)], axis=-1)


def image_rgb(image: np.ndarray) -> np.ndarray:
    """An image (C, H, W) or (H, W), uint8 or float, as (H, W, 3) uint8 for display.

    >>> image_rgb(np.zeros((1, 8, 8), np.uint8)).shape
    (8, 8, 3)
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3 or image.shape[0] not in (1, 3, 4):
        raise ValueError(f"An image is (C, H, W) with C in 1, 3, 4, or (H, W); got shape {image.shape}.")
    if image.dtype != np.uint8:
        image = image.astype(np.float32)
        low, high = float(image.min()), float(image.max())
        if low < 0 or high > 1:  # not [0, 1] model input: stretch to the full range
            image = (image - low) / (high - low if high > low else 1.0)
        image = np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8)
    image = image[:3] if image.shape[0] >= 3 else np.repeat(image, 3, axis=0)
    return np.ascontiguousarray(image.transpose(1, 2, 0))


def overlay(image_chw: np.ndarray, attribution_chw: np.ndarray, alpha: float = 0.6, cmap=None,
            sign: str = "all", percentile: float = 99.0) -> np.ndarray:
    """The attribution (summed over channels) blended onto the image: (H, W, 3) uint8.

    ``sign="all"`` shows positive and negative evidence with a diverging map (``RdBu_r``: red
    for, blue against); ``"absolute"``, ``"positive"`` and ``"negative"`` use a sequential one
    (``Reds``). Values are scaled by the ``percentile`` of |attribution|, and each pixel's
    colour is blended in with weight ``alpha`` × its scaled magnitude, so that where the map is
    zero the image shows through unchanged.

    >>> out = overlay(np.zeros((1, 8, 8), np.uint8), np.random.default_rng(0).normal(size=(1, 8, 8)))
    >>> out.shape, out.dtype
    ((8, 8, 3), dtype('uint8'))
    """
    if sign not in SIGNS:
        raise ValueError(f"Unknown sign {sign!r}; use one of {', '.join(SIGNS)}.")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must lie in [0, 1]; got {alpha!r}.")
    base = image_rgb(image_chw).astype(np.float32)
    heat = np.asarray(attribution_chw, np.float32)
    heat = heat.sum(axis=0) if heat.ndim == 3 else heat
    if heat.shape != base.shape[:2]:
        raise ValueError(f"The attribution's H×W {heat.shape} differs from the image's {base.shape[:2]}.")
    heat = np.nan_to_num(heat)
    heat = {"all": heat, "absolute": np.abs(heat), "positive": np.maximum(heat, 0),
            "negative": np.maximum(-heat, 0)}[sign]
    scale = float(np.percentile(np.abs(heat), percentile)) if heat.size else 0.0
    scale = scale if scale > 0 else float(np.abs(heat).max()) or 1.0
    values = np.clip(heat / scale, -1.0, 1.0)
    if sign == "all":
        colors, weight = colormap(cmap or "RdBu_r", (values + 1) / 2), np.abs(values)
    else:
        colors, weight = colormap(cmap or "Reds", values), values
    weight = (alpha * weight)[..., None]
    return np.rint(base * (1 - weight) + colors * weight).clip(0, 255).astype(np.uint8)


def attribution_grid(store, attr_or_maps, images=None, *, target="label", baselines=None, columns: int = 2,
                     alpha: float = 0.6, cmap=None, sign: str = "all", percentile: float = 99.0,
                     model_id: str | None = None, panel_px: int = 150, max_images: int = 64):
    """A plotly figure: each image beside its attribution overlay, titled with label and prediction.

    ``attr_or_maps`` is an :class:`~odinlab.debug.attribution.Attributor` (maps computed or read
    for ``target`` and ``baselines``) or an array of maps (N, C, H, W) aligned with ``images``;
    with an array, pass ``model_id=`` to show stored predictions. ``columns`` image/overlay
    pairs per row.

    >>> from odinlab.debug.attribution import Attributor
    >>> fig = attribution_grid(store, Attributor(store, net, method="saliency"), ["digits-0000", "digits-0001"])
    >>> len(fig.data)
    4
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    selected = store.select(images)
    n = selected.height
    if n == 0 or n > max_images:
        raise ValueError(f"attribution_grid shows 1 to {max_images} images; {n} were selected. "
                         "Pass fewer (e.g. store.select(...).head(16)) or raise max_images.")
    ids = selected["image_id"]
    predicted, title = None, "attributions"
    if hasattr(attr_or_maps, "attribute"):
        attr = attr_or_maps
        maps = attr.attribute(ids, target=target, baselines=baselines, progress=False)
        predicted = attr.predictions(ids)["predicted"].to_list()
        title = f"{attr.method} of {attr.model_id}, target: {target}"
    else:
        maps = np.asarray(attr_or_maps)
        if maps.ndim != 4 or len(maps) != n:
            raise ValueError(f"maps must be (N, C, H, W) with N = {n} selected images; got shape {maps.shape}.")
        if model_id is not None:
            stored = store.predictions(model_id, ids)
            lookup = dict(zip(stored["image_id"].to_list(), stored["predicted"].to_list()))
            predicted = [lookup.get(i) for i in ids.to_list()]
    classes = store.classes

    def name(c) -> str:
        return "?" if c is None else (classes[c] if c < len(classes) else str(c))
    pixels = store.pixels(ids)
    rows = -(-n // columns)
    titles = []
    for i, row in enumerate(selected.iter_rows(named=True)):
        label = name(row["label"])
        caption = f"{row['image_id']}<br>label {label}" + (f", pred {name(predicted[i])}" if predicted else "")
        titles += [caption, "overlay"]
    fig = make_subplots(rows=rows, cols=2 * columns, subplot_titles=titles,
                        horizontal_spacing=0.02, vertical_spacing=min(0.3 / rows, 0.08))
    for i in range(n):
        r, c = i // columns + 1, 2 * (i % columns) + 1
        fig.add_trace(go.Image(z=image_rgb(pixels[i]), hoverinfo="skip"), row=r, col=c)
        fig.add_trace(go.Image(z=overlay(pixels[i], maps[i], alpha=alpha, cmap=cmap, sign=sign,
                                         percentile=percentile),
                               customdata=maps[i].sum(axis=0),
                               hovertemplate="x %{x}, y %{y}: %{customdata:.3g}<extra></extra>"),
                      row=r, col=c + 1)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_annotations(font_size=10)
    fig.update_layout(title=title, width=2 * columns * panel_px + 40, height=rows * (panel_px + 30) + 80,
                      margin={"l": 10, "r": 10, "t": 70, "b": 10})
    return fig


__all__ = ["COLORMAPS", "attribution_grid", "colormap", "image_rgb", "overlay"]
