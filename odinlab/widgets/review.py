"""The label review queue: suspected label errors, most suspicious first, decided one at a time and
written back as label corrections (the original labels are never overwritten).

The queue is :func:`odinlab.debug.error_analysis.label_errors` (ranked by label quality). Each
decision goes through the store's safe write path: Accept is ``store.correct_labels(...,
action="accept")`` with the suggested label, Change is ``action="change"`` with a class the
reviewer picks, Keep is ``store.keep_labels``, Undo is ``store.undo_correction`` of this queue's
latest decision still in effect; every one records the model, its score (``label_quality``) and
the ranking method. Images with a decision in effect in the label set (made here, earlier, or by
someone else meanwhile: the set is read back from the store after every write) are passed over.
The browser sends each action with the image it showed, so a double click never decides the
next image unseen.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import anywidget
import numpy as np
import polars as pl
import traitlets

from odinlab.errors import InSampleWarning, NotMaterializedError, OdinError, OptionError, UnknownValueError
from odinlab.store.fs import check_name
from odinlab.store.labels import DEFAULT_SET, UNDO, apply_label_set, in_effect
from odinlab.widgets.detail import nearest
from odinlab.widgets.gallery import ThumbnailCache, _Callbacks, describe_images, materialize_hint

__all__ = ["ReviewQueue"]

ACTIONS = ("accept", "change", "keep", "skip", "undo")
PAST = {"accept": "accepted", "change": "changed", "keep": "kept"}
HISTORY_SHOWN = 100  # decisions listed in the browser (all of them stay in ``queue.decisions``)


class _Neighbours:
    """The nearest images of an embedding (the detail view's search); its frame is read once, not once per image."""

    def __init__(self, embedding, n: int):
        self.frame, self.n = embedding.frame(), n

    def __call__(self, image_id: str) -> list[dict]:
        return nearest(self.frame, image_id, self.n)


def _plain(value):
    """A frame value as JSON carries it (floats rounded for the browser)."""
    if isinstance(value, float):
        return round(value, 6)
    return value.item() if isinstance(value, np.generic) else value


def _names(column: str, classes: list[str]) -> pl.Expr:
    """The class name of each index in ``column`` (null outside the classes)."""
    return pl.col(column).replace_strict(list(range(len(classes))), classes, default=None, return_dtype=pl.String)


class ReviewQueue(anywidget.AnyWidget):
    """Suspected label errors of ``model`` on ``images`` as a queue, most suspicious first.

    For the current image: the image large, its given and suggested labels with their
    probabilities, the top-``top_k`` probabilities and, with a fitted ``embedding``
    (:class:`odinlab.sampling.Embedding`), its nearest neighbours with their labels in the set.
    The buttons (and keys a, k, s, u, digits) call :meth:`accept`, :meth:`change`, :meth:`keep`,
    :meth:`skip` and :meth:`undo`; decisions go to ``label_set`` with ``who``. ``k`` and
    ``method`` go to ``label_errors``. ``current`` is the current item (None when every image is
    decided), ``decisions`` this queue's decisions as a frame.

    It follows the views' contract: ``ids`` (the queue, in rank order), ``selected_ids`` (the
    current image), ``show_selection(ids)`` (review only those), ``on_select(callback)``
    (called with ``[image_id]`` when a decision, skip or undo moves to another image).

    >>> _ = store.materialize(net, images="val", progress=False)
    >>> queue = ReviewQueue(store, "cnn@1", "val", label_set="doc-review", who="ann")
    >>> first = queue.current["image_id"]
    >>> queue.accept()                                  # what the Accept button does
    'corr-00001'
    >>> store.label_set("doc-review").filter(pl.col("image_id") == first)["corrected"].item()
    True
    >>> queue.undo(), queue.current["image_id"] == first
    ('corr-00002', True)
    """

    _esm = Path(__file__).with_name("review.js")
    _css = Path(__file__).with_name("review.css")

    message = traitlets.Unicode("").tag(sync=True)       # shown instead of the queue (it could not be built)
    note = traitlets.Unicode("").tag(sync=True)          # shown above it (in-sample probabilities)
    title = traitlets.Unicode("").tag(sync=True)
    item = traitlets.Dict().tag(sync=True)               # the current item ({} when none is left)
    image = traitlets.Bytes(b"").tag(sync=True)          # its PNG, ``size`` pixels on the longer side
    neighbour_images = traitlets.List(traitlets.Bytes()).tag(sync=True)  # PNGs of item["neighbours"]
    classes = traitlets.List(traitlets.Unicode()).tag(sync=True)
    counts = traitlets.Dict().tag(sync=True)             # decided, remaining, total, session
    history = traitlets.List(traitlets.Dict()).tag(sync=True)  # this queue's decisions, latest first
    status = traitlets.Unicode("").tag(sync=True)        # what the last action did, or why it failed
    size = traitlets.Int(256).tag(sync=True)
    version = traitlets.Int(0).tag(sync=True)            # bumped after every action: the browser re-arms

    def __init__(self, store, model, images=None, *, label_set: str = DEFAULT_SET, k: int | None = None,
                 method: str = "self_confidence", embedding=None, who: str | None = None, size: int = 256,
                 top_k: int = 5, n_neighbours: int = 8, **kwargs):
        for name, value, least in (("size", size, 32), ("top_k", top_k, 1), ("n_neighbours", n_neighbours, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise OptionError(f"{name} must be an int of at least {least}, not {value!r}.")
        super().__init__(**kwargs)
        self.store, self.label_set, self.method, self.who = store, label_set, method, who
        self.top_k, self.n_neighbours, self.size = top_k, n_neighbours, size
        self.record, self.ranked = None, None
        self._ids: list[str] = []
        self._rank: dict[str, int] = {}
        self._view: set[str] | None = None   # show_selection's restriction (None: the whole queue)
        self._decided: set[str] = set()
        self._mine: list[str] = []           # this queue's decisions (correction ids), in order
        self._current: str | None = None
        self._select_callbacks = _Callbacks()
        self._quiet = False
        self._thumbs = ThumbnailCache(store, 64)
        self._large = ThumbnailCache(store, self.size, capacity=32)
        self._neighbours = None
        self.on_msg(self._on_message)
        try:
            self._load(model, images, k, embedding)
        except OdinError as error:
            self.error, self.message = error, str(error)
            return
        self.error = None
        self._refresh()
        self._move(self._next(None))
        self._publish("")

    # -- building -------------------------------------------------------------------------------

    def _load(self, model, images, k, embedding) -> None:
        check_name(self.label_set, "label set name")
        if self.who is not None and not isinstance(self.who, str):
            raise OptionError(f"who must be text (the reviewer's name) or None, not {type(self.who).__name__}.")
        from odinlab.debug.error_analysis import label_errors  # sklearn-free, but keep the analyses lazy

        self.record = self.store.model(model)
        self.classes = list(self.record.classes)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                self.ranked = label_errors(self.store, self.record, images, k=k, method=self.method)
            except NotMaterializedError as error:
                hint = materialize_hint(self.record.model_id, describe_images(images))
                raise NotMaterializedError(f"{error}\nFor these images: {hint}") from error
        for warning in caught:  # still a warning for Python; the in-sample one is shown in the widget too
            if issubclass(warning.category, InSampleWarning):
                self.note = str(warning.message)
            warnings.warn(warning.message, stacklevel=3)
        if self.ranked.height == 0:
            raise UnknownValueError(f"No labelled images among the images given: {self.record.model_id} has "
                                    "nothing to review.")
        self._ids = self.ranked["image_id"].to_list()
        self._rank = {image_id: r for r, image_id in enumerate(self._ids)}
        if embedding is not None:
            self._neighbours = _Neighbours(embedding, self.n_neighbours)
        flagged = int(self.ranked["flagged"].sum())
        self.title = (f"Label review · {self.record.model_id} · {len(self._ids)} images by {self.method} "
                      f"({flagged} flagged) · label set {self.label_set!r}")

    # -- the queue ----------------------------------------------------------------------------------

    def _refresh(self) -> None:
        """Read which images have a decision in effect in the set (anyone's, any time)."""
        self._decided = set(in_effect(self.store.label_corrections, self.label_set)["image_id"].to_list())

    def _open(self, image_id: str | None) -> bool:
        """Whether ``image_id`` is in the queue shown and has no decision in effect."""
        return image_id in self._rank and image_id not in self._decided and (
            self._view is None or image_id in self._view)

    def _next(self, after: str | None) -> str | None:
        """The first undecided image after ``after`` in the queue, else from the top (skipped ones come back)."""
        pending = [i for i in self.ids if i not in self._decided]
        if not pending:
            return None
        if after is not None and after in self._rank:
            later = [i for i in pending if self._rank[i] > self._rank[after]]
            if later:
                return later[0]
        return pending[0]

    def _move(self, image_id: str | None, *, notify: bool = False) -> None:
        """Show ``image_id`` as the current item; ``notify``: tell on_select when it is another image."""
        moved = image_id != self._current
        self._current = image_id
        with self.hold_sync():
            if image_id is None:
                self.item, self.image, self.neighbour_images = {}, b"", []
            else:
                self.item = self._item(image_id)
                self.image = self._large([image_id])[0]
                self.neighbour_images = self._thumbs([n["image_id"] for n in self.item["neighbours"]])
        if notify and moved and not self._quiet:
            self._select_callbacks(self.selected_ids)

    def _item(self, image_id: str) -> dict:
        row = self.ranked.row(self._rank[image_id], named=True)
        keys = ("image_id", "label", "label_name", "suggested", "suggested_name", "p_label", "p_suggested",
                "label_quality", "flagged", "out_of_sample")
        item = {key: _plain(row.get(key)) for key in keys}
        probs = np.asarray(self.store.predictions(self.record, [image_id])["probabilities"][0], np.float64)
        top = np.argsort(-probs, kind="stable")[: self.top_k]
        item.update(rank=self._rank[image_id] + 1, method=self.method,
                    top=[{"class": int(c), "name": self.classes[c], "p": float(probs[c])} for c in top])
        item["neighbours"], item["evidence"] = self._nearest(image_id)
        return item

    def _nearest(self, image_id: str) -> tuple[list[dict], str]:
        """The neighbours with their labels in the set, or why there are none."""
        if self._neighbours is None:
            return [], ("no embedding: give ReviewQueue(..., embedding=Embedding(store, model, layer).fit(images)) "
                        "to see the nearest neighbours")
        try:
            found = self._neighbours(image_id)
        except ValueError as error:  # the image is not among the embedded ones
            return [], f"no neighbours: {error}"
        ids = [f["image_id"] for f in found]
        labels = apply_label_set(self.store.select(ids).frame.select("image_id", "label"),
                                 self.store.label_corrections, self.label_set)["label"].to_list()
        return [{"image_id": f["image_id"], "distance": round(float(f["distance"]), 6), "label": label,
                 "label_name": None if label is None else self.classes[label]}
                for f, label in zip(found, labels, strict=True)], ""

    def _publish(self, status: str) -> None:
        """Send the counts, the history and ``status``; bump the version (the browser re-arms its buttons)."""
        shown = self.ids
        decided = sum(i in self._decided for i in shown)
        decisions = self.decisions
        with self.hold_sync():
            self.counts = {"decided": decided, "remaining": len(shown) - decided, "total": len(shown),
                           "session": decisions["undone_by"].null_count(), "restricted": self._view is not None}
            self.history = [{k: _plain(v) for k, v in row.items() if k != "at"}
                            for row in decisions.reverse().head(HISTORY_SHOWN).iter_rows(named=True)]
            self.status = status
            self.version += 1

    # -- decisions (what the buttons call) ----------------------------------------------------------

    @property
    def current(self) -> dict | None:
        """The current item: image_id, rank, label(_name), suggested(_name), p_label, p_suggested,
        label_quality, flagged, out_of_sample, top, neighbours; None when nothing is left."""
        return None if self._current is None else dict(self.item)

    def accept(self) -> str:
        """Take the suggested label of the current image; returns the correction id."""
        return self._decide("accept", self._need("accept")["suggested"])

    def change(self, label) -> str:
        """Give the current image ``label`` (a class index or name); returns the correction id."""
        self._need("change")
        return self._decide("change", label)

    def keep(self) -> str:
        """Confirm the current image's given label; returns the correction id."""
        self._need("keep")
        return self._decide("keep", None)

    def skip(self) -> str | None:
        """Go to the next undecided image without writing anything; returns its id."""
        self._need("skip")
        self._refresh()
        self._move(self._next(self._current), notify=True)
        self._publish("skipped" if self._current else "")
        return self._current

    def undo(self) -> str:
        """Undo this queue's latest decision still in effect (``store.undo_correction``); returns
        the undo's id. The undone image becomes the current one again."""
        target = self._last_active()
        if target is None:
            raise UnknownValueError("Nothing to undo: this queue has no decision in effect "
                                    "(store.undo_correction(...) undoes any decision of the store).")
        undo_id = self.store.undo_correction(target, who=self.who)
        image_id = self.store.label_corrections.filter(pl.col("correction_id") == target)["image_id"].item()
        self._refresh()
        back = next((i for i in (image_id, self._current) if self._open(i)), None)  # re-decide the undone one
        self._move(back or self._next(None), notify=True)
        self._publish(f"undid {target} ({undo_id}) on {image_id}")
        return undo_id

    def _need(self, action: str) -> dict:
        if self.message:
            raise type(self.error)(self.message) if isinstance(self.error, OdinError) else OptionError(self.message)
        if self._current is None:
            raise UnknownValueError(f"Nothing to {action}: every image of the queue is decided in label set "
                                    f"{self.label_set!r} (undo() reopens the last one).")
        return self.item

    def _decide(self, action: str, label) -> str:
        image_id = self._current
        score = float(self.ranked["label_quality"][self._rank[image_id]])  # exact (the item's is rounded)
        common = dict(label_set=self.label_set, who=self.who, model=self.record.model_id, score=score,
                      method=self.method)
        if action == "keep":
            correction_id = self.store.keep_labels([image_id], **common)[0]
        else:
            correction_id = self.store.correct_labels([image_id], [label], action=action, **common)[0]
        self._mine.append(correction_id)
        row = self.store.label_corrections.filter(pl.col("correction_id") == correction_id).row(0, named=True)
        self._refresh()
        self._move(self._next(image_id), notify=True)
        self._publish(f"{PAST[action]} {image_id}: {self.classes[row['old_label']]} → "
                      f"{self.classes[row['new_label']]} ({correction_id})")
        return correction_id

    def _last_active(self) -> str | None:
        table = self.store.label_corrections
        undone = set(table.filter(pl.col("action") == UNDO)["undoes"].to_list())
        return next((c for c in reversed(self._mine) if c not in undone), None)

    @property
    def decisions(self) -> pl.DataFrame:
        """This queue's decisions in order: correction_id, image_id, action, old/new label and name,
        score, who, at, and undone_by (the undo's id, null while in effect)."""
        table = self.store.label_corrections
        undos = table.filter(pl.col("action") == UNDO).select(correction_id="undoes", undone_by="correction_id")
        mine = pl.DataFrame({"correction_id": self._mine}, schema={"correction_id": pl.String})
        return (mine.join(table, on="correction_id", how="left", maintain_order="left")
                .join(undos, on="correction_id", how="left", maintain_order="left")
                .select("correction_id", "image_id", "action",
                        "old_label", _names("old_label", self.classes).alias("old_name"),
                        "new_label", _names("new_label", self.classes).alias("new_name"),
                        "score", "who", "at", "undone_by"))

    # -- the browser -------------------------------------------------------------------------------

    def _on_message(self, widget, content, buffers) -> None:
        if not isinstance(content, dict) or content.get("kind") != "act" or content.get("action") not in ACTIONS:
            return
        action = content["action"]
        # a click meant for an image or decision the browser no longer shows (a double click): ignore it
        if action == "undo" and content.get("last") != self._last_active():
            self._publish("nothing undone: the decision shown was already undone")
            return
        if action != "undo" and content.get("image_id") != self._current:
            self._publish(f"nothing done: {content.get('image_id')} is no longer the current image")
            return
        try:
            if action == "change":
                self.change(content.get("label"))
            else:
                getattr(self, action)()
        except Exception as error:  # noqa: BLE001 - shown in the widget: a button never fails silently
            self._publish(f"{action} failed: {type(error).__name__}: {error}")

    # -- the contract ------------------------------------------------------------------------------

    @property
    def ids(self) -> list[str]:
        """The queue's images in rank order (only the shown selection's, when one is shown)."""
        return self._ids if self._view is None else [i for i in self._ids if i in self._view]

    @property
    def selected_ids(self) -> list[str]:
        """The current image ([] when none is left)."""
        return [] if self._current is None else [self._current]

    def show_selection(self, ids: list[str] | None) -> None:
        """Review only ``ids`` (None: the whole queue again); the current image stays when it is
        among them, else the first undecided one is shown. No callbacks fire."""
        if self.message:
            return
        self._view = None if ids is None else {str(i) for i in ids}
        self._quiet = True
        try:
            self._refresh()
            self._move(self._current if self._open(self._current) else self._next(None))
        finally:
            self._quiet = False
        self._publish("")

    def on_select(self, callback: Callable[[list[str]], None]) -> Callable:
        """Call ``callback([image_id])`` when an action moves the queue to another image ([] when done)."""
        return self._select_callbacks.add(callback)

    def __repr__(self) -> str:
        if self.message:
            return f"<ReviewQueue (not built): {self.message.splitlines()[0]}>"
        counts = self.counts
        return (f"<ReviewQueue {self.record.model_id} → {self.label_set!r}: {counts['decided']} decided, "
                f"{counts['remaining']} remaining>")
