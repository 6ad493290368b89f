"""How close each image is to a decision boundary, from what the store already has.

Two signals, each in [0, 1]: the prediction margin (``1 − (p_top1 − p_top2)``: high when the
model hesitates between two classes) and the geometry of the embedding (the share of an
image's ``k`` nearest neighbours whose prediction, or label, differs from its own: high in
neighbourhoods where classes meet). The score is their weighted mean, in [0, 1].
"""

from __future__ import annotations

import numpy as np
import polars as pl

from odinlab.errors import BoundaryError, NotMaterializedError
from odinlab.store.records import ModelRecord
from odinlab.store.selection import ImageSelection, Selection


def complete_predictions(store, record: ModelRecord, selection: Selection) -> pl.DataFrame:
    """``store.predictions(record, selection)``, refusing when some images have none stored.

    The sampling estimators need a prediction for every selected image: a silent gap would
    bias them, so the gap is an error that says how to fill it.

    >>> _ = store.materialize(net, images="val", progress=False)
    >>> complete_predictions(store, store.model("cnn@1"), store.select("val")).height
    269
    """
    frame = store.predictions(record, selection)
    if frame.height < len(selection):
        raise NotMaterializedError(
            f"{len(selection) - frame.height} of the {len(selection)} selected images have no stored "
            f"predictions of {record.model_id}; run store.materialize(model, images=...) for them first.")
    return frame


def embedding_coordinates(embedding, selection: Selection) -> np.ndarray | None:
    """(n, d) coordinates of the selected images from an :class:`Embedding`, an array aligned
    with the selection, or None.

    >>> embedding_coordinates(np.zeros((2, 2)), store.select(["digits-0000", "digits-0001"])).shape
    (2, 2)
    """
    if embedding is None:
        return None
    if hasattr(embedding, "coordinates"):
        return np.asarray(embedding.coordinates(selection).values, np.float32)
    coords = np.asarray(embedding, np.float32)
    if coords.ndim != 2 or len(coords) != len(selection):
        raise BoundaryError(f"embedding coordinates must be an (images, dims) array with one row per selected "
                            f"image ({len(selection)}), got shape {coords.shape}; pass an Embedding instead.")
    return coords


def neighbour_mixing(coords: np.ndarray, predicted: np.ndarray, labels: np.ndarray | None = None,
                     k: int = 15) -> np.ndarray:
    """Share of each point's ``k`` nearest neighbours whose prediction (and label) differs.

    With labels, the mean of the prediction and the label disagreement (unknown labels, < 0,
    are left out of the label part).

    >>> coords = np.array([[0.0], [0.1], [0.2], [5.0], [5.1], [5.2]])
    >>> neighbour_mixing(coords, np.array([0, 0, 1, 1, 1, 1]), k=2).round(2).tolist()
    [0.5, 0.5, 1.0, 0.0, 0.0, 0.0]
    """
    from sklearn.neighbors import NearestNeighbors

    n = len(coords)
    if n < 2:
        return np.zeros(n)
    k = min(k, n - 1)
    _, index = NearestNeighbors(n_neighbors=k + 1).fit(coords).kneighbors(coords)
    # drop each point itself (usually column 0; with duplicates it may be elsewhere)
    itself = np.arange(n)
    if (index[:, 0] == itself).all():
        others = index[:, 1:]
    else:
        others = np.array([row[row != i][:k] for i, row in enumerate(index)])
    mixing = (predicted[others] != predicted[:, None]).mean(axis=1)
    if labels is not None:
        known = (labels[others] >= 0) & (labels[:, None] >= 0)
        differ = (labels[others] != labels[:, None]) & known
        label_mix = np.divide(differ.sum(axis=1), known.sum(axis=1), out=np.zeros(n), where=known.sum(axis=1) > 0)
        mixing = np.where(labels >= 0, 0.5 * (mixing + label_mix), mixing)
    return mixing


def boundary_scores(store, model, images: ImageSelection = None, *, embedding=None, k: int = 15,
                    margin_weight: float = 0.5) -> pl.DataFrame:
    """Score every image by how close it is to a decision boundary, in [0, 1] (1: on it).

    ``score = margin_weight · (1 − margin) + (1 − margin_weight) · mixing`` where ``mixing``
    is the disagreement of the ``k`` nearest neighbours in ``embedding`` (an
    :class:`~odinlab.sampling.Embedding` or an (images, 2) array aligned with the selection);
    without an embedding the score is ``1 − margin``. Reads stored predictions only.
    ``model`` is a model id, name, record or registered module.

    >>> _ = store.materialize(net, images="val", progress=False)
    >>> scores = boundary_scores(store, "cnn@1", "val")
    >>> scores.columns, bool(scores["score"].is_between(0, 1).all())
    (['image_id', 'label', 'predicted', 'margin', 'mixing', 'score'], True)
    """
    if not 0 <= margin_weight <= 1:
        raise BoundaryError(f"margin_weight must be in [0, 1], got {margin_weight!r}.")
    record, selection = store.model(model), store.select(images)
    preds = complete_predictions(store, record, selection)
    predicted = preds["predicted"].to_numpy()
    labels = preds["label"].fill_null(-1).to_numpy().astype(np.int64)
    margin = np.clip(preds["margin"].to_numpy().astype(float), 0, 1)
    coords = embedding_coordinates(embedding, selection)
    if coords is None:
        mixing = np.full(len(selection), np.nan)
        score = 1 - margin
    else:
        mixing = neighbour_mixing(coords, predicted, labels, k)
        score = margin_weight * (1 - margin) + (1 - margin_weight) * mixing
    return pl.DataFrame({"image_id": preds["image_id"], "label": preds["label"], "predicted": predicted,
                         "margin": margin, "mixing": mixing, "score": np.clip(score, 0, 1)})
