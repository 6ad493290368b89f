"""Colors of the scatter's points: palettes, class colors, and a column encoded as one byte a point.

Class k of n always gets ``class_color(k, n)``, so a class has the same color whether the points
are colored by label or by prediction, and overlays (the explorer's between-classes points) can
use it too.

>>> class_color(3, 10)
'#d62728'
"""

from __future__ import annotations

import colorsys
import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

from odinlab.errors import OptionError

__all__ = ["MAX_CATEGORIES", "MAX_INTEGER_CATEGORIES", "class_color", "encode_colors", "palette"]

# A categorical color holds at most this many categories; the rarest beyond it are merged into "other".
MAX_CATEGORIES = 256
# Integer values with at most this many distinct values are colored as categories, more as a scale.
MAX_INTEGER_CATEGORIES = 64

_TAB10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
          "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
_TAB20_LIGHT = ["#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5",
                "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5"]
# viridis, sampled at 9 stops (interpolated to 64 colors for the scale)
_VIRIDIS = ["#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c",
            "#28ae80", "#5ec962", "#addc30", "#fde725"]
_UNIFORM = "#4c78a8"
_MISSING = "#bbbbbb"
# The first bytes of the image formats a browser shows, for the hover image's MIME type.


def palette(n: int) -> list[str]:
    """``n`` distinct colors: tab10, then tab20's light half, then golden-angle hues.

    >>> palette(3)
    ['#1f77b4', '#ff7f0e', '#2ca02c']
    >>> len(set(palette(256)))
    256
    """
    return list(_palette(n))


