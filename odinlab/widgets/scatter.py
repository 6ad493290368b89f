"""The embedding scatter: a WebGL scatter plot of image ids (regl-scatterplot, bundled in scatter.js).

Points travel to the browser as binary buffers, never as JSON lists of numbers:

- the geometry is not a synced trait (a saved notebook would carry it): the browser asks for it with a
  ``{"type": "ready"}`` message when it renders, and Python answers ``{"type": "points", "n": n}`` with
  one buffer of uint16 x, y interleaved (4 bytes a point), normalized to [-1, 1] with one scale for both
  axes (the embedding's shape is kept). 65,536 steps across the plot are 0.015 px of a 1000-px canvas:
  invisible even zoomed 50x. A second view or a re-render asks again; a saved notebook without a kernel
  shows "Run the cell to see the points";
- ``colors``: one uint8 a point, the category index of a categorical color, or the value quantized to
  0..255 of a continuous one; ``legend`` (a small dict) says which, with the colors and their labels;
- ``sizes``: one uint8 a point (empty when every point has the same size);
- ``selection_mask``: the selection, both ways, as ``numpy.packbits(mask, bitorder="little")`` (empty
  bytes: nothing selected), 125 kB for a million points.

A re-color sends ``colors`` and ``legend`` only; a selection sends ``selection_mask`` only.

>>> view = ScatterView([0.0, 1.0, 2.0], [0.0, 1.0, 0.5], ["a", "b", "c"], color=["cat", "dog", "cat"])
>>> len(view.points), len(view.colors), [item["label"] for item in view.legend["items"]]
(12, 3, ['cat', 'dog'])
>>> view.show_selection(["b", "c"]); view.selected_ids
['b', 'c']
>>> ScatterView([], [], []).message
'No points to show: the selection is empty.'
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anywidget
import numpy as np
import polars as pl
import traitlets

from odinlab.errors import DuplicateImageError, OptionError, UnknownColumnError, closest, listing

__all__ = ["ScatterView"]

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


def palette(n: int) -> list[str]:
    """``n`` distinct colors: tab10, then tab20's light half, then golden-angle hues.

    >>> palette(3)
    ['#1f77b4', '#ff7f0e', '#2ca02c']
    >>> len(set(palette(256)))
    256
    """
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
    return colors


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
    mapping {value: label} or a sequence of labels indexed by integer values (class names).

    >>> codes, legend = encode_colors([True, False, True], 3, title="correct")
    >>> list(codes), [i["label"] for i in legend["items"]]
    ([1, 0, 1], ['False', 'True'])
    >>> codes, legend = encode_colors([0.0, 0.5, 1.0], 3)
    >>> list(codes), legend["kind"], legend["min"], legend["max"]
    ([0, 128, 255], 'continuous', 0.0, 1.0)
    """
    if values is None:
        return bytes(n), {"kind": "none", "title": title or "", "items": [{"label": "all", "color": _UNIFORM}],
                          "colors": [_UNIFORM]}
    series = _as_series(values, title or "color")
    if len(series) != n:
        raise OptionError(f"color has {len(series)} values but the scatter has {n} points; give one value a point.")
    if kind not in (None, "categorical", "continuous"):
        raise OptionError(f"Unknown color kind {kind!r}. Kinds: categorical, continuous.")
    dtype = series.dtype
    if kind is None:
        if dtype.is_float():
            kind = "continuous"
        elif dtype.is_integer():
            kind = "categorical" if series.n_unique() <= MAX_INTEGER_CATEGORIES else "continuous"
        else:
            kind = "categorical"
    if kind == "continuous":
        if not dtype.is_numeric():
            raise OptionError(f"A continuous color needs numbers; {series.name!r} holds {dtype}.")
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
    # categorical: category codes ordered by value, the rarest merged into "other" past MAX_CATEGORIES
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
    colors = palette(len(ordered)) + ([_MISSING] * other)
    colors = [(_MISSING if v is None else c) for v, c in zip(ordered, colors)] + colors[len(ordered):]
    sizes = np.bincount(codes, minlength=len(names))
    items = [{"label": name, "color": color, "count": int(size)} for name, color, size in zip(names, colors, sizes)]
    return codes.tobytes(), {"kind": "categorical", "title": title or series.name or "", "items": items,
                             "colors": colors}


def _name(value: Any, legend: Any) -> str:
    if isinstance(legend, Mapping):
        return str(legend.get(value, _label(value)))
    if isinstance(legend, Sequence) and not isinstance(legend, str):
        if isinstance(value, (int, np.integer)) and 0 <= int(value) < len(legend):
            return str(legend[int(value)])
    return _label(value)


def normalize_points(x: np.ndarray, y: np.ndarray, padding: float = 0.95) -> bytes:
    """Interleave x, y as float32 in [-1, 1], one scale for both axes (the shape is kept).

    >>> np.frombuffer(normalize_points(np.array([0.0, 2.0]), np.array([0.0, 1.0]), padding=1.0), np.float32)
    array([-1. , -0.5,  1. ,  0.5], dtype=float32)
    """
    out = np.empty((len(x), 2), dtype=np.float32)
    if len(x):
        cx, cy = (x.min() + x.max()) / 2, (y.min() + y.max()) / 2
        half = max(x.max() - x.min(), y.max() - y.min()) / 2
        scale = padding / half if half > 0 else 1.0
        out[:, 0] = (x - cx) * scale
        out[:, 1] = (y - cy) * scale
    return out.tobytes()


