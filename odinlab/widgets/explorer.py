"""The explorer: the embedding scatter, gallery, confusion matrix, image detail, error clusters and
boundary pairs, linked; under them, in tabs, the debugging views (explain the selection, attributions,
units, label review, version comparison: :mod:`odinlab.widgets.debug_views`).

``explore(store, "cnn@1", layer="head.fc1", images="test", color="correct")`` returns an
:class:`Explorer`. A selection made in any view filters or highlights the others (through a
:class:`~odinlab.widgets.links.SelectionHub`); ``explorer.selection`` gives the selected image ids,
``explorer.selected()`` the same images as a polars frame with prediction columns and metadata,
``explorer.select(...)`` sets the selection from Python, and ``explorer.observe(callback)`` runs
code on every new selection. A click on a thumbnail opens the image in the detail view.

The decision boundary is drawn on the scatter on request: ``explorer.show_boundary_sample(size)``
(the sample's points sized by inclusion probability) and ``explorer.show_between_classes(a, b)``
(points between two classes' regions, in their predicted class's color);
``explorer.estimate_top_units(label)`` shows a sampled estimate beside the exact answer.

Bad input never gives a blank widget: the explorer shows a message that names the problem and
the fix (and keeps it in ``explorer.message``):

>>> explore(store, "cnn@1", layer="head.fc3").message
"Unknown layer 'head.fc3' of cnn@1. Did you mean: ..."
>>> print(explore(store, "cnn@1", images="test").message)
cnn@1 has no stored predictions for the 270 images 'test'. Store them first:
store.materialize('cnn@1', ['head.fc1'], images='test')
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import polars as pl

from odinlab.errors import NotMaterializedError, OdinError, OptionError, SelectionError
from odinlab.widgets.clusters import ClusterView
from odinlab.widgets.confusion import ConfusionView
from odinlab.widgets.boundary import BoundaryViews
from odinlab.widgets.debug_views import DEBUG_FACTORIES, DEBUG_VIEWS
from odinlab.widgets.detail import DetailView
from odinlab.widgets.gallery import GalleryView, ThumbnailCache, predicted_names
from odinlab.widgets.links import SelectionHub
from odinlab.widgets.pairs import PairsView
from odinlab.widgets.scatter import ScatterView

# The layout's order: two columns, so scatter | gallery, confusion | detail, clusters | pairs.
VIEWS = ("scatter", "gallery", "confusion", "detail", "clusters", "pairs")
CARD_THUMB = 64  # pixels of the thumbnails on the clusters' and pairs' cards
# Columns the scatter can be colored by besides the metadata columns.
COLOR_COLUMNS = ("label", "predicted", "correct", "confidence", "margin", "loss")
PREDICTION_COLUMNS = ("predicted", "confidence", "margin", "loss", "correct", "probabilities")

CORRECT_COLOR, MISTAKE_COLOR = "#9db4cc", "#d62728"

ViewFactory = Callable[["Explorer"], Any]


# -- the default views (one module each, beside this one) -------------------------------------------

def scatter_view(explorer: Explorer):
    """The embedding scatter of the explorer's frame, colored by ``explorer.color``."""
    return ScatterView.from_frame(explorer.frame, color=explorer.color, legend=explorer.legend(explorer.color))


def gallery_view(explorer: Explorer):
    """Thumbnails of the selection (every image while nothing is selected), hardest first."""
    return GalleryView(explorer.store, explorer.model_id, explorer.images, sort_by="loss",
                       thumbnails=explorer.thumbnails(96))


def confusion_view(explorer: Explorer):
    """The clickable confusion matrix of the explorer's images."""
    return ConfusionView(explorer.store, explorer.model_id, explorer.images)


def detail_view(explorer: Explorer):
    """One image large, with its probabilities and metadata (opened by a gallery click); its
    "neighbours" button searches the explorer's embedding."""
    return DetailView(explorer.store, [explorer.model_id, *explorer.compare], embedding=explorer.embedding)


def clusters_view(explorer: Explorer):
    """The clusters of the model's mistakes in the explorer's layer; a click selects a cluster."""
    return ClusterView(explorer.store, explorer.record, explorer.layer, explorer.images,
                       thumb_size=CARD_THUMB, thumbnails=explorer.thumbnails(CARD_THUMB))


