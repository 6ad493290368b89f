"""Error analysis from stored predictions: what a model gets wrong, how sure it was, and why.

Everything here reads ``store.predictions(model, images)`` (materialize first), so it costs
no forward pass; results that need a computation are cached in the store. Every function
takes ``(store, model, images=None, *, options)`` and returns a polars frame whose columns
follow the package's vocabulary: ``label``/``label_name`` for the given class,
``predicted``/``predicted_name`` for the predicted one, ``image_id``/``image_ids`` for images.
Draw the results with :mod:`odinlab.draw` (e.g. ``draw.confusion.confusion_figure``). Clusters of
the mistakes (``error_exemplars``, ``error_clusters``) live in :mod:`odinlab.debug.error_clusters`.
"""

from __future__ import annotations

import warnings

import numpy as np
import polars as pl

from odinlab.errors import InSampleWarning, NotMaterializedError, OptionError
from odinlab.store.records import ModelRecord
from odinlab.store.selection import ImageSelection, Selection

# Columns of stored predictions that per-image results keep, after the image's id and label.
# ``held_out``/``predicted_by`` say whose probabilities: a fold model's held-out ones or the version's own.
SOURCE_COLUMNS = ("held_out", "predicted_by")
PREDICTION_COLUMNS = ("predicted", "predicted_name", "confidence", "margin", "loss", "correct", *SOURCE_COLUMNS)


def confusion_matrix(store, model, images: ImageSelection = None) -> pl.DataFrame:
    """One row per cell (label, predicted) of the confusion matrix, with the images in it.

    Columns: label, label_name, predicted, predicted_name, count, image_ids (the ids of the
    images in that cell, in selection order). Every cell is present, empty ones with count 0,
    in row-major order, so ``frame["count"].to_numpy().reshape(n, n)`` is the matrix.

    >>> _ = store.materialize(net, images="val", progress=False)
    >>> cells = confusion_matrix(store, "cnn@1", "val")
    >>> cells.columns
    ['label', 'label_name', 'predicted', 'predicted_name', 'count', 'image_ids']
    >>> int(cells["count"].sum()), cells.height
    (269, 100)
    >>> cell = cells.filter((pl.col("label") == 3) & (pl.col("predicted") == 3)).row(0, named=True)
    >>> len(cell["image_ids"]) == cell["count"]
    True
    """
    record = store.model(model)
    frame, _ = _stored_predictions(store, record, store.select(images))
    return _cells(frame, record.classes)


def per_class_metrics(store, model, images: ImageSelection = None) -> pl.DataFrame:
    """Precision, recall, F1 and support per class (columns label, label_name, ...).

    >>> _ = store.materialize(net, images="val", progress=False)
    >>> per_class_metrics(store, "cnn@1", "val").columns
    ['label', 'label_name', 'precision', 'recall', 'f1', 'support']
    """
    record = store.model(model)
    frame, _ = _stored_predictions(store, record, store.select(images))
    n = record.num_classes
    matrix = _cells(frame, record.classes)["count"].to_numpy().reshape(n, n).astype(float)
    hits, predicted, actual = np.diag(matrix), matrix.sum(0), matrix.sum(1)
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    recall = np.divide(hits, actual, out=np.zeros_like(hits), where=actual > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(hits), where=total > 0)
    return pl.DataFrame({"label": np.arange(n), "label_name": list(record.classes), "precision": precision,
                         "recall": recall, "f1": f1, "support": actual.astype(np.int64)})


def hardness(store, model, images: ImageSelection = None) -> pl.DataFrame:
    """Per image: its prediction and the entropy of the predicted distribution (nats).

    Sorted hardest first (highest entropy); the images' columns (split, metadata) come last.

    >>> _ = store.materialize(net, images="val", progress=False)
    >>> hard = hardness(store, "cnn@1", "val")
    >>> hard["entropy"].is_sorted(descending=True), hard.columns[:4]
    (True, ['image_id', 'label', 'label_name', 'predicted'])
    """
    record = store.model(model)
    frame, selection = _stored_predictions(store, record, store.select(images))
    probs = _probabilities(frame)
    entropy = -(probs * np.log(np.clip(probs, 1e-12, 1))).sum(axis=1)
    return _per_image(frame.with_columns(entropy=pl.Series(entropy, dtype=pl.Float64)), selection,
                      (*PREDICTION_COLUMNS, "entropy")).sort("entropy", descending=True, maintain_order=True)


