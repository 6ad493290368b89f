"""Model comparison figures, drawn from the frames that :mod:`odinlab.debug.compare` returns."""

from __future__ import annotations

import plotly.graph_objects as go
import polars as pl

from odinlab.errors import OptionError, UnknownColumnError

METRICS = ("precision", "recall", "f1")


def class_delta_figure(deltas: pl.DataFrame, metric: str = "f1", *, title: str | None = None) -> go.Figure:
    """Bar chart of the per-class change of ``metric`` from version a to b (gains green, losses red).

    ``deltas`` is the frame of :func:`odinlab.debug.compare.class_deltas`.

    >>> from odinlab.debug import compare
    >>> _ = store.materialize(net, images="val", progress=False)
    >>> class_delta_figure(compare.class_deltas(store, "cnn@1", "cnn@1", "val")).data[0].type
    'bar'
    """
    if metric not in METRICS:
        raise OptionError(f"Unknown metric {metric!r}; use one of {', '.join(METRICS)}.")
    _require(deltas, ["label_name", f"{metric}_delta"], "compare.class_deltas")
    values = deltas[f"{metric}_delta"].to_list()
    figure = go.Figure(go.Bar(x=deltas["label_name"].to_list(), y=values,
                              marker_color=["#2a9d8f" if v >= 0 else "#e76f51" for v in values]))
    figure.update_layout(title=title or f"{metric} per class: b − a", xaxis_title="class",
                         yaxis_title=f"Δ {metric}")
    return figure


def cka_figure(matrix: pl.DataFrame, *, title: str = "Linear CKA") -> go.Figure:
    """Heat map of a :func:`odinlab.debug.compare.cka_matrix` result (layers of a down, of b across).

    >>> from odinlab.debug import compare
    >>> cka_figure(compare.cka_matrix(store, "cnn@1", "cnn@1", ["head.fc1"], ["head.fc1"], "val")).data[0].type
    'heatmap'
    """
    _require(matrix, ["layer_a", "layer_b", "cka"], "compare.cka_matrix")
    wide = matrix.pivot(on="layer_b", index="layer_a", values="cka", maintain_order=True)
    figure = go.Figure(go.Heatmap(z=wide.drop("layer_a").to_numpy(), x=wide.columns[1:],
                                  y=wide["layer_a"].to_list(), zmin=0, zmax=1, colorscale="Viridis"))
    figure.update_layout(title=title, yaxis_autorange="reversed")
    return figure


def _require(frame: pl.DataFrame, columns: list[str], source: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise UnknownColumnError(f"This frame lacks {', '.join(missing)}; draw the result of {source}.")


__all__ = ["cka_figure", "class_delta_figure"]
