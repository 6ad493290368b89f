"""The explorer: building, linking, the selection API and the messages for bad input.

Most tests inject fake views (ipywidgets that follow the views' contract) through the
explorer's view factories, so they test the explorer alone; the last ones use the real views
and run when their modules import.
"""

import importlib
import uuid

import ipywidgets as widgets
import numpy as np
import polars as pl
import pytest
import torch

import odinlab
from odinlab.widgets.debug_views import DEBUG_VIEWS
from odinlab.errors import NotMaterializedError, OptionError, SelectionError, UnknownLayerError
from odinlab.nets import SmallCNN
from odinlab.training import fit
from odinlab.widgets.explorer import Explorer, explore

FAST = {"embedding": {"reducer": "pca"}, "progress": False}  # PCA: no UMAP compile in unit tests


@pytest.fixture(scope="module")
def digits():
    """Digits, a trained SmallCNN with predictions and head.fc1 stored; cnn@2 has nothing stored."""
    torch.manual_seed(0)
    store = odinlab.open_store(f"memory://explorer-{uuid.uuid4().hex}", create=True)
    store.ingest(odinlab.datasets.digits())
    net = SmallCNN()
    fit(net, store, "train", epochs=2, progress=False)
    store.register_model(net, "cnn")
    store.materialize(net, ["head.fc1"], images="test", progress=False)
    other = SmallCNN()
    store.register_model(other, "cnn", parent="cnn@1")
    return store


class FakeView(widgets.HTML):
    """A widget that follows the views' contract and records what it was shown."""

    def __init__(self, ids, **kwargs):
        super().__init__(**kwargs)
        self.ids = list(ids)
        self.selected_ids = []
        self.shown = []
        self.callbacks = []

    def show_selection(self, ids):
        self.shown.append(None if ids is None else list(ids))

    def on_select(self, callback):
        self.callbacks.append(callback)

    def user_selects(self, ids):
        self.selected_ids = list(ids)
        for callback in self.callbacks:
            callback(list(ids))


class FakeScatter(FakeView):
    """A scatter that records its overlays and hover provider (the API of ScatterView)."""

    def __init__(self, ids):
        super().__init__(ids)
        self.drawn, self.provider = {}, None

    def set_overlay(self, name, x, y, *, color=None, size=None, labels=None):
        self.drawn[name] = {"x": list(x), "y": list(y), "color": color, "size": size, "labels": labels}

    def set_hover(self, provider):
        self.provider = provider

    def clear_overlay(self, name=None):
        self.drawn = {} if name is None else {k: v for k, v in self.drawn.items() if k != name}


class FakeGallery(FakeView):
    def __init__(self, ids):
        super().__init__(ids)
        self.click_callbacks = []

    def on_click(self, callback):
        self.click_callbacks.append(callback)

    def user_clicks(self, image_id):
        for callback in self.click_callbacks:
            callback(image_id)


class FakeDetail(widgets.HTML):
    def __init__(self):
        super().__init__()
        self.opened = []
        self.callbacks = []

    def show(self, image_id):
        self.opened.append(image_id)

    def on_select(self, callback):  # opening a neighbour
        self.callbacks.append(callback)


def fake_views():
    return {"scatter": lambda ex: FakeScatter(ex.frame["image_id"]),
            "gallery": lambda ex: FakeGallery(ex.images.ids),
            "confusion": lambda ex: FakeView(ex.images.ids),
            "detail": lambda ex: FakeDetail(),
            "clusters": lambda ex: FakeView(ex.images.ids[:10]),
            "pairs": lambda ex: FakeView(ex.images.ids[:4]),
            **dict.fromkeys(DEBUG_VIEWS)}  # the debugging tabs have tests of their own below


@pytest.fixture
def explorer(digits):
    return Explorer(digits, "cnn@1", "head.fc1", "test", "correct", views=fake_views(), **FAST)


def _widgets(widget):
    """Every widget in a layout, depth first."""
    yield widget
    for child in getattr(widget, "children", ()):
        yield from _widgets(child)


