"""Confident learning's pieces on probabilities where the answer is known by construction."""

import numpy as np
import pytest

from odinlab.debug import label_quality as lq
from odinlab.errors import OptionError


def _noisy_probabilities(n=3000, classes=4, flip=0.1, seed=0):
    """Well-calibrated probabilities of the true class, and labels with a share ``flip`` changed."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, classes, n)
    logits = rng.normal(0, 1, (n, classes))
    logits[np.arange(n), truth] += 3.0
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = truth.copy()
    flipped = rng.random(n) < flip
    labels[flipped] = (truth[flipped] + rng.integers(1, classes, flipped.sum())) % classes
    return probs, labels, flipped


def test_the_estimated_errors_per_class_are_close_to_the_flipped_labels():
    probs, labels, flipped = _noisy_probabilities()
    estimated = lq.errors_per_class(probs, labels)
    actual = np.bincount(labels[flipped], minlength=4)
    assert np.abs(estimated - actual).max() <= 0.3 * actual.max()
    assert abs(estimated.sum() - flipped.sum()) <= 0.15 * flipped.sum()


def test_the_calibrated_confident_joint_rows_sum_to_the_class_counts():
    probs, labels, _ = _noisy_probabilities()
    joint = lq.confident_joint(probs, labels)
    np.testing.assert_allclose(joint.sum(axis=1), np.bincount(labels, minlength=4))


def test_ranking_by_either_score_finds_the_flipped_labels():
    probs, labels, flipped = _noisy_probabilities()
    k = int(flipped.sum())
    for method in lq.METHODS:
        top = np.argsort(lq.scores(probs, labels, method), kind="stable")[:k]
        assert flipped[top].mean() >= 0.85, method
    mask = lq.flagged(probs, labels)
    assert flipped[mask].mean() >= 0.85 and abs(int(mask.sum()) - k) <= 0.15 * k


def test_the_suggested_class_is_never_the_given_label():
    probs, labels, _ = _noisy_probabilities(n=200)
    best, p = lq.other_best(probs, labels)
    assert (best != labels).all() and (p <= 1).all()


def test_an_unknown_method_names_the_methods():
    with pytest.raises(OptionError, match="Methods: self_confidence, normalized_margin"):
        lq.scores(np.eye(2), np.array([0, 1]), "entropy")
