"""A plotly grid of images beside their attribution overlays, drawn from labelled maps."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import polars as pl
import xarray as xr
from plotly.subplots import make_subplots

from odinlab.draw.images import image_rgb, overlay
from odinlab.errors import ImageFormatError, OptionError


def attribution_grid(maps: xr.DataArray, pixels: np.ndarray | None = None, *, store=None, captions=None,
                     columns: int = 2, alpha: float = 0.6, cmap=None, sign: str = "all",
                     percentile: float = 99.0, title: str | None = None, panel_px: int = 150,
                     max_images: int = 64) -> go.Figure:
    """Each image beside its attribution overlay, ``columns`` image/overlay pairs per row.

    ``maps`` is an attribution DataArray with dims (image_id, channel, y, x) and attrs
    model_id, method, target, as ``Attributor.attribute`` returns it (or one built with
    :func:`odinlab.store.labelled.labelled`). The images come from ``pixels`` (N, C, H, W),
    aligned with ``maps``, or else are read from ``store`` by image id. ``captions`` names each
    panel: a list of strings, or a frame with ``image_id`` and any of ``label_name`` and
    ``predicted_name`` (e.g. ``store.predictions`` joined with names, or
    ``confident_mistakes``); by default the image id, and its label when ``store`` is given.

    >>> from odinlab.store.labelled import labelled
    >>> ids = ["digits-0000", "digits-0001"]
    >>> maps = labelled(np.random.default_rng(0).normal(size=(2, 1, 8, 8)), ids,
    ...                 model_id="cnn@1", method="saliency", target="prediction")
    >>> figure = attribution_grid(maps, store=store)
    >>> len(figure.data), figure.layout.title.text
    (4, 'saliency of cnn@1, target: prediction')
    """
    ids, values = _ids_and_values(maps, max_images)
    if pixels is None:
        if store is None:
            raise OptionError("Give the images' pixels (N, C, H, W) or store=store to read them by image id.")
        pixels = store.pixels(ids)
    pixels = np.asarray(pixels)
    if len(pixels) != len(ids):
        raise ImageFormatError(f"pixels hold {len(pixels)} images but the maps {len(ids)}; align them.")
    texts = _captions(captions, ids, store)
    rows = -(-len(ids) // columns)
    figure = make_subplots(rows=rows, cols=2 * columns, subplot_titles=[t for text in texts for t in (text, "overlay")],
                           horizontal_spacing=0.02, vertical_spacing=min(0.3 / rows, 0.08))
    for i, (image, heat) in enumerate(zip(pixels, values)):
        row, col = i // columns + 1, 2 * (i % columns) + 1
        figure.add_trace(go.Image(z=image_rgb(image), hoverinfo="skip"), row=row, col=col)
        figure.add_trace(go.Image(z=overlay(image, heat, alpha=alpha, cmap=cmap, sign=sign, percentile=percentile),
                                  customdata=heat.sum(axis=0),
                                  hovertemplate="x %{x}, y %{y}: %{customdata:.3g}<extra></extra>"),
                         row=row, col=col + 1)
    figure.update_xaxes(visible=False)
    figure.update_yaxes(visible=False)
    figure.update_annotations(font_size=10)
    figure.update_layout(title=title or _title(maps), width=2 * columns * panel_px + 40,
                         height=rows * (panel_px + 30) + 80, margin={"l": 10, "r": 10, "t": 70, "b": 10})
    return figure


def _ids_and_values(maps, max_images: int) -> tuple[list[str], np.ndarray]:
    if not isinstance(maps, xr.DataArray) or "image_id" not in maps.dims:
        raise OptionError("maps must be a DataArray with an image_id axis (as Attributor.attribute returns); "
                          "label a plain array with odinlab.store.labelled.labelled(maps, image_ids).")
    values = np.asarray(maps.transpose("image_id", ...).values, np.float32)
    if values.ndim == 3:  # (image_id, y, x): one channel
        values = values[:, None]
    if values.ndim != 4:
        raise ImageFormatError(f"Attribution maps are (image_id, channel, y, x); got dims {maps.dims}.")
    if not 0 < len(values) <= max_images:
        raise OptionError(f"attribution_grid shows 1 to {max_images} images; the maps hold {len(values)}. "
                          "Pass fewer (maps[:16]) or raise max_images.")
    return [str(i) for i in maps.image_id.values], values


def _captions(captions, ids: list[str], store) -> list[str]:
    if captions is None:
        if store is None:
            return ids
        captions = store.select(ids).frame
    if isinstance(captions, pl.DataFrame):
        found = {row["image_id"]: row for row in captions.iter_rows(named=True)}
        return [_caption(i, found.get(i, {})) for i in ids]
    captions = [str(c) for c in captions]
    if len(captions) != len(ids):
        raise OptionError(f"{len(captions)} captions for {len(ids)} images; give one per image.")
    return captions


def _caption(image_id: str, row: dict) -> str:
    parts = [f"label {row['label_name']}" if row.get("label_name") is not None else None,
             f"pred {row['predicted_name']}" if row.get("predicted_name") is not None else None]
    described = ", ".join(p for p in parts if p)
    return f"{image_id}<br>{described}" if described else image_id


def _title(maps: xr.DataArray) -> str:
    method, model_id, target = (maps.attrs.get(k) for k in ("method", "model_id", "target"))
    if not method:
        return "attributions"
    return f"{method}" + (f" of {model_id}" if model_id else "") + (f", target: {target}" if target else "")


__all__ = ["attribution_grid"]