def quantize_points(xy: bytes) -> bytes:
    """float32 x, y in [-1, 1] as uint16 (0 is -1, 65535 is 1): 4 bytes a point instead of 8.

    >>> np.frombuffer(quantize_points(np.array([-1, 0, 1, 0.5], np.float32).tobytes()), np.uint16)
    array([    0, 32768, 65535, 49151], dtype=uint16)
    """
    values = np.frombuffer(xy, dtype=np.float32)
    return np.rint((np.clip(values, -1, 1) + 1) * 32767.5).astype(np.uint16).tobytes()


def _bytes_from_json(value: Any, widget: Any) -> bytes:
    # binary buffers from the browser arrive as memoryviews, which a Bytes trait refuses
    return b"" if value is None else bytes(value)


class ScatterView(anywidget.AnyWidget):
    """A WebGL scatter of image ids: pan, zoom, lasso and box selection, a legend.

    ``ScatterView(x, y, ids, color=None, legend=None, size=None)``, or
    ``ScatterView.from_frame(frame, color="label_name")`` from a frame with image_id, x and y (an
    ``Embedding(...).frame()``). ``color`` is one value a point (labels: categories; floats: a scale),
    ``legend`` names categories ({value: name} or class names by index) and ``size`` is one number a
    point (drawn larger where larger).

    The view contract: ``ids``, ``selected_ids``, ``show_selection(ids)`` (no callback fires),
    ``on_select(callback)``; and ``recolor(values)`` that sends the colors only.
    """

    _esm = Path(__file__).with_name("scatter.js")
    _css = Path(__file__).with_name("scatter.css")

    colors = traitlets.Bytes(b"").tag(sync=True, from_json=_bytes_from_json)
    sizes = traitlets.Bytes(b"").tag(sync=True, from_json=_bytes_from_json)
    legend = traitlets.Dict().tag(sync=True)
    # set by the browser (a lasso) or by show_selection; not echoed back to the browser that sent it
    selection_mask = traitlets.Bytes(b"").tag(sync=True, from_json=_bytes_from_json, echo_update=False)
    message = traitlets.Unicode("").tag(sync=True)
    height = traitlets.Int(460).tag(sync=True)
    point_size = traitlets.Float(0.0).tag(sync=True)  # 0: chosen in the browser from the number of points
    hovered = traitlets.Int(-1).tag(sync=True, echo_update=False)  # the point under the mouse, -1 for none

    def __init__(self, x: Any = None, y: Any = None, ids: Any = None, color: Any = None, legend: Any = None,
                 size: Any = None, *, title: str | None = None, color_kind: str | None = None,
                 height: int = 460, **kwargs: Any) -> None:
        super().__init__(height=height, **kwargs)
        self._callbacks: list[Callable[[list[str]], Any]] = []
        self._quiet = False
        self._index: dict[str, int] | None = None
        self._frame: pl.DataFrame | None = None
        self._ids: list[str] = []
        self.points = b""  # uint16 x, y interleaved; sent on the browser's request, never synced
        self.on_msg(self._on_browser_message)
        if x is None and y is None and ids is None:
            self.message = "No points to show: give x, y and ids, or a frame with image_id, x and y."
            return
        xs = _float_array([] if x is None else x, "x")
        ys = _float_array([] if y is None else y, "y")
        if len(xs) != len(ys):
            raise OptionError(f"x has {len(xs)} values and y has {len(ys)}; give one x and one y a point.")
        id_list = [] if ids is None else [str(i) for i in (ids.to_list() if hasattr(ids, "to_list") else ids)]
        if len(id_list) != len(xs):
            raise OptionError(f"ids has {len(id_list)} values but there are {len(xs)} points; give one id a point.")
        if len(xs) == 0:
            self.message = "No points to show: the selection is empty."
            return
        bad = ~(np.isfinite(xs) & np.isfinite(ys))
        if bad.any():
            first = id_list[int(np.argmax(bad))]
            raise OptionError(f"{int(bad.sum())} points have a NaN or infinite x or y (the first: {first!r}); "
                              "drop them or fit the embedding again.")
        if len(set(id_list)) != len(id_list):
            seen: set[str] = set()
            dup = next(i for i in id_list if i in seen or seen.add(i))
            raise DuplicateImageError(f"Image id {dup!r} appears more than once; a scatter shows each image once.")
        self._ids = id_list
        codes, legend_state = encode_colors(color, len(xs), legend, title, color_kind)
        size_bytes = self._encode_sizes(size, len(xs))
        self.points = quantize_points(normalize_points(xs, ys))
        with self.hold_sync():
            self.colors = codes
            self.legend = legend_state
            self.sizes = size_bytes

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_frame(cls, frame: pl.DataFrame, color: str | Any = None, legend: Any = None,
                   size: str | Any = None, **kwargs: Any) -> ScatterView:
        """A scatter of a frame with image_id, x and y columns (``Embedding(...).frame()``).

        ``color`` and ``size`` are column names of the frame (or one value a point).
        """
        if not isinstance(frame, pl.DataFrame):
            raise OptionError(f"from_frame needs a polars DataFrame with image_id, x and y; got {type(frame).__name__}.")
        for column in ("image_id", "x", "y"):
            cls._column(frame, column)
        color_values = cls._column(frame, color) if isinstance(color, str) else color
        size_values = cls._column(frame, size) if isinstance(size, str) else size
        kwargs.setdefault("title", color if isinstance(color, str) else None)
        view = cls(frame["x"], frame["y"], frame["image_id"], color=color_values, legend=legend, size=size_values,
                   **kwargs)
        view._frame = frame
        return view

    @staticmethod
    def _column(frame: pl.DataFrame, name: str) -> pl.Series:
        if name not in frame.columns:
            raise UnknownColumnError(f"The frame has no column {name!r}.{closest(name, frame.columns)} "
                                     f"Columns: {listing(frame.columns)}.")
        return frame[name]

    @staticmethod
    def _encode_sizes(size: Any, n: int) -> bytes:
        if size is None:
            return b""
        values = _float_array(size, "size")
        if len(values) != n:
            raise OptionError(f"size has {len(values)} values but the scatter has {n} points; give one a point.")
        finite = np.isfinite(values)
        if not finite.any():
            return b""
        lo, hi = values[finite].min(), values[finite].max()
        codes = np.zeros(n, dtype=np.uint8)
        codes[finite] = np.rint((values[finite] - lo) / (hi - lo if hi > lo else 1.0) * 255).astype(np.uint8)
        return codes.tobytes()

    def _on_browser_message(self, widget: Any, content: Any, buffers: list) -> None:
        # a view rendered (or rendered again): answer with the geometry as one binary buffer
        if isinstance(content, Mapping) and content.get("type") == "ready":
            self.send({"type": "points", "n": len(self._ids)}, buffers=[self.points])

    # -- the view contract ---------------------------------------------------------------------

    @property
    def ids(self) -> list[str]:
        """The image id of each point, in point order."""
        return list(self._ids)

    @property
    def selected_indices(self) -> np.ndarray:
        """Point indices of the current selection (int64, ascending)."""
        n = len(self._ids)
        mask = self.selection_mask
        if not mask or n == 0:
            return np.zeros(0, dtype=np.int64)
        bits = np.unpackbits(np.frombuffer(mask, dtype=np.uint8), bitorder="little", count=n)
        return np.flatnonzero(bits).astype(np.int64)

    @property
    def selected_ids(self) -> list[str]:
        """The image ids selected (in the browser, or shown with ``show_selection``); [] for none."""
        return [self._ids[i] for i in self.selected_indices]

    def show_selection(self, ids: Sequence[str] | None) -> None:
        """Highlight these ids (None or [] clears); ids that are not points are ignored.

        Callbacks given to ``on_select`` are not called: this is how other views show theirs here.
        """
        mask = b""
        if ids:
            if self._index is None:
                self._index = {image_id: i for i, image_id in enumerate(self._ids)}
            found = [self._index[i] for i in (str(i) for i in ids) if i in self._index]
            if found:
                bits = np.zeros(len(self._ids), dtype=bool)
                bits[found] = True
                mask = np.packbits(bits, bitorder="little").tobytes()
        self._quiet = True
        try:
            self.selection_mask = mask
        finally:
            self._quiet = False

    def on_select(self, callback: Callable[[list[str]], Any], remove: bool = False) -> None:
        """Call ``callback(ids)`` whenever the user selects points in the browser ([] when cleared)."""
        if remove:
            self._callbacks = [c for c in self._callbacks if c != callback]
        else:
            self._callbacks.append(callback)

    @traitlets.observe("selection_mask")
    def _selection_changed(self, change: dict) -> None:
        if self._quiet or not self._callbacks:
            return
        ids = self.selected_ids
        for callback in list(self._callbacks):
            callback(ids)

    def recolor(self, values: Any = None, legend: Any = None, title: str | None = None,
                color_kind: str | None = None) -> None:
        """Color the points by new values (one a point, or a column name of the frame given to
        ``from_frame``); only ``colors`` and ``legend`` are sent, never the points."""
        if not self._ids:
            return
        if isinstance(values, str):
            if self._frame is None:
                raise OptionError(f"recolor({values!r}) names a column, but this scatter was not built from a frame; "
                                  "give one value a point.")
            title = title or values
            values = self._column(self._frame, values)
        codes, legend_state = encode_colors(values, len(self._ids), legend, title, color_kind)
        with self.hold_sync():
            self.colors = codes
            self.legend = legend_state

    @property
    def hovered_id(self) -> str | None:
        """The image id under the mouse in the browser, or None."""
        return self._ids[self.hovered] if 0 <= self.hovered < len(self._ids) else None

    def __repr__(self) -> str:
        return f"ScatterView({len(self._ids)} points, {len(self.selected_indices)} selected)"
