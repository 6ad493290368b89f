"""UnitView: top and least-activating images and scores from odinlab.debug.units, the maximization
(stored, or computed on a button), the "select top images" button, selections shown from elsewhere,
switching units, dead units, messages."""

import uuid

import numpy as np
import polars as pl
import pytest
import torch

import odinlab
from odinlab.debug import units
from odinlab.debug.maximize import Maximizer
from odinlab.draw.maximize import display_image
from odinlab.nets import SmallCNN
from odinlab.training import fit
from odinlab.widgets.detail import _png
from odinlab.widgets.gallery import GalleryView, unpack_mask
from odinlab.widgets.links import SelectionHub
from odinlab.widgets.unit_view import UnitView

LAYER = "features.relu2"
STEPS = 16  # a short optimization: the tests check the plumbing, not the picture


@pytest.fixture(scope="module")
def digits_store():
    """Digits, a tiny CNN trained briefly, its test predictions and two layers stored."""
    torch.manual_seed(0)
    store = odinlab.open_store(f"memory://unit-view-{uuid.uuid4().hex}", create=True)
    store.ingest(odinlab.datasets.digits())
    net = SmallCNN(1, 10, width=8)
    fit(net, store, "train", epochs=2, lr=1e-2, progress=False)
    store.register_model(net, "cnn")
    store.materialize(net, [LAYER, "head.fc1"], images="test", progress=False)
    return store


def _answer(view, content):
    """Simulate a message from the browser: return what the kernel sends back."""
    sent = []
    view.send = lambda reply, buffers=None: sent.append((reply, buffers))
    view._on_message(view, content, [])
    return sent


def _live_unit(store, layer=LAYER) -> int:
    """A unit that fires on some test images but not on all alike (it has top images)."""
    values = units.unit_activations(store, "cnn@1", layer, "test").values
    return int(np.argmax(values.std(axis=0)))


def test_top_and_least_activating_images_are_units_top_images(digits_store):
    unit = _live_unit(digits_store)
    view = UnitView(digits_store, "cnn@1", LAYER, unit, "test", k=5, steps=STEPS)
    top = units.top_images(digits_store, "cnn@1", LAYER, "test", unit=unit, k=5)
    low = units.top_images(digits_store, "cnn@1", LAYER, "test", unit=unit, k=5, lowest=True)
    assert view.message == "" and view.dead == "" and view.unit == unit and view.n_units == 16
    assert [r["image_id"] for r in view.top] == top["image_id"].to_list()
    assert [r["activation"] for r in view.top] == pytest.approx(top["activation"].to_list())
    assert [r["image_id"] for r in view.low] == low["image_id"].to_list()
    assert view.ids == top["image_id"].to_list() + low["image_id"].to_list()
    assert view.title.startswith(f"channel {unit} of {LAYER} (cnn@1)")


def test_scores_are_the_best_values_of_unit_scores_by_label_and_metadata(digits_store):
    unit = _live_unit(digits_store)
    view = UnitView(digits_store, "cnn@1", LAYER, unit, "test", n_scores=2, steps=STEPS)
    assert view.by == ["label", "ink"]  # image_id, split and the source_index ids are not tracked
    by_label = units.unit_scores(digits_store, "cnn@1", LAYER, "test", by="label").filter(pl.col("unit") == unit)
    labels = [s for s in view.scores if s["by"] == "label"]
    assert [s["value"] for s in labels] == by_label["label_name"].head(2).to_list()
    assert [s["auc"] for s in labels] == pytest.approx(by_label["auc"].head(2).to_list())
    by_ink = units.unit_scores(digits_store, "cnn@1", LAYER, "test", by="ink").filter(pl.col("unit") == unit)
    [ink] = [s for s in view.scores if s["by"] == "ink"]
    assert ink["rho"] == pytest.approx(by_ink["rho"][0]) and ink["auc"] is None


def test_without_a_unit_the_most_label_selective_unit_is_shown(digits_store):
    view = UnitView(digits_store, "cnn@1", "head.fc1", None, "test", steps=STEPS)
    best = units.unit_scores(digits_store, "cnn@1", "head.fc1", "test", by="label")["unit"][0]
    assert view.unit == best and view.title.startswith(f"neuron {best} of head.fc1")


def test_the_maximize_button_computes_stores_and_shows_the_image(digits_store):
    unit = _live_unit(digits_store)
    view = UnitView(digits_store, "cnn@1", LAYER, unit, "test", steps=STEPS, seed=3)
    assert view.maximized == b"" and view.max_status == "not computed yet"  # nothing stored: nothing computed
    states = []
    view.observe(lambda change: states.append(change["new"]), names=["max_status"])
    _answer(view, {"kind": "maximize"})  # what the button sends
    assert states == ["computing", ""] and view.maximized[:4] == b"\x89PNG"
    maximizer = Maximizer(digits_store, "cnn@1", steps=STEPS, seed=3)
    image = maximizer.maximize("channel", LAYER, unit)  # read from the store, not optimized again
    assert view.max_value == pytest.approx(float(maximizer.score(image, "channel", LAYER, unit)[0]))
    stats = maximizer.color_stats
    assert view.maximized == _png(display_image(image, stats.low, stats.high), view.image_size)
    again = UnitView(digits_store, "cnn@1", LAYER, unit, "test", steps=STEPS, seed=3)
    assert again.max_status == "" and again.maximized == view.maximized  # stored: shown at once


