"""Statements run through the public API: each result equals the Python API's answer; mistakes are pointed."""

import numpy as np
import polars as pl
import pytest
import xarray as xr

from odinlab import sampling, widgets
from odinlab.debug import compare, error_analysis as ea
from odinlab.debug.attribution import Attributor
from odinlab.debug.explain import explain
from odinlab.debug.gradients import GradientStore
from odinlab.debug.maximize import Maximizer
from odinlab.lang.errors import OdinLanguageError
from odinlab.store import Selection


def ids_where(store, expr):
    return store.images.filter(expr)["image_id"].to_list()


def predicted(store, model, expr):
    return store.predictions(model).filter(expr)["image_id"].to_list()


# (statement, the same answer from the Python API)
VALID = [
    ("images where split = test", lambda s: s.select("test").ids),
    ("images where split = test and label = 3", lambda s: s.select("test").where(pl.col("label") == 3).ids),
    ("images where split in (val, test) and ink > 0.3",
     lambda s: ids_where(s, pl.col("split").is_in(["val", "test"]) & (pl.col("ink") > 0.3))),
    ("images where label_name = '7' limit 5", lambda s: ids_where(s, pl.col("label_name") == "7")[:5]),
    ("images where misclassified by cnn@1", lambda s: predicted(s, "cnn@1", ~pl.col("correct"))),
    ("images where correct by cnn", lambda s: predicted(s, "cnn@2", pl.col("correct"))),
    ("images where prediction of cnn = 8", lambda s: predicted(s, "cnn@2", pl.col("predicted") == 8)),
    ("images where confidence of cnn@1 < 0.4", lambda s: predicted(s, "cnn@1", pl.col("confidence") < 0.4)),
    ("images where margin of cnn <= 0.1", lambda s: predicted(s, "cnn@2", pl.col("margin") <= 0.1)),
    ("images where loss of cnn > 2", lambda s: predicted(s, "cnn@2", pl.col("loss") > 2)),
    ("images where cnn@1 and cnn@2 disagree",
     lambda s: sorted(compare.disagreements(s, "cnn@1", "cnn@2")["image_id"].to_list())),
    ("images where cnn mistakes 3 for 8", lambda s: ea.confusion_matrix(s, "cnn@2").filter(
        (pl.col("label") == 3) & (pl.col("predicted") == 8))["image_ids"][0].to_list()),
    ("images where split = test and near boundary of cnn top 10",
     lambda s: sampling.boundary_scores(s, "cnn@2", "test").sort("score", descending=True)["image_id"][:10].to_list()),
    ("models where name like 'cn*'", lambda s: s.models["model_id"].to_list()),
    ("models where version = 2", lambda s: ["cnn@2"]),
    ("models where descendants of cnn@1", lambda s: s.descendants("cnn@1")["model_id"].to_list()),
    ("models where ancestors of cnn", lambda s: s.ancestors("cnn@2")["model_id"].to_list()),
    ("models where created after '2000-01-01'", lambda s: s.models["model_id"].to_list()),
    ("models where created before '2000-01-01'", lambda s: []),
    ("models where has layer conv2d and more than 1000 parameters", lambda s: s.models["model_id"].to_list()),
    ("models where fewer than 1000 parameters", lambda s: []),
    ("models where accuracy >= 0", lambda s: s.models["model_id"].to_list()),
    ("experiments where model_id = cnn@1",
     lambda s: s.experiments.filter(pl.col("model_id") == "cnn@1")["experiment_id"].to_list()),
    ("sql \"select split, count(*) as n from images group by split order by split\"",
     lambda s: s.sql("select split, count(*) as n from images group by split order by split")),
    ("images where split = test | confusion of cnn", lambda s: ea.confusion_matrix(s, "cnn@2", "test")),
    ("images where split = test | label errors of cnn top 5", lambda s: ea.label_errors(s, "cnn@2", "test", k=5)),
    ("images where split = test | compare cnn@1 with cnn@2", lambda s: compare.class_deltas(s, "cnn@1", "cnn@2", "test")),
    ("images where split = test | compare cnn@1 with cnn@2 by agreement",
     lambda s: compare.agreement(s, "cnn@1", "cnn@2", "test")),
    ("images where split = test | top 3 units of cnn at head.fc1 by label",
     lambda s: sampling.top_units(s, "cnn@2", "head.fc1", "test", by="label", k=3)),
    ("images where split = test | error clusters of cnn at head.fc1",
     lambda s: ea.error_clusters(s, "cnn@2", "head.fc1", "test")),
    ("images where split = test | sample 0.3 near boundary of cnn",
     lambda s: sampling.class_accuracy(s, "cnn@2", sample=sampling.boundary_sample(s, "cnn@2", 0.3, "test", seed=0))),
    ("images where split = test | embed with cnn at head.fc1 using pca",
     lambda s: sampling.Embedding(s, "cnn@2", "head.fc1", reducer="pca", seed=0, progress=False).fit("test").frame()),
    ("images where split = test | materialize cnn@2 layers head.fc1",
     lambda s: s.materialize("cnn@2", ["head.fc1"], "test", progress=False)),
]


