"""The gallery: thumbnails of a selection with label, prediction and confidence, mistakes marked.

Thumbnails are rendered in the kernel (``store.thumbnails``) and sent lazily, one page at a
time: the browser asks with a custom message ``{"page": k}`` and the kernel answers with the
page's items and one PNG buffer per item. Once a browser has asked for a page, a change of the
items (a new selection, a new sort) sends the first page at once, unasked, right after the new
``version`` (``pushed`` says which version's first page is on its way): the browser then shows
it without a round trip of its own. Nothing but the page size, the sort order and the selection
mask is kept in the widget's state, so a saved notebook stays small.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import anywidget
import numpy as np
import polars as pl
import traitlets

from odinlab.store.images import ROW
from odinlab.store.selection import Selection

__all__ = ["GalleryView", "ThumbnailCache"]

# Columns of ``store.predictions`` that a gallery item carries to the browser.
ITEM_COLUMNS = ("image_id", "label", "label_name", "predicted", "predicted_name", "confidence", "margin",
                "loss", "correct")
NOT_SORTABLE = ("probabilities", "model_id", ROW)


# -- small helpers shared by the views (confusion and detail import them) --------------------------

def pack_mask(positions, n: int) -> bytes:
    """A selection as bytes: bit i (little bit order) set for each position i among n items."""
    bits = np.zeros(n, bool)
    positions = positions if isinstance(positions, np.ndarray) else list(positions)
    bits[np.asarray(positions, dtype=np.int64)] = True
    return np.packbits(bits, bitorder="little").tobytes()


def unpack_mask(mask: bytes, n: int) -> np.ndarray:
    """Positions of the set bits of a mask over n items (bits past n are ignored)."""
    if not mask or n == 0:
        return np.zeros(0, np.int64)
    bits = np.unpackbits(np.frombuffer(mask, np.uint8), bitorder="little")[:n]
    return np.flatnonzero(bits)


def materialize_hint(model_id: str, images_text: str) -> str:
    """The call that stores a model's predictions, as a user would type it."""
    return f"store.materialize({model_id!r}, images={images_text})"


def predicted_names(classes) -> pl.Expr:
    """The class name of each ``predicted`` index (null outside the classes), vectorized.

    >>> pl.DataFrame({"predicted": [1, 0, 7]}).select(predicted_names(["cat", "dog"]))["predicted"].to_list()
    ['dog', 'cat', None]
    """
    classes = list(classes)
    return pl.col("predicted").replace_strict(list(range(len(classes))), classes, default=None,
                                              return_dtype=pl.String)


def describe_images(images) -> str:
    """How to write ``images`` back in a call: a split or SQL as a string, anything else as a name."""
    if images is None:
        return "None"
    if isinstance(images, str):
        return repr(images)
    return "<the same images>"


class ThumbnailCache:
    """PNG thumbnails of a store's images at one size, rendered by ``store.thumbnails`` and kept
    in a bounded cache (least recently used dropped first). The explorer shares one between the
    gallery, the error clusters, the boundary pairs and the scatter's hover, so an image is
    rendered once.

    >>> cache = ThumbnailCache(store, size=32)
    >>> [png[:4] for png in cache(["digits-0000", "digits-0000"])]
    [b'\\x89PNG', b'\\x89PNG']
    >>> len(cache)
    1
    """

    def __init__(self, store, size: int = 96, capacity: int = 4096):
        if not isinstance(size, int) or size < 8:
            raise ValueError(f"A thumbnail size must be at least 8 pixels, not {size!r}.")
        self.store, self.size, self.capacity = store, size, int(capacity)
        self._cache: OrderedDict[str, bytes] = OrderedDict()

    def __call__(self, images) -> list[bytes]:
        """PNGs of ``images`` (ids, or a :class:`~odinlab.Selection` of this store), in order.

        The missing ones are rendered in one call to the store, which reads each pixel chunk
        once. A selection skips looking its ids up in the images table (its rows are known).
        """
        if isinstance(images, Selection):
            ids = images.ids
            first: dict[str, int] = {}  # each id's first position: it is rendered from there
            for k, image_id in enumerate(ids):
                first.setdefault(image_id, k)
            missing = [i for i in first if i not in self._cache]
            wanted = images[[first[i] for i in missing]] if missing else None
        else:
            ids = [str(i) for i in images]
            missing = wanted = [i for i in dict.fromkeys(ids) if i not in self._cache]
        if missing:
            for image_id, png in zip(missing, self.store.thumbnails(wanted, self.size), strict=True):
                self._cache[image_id] = png
        out = []
        for image_id in ids:
            self._cache.move_to_end(image_id)
            out.append(self._cache[image_id])
        while len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        return out

    def __len__(self) -> int:
        return len(self._cache)


