import numpy as np
import polars as pl
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

import odinlab
from odinlab.debug import units
from odinlab.nets import SmallCNN
from odinlab.training import fit


@pytest.fixture(scope="module")
def shapes_store():
    torch.manual_seed(0)
    store = odinlab.open_store("memory://units-shapes", create=True)
    store.ingest(odinlab.datasets.shapes(n=1200, size=16, seed=1))
    net = SmallCNN(3, 5, width=8)
    fit(net, store, "train", epochs=12, lr=3e-3, progress=False)
    store.register_model(net, "cnn")
    store.materialize(net, ["features.relu1", "features.relu2", "head.fc1"], progress=False)
    return store, net


def test_top_images_are_the_highest_activations(shapes_store):
    store, _ = shapes_store
    acts = units.unit_activations(store, "cnn@1", "features.relu2", "val")
    top = units.top_images(store, "cnn@1", "features.relu2", k=3, images="val")
    ids = store.select("val")["image_id"].to_numpy()
    for unit in (0, 7, 15):
        expected = ids[np.argsort(-acts[:, unit], kind="stable")[:3]]
        assert top.filter(pl.col("unit") == unit)["image_id"].to_list() == expected.tolist()
    assert top.height == 16 * 3
    conv = store.activations("cnn@1", "features.relu2", "val")
    np.testing.assert_allclose(acts, conv.mean(axis=(2, 3)), rtol=1e-5)


def test_unit_auc_for_every_class_matches_sklearn(shapes_store):
    store, _ = shapes_store
    scores = units.unit_scores(store, "cnn@1", "head.fc1", "label", "val")
    acts = units.unit_activations(store, "cnn@1", "head.fc1", "val")
    labels = store.select("val")["label"].to_numpy()
    assert scores.height == 32 * 5
    for row in scores.head(5).iter_rows(named=True):
        expected = roc_auc_score(labels == int(row["value"]), acts[:, row["unit"]])
        assert row["auc"] == pytest.approx(expected, abs=1e-9)
    assert scores["score"][0] > 0.8  # a trained head has units that separate a shape well


def test_numeric_metadata_gets_spearman_correlation(shapes_store):
    store, _ = shapes_store
    scores = units.unit_scores(store, "cnn@1", "features.relu1", "brightness", "val")
    acts = units.unit_activations(store, "cnn@1", "features.relu1", "val")
    brightness = store.select("val")["brightness"].to_numpy()
    best = scores.row(0, named=True)
    assert best["rho"] == pytest.approx(spearmanr(acts[:, best["unit"]], brightness).statistic, abs=1e-9)
    assert abs(best["rho"]) > 0.5  # early conv units track image brightness


def test_linear_probe_prefers_later_layers_for_the_label_and_is_cached(shapes_store):
    store, net = shapes_store
    probe = units.linear_probe(store, "cnn@1", ["features.relu1", "head.fc1"], "label", "val", cv=3)
    scores = dict(zip(probe["layer"], probe["score"]))
    assert scores["head.fc1"] > scores["features.relu1"] and scores["head.fc1"] > 0.4  # chance: 0.2
    calls = []
    handle = net.register_forward_hook(lambda *a: calls.append(1))
    assert units.linear_probe(store, "cnn@1", ["features.relu1", "head.fc1"], "label", "val", cv=3).equals(probe)
    handle.remove()
    assert calls == []
    numeric = units.linear_probe(store, "cnn@1", ["features.relu1"], "brightness", "val", cv=3)
    assert numeric["metric"][0] == "r2" and numeric["score"][0] > 0.3


def test_bad_columns_units_and_layers_are_refused(shapes_store):
    store, _ = shapes_store
    with pytest.raises(units.UnknownColumnError, match="Unknown column 'agee'. Columns: split, label"):
        units.unit_scores(store, "cnn@1", "head.fc1", "agee", "val")
    with pytest.raises(IndexError, match=r"has units 0\.\.31"):
        units.top_images(store, "cnn@1", "head.fc1", unit=32, images="val")
    with pytest.raises(odinlab.UnknownLayerError, match="Did you mean: head.fc2, head.fc1"):
        units.top_images(store, "cnn@1", "head.fc9", images="val")