def same(result, expected):
    if isinstance(result, Selection):
        result = result.ids
        assert sorted(result) == sorted(expected) and len(result) == len(expected)
    elif isinstance(expected, list):
        assert sorted(result["model_id" if "model_id" in result.columns and "experiment_id" not in result.columns
                             else "experiment_id"].to_list()) == sorted(expected)
    else:
        assert result.drop([c for c in result.columns if result[c].dtype == pl.Object]).equals(
            expected.drop([c for c in expected.columns if expected[c].dtype == pl.Object]))


@pytest.mark.parametrize("text, answer", VALID, ids=[t for t, _ in VALID])
def test_a_statement_gives_the_python_apis_answer(lang_store, run, text, answer):
    same(run(text), answer(lang_store))


def test_attribute_gives_the_attributors_maps(lang_store, run):
    result = run("images where misclassified by cnn limit 3 | attribute with cnn using saliency")
    ids = run("images where misclassified by cnn limit 3").ids
    expected = Attributor(lang_store, "cnn@2", method="saliency").attribute(ids, progress=False)
    xr.testing.assert_allclose(result, expected)


def test_maximize_a_class_and_a_unit_give_the_maximizers_images(lang_store, run):
    np.testing.assert_allclose(run("maximize cnn class 3 steps 4"),
                               Maximizer(lang_store, "cnn@2", steps=4).maximize("class", unit=3))
    np.testing.assert_allclose(run("maximize cnn layer features.relu2 unit 5 steps 4"),
                               Maximizer(lang_store, "cnn@2", steps=4).maximize("channel", "features.relu2", 5))


def test_explain_gives_the_explanation_of_the_selection(lang_store, run):
    result = run("images where cnn mistakes 3 for 8 | explain with cnn")
    expected = explain(lang_store, "cnn@2", run("images where cnn mistakes 3 for 8"))
    assert result.summary.equals(expected.summary)


def test_influence_gives_the_gradient_nearest_training_images(lang_store, run):
    result = run("images where misclassified by cnn limit 2 | influence of cnn at head.fc2 top 3")
    grads = GradientStore(lang_store, "cnn@2", "head.fc2")
    queries = run("images where misclassified by cnn limit 2")
    assert result.equals(grads.most_similar(queries, "train", k=3))


def test_top_units_by_a_metadata_column_rank_units(run):
    assert run("images where split = test | top 2 units of cnn at head.fc1 by split")["unit"].len() > 0


def test_show_opens_the_widgets_with_the_models_and_layer_named_before(run):
    assert isinstance(run("images where split = test | show table"), pl.DataFrame)
    gallery = run("images where misclassified by cnn limit 20 | show gallery")
    assert isinstance(gallery, widgets.GalleryView) and len(gallery.ids) == 20
    assert isinstance(run("images where split = test | show confusion of cnn@1"), widgets.ConfusionView)
    assert isinstance(run("images where split = test | compare cnn@1 with cnn@2 | show compare"),
                      widgets.CompareView)
    assert isinstance(run("images where split = test | top units of cnn at head.fc1 | show units"), widgets.UnitView)


def test_a_result_is_bound_to_a_variable(runner):
    runner.run("images where misclassified by cnn -> mistakes\nmodels -> versions")
    assert isinstance(runner.namespace["mistakes"], Selection)
    assert runner.namespace["versions"]["model_id"].to_list() == ["cnn@1", "cnn@2"]


def test_use_takes_the_store_from_a_variable(lang_store):
    from odinlab.lang import Runner

    runner = Runner(None, {"my_store": lang_store})
    runner.run("use my_store")
    assert runner.store is lang_store


def test_export_report_writes_the_html_report(run, tmp_path):
    path = run(f"images where split = val | export report '{tmp_path / 'r.html'}' for cnn")
    assert path.exists() and "<html" in path.read_text().lower()


