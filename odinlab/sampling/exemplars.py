"""Boundary exemplars: nearby images on either side of a decision boundary, and the space between classes.

:func:`boundary_pairs` finds pairs of images that are close in the embedding but predicted
differently, the closest first. :func:`between_classes` walks the straight line between two
class regions of the embedding, maps each point back to the layer's features with UMAP's
inverse transform and runs it through the rest of the network, showing where the prediction
flips.
"""

from __future__ import annotations

import warnings

import numpy as np
import polars as pl

from odinlab.errors import BoundaryError, UnknownValueError
from odinlab.sampling.boundary import complete_predictions


def boundary_pairs(store, model, embedding, *, n: int = 20, k: int = 5, distinct: bool = True) -> pl.DataFrame:
    """The ``n`` closest pairs of images with different predictions among ``k`` nearest neighbours.

    ``embedding`` is a fitted :class:`~odinlab.sampling.Embedding`; ``model`` (id, name,
    record or module) gives the predictions. With ``distinct`` each image appears in one pair
    at most. Columns: image_id_a, image_id_b, distance, predicted_a, predicted_b, label_a, label_b.

    >>> _ = store.materialize(net, images="val", progress=False)
    >>> emb = odinlab.sampling.Embedding(store, "cnn@1", "head.fc1", reducer="pca", progress=False).fit("val")
    >>> pairs = boundary_pairs(store, "cnn@1", emb, n=3)
    >>> pairs.height, bool((pairs["predicted_a"] != pairs["predicted_b"]).all())
    (3, True)
    """
    from sklearn.neighbors import NearestNeighbors

    embedding._check_fitted()
    record = store.model(model)
    ids = np.asarray(embedding.image_ids_)
    preds = complete_predictions(store, record, embedding.selection_)
    predicted = preds["predicted"].to_numpy()
    labels = preds["label"].to_numpy()
    coords = embedding.embedding_
    k = min(k, len(ids) - 1)
    if k < 1:
        raise BoundaryError("boundary_pairs needs an embedding of at least 2 images.")
    distance, index = NearestNeighbors(n_neighbors=k + 1).fit(coords).kneighbors(coords)
    a = np.repeat(np.arange(len(ids)), k + 1)
    b, d = index.ravel(), distance.ravel()
    keep = (a < b) & (predicted[a] != predicted[b])
    a, b, d = a[keep], b[keep], d[keep]
    chosen = _closest(a, b, d, n, distinct)
    a, b = a[chosen], b[chosen]
    return pl.DataFrame({"image_id_a": ids[a], "image_id_b": ids[b], "distance": d[chosen],
                         "predicted_a": predicted[a], "predicted_b": predicted[b],
                         "label_a": labels[a], "label_b": labels[b]})


def _closest(a: np.ndarray, b: np.ndarray, d: np.ndarray, n: int, distinct: bool) -> np.ndarray:
    """Positions of the ``n`` closest pairs, each image in one pair at most when ``distinct``."""
    chosen, used = [], set()
    for i in np.argsort(d, kind="stable"):
        if distinct and (a[i] in used or b[i] in used):
            continue
        chosen.append(i)
        used.update((a[i], b[i]))
        if len(chosen) == n:
            break
    return np.array(chosen, int)


def between_classes(embedding, a, b, *, steps: int = 7, module=None, model=None) -> pl.DataFrame:
    """Points on the line between the regions of predicted classes ``a`` and ``b``, classified.

    The ends are the median embedding coordinates of the images predicted as each class;
    every point is inverse-transformed and run through the network from the embedded layer
    on (:meth:`Embedding.predict`, with ``module`` or the session's module). Columns: t (0 at
    ``a``, 1 at ``b``), x, y, predicted, p (its probability), p_a, p_b. ``model=`` is the old
    name of ``module=``.

    >>> _ = store.materialize(net, images="val", progress=False)
    >>> emb = odinlab.sampling.Embedding(store, "cnn@1", "head.fc1", reducer="pca", progress=False).fit("val")
    >>> between_classes(emb, "0", "1", steps=3)["t"].to_list()
    [0.0, 0.5, 1.0]
    """
    if model is not None:  # the README showed model=; kept one release
        warnings.warn("between_classes(model=...) is now module=...", DeprecationWarning, stacklevel=2)
        module = module if module is not None else model
    embedding._check_fitted()
    classes = embedding.record.classes
    ia, ib = (_class_index(classes, c) for c in (a, b))
    preds = complete_predictions(embedding.store, embedding.record, embedding.selection_)
    predicted = preds["predicted"].to_numpy()
    ends = []
    for c in (ia, ib):
        if not (predicted == c).any():
            raise BoundaryError(f"No embedded image is predicted as {classes[c]!r}; pick another class.")
        ends.append(np.median(embedding.embedding_[predicted == c], axis=0))
    t = np.linspace(0, 1, steps)
    points = ends[0][None, :] * (1 - t[:, None]) + ends[1][None, :] * t[:, None]
    probs = embedding.predict(points, module=module)
    return pl.DataFrame({"t": t, "x": points[:, 0], "y": points[:, 1] if points.shape[1] > 1 else 0.0,
                         "predicted": probs.argmax(axis=1), "p": probs.max(axis=1), "p_a": probs[:, ia],
                         "p_b": probs[:, ib]})


def _class_index(classes: tuple[str, ...], value) -> int:
    if isinstance(value, int | np.integer) and not isinstance(value, bool) and 0 <= value < len(classes):
        return int(value)
    if str(value) in classes:
        return list(classes).index(str(value))
    raise UnknownValueError(f"Unknown class {value!r}. Classes: {', '.join(classes)}.")
