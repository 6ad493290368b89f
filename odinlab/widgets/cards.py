"""What the card views share (error clusters, boundary pairs): cards of a few images each, their
thumbnails sent on the browser's request, a click that selects a card's images, and a selection
shown from elsewhere as counts on the cards.

A subclass fills ``cards`` (small JSON dicts for its JS) and ``_members`` (the image ids of each
card, in card order), and says which ids have thumbnails (``_thumb_ids``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anywidget
import numpy as np
import traitlets

from odinlab.widgets.gallery import ThumbnailCache, _Callbacks

__all__ = ["CardsView"]


def esm_with_thumbs(filename: str) -> str:
    """A card view's browser module (``filename`` beside this file) after thumbs.js, whose
    ``placeThumbs`` it calls: anywidget takes one module per view, so the shared code comes first.

    >>> "function placeThumbs" in esm_with_thumbs("clusters.js")
    True
    """
    here = Path(__file__).parent
    return (here / "thumbs.js").read_text(encoding="utf-8") + (here / filename).read_text(encoding="utf-8")


class CardsView(anywidget.AnyWidget):
    """Base of :class:`~odinlab.widgets.clusters.ClusterView` and :class:`~odinlab.widgets.pairs.PairsView`.

    It follows the views' contract: ``ids`` (every card's images, card by card), ``selected_ids``
    (the chosen card's), ``show_selection(ids)`` and ``on_select(callback)``.
    """

    message = traitlets.Unicode("").tag(sync=True)     # shown instead of the cards when not empty
    title = traitlets.Unicode("").tag(sync=True)
    cards = traitlets.List(traitlets.Dict()).tag(sync=True)
    chosen = traitlets.Int(-1).tag(sync=True)          # the selected card (-1: none)
    shown = traitlets.Bytes(b"").tag(sync=True)        # a count a card of its selected images ("" = no selection)
    shown_total = traitlets.Int(-1).tag(sync=True)     # images in the selection shown (-1: none)
    thumb_size = traitlets.Int(64).tag(sync=True)
    version = traitlets.Int(0).tag(sync=True)          # bumped when the cards change: the browser re-asks

    _count_dtype = "<u4"  # of ``shown``, as the subclass's JS reads it

    def __init__(self, store, model, *, thumb_size: int = 64, thumbnails: ThumbnailCache | None = None, **kwargs):
        super().__init__(**kwargs)
        self.store = store
        self.record = store.model(model)
        self.thumb_size = int(thumb_size)
        self._thumbs = thumbnails if thumbnails is not None and thumbnails.size == thumb_size else \
            ThumbnailCache(store, thumb_size)
        self._select_callbacks = _Callbacks()
        self._quiet = False  # True while Python shows a selection: no on_select (no ping-pong)
        self._members: list[list[str]] = []
        self.observe(self._on_chosen, names=["chosen"])
        self.on_msg(self._on_message)

    def _thumb_ids(self) -> list[str]:
        """The ids whose thumbnails the browser shows, in the order its JS reads them: each
        subclass says (ClusterView: the medoids; PairsView: a then b)."""
        raise NotImplementedError(f"{type(self).__name__} must say which images have thumbnails (_thumb_ids)")

    # -- the browser -------------------------------------------------------------------------------

    def thumbnails(self) -> tuple[dict, list[bytes]]:
        """The message and PNGs that answer the browser's request."""
        return {"kind": "thumbs", "version": self.version}, self._thumbs(self._thumb_ids())

    def _on_message(self, widget, content, buffers) -> None:
        if not isinstance(content, dict):
            return
        if content.get("kind") == "thumbs":
            reply, pngs = self.thumbnails()
            self.send(reply, buffers=pngs)
        elif content.get("kind") == "click" and isinstance(content.get("index"), int):
            self.click(content["index"])

    def click(self, index: int) -> None:
        """What a click on card ``index`` does: select its images (or clear, when it is chosen)."""
        if 0 <= index < len(self._members):
            self.chosen = -1 if self.chosen == index else index

    def _on_chosen(self, change) -> None:
        self._paint(self.selected_ids or None)
        if not self._quiet:
            self._select_callbacks(self.selected_ids)

    def _paint(self, ids: list[str] | None) -> None:
        """Count the shown selection's images on each card."""
        if ids is None:
            self.shown, self.shown_total = b"", -1
            return
        wanted = set(ids)
        counts = np.array([sum(i in wanted for i in members) for members in self._members], self._count_dtype)
        self.shown, self.shown_total = counts.tobytes(), len(wanted)

    # -- the contract ------------------------------------------------------------------------------

    @property
    def ids(self) -> list[str]:
        """Every card's images, card by card."""
        return [i for members in self._members for i in members]

    @property
    def selected_ids(self) -> list[str]:
        """The images of the chosen card ([] when none is chosen)."""
        return list(self._members[self.chosen]) if 0 <= self.chosen < len(self._members) else []

    def show_selection(self, ids: list[str] | None) -> None:
        """Mark how many of ``ids`` each card holds (None clears); a selection that is exactly one
        card's images marks that card chosen. No callbacks fire."""
        ids = None if ids is None else [str(i) for i in ids]
        self._quiet = True
        try:
            wanted = None if ids is None else set(ids)
            exact = [k for k, members in enumerate(self._members) if wanted and set(members) == wanted]
            self.chosen = exact[0] if exact else -1
            self._paint(ids)
        finally:
            self._quiet = False

    def on_select(self, callback: Callable[[list[str]], None]) -> Callable:
        """Call ``callback(ids)`` when the user clicks a card in the browser ([] when cleared)."""
        return self._select_callbacks.add(callback)
