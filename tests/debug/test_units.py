import logging

import numpy as np
import polars as pl
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

import odinlab
from odinlab.debug import units
from odinlab.nets import SmallCNN
from odinlab.sampling.estimators import Design, domain_auc
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


def _expected_top(values, ids, k):
    """Highest first (stable), never an image at the unit's least value."""
    order = np.argsort(-values, kind="stable")
    return ids[order[values[order] > values.min()][:k]].tolist()


def test_top_images_are_the_highest_activations(shapes_store):
    store, _ = shapes_store
    acts = units.unit_activations(store, "cnn@1", "features.relu2", "val")
    assert acts.dims == ("image_id", "unit") and acts.image_id.values.tolist() == store.select("val").ids
    acts = acts.values
    top = units.top_images(store, "cnn@1", "features.relu2", "val", k=3)
    ids = np.array(store.select("val").ids)
    assert top.columns == ["unit", "rank", "image_id", "label", "label_name", "activation", "dead"]
    for unit in range(16):
        rows = top.filter(pl.col("unit") == unit)
        if rows["dead"].any():
            assert acts[:, unit].max() == acts[:, unit].min()
            continue
        assert rows["image_id"].to_list() == _expected_top(acts[:, unit], ids, 3)
        np.testing.assert_allclose(rows["activation"], np.sort(acts[:, unit])[::-1][: rows.height], rtol=1e-6)
    assert set(top["unit"]) == set(range(16))
    conv = store.activations("cnn@1", "features.relu2", "val").values
    np.testing.assert_allclose(acts, conv.mean(axis=(2, 3)), rtol=1e-5)
    labels = dict(zip(store.images["image_id"], store.images["label_name"]))
    assert all(labels[i] == name for i, name in top.drop_nulls("image_id").select("image_id", "label_name").rows())


def test_every_form_of_selection_gives_the_same_answer(shapes_store):
    store, _ = shapes_store
    val = store.select("val")
    forms = ["val", val.ids, "SELECT image_id FROM images WHERE split = 'val'", val, pl.col("split") == "val",
             val.frame.select("image_id")]
    tops = [units.top_images(store, "cnn@1", "head.fc1", images, unit=4, k=5) for images in forms]
    assert all(t.equals(tops[0]) for t in tops[1:])
    scores = [units.unit_scores(store, "cnn@1", "head.fc1", images) for images in forms]
    assert all(s.equals(scores[0]) for s in scores[1:])
    model_forms = ["cnn@1", "cnn", store.model("cnn@1"), shapes_store[1]]
    assert all(units.top_images(store, m, "head.fc1", val, unit=4, k=5).equals(tops[0]) for m in model_forms)


def test_unit_auc_for_every_class_matches_sklearn_and_the_design_estimator(shapes_store):
    store, _ = shapes_store
    scores = units.unit_scores(store, "cnn@1", "head.fc1", "val")
    acts = units.unit_activations(store, "cnn@1", "head.fc1", "val").values
    labels = store.select("val")["label"].to_numpy()
    assert scores.columns == ["unit", "label", "label_name", "auc", "score"]
    assert scores.height == 32 * 5 and scores["score"].is_sorted(descending=True)
    for row in scores.head(5).iter_rows(named=True):
        expected = roc_auc_score(labels == row["label"], acts[:, row["unit"]])
        assert row["auc"] == pytest.approx(expected, abs=1e-9)
        assert row["label_name"] == store.classes[row["label"]]
        exact, se = domain_auc(acts, labels == row["label"], Design.full_scan(len(acts)))
        assert row["auc"] == exact[row["unit"]] and se[row["unit"]] == 0
    assert scores["score"][0] > 0.8  # a trained head has units that separate a shape well


def test_grouping_by_a_metadata_column_names_the_column(shapes_store):
    store, _ = shapes_store
    scores = units.unit_scores(store, "cnn@1", "head.fc1", "val", by="color")
    acts = units.unit_activations(store, "cnn@1", "head.fc1", "val").values
    colors = store.select("val")["color"].to_numpy()
    assert scores.columns == ["unit", "color", "auc", "score"]
    assert set(scores["color"]) == set(colors)
    for row in scores.head(3).iter_rows(named=True):
        assert row["auc"] == pytest.approx(roc_auc_score(colors == row["color"], acts[:, row["unit"]]), abs=1e-9)


