import numpy as np
import polars as pl
import pytest
import torch

import odinlab
from odinlab.debug import error_analysis as ea
from odinlab.errors import OptionError
from odinlab.nets import SmallCNN
from odinlab.training import fit


@pytest.fixture(scope="module")
def noisy():
    """Shapes with 10% planted label noise; a CNN trained on the (noisy) train split."""
    torch.manual_seed(0)
    data = odinlab.datasets.shapes(n=2000, size=16, label_noise=0.1, seed=0)
    store = odinlab.open_store("memory://error-analysis-noisy", create=True)
    store.ingest(data)
    net = SmallCNN(3, 5, width=16)
    fit(net, store, "train", epochs=20, lr=3e-3, progress=False)
    model_id = store.register_model(net, "cnn")  # records fit's training run with its images
    store.materialize(net, ["head.fc1"], progress=False)
    return store, net, model_id, data


def test_each_confusion_cell_holds_exactly_its_images(noisy):
    store, _, model_id, _ = noisy
    frame = store.predictions(model_id, "test")
    cells = ea.confusion_matrix(store, model_id, "test")
    assert cells.columns == ["label", "label_name", "predicted", "predicted_name", "count", "image_ids"]
    assert cells.height == 25  # every cell of 5 classes, empty ones included
    classes = store.model(model_id).classes
    for row in cells.iter_rows(named=True):
        inside = frame.filter((pl.col("label") == row["label"]) & (pl.col("predicted") == row["predicted"]))
        assert row["image_ids"] == inside["image_id"].to_list()  # the same images, in selection order
        assert row["count"] == inside.height
        assert (row["label_name"], row["predicted_name"]) == (classes[row["label"]], classes[row["predicted"]])
    direct = np.zeros((5, 5), np.int64)
    np.add.at(direct, (frame["label"].to_numpy(), frame["predicted"].to_numpy()), 1)
    assert (cells["count"].to_numpy().reshape(5, 5) == direct).all()


def test_per_class_metrics_agree_with_the_predictions(noisy):
    store, _, model_id, _ = noisy
    frame = store.predictions(model_id, "test")
    metrics = ea.per_class_metrics(store, model_id, "test")
    assert metrics.columns == ["label", "label_name", "precision", "recall", "f1", "support"]
    for row in metrics.iter_rows(named=True):
        labelled = frame.filter(pl.col("label") == row["label"])
        predicted = frame.filter(pl.col("predicted") == row["label"])
        assert row["recall"] == pytest.approx(labelled["correct"].mean())
        assert row["precision"] == pytest.approx(predicted["correct"].mean() if predicted.height else 0.0)
        assert row["support"] == labelled.height


SELECTIONS = {  # each form of image selection, all meaning the test split
    "split": lambda store: "test",
    "sql": lambda store: "SELECT image_id FROM images WHERE split = 'test'",
    "expression": lambda store: pl.col("split") == "test",
    "selection": lambda store: store.select("test"),
    "ids": lambda store: store.select("test").ids,
}


@pytest.mark.parametrize("form", SELECTIONS)
def test_every_form_of_selection_gives_the_same_answer(noisy, form):
    store, _, model_id, _ = noisy
    images = SELECTIONS[form](store)
    assert ea.confusion_matrix(store, model_id, images).equals(ea.confusion_matrix(store, model_id, "test"))
    assert ea.hardness(store, model_id, images).equals(ea.hardness(store, model_id, "test"))
    assert ea.confident_mistakes(store, model_id, images, k=5).equals(
        ea.confident_mistakes(store, model_id, "test", k=5))


def test_the_model_can_be_a_record_or_the_module(noisy):
    store, net, model_id, _ = noisy
    expected = ea.per_class_metrics(store, model_id, "val")
    assert ea.per_class_metrics(store, store.model(model_id), "val").equals(expected)
    assert ea.per_class_metrics(store, net, "val").equals(expected)


def test_the_confusion_figure_draws_the_frame_and_the_old_name_still_works(noisy):
    from odinlab.draw.confusion import confusion_figure

    store, _, model_id, _ = noisy
    cells = ea.confusion_matrix(store, model_id, "test")
    figure = confusion_figure(cells)
    assert (np.asarray(figure.data[0].z) == cells["count"].to_numpy().reshape(5, 5)).all()
    with pytest.deprecated_call():
        old = ea.confusion_figure(store, model_id, "test")
    assert (np.asarray(old.data[0].z) == np.asarray(figure.data[0].z)).all()
    assert model_id in old.layout.title.text


def test_confident_mistakes_are_wrong_and_sorted_by_confidence(noisy):
    store, _, model_id, _ = noisy
    mistakes = ea.confident_mistakes(store, model_id, "test", k=10)
    assert mistakes.height == 10 and not mistakes["correct"].any()
    assert (mistakes["label"] != mistakes["predicted"]).all()
    classes = store.model(model_id).classes
    assert mistakes["predicted_name"].to_list() == [classes[p] for p in mistakes["predicted"]]
    images = store.select(mistakes["image_id"]).frame  # the images' rows, in the mistakes' order
    assert mistakes.select(images.columns).equals(images)  # every column of the images comes along
    assert mistakes["confidence"].is_sorted(descending=True)
    wrong = store.predictions(model_id, "test").filter(~pl.col("correct"))
    assert mistakes["confidence"][0] == wrong["confidence"].max()


def test_hardness_entropy_matches_the_probabilities(noisy):
    store, _, model_id, _ = noisy
    hard = ea.hardness(store, model_id, "val")
    row = hard.row(0, named=True)
    probs = np.array(store.predictions(model_id, [row["image_id"]])["probabilities"][0])
    assert row["entropy"] == pytest.approx(-(probs * np.log(probs)).sum(), rel=1e-4)
    assert hard["entropy"].max() <= np.log(5) + 1e-6