def _text(widget) -> str:
    return " ".join(w.value for w in _widgets(widget) if isinstance(w, widgets.HTML))


def test_builds_and_lays_out_the_views(explorer, digits):
    test_ids = digits.select("test").ids
    assert explorer.message is None and explorer.error is None
    assert list(explorer.views) == ["scatter", "gallery", "confusion", "detail", "clusters", "pairs"]
    assert explorer.images.ids == test_ids and explorer.frame["image_id"].to_list() == test_ids
    assert explorer.views["scatter"].ids == test_ids
    inside = list(_widgets(explorer.widget))
    assert all(any(w is view for w in inside) for view in explorer.views.values())
    assert "odinlab-explorer" in explorer.widget._dom_classes
    assert explorer._repr_mimebundle_()["application/vnd.jupyter.widget-view+json"]["model_id"] == \
        explorer.widget.model_id
    assert "cnn@1" in repr(explorer)


def test_a_selection_in_one_view_reaches_the_others_python_and_observers(explorer, digits):
    scatter, gallery, confusion = (explorer.views[k] for k in ("scatter", "gallery", "confusion"))
    seen = []
    explorer.observe(seen.append)
    chosen = digits.select("test").ids[5:9]
    scatter.user_selects(chosen)
    assert scatter.shown == [] and gallery.shown == [chosen] and confusion.shown == [chosen]
    assert explorer.selection == chosen and seen == [chosen]
    assert 'data-selected="4"' in _text(explorer.widget)
    confusion.user_selects([])
    assert scatter.shown == [None] and gallery.shown[-1] is None and explorer.selection == [] and seen[-1] == []


def test_a_gallery_click_opens_the_detail(explorer, digits):
    image_id = digits.select("test").ids[3]
    explorer.views["gallery"].user_clicks(image_id)
    detail = explorer.views["detail"]
    assert detail.opened == [image_id]
    explorer.select(digits.select("test").ids[:5])
    assert detail.opened == [image_id]  # the detail follows clicks, not the selection
    neighbour = digits.select("test").ids[7]
    detail.callbacks[0]([neighbour])  # a neighbour opened in the detail selects it everywhere
    assert explorer.selection == [neighbour] and explorer.views["gallery"].shown[-1] == [neighbour]


def test_select_with_ids_expressions_where_text_and_none(explorer, digits):
    test = digits.select("test")
    preds = digits.predictions("cnn@1", "test")
    scatter = explorer.views["scatter"]

    assert explorer.select(test.ids[:3]).ids == test.ids[:3]
    assert explorer.selection == test.ids[:3] and scatter.shown[-1] == test.ids[:3]

    threes = test.where(pl.col("label") == 3).ids
    assert explorer.select(pl.col("label") == 3).ids == threes
    assert explorer.select("label = 3 AND split = 'test'").ids == threes
    assert explorer.select("label = 3").ids == threes  # restricted to the explored images

    wrong = preds.filter(~pl.col("correct"))["image_id"].to_list()
    assert sorted(explorer.select(~pl.col("correct")).ids) == sorted(wrong)  # prediction columns too
    assert sorted(explorer.select("NOT correct").ids) == sorted(wrong)
    lossy = preds.filter(pl.col("loss") > 1)["image_id"].to_list()
    assert sorted(explorer.select(pl.col("loss") > 1).ids) == sorted(lossy)

    assert explorer.select(None) is None
    assert explorer.selection == [] and scatter.shown[-1] is None


def test_selected_gives_the_images_with_predictions_and_metadata(explorer, digits):
    empty = explorer.selected()
    assert empty.height == 0 and "loss" in empty.columns
    chosen = digits.select("test").ids[10:14][::-1]
    explorer.select(chosen)
    frame = explorer.selected()
    assert frame["image_id"].to_list() == chosen
    for column in ("x", "y", "predicted", "predicted_name", "confidence", "margin", "loss", "correct",
                   "probabilities", "split", "label", "label_name", "ink", "source_index"):
        assert column in frame.columns, column
    preds = digits.predictions("cnn@1", chosen)
    assert frame["predicted"].to_list() == preds["predicted"].to_list()
    assert frame["loss"].to_list() == preds["loss"].to_list()
    assert frame["predicted_name"].to_list() == [digits.classes[i] for i in preds["predicted"]]
    assert set(frame["split"]) == {"test"}


