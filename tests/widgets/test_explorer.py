"""The explorer: building, linking, the selection API and the messages for bad input.

Most tests inject fake views (ipywidgets that follow the views' contract) through the
explorer's view factories, so they test the explorer alone; the last ones use the real views
and run when their modules import.
"""

import importlib
import uuid

import ipywidgets as widgets
import polars as pl
import pytest
import torch

import odinlab
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
    return {"scatter": lambda ex: FakeView(ex.frame["image_id"]),
            "gallery": lambda ex: FakeGallery(ex.images.ids),
            "confusion": lambda ex: FakeView(ex.images.ids),
            "detail": lambda ex: FakeDetail()}


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
    assert list(explorer.views) == ["scatter", "gallery", "confusion", "detail"]
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
    assert list(ex.views) == ["scatter", "gallery", "confusion", "extra"]
    ex.select(digits.select("test").ids[:1])
    assert ex.views["extra"].shown == [digits.select("test").ids[:1]]
    ex.open("digits-0002")  # no detail: nothing to open, no error


# -- with the real views ------------------------------------------------------------------------------

def _real(*names):
    missing = [n for n in names if importlib.util.find_spec(f"odinlab.widgets.{n}") is None]
    return pytest.mark.skipif(bool(missing), reason=f"views not written yet: {', '.join(missing)}")


@_real("scatter", "gallery", "confusion", "detail")
def test_explore_builds_the_four_real_views_with_consistent_ids(digits):
    ex = explore(digits, "cnn@1", layer="head.fc1", images="test", color="correct", **FAST)
    assert ex.message is None, ex.message
    assert set(ex.views) == {"scatter", "gallery", "confusion", "detail"} and ex.view_errors == {}
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
