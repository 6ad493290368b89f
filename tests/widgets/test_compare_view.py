"""CompareView: every number from odinlab.debug.compare, the disagreement cards (thumbnails, clicks,
groups, selections shown from elsewhere), movement, CKA, attribution agreement on request, messages."""

import uuid

import numpy as np
import polars as pl
import pytest

import odinlab
from odinlab.debug import compare
from odinlab.nets import SmallCNN
from odinlab.widgets.compare_view import CompareView
from odinlab.widgets.gallery import GalleryView
from odinlab.widgets.links import SelectionHub

LAYERS = ["features.relu2", "head.fc1"]


@pytest.fixture(scope="module")
def versions(two_versions):
    """Digits with cnn@1 and cnn@2 (conv layers frozen, head trained on); test predictions and LAYERS stored."""
    return two_versions(f"memory://compare-view-{uuid.uuid4().hex}", LAYERS)


@pytest.fixture(scope="module")
def view(versions):
    return CompareView(versions, "cnn@1", "cnn@2", "test", layer="head.fc1", max_cards=500)


def _answer(view, content):
    """Simulate a message from the browser: return what the kernel sends back."""
    sent = []
    view.send = lambda reply, buffers=None: sent.append((reply, buffers))
    view._on_message(view, content, [])
    return sent


def test_agreement_and_class_deltas_are_the_debug_functions_numbers(view, versions):
    assert view.message == ""
    expected = compare.agreement(versions, "cnn@1", "cnn@2", "test").row(0, named=True)
    assert view.summary == pytest.approx(expected)
    assert 0 < view.summary["agreement"] < 1 and view.summary["mcnemar_p"] == pytest.approx(expected["mcnemar_p"])
    deltas = compare.class_deltas(versions, "cnn@1", "cnn@2", "test")
    assert [row["label_name"] for row in view.deltas] == deltas["label_name"].to_list()
    assert [row["f1_delta"] for row in view.deltas] == pytest.approx(deltas["f1_delta"].to_list())
    assert [row["recall_b"] for row in view.deltas] == pytest.approx(deltas["recall_b"].to_list())


def test_cards_are_the_disagreements_with_both_predictions_and_who_is_right(view, versions):
    frame = compare.disagreements(versions, "cnn@1", "cnn@2", "test")
    assert sorted(view.ids) == sorted(frame["image_id"].to_list()) and len(view.cards) == frame.height > 0
    classes = list(versions.model("cnn@1").classes)
    rows = {row["image_id"]: row for row in frame.iter_rows(named=True)}
    for card in view.cards:
        row = rows[card["image_id"]]
        assert (card["predicted_a"], card["predicted_b"]) == (classes[row["predicted_a"]], classes[row["predicted_b"]])
        assert card["right"] == row["right"] and card["label_name"] == row["label_name"]
    assert view.groups == {g: int((frame["right"] == g).sum()) for g in ("a", "b", "neither")}


def test_movement_comes_from_flips_and_cards_are_ordered_most_moved_first(view, versions):
    flips = compare.flips(versions, "cnn@1", "cnn@2", "head.fc1", "test")
    movement = view.movement
    assert movement["flipped"] == flips["flipped"].sum() == len(view.cards)
    assert sum(movement["hist_flipped"]) + sum(movement["hist_kept"]) == movement["images"] == 270
    assert movement["median_flipped"] == pytest.approx(flips.filter(pl.col("flipped"))["moved"].median())
    moved = [card["moved"] for card in view.cards]
    assert moved == sorted(moved, reverse=True)
    assert moved[0] == pytest.approx(flips.filter(pl.col("flipped"))["moved"].max())


def test_cka_shows_every_stored_layer_pair_from_cka_matrix(view, versions):
    frame = compare.cka_matrix(versions, "cnn@1", "cnn@2", LAYERS, LAYERS, "test")
    assert view.cka["layers_a"] == LAYERS and view.cka["layers_b"] == LAYERS
    for row in frame.iter_rows(named=True):
        i, j = LAYERS.index(row["layer_a"]), LAYERS.index(row["layer_b"])
        assert view.cka["values"][i][j] == pytest.approx(row["cka"])


def test_the_browser_gets_one_png_a_card_when_it_asks(view, versions):
    [(reply, pngs)] = _answer(view, {"kind": "thumbs"})
    assert reply == {"kind": "thumbs", "version": view.version}
    assert len(pngs) == len(view.cards) and all(png[:4] == b"\x89PNG" for png in pngs)
    assert pngs[0] == versions.thumbnails([view.cards[0]["image_id"]], view.thumb_size)[0]


def test_a_click_on_a_card_selects_its_image_in_the_hub_and_the_gallery(versions):
    view = CompareView(versions, "cnn@1", "cnn@2", "test")
    gallery = GalleryView(versions, "cnn@2", "test")
    hub = SelectionHub(versions, "test")
    hub.add(view), hub.add(gallery)
    seen = []
    view.on_select(seen.append)
    _answer(view, {"kind": "click", "index": 2})  # what a click on the third card sends
    image = view.cards[2]["image_id"]
    assert view.selected_ids == seen[-1] == hub.ids == gallery.ids == [image]
    view.click(2)  # a second click clears
    assert view.selected_ids == seen[-1] == hub.ids == [] and view.chosen == -1