def test_maximize_true_computes_for_every_unit_shown(digits_store):
    view = UnitView(digits_store, "cnn@1", "head.fc1", 2, "test", steps=STEPS, seed=5, maximize=True)
    assert view.maximized[:4] == b"\x89PNG" and view.max_status == ""
    view.show_unit(4)
    assert view.maximized[:4] == b"\x89PNG" and view.unit == 4


def test_the_select_button_selects_the_top_images_in_the_hub_and_the_gallery(digits_store):
    view = UnitView(digits_store, "cnn@1", LAYER, _live_unit(digits_store), "test", steps=STEPS)
    gallery = GalleryView(digits_store, "cnn@1", "test")
    hub = SelectionHub(digits_store, "test")
    hub.add(view), hub.add(gallery)
    seen = []
    view.on_select(seen.append)
    _answer(view, {"kind": "select"})  # what the button sends
    top = [r["image_id"] for r in view.top]
    assert view.selected and seen[-1] == view.selected_ids == top
    assert hub.ids == top and sorted(gallery.ids) == sorted(top)
    assert unpack_mask(view.shown, len(view.ids)).tolist() == list(range(len(top))) and view.shown_total == len(top)
    _answer(view, {"kind": "select"})  # pressed again: cleared
    assert not view.selected and seen[-1] == view.selected_ids == [] and hub.ids == [] and view.shown == b""


def test_a_selection_from_elsewhere_is_marked_without_callbacks(digits_store):
    view = UnitView(digits_store, "cnn@1", LAYER, _live_unit(digits_store), "test", steps=STEPS)
    seen = []
    view.on_select(seen.append)
    chosen = [view.top[1]["image_id"], view.low[0]["image_id"], "digits-0000"]
    view.show_selection(chosen)
    assert unpack_mask(view.shown, len(view.ids)).tolist() == [1, len(view.top)] and view.shown_total == 3
    assert not view.selected
    view.show_selection([r["image_id"] for r in view.top])  # exactly the top images: the button shows it
    assert view.selected and view.selected_ids == [r["image_id"] for r in view.top]
    view.show_selection(None)
    assert view.shown == b"" and view.shown_total == -1 and not view.selected and seen == []


def test_switching_units_from_python_and_the_browser(digits_store):
    view = UnitView(digits_store, "cnn@1", "head.fc1", 0, "test", steps=STEPS)
    version = view.version
    view.select_top()
    view.show_unit(3)
    assert view.unit == 3 and view.version == version + 1 and not view.selected  # a new unit clears the selection
    assert view.top[0]["image_id"] == units.top_images(digits_store, "cnn@1", "head.fc1", "test", unit=3)["image_id"][0]
    _answer(view, {"kind": "unit", "unit": 5})
    assert view.unit == 5
    _answer(view, {"kind": "unit", "unit": 99}), _answer(view, {"kind": "unit", "unit": "six"})  # ignored
    assert view.unit == 5
    with pytest.raises(odinlab.UnknownUnitError, match="units 0..31"):
        view.show_unit(32)
    assert view.unit == 5 and view.message == ""  # the view is as it was


def test_the_browser_gets_one_png_an_image_top_then_least(digits_store):
    view = UnitView(digits_store, "cnn@1", LAYER, _live_unit(digits_store), "test", k=3, steps=STEPS)
    [(reply, pngs)] = _answer(view, {"kind": "thumbs"})
    assert reply == {"kind": "thumbs", "version": view.version} and len(pngs) == len(view.ids) == 6
    assert pngs == digits_store.thumbnails(view.ids, view.thumb_size)


def test_a_dead_unit_says_so_and_has_nothing_to_select(digits_store):
    values = units.unit_activations(digits_store, "cnn@1", LAYER, "test").values
    dead = np.flatnonzero(values.max(axis=0) == values.min(axis=0))
    assert len(dead), "the fixture's network should have a silent channel"
    view = UnitView(digits_store, "cnn@1", LAYER, int(dead[0]), "test", steps=STEPS)
    assert view.dead.startswith(f"Unit {dead[0]} is dead") and view.top == view.low == [] and view.ids == []
    view.select_top()
    assert not view.selected and view.selected_ids == []


def test_bad_input_is_a_message_in_the_widget(digits_store):
    view = UnitView(digits_store, "cnn@1", "head.fc3", 0, "test")
    assert "Unknown layer 'head.fc3'" in view.message and "head.fc1" in view.message
    assert "out of range" in UnitView(digits_store, "cnn@1", LAYER, 99, "test").message
    assert UnitView(digits_store, "cnn@1", LAYER, 0, []).message.startswith("No images selected")
    with pytest.raises(odinlab.OptionError):
        UnitView(digits_store, "cnn@1", LAYER, 0, "test", k=0)


def test_without_the_network_stored_layers_work_and_the_maximization_says_how(digits_store):
    fresh = odinlab.open_store(digits_store.url)  # a new session: weights, no module
    view = UnitView(fresh, "cnn@1", LAYER, _live_unit(digits_store), "test")
    assert view.message == "" and view.top and "store.load_weights(" in view.max_status
    view.compute_maximization()
    assert view.maximized == b"" and "store.load_weights(" in view.max_status
    missing = UnitView(fresh, "cnn@1", "features.relu1", 0, "test")  # not stored, no network: the fix
    assert "store.materialize('cnn@1', ['features.relu1'], images='test')" in missing.message
