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

Class colors are fixed: integer class indices named by class names (``legend=classes``) give class
``k`` the color :func:`class_color` ``(k, len(classes))`` whatever classes are present, so coloring by
label and by prediction agree, and overlays can use the same colors.

Hover (``set_hover(provider)``): the browser asks ``{"type": "hover", "index": i}`` for the point
under the mouse (debounced) and Python answers with ``provider(image_id)``'s image as a buffer and
its caption. Overlays (``set_overlay(name, x, y, ...)``): extra marks in the points' data
coordinates, drawn above the points, never selectable; each travels as float32 bytes in the
``overlay_data`` trait.

>>> view = ScatterView([0.0, 1.0, 2.0], [0.0, 1.0, 0.5], ["a", "b", "c"], color=["cat", "dog", "cat"])
>>> len(view.points), len(view.colors), [item["label"] for item in view.legend["items"]]
(12, 3, ['cat', 'dog'])
>>> view.show_selection(["b", "c"]); view.selected_ids
['b', 'c']
>>> ScatterView([], [], []).message
'No points to show: the selection is empty.'
>>> view.set_overlay("centre", [1.0], [0.5], labels=["the middle"]); view.overlays
{'centre': 1}
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anywidget
import numpy as np
import polars as pl
import traitlets

from odinlab.errors import DuplicateImageError, OptionError, UnknownColumnError, closest, listing
from odinlab.widgets.colors import MAX_CATEGORIES, _float_array, class_color, encode_colors, palette

__all__ = ["ScatterView", "class_color", "palette"]

_HEX_COLOR = re.compile(r"#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})")
_IMAGE_MAGIC = ((b"\x89PNG", "image/png"), (b"\xff\xd8", "image/jpeg"), (b"GIF8", "image/gif"),
                (b"RIFF", "image/webp"))


def normalize_points(x: np.ndarray, y: np.ndarray, padding: float = 0.95) -> bytes:
    """Interleave x, y as float32 in [-1, 1], one scale for both axes (the shape is kept).

    >>> np.frombuffer(normalize_points(np.array([0.0, 2.0]), np.array([0.0, 1.0]), padding=1.0), np.float32)
    array([-1. , -0.5,  1. ,  0.5], dtype=float32)
    """
    return _apply_normalization(x, y, _normalization(x, y, padding))


def _normalization(x: np.ndarray, y: np.ndarray, padding: float = 0.95) -> tuple[float, float, float]:
    # (centre x, centre y, scale): the points' box centred on 0, its longer side to 2 * padding
    if not len(x):
        return 0.0, 0.0, 1.0
    cx, cy = (x.min() + x.max()) / 2, (y.min() + y.max()) / 2
    half = max(x.max() - x.min(), y.max() - y.min()) / 2
    return float(cx), float(cy), float(padding / half if half > 0 else 1.0)


def _apply_normalization(x: np.ndarray, y: np.ndarray, transform: tuple[float, float, float]) -> bytes:
    cx, cy, scale = transform
    out = np.empty((len(x), 2), dtype=np.float32)
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


def _hex_color(value: Any, what: str) -> str:
    if isinstance(value, str) and _HEX_COLOR.fullmatch(value.strip()):
        return value.strip().lower()
    raise OptionError(f"{what} is {value!r}, not a color; give a hex color such as '#1f77b4' (or '#17b').")


def _as_list(values: Any, name: str) -> list:
    if hasattr(values, "tolist"):  # numpy
        return values.tolist()
    if hasattr(values, "to_list"):  # polars
        return values.to_list()
    try:
        return list(values)
    except TypeError:
        raise OptionError(f"{name} must be a sequence, one a point; got {type(values).__name__}.") from None


def _overlay_colors(color: Any, n: int) -> tuple[list[str], bytes]:
    """(the overlay's distinct colors, one uint8 a point indexing them; empty when there is one color)."""
    if isinstance(color, str):
        return [_hex_color(color, "color")], b""
    values = _as_list(color, "color")
    if len(values) != n:
        raise OptionError(f"color has {len(values)} values but the overlay has {n} points; give one color, "
                          "or one a point.")
    colors = [_hex_color(v, f"color[{i}]") for i, v in enumerate(values)]
    distinct = list(dict.fromkeys(colors))
    if len(distinct) > MAX_CATEGORIES:
        raise OptionError(f"An overlay holds at most {MAX_CATEGORIES} distinct colors; this one has "
                          f"{len(distinct)}. Split it into several overlays.")
    if len(distinct) == 1:
        return distinct, b""
    index = {c: i for i, c in enumerate(distinct)}
    return distinct, np.array([index[c] for c in colors], dtype=np.uint8).tobytes()


def _overlay_labels(labels: Any, n: int) -> list[str]:
    if labels is None:
        return []
    if isinstance(labels, str):
        raise OptionError(f"labels is one string ({labels[:40]!r}); give one text a point ({n}).")
    texts = [str(v) for v in _as_list(labels, "labels")]
    if len(texts) != n:
        raise OptionError(f"labels has {len(texts)} texts but the overlay has {n} points; give one a point.")
    return texts


