"""Label quality from predicted probabilities: scores for every image and confident learning.

Pure numpy over ``probs`` (N, classes) and given ``labels`` (N,), written from Northcutt, Jiang and
Chuang, "Confident Learning: Estimating Uncertainty in Dataset Labels" (JAIR 2021):

- a score per image, low where the given label is probably wrong: ``self_confidence`` (the
  probability of the given label) or ``normalized_margin`` (that probability minus the largest
  other one);
- per-class thresholds ``t_j`` (the mean probability of class j over the images labelled j), the
  confident joint ``C[i, j]`` (images labelled i whose probability of j reaches ``t_j``, counted
  once, at the most probable such class) calibrated so that each row sums to the images labelled i;
- the estimated number of label errors of each class (the calibrated row's off-diagonal mass), and
  the flagged set: in each class, that many images with the lowest score ("prune by class").

Probabilities should be out-of-sample (held out from training) for the scores to mean much; see
:func:`odinlab.debug.error_analysis.label_errors`.

>>> probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.2, 0.8], [0.95, 0.05]])
>>> labels = np.array([0, 0, 1, 1, 1])              # the last image looks like a 0
>>> scores(probs, labels).round(2).tolist()
[0.9, 0.8, 0.7, 0.8, 0.05]
>>> flagged(probs, labels).tolist()
[False, False, False, False, True]
"""

from __future__ import annotations

import numpy as np

from odinlab.errors import OptionError

METHODS = ("self_confidence", "normalized_margin")


def scores(probs: np.ndarray, labels: np.ndarray, method: str = "self_confidence") -> np.ndarray:
    """Label quality of each image in [0, 1] (normalized margin: [-1, 1]); lower is more suspect.

    >>> scores(np.array([[0.6, 0.4]]), np.array([1]), "normalized_margin").round(2).tolist()
    [-0.2]
    """
    if method not in METHODS:
        raise OptionError(f"Unknown label-quality method {method!r}. Methods: {', '.join(METHODS)}.")
    rows = np.arange(len(labels))
    given = probs[rows, labels]
    if method == "self_confidence":
        return given
    return given - other_best(probs, labels)[1]


def other_best(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the most probable class other than the given label, its probability), per image.

    >>> other_best(np.array([[0.5, 0.3, 0.2]]), np.array([0]))
    (array([1]), array([0.3]))
    """
    others = probs.astype(np.float64, copy=True)
    others[np.arange(len(labels)), labels] = -np.inf
    best = others.argmax(axis=1)
    return best, others[np.arange(len(labels)), best]


def thresholds(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per class j, the mean probability of j over the images labelled j (1.0 for an absent class).

    >>> thresholds(np.array([[0.9, 0.1], [0.7, 0.3], [0.2, 0.8]]), np.array([0, 0, 1])).round(2).tolist()
    [0.8, 0.8]
    """
    k = probs.shape[1]
    return np.array([probs[labels == j, j].mean() if (labels == j).any() else 1.0 for j in range(k)])


def confident_joint(probs: np.ndarray, labels: np.ndarray, calibrate: bool = True) -> np.ndarray:
    """C[i, j]: images labelled i confidently belonging to j (calibrated: rows sum to class counts).

    >>> confident_joint(np.array([[0.9, 0.1], [0.8, 0.2], [0.9, 0.1], [0.2, 0.8]]), np.array([0, 0, 1, 1]))
    array([[2., 0.],
           [1., 1.]])
    """
    k = probs.shape[1]
    above = probs >= thresholds(probs, labels)[None, :]
    candidate = np.where(above, probs, -1.0)
    confident = candidate.max(axis=1) >= 0
    counted = candidate.argmax(axis=1)
    joint = np.zeros((k, k))
    np.add.at(joint, (labels[confident], counted[confident]), 1.0)
    if calibrate:
        counts = np.bincount(labels, minlength=k).astype(float)
        totals = joint.sum(axis=1)
        joint = np.where(totals[:, None] > 0, joint / np.maximum(totals, 1)[:, None] * counts[:, None], 0.0)
    return joint


def errors_per_class(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The estimated number of wrong labels among the images labelled with each class (rounded).

    >>> errors_per_class(np.array([[0.9, 0.1], [0.8, 0.2], [0.9, 0.1], [0.2, 0.8]]), np.array([0, 0, 1, 1]))
    array([0, 1])
    """
    joint = confident_joint(probs, labels)
    return np.rint(joint.sum(axis=1) - np.diag(joint)).astype(np.int64)


def flagged(probs: np.ndarray, labels: np.ndarray, method: str = "self_confidence") -> np.ndarray:
    """In each class, its estimated number of errors among its images with the lowest score (a mask).

    >>> flagged(np.array([[0.9, 0.1], [0.8, 0.2], [0.9, 0.1], [0.2, 0.8]]), np.array([0, 0, 1, 1])).tolist()
    [False, False, True, False]
    """
    score = scores(probs, labels, method)
    mask = np.zeros(len(labels), bool)
    for label, n in enumerate(errors_per_class(probs, labels)):
        members = np.flatnonzero(labels == label)
        if n > 0 and len(members):
            mask[members[np.argsort(score[members], kind="stable")[:n]]] = True
    return mask


__all__ = ["METHODS", "confident_joint", "errors_per_class", "flagged", "other_best", "scores", "thresholds"]