def test_numeric_metadata_gets_spearman_correlation(shapes_store):
    store, _ = shapes_store
    scores = units.unit_scores(store, "cnn@1", "features.relu1", "val", by="brightness")
    acts = units.unit_activations(store, "cnn@1", "features.relu1", "val").values
    brightness = store.select("val")["brightness"].to_numpy()
    assert scores.columns == ["unit", "rho", "score"]
    best = scores.row(0, named=True)
    assert best["rho"] == pytest.approx(spearmanr(acts[:, best["unit"]], brightness).statistic, abs=1e-9)
    assert abs(best["rho"]) > 0.5  # early conv units track image brightness


def test_linear_probe_prefers_later_layers_for_the_label_and_is_cached(shapes_store):
    store, net = shapes_store
    probe = units.linear_probe(store, "cnn@1", ["features.relu1", "head.fc1"], "val", cv=3)
    scores = dict(zip(probe["layer"], probe["score"]))
    assert scores["head.fc1"] > scores["features.relu1"] and scores["head.fc1"] > 0.4  # chance: 0.2
    calls = []
    handle = net.register_forward_hook(lambda *a: calls.append(1))
    assert units.linear_probe(store, "cnn@1", ["features.relu1", "head.fc1"], "val", by="label", cv=3).equals(probe)
    handle.remove()
    assert calls == []
    numeric = units.linear_probe(store, "cnn@1", ["features.relu1"], "val", by="brightness", cv=3)
    assert numeric["metric"][0] == "r2" and numeric["score"][0] > 0.3


def test_a_dead_unit_is_flagged_not_ranked(shapes_store, caplog):
    store, net = shapes_store
    dead = SmallCNN(3, 5, width=8)
    dead.load_state_dict(net.state_dict())
    with torch.no_grad():
        dead.features.conv2.bias[5] = -1e4  # channel 5 of relu2: 0.0 on every image
    store.register_model(dead, "dead")
    with caplog.at_level(logging.WARNING, logger="odinlab.debug.units"):
        top = units.top_images(store, "dead@1", "features.relu2", "val", k=4)
    flagged = top.filter(pl.col("unit") == 5)
    assert flagged.rows(named=True) == [{"unit": 5, "rank": None, "image_id": None, "label": None,
                                        "label_name": None, "activation": 0.0, "dead": True}]
    assert "unit 5 has the same activation" in caplog.text
    assert not top.filter(pl.col("unit") != 5)["dead"].any()


def test_ties_at_the_floor_are_not_top_images(shapes_store):
    store, _ = shapes_store
    sel = store.select("val")[:5]
    values = np.array([[0.0], [2.0], [0.0], [1.0], [0.0]])
    top = units.rank_images(values, sel, k=4)
    assert top["image_id"].to_list() == [sel.ids[1], sel.ids[3]] and top["rank"].to_list() == [1, 2]
    lowest = units.rank_images(values, sel, k=4, lowest=True)
    assert lowest["activation"].to_list() == [0.0, 0.0, 0.0, 1.0]  # the ceiling (2.0) is not among the lowest


def test_bad_columns_units_and_layers_are_refused(shapes_store):
    store, _ = shapes_store
    with pytest.raises(units.UnknownColumnError, match="Unknown column 'agee'. Columns: split, label"):
        units.unit_scores(store, "cnn@1", "head.fc1", "val", by="agee")
    with pytest.raises(odinlab.UnknownUnitError, match=r"has units 0\.\.31") as error:
        units.top_images(store, "cnn@1", "head.fc1", "val", unit=32)
    assert isinstance(error.value, IndexError)
    with pytest.raises(odinlab.UnknownLayerError, match="Did you mean: head.fc2, head.fc1"):
        units.top_images(store, "cnn@1", "head.fc9", "val")
    with pytest.raises(odinlab.OptionError, match="'label' is a column, not an image selection: .* by='label'"):
        units.unit_scores(store, "cnn@1", "head.fc1", "label")  # the old positional column
    with pytest.raises(odinlab.OptionError, match="k must be a positive int"):
        units.top_images(store, "cnn@1", "head.fc1", "val", k=0)