# Each mistake, and the exact message shown.
INVALID = [
    ("images where splt = test",
     "line 1: Unknown column 'splt' of the images table. Did you mean: split? Columns: image_id, split, label, "
     "label_name, ink, source_index.\n    images where splt = test\n                 ^^^^"),
    ("images where split = tst",
     "line 1: No split is 'tst'. Did you mean: test? Values of split: test, train, val.\n"
     "    images where split = tst\n                         ^^^"),
    ("models\nimages where misclassified by cnm",
     "line 2: Unknown model 'cnm'. Did you mean: cnn, cnn@2, cnn@1? Models: cnn@1, cnn@2.\n"
     "    images where misclassified by cnm\n                                  ^^^"),
    ("images | top units of cnn at head.fc9",
     "line 1: Unknown layer 'head.fc9' of cnn@2. Did you mean: head.fc2, head.fc1, head? Layers: features, "
     "features.conv1, features.relu1, features.conv2, features.relu2, features.pool, head, head.flatten, head.fc1, "
     "head.relu, head.fc2.\n    images | top units of cnn at head.fc9\n                                 ^^^^^^^^"),
    ("images where label = 12",
     "line 1: Unknown class '12'. Did you mean: 2, 1? Classes: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9.\n"
     "    images where label = 12\n                         ^^"),
    ("images | attribute with cnn using salency",
     "line 1: Unknown method 'salency'. Did you mean: saliency? Methods: deconvolution, deeplift, deeplift_shap, "
     "feature_ablation, feature_permutation, gradient_shap, guided_backprop, guided_gradcam, input_x_gradient, "
     "integrated_gradients, internal_influence, kernel_shap, layer_conductance, layer_deeplift, layer_deeplift_shap, "
     "layer_feature_ablation, layer_feature_permutation, layer_gradcam, layer_gradient_shap, "
     "layer_gradient_x_activation, … (8 more).\n    images | attribute with cnn using salency\n"
     "                                      ^^^^^^^"),
    ("images | top units of cnn at head.fc1 by colour",
     "line 1: Unknown column 'colour' of the images table. Columns: image_id, split, label, label_name, ink, "
     "source_index.\n    images | top units of cnn at head.fc1 by colour\n                                             ^^^^^^"),
    ("images | show galery of cnn",
     "line 1: Unknown view 'galery'. Did you mean: gallery, table? Views: table, explore, gallery, confusion, "
     "compare, units.\n    images | show galery of cnn\n                  ^^^^^^"),
    ("models where has layer maxpool",
     "line 1: No model has a layer of type 'maxpool'. Layer types: AdaptiveAvgPool2d, Conv2d, Flatten, Linear, ReLU, "
     "Sequential.\n    models where has layer maxpool\n                           ^^^^^^^"),
    ("images where loss of cnn > high",
     "line 1: Expected a number here, not 'high'.\n    images where loss of cnn > high\n"
     "                               ^^^^"),
    ("models | label errors of cnn",
     "line 1: label errors needs images, and what comes before it (DataFrame) has no image_id.\n"
     "    models | label errors of cnn\n             ^^^^^^^^^^^^^^^^^^^"),
    ("images | compare cnn@1 with cnn@2 by votes",
     "line 1: Unknown comparison 'votes'. Comparisons: deltas, agreement, disagreements, paired.\n"
     "    images | compare cnn@1 with cnn@2 by votes\n                                         ^^^^^"),
    ("models where created after 'yesterday'",
     "line 1: 'yesterday' is not a date: write it as 'YYYY-MM-DD' or 'YYYY-MM-DD HH:MM'.\n"
     "    models where created after 'yesterday'\n                               ^^^^^^^^^^^"),
    ("use nothing",
     "line 1: No variable 'nothing'. Variables holding a store: (none).\n    use nothing\n    ^^^^^^^^^^^"),
]


@pytest.mark.parametrize("text, message", INVALID, ids=[t for t, _ in INVALID])
def test_a_mistake_names_the_valid_choices_pointed_at_the_token(runner, text, message):
    with pytest.raises(OdinLanguageError) as caught:
        runner.run(text)
    assert str(caught.value) == message


def test_without_a_store_the_message_says_how_to_choose_one():
    from odinlab.lang import Runner

    with pytest.raises(OdinLanguageError, match="No store yet: start with  %odin use 'path/to/store'"):
        Runner().run("images")