def test_missing_predictions_say_the_exact_fix(digits):
    ex = Explorer(digits, "cnn@2", images="test", views=fake_views(), **FAST)
    assert isinstance(ex.error, NotMaterializedError)
    assert "store.materialize('cnn@2', ['head.fc1'], images='test')" in ex.message
    assert "store.materialize(&#x27;cnn@2&#x27;, [&#x27;head.fc1&#x27;], images=&#x27;test&#x27;)" in \
        _text(ex.widget)  # shown in the notebook, not only kept in Python
    assert ex.views == {} and ex.selection == [] and ex.selected().height == 0
    with pytest.raises(NotMaterializedError, match="store.materialize"):
        ex.select(["digits-0000"])


def test_partly_missing_predictions_build_with_a_note(digits):
    # val has no predictions stored; a mix of test and val has some
    mixed = digits.select("test").ids[:30] + digits.select("val").ids[:30]
    ex = Explorer(digits, "cnn@1", images=mixed, views=fake_views(), **FAST)
    assert ex.message is None and "30 of the 60 images have no stored predictions" in ex.note
    assert "store.materialize('cnn@1', ['head.fc1'], images=images)" in ex.note
    assert "30 of the 60" in _text(ex.widget)


def test_an_unknown_layer_names_the_close_ones(digits):
    ex = explore(digits, "cnn@1", layer="head.fc3", views=fake_views(), **FAST)
    assert isinstance(ex.error, UnknownLayerError)
    assert "Unknown layer 'head.fc3'" in ex.message and "Did you mean" in ex.message and "head.fc1" in ex.message
    assert "head.fc3" in _text(ex.widget) and ex.views == {}


def test_an_empty_image_selection_is_said_so(digits):
    ex = explore(digits, "cnn@1", images="SELECT image_id FROM images WHERE label = 99", views=fake_views(), **FAST)
    assert isinstance(ex.error, SelectionError) and "is empty" in ex.message
    assert "is empty" in _text(ex.widget)
    ex = explore(digits, "cnn@1", images=[], views=fake_views(), **FAST)
    assert "is empty" in ex.message


def test_unknown_images_model_and_color_are_messages(digits):
    assert "neither an image id nor a split" in explore(digits, "cnn@1", images="tset", **FAST).message
    assert "Unknown model" in explore(digits, "cnm@1", **FAST).message
    ex = explore(digits, "cnn@1", color="colour", views=fake_views(), **FAST)
    assert isinstance(ex.error, OptionError)
    assert "Cannot color by 'colour'" in ex.message and "loss" in ex.message and "ink" in ex.message
    for column in ("label", "predicted", "correct", "confidence", "margin", "loss", "ink"):
        assert explore(digits, "cnn@1", color=column, views=fake_views(), **FAST).message is None, column


def test_a_failing_view_gets_its_message_and_the_others_still_work(digits):
    def broken(ex):
        raise OptionError("this view cannot be built: reason given here")

    views = {**fake_views(), "confusion": broken}
    ex = Explorer(digits, "cnn@1", views=views, **FAST)
    assert ex.message is None and "confusion" not in ex.views
    assert "reason given here" in _text(ex.widget)
    ex.views["scatter"].user_selects(digits.select("test").ids[:2])
    assert ex.views["gallery"].shown == [digits.select("test").ids[:2]]


def test_views_can_be_dropped_or_added(digits):
    views = {**fake_views(), "detail": None, "extra": lambda ex: FakeView(ex.images.ids)}
    ex = Explorer(digits, "cnn@1", views=views, **FAST)
    assert list(ex.views) == ["scatter", "gallery", "confusion", "clusters", "pairs", "extra"]
    ex.select(digits.select("test").ids[:1])
    assert ex.views["extra"].shown == [digits.select("test").ids[:1]]
    ex.open("digits-0002")  # no detail: nothing to open, no error