def class_color(k: int, n_classes: int) -> str:
    """The color of class ``k`` of ``n_classes`` wherever the scatter colors classes (by label, by
    prediction, in overlays): ``palette(n_classes)[k]``, whichever classes are present.

    >>> class_color(3, 10), class_color(3, 10) == palette(10)[3]
    ('#d62728', True)
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= int(k) < int(n_classes):
        raise OptionError(f"class_color({k!r}, {n_classes!r}): the class index must be an integer from 0 to "
                          f"{int(n_classes) - 1} (n_classes is the number of class names).")
    return _palette(int(n_classes))[int(k)]


@functools.lru_cache(maxsize=16)
def _palette(n: int) -> tuple[str, ...]:
    colors = (_TAB10 + _TAB20_LIGHT)[:n]
    i = 0
    while len(colors) < n:
        hue = (i * 0.618033988749895) % 1.0
        lightness, saturation = (0.45, 0.65) if i % 2 == 0 else (0.6, 0.55)
        r, g, b = colorsys.hls_to_rgb(hue, lightness, saturation)
        color = f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"
        if color not in colors:
            colors.append(color)
        i += 1
    return tuple(colors)


def _scale(stops: list[str], n: int) -> list[str]:
    rgb = np.array([[int(s[i:i + 2], 16) for i in (1, 3, 5)] for s in stops], dtype=float)
    at = np.linspace(0, len(stops) - 1, n)
    out = np.stack([np.interp(at, np.arange(len(stops)), rgb[:, c]) for c in range(3)], axis=1)
    return ["#" + "".join(f"{round(v):02x}" for v in row) for row in out]


def _label(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "(missing)"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _as_series(values: Any, name: str) -> pl.Series:
    if isinstance(values, pl.Series):
        return values
    if isinstance(values, np.ndarray):
        return pl.Series(name, values)
    if hasattr(values, "to_numpy") and not isinstance(values, (str, bytes)):  # pandas, pyarrow
        return pl.Series(name, values.to_numpy())
    try:
        return pl.Series(name, list(values), strict=False)
    except TypeError:
        raise OptionError(f"{name} must be a sequence of values, one a point; got {type(values).__name__}.") from None


def _float_array(values: Any, name: str) -> np.ndarray:
    try:
        if isinstance(values, pl.Series):
            return values.cast(pl.Float64).to_numpy()
        return np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError, pl.exceptions.PolarsError) as err:
        raise OptionError(f"{name} must hold numbers, one a point: {err}") from None


def encode_colors(values: Any, n: int, legend: Any = None, title: str | None = None,
                  kind: str | None = None) -> tuple[bytes, dict]:
    """Encode a color column as one uint8 a point and the legend that reads it.

    ``kind`` is "categorical" or "continuous"; by default strings, booleans and integers with at most
    64 distinct values are categories, other numbers a scale. ``legend`` names the categories: a
    mapping {value: label} (or {value: (label, "#rrggbb")} to choose the colors too) or a sequence of
    labels indexed by integer values (class names). With
    class names, class ``k`` gets :func:`class_color` ``(k, len(classes))`` and the legend lists the
    classes present.

    >>> codes, legend = encode_colors([True, False, True], 3, title="correct")
    >>> list(codes), [i["label"] for i in legend["items"]]
    ([1, 0, 1], ['False', 'True'])
    >>> codes, legend = encode_colors([0.0, 0.5, 1.0], 3)
    >>> list(codes), legend["kind"], legend["min"], legend["max"]
    ([0, 128, 255], 'continuous', 0.0, 1.0)
    >>> _, legend = encode_colors([2, 2], 2, legend=["cat", "dog", "bird"])
    >>> legend["items"], class_color(2, 3)
    ([{'label': 'bird', 'color': '#2ca02c', 'count': 2}], '#2ca02c')
    >>> _, legend = encode_colors([True, False], 2, legend={False: ("mistake", "#d62728"), True: "correct"})
    >>> [(i["label"], i["color"]) for i in legend["items"]]
    [('mistake', '#d62728'), ('correct', '#ff7f0e')]
    """
    if values is None:
        return bytes(n), {"kind": "none", "title": title or "", "items": [{"label": "all", "color": _UNIFORM}],
                          "colors": [_UNIFORM]}
    series = _as_series(values, title or "color")
    if len(series) != n:
        raise OptionError(f"color has {len(series)} values but the scatter has {n} points; give one value a point.")
    if kind not in (None, "categorical", "continuous"):
        raise OptionError(f"Unknown color kind {kind!r}. Kinds: categorical, continuous.")
    classes = _class_names(series, legend)
    dtype = series.dtype
    if kind is None:
        if dtype.is_float():
            kind = "continuous"
        elif dtype.is_integer():
            many = classes is None and series.n_unique() > MAX_INTEGER_CATEGORIES
            kind = "continuous" if many else "categorical"
        else:
            kind = "categorical"
    if kind == "continuous":
        return _continuous_colors(series, n, title)
    return _categorical_colors(series, legend, title, classes)


def _class_names(series: pl.Series, legend: Any) -> list | None:
    # class names by index, and every value an index into them: the colors are the classes' own
    if not isinstance(legend, Sequence) or isinstance(legend, str) or not series.dtype.is_integer():
        return None
    present = series.drop_nulls()
    if len(present) and (present.min() < 0 or present.max() >= len(legend)):
        return None
    return list(legend)


def _continuous_colors(series: pl.Series, n: int, title: str | None) -> tuple[bytes, dict]:
    if not series.dtype.is_numeric():
        raise OptionError(f"A continuous color needs numbers; {series.name!r} holds {series.dtype}.")
    data = series.cast(pl.Float64).to_numpy()
    finite = np.isfinite(data)
    lo = float(data[finite].min()) if finite.any() else 0.0
    hi = float(data[finite].max()) if finite.any() else 0.0
    span = hi - lo if hi > lo else 1.0
    codes = np.zeros(n, dtype=np.uint8)
    codes[finite] = np.rint((data[finite] - lo) / span * 255).astype(np.uint8)
    colors = _scale(_VIRIDIS, 64)
    return codes.tobytes(), {"kind": "continuous", "title": title or series.name or "", "min": lo, "max": hi,
                             "missing": int((~finite).sum()), "colors": colors,
                             "items": [{"label": f"{lo:.4g}", "color": colors[0]},
                                       {"label": f"{hi:.4g}", "color": colors[-1]}]}


def _categorical_colors(series: pl.Series, legend: Any, title: str | None,
                        classes: list | None) -> tuple[bytes, dict]:
    # category codes ordered by value, the rarest merged into "other" past MAX_CATEGORIES
    counts = series.value_counts(sort=True)
    uniques = counts[series.name].to_list()
    if len(uniques) > MAX_CATEGORIES:
        uniques = uniques[:MAX_CATEGORIES - 1]
    try:
        ordered = sorted(uniques, key=lambda v: (v is None, v))
    except TypeError:
        ordered = sorted(uniques, key=lambda v: (v is None, str(v)))
    other = len(ordered) < counts.height
    present = [v for v in ordered if v is not None]
    codes_series = series.replace_strict(present, [ordered.index(v) for v in present], default=len(ordered),
                                         return_dtype=pl.UInt8)
    if None in ordered:
        codes_series = codes_series.set(series.is_null(), ordered.index(None))
    codes = codes_series.to_numpy().astype(np.uint8)
    names = [_name(v, legend) for v in ordered] + (["other"] * other)
    if classes is not None:  # class k keeps its color whichever classes are present
        colors = [_MISSING if v is None else class_color(int(v), len(classes)) for v in ordered]
    else:
        colors = [_MISSING if v is None else c for v, c in zip(ordered, palette(len(ordered)))]
    if isinstance(legend, Mapping):  # colors chosen with the names: {value: (name, "#rrggbb")}
        colors = [_chosen_color(legend.get(v), c) for v, c in zip(ordered, colors)]
    colors += [_MISSING] * other
    sizes = np.bincount(codes, minlength=len(names))
    items = [{"label": name, "color": color, "count": int(size)} for name, color, size in zip(names, colors, sizes)]
    return codes.tobytes(), {"kind": "categorical", "title": title or series.name or "", "items": items,
                             "colors": colors}


def _chosen_color(entry: Any, default: str) -> str:
    if isinstance(entry, tuple) and len(entry) == 2:
        color = str(entry[1])
        if not (color.startswith("#") and len(color) in (4, 7) and all(c in "0123456789abcdefABCDEF" for c in color[1:])):
            raise OptionError(f"Legend color {color!r} is not a #rgb or #rrggbb color; write it like '#d62728'.")
        return color
    return default


def _name(value: Any, legend: Any) -> str:
    if isinstance(legend, Mapping):
        entry = legend.get(value, _label(value))
        return str(entry[0] if isinstance(entry, tuple) else entry)
    if isinstance(legend, Sequence) and not isinstance(legend, str):
        if isinstance(value, (int, np.integer)) and 0 <= int(value) < len(legend):
            return str(legend[int(value)])
    return _label(value)