def _image_type(data: bytes) -> str:
    return next((mime for magic, mime in _IMAGE_MAGIC if data.startswith(magic)), "image/png")


class ScatterView(anywidget.AnyWidget):
    """A WebGL scatter of image ids: pan, zoom, lasso and box selection, a legend.

    ``ScatterView(x, y, ids, color=None, legend=None, size=None)``, or
    ``ScatterView.from_frame(frame, color="label_name")`` from a frame with image_id, x and y (an
    ``Embedding(...).frame()``). ``color`` is one value a point (labels: categories; floats: a scale),
    ``legend`` names categories ({value: name} or class names by index) and ``size`` is one number a
    point (drawn larger where larger).

    The view contract: ``ids``, ``selected_ids``, ``show_selection(ids)`` (no callback fires),
    ``on_select(callback)``; and ``recolor(values)`` that sends the colors only. Also
    ``set_hover(provider)`` (an image and a caption under the mouse) and ``set_overlay(name, x, y)``
    (marks above the points in their data coordinates).
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
    hover_images = traitlets.Bool(False).tag(sync=True)  # a hover provider is set: the browser asks for images
    # one dict an overlay: name, n, xy (float32 bytes, the points' normalized coordinates), colors, codes,
    # sizes (uint8 bytes), labels; bytes travel as binary buffers
    overlay_data = traitlets.List().tag(sync=True)

    def __init__(self, x: Any = None, y: Any = None, ids: Any = None, color: Any = None, legend: Any = None,
                 size: Any = None, *, title: str | None = None, color_kind: str | None = None,
                 height: int = 460, **kwargs: Any) -> None:
        super().__init__(height=height, **kwargs)
        self._callbacks: list[Callable[[list[str]], Any]] = []
        self._quiet = False
        self._id_series: pl.Series | None = None  # the ids as polars strings, for membership tests
        self._frame: pl.DataFrame | None = None
        self._ids: list[str] = []
        self._transform: tuple[float, float, float] | None = None  # data -> drawn coordinates (cx, cy, scale)
        self._hover: Callable[[str], tuple[bytes, str]] | None = None
        self._overlays: dict[str, dict] = {}
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
        self._transform = _normalization(xs, ys)
        self.points = quantize_points(_apply_normalization(xs, ys, self._transform))
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
    def _encode_sizes(size: Any, n: int, what: str = "the scatter") -> bytes:
        if size is None:
            return b""
        if np.ndim(size) == 0:
            raise OptionError(f"size is one number ({size!r}); give one number a point ({n}), or None.")
        values = _float_array(size, "size")
        if len(values) != n:
            raise OptionError(f"size has {len(values)} values but {what} has {n} points; give one a point.")
        finite = np.isfinite(values)
        if not finite.any():
            return b""
        lo, hi = values[finite].min(), values[finite].max()
        codes = np.zeros(n, dtype=np.uint8)
        codes[finite] = np.rint((values[finite] - lo) / (hi - lo if hi > lo else 1.0) * 255).astype(np.uint8)
        return codes.tobytes()

    def _on_browser_message(self, widget: Any, content: Any, buffers: list) -> None:
        if not isinstance(content, Mapping):
            return
        if content.get("type") == "ready":  # a view rendered (or rendered again): the geometry, one buffer
            self.send({"type": "points", "n": len(self._ids)}, buffers=[self.points])
        elif content.get("type") == "hover":
            self._answer_hover(content.get("index"))

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
        bits = self._membership(ids) if ids is not None and len(ids) else None
        mask = np.packbits(bits, bitorder="little").tobytes() if bits is not None and bits.any() else b""
        self._quiet = True
        try:
            self.selection_mask = mask
        finally:
            self._quiet = False

    def _membership(self, ids: Any) -> np.ndarray:
        """One bool a point: whether its id is among ``ids`` (ids of no point are ignored).

        Vectorized (a polars membership test of every point's id): among 100,000 points, 2 ms for 2,000
        ids and 7-9 ms for 50,000 (show_selection with a Python dict lookup an id took 2 and 16-22 ms).

        >>> ScatterView([0.0, 1.0, 2.0], [0.0, 1.0, 2.0], ["a", "b", "7"])._membership(["7", "x", 7]).tolist()
        [False, False, True]
        """
        if self._id_series is None:
            self._id_series = pl.Series("image_id", self._ids, dtype=pl.String)
        wanted = pl.Series("image_id", ids if isinstance(ids, list | tuple | pl.Series | np.ndarray)
                           else _as_list(ids, "ids"), dtype=pl.String, strict=False)
        return self._id_series.is_in(wanted.implode()).to_numpy()

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

    # -- hover -----------------------------------------------------------------------------------

    def set_hover(self, provider: Callable[[str], tuple[bytes, str]] | None) -> None:
        """Show ``provider(image_id)`` -> ``(png_bytes, caption)`` beside the point under the mouse
        (None: the text tooltip only). A provider that raises shows the id and its error instead.

        >>> view = ScatterView([0.0, 1.0], [0.0, 1.0], ["a", "b"])
        >>> view.set_hover(lambda image_id: (b"", f"image {image_id}")); view.hover_images
        True
        """
        if provider is not None and not callable(provider):
            raise OptionError(f"set_hover needs a function image_id -> (png_bytes, caption), or None; "
                              f"got {type(provider).__name__}.")
        self._hover = provider
        self.hover_images = provider is not None

    def _answer_hover(self, index: Any) -> None:
        # the browser asks for the point under the mouse; it ignores answers for a point no longer hovered
        if self._hover is None or isinstance(index, bool) or not isinstance(index, int):
            return
        if not 0 <= index < len(self._ids):
            return
        image_id = self._ids[index]
        try:
            image, caption = self._hover(image_id)
            image = bytes(image or b"")
        except Exception as error:  # a user's provider: whatever it raises, the view keeps working
            # the message as written (a KeyError's str() would quote it), its first line
            text = error.args[0] if len(error.args) == 1 and isinstance(error.args[0], str) else str(error)
            first = (text.strip().splitlines() or [""])[0]
            self.send({"type": "hover", "index": index, "id": image_id, "error": True,
                       "caption": f"{image_id}: {type(error).__name__}: {first}".rstrip(": ")})
            return
        reply = {"type": "hover", "index": index, "id": image_id, "caption": str(caption), "mime": _image_type(image)}
        self.send(reply, buffers=[image] if image else [])

    # -- overlays --------------------------------------------------------------------------------

    def set_overlay(self, name: str, x: Any, y: Any, *, color: Any = "#111111", size: Any = None,
                    labels: Any = None) -> None:
        """Draw marks above the points at ``x``, ``y`` (the points' data coordinates), or replace the
        overlay ``name``: ``color`` is one hex color or one a point, ``size`` one number a point
        (drawn larger where larger), ``labels`` one text a point (shown on hover). Overlays follow
        pan and zoom, get a legend entry, and are never selected.

        >>> view = ScatterView([0.0, 2.0], [0.0, 2.0], ["a", "b"])
        >>> view.set_overlay("sample", [1.0, 3.0], [1.0, 1.0], size=[0.2, 0.9]); view.overlays
        {'sample': 2}
        """
        if not isinstance(name, str) or not name.strip():
            raise OptionError(f"An overlay needs a name (a non-empty string) for its legend entry; got {name!r}.")
        if self._transform is None:
            raise OptionError(f"Cannot draw the overlay {name!r}: the scatter has no points to place it against.")
        xs, ys = _float_array(x, "x"), _float_array(y, "y")
        if len(xs) != len(ys):
            raise OptionError(f"The overlay {name!r} has {len(xs)} x and {len(ys)} y; give one x and one y a point.")
        bad = ~(np.isfinite(xs) & np.isfinite(ys))
        if bad.any():
            raise OptionError(f"The overlay {name!r} has {int(bad.sum())} points with a NaN or infinite x or y (the "
                              f"first at position {int(np.argmax(bad))}); drop them.")
        colors, codes = _overlay_colors(color, len(xs))
        sizes = self._encode_sizes(size, len(xs), f"the overlay {name!r}")
        entry = {"name": name, "n": len(xs), "xy": _apply_normalization(xs, ys, self._transform),
                 "colors": colors, "codes": codes, "sizes": sizes, "labels": _overlay_labels(labels, len(xs))}
        self._overlays.pop(name, None)  # a new version is drawn last, on top
        self._overlays[name] = entry
        self.overlay_data = list(self._overlays.values())

    def clear_overlay(self, name: str | None = None) -> None:
        """Remove the overlay ``name`` (None: every overlay).

        >>> view = ScatterView([0.0, 1.0], [0.0, 1.0], ["a", "b"])
        >>> view.set_overlay("x", [0.5], [0.5]); view.clear_overlay("x"); view.overlays
        {}
        """
        if name is None:
            self._overlays.clear()
        elif name in self._overlays:
            del self._overlays[name]
        else:
            names = list(self._overlays)
            raise OptionError(f"No overlay {name!r} on this scatter.{closest(name, names)} "
                              f"Overlays: {listing(names) if names else 'none'}.")
        self.overlay_data = list(self._overlays.values())

    @property
    def overlays(self) -> dict[str, int]:
        """The overlays drawn, name -> number of points (a copy: change them with set_overlay)."""
        return {name: entry["n"] for name, entry in self._overlays.items()}

    @property
    def hovered_id(self) -> str | None:
        """The image id under the mouse in the browser, or None."""
        return self._ids[self.hovered] if 0 <= self.hovered < len(self._ids) else None

    def __repr__(self) -> str:
        return f"ScatterView({len(self._ids)} points, {len(self.selected_indices)} selected)"