def confident_mistakes(store, model, images: ImageSelection = None, *, k: int = 20) -> pl.DataFrame:
    """The ``k`` misclassified images the model was most sure about, with their metadata.

    >>> _ = store.materialize(net, images="val", progress=False)
    >>> mistakes = confident_mistakes(store, "cnn@1", "val", k=3)
    >>> mistakes["correct"].to_list(), "ink" in mistakes.columns
    ([False, False, False], True)
    """
    record = store.model(model)
    frame, selection = _stored_predictions(store, record, store.select(images))
    wrong = frame.filter(~pl.col("correct")).sort("confidence", descending=True, maintain_order=True).head(k)
    return _per_image(wrong, selection, PREDICTION_COLUMNS)


def label_errors(store, model, images: ImageSelection = None, *, k: int | None = None,
                 method: str = "self_confidence") -> pl.DataFrame:
    """Every labelled image ranked by label quality, the most probably mislabelled first.

    ``label_quality`` is ``method``'s score (:mod:`odinlab.debug.label_quality`: the probability of
    the given label, or the normalized margin); ``flagged`` marks confident learning's estimate of
    the wrong labels (Northcutt et al., 2021: per class, as many of its lowest-scored images as the
    calibrated confident joint says are mislabelled); ``suggested`` is the most probable other class.
    ``k`` keeps the top ``k``. Held-out probabilities from ``store.cross_validate`` are used where they
    exist (``held_out``, ``predicted_by``); ``out_of_sample`` says the probabilities come from a model
    that did not train on the image (held out, or outside every training run of the version and its
    ancestors): only those are to be trusted, and an :class:`~odinlab.errors.InSampleWarning` says
    how many are not. The images' columns (split, metadata) come last. :func:`label_noise` gives
    the estimated errors per class.

    >>> _ = store.materialize(net, images="val", progress=False)
    >>> ranked = label_errors(store, "cnn@1", "val", k=5)
    >>> ranked.columns[:7], ranked.height
    (['image_id', 'label', 'label_name', 'label_quality', 'flagged', 'suggested', 'suggested_name'], 5)
    >>> ranked["label_quality"].is_sorted()
    True
    """
    from odinlab.debug import label_quality

    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise OptionError(f"k must be a positive int (or None for every image), not {k!r}.")
    record = store.model(model)
    frame, selection = _stored_predictions(store, record, store.select(images))
    probs, labels = _probabilities(frame), frame["label"].to_numpy().astype(np.int64)
    score = label_quality.scores(probs, labels, method)
    suggested, p_suggested = label_quality.other_best(probs, labels)
    scored = frame.with_columns(
        label_quality=pl.Series(score, dtype=pl.Float64),
        flagged=pl.Series(label_quality.flagged(probs, labels, method) if len(labels) else [], dtype=pl.Boolean),
        suggested=pl.Series(suggested, dtype=pl.Int64),
        suggested_name=_named(pl.Series(suggested, dtype=pl.Int64), record.classes),
        p_label=pl.Series(probs[np.arange(len(labels)), labels], dtype=pl.Float64),
        p_suggested=pl.Series(p_suggested, dtype=pl.Float64),
        out_of_sample=pl.col("held_out") | ~pl.col("image_id").is_in(_training_images(store, record).implode()),
    )
    _warn_in_sample(scored, record)
    columns = ("label_quality", "flagged", "suggested", "suggested_name", "p_label", "p_suggested", "out_of_sample",
               *SOURCE_COLUMNS)
    ranked = _per_image(scored, selection, columns).sort(["label_quality", "p_suggested"], descending=[False, True],
                                                         maintain_order=True)
    return ranked if k is None else ranked.head(k)


def label_noise(store, model, images: ImageSelection = None) -> pl.DataFrame:
    """Per class: images labelled with it, the estimated number of wrong labels among them (confident
    learning's calibrated confident joint) and that share.

    >>> _ = store.materialize(net, images="val", progress=False)
    >>> label_noise(store, "cnn@1", "val").columns
    ['label', 'label_name', 'n', 'estimated_errors', 'noise_rate']
    """
    from odinlab.debug import label_quality

    record = store.model(model)
    frame, _ = _stored_predictions(store, record, store.select(images))
    probs, labels = _probabilities(frame), frame["label"].to_numpy().astype(np.int64)
    n_classes = len(record.classes)
    counts = np.bincount(labels, minlength=n_classes)
    errors = label_quality.errors_per_class(probs, labels) if len(labels) else np.zeros(n_classes, np.int64)
    errors = np.pad(errors, (0, n_classes - len(errors)))
    return pl.DataFrame({"label": np.arange(n_classes), "label_name": list(record.classes), "n": counts,
                         "estimated_errors": errors,
                         "noise_rate": np.where(counts > 0, errors / np.maximum(counts, 1), 0.0)})


