"""Activation maximization figures, drawn from :meth:`odinlab.debug.maximize.Maximizer.comparison` results."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from odinlab.draw.images import image_rgb


def display_image(image: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """One image (C, H, W) in the model's input range as (H, W, 3) uint8, each channel's valid
    range ``low``..``high`` (the store's colour statistics) stretched to black..white.

    >>> display_image(np.full((1, 2, 2), 0.5), np.zeros(1), np.ones(1))[0, 0].tolist()
    [128, 128, 128]
    """
    low, high = np.asarray(low, np.float64)[:, None, None], np.asarray(high, np.float64)[:, None, None]
    return image_rgb(np.clip((np.asarray(image, np.float64) - low) / (high - low), 0, 1).astype(np.float32))


def comparison_figure(comparison) -> go.Figure:
    """The optimized image(s) next to the real images that drive the same unit, in one row.

    Each panel's title gives the unit's activation; a dead unit (the same value on every
    image) shows no real images and says so in the title.

    >>> from odinlab.debug.maximize import Maximizer
    >>> fig = comparison_figure(Maximizer(store, net, steps=8).comparison("channel", "features.relu2", 5, "val", k=3))
    >>> fig.data[0].type
    'image'
    """
    c = comparison
    kind = "minimized" if c.negative else "optimized"
    n = len(c.optimized)
    panels = [(img, f"{kind}{f' {i + 1}' if n > 1 else ''}<br>{value:.3g}")
              for i, (img, value) in enumerate(zip(c.optimized, c.values, strict=True))]
    live = c.top.filter(~c.top["dead"])
    panels += [(img, f"#{row['rank']} {row['image_id']}<br>{row['activation']:.3g}")
               for img, row in zip(c.real, live.iter_rows(named=True), strict=True)]
    figure = make_subplots(rows=1, cols=len(panels), subplot_titles=[title for _, title in panels],
                           horizontal_spacing=0.01)
    for column, (img, title) in enumerate(panels, start=1):
        figure.add_trace(go.Image(z=display_image(img, c.low, c.high), name=title.replace("<br>", " "),
                                  hovertemplate="x %{x}, y %{y}<extra></extra>"), row=1, col=column)
    figure.update_xaxes(visible=False)
    figure.update_yaxes(visible=False)
    figure.update_annotations(font_size=10)
    figure.update_layout(title=_title(c, live.height), height=260, width=max(360, 120 * len(panels)),
                         margin={"l": 10, "r": 10, "t": 80, "b": 10})
    return figure


def _title(c, shown: int) -> str:
    what = f"{c.objective} of {c.model_id}: {'minimized' if c.negative else 'maximized'}"
    if c.dead:
        value = c.top["activation"][0]
        return f"{what}; dead unit: {value:.3g} on every image, so no real images rank above others"
    return f"{what} vs {'lowest' if c.negative else 'top'} {shown} real images"


__all__ = ["comparison_figure", "display_image"]