# -- with the real views ------------------------------------------------------------------------------

def test_the_debugging_views_sit_in_tabs_under_the_linked_views_and_follow_the_selection(digits):
    ex = explore(digits, "cnn@1", layer="head.fc1", images="test", compare=["cnn@2"], **FAST)
    assert ex.message is None, ex.message
    tabs = next(w for w in _widgets(ex.widget) if isinstance(w, widgets.Tab))
    assert [tabs.get_title(i) for i in range(len(tabs.children))] == list(DEBUG_VIEWS.values())
    assert all(any(w is ex.views[name] for w in _widgets(tabs)) for name in DEBUG_VIEWS if name in ex.views)
    threes = ex.select("label = 3")
    assert ex.views["explain"].ids == threes.ids and ex.views["attribution"].ids == threes.ids
    assert set(ex.views["review"].ids) <= set(threes.ids)
    assert ex.views["explain"].explain_now().summary["n"][0] == len(threes)
    assert "compare" in ex.views or "no stored predictions" in ex.view_errors["compare"]


def _real(*names):
    missing = [n for n in names if importlib.util.find_spec(f"odinlab.widgets.{n}") is None]
    return pytest.mark.skipif(bool(missing), reason=f"views not written yet: {', '.join(missing)}")


@_real("scatter", "gallery", "confusion", "detail", "clusters", "pairs")
def test_explore_builds_the_six_real_views_with_consistent_ids(digits):
    ex = explore(digits, "cnn@1", layer="head.fc1", images="test", color="correct", **FAST)
    assert ex.message is None, ex.message
    assert set(ex.views) == {"scatter", "gallery", "confusion", "detail", "clusters", "pairs",
                             "explain", "attribution", "units", "review"}
    assert list(ex.view_errors) == ["compare"] and "compare=['cnn@2']" in ex.view_errors["compare"]
    test_ids = digits.select("test").ids
    scatter, gallery, confusion = ex.views["scatter"], ex.views["gallery"], ex.views["confusion"]
    assert scatter.ids == test_ids
    assert sorted(gallery.ids) == sorted(test_ids)
    assert sorted(confusion.ids) == sorted(test_ids)
    assert all(isinstance(v, widgets.Widget) for v in ex.views.values())
    # the layout as the browser receives it references each view's own widget model
    sent = {ref for w in _widgets(ex.widget) if isinstance(w, widgets.Box) for ref in w.get_state()["children"]}
    for name, view in ex.views.items():
        assert f"IPY_MODEL_{view.comm.comm_id}" in sent, name
    assert ex._repr_mimebundle_()["application/vnd.jupyter.widget-view+json"]["model_id"] == ex.widget.comm.comm_id


@_real("scatter", "gallery", "confusion")
def test_real_views_are_linked_both_ways(digits):
    views = {"detail": None}
    ex = explore(digits, "cnn@1", images="test", views=views, **FAST)
    assert ex.message is None, ex.message
    scatter, gallery, confusion = ex.views["scatter"], ex.views["gallery"], ex.views["confusion"]
    seen = []
    ex.observe(seen.append)

    confusion.click_cell(3, 3)  # what a click in the browser does
    cell = digits.predictions("cnn@1", "test").filter((pl.col("label") == 3) & (pl.col("predicted") == 3))
    expected = sorted(cell["image_id"].to_list())
    assert sorted(ex.selection) == expected and sorted(seen[-1]) == expected
    assert sorted(gallery.ids) == expected  # the gallery is filtered to the cell
    assert sorted(scatter.selected_ids) == expected  # the scatter highlights it

    # a box selection in the browser: the scatter's mask over its points
    import numpy as np
    bits = np.zeros(len(scatter.ids), bool)
    bits[:7] = True
    scatter.selection_mask = np.packbits(bits, bitorder="little").tobytes()
    assert ex.selection == scatter.ids[:7] and sorted(gallery.ids) == sorted(scatter.ids[:7])
    assert sorted(confusion.selected_ids) == sorted(scatter.ids[:7])

    ex.select("label = 1")
    ones = digits.select("test").where(pl.col("label") == 1).ids
    assert sorted(gallery.ids) == sorted(ones) and sorted(scatter.selected_ids) == sorted(ones)
    ex.select(None)
    assert sorted(gallery.ids) == sorted(digits.select("test").ids) and scatter.selected_ids == []


