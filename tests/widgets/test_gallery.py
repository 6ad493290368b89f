"""GalleryView: pages in sort order, PNG pages on request, clicks, filtering, bad input."""


import numpy as np
import polars as pl
import pytest

from odinlab.widgets.gallery import GalleryView, pack_mask, unpack_mask


def _answer(gallery, page):
    """Simulate the browser asking for a page: return what the kernel sends back."""
    sent = []
    gallery.send = lambda content, buffers=None: sent.append((content, buffers))
    gallery._on_message(gallery, {"page": page}, [])
    assert len(sent) == 1
    return sent[0]


def test_pages_carry_the_ids_in_sort_order(digits):
    gallery = GalleryView(digits, "cnn@1", "test", sort_by="loss", page_size=10)
    expected = digits.predictions("cnn@1", "test").sort("loss", descending=True, maintain_order=True)
    assert gallery.ids == expected["image_id"].to_list()
    assert gallery.total == expected.height == 270
    for page in (0, 1, 26):
        content, buffers = _answer(gallery, page)
        got = [item["image_id"] for item in content["items"]]
        assert got == gallery.ids[page * 10:(page + 1) * 10]
        assert [item["index"] for item in content["items"]] == list(range(page * 10, page * 10 + len(got)))
        assert content["version"] == gallery.version
    content, buffers = _answer(gallery, 27)  # past the end: an empty page
    assert content["items"] == [] and buffers == []


@pytest.mark.parametrize("column, descending", [("margin", False), ("confidence", True), ("label", False),
                                                ("image_id", False)])
def test_sort_by_any_column(digits, column, descending):
    gallery = GalleryView(digits, "cnn@1", "test", sort_by=column, descending=descending)
    frame = digits.predictions("cnn@1", "test").sort(column, descending=descending, maintain_order=True)
    assert gallery.ids == frame["image_id"].to_list()


def test_resorting_from_the_browser_bumps_the_version_and_reorders(digits):
    gallery = GalleryView(digits, "cnn@1", "test", page_size=5)
    version = gallery.version
    gallery.sort_by = "confidence"  # what the sort menu does
    gallery.descending = False
    assert gallery.version > version
    expected = digits.predictions("cnn@1", "test").sort("confidence", maintain_order=True)["image_id"]
    assert _answer(gallery, 0)[0]["items"][0]["image_id"] == expected[0]
    with pytest.raises(ValueError, match="Cannot sort the gallery by 'nope'"):
        GalleryView(digits, "cnn@1", "test", sort_by="nope")


def test_a_page_request_is_answered_with_png_thumbnails(digits):
    gallery = GalleryView(digits, "cnn@1", "test", page_size=7, thumb_size=40)
    content, buffers = _answer(gallery, 1)
    assert len(buffers) == len(content["items"]) == 7
    ids = [item["image_id"] for item in content["items"]]
    assert all(png[:4] == b"\x89PNG" for png in buffers)
    assert buffers == digits.thumbnails(ids, 40)
    item = content["items"][0]
    row = digits.predictions("cnn@1", [item["image_id"]]).row(0, named=True)
    assert (item["label"], item["predicted"], item["correct"]) == (row["label"], row["predicted"], row["correct"])
    assert item["confidence"] == pytest.approx(row["confidence"])
    assert item["predicted_name"] == digits.model("cnn@1").classes[row["predicted"]]


def test_mistakes_are_marked(digits):
    gallery = GalleryView(digits, "cnn@1", "test", page_size=300)
    content, _ = _answer(gallery, 0)
    wrong = {item["image_id"] for item in content["items"] if item["correct"] is False}
    expected = set(digits.predictions("cnn@1", "test").filter(~pl.col("correct"))["image_id"])
    assert wrong == expected and wrong


def test_clicks_set_clicked_call_back_and_select(digits):
    gallery = GalleryView(digits, "cnn@1", "test")
    clicks, selections = [], []
    gallery.on_click(clicks.append)
    gallery.on_select(selections.append)
    gallery._on_message(gallery, {"kind": "click", "index": 3}, [])
    assert gallery.clicked == gallery.ids[3] and clicks == [gallery.ids[3]]
    assert gallery.selected_ids == [gallery.ids[3]] and selections[-1] == [gallery.ids[3]]
    gallery._on_message(gallery, {"kind": "click", "index": 5, "extend": True}, [])
    assert gallery.selected_ids == [gallery.ids[3], gallery.ids[5]]
    gallery._on_message(gallery, {"kind": "click", "index": 3}, [])  # the same one again opens it again
    assert clicks == [gallery.ids[3], gallery.ids[5], gallery.ids[3]]
    gallery._on_message(gallery, {"kind": "click", "index": 10_000}, [])  # out of range: nothing
    assert gallery.selected_ids == [gallery.ids[3]]


def test_show_selection_filters_without_callbacks(digits):
    gallery = GalleryView(digits, "cnn@1", "test", page_size=4)
    selections = []
    gallery.on_select(selections.append)
    chosen = gallery.ids[::50]
    gallery.show_selection(list(reversed(chosen)))
    assert gallery.ids == chosen  # kept in the gallery's sort order
    assert gallery.total == len(chosen) and gallery.message == ""
    assert [i["image_id"] for i in _answer(gallery, 0)[0]["items"]] == chosen[:4]
    gallery.show_selection([])
    assert gallery.ids == [] and gallery.message == "no images selected"
    gallery.show_selection(None)
    assert gallery.total == 270 and gallery.message == ""
    assert selections == []


def test_selection_mask_round_trip(digits):
    gallery = GalleryView(digits, "cnn@1", "test")
    gallery.selection_mask = pack_mask([0, 9, 17], gallery.total)  # as the browser would set it
    assert gallery.selected_ids == [gallery.ids[i] for i in (0, 9, 17)]
    assert list(unpack_mask(gallery.selection_mask, gallery.total)) == [0, 9, 17]
    kept = gallery.selected_ids
    gallery.sort_by = "label"  # a re-sort keeps the selection
    assert set(gallery.selected_ids) == set(kept)
    assert len(pack_mask(np.arange(1_000_000), 1_000_000)) == 125_000


def test_a_model_without_predictions_says_how_to_store_them(digits):
    gallery = GalleryView(digits, "other@1", "test")
    assert "other@1 has no stored predictions" in gallery.message
    assert "store.materialize('other@1', images='test')" in gallery.message


def test_partly_stored_predictions_show_a_note(digits):
    gallery = GalleryView(digits, "cnn@1", pl.col("split").is_in(["val", "test"]))
    assert gallery.message == "" and gallery.total == digits.select(pl.col("split").is_in(["val", "test"])).frame.height
    assert "have no stored predictions of cnn@1" in gallery.note
    assert gallery.ids[:270] == digits.predictions("cnn@1", "test").sort("loss", descending=True,
                                                                         maintain_order=True)["image_id"].to_list()


def test_an_empty_selection_says_so(digits):
    gallery = GalleryView(digits, "cnn@1", [])
    assert gallery.message == "no images selected" and gallery.ids == []
