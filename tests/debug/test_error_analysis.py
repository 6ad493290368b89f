import numpy as np
import polars as pl
import pytest
import torch

import odinlab
from odinlab.debug import error_analysis as ea
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
    losses = fit(net, store, "train", epochs=20, lr=3e-3, progress=False)
    model_id = store.register_model(net, "cnn")
    store.record_experiment(model_id, train_images="train", metrics={"loss": losses[-1]})
    store.materialize(net, ["head.fc1"], progress=False)
    return store, net, model_id, data


def test_confusion_and_per_class_metrics_agree_with_the_predictions(noisy):
    store, _, model_id, _ = noisy
    frame = store.predictions(model_id, "test")
    matrix = ea.confusion_matrix(store, model_id, "test")
    for (true, predicted), group in frame.group_by("label", "predicted"):
        assert matrix[true, predicted] == group.height
    metrics = ea.per_class_metrics(store, model_id, "test")
    recall = frame.filter(pl.col("label") == 2)["correct"].mean()
    assert metrics["recall"][2] == pytest.approx(recall)
    assert metrics["support"].sum() == frame.height
    assert ea.confusion_figure(store, model_id, "test").data[0].z.sum() == frame.height


def test_confident_mistakes_are_wrong_and_sorted_by_confidence(noisy):
    store, _, model_id, _ = noisy
    mistakes = ea.confident_mistakes(store, model_id, "test", k=10)
    assert mistakes.height == 10 and not mistakes["correct"].any()
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
    chance = k / held_out.height
    print(f"label-error precision@{k}: {precision_at_k:.2f} (random ranking: {chance:.2f})")
    assert precision_at_k >= 0.5 > 3 * chance
    assert suspects["out_of_sample"].all()  # none of these images trained the model
    flipped = {i: t for i, t in zip(data.ids, data.true_labels)}
    top = suspects.head(10)
    hits = [flipped[i] == s for i, s in zip(top["image_id"], top["suggested"]) if i in planted]
    assert np.mean(hits) >= 0.7  # the suggested label is usually the true one


def test_training_images_are_flagged_as_in_sample(noisy):
    store, _, model_id, _ = noisy
    suspects = ea.label_errors(store, model_id, "train")
    assert not suspects["out_of_sample"].any()


def test_error_exemplars_cluster_the_mistakes_and_are_cached(noisy):
    store, net, model_id, _ = noisy
    clusters = ea.error_exemplars(store, model_id, "head.fc1", "test", n_clusters=3)
    wrong = store.predictions(model_id, "test").filter(~pl.col("correct"))
    assert clusters["size"].sum() == wrong.height and clusters.height == 3
    for row in clusters.iter_rows(named=True):
        assert row["medoid"] in row["members"] and 0 < row["pair_share"] <= 1
        members = wrong.filter(pl.col("image_id").is_in(row["members"]))
        top = members.group_by("label", "predicted").len()["len"].max()
        assert row["pair_share"] == pytest.approx(top / members.height)
    calls = []
    handle = net.register_forward_hook(lambda *a: calls.append(1))
    again = ea.error_exemplars(store, model_id, "head.fc1", "test", n_clusters=3)
    handle.remove()
    assert again.equals(clusters) and calls == []


def test_questions_without_stored_predictions_say_what_to_do(store):
    store.ingest(odinlab.datasets.digits())
    store.register_model(SmallCNN(1, 10, width=4), "cnn")
    with pytest.raises(odinlab.NotMaterializedError, match=r"run store.materialize"):
        ea.confusion_matrix(store, "cnn@1", "test")
    with pytest.raises(odinlab.UnknownModelError):
        ea.confusion_matrix(store, "nope@1")
    with pytest.raises(odinlab.UnknownImageError):
        ea.hardness(store, "cnn@1", ["no-such-image"])