@_real("scatter", "gallery", "confusion", "detail")
def test_a_real_gallery_click_opens_the_real_detail(digits):
    ex = explore(digits, "cnn@1", images="test", **FAST)
    gallery, detail = ex.views["gallery"], ex.views["detail"]
    first = gallery.ids[0]
    gallery.click(0)  # what a click on the first thumbnail does
    assert detail.image_id == first and detail.image[:4] == b"\x89PNG"
    assert ex.selection == [first]  # the clicked image is also selected (the gallery's selection)


# -- misclassified exemplars and the decision boundary -------------------------------------------------

def _predicted_classes(digits, n=2):
    """The ``n`` classes the model predicts most often on the test images (between_classes needs them)."""
    preds = digits.predictions("cnn@1", "test")
    return [str(c) for c in preds.group_by("predicted").len().sort("len", descending=True)["predicted"][:n]]


def test_the_scatter_hover_shows_the_thumbnail_label_and_prediction(explorer, digits):
    provider = explorer.views["scatter"].provider
    image_id = digits.select("test").ids[0]
    png, caption = provider(image_id)
    row = digits.predictions("cnn@1", [image_id]).row(0, named=True)
    assert png[:4] == b"\x89PNG"
    assert caption == f"label {row['label_name']} · predicted {row['predicted']} ({row['confidence']:.2f})"


def test_the_boundary_sample_is_drawn_sized_by_inclusion_probability(explorer):
    sample = explorer.show_boundary_sample(120, seed=0)
    drawn = explorer.views["scatter"].drawn["boundary sample"]
    assert len(sample) == 120 and list(drawn["size"]) == list(sample.pi)
    at = explorer.frame.select("image_id", "x", "y").filter(pl.col("image_id").is_in(sample.image_ids.implode()))
    where = dict(zip(at["image_id"], zip(at["x"], at["y"])))
    assert [where[i] for i in sample.image_ids] == list(zip(drawn["x"], drawn["y"]))
    assert all("π=" in text for text in drawn["labels"])
    explorer.clear_overlays("boundary sample")
    assert "boundary sample" not in explorer.views["scatter"].drawn


def test_a_too_small_boundary_sample_is_a_clear_error(explorer):
    from odinlab.errors import SampleSizeError

    with pytest.raises(SampleSizeError, match="ask for a larger sample"):
        explorer.show_boundary_sample(5)


def test_between_classes_points_take_their_predicted_class_color(explorer, digits):
    a, b = _predicted_classes(digits)
    points = explorer.show_between_classes(a, b, steps=5)
    drawn = explorer.views["scatter"].drawn[f"between {a} and {b}"]
    colors = explorer.class_colors()
    assert points["t"].to_list() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert drawn["color"] == [colors[p] for p in points["predicted"]]
    first = points.row(0, named=True)
    assert drawn["labels"][0] == first["text"]
    assert first["text"].startswith(f"t=0.00 → predicted {first['predicted_name']} (p=")


def test_class_colors_are_the_scatters_colors_when_colored_by_class(digits):
    from odinlab.widgets.scatter import ScatterView

    ex = Explorer(digits, "cnn@1", color="predicted", views={**fake_views(), "scatter": None}, **FAST)
    legend = ScatterView.from_frame(ex.frame, color="predicted", legend=ex.legend("predicted")).legend
    colors = ex.class_colors()
    for item in legend["items"]:
        assert colors[list(ex.record.classes).index(item["label"])] == item["color"]
    assert len(set(colors.values())) == len(colors)  # classes nobody predicts still get a color of their own


def test_estimate_top_units_puts_the_exact_scores_beside_the_estimates(explorer):
    view = explorer.estimate_top_units("3", size=150, k=4)
    assert len(view.rows) == 4 and all(r["exact"] is not None and r["lower"] is not None for r in view.rows)
    assert "150 sampled images" in view.title and view.summary.endswith("lie inside their intervals.")


