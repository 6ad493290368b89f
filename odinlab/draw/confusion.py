"""The confusion matrix as a plotly heat map, drawn from the frame that the analysis returns."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import polars as pl

from odinlab.errors import UnknownColumnError

COLUMNS = ("label", "predicted", "count")


def confusion_figure(confusion: pl.DataFrame, *, title: str | None = None) -> go.Figure:
    """A heat map of a confusion frame: given class down, predicted class across, counts in cells.

    ``confusion`` is the frame of :func:`odinlab.debug.error_analysis.confusion_matrix` (one
    row per cell: label, label_name, predicted, predicted_name, count, image_ids). Cells that
    are missing from the frame are drawn as 0. Hovering shows the count; each cell's
    ``customdata`` is its (label, predicted) pair, so a click handler can find the cell's row
    and its ``image_ids``.

    >>> from odinlab.debug import error_analysis as ea
    >>> _ = store.materialize(net, images="val", progress=False)
    >>> figure = confusion_figure(ea.confusion_matrix(store, "cnn@1", "val"))
    >>> figure.data[0].type, int(np.sum(figure.data[0].z))
    ('heatmap', 269)
    """
    missing = [c for c in COLUMNS if c not in confusion.columns]
    if missing:
        raise UnknownColumnError(f"A confusion frame has columns {', '.join(COLUMNS)}; this one lacks "
                                 f"{', '.join(missing)}. Make it with error_analysis.confusion_matrix(...).")
    names = _class_names(confusion)
    n = len(names)
    z = np.zeros((n, n), np.int64)
    np.add.at(z, (confusion["label"].to_numpy(), confusion["predicted"].to_numpy()), confusion["count"].to_numpy())
    cells = np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij"), axis=-1)  # (label, predicted)
    figure = go.Figure(go.Heatmap(
        z=z, x=names, y=names, colorscale="Blues", text=z, texttemplate="%{text}", customdata=cells,
        hovertemplate="label %{y}, predicted %{x}: %{z} images<extra></extra>"))
    figure.update_layout(xaxis_title="predicted", yaxis_title="label", yaxis_autorange="reversed",
                         xaxis_type="category", yaxis_type="category", title=title or "Confusion matrix")
    return figure


def _class_names(confusion: pl.DataFrame) -> list[str]:
    """Names of classes 0..max, from the frame's name columns where it has them."""
    names: dict[int, str] = {}
    for index, name in (("label", "label_name"), ("predicted", "predicted_name")):
        if name in confusion.columns:
            names.update(dict(confusion.select(index, name).drop_nulls().iter_rows()))
    top = max(confusion["label"].max() or 0, confusion["predicted"].max() or 0) if confusion.height else -1
    return [str(names.get(i, i)) for i in range(top + 1)]


__all__ = ["confusion_figure"]
