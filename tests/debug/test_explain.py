"""explain(): on the planted data set, a selection's explanation points at the cue's region and class."""

import numpy as np
import polars as pl
import pytest

import odinlab
from odinlab.debug.explain import explain, hotspot

import planted  # the shared recipe of the planted data set (tests/debug/planted.py)


@pytest.fixture(scope="module")
def planted_store():
    store, data = planted.planted_store("explain-planted")
    model_id = planted.train(store, seed=0)
    store.materialize(model_id, ["head.relu"], "test", progress=False)
    return store, model_id, data


def _overlap(box, other) -> bool:
    (t1, l1, h1, w1), (t2, l2, h2, w2) = box, other
    return t1 < t2 + h2 and t2 < t1 + h1 and l1 < l2 + w2 and l2 < l1 + w1


def test_images_wrongly_called_circles_are_explained_by_the_corner_cue(planted_store):
    store, model_id, data = planted_store
    test = store.predictions(model_id, "test")
    called_circle = test.filter((pl.col("predicted") == planted.SPURIOUS_CLASS) & ~pl.col("correct"))
    why = explain(store, model_id, called_circle["image_id"].to_list(), "test")
    assert why.summary["top_predicted_name"][0] == data.classes[planted.SPURIOUS_CLASS]
    assert why.summary["accuracy"][0] == 0 and why.summary["accuracy_rest"][0] > 0.5
    archive = why.metadata.filter((pl.col("column") == "source") & (pl.col("value") == "archive")).row(0, named=True)
    assert archive["significant"] and archive["share_in"] > 2 * archive["share_out"]
    assert why.metadata.row(0, named=True)["column"] == "source"  # the most significant finding
    assert _overlap(why.region, data.cue_box)  # the hotspot is the corner square
    shares = dict(why.attribution.select("set", "share_inside").rows())
    assert shares["selection"] > 2 * shares["rest"]


def test_a_user_drawn_region_measures_the_share_of_attribution_in_it(planted_store):
    store, model_id, data = planted_store
    carriers = [i for i, s, split in zip(data.ids, data.spurious, data.split) if s and split == "test"]
    why = explain(store, model_id, carriers, "test", region=data.cue_box)
    assert why.region == data.cue_box
    selection, rest = (why.attribution.filter(pl.col("set") == s).row(0, named=True) for s in ("selection", "rest"))
    assert selection["lift"] > 2 and selection["share_inside"] > 2 * rest["share_inside"]
    top = why.mean_map("selection")
    t, left, h, w = data.cue_box
    assert top[t:t + h, left:left + w].mean() > 2 * top.mean()  # the mean map is bright in the corner


def test_the_units_that_separate_a_class_are_found_for_all_units_at_once(planted_store):
    store, model_id, _ = planted_store
    circles = store.select("test").where(pl.col("label") == planted.SPURIOUS_CLASS)
    why = explain(store, model_id, circles, "test", k=5)
    assert why.units.height == 5 and why.units["score"].is_sorted(descending=True)
    assert why.units["auc"].map_elements(lambda a: abs(a - 0.5) * 2, return_dtype=pl.Float64).to_list() == \
        pytest.approx(why.units["score"].to_list())
    assert why.units["score"][0] > 0.5  # a random unit scores about 0
    acts = odinlab.debug.units.unit_activations(store, model_id, "head.relu", "test").values
    unit = why.units["unit"][0]
    inside = np.isin(store.select("test").ids, circles.ids)
    higher = acts[inside, unit].mean() > acts[~inside, unit].mean()
    assert why.units["direction"][0] == ("higher" if higher else "lower")


def test_results_are_cached_and_bad_input_is_refused(planted_store):
    store, model_id, _ = planted_store
    few = store.select("test").ids[:20]
    first = explain(store, model_id, few, "test")
    again = explain(store, model_id, few, "test")
    assert again.units.equals(first.units) and again.attribution.equals(first.attribution)
    with pytest.raises(odinlab.SelectionError, match="needs a selection and other images"):
        explain(store, model_id, [], "test")
    with pytest.raises(odinlab.OptionError, match="does not fit"):
        explain(store, model_id, few, "test", region=(10, 10, 20, 20))
    assert "<table" in first._repr_html_() and "data:image/png;base64" in first._repr_html_()


def test_the_hotspot_is_where_the_selection_s_map_exceeds_the_rest_s_most():
    rest = np.ones((16, 16))
    selection = np.ones((16, 16))
    selection[10:12, 3:5] = 9
    assert hotspot(selection, rest) == (10, 3, 2, 2)


def test_without_the_network_in_the_session_the_other_parts_still_answer_and_say_how(planted_store):
    store, model_id, data = planted_store
    fresh = odinlab.open_store(store.url)  # a new session: weights and stored arrays, no module
    called_circle = fresh.predictions(model_id, "test").filter((pl.col("predicted") == 0) & ~pl.col("correct"))
    why = explain(fresh, model_id, called_circle["image_id"].to_list(), "test")
    assert why.region is None and why.attribution.height == 0
    assert any("load_weights" in note for note in why.notes)
    assert why.metadata.row(0, named=True)["column"] == "source" and why.units.height == 10
    with pytest.raises(odinlab.NotMaterializedError):
        why.mean_map("selection")
    assert "No attribution maps" in why._repr_html_()