def test_an_empty_selection_is_said_so(explorer):
    explorer.select("label = 99")
    assert explorer.selection == [] and "No images selected" in _text(explorer.widget)
    explorer.select(None)
    assert "nothing selected" in _text(explorer.widget)


@_real("scatter", "gallery", "confusion", "clusters", "pairs")
def test_a_cluster_or_pair_click_selects_its_images_in_every_view(digits):
    ex = explore(digits, "cnn@1", images="test", **FAST)
    clusters, pairs, gallery, scatter = (ex.views[k] for k in ("clusters", "pairs", "gallery", "scatter"))
    assert {"odinlab-explorer-clusters", "odinlab-explorer-pairs"} <= {
        c for w in _widgets(ex.widget) for c in getattr(w, "_dom_classes", ())}
    clusters.click(0)
    members = sorted(clusters.selected_ids)
    assert sorted(ex.selection) == members == sorted(gallery.ids) == sorted(scatter.selected_ids)
    assert np.frombuffer(pairs.shown, np.uint8).sum() == sum(i in members for i in pairs.ids)
    pairs.click(0)
    assert ex.selection == pairs.selected_ids and clusters.chosen == -1
    ex.select("label = 99")
    assert gallery.message == "no images selected" and clusters.shown_total == 0 and pairs.shown_total == 0


@_real("scatter", "gallery", "confusion", "clusters", "pairs")
def test_the_real_views_say_what_is_wrong_in_their_place(digits):
    right = digits.predictions("cnn@1", "test").filter(pl.col("correct"))["image_id"].to_list()[:30]
    ex = explore(digits, "cnn@1", images=right, **FAST)
    assert ex.message is None and "makes no mistakes" in ex.views["clusters"].message


def test_the_real_scatter_gets_the_overlays_and_the_hover(digits):
    ex = explore(digits, "cnn@1", images="test", views={"detail": None, "clusters": None, "pairs": None}, **FAST)
    a, b = _predicted_classes(digits)
    ex.show_boundary_sample(120, seed=0)
    ex.show_between_classes(a, b, steps=3)
    assert {"boundary sample", f"between {a} and {b}"} <= set(ex.views["scatter"].overlays)


def test_a_class_has_one_color_whether_colored_by_label_or_prediction(digits):
    ex = Explorer(digits, "cnn@1", color="label", views={"detail": None, "clusters": None, "pairs": None}, **FAST)
    by_label = {i["label"]: i["color"] for i in ex.views["scatter"].legend["items"]}
    ex.recolor("predicted")
    by_prediction = {i["label"]: i["color"] for i in ex.views["scatter"].legend["items"]}
    shared = set(by_label) & set(by_prediction)
    assert shared and all(by_label[name] == by_prediction[name] for name in shared)


def test_mistakes_are_red_when_colored_by_correctness(digits):
    ex = Explorer(digits, "cnn@1", color="correct", views={"detail": None, "clusters": None, "pairs": None}, **FAST)
    items = {i["label"]: i["color"] for i in ex.views["scatter"].legend["items"]}
    assert items["mistake"] == "#d62728" and items["correct"] != "#d62728"


def test_the_detail_compares_the_models_given_with_compare(digits):
    ex = explore(digits, "cnn@1", images="test", compare="cnn@2", views={"clusters": None, "pairs": None}, **FAST)
    assert ex.compare == ["cnn@2"]
    ex.open(ex.images.ids[0])
    detail = ex.views["detail"]
    assert [r.model_id for r in detail.records] == ["cnn@1", "cnn@2"]
    first, second = detail.info["models"]
    assert first["model_id"] == "cnn@1" and len(first["top"]) == 5
    assert second["model_id"] == "cnn@2" and "store.materialize('cnn@2'" in second["missing"]  # nothing stored
    unknown = explore(digits, "cnn@1", images="test", compare=["nope"], **FAST)
    assert "Unknown model 'nope'" in unknown.message