def test_a_group_button_selects_every_disagreement_of_that_group(versions):
    view = CompareView(versions, "cnn@1", "cnn@2", "test", max_cards=5)
    seen = []
    view.on_select(seen.append)
    _answer(view, {"kind": "group", "group": "b"})
    fixed = compare.disagreements(versions, "cnn@1", "cnn@2", "test").filter(pl.col("right") == "b")
    assert sorted(seen[-1]) == sorted(view.selected_ids) == sorted(fixed["image_id"].to_list())
    assert len(view.selected_ids) > len(view.cards) == 5  # a group holds images beyond the cards shown
    view.click(0)  # a card click replaces the group
    assert view.group == "" and seen[-1] == [view.cards[0]["image_id"]]
    view.select_group("a"), view.select_group("a")  # the same group again clears
    assert view.group == "" and seen[-1] == []
    _answer(view, {"kind": "group", "group": "everything"})  # a malformed message selects nothing
    assert view.group == "" and len(seen) == 4
    with pytest.raises(odinlab.OptionError, match="one of a, b, neither"):
        view.select_group("c")


def test_a_selection_from_elsewhere_is_highlighted_on_the_cards_without_callbacks(versions):
    view = CompareView(versions, "cnn@1", "cnn@2", "test")
    seen = []
    view.on_select(seen.append)
    two = [view.cards[0]["image_id"], view.cards[3]["image_id"], "digits-not-a-disagreement"]
    view.show_selection(two)
    counts = np.frombuffer(view.shown, "<u4")
    assert counts[0] == counts[3] == 1 and counts.sum() == 2 and view.shown_total == 3 and view.chosen == -1
    view.show_selection([view.cards[4]["image_id"]])  # exactly one card: it is chosen
    assert view.chosen == 4
    group = [c["image_id"] for c in view.cards if c["right"] == "neither"]
    view.show_selection(group)  # exactly a group (every card shown): the group is marked
    assert view.group == "neither" and view.chosen == -1
    view.show_selection(None)
    assert view.shown == b"" and view.shown_total == -1 and view.group == "" and seen == []


def test_attribution_agreement_is_computed_on_request_with_a_computing_state(versions):
    view = CompareView(versions, "cnn@1", "cnn@2", "test", attribution_method="saliency")
    assert view.attribution["state"] == "idle" and view.attribution["images"] == len(view.cards)
    states = []
    view.observe(lambda change: states.append(change["new"]["state"]), names=["attribution"])
    _answer(view, {"kind": "attribution"})  # what the button sends
    assert states == ["computing", "done"]
    expected = compare.attribution_agreement(versions, "cnn@1", "cnn@2", view.ids, method="saliency")
    assert view.attribution["mean"] == pytest.approx(expected["spearman"].mean())
    assert sum(view.attribution["hist"]) == expected.height == len(view.cards)
    first = view.cards[0]["image_id"]
    assert view.attribution["by_image"][first] == pytest.approx(
        expected.filter(pl.col("image_id") == first)["spearman"].item())


def test_a_failing_attribution_says_why_in_place(versions):
    view = CompareView(versions, "cnn@1", "cnn@2", "test", attribution_method="no-such-method")
    assert view.compute_attribution() is None
    assert view.attribution["state"] == "error" and "no-such-method" in view.attribution["text"]


def test_without_a_layer_or_stored_layers_the_parts_say_how_to_get_them(versions):
    view = CompareView(versions, "cnn@1", "cnn@2", "test", layers=["head.fc3"])
    assert "give layer=" in view.movement["note"].lower() and "Unknown layer 'head.fc3'" in view.cka["note"]
    assert view.message == "" and view.cards  # the rest of the view works


def test_missing_predictions_other_tasks_and_no_images_are_messages(versions):
    versions.register_model(SmallCNN(1, 10, width=4), "fresh")
    view = CompareView(versions, "cnn@1", "fresh@1", "test")
    assert "no stored predictions of fresh@1" in view.message and "store.materialize('fresh@1'" in view.message
    versions.register_model(SmallCNN(1, 3, width=4), "three", classes=["a", "b", "c"])
    assert "different classes" in CompareView(versions, "cnn@1", "three@1", "test").message
    assert CompareView(versions, "cnn@1", "cnn@2", []).message.startswith("No labelled images")
    assert CompareView(versions, "cnn@1", "cnn@2", ["no-such-image"]).message  # said, not raised
    with pytest.raises(odinlab.OptionError):
        CompareView(versions, "cnn@1", "cnn@2", "test", max_cards=0)


def test_many_disagreements_show_the_most_moved_and_say_so(versions):
    view = CompareView(versions, "cnn@1", "cnn@2", "test", layer="head.fc1", max_cards=10)
    assert len(view.cards) == len(view.ids) == 10 and "the 10 most moved shown" in view.title
