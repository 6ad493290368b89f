"""Label corrections: reviewers' decisions beside the original labels, applied as named label sets.

The labels of the images table are never overwritten. Every decision is a row of the
``label_corrections`` table, and an undo is a row too, so the history only grows:

==============  ===========================================================================
correction_id   ``corr-00001``, ``corr-00002``... numbered across all sets, in commit order
label_set       the set the row belongs to (``"reviewed"`` by default)
image_id        the image decided on
action          ``change`` (a label the reviewer chose), ``accept`` (the suggested label
                taken), ``keep`` (the given label confirmed), ``undo`` (see ``undoes``)
old_label       the label in effect in the set just before the row
new_label       the label in effect in the set just after the row
who, at         who decided (default: the login name) and when (UTC)
model_id        the model that raised the suspicion, its ``score`` and ``method`` (optional)
note            free text
undoes          on an undo row: the decision it undoes (an undo cannot itself be undone)
==============  ===========================================================================

A label set gives each image the label of its latest decision that is not undone, else its
original label: undoing the latest decision on an image brings back the one before it.
``store.select(images, labels="reviewed")``, ``fit(..., labels="reviewed")`` and
``store.evaluate(..., labels="reviewed")`` use a set, and experiments record which one
(column ``label_set``; null for the original labels).

Each call writes its rows as one commit of the table under the store's writer lock, after
checking every argument: a batch of decisions is in the store whole or not at all, and two
processes deciding at once both keep every decision.
"""

from __future__ import annotations

import getpass
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from odinlab.errors import (
    LabelError,
    OptionError,
    UnknownImageError,
    UnknownValueError,
    closest,
    listing,
)
from odinlab.store.backend import Backend, writes
from odinlab.store.fs import check_name
from odinlab.store.selection import Selection

if TYPE_CHECKING:
    from odinlab.store.images import ImageCatalog
    from odinlab.store.models import ModelRegistry

TABLE = "label_corrections"
DEFAULT_SET = "reviewed"
UNDO = "undo"
ACTIONS = ("change", "accept")  # what correct_labels records; keep_labels records "keep"


