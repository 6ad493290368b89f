"""Linked selection between views: one :class:`SelectionHub` owns the selection, views follow it.

The hub is plain Python and knows nothing of widgets. A *view* is anything that follows the
contract of ``odinlab/widgets`` (see each view's docstring):

- ``view.ids``: the image ids of its items, in item order;
- ``view.selected_ids``: what the user selected in it (``[]``: nothing);
- ``view.show_selection(ids | None)``: highlight or filter to ``ids`` (None: clear) without
  firing its own selection callbacks;
- ``view.on_select(callback)``: ``callback(ids)`` runs when the user selects in the browser.

A selection made in one view is shown in every other view (never sent back to the view it
came from, so nothing ping-pongs), and observers registered with :meth:`SelectionHub.observe`
get the new ids. ``hub.select(...)`` sets the selection from Python with any form that
``store.select`` takes, or a SQL WHERE fragment, always restricted to the hub's images.

>>> hub = SelectionHub(store, "test")
>>> seen = []
>>> _ = hub.observe(seen.append)
>>> len(hub.select("label = 3")) == len(store.select("test").where(pl.col("label") == 3))
True
>>> hub.select(None) is None, seen[-1]
(True, [])
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import polars as pl

from odinlab.errors import QueryError, SelectionError, UnknownImageError
from odinlab.store.query import looks_like_query
from odinlab.store.selection import Selection

Observer = Callable[[list[str]], object]


def _listing(values, limit: int = 5) -> str:
    values = list(values)
    shown = ", ".join(map(str, values[:limit]))
    return shown + (f" (and {len(values) - limit} more)" if len(values) > limit else "")


def _quote(text: str) -> str:
    """A SQL string literal."""
    return "'" + str(text).replace("'", "''") + "'"


class SelectionHub:
    """The current selection of a set of linked views, over one image set of a store.

    ``images`` is the hub's image set (anything ``store.select`` takes): every selection is
    restricted to it. ``model`` (optional) lets WHERE text and polars expressions also name
    the model's prediction columns (``correct``, ``loss``, ``margin``...); ``frame`` (optional)
    is a frame with ``image_id`` and extra columns over which polars expressions are evaluated
    (the explorer passes its images with predictions and embedding coordinates).

    ``hub.selection`` is the current :class:`~odinlab.Selection` (None when nothing is
    selected), ``hub.ids`` its image ids (``[]`` when nothing is selected).

    >>> hub = SelectionHub(store, "test")
    >>> hub.select(["digits-0002"]).ids, hub.ids
    (['digits-0002'], ['digits-0002'])
    """

    def __init__(self, store, images=None, *, model=None, frame: pl.DataFrame | None = None):
        self.store = store
        self.images: Selection = store.select(images)
        self.model_id: str | None = store.model(model).model_id if model is not None else None
        self.frame = frame
        self._known = set(self.images.ids)  # built once: faster than a polars is_in, which hashes them all
        self._views: list[tuple[object, bool]] = []  # (view, receives the selection)
        self._observers: list[Observer] = []
        self._selection: Selection | None = None
        self._showing = False  # True while views are being updated: their callbacks are ignored
        self.origin = None  # the view the current selection came from (None: from Python)

    # -- views and observers ------------------------------------------------------------------

    def add(self, view, *, send: bool = True, receive: bool = True):
        """Link ``view``: its selections reach the others (``send``) and theirs reach it
        (``receive``). It is shown the current selection at once. Returns the view."""
        if any(v is view for v, _ in self._views):
            return view
        for name in ("show_selection", "on_select"):
            if (name == "show_selection" and receive or name == "on_select" and send) and \
                    not callable(getattr(view, name, None)):
                raise TypeError(f"{type(view).__name__} is not a linkable view: it has no {name}(...) method.")
        self._views.append((view, receive))
        if send:
            view.on_select(lambda ids, _view=view: self._from_view(_view, ids))
        if receive and self._selection is not None:
            self._show(view, self.ids)
        return view

    @property
    def views(self) -> list:
        """The linked views, in the order added."""
        return [view for view, _ in self._views]

    def observe(self, callback: Observer) -> Observer:
        """Call ``callback(ids)`` with the new image ids after every change ([] when cleared).

        Returns the callback, so it can be used as a decorator and passed to :meth:`unobserve`.
        """
        if not callable(callback):
            raise TypeError(f"observe() takes a callable, not {type(callback).__name__}.")
        self._observers.append(callback)
        return callback

    def unobserve(self, callback: Observer) -> None:
        """Stop calling ``callback``."""
        self._observers = [c for c in self._observers if c is not callback]

    # -- the selection ------------------------------------------------------------------------

    @property
    def selection(self) -> Selection | None:
        """The current selection (None when nothing is selected)."""
        return self._selection

    @property
    def ids(self) -> list[str]:
        """The selected image ids, in order ([] when nothing is selected)."""
        return [] if self._selection is None else self._selection.ids

    def select(self, images=None, *, origin=None) -> Selection | None:
        """Set the selection and show it in every view (but ``origin``, the view it came from).

        ``images``: None (clear), image ids, a Series or frame with ``image_id``, a
        :class:`~odinlab.Selection`, a polars expression (over ``frame`` when the hub has one,
        else the images table), a split, a full SQL query, or a SQL WHERE fragment such as
        ``"label = 3 AND split = 'test'"`` (run as ``SELECT image_id FROM images WHERE ...``;
        with a model, prediction columns such as ``NOT correct`` work too). The result is
        restricted to the hub's images; explicit ids outside them are refused.
        Returns the new selection (None when cleared).
        """
        selection = None if images is None else self.resolve(images)
        self._set(selection, origin)
        return selection

    def clear(self) -> None:
        """Clear the selection everywhere (``select(None)``)."""
        self.select(None)

    def resolve(self, images) -> Selection:
        """``images`` as a :class:`~odinlab.Selection` of the hub's images, without selecting it."""
        if isinstance(images, pl.Expr):
            return self._from_expression(images)
        if isinstance(images, str):
            return self._from_text(images)
        if isinstance(images, Selection):
            return self._restrict(self.store.select(images), strict=False)
        if isinstance(images, pl.DataFrame):
            if "image_id" not in images.columns:
                raise SelectionError(f"A frame given to select() needs an image_id column; it has {images.columns}.")
            images = images["image_id"]
        if isinstance(images, pl.Series | Sequence | np.ndarray) and not isinstance(images, bytes):
            return self._from_ids([str(i) for i in images])
        raise SelectionError(
            f"select() takes image ids, a polars expression, SQL WHERE text, a Selection or None, "
            f"not {type(images).__name__}."
        )

    # -- resolving ----------------------------------------------------------------------------

    def _from_ids(self, ids: list[str]) -> Selection:
        wanted = list(dict.fromkeys(ids))
        unknown = [i for i in wanted if i not in self._known]
        if unknown:
            raise UnknownImageError(
                f"{len(unknown)} image ids are not among the {len(self.images)} images linked here "
                f"({self.images.description or 'this image set'}), e.g. {_listing(unknown)}."
            )
        return self.store.select(wanted)  # each id once and all linked here: nothing to restrict

    def _from_expression(self, expression: pl.Expr) -> Selection:
        if self.frame is None:
            try:
                return self._restrict(self.images.where(expression), strict=False)
            except pl.exceptions.ColumnNotFoundError as error:
                raise SelectionError(
                    f"The expression {expression} names a column that the images table lacks ({error}). "
                    f"Columns: {_listing(self.images.frame.columns, 60)}."
                ) from error
        try:
            ids = self.frame.filter(expression.fill_null(False))["image_id"].to_list()
        except pl.exceptions.ColumnNotFoundError as error:
            raise SelectionError(
                f"The expression {expression} names a column that is not here ({error}). "
                f"Columns: {_listing(self.frame.columns, 60)}."
            ) from error
        return self._restrict(self.store.select(list(dict.fromkeys(ids))), strict=False)

    def _from_text(self, text: str) -> Selection:
        stripped = text.strip()
        if stripped in self._known:  # an image id, before anything else
            return self.store.select([stripped])
        if looks_like_query(stripped):
            return self._restrict(self.store.select(stripped), strict=False)
        if stripped in set(self.store.images["split"].drop_nulls().to_list()):
            return self._restrict(self.store.select(stripped), strict=False)
        where = stripped[len("where"):].strip() if stripped.lower().startswith("where ") else stripped
        query = f"SELECT image_id FROM images WHERE {where}"
        try:
            return self._restrict(self.store.select(query), strict=False)
        except QueryError as first:
            if self.model_id is None:
                raise QueryError(f"The WHERE text {where!r} could not run over the images table "
                                 f"(columns: {_listing(self.store.images.columns, 60)}): {first}") from first
            try:
                return self._restrict(self.store.select(
                    f"SELECT image_id FROM predictions WHERE model_id = {_quote(self.model_id)} AND ({where})"),
                    strict=False)
            except QueryError:
                raise QueryError(
                    f"The WHERE text {where!r} could not run over the images table nor the predictions of "
                    f"{self.model_id} (columns: {_listing(self.store.images.columns, 60)}, predicted, "
                    f"confidence, margin, loss, correct): {first}"
                ) from first

    def _restrict(self, selection: Selection, *, strict: bool) -> Selection:
        """``selection`` without images outside the hub's set, each image once, order kept."""
        ids = selection.frame["image_id"]
        known = np.fromiter((i in self._known for i in ids.to_list()), bool, len(ids))
        if strict and not known.all():
            raise UnknownImageError(f"{int((~known).sum())} images are not among the images linked here.")
        keep = known & ids.is_first_distinct().to_numpy()
        return selection if keep.all() else selection[keep]

    # -- propagation --------------------------------------------------------------------------

    def _from_view(self, view, ids) -> None:
        if self._showing:  # a view that fires while being shown a selection: not a user's act
            return
        ids = [str(i) for i in (ids or [])]
        try:
            selection = self._from_ids(ids) if ids else None
        except UnknownImageError as error:  # a view whose items are not the hub's images
            warnings.warn(f"{type(view).__name__} selected images that are not linked here: {error}", stacklevel=2)
            return
        self._set(selection, view)

    def _set(self, selection: Selection | None, origin) -> None:
        self._selection = selection
        self.origin = origin
        shown = None if selection is None else selection.ids
        self._showing = True
        try:
            for view, receive in self._views:
                if receive and view is not origin:
                    self._show(view, shown)
        finally:
            self._showing = False
        ids = [] if shown is None else list(shown)
        for callback in list(self._observers):
            try:
                callback(list(ids))
            except Exception as error:  # one observer's bug must not break the others or the views
                warnings.warn(f"The selection observer {getattr(callback, '__name__', callback)!r} failed: "
                              f"{type(error).__name__}: {error}", stacklevel=2)

    def _show(self, view, ids) -> None:
        was, self._showing = self._showing, True
        try:
            view.show_selection(None if ids is None else list(ids))
        except Exception as error:  # one broken view must not stop the others
            warnings.warn(f"{type(view).__name__}.show_selection failed: {type(error).__name__}: {error}",
                          stacklevel=3)
        finally:
            self._showing = was

    def __repr__(self) -> str:
        chosen = "nothing selected" if self._selection is None else f"{len(self._selection)} selected"
        return f"<SelectionHub of {len(self.images)} images, {len(self._views)} views, {chosen}>"
