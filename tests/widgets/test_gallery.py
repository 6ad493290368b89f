"""GalleryView: pages in sort order, PNG pages on request or pushed after a change, clicks, filtering, bad input."""


import numpy as np
import polars as pl
import pytest

from odinlab.debug.error_analysis import label_errors

from odinlab.widgets.gallery import GalleryView, ThumbnailCache, pack_mask, unpack_mask


def _answer(gallery, page):
    """Simulate the browser asking for a page: return what the kernel sends back."""
    sent = []
    gallery.send = lambda content, buffers=None: sent.append((content, buffers))
    try:
        gallery._on_message(gallery, {"page": page}, [])
    finally:
        del gallery.send  # the widget's own send again
    assert len(sent) == 1
    return sent[0]


def _traffic(gallery):
    """Record everything the kernel sends the browser, in order: (message, buffers) pairs, where a
    message is a state update ({"method": "update", "state": ...}) or custom ({"method": "custom"})."""
    sent = []
    gallery.comm.send = lambda data=None, metadata=None, buffers=None: sent.append((data, buffers or []))
    return sent


def _pages(sent):
    return [(data["content"], buffers) for data, buffers in sent if data["method"] == "custom"]


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


def test_thumbnails_come_in_the_order_asked_whatever_the_cache_holds(digits):
    ids = digits.select("test").ids
    asked = [ids[5], ids[200], ids[5], ids[17], ids[100]]
    one_by_one = [digits.thumbnails([image_id], 16)[0] for image_id in asked]
    cache = ThumbnailCache(digits, size=16)
    assert cache(asked[:2]) == one_by_one[:2]
    assert cache(asked) == one_by_one  # some cached, some not, one repeated
    assert len(cache) == 4
    # a selection (what the gallery passes: its rows are known) gives the same bytes in its order
    reverse = digits.select(list(reversed(asked)))
    assert ThumbnailCache(digits, size=16)(reverse) == list(reversed(one_by_one))
    assert cache(reverse) == list(reversed(one_by_one))


def test_once_a_browser_asked_a_new_selection_pushes_its_first_page_after_its_version(digits):
    gallery = GalleryView(digits, "cnn@1", "test", page_size=6, thumb_size=16)
    every = gallery.ids
    sent = _traffic(gallery)
    gallery.show_selection(every[::3])
    assert _pages(sent) == [] and gallery.pushed == -1  # no browser has asked yet: nothing pushed
    _answer(gallery, 0)  # a browser shows the gallery
    sent = _traffic(gallery)
    gallery.show_selection(every[1::3])
    states = [data["state"] for data, _ in sent if data["method"] == "update"]
    assert any(state.get("version") == state.get("pushed") == gallery.version for state in states)
    assert [data["method"] for data, _ in sent][-1] == "custom"  # the page comes after its version
    [(content, buffers)] = _pages(sent)
    assert (content["kind"], content["page"], content["version"]) == ("page", 0, gallery.version)
    assert [item["image_id"] for item in content["items"]] == gallery.ids[:6] == every[1::3][:6]
    assert buffers == digits.thumbnails(gallery.ids[:6], 16)
    # a new sort order pushes its first page too
    sent.clear()
    gallery.sort_by = "confidence"
    [(content, _)] = _pages(sent)
    assert content["version"] == gallery.pushed == gallery.version
    assert [item["image_id"] for item in content["items"]] == gallery.ids[:6]
    # nothing to show: nothing pushed (the browser shows the message)
    sent.clear()
    gallery.show_selection([])
    assert _pages(sent) == [] and gallery.message == "no images selected"


def test_the_same_selection_again_keeps_the_version_and_clears_the_gallerys_own_selection(digits):
    gallery = GalleryView(digits, "cnn@1", "test", page_size=6)
    _answer(gallery, 0)
    chosen = gallery.ids[::4]
    gallery.show_selection(chosen)
    gallery.selection_mask = pack_mask([0, 2], gallery.total)  # the user ctrl-clicked two
    version, sent = gallery.version, _traffic(gallery)
    gallery.show_selection(list(reversed(chosen)))  # the same images
    assert gallery.version == version and _pages(sent) == []
    assert gallery.selected_ids == [] and gallery.ids == chosen
    gallery.show_selection(chosen[:-1])  # one fewer: a new version
    assert gallery.version == version + 1 and gallery.ids == chosen[:-1]


def test_the_pixel_rows_the_gallery_keeps_stay_hidden(digits):
    gallery = GalleryView(digits, "cnn@1", "test")
    assert "_row" not in gallery.frame.columns and "_row" not in gallery.sort_columns
    assert gallery.frame["image_id"].to_list() == gallery.ids
    assert "_row" not in _answer(gallery, 0)[0]["items"][0]


def test_sorting_by_label_error_puts_the_least_believed_labels_first(digits):
    gallery = GalleryView(digits, "cnn@1", "test", sort_by="label_error")
    assert "label_error" in gallery.sort_columns
    preds = digits.predictions("cnn@1", gallery.ids)
    p_label = [probs[label] for probs, label in zip(preds["probabilities"].to_list(), preds["label"].to_list())]
    assert p_label == sorted(p_label)  # the lowest probability of the given label first
    suspects = set(label_errors(digits, "cnn@1", "test").filter("flagged")["image_id"].to_list())
    top = gallery.ids[: len(suspects)]
    assert suspects and len(suspects & set(top)) >= len(suspects) // 2  # confident learning's suspects lead
