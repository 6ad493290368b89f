"""ConfusionView: cell and header clicks resolve to exactly their images, highlights, bad input."""


import numpy as np
import polars as pl
import pytest

from odinlab.debug import error_analysis as ea
from odinlab.widgets.confusion import ConfusionView
from odinlab.widgets.gallery import unpack_mask


@pytest.fixture(scope="module")
def cells(digits):
    return ea.confusion_matrix(digits, "cnn@1", "test")


def _click(view, **content):
    view._on_message(view, {"kind": "click", **content}, [])


def test_counts_match_the_confusion_matrix(digits, cells):
    view = ConfusionView(digits, "cnn@1", "test")
    assert view.message == "" and view.classes == list(digits.model("cnn@1").classes)
    assert (view.matrix == cells["count"].to_numpy().reshape(10, 10)).all()
    assert np.frombuffer(view.offsets, "<i8")[-1] == 270 == len(view.ids)
    assert sorted(view.ids) == sorted(digits.select("test").ids)


def test_a_cell_click_selects_exactly_its_images(digits, cells):
    view = ConfusionView(digits, "cnn@1", "test")
    seen = []
    view.on_select(seen.append)
    off = cells.filter((pl.col("label") != pl.col("predicted")) & (pl.col("count") > 0)).row(0, named=True)
    _click(view, target="cell", label=off["label"], predicted=off["predicted"])
    assert view.selected_ids == off["image_ids"] and seen == [off["image_ids"]]
    assert view.selected == {"kind": "cell", "label": off["label"], "predicted": off["predicted"]}
    frame = digits.predictions("cnn@1", view.selected_ids)
    assert (frame["label"] == off["label"]).all() and (frame["predicted"] == off["predicted"]).all()
    _click(view, target="cell", label=off["label"], predicted=off["predicted"])  # again: cleared
    assert view.selected_ids == [] and seen[-1] == []
    for row in cells.iter_rows(named=True):  # every cell, empty ones included
        view.click_cell(row["label"], row["predicted"])
        assert view.selected_ids == row["image_ids"]


def test_header_clicks_select_the_whole_class(digits):
    view = ConfusionView(digits, "cnn@1", "test")
    frame = digits.predictions("cnn@1", "test")
    _click(view, target="row", label=4)
    assert sorted(view.selected_ids) == sorted(frame.filter(pl.col("label") == 4)["image_id"])
    _click(view, target="column", predicted=7)
    assert sorted(view.selected_ids) == sorted(frame.filter(pl.col("predicted") == 7)["image_id"])
    assert view.selected == {"kind": "column", "label": None, "predicted": 7}


def test_bad_clicks_from_the_browser_change_nothing(digits):
    view = ConfusionView(digits, "cnn@1", "test")
    view.click_row(1)
    before = view.selected_ids
    _click(view, target="cell", label=99, predicted=0)
    _click(view, target="cell", label="x")
    _click(view, target="bogus")
    assert view.selected_ids == before
    _click(view, target="clear")
    assert view.selected_ids == []


def test_show_selection_highlights_without_callbacks(digits, cells):
    view = ConfusionView(digits, "cnn@1", "test")
    seen = []
    view.on_select(seen.append)
    chosen = digits.select("test").ids[:30]
    view.show_selection(chosen)
    assert sorted(view.selected_ids) == sorted(chosen) and seen == [] and view.selected == {}
    positions = unpack_mask(view.selection_mask, len(view.ids))
    bounds = np.frombuffer(view.offsets, "<i8")
    per_cell = np.histogram(positions, bins=bounds)[0] if len(positions) else None
    by_cell = cells.with_columns(k=pl.col("image_ids").list.eval(pl.element().is_in(chosen)).list.sum())
    assert (per_cell == by_cell["k"].to_numpy()).all()
    view.show_selection(None)
    assert view.selected_ids == [] and seen == []


def test_a_model_without_predictions_says_how_to_store_them(digits):
    view = ConfusionView(digits, "other@1", "test")
    assert "store.materialize('other@1', images='test')" in view.message
    assert view.ids == [] and view.selected_ids == []
    view.click_cell(0, 0)  # nothing to select, no error
    assert view.selected_ids == []


def test_an_empty_selection_says_so(digits):
    view = ConfusionView(digits, "cnn@1", [])
    assert view.message == "no images selected" and view.ids == []