def pairs_view(explorer: Explorer):
    """The closest pairs across a decision boundary in the explorer's embedding; a click selects both."""
    return PairsView(explorer.store, explorer.record, explorer.embedding, n=20,
                     thumb_size=CARD_THUMB, thumbnails=explorer.thumbnails(CARD_THUMB))


DEFAULT_VIEWS: dict[str, ViewFactory] = {"scatter": scatter_view, "gallery": gallery_view,
                                         "confusion": confusion_view, "detail": detail_view,
                                         "clusters": clusters_view, "pairs": pairs_view, **DEBUG_FACTORIES}


# -- helpers ------------------------------------------------------------------------------------------

def images_argument(images) -> str:
    """``images`` as a user would write it back in a call."""
    if images is None or isinstance(images, str):
        return repr(images)
    if isinstance(images, list | tuple) and len(images) <= 5:
        return repr(list(images))
    return "images"  # a long list, an expression, a Selection: the name the user gave it


def materialize_call(model_id: str, layer: str, images) -> str:
    """The exact call that stores what the explorer reads."""
    return f"store.materialize({model_id!r}, [{layer!r}], images={images_argument(images)})"


def message_widget(text: str, kind: str = "error"):
    """A clear message in place of a view (never a blank widget)."""
    import ipywidgets as widgets

    lines = "<br>".join(html.escape(line) for line in str(text).splitlines())
    box = widgets.HTML(
        f'<div class="odinlab-explorer-message" data-odinlab-message="{html.escape(kind)}" role="alert" '
        f'style="padding:12px;border:1px solid #d9a400;background:#fff8e1;border-radius:4px;'
        f'font-family:var(--jp-ui-font-family, sans-serif);white-space:normal">{lines}</div>')
    box.add_class("odinlab-explorer-message-box")
    return box


def _first_occurrences(selection):
    """The selection with each image once, in the order first chosen."""
    ids = selection.ids
    seen, keep = set(), np.zeros(len(ids), bool)
    for k, image_id in enumerate(ids):
        if image_id not in seen:
            seen.add(image_id)
            keep[k] = True
    return selection if keep.all() else selection[keep]


class _Problem(Exception):
    """Stops building; the explorer shows ``text`` instead."""

    def __init__(self, text: str, error: Exception):
        super().__init__(text)
        self.text, self.error = text, error


# -- the explorer -------------------------------------------------------------------------------------

