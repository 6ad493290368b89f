import json
import warnings

import numpy as np
import polars as pl
import pytest

import odinlab
from odinlab.nets import SmallCNN
from odinlab.store.metrics import classification_metrics
from odinlab.training import fit


@pytest.fixture
def trained(tiny_store):
    net = SmallCNN(1, 3, width=4)
    fit(net, tiny_store, "train", epochs=3, progress=False)
    model_id = tiny_store.register_model(net, "cnn", hyperparams={"lr": 0.01, "epochs": 3})
    return tiny_store, net, model_id


def test_evaluate_records_metrics_that_match_a_direct_computation(trained):
    store, net, model_id = trained
    result = store.evaluate(net, "val")
    x = store.pixels("val").astype(np.float32) / 255
    import torch
    with torch.no_grad():
        logits = net(torch.from_numpy(x))
    y = store.select("val")["label"].to_numpy()
    expected = classification_metrics(y, logits.argmax(1).numpy(), 3)
    loss = float(torch.nn.functional.cross_entropy(logits, torch.tensor(y)))
    assert result.height == 1 and result["model_id"][0] == model_id and result["n_test"][0] == 20
    assert result["accuracy"][0] == pytest.approx(expected["accuracy"])
    assert result["loss"][0] == pytest.approx(loss, rel=1e-5)
    row = store.experiments.row(-1, named=True)  # the first row is fit's training run
    assert result.row(0, named=True) == row  # evaluate returns the row it recorded
    assert row["kind"] == "eval" and row["n_test"] == 20 and row["test_splits"] == ["val"]
    assert row["confusion"] == expected["confusion"] and row["f1"] == pytest.approx(expected["f1"])
    assert json.loads(row["hyperparams"]) == {"lr": 0.01, "epochs": 3}
    assert row["test_look"] is None
    long = store.metrics(row["experiment_id"])
    recall = long.filter(pl.col("metric") == "recall").sort("class")
    assert recall["value"].to_list() == pytest.approx(expected["recall"])
    assert recall["class_name"].to_list() == ["a", "b", "c"]
    assert long.filter(pl.col("metric") == "accuracy")["value"][0] == pytest.approx(expected["accuracy"])


def test_per_class_metrics_on_a_known_confusion():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 1, 1])
    metrics = classification_metrics(y_true, y_pred, 3)
    assert metrics["confusion"] == [[2, 1, 0], [0, 2, 0], [0, 1, 0]]
    assert metrics["precision"] == pytest.approx([1.0, 0.5, 0.0])
    assert metrics["recall"] == pytest.approx([2 / 3, 1.0, 0.0])
    assert metrics["f1"] == pytest.approx([0.8, 2 / 3, 0.0])
    assert metrics["accuracy"] == pytest.approx(4 / 6)


def test_experiment_image_sets_join_to_images_in_sql(trained):
    store, net, model_id = trained
    store.record_experiment(model_id, train_images="train", metrics={"loss": 0.5, "note": "x"})
    joined = store.sql("""
        SELECT e.experiment_id, i.split, COUNT(*) AS n
        FROM experiments e JOIN image_sets s ON s.set_id = e.train_set
        JOIN images i ON i.image_id = s.image_id GROUP BY e.experiment_id, i.split""")
    assert sorted(joined.rows()) == [("exp-00001", "train", 20), ("exp-00002", "train", 20)]
    row = store.experiments.row(-1, named=True)
    assert row["loss"] == 0.5 and json.loads(row["metrics"]) == {"note": "x"}


def test_test_split_looks_are_counted_per_lineage_and_reuse_after_tuning_warns(trained):
    store, net, v1 = trained
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the first look and a same-hyper-parameter look are fine
        store.evaluate(net, "test")
        store.evaluate(net, "test")
        store.evaluate(net, "val")
    v2 = store.register_model(SmallCNN(1, 3, width=4), "cnn", parent=v1, hyperparams={"lr": 0.001, "epochs": 3})
    other = store.register_model(SmallCNN(1, 3, width=4), "other", hyperparams={"lr": 0.5})
    with pytest.warns(odinlab.TestSetReuseWarning, match=r"looked at 2 time\(s\).*cnn@1.*lr.*0\.001"):
        store.evaluate(store.load_weights(SmallCNN(1, 3, width=4), v2), "test", model_id=v2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # another lineage has its own count
        store.evaluate(store.load_weights(SmallCNN(1, 3, width=4), other), "test", model_id=other)
    table = store.experiments.filter(pl.col("kind") == "eval").select("model_id", "test_look", "test_reuse").rows()
    assert table == [("cnn@1", 1, False), ("cnn@1", 2, False), ("cnn@1", None, None),
                     ("cnn@2", 3, True), ("other@1", 1, False)]


def test_changed_hyperparameters_on_the_same_version_also_count(trained):
    store, net, v1 = trained
    store.evaluate(net, "test")
    with pytest.warns(odinlab.TestSetReuseWarning):
        store.evaluate(net, "test", hyperparams={"lr": 0.02, "epochs": 3})
    assert store.experiments.filter(pl.col("kind") == "eval")["test_reuse"].to_list() == [False, True]


def test_fit_then_register_records_the_training_run_with_its_images_and_settings(trained):
    store, net, model_id = trained
    run = store.experiments.row(0, named=True)
    assert (run["model_id"], run["kind"], run["n_train"], run["test_set"]) == (model_id, "train", 20, None)
    trained_on = store.image_sets.filter(pl.col("set_id") == run["train_set"])["image_id"].sort().to_list()
    assert trained_on == sorted(store.select("train").ids)
    assert json.loads(run["hyperparams"]) == {"lr": 0.01, "epochs": 3, "batch_size": 64, "weight_decay": 0.0,
                                              "seed": 0}
    assert run["loss"] > 0 and run["notes"] == "odinlab.training.fit"
    store.register_model(net, "cnn")  # the same weights again: the run is recorded once
    assert store.experiments.filter(pl.col("kind") == "train").height == 1


def test_a_module_trained_twice_before_registering_records_both_runs(tiny_store):
    net = SmallCNN(1, 3, width=4)
    fit(net, tiny_store, "train", epochs=1, progress=False)
    fit(net, tiny_store, "val", epochs=1, progress=False)
    tiny_store.register_model(net, "twice")
    assert tiny_store.experiments.select("kind", "n_train").rows() == [("train", 20), ("train", 20)]


def test_evaluate_refuses_unlabelled_images_and_leaves_no_experiment(store):
    store.ingest(np.zeros((4, 8, 8), np.uint8) + np.arange(4)[:, None, None].astype(np.uint8), split="test")
    net = SmallCNN(1, 3, width=4)
    store.register_model(net, "cnn", classes=["a", "b", "c"])
    with pytest.raises(odinlab.LabelError, match="4 of the selected images have no label"):
        store.evaluate(net, "test")
    assert store.experiments.height == 0


def test_evaluate_unknown_split_lists_the_splits(trained):
    store, net, _ = trained
    with pytest.raises(odinlab.UnknownImageError, match="Splits: test, train, val"):
        store.evaluate(net, "tset")


def test_the_test_set_warning_points_at_the_caller_s_line(trained):
    store, net, v1 = trained
    store.evaluate(net, "test")
    with pytest.warns(odinlab.TestSetReuseWarning) as caught:
        store.evaluate(net, "test", hyperparams={"lr": 0.02, "epochs": 3})
    with pytest.warns(odinlab.TestSetReuseWarning) as recorded:
        store.record_experiment(v1, test_images="test", hyperparams={"lr": 0.03})
    for warning in [*caught, *recorded]:
        assert warning.filename == __file__, warning.filename
