"""store.cross_validate: fold models as a lineage, held-out probabilities as a named set."""

import warnings

import numpy as np
import polars as pl
import pytest
import torch

import odinlab
from odinlab.debug import error_analysis as ea
from odinlab.nets import SmallCNN
from odinlab.training import fit


def one_epoch(module, store, images):
    fit(module, store, images, epochs=1, progress=False)


def tiny_net():
    return SmallCNN(1, 10, width=4)


@pytest.fixture(scope="module")
def validated():
    """Digits; cnn@1 trained on train; a 3-fold cross-validation of it on train."""
    torch.manual_seed(0)
    store = odinlab.open_store("memory://crossval-module", create=True)
    store.ingest(odinlab.datasets.digits())
    net = tiny_net()
    fit(net, store, "train", epochs=2, progress=False)
    store.register_model(net, "cnn")
    cv = store.cross_validate(tiny_net, "train", folds=3, fit=one_epoch, model="cnn@1", progress=False)
    return store, cv


def test_every_image_is_held_out_exactly_once_in_label_stratified_folds(validated):
    store, cv = validated
    train = store.select("train")
    assert sorted(cv.assignment["image_id"].to_list()) == sorted(train.ids)
    per_fold = cv.assignment.join(store.images.select("image_id", "label"), on="image_id")
    counts = per_fold.group_by("label", "fold").len().pivot(on="fold", index="label", values="len")
    spread = counts.drop("label").to_numpy()
    assert (spread.max(axis=1) - spread.min(axis=1) <= 1).all()  # stratified: each class split evenly
    assert cv.folds["n_held_out"].sum() == len(train)
    assert (cv.folds["n_train"] + cv.folds["n_held_out"] == len(train)).all()


def test_held_out_probabilities_come_from_the_fold_model_that_never_trained_on_the_image(validated):
    store, cv = validated
    frame = store.predictions("cnn@1", "train")
    assert frame["held_out"].all() and frame.height == len(store.select("train"))
    for fold, fold_model in enumerate(cv.fold_models):
        held = cv.assignment.filter(pl.col("fold") == fold)["image_id"].to_list()
        run = store.experiments.filter((pl.col("model_id") == fold_model) & (pl.col("kind") == "train")).row(
            0, named=True)
        trained_on = set(store.image_sets.filter(pl.col("set_id") == run["train_set"])["image_id"])
        assert trained_on.isdisjoint(held) and len(trained_on) + len(held) == frame.height
        rows = frame.filter(pl.col("image_id").is_in(held))
        assert set(rows["predicted_by"]) == {fold_model}
        module = store.module(fold_model)
        with torch.no_grad():
            direct = torch.softmax(module(torch.from_numpy(store.model_input(rows["image_id"].to_list()))), 1)
        np.testing.assert_allclose(np.stack(rows["probabilities"].to_numpy()), direct.numpy(), atol=1e-6)


def test_fold_models_are_a_recorded_lineage_with_their_held_out_scores(validated):
    store, cv = validated
    models = store.models.filter(pl.col("model_id").is_in(cv.fold_models))
    assert models["parent"].to_list() == ["cnn@1"] * 3 and models["name"].unique().to_list() == ["cnn-cv"]
    assert [store.model(m).hyperparams["fold"] for m in cv.fold_models] == [0, 1, 2]
    evals = store.experiments.filter(pl.col("model_id").is_in(cv.fold_models) & (pl.col("kind") == "eval"))
    assert evals["accuracy"].to_list() == pytest.approx(cv.folds["accuracy"].to_list())
    assert evals["n_test"].to_list() == cv.folds["n_held_out"].to_list()
    assert store.descendants("cnn@1")["model_id"].to_list() == cv.fold_models


def test_the_model_s_own_predictions_are_still_there_with_held_out_false(validated):
    store, _ = validated
    store.materialize("cnn@1", images="train", progress=False)
    own = store.predictions("cnn@1", "train", held_out=False)
    assert not own["held_out"].any() and set(own["predicted_by"]) == {"cnn@1"}
    assert store.predictions("cnn@1", "train")["held_out"].all()  # held-out ones win where both exist


def test_label_errors_judge_training_images_out_of_sample_after_cross_validation(validated):
    store, _ = validated
    with warnings.catch_warnings():
        warnings.simplefilter("error", odinlab.InSampleWarning)
        ranked = ea.label_errors(store, "cnn@1", "train")
    assert ranked["out_of_sample"].all() and ranked["held_out"].all()
    assert ranked["predicted_by"].str.starts_with("cnn-cv@").all()


def test_a_second_call_with_the_same_settings_trains_nothing(validated):
    store, cv = validated
    before = store.models.height
    again = store.cross_validate(tiny_net, "train", folds=3, fit=one_epoch, model="cnn@1", progress=False)
    assert store.models.height == before and again.fold_models == cv.fold_models
    assert again.folds.equals(cv.folds)