def confusion_figure(store, model, images: ImageSelection = None):
    """Deprecated: draw ``confusion_matrix``'s frame with ``odinlab.draw.confusion.confusion_figure``.

    >>> import warnings
    >>> _ = store.materialize(net, images="val", progress=False)
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     figure = confusion_figure(store, "cnn@1", "val")
    >>> figure.data[0].type, caught[0].category.__name__
    ('heatmap', 'DeprecationWarning')
    """
    warnings.warn("error_analysis.confusion_figure(store, model, images) is deprecated; use "
                  "odinlab.draw.confusion.confusion_figure(error_analysis.confusion_matrix(store, model, images)).",
                  DeprecationWarning, stacklevel=2)
    # Drawing stays out of the analysis' imports (no plotly for analyses).
    from odinlab.draw.confusion import confusion_figure as draw

    record = store.model(model)
    return draw(confusion_matrix(store, record, images), title=f"Confusion matrix of {record.model_id}")


# -- helpers ------------------------------------------------------------------------------

def _stored_predictions(store, record: ModelRecord, selection: Selection) -> tuple[pl.DataFrame, Selection]:
    """Stored predictions of the selection's labelled images (aligned with the returned selection
    of those images), with ``predicted_name``; refuses clearly when some are not materialized."""
    selection = selection.where(pl.col("label").is_not_null())
    frame = store.predictions(record, selection)
    if frame.height < len(selection):
        raise NotMaterializedError(
            f"{len(selection) - frame.height} of the {len(selection)} selected images have no stored predictions "
            f"of {record.model_id}; run store.materialize(model, images=...) for them first."
        )
    return frame.with_columns(predicted_name=_named("predicted", record.classes)), selection


def _cells(frame: pl.DataFrame, classes: tuple[str, ...]) -> pl.DataFrame:
    """Every (label, predicted) cell in row-major order, with its count and image ids."""
    n = len(classes)
    grid = pl.DataFrame({"label": np.repeat(np.arange(n), n), "predicted": np.tile(np.arange(n), n)},
                        schema={"label": pl.Int64, "predicted": pl.Int64})
    found = frame.group_by("label", "predicted", maintain_order=True).agg(
        count=pl.len().cast(pl.Int64), image_ids=pl.col("image_id"))
    return grid.join(found, on=["label", "predicted"], how="left", maintain_order="left").select(
        "label", label_name=_named("label", classes), predicted="predicted",
        predicted_name=_named("predicted", classes),
        count=pl.col("count").fill_null(0),
        image_ids=pl.col("image_ids").fill_null(pl.lit([], dtype=pl.List(pl.String))),
    )


def _named(column: str | pl.Series, classes: tuple[str, ...]) -> pl.Expr:
    """The class names of a column of class indices."""
    column = pl.col(column) if isinstance(column, str) else pl.lit(column)
    return column.replace_strict(dict(enumerate(classes)), default=None, return_dtype=pl.String)


def _per_image(frame: pl.DataFrame, selection: Selection, columns) -> pl.DataFrame:
    """Id and label first, then ``columns``, then the rest of the images' columns (split, metadata)."""
    first = ("image_id", "label", "label_name")
    rest = [c for c in selection.frame.columns if c not in first and c not in columns]
    return frame.select(*first, *columns, *rest)


def _probabilities(frame: pl.DataFrame) -> np.ndarray:
    return np.stack(frame["probabilities"].to_numpy()) if frame.height else np.zeros((0, 1))


def _training_images(store, record: ModelRecord) -> pl.Series:
    """Every image the version learned from: its training runs' and its ancestors' (fine-tuning keeps them)."""
    lineage = [record.model_id, *record.lineage]
    runs = store.experiments.filter(pl.col("model_id").is_in(lineage) & pl.col("train_set").is_not_null())
    sets = store.image_sets.filter(pl.col("set_id").is_in(runs["train_set"].implode()))
    return sets["image_id"].unique()


def _warn_in_sample(scored: pl.DataFrame, record: ModelRecord) -> None:
    in_sample = scored.height - int(scored["out_of_sample"].sum())
    if in_sample:
        warnings.warn(
            f"{in_sample} of these {scored.height} images are in the training set of {record.model_id} (or of an "
            "ancestor) and have no held-out probabilities: a model that learned a wrong label is sure of it, so "
            f"their label quality is overrated. Run store.cross_validate(MyNet, images, model={record.model_id!r}) "
            "first to judge them out of sample.", InSampleWarning, stacklevel=3)


def __getattr__(name: str):
    # The clusters live in their own module (it imports this one's helpers): reached from here too.
    if name in ("error_clusters", "error_exemplars"):
        from odinlab.debug import error_clusters

        return getattr(error_clusters, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["confident_mistakes", "confusion_figure", "confusion_matrix", "error_clusters", "error_exemplars",
           "hardness", "label_errors", "label_noise", "per_class_metrics"]