def test_label_errors_find_planted_noise_far_above_chance(noisy):
    store, _, model_id, data = noisy
    held_out = store.select("SELECT image_id FROM images WHERE split <> 'train'")
    planted = set(np.array(data.ids)[data.label_noise]) & set(held_out["image_id"])
    suspects = ea.label_errors(store, model_id, held_out)
    k = len(planted)
    precision_at_k = len(set(suspects["image_id"].head(k)) & planted) / k
    chance = k / len(held_out)
    print(f"label-error precision@{k}: {precision_at_k:.2f} (random ranking: {chance:.2f})")
    assert precision_at_k >= 0.5 > 3 * chance
    assert suspects["out_of_sample"].all()  # none of these images trained the model
    assert "split" in suspects.columns and set(suspects["split"]) <= {"val", "test"}
    classes = store.model(model_id).classes
    assert suspects["suggested_name"].to_list() == [classes[s] for s in suspects["suggested"]]
    assert (suspects["suggested"] != suspects["label"]).all()
    flipped = {i: t for i, t in zip(data.ids, data.true_labels)}
    top = suspects.head(10)
    hits = [flipped[i] == s for i, s in zip(top["image_id"], top["suggested"]) if i in planted]
    assert np.mean(hits) >= 0.7  # the suggested label is usually the true one


def test_training_images_are_flagged_as_in_sample_and_a_warning_says_how_to_fix_it(noisy):
    store, _, model_id, _ = noisy
    with pytest.warns(odinlab.InSampleWarning, match=r"1400 of these 1400 images .* store.cross_validate"):
        suspects = ea.label_errors(store, model_id, "train")
    assert not suspects["out_of_sample"].any()


def test_error_exemplars_cluster_the_mistakes_and_are_cached(noisy):
    store, net, model_id, _ = noisy
    clusters = ea.error_exemplars(store, model_id, "head.fc1", "test", n_clusters=3)
    wrong = store.predictions(model_id, "test").filter(~pl.col("correct"))
    assert clusters["size"].sum() == wrong.height and clusters.height == 3
    assert sorted(clusters["image_ids"].explode()) == sorted(wrong["image_id"])  # a partition
    for row in clusters.iter_rows(named=True):
        assert row["image_id"] in row["image_ids"] and 0 < row["pair_share"] <= 1  # the medoid is a member
        assert len(row["image_ids"]) == row["size"]
        members = wrong.filter(pl.col("image_id").is_in(row["image_ids"]))
        top = members.group_by("label", "predicted").len()["len"].max()
        assert row["pair_share"] == pytest.approx(top / members.height)
        in_pair = members.filter((pl.col("label") == row["label"]) & (pl.col("predicted") == row["predicted"]))
        assert in_pair.height == top
    calls = []
    handle = net.register_forward_hook(lambda *a: calls.append(1))
    again = ea.error_exemplars(store, model_id, "head.fc1", "test", n_clusters=3)
    handle.remove()
    assert again.equals(clusters) and calls == []


def test_no_mistakes_give_no_clusters(noisy):
    store, _, model_id, _ = noisy
    right = store.predictions(model_id, "test").filter(pl.col("correct"))["image_id"].head(20)
    clusters = ea.error_exemplars(store, model_id, "head.fc1", right)
    assert clusters.height == 0 and clusters.columns[:3] == ["cluster", "image_id", "size"]
    assert "image_ids" in clusters.columns


def test_questions_without_stored_predictions_say_what_to_do(store):
    store.ingest(odinlab.datasets.digits())
    store.register_model(SmallCNN(1, 10, width=4), "cnn")
    with pytest.raises(odinlab.NotMaterializedError, match=r"run store.materialize"):
        ea.confusion_matrix(store, "cnn@1", "test")
    with pytest.raises(odinlab.UnknownModelError):
        ea.confusion_matrix(store, "nope@1")
    with pytest.raises(odinlab.UnknownImageError):
        ea.hardness(store, "cnn@1", ["no-such-image"])


def test_label_errors_rank_every_image_and_flag_confident_learnings_estimate(noisy):
    store, _, model_id, data = noisy
    held_out = store.select("SELECT image_id FROM images WHERE split <> 'train'")
    ranked = ea.label_errors(store, model_id, held_out)
    assert ranked.height == len(held_out) and ranked["label_quality"].is_sorted()
    probs = np.stack(store.predictions(model_id, ranked["image_id"])["probabilities"].to_numpy())
    given = probs[np.arange(ranked.height), ranked["label"].to_numpy()]
    np.testing.assert_allclose(ranked["label_quality"].to_numpy(), given, rtol=1e-6)  # self-confidence
    noise = ea.label_noise(store, model_id, held_out)
    assert ranked["flagged"].sum() == noise["estimated_errors"].sum() > 0
    planted = set(np.array(data.ids)[data.label_noise]) & set(held_out["image_id"])
    flagged = set(ranked.filter("flagged")["image_id"])
    assert len(flagged & planted) / len(flagged) > 3 * len(planted) / len(held_out)  # far above chance
    assert ea.label_errors(store, model_id, held_out, k=7)["image_id"].to_list() == ranked["image_id"][:7].to_list()
    margin = ea.label_errors(store, model_id, held_out, method="normalized_margin")
    assert margin["label_quality"].min() < 0 and set(margin["image_id"]) == set(ranked["image_id"])
    with pytest.raises(OptionError, match="Methods: self_confidence, normalized_margin"):
        ea.label_errors(store, model_id, held_out, method="entropy")
    with pytest.raises(OptionError, match="k must be a positive int"):
        ea.label_errors(store, model_id, held_out, k=0)
