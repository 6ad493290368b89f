import numpy as np
import polars as pl
import pytest
from scipy.stats import binomtest, chi2

import odinlab
from odinlab.debug import compare
from odinlab.draw.compare import cka_figure, class_delta_figure
from odinlab.nets import SmallCNN


@pytest.fixture(scope="module")
def versions(two_versions):
    """v1 trained on digits; v2 = v1 with its conv layers frozen and the head trained on."""
    store = two_versions("memory://compare-versions", ["features.relu2", "head.fc1"], tuned_epochs=6, images=None)
    return store, store.module("cnn@1"), store.module("cnn@2")


def test_agreement_counts_and_mcnemar_follow_the_paired_predictions(versions):
    store, *_ = versions
    frame = compare.agreement(store, "cnn@1", "cnn@2", "test")
    assert isinstance(frame, pl.DataFrame) and frame.height == 1
    result = frame.row(0, named=True)
    assert (result["model_a"], result["model_b"], result["images"]) == ("cnn@1", "cnn@2", 270)
    a = store.predictions("cnn@1", "test")["correct"].to_numpy()
    b = store.predictions("cnn@2", "test")["correct"].to_numpy()
    assert result["only_a_right"] == (a & ~b).sum() and result["only_b_right"] == (~a & b).sum()
    assert result["both_right"] + result["both_wrong"] + result["only_a_right"] + result["only_b_right"] == 270
    n = result["only_a_right"] + result["only_b_right"]
    expected = binomtest(result["only_a_right"], n, 0.5).pvalue if n < 25 else \
        chi2.sf((abs(result["only_a_right"] - result["only_b_right"]) - 1) ** 2 / n, 1)
    assert result["mcnemar_p"] == pytest.approx(expected)
    assert result["accuracy_b"] > result["accuracy_a"]  # v2 trained longer
    assert result["accuracy_a"] == pytest.approx(a.mean()) and result["accuracy_b"] == pytest.approx(b.mean())
    predicted_a = store.predictions("cnn@1", "test")["predicted"].to_numpy()
    predicted_b = store.predictions("cnn@2", "test")["predicted"].to_numpy()
    assert result["agreement"] == pytest.approx((predicted_a == predicted_b).mean())


def test_every_form_of_selection_and_model_gives_the_same_answer(versions):
    store, v1, v2 = versions
    test = store.select("test")
    forms = ["test", test.ids, "SELECT image_id FROM images WHERE split = 'test'", test, pl.col("split") == "test"]
    frames = [compare.agreement(store, "cnn@1", "cnn@2", images) for images in forms]
    frames += [compare.agreement(store, v1, v2, "test"), compare.agreement(store, store.model("cnn@1"), "cnn", "test")]
    assert all(f.equals(frames[0]) for f in frames[1:])
    pairs = [compare.paired(store, "cnn@1", "cnn@2", images) for images in forms]
    assert all(p.equals(pairs[0]) for p in pairs[1:])
    assert pairs[0].columns == ["image_id", "label", "label_name", "predicted_a", "correct_a", "predicted_b",
                                "correct_b", "agree"]


def test_disagreements_say_which_version_is_right(versions):
    store, *_ = versions
    rows = compare.disagreements(store, "cnn@1", "cnn@2", "test")
    assert rows.height == round((1 - compare.agreement(store, "cnn@1", "cnn@2", "test")["agreement"].item()) * 270)
    assert (rows["predicted_a"] != rows["predicted_b"]).all()
    for row in rows.iter_rows(named=True):
        expected = "a" if row["correct_a"] and not row["correct_b"] else "b" if row["correct_b"] and not row["correct_a"] else "neither"
        assert row["right"] == expected


def test_class_deltas_are_the_difference_of_per_class_metrics(versions):
    store, *_ = versions
    deltas = compare.class_deltas(store, "cnn@1", "cnn@2", "test")
    np.testing.assert_allclose(deltas["recall_delta"], deltas["recall_b"] - deltas["recall_a"])
    recall_a_3 = store.predictions("cnn@1", "test").filter(pl.col("label") == 3)["correct"].mean()
    assert deltas["recall_a"][3] == pytest.approx(recall_a_3)
    assert deltas.columns[:3] == ["label", "label_name", "support"] and deltas["support"].sum() == 270
    precision_b_3 = store.predictions("cnn@2", "test").filter(pl.col("predicted") == 3)["correct"].mean()
    assert deltas["precision_b"][3] == pytest.approx(precision_b_3)
    figure = class_delta_figure(deltas, "recall")
    assert list(figure.data[0].y) == deltas["recall_delta"].to_list()
    assert list(figure.data[0].x) == store.classes


