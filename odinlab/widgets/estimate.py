"""A sampled estimate with its error bars beside the exact answer, one row per item.

The numbers come from a sampled query of :mod:`odinlab.sampling.queries` (``top_units``,
``class_accuracy``... given ``sample=``): its value column with ``lower``/``upper`` (or ``se``).
The exact answer, from the same query over every image, is joined on the key columns (those
the two frames share that are neither numbers with decimals nor ranks) and marked beside each
interval. A few tens of rows travel as JSON; the picture is an SVG drawn in the browser.
"""

from __future__ import annotations

import math
from pathlib import Path

import anywidget
import polars as pl
import traitlets

from odinlab.errors import UnknownColumnError, closest, listing

__all__ = ["EstimateView", "estimate_rows"]

# Columns that differ between a sampled answer and the exact one, so never join on them.
NOT_KEYS = ("rank", "n", "se", "lower", "upper")


def _number(value) -> float | None:
    return None if value is None or (isinstance(value, float) and not math.isfinite(value)) else float(value)


def _key(estimate: pl.DataFrame, exact: pl.DataFrame | None, value: str) -> list[str]:
    if exact is None:
        return [c for c, t in estimate.schema.items() if c != value and c not in NOT_KEYS and not t.is_float()]
    return [c for c, t in estimate.schema.items()
            if c in exact.columns and c != value and c not in NOT_KEYS and not t.is_float()]


def _describe(frame: pl.DataFrame, key: list[str]) -> tuple[list[str], str]:
    """A label per row from the key columns that vary, and a subtitle from those that do not
    (a ``*_name`` column is shown in place of its index column)."""
    shown = [c for c in key if f"{c}_name" not in key]
    varying = [c for c in shown if frame[c].n_unique() > 1]
    fixed = [c for c in shown if c not in varying and frame.height]
    labels = [" · ".join(f"{c.removesuffix('_name')} {row[c]}" for c in varying) or str(i)
              for i, row in enumerate(frame.iter_rows(named=True))]
    return labels, " · ".join(f"{c.removesuffix('_name')} {frame[c][0]}" for c in fixed)


def estimate_rows(estimate: pl.DataFrame, exact: pl.DataFrame | None = None, value: str = "score",
                  key: list[str] | None = None, z: float = 1.959963984540054) -> tuple[list[dict], str]:
    """The rows the view draws (label, estimate, lower, upper, exact, covered) and a subtitle.

    ``lower``/``upper`` are read, or made as estimate ± ``z``·se when only ``se`` is there.

    >>> est = pl.DataFrame({"unit": [4, 7], "score": [0.5, 0.3], "lower": [0.4, 0.1], "upper": [0.6, 0.35]})
    >>> rows, _ = estimate_rows(est, pl.DataFrame({"unit": [7, 4], "score": [0.4, 0.55]}))
    >>> [(r["label"], r["exact"], r["covered"]) for r in rows]
    [('unit 4', 0.55, True), ('unit 7', 0.4, False)]
    """
    for frame, name in ((estimate, "estimate"), (exact, "exact")):
        if frame is not None and value not in frame.columns:
            raise UnknownColumnError(f"The {name} frame has no column {value!r}.{closest(value, frame.columns)} "
                                     f"Columns: {listing(frame.columns)}; pass value=<the column to show>.")
    key = list(key) if key is not None else _key(estimate, exact, value)
    frame = estimate.with_row_index("position")
    if exact is not None:
        if not key:
            raise UnknownColumnError("The estimate and the exact frames share no key column to match rows on; "
                                     "pass key=[...] (e.g. key=['unit']).")
        exact_values = exact.select(*key, pl.col(value).alias("_exact")).unique(key, keep="first", maintain_order=True)
        frame = frame.join(exact_values, on=key, how="left", maintain_order="left")
    labels, subtitle = _describe(frame, key)
    rows = []
    for label, row in zip(labels, frame.iter_rows(named=True), strict=True):
        middle = _number(row[value])
        lower, upper = _number(row.get("lower")), _number(row.get("upper"))
        se = _number(row.get("se"))
        if (lower is None or upper is None) and se is not None and middle is not None:
            lower, upper = middle - z * se, middle + z * se
        truth = _number(row.get("_exact"))
        covered = None if None in (truth, lower, upper) else bool(lower <= truth <= upper)
        rows.append({"label": label, "estimate": middle, "lower": lower, "upper": upper, "exact": truth,
                     "covered": covered})
    return rows, subtitle


class EstimateView(anywidget.AnyWidget):
    """Each row's sampled estimate (a dot) with its interval (a bar), and the exact value (a
    red mark) beside it, when ``exact_frame`` (the same query over every image) is given.

    ``value`` is the column drawn; ``key`` the columns that match rows of the two frames
    (default: those they share, except decimals, ranks and counts). ``summary`` says how many
    exact values fall inside their intervals.

    >>> est = pl.DataFrame({"unit": [4, 7], "score": [0.5, 0.3], "lower": [0.4, 0.1], "upper": [0.6, 0.35]})
    >>> EstimateView(est, pl.DataFrame({"unit": [4, 7], "score": [0.55, 0.2]})).summary
    '2 of 2 exact values lie inside their intervals.'
    """

    _esm = Path(__file__).with_name("estimate.js")
    _css = Path(__file__).with_name("estimate.css")

    message = traitlets.Unicode("").tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)
    subtitle = traitlets.Unicode("").tag(sync=True)
    summary = traitlets.Unicode("").tag(sync=True)
    value = traitlets.Unicode("score").tag(sync=True)
    rows = traitlets.List(traitlets.Dict()).tag(sync=True)  # tens of rows: JSON is fine here

    def __init__(self, estimate_frame: pl.DataFrame, exact_frame: pl.DataFrame | None = None, value: str = "score",
                 *, key: list[str] | None = None, title: str | None = None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(estimate_frame, pl.DataFrame):
            raise TypeError(f"EstimateView takes a polars DataFrame (a sampled query's answer), "
                            f"not {type(estimate_frame).__name__}.")
        self.estimate_frame, self.exact_frame = estimate_frame, exact_frame
        self.value = value
        self.title = title or f"{value}: sampled estimate with its interval" + \
            (" beside the exact value" if exact_frame is not None else "")
        if estimate_frame.height == 0:
            self.message = "No estimate to show: the sampled query returned no rows."
            return
        rows, self.subtitle = estimate_rows(estimate_frame, exact_frame, value, key)
        self.rows = rows
        checked = [r for r in rows if r["covered"] is not None]
        if checked:
            inside = sum(r["covered"] for r in checked)
            self.summary = f"{inside} of {len(checked)} exact values lie inside their intervals."
        elif exact_frame is not None:
            self.summary = "No exact value matched a row (check key=)."

    def __repr__(self) -> str:
        return f"<EstimateView {self.value}: {len(self.rows)} rows. {self.summary}>"
