"""Deprecated: overlays and the attribution grid moved to the drawing layer, :mod:`odinlab.draw`.

``overlay`` is now :func:`odinlab.draw.images.overlay` (with ``image_rgb`` and ``colormap``),
and the grid :func:`odinlab.draw.attribution.attribution_grid`, which takes labelled maps
(``Attributor.attribute``'s DataArray) instead of computing them. The names here call those.
"""

from __future__ import annotations

import warnings

import numpy as np
import xarray as xr

from odinlab.draw import images as _images
from odinlab.errors import ImageFormatError, OptionError
from odinlab.store.labelled import labelled


def overlay(image_chw: np.ndarray, attribution_chw: np.ndarray, alpha: float = 0.6, cmap=None,
            sign: str = "all", percentile: float = 99.0) -> np.ndarray:
    """Deprecated: use :func:`odinlab.draw.images.overlay` (same arguments).

    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     out = overlay(np.zeros((1, 8, 8), np.uint8), np.ones((1, 8, 8)))
    >>> out.shape, caught[0].category.__name__
    ((8, 8, 3), 'DeprecationWarning')
    """
    warnings.warn("odinlab.debug.overlay.overlay is deprecated; use odinlab.draw.images.overlay.",
                  DeprecationWarning, stacklevel=2)
    return _images.overlay(image_chw, attribution_chw, alpha=alpha, cmap=cmap, sign=sign, percentile=percentile)


def attribution_grid(store, attr_or_maps, images=None, *, target="prediction", baselines=None, columns: int = 2,
                     alpha: float = 0.6, cmap=None, sign: str = "all", percentile: float = 99.0,
                     model_id: str | None = None, panel_px: int = 150, max_images: int = 64):
    """Deprecated: compute the maps, then draw them with :func:`odinlab.draw.attribution.attribution_grid`.

    ``attr_or_maps`` is an ``Attributor`` (maps computed for ``target`` and ``baselines``, with
    its predictions in the captions) or maps (N, C, H, W) aligned with ``images``; with plain
    maps, ``model_id=`` adds stored predictions to the captions.

    >>> import warnings
    >>> ids = ["digits-0000", "digits-0001"]
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     figure = attribution_grid(store, np.ones((2, 1, 8, 8)), ids)
    >>> len(figure.data), caught[0].category.__name__
    (4, 'DeprecationWarning')
    """
    warnings.warn("odinlab.debug.overlay.attribution_grid is deprecated; use "
                  "odinlab.draw.attribution.attribution_grid(attributor.attribute(images), store=store).",
                  DeprecationWarning, stacklevel=2)
    # plotly is imported only when drawing.
    from odinlab.draw.attribution import attribution_grid as draw

    selection = store.select(images)
    ids, predictions, attrs = selection.ids, None, {"model_id": model_id}
    if not 0 < len(ids) <= max_images:  # refuse before computing any map
        raise OptionError(f"attribution_grid shows 1 to {max_images} images; {len(ids)} were selected. "
                          "Pass fewer (e.g. store.select(...)[:16]) or raise max_images.")
    if hasattr(attr_or_maps, "attribute"):
        maps = attr_or_maps.attribute(selection, target=target, baselines=baselines, progress=False)
        predictions, model_id = attr_or_maps.predictions(selection), str(attr_or_maps.model_id)
        attrs = {"model_id": model_id, "method": attr_or_maps.method, "target": target}
    else:
        maps = attr_or_maps
        if model_id is not None:
            predictions = store.predictions(model_id, selection)
    if np.ndim(maps) != 4 or len(maps) != len(ids):
        raise ImageFormatError(f"maps must be (N, C, H, W) with N = {len(ids)} selected images; "
                               f"got shape {np.shape(maps)}.")
    attrs = dict(maps.attrs) if isinstance(maps, xr.DataArray) else attrs
    maps = labelled(np.asarray(maps), ids, dims=("channel", "y", "x"), **attrs)
    return draw(
        maps, store.pixels(selection), captions=_captions(store, selection, predictions, model_id),
        columns=columns, alpha=alpha, cmap=cmap, sign=sign, percentile=percentile, panel_px=panel_px,
        max_images=max_images)


def _captions(store, selection, predictions, model_id):
    """The selection's frame with ``predicted_name`` from stored predictions, when there are some."""
    frame = selection.frame
    if predictions is None or "predicted" not in predictions.columns:
        return frame
    classes = store.model(model_id).classes
    names = {row["image_id"]: classes[row["predicted"]] for row in
             predictions.select("image_id", "predicted").drop_nulls().iter_rows(named=True)}
    return frame.with_columns(predicted_name=frame["image_id"].replace_strict(names, default=None))


__all__ = ["attribution_grid", "overlay"]
