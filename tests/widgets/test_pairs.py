"""PairsView: pairs read by name from boundary_pairs, thumbnails on request, a click selects both
images (in the hub and the other views), selections shown from elsewhere, messages."""

import numpy as np
import polars as pl
import pytest

from odinlab.sampling import Embedding
from odinlab.widgets.links import SelectionHub
from odinlab.widgets.pairs import PairsView, pair_cards


def _answer(view, content):
    sent = []
    view.send = lambda reply, buffers=None: sent.append((reply, buffers))
    view._on_message(view, content, [])
    return sent


@pytest.fixture(scope="module")
def embedding(digits):
    return Embedding(digits, "cnn@1", "head.fc1", reducer="pca", progress=False).fit("test")


@pytest.fixture(scope="module")
def pairs(digits, embedding):
    return PairsView(digits, "cnn@1", embedding, n=6)


def test_cards_hold_two_images_predicted_differently_closest_first(pairs, digits):
    assert pairs.message == "" and len(pairs.cards) == 6
    distances = [c["distance"] for c in pairs.cards]
    assert distances == sorted(distances)
    preds = digits.predictions("cnn@1", "test")
    name = dict(zip(preds["image_id"], preds["predicted"].cast(pl.String)))
    for card in pairs.cards:
        a, b = card["a"], card["b"]
        assert a["predicted_name"] != b["predicted_name"]
        assert (name[a["image_id"]], name[b["image_id"]]) == (a["predicted_name"], b["predicted_name"])
    assert pairs.ids == [c[s]["image_id"] for c in pairs.cards for s in ("a", "b")]


def test_the_browser_gets_two_pngs_a_pair_when_it_asks(pairs):
    [(reply, pngs)] = _answer(pairs, {"kind": "thumbs"})
    assert reply["kind"] == "thumbs" and len(pngs) == 2 * len(pairs.cards)
    assert all(png[:4] == b"\x89PNG" for png in pngs)


def test_clicking_a_pair_selects_both_images_in_the_hub_and_the_other_views(digits, embedding):
    from odinlab.widgets.gallery import GalleryView

    view = PairsView(digits, "cnn@1", embedding, n=4)
    gallery = GalleryView(digits, "cnn@1", "test")
    hub = SelectionHub(digits, "test")
    hub.add(view), hub.add(gallery)
    _answer(view, {"kind": "click", "index": 2})  # what a click on the third pair sends
    both = [view.cards[2]["a"]["image_id"], view.cards[2]["b"]["image_id"]]
    assert view.selected_ids == both and hub.ids == both and sorted(gallery.ids) == sorted(both)
    view.click(2)  # again: cleared everywhere
    assert hub.ids == [] and view.chosen == -1 and len(gallery.ids) == 270


def test_a_selection_from_elsewhere_marks_the_pairs_that_hold_it(pairs):
    seen = []
    pairs.on_select(seen.append)
    a0, b0, a1 = pairs.cards[0]["a"]["image_id"], pairs.cards[0]["b"]["image_id"], pairs.cards[1]["a"]["image_id"]
    pairs.show_selection([a0, b0, a1])
    assert list(np.frombuffer(pairs.shown, np.uint8)[:3]) == [2, 1, 0] and pairs.chosen == -1
    pairs.show_selection([b0, a0])  # exactly one pair: it is chosen
    assert pairs.chosen == 0
    pairs.show_selection([])
    assert pairs.shown_total == 0 and pairs.chosen == -1
    pairs.show_selection(None)
    assert pairs.shown == b"" and seen == []


def test_columns_are_read_by_name_and_extra_ones_ignored():
    frame = pl.DataFrame({"image_id_a": ["x"], "image_id_b": ["y"], "label_a": [1], "label_b": [2],
                          "predicted_a": [1], "predicted_b": [1], "new_column": ["ignored"]})
    [card] = pair_cards(frame, [str(i) for i in range(10)])
    assert card["distance"] is None and card["a"]["correct"] is True and card["b"]["correct"] is False
    with pytest.raises(KeyError, match="image_id_a and image_id_b"):
        pair_cards(pl.DataFrame({"image_id": ["x"]}), [])


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # PCA of one image
def test_an_embedding_too_small_unfitted_or_missing_is_a_message(digits):
    one = Embedding(digits, "cnn@1", "head.fc1", reducer="pca", progress=False).fit(["digits-0002"])
    assert "at least 2" in PairsView(digits, "cnn@1", one).message
    unfitted = Embedding(digits, "cnn@1", "head.fc1", reducer="pca", progress=False)
    assert "not fitted" in PairsView(digits, "cnn@1", unfitted).message
    assert "No embedding" in PairsView(digits, "cnn@1", None).message


def test_images_all_predicted_alike_give_no_pairs_and_say_so(digits):
    preds = digits.predictions("cnn@1", "test")
    top = preds.group_by("predicted").len().sort("len", descending=True)["predicted"][0]
    same = preds.filter(pl.col("predicted") == top)["image_id"].to_list()[:12]
    emb = Embedding(digits, "cnn@1", "head.fc1", reducer="pca", progress=False).fit(same)
    view = PairsView(digits, "cnn@1", emb)
    assert view.message.startswith("No boundary pairs") and view.cards == []