def test_other_settings_under_the_same_name_are_refused_with_the_fix(validated):
    store, _ = validated
    with pytest.raises(odinlab.OptionError, match="already has a held-out set 'cv'.*name="):
        store.cross_validate(tiny_net, "train", folds=4, fit=one_epoch, model="cnn@1", progress=False)


def test_an_interrupted_run_resumes_with_the_missing_folds_only():
    torch.manual_seed(0)
    store = odinlab.open_store("memory://crossval-resume", create=True)
    store.ingest(odinlab.datasets.digits())
    calls = []

    def failing_third(module, store, images):
        calls.append(len(images))
        if len(calls) == 4:  # the full model, then folds 0 and 1, then fold 2 fails
            raise KeyboardInterrupt
        one_epoch(module, store, images)

    with pytest.raises(KeyboardInterrupt):
        store.cross_validate(tiny_net, "val", folds=3, fit=failing_third, progress=False)
    assert store.models["model_id"].to_list() == ["smallcnn@1", "smallcnn-cv@1", "smallcnn-cv@2"]
    calls.clear()
    cv = store.cross_validate(tiny_net, "val", folds=3, fit=one_epoch, model="smallcnn@1", progress=False)
    assert cv.fold_models == ["smallcnn-cv@1", "smallcnn-cv@2", "smallcnn-cv@3"]
    assert store.predictions("smallcnn@1", "val")["held_out"].all()


def test_without_a_model_one_more_network_is_trained_on_all_images_and_registered():
    torch.manual_seed(0)
    store = odinlab.open_store("memory://crossval-full", create=True)
    store.ingest(odinlab.datasets.digits())
    cv = store.cross_validate(tiny_net, "val", folds=2, fit=one_epoch, progress=False)
    assert cv.model_id == "smallcnn@1"
    run = store.experiments.filter((pl.col("model_id") == "smallcnn@1") & (pl.col("kind") == "train")).row(
        0, named=True)
    assert run["n_train"] == len(store.select("val"))
    assert "held-out accuracy" in repr(cv) and 0 <= cv.accuracy <= 1


def test_a_custom_fit_that_notes_nothing_still_gets_its_training_run_recorded():
    torch.manual_seed(0)
    store = odinlab.open_store("memory://crossval-custom", create=True)
    store.ingest(odinlab.datasets.digits())

    def plain_loop(module, store, images):  # no odinlab.training.fit: nothing noted
        x = torch.from_numpy(store.model_input(images))
        y = torch.from_numpy(store.select(images).labels)
        optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(module(x), y).backward()
        optimizer.step()

    cv = store.cross_validate(tiny_net, "val", folds=2, fit=plain_loop, progress=False)
    runs = store.experiments.filter(pl.col("kind") == "train")
    assert runs["model_id"].to_list() == [cv.model_id, *cv.fold_models]
    assert runs["notes"].str.contains("plain_loop").all()


@pytest.mark.parametrize(("options", "message"), [
    ({"folds": 1}, "folds must be an int of at least 2"),
    ({"folds": 200}, "fewer images than folds=200"),
    ({"seed": -1}, "seed must be a non-negative int"),
    ({"fit": "adam"}, "fit must be a function"),
    ({"name": ""}, "name must be a non-empty string"),
])
def test_bad_options_are_refused_before_any_training(options, message, store):
    store.ingest(odinlab.datasets.digits())
    with pytest.raises(odinlab.OptionError, match=message):
        store.cross_validate(tiny_net, "val", progress=False, **options)
    assert store.models.height == 0


def test_unlabelled_images_are_refused(store):
    store.ingest(np.arange(6, dtype=np.uint8)[:, None, None] + np.zeros((6, 8, 8), np.uint8), split="train")
    with pytest.raises(odinlab.LabelError, match="6 of the selected images have no label"):
        store.cross_validate(tiny_net, "train", folds=2, progress=False)


def test_a_fine_tuned_version_counts_its_parent_s_training_images_as_seen(validated):
    store, _ = validated
    child = store.load_weights(tiny_net(), "cnn@1")
    fit(child, store, "val", epochs=1, progress=False)
    child_id = store.register_model(child, "cnn", parent="cnn@1")
    store.materialize(child, images=["digits-0000", "digits-0002"], progress=False)
    split = dict(zip(*store.select(["digits-0000", "digits-0002"]).frame.select("image_id", "split")))
    with pytest.warns(odinlab.InSampleWarning):
        ranked = ea.label_errors(store, child_id, ["digits-0000", "digits-0002"])
    seen = dict(zip(ranked["image_id"], ranked["out_of_sample"]))
    assert all(seen[i] == (split[i] == "test") for i in seen)
