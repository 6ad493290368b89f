"""ExplainView: the linked selection explained on a button press, mistakes said in place."""

import polars as pl
import pytest

import odinlab
from odinlab.debug.explain import explain
from odinlab.widgets import ExplainView, SelectionHub


def test_the_button_explains_the_linked_selection_with_the_debug_function_s_numbers(digits):
    view = ExplainView(digits, "cnn@1", "test", layer="head.fc1", k=4)
    hub = SelectionHub(digits, "test")
    hub.add(view)
    fours = digits.select("test").where(pl.col("label") == 4).ids
    hub.select(fours)
    assert view.count == len(fours) and view.ids == fours and "press Explain" in view.status
    view._on_message(view, {"kind": "explain", "region": [0, 0, 4, 4]}, [])  # what the button sends
    direct = explain(digits, "cnn@1", fours, "test", layer="head.fc1", k=4, region=(0, 0, 4, 4))
    assert view.explanation.units.equals(direct.units) and view.explanation.region == (0, 0, 4, 4)
    assert "that separate it" in view.html and view.message == ""


def test_an_empty_selection_or_a_bad_region_is_said_in_the_view(digits):
    view = ExplainView(digits, "cnn@1", "test", layer="head.fc1")
    view._on_message(view, {"kind": "explain", "region": None}, [])
    assert "needs a selection" in view.message and view.html == ""
    view.show_selection(digits.select("test").ids[:10])
    view._on_message(view, {"kind": "explain", "region": [6, 6, 5, 5]}, [])
    assert "does not fit" in view.message
    with pytest.raises(odinlab.OptionError):
        view.explain_now(region=(6, 6, 5, 5))


def test_the_view_selects_nothing_of_its_own(digits):
    view = ExplainView(digits, "cnn@1", "test")
    seen = []
    view.on_select(seen.append)
    view.show_selection(["digits-0002"])
    view.show_selection(None)
    assert seen == [] and view.ids == [] and view.count == 0