class Explorer(BoundaryViews):
    """Linked views of one model's predictions on one image set; see :func:`explore`.

    ``views`` replaces the default views: a mapping from a name (``scatter``, ``gallery``,
    ``confusion``, ``detail``, ``clusters``, ``pairs``, or a new one) to a factory
    ``f(explorer) -> view`` (a view follows the contract of ``odinlab/widgets``: ``ids``,
    ``selected_ids``, ``show_selection``, ``on_select``); None drops a view. ``embedding`` holds keyword arguments of
    :class:`odinlab.sampling.Embedding` (``reducer="pca"``, ``seed=1``...). ``compare`` names other models
    (``["cnn@1"]``) whose top-k probabilities the detail shows beside the explored model's.

    Attributes: ``store``, ``record`` and ``model_id``, ``layer``, ``color``, ``images`` (the
    :class:`~odinlab.Selection` explored, each image once), ``frame`` (one row per image: image_id,
    x, y, prediction columns, label and metadata), ``views`` ({name: view}), ``hub`` (the
    :class:`~odinlab.widgets.links.SelectionHub`), ``widget`` (the ipywidgets layout), and
    ``message``/``error`` when it could not be built (None otherwise), ``boundary_sample`` (the
    last Sample drawn by :meth:`show_boundary_sample`, None before).
    """

    def __init__(self, store, model, layer: str = "head.fc1", images: Any = "test", color: str = "correct", *,
                 views: Mapping[str, ViewFactory | None] | None = None, embedding: Mapping | None = None,
                 compare: Any = (), progress: bool = True):
        self.store, self.layer, self.color = store, layer, color
        self.compare = [compare] if isinstance(compare, str) or not isinstance(compare, list | tuple) else \
            list(compare)
        self.images_argument = images
        self.record = self.model_id = None
        self.images = self.frame = self.hub = self.embedding = None
        self.views: dict[str, Any] = {}
        self.view_errors: dict[str, str] = {}
        self.message: str | None = None
        self.error: Exception | None = None
        self.note: str | None = None  # shown above the views (e.g. some predictions missing)
        self._thumbnails: dict[int, ThumbnailCache] = {}
        self.boundary_sample = None
        self._rows: dict[str, int] | None = None
        factories = dict(DEFAULT_VIEWS)
        factories.update(views or {})
        try:
            self._build(model, images, {k: f for k, f in factories.items() if f is not None},
                        dict(embedding or {}), progress)
        except _Problem as problem:
            self.message, self.error = problem.text, problem.error
        self.widget = self._layout()

    # -- building -----------------------------------------------------------------------------

    def _build(self, model, images, factories: dict[str, ViewFactory], embedding: dict, progress: bool) -> None:
        store = self.store
        try:
            self.record = store.model(model)
        except OdinError as error:
            raise _Problem(str(error), error) from error
        self.model_id = self.record.model_id
        try:
            self.compare = [m for m in (store.model(c).model_id for c in self.compare) if m != self.model_id]
            selection = store.select(images)
        except OdinError as error:
            raise _Problem(str(error), error) from error
        if len(selection) == 0:
            error = SelectionError(
                f"The image selection images={images_argument(images)} is empty: there is nothing to explore. "
                f"Splits in the store: {', '.join(sorted(store.images['split'].drop_nulls().unique().to_list()))}.")
            raise _Problem(str(error), error)
        self.images = _first_occurrences(selection)
        try:
            self.layer = store.check_layers(self.record, [self.layer])[0]
        except OdinError as error:
            raise _Problem(str(error), error) from error

        preds = store.predictions(self.record, self.images)
        fix = materialize_call(self.model_id, self.layer, images)
        if preds.height == 0:
            error = NotMaterializedError(
                f"{self.model_id} has no stored predictions for the {len(self.images)} images "
                f"{self.images.description or ''}. Store them first:\n{fix}".replace("  ", " "))
            raise _Problem(str(error), error)
        if preds.height < len(self.images):
            self.note = (f"{len(self.images) - preds.height} of the {len(self.images)} images have no stored "
                         f"predictions of {self.model_id}; {fix} stores them.")

        from odinlab.sampling import Embedding

        try:
            self.embedding = Embedding(store, self.record, self.layer, progress=progress, **embedding).fit(self.images)
        except NotMaterializedError as error:
            raise _Problem(f"{error}\nStore the layer's activations first:\n{fix}", error) from error
        except OdinError as error:
            raise _Problem(str(error), error) from error
        self.frame = self._frame(preds)
        if self.color not in self.frame.columns or self.color in ("image_id", "x", "y", "probabilities"):
            choices = [*COLOR_COLUMNS, *(c for c in self.images.frame.columns
                                         if c not in ("image_id", "label", "label_name", *COLOR_COLUMNS))]
            error = OptionError(f"Cannot color by {self.color!r}: not a column of the explored images. "
                                f"Color by one of: {', '.join(choices)}.")
            raise _Problem(str(error), error)

        self.hub = SelectionHub(store, self.images, model=self.record, frame=self.frame)
        for name, factory in factories.items():
            try:
                view = factory(self)
            except OdinError as error:  # one view's bad input: its message in its place
                self.view_errors[name] = str(error)
                continue
            self.views[name] = view
        self._link()

    def _frame(self, preds: pl.DataFrame) -> pl.DataFrame:
        """One row per explored image: image_id, x, y, prediction columns, label, metadata."""
        coords = self.embedding.frame().select("image_id", "x", "y")
        prediction = preds.select("image_id", *PREDICTION_COLUMNS).unique("image_id", maintain_order=True)
        prediction = prediction.with_columns(predicted_name=predicted_names(self.record.classes))
        base = self.images.frame
        return (base.select("image_id").join(coords, on="image_id", how="left", maintain_order="left")
                .join(prediction, on="image_id", how="left", maintain_order="left")
                .join(base, on="image_id", how="left", maintain_order="left"))

    def legend(self, column: str):
        """Legend names of a color column: class names for label and predicted, words for correct."""
        if column in ("label", "predicted"):
            return list(self.record.classes)
        if column == "correct":  # mistakes in red, what the eye should find first
            return {True: ("correct", CORRECT_COLOR), False: ("mistake", MISTAKE_COLOR)}
        return None

    def _link(self) -> None:
        for name, view in self.views.items():
            if name == "detail":  # it shows clicked images, not the selection; opening a neighbour selects it
                if callable(getattr(view, "on_select", None)):
                    self.hub.add(view, receive=False)
                continue
            if callable(getattr(view, "on_select", None)) and callable(getattr(view, "show_selection", None)):
                self.hub.add(view)
        gallery = self.views.get("gallery")
        if gallery is not None and callable(getattr(gallery, "on_click", None)):
            gallery.on_click(self.open)
        scatter = self.views.get("scatter")
        if scatter is not None and callable(getattr(scatter, "set_hover", None)):
            scatter.set_hover(self.hover)

    def thumbnails(self, size: int) -> ThumbnailCache:
        """The explorer's cache of ``size``-pixel thumbnails, shared by its views (rendered once)."""
        if size not in self._thumbnails:
            self._thumbnails[size] = ThumbnailCache(self.store, size)
        return self._thumbnails[size]

    def hover(self, image_id: str) -> tuple[bytes, str]:
        """The scatter's hover: the image's thumbnail and "label 3 · predicted 5 (0.82)"."""
        if self._rows is None:
            self._rows = {image_id: i for i, image_id in enumerate(self.frame["image_id"].to_list())}
        png = self.thumbnails(96)([image_id])[0]
        if image_id not in self._rows:
            return png, str(image_id)
        row = self.frame.row(self._rows[image_id], named=True)
        predicted = "no prediction" if row.get("predicted_name") is None else \
            f"predicted {row['predicted_name']} ({row['confidence']:.2f})"
        return png, f"label {row.get('label_name') or '?'} · {predicted}"

    # -- the API ------------------------------------------------------------------------------

    @property
    def selection(self) -> list[str]:
        """The selected image ids, in order ([] when nothing is selected)."""
        return [] if self.hub is None else self.hub.ids

    def selected(self) -> pl.DataFrame:
        """The selected images as a frame: image_id, x, y, predicted, predicted_name, confidence,
        margin, loss, correct, probabilities, split, label, label_name and metadata columns
        (no rows when nothing is selected)."""
        if self.frame is None:
            return pl.DataFrame(schema={"image_id": pl.String})
        wanted = pl.DataFrame({"image_id": self.selection}, schema={"image_id": pl.String})
        return wanted.join(self.frame, on="image_id", how="left", maintain_order="left")

    def select(self, images=None):
        """Select ``images`` everywhere: ids, a polars expression (over :attr:`frame`, so
        ``pl.col("loss") > 2`` works), SQL WHERE text (``"label = 3 AND NOT correct"``), a full
        SQL query, a Selection, or None to clear. Restricted to the explored images. Returns the
        :class:`~odinlab.Selection` (None when cleared)."""
        self._check_built()
        return self.hub.select(images)

    def observe(self, callback: Callable[[list[str]], Any]) -> Callable:
        """Call ``callback(ids)`` on every new selection ([] when cleared); returns the callback."""
        self._check_built()
        return self.hub.observe(callback)

    def unobserve(self, callback: Callable) -> None:
        """Stop calling ``callback``."""
        self._check_built()
        self.hub.unobserve(callback)

    def open(self, image_id: str) -> None:
        """Show one image in the detail view (what a click on a thumbnail does)."""
        detail = self.views.get("detail")
        if detail is None:
            return
        for method in ("show_image", "show", "open"):
            if callable(getattr(detail, method, None)):
                getattr(detail, method)(image_id)
                return
        if callable(getattr(detail, "show_selection", None)):
            detail.show_selection([image_id])

    def recolor(self, column: str) -> None:
        """Color the scatter by another column (label, predicted, correct, loss, a metadata column...)."""
        self._check_built()
        if column not in self.frame.columns:
            raise OptionError(f"Cannot color by {column!r}; columns: {', '.join(self.frame.columns)}.")
        scatter = self.views.get("scatter")
        self.color = column
        if scatter is not None and callable(getattr(scatter, "recolor", None)):
            scatter.recolor(self.frame[column], legend=self.legend(column), title=column)

    def _check_built(self) -> None:
        if self.hub is None:
            raise type(self.error)(self.message) if isinstance(self.error, OdinError) else \
                SelectionError(self.message or "The explorer could not be built.")

    # -- layout -------------------------------------------------------------------------------

    def _layout(self):
        import ipywidgets as widgets

        if self.message is not None:
            box = widgets.VBox([message_widget(self.message, type(self.error).__name__)])
            box.add_class("odinlab-explorer")
            return box
        header = widgets.HTML(
            f'<div class="odinlab-explorer-title" data-model="{html.escape(self.model_id)}" '
            f'data-layer="{html.escape(self.layer)}" data-images="{len(self.images)}">'
            f"<b>{html.escape(self.model_id)}</b> · {html.escape(self.layer)} · {len(self.images)} images "
            f"{html.escape(self.images.description or '')} · colored by {html.escape(self.color)}</div>")
        header.add_class("odinlab-explorer-header")
        self._status = widgets.HTML()
        self._status.add_class("odinlab-explorer-status")
        self._show_status(self.selection)
        self.hub.observe(self._show_status)
        grid = self._grid([n for n in (*VIEWS, *self.views) if n not in DEBUG_VIEWS])
        children = [header]
        if self.note:
            children.append(message_widget(self.note, "note"))
        children += [grid, self._status]
        tabs = self._tabs()
        if tabs is not None:
            children.append(tabs)
        box = widgets.VBox(children, layout=widgets.Layout(width="100%"))
        box.add_class("odinlab-explorer")
        return box

    def _slot(self, name: str):
        """A view in its box, or the message saying why it cannot be shown (None: not asked for)."""
        import ipywidgets as widgets

        if name in self.views:
            view = self.views[name]
            slot = view if isinstance(view, widgets.Widget) else message_widget(
                f"The {name} view ({type(view).__name__}) is not a widget and cannot be shown.", "not-a-widget")
        elif name in self.view_errors:
            slot = message_widget(f"The {name} view cannot be shown: {self.view_errors[name]}", "view-error")
        else:
            return None
        # the view fills its grid cell and may shrink below its content's width: without this a
        # view that sizes itself from its parent (the scatter's canvas) can widen the cell forever
        slot.layout.flex, slot.layout.min_width, slot.layout.width = "1 1 0%", "0", "100%"
        box = widgets.Box([slot], layout=widgets.Layout(min_width="0", width="100%", overflow="auto"))
        box.add_class("odinlab-explorer-slot")
        box.add_class(f"odinlab-explorer-{name}")
        return box

    def _grid(self, names):
        import ipywidgets as widgets

        slots = [slot for slot in (self._slot(n) for n in dict.fromkeys(names)) if slot is not None]
        grid = widgets.GridBox(slots, layout=widgets.Layout(grid_template_columns="minmax(0, 3fr) minmax(0, 2fr)",
                                                            grid_gap="8px", width="100%"))
        grid.add_class("odinlab-explorer-grid")
        return grid

    def _tabs(self):
        """The debugging views in tabs under the linked views (None when none was asked for)."""
        import ipywidgets as widgets

        names = [n for n in DEBUG_VIEWS if n in self.views or n in self.view_errors]
        if not names:
            return None
        tabs = widgets.Tab(children=[self._slot(n) for n in names])
        for i, name in enumerate(names):
            tabs.set_title(i, DEBUG_VIEWS[name])
        tabs.add_class("odinlab-explorer-tabs")
        return tabs

    def _show_status(self, ids: list[str]) -> None:
        n = len(ids)
        if n == 0 and self.hub.selection is not None:  # a selection that matched nothing
            text = "No images selected: the selection is empty"
        else:
            text = "nothing selected" if n == 0 else f"{n} of {len(self.images)} images selected"
        self._status.value = (f'<span class="odinlab-explorer-count" data-selected="{n}">{text}</span>'
                              " — explorer.selection, explorer.selected()")

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    def __repr__(self) -> str:
        if self.message is not None:
            return f"<Explorer (not built): {self.message.splitlines()[0]}>"
        return (f"<Explorer {self.model_id} {self.layer}: {len(self.images)} images, views "
                f"{', '.join(self.views)}, {len(self.selection)} selected>")


def explore(store, model, layer: str = "head.fc1", images: Any = "test", color: str = "correct", **options) -> Explorer:
    """Linked views of ``model`` on ``images``: the embedding scatter of ``layer`` colored by
    ``color`` (label, predicted, correct, confidence, margin, loss or a metadata column), a
    gallery of the selection, the confusion matrix, the detail of a clicked image, the clusters
    of the model's mistakes and the closest pairs across a decision boundary.

    ``options`` go to :class:`Explorer` (``views=``, ``embedding=``, ``compare=``, ``progress=``). Display
    the result in a notebook cell; read ``explorer.selection`` / ``explorer.selected()``.

    >>> explore(store, "cnn@1", images="nothing-like-this").message
    "'nothing-like-this' is neither an image id nor a split. Splits: ..."
    """
    return Explorer(store, model, layer, images, color, **options)