class _Callbacks:
    """A list of callbacks called with the same arguments; one failing does not stop the rest."""

    def __init__(self):
        self._items: list[Callable] = []

    def add(self, callback: Callable) -> Callable:
        if not callable(callback):
            raise TypeError(f"A callback must be callable, not {type(callback).__name__}.")
        self._items.append(callback)
        return callback

    def __call__(self, *args) -> None:
        for callback in list(self._items):
            callback(*args)


# -- the widget -----------------------------------------------------------------------------------------

class GalleryView(anywidget.AnyWidget):
    """Thumbnails of ``images`` with label, prediction and confidence; mistakes are marked.

    ``model`` is any model reference (``"cnn@1"``, a record or a registered module); its
    predictions must be stored (``store.materialize``). Items are sorted by ``sort_by`` (any
    column of ``store.predictions``: loss, margin, confidence, label, predicted, a metadata
    column..., or ``label_error``: 1 - the model's probability of the given label, highest for
    the images whose label is most probably wrong) and sent to the browser ``page_size`` at a time as ``thumb_size``-pixel PNGs.
    Clicking a thumbnail sets ``clicked`` and calls the ``on_click`` callbacks with its id;
    ctrl/cmd-click adds it to the gallery's selection (``selected_ids``, ``on_select``).

    >>> _ = store.materialize(net, images="test", progress=False)
    >>> gallery = GalleryView(store, "cnn@1", "test", sort_by="loss")
    >>> loss = store.predictions("cnn@1", gallery.ids)["loss"].to_list()
    >>> len(loss), loss == sorted(loss, reverse=True)   # every test image, hardest first
    (270, True)
    >>> gallery.show_selection(gallery.ids[:5])         # filter to these images
    """

    _esm = Path(__file__).with_name("gallery.js")
    _css = Path(__file__).with_name("gallery.css")

    message = traitlets.Unicode("").tag(sync=True)      # shown instead of the gallery when not empty
    note = traitlets.Unicode("").tag(sync=True)         # shown above the gallery (a warning)
    total = traitlets.Int(0).tag(sync=True)             # items in the gallery now
    page_size = traitlets.Int(48).tag(sync=True)
    thumb_size = traitlets.Int(96).tag(sync=True)
    sort_by = traitlets.Unicode("loss").tag(sync=True)
    descending = traitlets.Bool(True).tag(sync=True)
    sort_columns = traitlets.List(traitlets.Unicode()).tag(sync=True)
    version = traitlets.Int(0).tag(sync=True)           # bumped when the items change: the browser re-asks
    pushed = traitlets.Int(-1).tag(sync=True)           # the version whose first page is sent unasked
    clicked = traitlets.Unicode("").tag(sync=True)      # the last clicked image id ("" = none)
    selection_mask = traitlets.Bytes(b"").tag(sync=True)  # over ``ids``, little bit order

    def __init__(self, store, model, images=None, *, sort_by: str = "loss", descending: bool = True,
                 page_size: int = 48, thumb_size: int = 96, cache_size: int = 4096,
                 thumbnails: ThumbnailCache | None = None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(page_size, int) or page_size < 1:
            raise ValueError(f"page_size must be a positive number of thumbnails, not {page_size!r}.")
        if not isinstance(thumb_size, int) or thumb_size < 8:
            raise ValueError(f"thumb_size must be at least 8 pixels, not {thumb_size!r}.")
        self.store = store
        self.record = store.model(model)
        self._images_text = describe_images(images)
        # a shared cache of the same size is reused (the explorer's); otherwise the gallery's own
        self._thumbs = thumbnails if thumbnails is not None and thumbnails.size == thumb_size else \
            ThumbnailCache(store, thumb_size, cache_size)
        self._click_callbacks, self._select_callbacks = _Callbacks(), _Callbacks()
        self._quiet = False  # True while Python sets the mask: no on_select (no ping-pong)
        self._displayed = False  # a browser asked for a page: from then on the first page is pushed
        self._filter: pl.Series | None = None
        self._frame = self._load(images)  # every image of ``images``, prediction columns null where missing
        columns = [c for c, t in self._frame.schema.items()
                   if c not in NOT_SORTABLE and (t.is_numeric() or t in (pl.String, pl.Boolean))]
        self.sort_columns = columns
        self.page_size, self.thumb_size = page_size, thumb_size
        if sort_by not in columns:
            raise ValueError(f"Cannot sort the gallery by {sort_by!r}; columns: {', '.join(columns)}.")
        with self.hold_trait_notifications():
            self.sort_by, self.descending = sort_by, bool(descending)
        self._sort()
        self._refresh()
        self.observe(self._on_sort, names=["sort_by", "descending"])
        self.observe(self._on_mask, names=["selection_mask"])
        self.observe(self._on_clicked, names=["clicked"])
        self.on_msg(self._on_message)

    # -- data ---------------------------------------------------------------------------------------

    def _load(self, images) -> pl.DataFrame:
        selection = self.store.select(images)
        self._store_url, self._image_columns = selection.store_url, selection.frame.columns
        # the pixel rows travel hidden beside the items, so a page's thumbnails need no id lookup
        base = selection.frame.with_columns(pl.Series(ROW, selection.rows)).unique("image_id", maintain_order=True)
        preds = self.store.predictions(self.record, selection).unique("image_id", maintain_order=True)
        preds = preds.select("image_id", "predicted", "confidence", "margin", "loss", "correct",
                             "probabilities").with_columns(predicted_name=predicted_names(self.record.classes))
        frame = base.join(preds, on="image_id", how="left", maintain_order="left")
        # 1 - p(given label): confident learning ranks suspected label errors by it (odinlab.debug.label_errors)
        frame = frame.with_columns(label_error=1.0 - pl.col("probabilities").arr.get(pl.col("label"), null_on_oob=True)
                                   .cast(pl.Float64))
        self._missing = base.height - preds.height
        self._blocked = bool(base.height and preds.height == 0)
        if self._blocked:
            self.message = (f"{self.record.model_id} has no stored predictions for these {base.height} images. "
                            f"Store them first: {materialize_hint(self.record.model_id, self._images_text)}")
        elif self._missing:
            self.note = (f"{self._missing} of the {base.height} images have no stored predictions of "
                         f"{self.record.model_id} (shown without one); "
                         f"{materialize_hint(self.record.model_id, self._images_text)} stores them.")
        return frame

    def _sort(self) -> None:
        """Sort every image once per sort order; a selection then only filters (order kept)."""
        self._sorted = self._frame.sort(self.sort_by, descending=self.descending, nulls_last=True,
                                        maintain_order=True)

    def _refresh(self, *, if_changed: bool = False) -> None:
        """Filter, bump the version (the browser asks again from the first page), push that page.

        With ``if_changed``, items that are the same as before (in the same order) change nothing.
        """
        frame = self._sorted
        if self._filter is not None:
            frame = frame.filter(pl.col("image_id").is_in(self._filter.implode()))
        if if_changed and frame["image_id"].equals(self._ids):
            return
        self._view = frame
        self._ids = frame["image_id"]
        push = self._displayed and not self._blocked and frame.height > 0
        with self.hold_sync():  # one state message: the browser sees version and pushed together
            if not self._blocked:
                self.message = "" if frame.height else "no images selected"
            self.total = frame.height
            self.version += 1
            if push:
                self.pushed = self.version
        if push:  # after the state, so the page arrives after the version it belongs to
            self.send(*self.page(0))

    def _on_sort(self, change) -> None:
        if self.sort_by not in self.sort_columns:
            return  # ignore a name the browser cannot have offered
        keep = self.selected_ids
        self._sort()
        self._refresh()
        self._set_mask(keep)

    # -- pages --------------------------------------------------------------------------------------

    def page(self, k: int) -> tuple[dict, list[bytes]]:
        """The message and PNG buffers answering the browser's request for page ``k``."""
        k = int(k)
        start = k * self.page_size
        rows = self._view.slice(start, self.page_size) if 0 <= start < self.total else self._view.head(0)
        items = []
        for i, row in enumerate(rows.select([c for c in ITEM_COLUMNS if c in rows.columns]).iter_rows(named=True)):
            row["index"] = start + i
            for key in ("confidence", "margin", "loss"):
                if row.get(key) is not None:
                    row[key] = float(row[key])
            items.append(row)
        content = {"kind": "page", "page": k, "version": self.version, "start": start, "total": self.total,
                   "items": items}
        chosen = Selection(rows.select(self._image_columns), rows[ROW].to_numpy(), self._store_url)
        return content, self._thumbs(chosen)

    def thumbnails(self, ids: list[str]) -> list[bytes]:
        """PNG thumbnails of ``ids`` at ``thumb_size``, from a bounded cache or the store."""
        return self._thumbs(ids)

    def _on_message(self, widget, content, buffers) -> None:
        if isinstance(content, dict) and "page" in content:
            self._displayed = True
            reply, pngs = self.page(content["page"])
            self.send(reply, buffers=pngs)
        elif isinstance(content, dict) and content.get("kind") == "click" and "index" in content:
            self.click(int(content["index"]), extend=bool(content.get("extend")))

    # -- clicks and selection ----------------------------------------------------------------------

    def click(self, index: int, *, extend: bool = False) -> None:
        """What a click on item ``index`` does: set ``clicked`` (and the selection, or add to it)."""
        if not 0 <= index < self.total:
            return
        image_id = self._ids[index]
        chosen = set(self.selected_ids)
        if extend:
            chosen ^= {image_id}
        else:
            chosen = {image_id}
        self.selection_mask = pack_mask(self._positions(chosen), self.total)
        if self.clicked == image_id:
            self._click_callbacks(image_id)  # a second click on the same image still opens it
        else:
            self.clicked = image_id

    def _positions(self, ids) -> np.ndarray:
        """Positions in the gallery of those of ``ids`` it shows (ascending)."""
        wanted = pl.Series(list(ids), dtype=pl.String, strict=False)
        return np.flatnonzero(self._ids.is_in(wanted.implode()).to_numpy())

    def _on_clicked(self, change) -> None:
        if change["new"]:
            self._click_callbacks(change["new"])

    def _on_mask(self, change) -> None:
        if not self._quiet:
            self._select_callbacks(self.selected_ids)

    def _set_mask(self, ids) -> None:
        self._quiet = True
        try:
            positions = self._positions(ids) if len(ids) else []
            self.selection_mask = pack_mask(positions, self.total) if len(positions) else b""
        finally:
            self._quiet = False

    def on_click(self, callback: Callable[[str], None]) -> Callable:
        """Call ``callback(image_id)`` when a thumbnail is clicked (the explorer opens the detail)."""
        return self._click_callbacks.add(callback)

    # -- the contract ---------------------------------------------------------------------------------

    @property
    def ids(self) -> list[str]:
        """The image ids the gallery shows, in its order."""
        return self._ids.to_list()

    @property
    def selected_ids(self) -> list[str]:
        """The ids selected in the gallery (clicked, or ctrl-clicked), in gallery order."""
        return self._ids.gather(unpack_mask(self.selection_mask, self.total)).to_list()

    def show_selection(self, ids: list[str] | None) -> None:
        """Show only ``ids`` (None: every image again), without calling the ``on_select`` callbacks.

        Ids that leave the items as they are (the same ones again, in any order) change nothing
        (no new version, no page sent) but clear the gallery's own selection.
        """
        self._filter = None if ids is None else pl.Series("image_id", list(ids), dtype=pl.String, strict=False)
        self._refresh(if_changed=True)
        self._set_mask([])

    def on_select(self, callback: Callable[[list[str]], None]) -> Callable:
        """Call ``callback(ids)`` when the user selects thumbnails in the browser."""
        return self._select_callbacks.add(callback)

    @property
    def frame(self) -> pl.DataFrame:
        """The gallery's items as a frame, in gallery order (prediction columns and metadata)."""
        return self._view.drop(ROW)

    def __repr__(self) -> str:
        return f"<GalleryView {self.record.model_id}: {self.total} images by {self.sort_by}>"
