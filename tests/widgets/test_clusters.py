"""ClusterView: cards read by name from error_exemplars, thumbnails on request, clicks select a
cluster's members (in the hub and the other views), selections shown from elsewhere, messages."""

import numpy as np
import polars as pl
import pytest

from odinlab.widgets.clusters import ClusterView, cluster_cards
from odinlab.widgets.links import SelectionHub

CLASSES = [str(i) for i in range(10)]


def _answer(view, content):
    """Simulate a message from the browser: return what the kernel sends back."""
    sent = []
    view.send = lambda reply, buffers=None: sent.append((reply, buffers))
    view._on_message(view, content, [])
    return sent


@pytest.fixture(scope="module")
def clusters(digits):
    return ClusterView(digits, "cnn@1", "head.fc1", "test")


def test_cards_show_the_medoid_size_and_dominant_pair_of_each_cluster(clusters, digits):
    from odinlab.debug.error_analysis import error_exemplars

    frame = error_exemplars(digits, "cnn@1", "head.fc1", "test")
    assert clusters.message == "" and len(clusters.cards) == frame.height > 0
    first = clusters.cards[0]
    assert first["image_id"] == frame["image_id"][0] and first["size"] == frame["size"][0]
    assert (first["label_name"], first["predicted_name"]) == (frame["label_name"][0], frame["predicted_name"][0])
    wrong = digits.predictions("cnn@1", "test").filter(~pl.col("correct"))["image_id"]
    assert sorted(clusters.ids) == sorted(wrong.to_list())  # every mistake in one cluster


def test_the_browser_gets_one_png_a_card_when_it_asks(clusters):
    [(reply, pngs)] = _answer(clusters, {"kind": "thumbs"})
    assert reply == {"kind": "thumbs", "version": clusters.version}
    assert len(pngs) == len(clusters.cards) and all(png[:4] == b"\x89PNG" for png in pngs)


def test_a_click_selects_the_members_and_a_second_click_clears(digits):
    view = ClusterView(digits, "cnn@1", "head.fc1", "test")
    seen = []
    view.on_select(seen.append)
    _answer(view, {"kind": "click", "index": 1})  # what a click on the second card sends
    assert view.chosen == 1 and seen[-1] == view.selected_ids == view.clusters["image_ids"][1].to_list()
    assert np.frombuffer(view.shown, "<u4")[1] == view.cards[1]["size"]
    view.click(1)
    assert view.chosen == -1 and seen[-1] == [] and view.shown == b""
    _answer(view, {"kind": "click", "index": "zero"})  # a malformed message changes nothing
    assert view.chosen == -1


def test_clicking_a_cluster_selects_its_members_in_the_hub_and_the_other_views(digits):
    from odinlab.widgets.gallery import GalleryView

    view = ClusterView(digits, "cnn@1", "head.fc1", "test")
    gallery = GalleryView(digits, "cnn@1", "test")
    hub = SelectionHub(digits, "test")
    hub.add(view), hub.add(gallery)
    view.click(0)
    members = view.cards[0]["size"]
    assert sorted(hub.ids) == sorted(view.selected_ids) and len(hub.ids) == members
    assert sorted(gallery.ids) == sorted(view.selected_ids)  # the gallery is filtered to the cluster


def test_a_selection_from_elsewhere_is_counted_per_card_without_callbacks(digits):
    view = ClusterView(digits, "cnn@1", "head.fc1", "test")
    seen = []
    view.on_select(seen.append)
    two = view.clusters["image_ids"][0].to_list()[:2] + ["digits-not-a-mistake"]
    view.show_selection(two)
    counts = np.frombuffer(view.shown, "<u4")
    assert counts[0] == 2 and counts.sum() == 2 and view.shown_total == 3 and view.chosen == -1
    last = view.clusters.height - 1
    view.show_selection(view.clusters["image_ids"][last].to_list())  # exactly a cluster: its card is chosen
    assert view.chosen == last > 0
    view.show_selection([])  # an empty selection is said so in the browser (shown_total 0)
    assert view.shown_total == 0 and view.chosen == -1
    view.show_selection(None)
    assert view.shown == b"" and view.shown_total == -1 and seen == []


def test_extra_columns_are_tolerated_and_columns_read_by_name():
    frame = pl.DataFrame({"image_ids": [["a", "b", "c"], ["d"]], "score": [0.5, 0.25], "label": [1, 2],
                          "predicted": [7, 3], "tags": [["x"], ["y"]]})
    cards, members = cluster_cards(frame, CLASSES)
    assert [c["image_id"] for c in cards] == ["a", "d"] and [c["size"] for c in cards] == [3, 1]
    assert cards[0]["label_name"] == "1" and cards[0]["predicted_name"] == "7" and cards[0]["pair_share"] is None
    assert cards[0]["extra"] == {"score": 0.5} and members == [["a", "b", "c"], ["d"]]
    with pytest.raises(KeyError, match="needs an image_ids column"):
        cluster_cards(pl.DataFrame({"image_id": ["a"]}), CLASSES)


def test_a_model_without_mistakes_says_there_are_no_clusters(digits):
    right = digits.predictions("cnn@1", "test").filter(pl.col("correct"))["image_id"].to_list()[:20]
    view = ClusterView(digits, "cnn@1", "head.fc1", right)
    assert "makes no mistakes" in view.message and view.cards == [] and view.ids == []


def test_missing_predictions_an_unknown_layer_and_no_images_are_messages(digits):
    view = ClusterView(digits, "other@1", "head.fc1", "test")
    assert "store.materialize('other@1', ['head.fc1'], images='test')" in view.message
    view = ClusterView(digits, "cnn@1", "head.fc3", "test")
    assert "Unknown layer 'head.fc3'" in view.message and "head.fc1" in view.message
    view = ClusterView(digits, "cnn@1", "head.fc1", [])
    assert view.message.startswith("No images selected")
