"""The attribution viewer: the selected images with heat-map overlays of several Captum methods and
model versions side by side, an opacity slider, and a target chooser.

One row per image, one column per (model, method). The maps come from
:class:`odinlab.debug.attribution.Attributor` (cached in the store: asking again is a read) and
are computed on demand, a page of images at a time, one column per request: the browser asks for
a page (``{"kind": "page"}``: the images as PNGs), then for each column in turn (``{"kind":
"cells"}``: one batched ``Attributor.attribute`` call over the page's images, answered with one
RGBA PNG per image), so the kernel is never busy for more than one column of one page and runs
other cells in between. The heat map travels apart from the image: its colour is the colour map's,
its alpha the map's scaled magnitude (the weights of :func:`odinlab.draw.images.overlay`), and the
browser blends it over the image with the slider's opacity. Moving the slider costs no kernel
message, and the blend equals ``overlay(image, map, alpha=opacity)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import anywidget
import numpy as np
import traitlets

from odinlab.errors import NotMaterializedError, OdinError, OptionError
from odinlab.draw.images import heat_rgba
from odinlab.widgets.detail import _png
from odinlab.widgets.gallery import ThumbnailCache, _Callbacks

__all__ = ["AttributionView"]

TARGETS = ("prediction", "label")
NO_IMAGES = ("No images selected: select images in the explorer (a lasso, a confusion cell, a query) "
             "or call view.show_selection(image_ids).")


def _ids(values) -> list[str]:
    """Image ids given as a list, a Series, a frame with image_id or a Selection."""
    if hasattr(values, "ids"):
        return list(values.ids)
    if hasattr(values, "columns") and "image_id" in values.columns:
        values = values["image_id"]
    return [str(v) for v in values]


class AttributionView(anywidget.AnyWidget):
    """Heat-map overlays of ``methods`` for ``models`` on the selected images, side by side.

    ``models`` is one model reference or a list (``"cnn@1"``, a name, a record, a registered
    module); ``methods`` are names from :func:`odinlab.debug.attribution.methods`, with
    ``method_options`` ({method: Attributor keyword arguments}, e.g. ``{"integrated_gradients":
    {"n_steps": 16}}``). ``target`` is ``"prediction"``, ``"label"`` or a class (name or index).
    ``images`` are shown until a selection arrives (``show_selection``; None: nothing until then).
    Each cell is ``size`` pixels; ``page_size`` images make a page. ``opacity`` is the slider's
    first value; ``sign``, ``cmap`` and ``percentile`` are :func:`odinlab.draw.images.overlay`'s.

    Problems are shown in place: an unknown model or method, a model without a module in this
    session (with the ``store.load_weights`` call that fixes it) or a bad target mark their column;
    the other columns still draw. Clicking an image selects it (``selected_ids``, ``on_select``).

    >>> view = AttributionView(store, net, ["digits-0000", "digits-0001"], methods=["saliency"])
    >>> page, pngs = view.page(0)                 # what the browser asks first: the images
    >>> cells, layers = view.cells(0, 0)          # then each column: the heat maps of page 0
    >>> [r["image_id"] for r in page["rows"]], cells["error"], len(layers), layers[0][:4]
    (['digits-0000', 'digits-0001'], '', 2, b'\\x89PNG')
    """

    _esm = Path(__file__).with_name("attribution_view.js")
    _css = Path(__file__).with_name("attribution_view.css")

    message = traitlets.Unicode("").tag(sync=True)     # shown instead of the grid when not empty
    total = traitlets.Int(0).tag(sync=True)            # images in the view (every page)
    page_size = traitlets.Int(8).tag(sync=True)
    page_number = traitlets.Int(0).tag(sync=True)      # the page shown; the browser's pager sets it
    size = traitlets.Int(96).tag(sync=True)            # pixels of a cell's longer side
    opacity = traitlets.Float(0.6).tag(sync=True)      # the slider's value from Python (the browser never writes it)
    version = traitlets.Int(0).tag(sync=True)          # bumped when the images or columns change
    models = traitlets.List(traitlets.Unicode()).tag(sync=True)   # chosen, as model ids
    methods = traitlets.List(traitlets.Unicode()).tag(sync=True)  # chosen
    target = traitlets.Unicode("prediction").tag(sync=True)
    model_choices = traitlets.List(traitlets.Unicode()).tag(sync=True)
    method_choices = traitlets.List(traitlets.Unicode()).tag(sync=True)
    target_choices = traitlets.List(traitlets.Unicode()).tag(sync=True)
    columns = traitlets.List(traitlets.Dict()).tag(sync=True)    # [{model_id, method, error}], model by model
    chosen = traitlets.Int(-1).tag(sync=True)          # the clicked image's index (-1: none)

    def __init__(self, store, models, images=None, *, methods=("saliency",), target="prediction",
                 page_size: int = 8, size: int = 96, opacity: float = 0.6, method_options: dict | None = None,
                 sign: str = "all", cmap=None, percentile: float = 99.0,
                 thumbnails: ThumbnailCache | None = None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(page_size, int) or isinstance(page_size, bool) or page_size < 1:
            raise OptionError(f"page_size must be a positive number of images, not {page_size!r}.")
        if not isinstance(size, int) or isinstance(size, bool) or size < 8:
            raise OptionError(f"size must be at least 8 pixels, not {size!r}.")
        if not 0 <= opacity <= 1:
            raise OptionError(f"opacity must lie in [0, 1]; got {opacity!r}.")
        heat_rgba(np.zeros((1, 1)), cmap, sign, percentile)  # a bad sign or colour map: refused now
        self.store = store
        self._style = {"cmap": cmap, "sign": sign, "percentile": percentile}
        self.method_options = dict(method_options or {})
        self._thumbs = thumbnails if thumbnails is not None and thumbnails.size == size else \
            ThumbnailCache(store, size)
        self._attributors: dict[tuple[str, str], object] = {}
        self._select_callbacks = _Callbacks()
        self._quiet = False  # True while Python shows a selection or rebuilds: no on_select
        self._model_errors: dict[str, str] = {}  # a model given that the store does not know: why
        self._images_error = ""  # images given that the store cannot select: why (shown as the message)
        self._default = self._select_given(images)
        self._selection = self._default
        models = list(models) if isinstance(models, list | tuple) else [models]
        methods = [methods] if isinstance(methods, str) else list(methods)
        given = [self._resolve_model(m) for m in models]
        from odinlab.debug.attribution import methods as known_methods

        with self.hold_sync():
            self.page_size, self.size, self.opacity = page_size, size, float(opacity)
            self.model_choices = list(dict.fromkeys(given + store.models["model_id"].to_list()))
            self.method_choices = known_methods()
            self.target_choices = [*TARGETS, *store.classes]
            self.models, self.methods = given, [str(m) for m in methods]
            self.target = self._target_text(target)
            self._rebuild()
        self.observe(self._on_choice, names=["models", "methods", "target"])
        self.observe(self._on_chosen, names=["chosen"])
        self.on_msg(self._on_message)

    # -- choices and columns ------------------------------------------------------------------------

    def _select_given(self, images):
        if images is None:
            return None
        try:
            return self.store.select(images)
        except OdinError as problem:  # a bad split or query: the view says so instead of showing nothing
            self._images_error = f"{type(problem).__name__}: {problem}"
            return None

    def _resolve_model(self, model) -> str:
        try:
            return self.store.model(model).model_id
        except OdinError as problem:  # shown in its column, named by what the user gave
            text = model if isinstance(model, str) else f"<unregistered {type(model).__name__}>"
            self._model_errors[text] = f"{type(problem).__name__}: {problem}"
            return text

    def _target_text(self, target) -> str:
        classes = self.store.classes
        if isinstance(target, int | np.integer) and not isinstance(target, bool) and 0 <= target < len(classes):
            return classes[int(target)]
        return str(target)  # a bad one is shown in every column (TargetError)

    def attributor(self, model: str, method: str):
        """The :class:`~odinlab.debug.attribution.Attributor` of a column (built once; its errors raised).

        >>> view = AttributionView(store, "cnn@1", methods=["saliency"])
        >>> view.attributor("cnn@1", "saliency")
        <Attributor saliency of cnn@1>
        """
        from odinlab.debug.attribution import Attributor

        key = (model, method)
        if key not in self._attributors:  # failures are not kept: loading the weights later fixes them
            self._attributors[key] = Attributor(self.store, model, method=method, **self.method_options.get(method, {}))
        return self._attributors[key]

    def _column(self, model: str, method: str) -> dict:
        error = ""
        try:
            self.attributor(model, method).cache_key(self.target)  # checks the target for this model
        except Exception as problem:  # noqa: BLE001 - shown in its column: the other columns still draw
            error = self._model_errors.get(model) or f"{type(problem).__name__}: {problem}"
            if isinstance(problem, NotMaterializedError):
                error += " Then view.refresh() draws this column."
        return {"model_id": model, "method": method, "error": error}

    def _rebuild(self) -> None:
        """Columns from the chosen models and methods, the images' count, a new version, page 0."""
        self._quiet = True
        try:
            with self.hold_sync():
                self.columns = [self._column(m, k) for m in self.models for k in self.methods]
                ids = [] if self._selection is None else self._selection.ids
                self.total, self.page_number, self.chosen = len(ids), 0, -1
                if not ids:
                    self.message = self._images_error or NO_IMAGES
                elif not self.columns:
                    self.message = "Choose at least one model and one method."
                else:
                    self.message = ""
                self.version += 1
        finally:
            self._quiet = False

    def refresh(self) -> None:
        """Build the columns again (after ``store.load_weights(...)`` fixed a model without a module)."""
        self._attributors.clear()
        self._rebuild()

    def _on_choice(self, change) -> None:
        self._rebuild()

    # -- what the browser asks for ------------------------------------------------------------------

    def _page_selection(self, k: int):
        start = int(k) * self.page_size
        if self._selection is None or not 0 <= start < self.total:
            return start, None
        return start, self._selection[start : start + self.page_size]

    def page(self, k: int) -> tuple[dict, list[bytes]]:
        """The browser's first answer for page ``k``: its rows (image id, label) and image PNGs."""
        start, chosen = self._page_selection(k)
        rows = [] if chosen is None else [
            {"index": start + i, "image_id": r["image_id"], "label_name": r.get("label_name")}
            for i, r in enumerate(chosen.frame.iter_rows(named=True))]
        content = {"kind": "page", "version": self.version, "page": int(k), "start": start, "total": self.total,
                   "rows": rows}
        return content, [] if chosen is None else self._thumbs(chosen)

    def cells(self, k: int, column: int) -> tuple[dict, list[bytes]]:
        """Column ``column``'s heat maps of page ``k`` (one batched, cached ``attribute`` call): the
        reply's ``error`` ("" when fine), ``predicted`` (the model's class name for each image) and
        one RGBA PNG per image."""
        content = {"kind": "cells", "version": self.version, "page": int(k), "column": int(column), "error": "",
                   "predicted": []}
        if not 0 <= column < len(self.columns):
            content["error"] = f"No column {column}: there are {len(self.columns)}."
            return content, []
        spec = self.columns[column]
        _, chosen = self._page_selection(k)
        if spec["error"] or chosen is None:
            content["error"] = spec["error"]
            return content, []
        try:
            attributor = self.attributor(spec["model_id"], spec["method"])
            maps = attributor.attribute(chosen, target=self.target, progress=False)
            names = attributor.predictions(chosen)["predicted_name"].to_list()
        except Exception as problem:  # noqa: BLE001 - a label missing, a Captum failure: shown in the column
            content["error"] = f"{type(problem).__name__}: {problem}"
            return content, []
        content["predicted"] = names
        return content, [_png(heat_rgba(m, **self._style), self.size) for m in maps.values]

    def _on_message(self, widget, content, buffers) -> None:
        if not isinstance(content, dict):
            return
        kind = content.get("kind")
        if kind == "click" and isinstance(content.get("index"), int):
            self.click(content["index"])
        if kind not in ("page", "cells") or not isinstance(content.get("page"), int):
            return
        if content.get("version") != self.version:  # asked before a change: the browser asks again
            self.send({"kind": kind, "version": self.version, "stale": True})
            return
        began = time.perf_counter()
        if kind == "page":
            reply, pngs = self.page(content["page"])
        else:
            reply, pngs = self.cells(content["page"], int(content.get("column", -1)))
        reply["ms"] = round(1e3 * (time.perf_counter() - began), 1)  # how long the kernel was busy
        self.send(reply, buffers=pngs)

    # -- selection ----------------------------------------------------------------------------------

    def click(self, index: int) -> None:
        """What a click on image ``index`` does: select it (or clear, when it is the one selected)."""
        if 0 <= index < self.total:
            self.chosen = -1 if self.chosen == index else index

    def _on_chosen(self, change) -> None:
        if not self._quiet:
            self._select_callbacks(self.selected_ids)

    @property
    def ids(self) -> list[str]:
        """The images shown, in order (every page)."""
        return [] if self._selection is None else self._selection.ids

    @property
    def selected_ids(self) -> list[str]:
        """The clicked image ([] when none)."""
        return [self.ids[self.chosen]] if 0 <= self.chosen < self.total else []

    def show_selection(self, ids: list[str] | None) -> None:
        """Show ``ids`` (None: the images given when built), from the first page; no callbacks."""
        selection = self._default if ids is None else self.store.select(list(dict.fromkeys(_ids(ids))))
        if selection is not None and self._selection is not None and selection.ids == self._selection.ids:
            self._quiet = True  # the same images again: nothing to redraw, the click is forgotten
            try:
                self.chosen = -1
            finally:
                self._quiet = False
            return
        self._selection, self._images_error = selection, ""  # unknown ids were refused by store.select
        self._rebuild()

    def on_select(self, callback: Callable[[list[str]], None]) -> Callable:
        """Call ``callback(ids)`` when the user clicks an image in the browser ([] when cleared)."""
        return self._select_callbacks.add(callback)

    def __repr__(self) -> str:
        return (f"<AttributionView {', '.join(self.models)} × {', '.join(self.methods)} (target {self.target}): "
                f"{self.total} images>")
