"""Issue 13's target: on the planted data set, cross-validated label quality finds the flipped labels."""

import warnings

import numpy as np
import polars as pl
import pytest

import odinlab
from odinlab.debug import error_analysis as ea
from odinlab.nets import SmallCNN
from odinlab.training import fit

import planted  # the shared recipe of the planted data set (tests/debug/planted.py)


@pytest.fixture(scope="module")
def validated():
    """The planted store, planted-0 trained on train, and a 5-fold cross-validation of it."""
    store, data = planted.planted_store("planted-label-errors")
    model_id = planted.train(store, seed=0)
    store.cross_validate(lambda: SmallCNN(**planted.NET), "train", folds=5, model=model_id, seed=0,
                         fit=lambda module, s, images: fit(module, s, images, progress=False, **planted.FIT),
                         progress=False)
    flipped = set(np.asarray(data.ids)[data.label_noise & (data.split == "train")])
    return store, model_id, data, flipped


def test_precision_at_the_number_of_flipped_labels_is_at_least_090_with_held_out_probabilities(validated):
    store, model_id, _, flipped = validated
    with warnings.catch_warnings():
        warnings.simplefilter("error", odinlab.InSampleWarning)  # every training image judged out of sample
        ranked = ea.label_errors(store, model_id, "train", k=len(flipped))
    precision = len(set(ranked["image_id"]) & flipped) / len(flipped)
    assert precision >= 0.90, precision
    assert ranked["out_of_sample"].all() and ranked["held_out"].all()


def test_the_flagged_set_and_the_estimated_noise_match_the_planted_noise(validated):
    store, model_id, data, flipped = validated
    ranked = ea.label_errors(store, model_id, "train")
    flagged = set(ranked.filter(pl.col("flagged"))["image_id"])
    assert len(flagged & flipped) / len(flagged) >= 0.8 and len(flagged & flipped) / len(flipped) >= 0.8
    noise = ea.label_noise(store, model_id, "train")
    assert noise["estimated_errors"].sum() == pytest.approx(len(flipped), rel=0.25)


def test_suggested_labels_of_the_top_suspects_are_mostly_the_true_classes(validated):
    store, model_id, data, flipped = validated
    top = ea.label_errors(store, model_id, "train", k=len(flipped)).filter(pl.col("image_id").is_in(list(flipped)))
    truth = dict(zip(data.ids, data.true_labels.tolist()))
    right = np.mean([truth[i] == s for i, s in zip(top["image_id"], top["suggested"])])
    assert right >= 0.85, right


def test_in_sample_probabilities_are_flagged_as_such(validated):
    store, model_id, _, _ = validated
    store.materialize(model_id, images="train", progress=False)
    own = store.predictions(model_id, "train", held_out=False)
    assert not own["held_out"].any() and set(own["predicted_by"]) == {model_id}
    run = store.experiments.filter((pl.col("model_id") == model_id) & (pl.col("kind") == "train"))
    assert run["n_train"].to_list() == [own.height]  # fit's run, recorded at registration