class LabelBook:
    """Label corrections and the label sets they make (``store.correct_labels`` and friends)."""

    def __init__(self, backend: Backend, images: ImageCatalog, models: ModelRegistry):
        self._backend = backend
        self._images = images
        self._models = models

    @property
    def table(self) -> pl.DataFrame:
        """Every decision and undo ever recorded, in commit order (``store.label_corrections``).

        >>> store.label_corrections.columns[:6]
        ['correction_id', 'label_set', 'image_id', 'action', 'old_label', 'new_label']
        """
        return self._backend.tables.read(TABLE)

    @writes("correct labels")
    def correct_labels(self, image_ids, labels, *, label_set: str = DEFAULT_SET, action: str = "change",
                       who: str | None = None, model=None, score=None, method: str | None = None,
                       note: str | None = None) -> list[str]:
        """Record new labels for images in a label set; return the correction ids, one per image.

        ``labels`` are class indices or class names, one per image (or one for all).
        ``action`` is ``"change"`` (the reviewer's own label) or ``"accept"`` (the label a model
        suggested). ``model``, ``score`` (one number, or one per image) and ``method`` say what
        raised the suspicion. Everything is checked before anything is written.

        >>> store.correct_labels(["digits-0000", "digits-0001"], ["8", 7], model="cnn@1", score=[0.9, 0.7])
        ['corr-00001', 'corr-00002']
        >>> store.label_corrections.select("image_id", "action", "old_label", "new_label", "model_id").rows()
        [('digits-0000', 'change', 0, 8, 'cnn@1'), ('digits-0001', 'change', 1, 7, 'cnn@1')]
        >>> store.correct_labels("digits-0002", "eleven")
        Traceback (most recent call last):
        odinlab.errors.UnknownValueError: Unknown class 'eleven'. Classes: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 ...
        """
        self._backend.check_writable()
        if action not in ACTIONS:
            raise OptionError(f"action must be one of {listing(ACTIONS)}, not {action!r}; "
                              "to confirm the given label use store.keep_labels(...).")
        ids = self._image_ids(image_ids)
        new = self._class_indices(labels, len(ids))
        return self._decide(ids, new, action, label_set, who, model, score, method, note)

    @writes("keep labels")
    def keep_labels(self, image_ids, *, label_set: str = DEFAULT_SET, who: str | None = None, model=None,
                    score=None, method: str | None = None, note: str | None = None) -> list[str]:
        """Record that a reviewer confirmed the labels in effect (action ``keep``); return the ids.

        A kept image counts as reviewed (its ``correction_id`` in :meth:`label_set`), and a
        kept label is what a later undo of a change on that image returns to.

        >>> store.keep_labels(["digits-0003"], model="cnn@1", score=0.4)
        ['corr-00001']
        >>> store.label_set().filter(pl.col("correction_id").is_not_null()).select("label", "corrected").row(0)
        (3, False)
        """
        self._backend.check_writable()
        ids = self._image_ids(image_ids)
        return self._decide(ids, None, "keep", label_set, who, model, score, method, note)

    @writes("undo a label correction")
    def undo_correction(self, correction_id: str | None = None, *, label_set: str = DEFAULT_SET,
                        who: str | None = None, note: str | None = None) -> str:
        """Undo a decision (default: the latest one of ``label_set`` not undone); return the undo's id.

        The undo is a new row (action ``undo``): nothing is deleted. The image gets back the
        label of its previous decision still in effect, else its original label. Calling it
        again undoes the decision before. An undo cannot be undone: record the decision again.
        With ``correction_id``, ``label_set`` is that correction's own.

        >>> store.correct_labels(["digits-0000"], [8])
        ['corr-00001']
        >>> store.undo_correction()
        'corr-00002'
        >>> store.label_set().filter(pl.col("image_id") == "digits-0000").select("label", "corrected").row(0)
        (0, False)
        >>> store.undo_correction()
        Traceback (most recent call last):
        odinlab.errors.UnknownValueError: Nothing to undo in label set 'reviewed': its 1 decision(s) are all undone.
        """
        self._backend.check_writable()
        table = self.table
        target = self._undo_target(table, correction_id, label_set)
        label_set, image_id = target["label_set"], target["image_id"]
        before = self._labels_in_effect(table, label_set, [image_id])[0]
        undo_id = _next_ids(table, 1)[0]
        row = {**_empty_row(), "correction_id": undo_id, "label_set": label_set, "image_id": image_id,
               "action": UNDO, "old_label": before, "who": _who(who), "at": datetime.now(UTC),
               "note": _text(note, "note"), "undoes": target["correction_id"]}
        row["new_label"] = self._labels_in_effect(pl.concat([table, _frame([row])], how="diagonal_relaxed"),
                                                  label_set, [image_id])[0]
        self._backend.tables.append(TABLE, _frame([row]))
        return undo_id

    def label_set(self, label_set: str = DEFAULT_SET) -> pl.DataFrame:
        """Every image's label in a set: image_id, label, label_name, original_label, corrected, correction_id.

        ``corrected`` is true where the set's label differs from the original; ``correction_id``
        is the decision in effect (null where none: the original label stands).

        >>> _ = store.correct_labels(["digits-0000"], ["8"])
        >>> store.label_set("reviewed").filter(pl.col("corrected")).rows()
        [('digits-0000', 8, '8', 0, True, 'corr-00001')]
        >>> store.label_set("reveiwed")
        Traceback (most recent call last):
        odinlab.errors.UnknownValueError: No label set 'reveiwed' in the store. Did you mean: reviewed? ...
        """
        table = self.table
        check_label_set(table, label_set)
        images = self._images.table.select("image_id", pl.col("label").alias("original_label"))
        decided = in_effect(table, label_set)
        frame = images.join(decided, on="image_id", how="left", maintain_order="left").with_columns(
            label=pl.coalesce("label", "original_label"))
        classes = self._images.classes
        label_name = pl.col("label").replace_strict(list(range(len(classes))), classes, default=None,
                                                    return_dtype=pl.String)
        corrected = pl.col("label").ne_missing(pl.col("original_label"))
        return frame.select("image_id", "label", label_name.alias("label_name"), "original_label",
                            corrected.alias("corrected"), "correction_id")

    # -- internals -------------------------------------------------------------------------

    def _decide(self, ids: list[str], new: list[int] | None, action: str, label_set, who, model, score,
                method, note) -> list[str]:
        """Check the rest of the arguments, then write one row per image as one commit."""
        check_name(label_set, "label set name")
        rows = {"who": _who(who), "model_id": None if model is None else self._models.record(model).model_id,
                "method": _text(method, "method"), "note": _text(note, "note"), "at": datetime.now(UTC)}
        scores = _scores(score, len(ids))
        table = self.table  # read under the writer lock: old labels and ids follow the latest commit
        old = self._labels_in_effect(table, label_set, ids)
        if new is None:  # keep: the label in effect is confirmed
            unlabelled = [i for i, label in zip(ids, old, strict=True) if label is None]
            if unlabelled:
                raise LabelError(f"{len(unlabelled)} image(s) have no label to keep, e.g. {listing(unlabelled[:5])}; "
                                 "give them one with store.correct_labels(...).")
            new = old
        correction_ids = _next_ids(table, len(ids))
        frame = _frame([{**_empty_row(), **rows, "correction_id": c, "label_set": label_set, "image_id": i,
                         "action": action, "old_label": o, "new_label": n, "score": s}
                        for c, i, o, n, s in zip(correction_ids, ids, old, new, scores, strict=True)])
        self._backend.tables.append(TABLE, frame)
        return correction_ids

    def _image_ids(self, image_ids) -> list[str]:
        """The ids asked for, each once and each in the store."""
        if isinstance(image_ids, str):
            image_ids = [image_ids]
        elif isinstance(image_ids, Selection):
            image_ids = image_ids.ids
        elif isinstance(image_ids, pl.DataFrame) and "image_id" in image_ids.columns:
            image_ids = image_ids["image_id"]
        if not isinstance(image_ids, Sequence | pl.Series | np.ndarray):
            raise OptionError(f"image_ids must be an image id, a list of ids, a frame with image_id or a selection, "
                              f"not {type(image_ids).__name__}.")
        ids = [str(i) for i in image_ids]
        if not ids:
            raise OptionError("No image ids given: give the ids of the images decided on.")
        if len(set(ids)) < len(ids):
            repeated = sorted({i for i in ids if ids.count(i) > 1})
            raise OptionError(f"Image ids given more than once: {listing(repeated)}; give one decision per image.")
        known = self._images.table["image_id"].to_list()
        held = set(known)
        missing = [i for i in ids if i not in held]
        if missing:
            raise UnknownImageError(f"{len(missing)} unknown image id(s): {listing(missing[:5])}."
                                    f"{closest(missing[0], known)} See store.images for the ids.")
        return ids

    def _class_indices(self, labels, n: int) -> list[int]:
        """Class indices from indices or names, one per image (a single label stands for all)."""
        if isinstance(labels, str | int | np.integer) and not isinstance(labels, bool):
            labels = [labels] * n
        elif isinstance(labels, pl.Series | np.ndarray):
            labels = labels.to_list()
        if not isinstance(labels, Sequence):
            raise OptionError(f"labels must be class indices or names, not {type(labels).__name__}.")
        if len(labels) != n:
            raise OptionError(f"{n} image id(s) but {len(labels)} label(s); give one label per image "
                              "(or a single label for all).")
        classes = self._images.classes
        out, bad = [], []
        for label in labels:
            if isinstance(label, str) and label in classes:
                out.append(classes.index(label))
            elif isinstance(label, int | np.integer) and not isinstance(label, bool) and 0 <= label < len(classes):
                out.append(int(label))
            else:
                bad.append(label)
        if bad:
            raise UnknownValueError(f"Unknown class {listing(map(repr, bad[:5]))}. Classes: {listing(classes)} "
                                    f"(give a name, or an index from 0 to {len(classes) - 1}).")
        return out

    def _labels_in_effect(self, table: pl.DataFrame, label_set: str, ids: list[str]) -> list[int | None]:
        originals = self._images.table.select("image_id", "label")
        wanted = pl.DataFrame({"image_id": ids}).join(originals, on="image_id", how="left", maintain_order="left")
        return apply_label_set(wanted, table, label_set)["label"].to_list()

    @staticmethod
    def _undo_target(table: pl.DataFrame, correction_id: str | None, label_set: str) -> dict:
        """The decision to undo: the one named, or the latest of the set not undone."""
        undone = table.filter(pl.col("action") == UNDO)
        if correction_id is None:
            check_label_set(table, label_set)
            decisions = table.filter((pl.col("label_set") == label_set) & (pl.col("action") != UNDO))
            active = decisions.filter(~pl.col("correction_id").is_in(undone["undoes"].implode()))
            if active.height == 0:
                raise UnknownValueError(f"Nothing to undo in label set {label_set!r}: its {decisions.height} "
                                        "decision(s) are all undone.")
            return active.row(-1, named=True)
        if not isinstance(correction_id, str):
            raise OptionError(f"correction_id must be an id such as 'corr-00001' (or None for the latest), "
                              f"not {correction_id!r}.")
        found = table.filter(pl.col("correction_id") == correction_id)
        if found.height == 0:
            hint = closest(str(correction_id), table["correction_id"])
            raise UnknownValueError(f"No label correction {correction_id!r}.{hint} See store.label_corrections "
                                    "for the ids.")
        target = found.row(0, named=True)
        if target["action"] == UNDO:
            raise OptionError(f"{correction_id} is itself an undo (of {target['undoes']}); an undo cannot be undone. "
                              f"Record the decision again with store.correct_labels(...).")
        by = undone.filter(pl.col("undoes") == correction_id)["correction_id"]
        if by.len():
            raise OptionError(f"{correction_id} was already undone by {by[0]}.")
        return target


