"""The confusion matrix: counts and rates from stored predictions; clicks select images.

The browser sends only what was clicked (a cell's coordinates, or a row or column header);
the kernel resolves it to image ids with ``odinlab.debug.error_analysis.confusion_matrix``.
The view's items are the counted images, cell by cell in row-major order, so a cell is a range
of them (``offsets``) and a selection from elsewhere (``selection_mask``) shows as the number
of selected images in each cell.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anywidget
import numpy as np
import polars as pl
import traitlets

from odinlab.debug import error_analysis as ea
from odinlab.errors import NotMaterializedError
from odinlab.widgets.gallery import (
    _Callbacks,
    describe_images,
    materialize_hint,
    pack_mask,
    unpack_mask,
)

__all__ = ["ConfusionView"]

RATES = ("row", "column", "all")


class ConfusionView(anywidget.AnyWidget):
    """A clickable confusion matrix of ``model`` over ``images`` (rows: label; columns: predicted).

    Each cell shows its count and its rate (``rates="row"``: share of the true class, i.e.
    recall on the diagonal; ``"column"``: share of the predicted class; ``"all"``: of every
    image). Clicking a cell selects its images, clicking a row header the whole true class,
    a column header the whole predicted class; clicking the same again clears the selection.

    >>> _ = store.materialize(net, images="test", progress=False)
    >>> view = ConfusionView(store, "cnn@1", "test")
    >>> view.click_row(3)          # what a click on the row header of true class 3 does
    >>> sorted(view.selected_ids) == sorted(store.select("test").where(pl.col("label") == 3).ids)
    True
    """

    _esm = Path(__file__).with_name("confusion.js")
    _css = Path(__file__).with_name("confusion.css")

    message = traitlets.Unicode("").tag(sync=True)
    classes = traitlets.List(traitlets.Unicode()).tag(sync=True)
    offsets = traitlets.Bytes(b"").tag(sync=True)          # int64 little-endian, n*n + 1 cell boundaries
    selection_mask = traitlets.Bytes(b"").tag(sync=True)   # over ``ids``, little bit order
    selected = traitlets.Dict().tag(sync=True)             # what was clicked: {"kind", "label", "predicted"}
    rates = traitlets.Unicode("row").tag(sync=True)
    model_name = traitlets.Unicode("").tag(sync=True)     # the model version shown ("cnn@1")

    def __init__(self, store, model, images=None, *, rates: str = "row", **kwargs):
        super().__init__(**kwargs)
        if rates not in RATES:
            raise ValueError(f"Unknown rates {rates!r}; use one of {', '.join(RATES)}.")
        self.store = store
        self.record = store.model(model)
        self.model_name = self.record.model_id
        self.rates = rates
        self._select_callbacks = _Callbacks()
        self._quiet = False
        self._ids: list[str] = []
        self._bounds = np.zeros(1, np.int64)
        self.cells = self._load(images)
        self.observe(self._on_mask, names=["selection_mask"])
        self.on_msg(self._on_message)

    def _load(self, images) -> pl.DataFrame | None:
        classes = list(self.record.classes)
        self.classes = classes
        selection = self.store.select(images)
        if len(selection) == 0:
            self.message = "no images selected"
            return None
        try:
            cells = ea.confusion_matrix(self.store, self.record, selection)
        except NotMaterializedError as error:
            self.message = (f"{error}\nStore the predictions first: "
                            f"{materialize_hint(self.record.model_id, describe_images(images))}")
            return None
        if int(cells["count"].sum()) == 0:
            self.message = "none of the selected images has a label: a confusion matrix needs labels"
            return None
        counts = cells["count"].to_numpy().astype(np.int64)
        self._bounds = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._ids = [i for ids in cells["image_ids"].to_list() for i in ids]
        self.offsets = self._bounds.astype("<i8").tobytes()
        return cells

    # -- clicks -----------------------------------------------------------------------------------

    @property
    def n(self) -> int:
        return len(self.classes)

    def _positions(self, kind: str, label: int | None, predicted: int | None) -> np.ndarray:
        n = self.n
        if kind == "cell":
            cells = [label * n + predicted]
        elif kind == "row":
            cells = [label * n + j for j in range(n)]
        elif kind == "column":
            cells = [i * n + predicted for i in range(n)]
        else:
            raise ValueError(f"Unknown click kind {kind!r}; use 'cell', 'row' or 'column'.")
        parts = [np.arange(self._bounds[c], self._bounds[c + 1]) for c in cells]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def _click(self, kind: str, label: int | None = None, predicted: int | None = None) -> None:
        if self.cells is None:
            return
        for name, value in (("label", label), ("predicted", predicted)):
            if value is not None and not 0 <= value < self.n:
                raise ValueError(f"{name} {value} is not a class index (0..{self.n - 1}).")
        clicked = {"kind": kind, "label": label, "predicted": predicted}
        if self.selected == clicked:  # the same click again clears
            self.selected = {}
            self.selection_mask = b""
            return
        self.selected = clicked
        positions = self._positions(kind, label, predicted)
        self.selection_mask = pack_mask(positions, len(self._ids))

    def click_cell(self, label: int, predicted: int) -> None:
        """Select the images of true class ``label`` predicted as ``predicted`` (as a click does)."""
        self._click("cell", int(label), int(predicted))

    def click_row(self, label: int) -> None:
        """Select every image of true class ``label`` (a click on its row header)."""
        self._click("row", int(label), None)

    def click_column(self, predicted: int) -> None:
        """Select every image predicted as ``predicted`` (a click on its column header)."""
        self._click("column", None, int(predicted))

    def _on_message(self, widget, content, buffers) -> None:
        if not isinstance(content, dict) or content.get("kind") != "click":
            return
        target = content.get("target")
        try:
            if target == "cell":
                self.click_cell(content["label"], content["predicted"])
            elif target == "row":
                self.click_row(content["label"])
            elif target == "column":
                self.click_column(content["predicted"])
            elif target == "clear":
                self.selected = {}
                self.selection_mask = b""
        except (KeyError, TypeError, ValueError):
            pass  # a malformed message from the browser changes nothing

    def _on_mask(self, change) -> None:
        if not self._quiet:
            self._select_callbacks(self.selected_ids)

    # -- the contract -------------------------------------------------------------------------------

    @property
    def ids(self) -> list[str]:
        """Every counted image, cell by cell (row-major), each cell in selection order."""
        return list(self._ids)

    @property
    def selected_ids(self) -> list[str]:
        return [self._ids[i] for i in unpack_mask(self.selection_mask, len(self._ids))]

    def show_selection(self, ids: list[str] | None) -> None:
        """Highlight ``ids`` (each cell shows how many of them it holds); None clears. No callbacks."""
        self._quiet = True
        try:
            self.selected = {}
            if not ids:
                self.selection_mask = b""
                return
            wanted = set(ids)
            self.selection_mask = pack_mask([i for i, image_id in enumerate(self._ids) if image_id in wanted],
                                            len(self._ids))
        finally:
            self._quiet = False

    def on_select(self, callback: Callable[[list[str]], None]) -> Callable:
        """Call ``callback(ids)`` when the user clicks a cell or a header in the browser."""
        return self._select_callbacks.add(callback)

    @property
    def matrix(self) -> np.ndarray:
        """The (n, n) counts (rows: label, columns: predicted)."""
        return np.diff(self._bounds).reshape(self.n, self.n) if self.cells is not None else np.zeros((0, 0), int)

    def __repr__(self) -> str:
        return f"<ConfusionView {self.record.model_id}: {len(self._ids)} images, {self.n} classes>"