def test_linear_cka_is_invariant_to_rotation_and_scale_and_low_for_unrelated_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 20))
    rotation = np.linalg.qr(rng.normal(size=(20, 20)))[0]
    assert compare.linear_cka(x, 5 * x @ rotation) == pytest.approx(1.0)
    assert compare.linear_cka(x, rng.normal(size=(200, 20))) < 0.2
    wide = rng.normal(size=(30, 500))  # the Gram form (fewer images than features) agrees
    assert compare.linear_cka(wide, wide @ np.diag(rng.uniform(0.5, 2, 500))) == pytest.approx(
        _cka_by_definition(wide, wide @ np.diag(rng.uniform(0.5, 2, 500))), abs=0.05)


def _cka_by_definition(x, y):
    h = np.eye(len(x)) - 1 / len(x)
    k, l = h @ x @ x.T @ h, h @ y @ y.T @ h
    return np.trace(k @ l) / np.sqrt(np.trace(k @ k) * np.trace(l @ l))


def test_cka_matrix_sees_frozen_layers_as_identical(versions):
    store, *_ = versions
    matrix = compare.cka_matrix(store, "cnn@1", "cnn@2", ["features.relu2", "head.fc1"],
                                ["features.relu2", "head.fc1"], "val")
    values = {(r["layer_a"], r["layer_b"]): r["cka"] for r in matrix.iter_rows(named=True)}
    assert values[("features.relu2", "features.relu2")] == pytest.approx(1.0, abs=1e-6)  # frozen in v2
    assert values[("head.fc1", "head.fc1")] < 1.0
    assert cka_figure(matrix).data[0].z.shape == (2, 2)


def test_flips_match_disagreements_and_frozen_layers_do_not_move(versions):
    store, *_ = versions
    moved_head = compare.flips(store, "cnn@1", "cnn@2", "head.fc1", "test")
    assert moved_head["flipped"].sum() == compare.disagreements(store, "cnn@1", "cnn@2", "test").height
    assert moved_head["moved"].max() > 0 and moved_head["moved"].is_sorted(descending=True)
    frozen = compare.flips(store, "cnn@1", "cnn@2", "features.relu2", "test")
    assert frozen["moved"].max() == pytest.approx(0.0, abs=1e-6)


def test_versions_of_different_tasks_are_refused(versions):
    store, *_ = versions
    store.register_model(SmallCNN(1, 10, width=8), "other", classes=[str(i) for i in range(9, -1, -1)])
    with pytest.raises(compare.ComparisonError, match="different classes"):
        compare.agreement(store, "cnn@1", "other@1", "test")


def test_attribution_agreement_is_a_rank_correlation_of_the_two_maps(versions):
    store, *_ = versions
    ids = store.select("test")["image_id"].head(12)
    agree = compare.attribution_agreement(store, "cnn@1", "cnn@2", ids, method="saliency")
    from scipy.stats import spearmanr

    from odinlab.debug.attribution import Attributor
    first = agree.row(0, named=True)
    maps = [np.asarray(Attributor(store, m, method="saliency").attribute([first["image_id"]], target="prediction"))
            for m in ("cnn@1", "cnn@2")]
    assert first["spearman"] == pytest.approx(spearmanr(maps[0].ravel(), maps[1].ravel()).statistic, abs=1e-6)
    assert agree.height == 12 and agree["spearman"].is_sorted()
    same = compare.attribution_agreement(store, "cnn@1", "cnn@1", ids, method="saliency")
    assert same["spearman"].min() == pytest.approx(1.0)


def test_analysis_modules_do_not_import_plotly():
    import ast
    import inspect

    from odinlab.debug import maximize, units
    from odinlab.debug.maximize import render

    for module in (compare, units, maximize, render, maximize.results, maximize.objectives, maximize.param):
        tree = ast.parse(inspect.getsource(module))
        names = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
        names += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
        assert not [n for n in names if n.startswith("plotly")], module.__name__


def test_images_without_predictions_are_refused(versions):
    store, *_ = versions
    store.register_model(SmallCNN(1, 10, width=8), "unmaterialized")
    with pytest.raises(odinlab.NotMaterializedError, match="no stored predictions of unmaterialized@1"):
        compare.agreement(store, "cnn@1", "unmaterialized@1", "test")