# -- label sets as frames (also used by ImageCatalog.select) ----------------------------------

def in_effect(corrections: pl.DataFrame, label_set: str) -> pl.DataFrame:
    """image_id, label, correction_id of each image that has a decision in effect in the set.

    >>> in_effect(store.label_corrections, "reviewed").height
    0
    """
    rows = corrections.filter(pl.col("label_set") == label_set)
    undone = rows.filter(pl.col("action") == UNDO)["undoes"].implode()
    decisions = rows.filter((pl.col("action") != UNDO) & ~pl.col("correction_id").is_in(undone))
    return decisions.unique("image_id", keep="last", maintain_order=True).select(
        "image_id", pl.col("new_label").alias("label"), "correction_id")


def apply_label_set(frame: pl.DataFrame, corrections: pl.DataFrame, label_set: str) -> pl.DataFrame:
    """``frame`` (with image_id and label columns) with the set's labels in ``label``, rows in order.

    >>> frame = pl.DataFrame({"image_id": ["digits-0000"], "label": [0]})
    >>> apply_label_set(frame, store.label_corrections, "reviewed")["label"].to_list()
    [0]
    """
    decided = in_effect(corrections, label_set).select("image_id", _set_label="label",
                                                       _decided=pl.lit(True))
    return (frame.join(decided, on="image_id", how="left", maintain_order="left")
            .with_columns(label=pl.when(pl.col("_decided")).then(pl.col("_set_label")).otherwise(pl.col("label")))
            .drop("_set_label", "_decided"))


