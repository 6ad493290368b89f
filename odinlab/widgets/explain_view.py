"""Explain this selection: one button answers "what do these images share that the others don't?".

The answer is :func:`odinlab.debug.explain.explain` on the linked selection against the view's
images (units, over-represented metadata, mean attribution maps and the share inside a region,
accuracy, pairs and suspected label errors), shown as the result's own HTML. A region
(top, left, height, width) typed in the view measures the share of attribution in it; left
empty, the hotspot is found.
"""

from __future__ import annotations

from pathlib import Path

import anywidget
import traitlets

from odinlab.errors import OdinError
from odinlab.widgets.gallery import _Callbacks

__all__ = ["ExplainView"]


class ExplainView(anywidget.AnyWidget):
    """Explain the linked selection against ``images`` for ``model``, on a button press.

    Follows the views' contract: ``show_selection(ids)`` sets what is explained next (the
    explorer's selection), ``ids``/``selected_ids`` are that selection, ``on_select`` never fires
    (the view selects nothing). ``explain_now(region=None)`` is what the button does;
    ``explanation`` the last :class:`~odinlab.debug.explain.Explanation`.

    >>> _ = store.materialize(net, ["head.relu"], "val", progress=False)
    >>> view = ExplainView(store, "cnn@1", "val")
    >>> view.show_selection(store.select("val").where(pl.col("label") == 3).ids)
    >>> view.explain_now().summary["n"][0], "<table" in view.html
    (27, True)
    """

    _esm = Path(__file__).with_name("explain_view.js")
    _css = Path(__file__).with_name("explain_view.css")

    html = traitlets.Unicode("").tag(sync=True)
    status = traitlets.Unicode("").tag(sync=True)
    message = traitlets.Unicode("").tag(sync=True)
    count = traitlets.Int(0).tag(sync=True)

    def __init__(self, store, model, images=None, *, layer: str | None = None, method: str = "saliency",
                 k: int = 10, **kwargs):
        super().__init__(**kwargs)
        self.store, self.model, self.images = store, model, images
        self.layer, self.method, self.k = layer, method, k
        self.explanation = None
        self._selection: list[str] = []
        self._callbacks = _Callbacks()
        self.on_msg(self._on_message)
        self.status = "Select images (a lasso, a confusion cell, a query), then press Explain."

    @property
    def ids(self) -> list[str]:
        return list(self._selection)

    @property
    def selected_ids(self) -> list[str]:
        return list(self._selection)

    def on_select(self, callback):
        return self._callbacks.add(callback)

    def show_selection(self, ids) -> None:
        self._selection = list(ids or [])
        self.count = len(self._selection)
        self.status = f"{self.count} images selected: press Explain." if self.count else \
            "Select images (a lasso, a confusion cell, a query), then press Explain."

    def explain_now(self, region=None):
        """Explain the current selection (``region``: a box (top, left, height, width) or None)."""
        from odinlab.debug.explain import explain

        self.message, self.status = "", f"explaining {self.count} images…"
        try:
            self.explanation = explain(self.store, self.model, self._selection, self.images, layer=self.layer,
                                       k=self.k, method=self.method, region=region)
        except (OdinError, ValueError) as error:  # a user's mistake or an empty selection: said in place
            self.message, self.status = str(error), ""
            raise
        self.html = self.explanation._repr_html_()
        self.status = repr(self.explanation).strip("<>")
        return self.explanation

    def _on_message(self, widget, content, buffers) -> None:
        if isinstance(content, dict) and content.get("kind") == "explain":
            region = content.get("region")
            try:
                self.explain_now(tuple(region) if region else None)
            except Exception as error:  # noqa: BLE001 - the message goes to the widget: a button never fails silently
                self.message = self.message or f"{type(error).__name__}: {error}"