def check_label_set(corrections: pl.DataFrame, label_set: object) -> None:
    """Refuse a label set with no recorded decision (a typo would silently give the original labels).

    >>> check_label_set(store.label_corrections, "reviewed")
    Traceback (most recent call last):
    odinlab.errors.UnknownValueError: No label set 'reviewed' in the store. Label sets: (none). ...
    """
    if not isinstance(label_set, str):
        raise OptionError(f"labels= names a label set (e.g. 'reviewed'), or is None for the original labels; "
                          f"not {type(label_set).__name__}.")
    sets = corrections["label_set"].unique(maintain_order=True).to_list()
    if label_set not in sets:
        raise UnknownValueError(f"No label set {label_set!r} in the store.{closest(label_set, sets)} Label sets: "
                                f"{listing(sets)}. A set starts with its first store.correct_labels(..., "
                                f"label_set={label_set!r}); labels=None means the original labels.")


# -- rows ---------------------------------------------------------------------------------------

def _empty_row() -> dict:
    from odinlab.store.tables import SCHEMAS

    return dict.fromkeys(SCHEMAS[TABLE])


def _frame(rows: list[dict]) -> pl.DataFrame:
    from odinlab.store.tables import SCHEMAS

    return pl.DataFrame(rows, schema=SCHEMAS[TABLE])


def _next_ids(table: pl.DataFrame, n: int) -> list[str]:
    """Ids after the table's rows (allocated under the writer lock, so never twice)."""
    return [f"corr-{table.height + k:05d}" for k in range(1, n + 1)]


def _who(who: str | None) -> str:
    if who is None:
        try:
            return getpass.getuser()
        except (OSError, KeyError):  # no login name (some containers): say so rather than fail
            return "unknown"
    return _text(who, "who")


def _text(value, what: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise OptionError(f"{what} must be text (or None), not {type(value).__name__}.")
    return value


def _scores(score, n: int) -> list[float | None]:
    """One score per image from None, one number, or one number per image."""
    if score is None:
        return [None] * n
    if isinstance(score, int | float | np.number) and not isinstance(score, bool):
        return [float(score)] * n
    if isinstance(score, Sequence | pl.Series | np.ndarray) and len(score) == n:
        values = list(score)
        if all(isinstance(s, int | float | np.number) and not isinstance(s, bool) for s in values):
            return [float(s) for s in values]
    raise OptionError(f"score must be a number, or one number per image ({n}), not {score!r}.")
