"""ReviewQueue: the ranked queue, decisions written through the store's label corrections (accept,
change, keep, undo), skipping, stale browser clicks, the evidence, the view contract, bad input,
and the planted label noise found at the top of the queue."""

import importlib.util
import uuid
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import odinlab
from odinlab.debug.error_analysis import label_errors
from odinlab.sampling import Embedding
from odinlab.widgets.detail import DetailView
from odinlab.widgets.review import ReviewQueue


def _queue(store, images="test", **options) -> ReviewQueue:
    """A queue on its own label set: the session's store is shared, decisions must not meet."""
    return ReviewQueue(store, "cnn@1", images, label_set=f"t{uuid.uuid4().hex[:8]}", who="tester", **options)


def _rows(store, ids) -> pl.DataFrame:
    return store.label_corrections.filter(pl.col("correction_id").is_in(list(ids)))


def _label(store, label_set, image_id):
    return store.label_set(label_set).filter(pl.col("image_id") == image_id)["label"].item()


@pytest.fixture(scope="module")
def ranked(digits):
    return label_errors(digits, "cnn@1", "test")


@pytest.fixture(scope="module")
def embedding(digits):
    return Embedding(digits, "cnn@1", "head.fc1", reducer="pca", progress=False).fit("test")


# -- the queue ------------------------------------------------------------------------------------

def test_the_queue_is_label_errors_ranking_most_suspicious_first(digits, ranked):
    queue = _queue(digits, top_k=3)
    assert queue.message == "" and queue.ids == ranked["image_id"].to_list()
    first = ranked.row(0, named=True)
    item = queue.current
    assert item["image_id"] == first["image_id"] == queue.selected_ids[0] and item["rank"] == 1
    for key in ("label", "suggested", "suggested_name", "flagged", "out_of_sample"):
        assert item[key] == first[key]
    for key in ("p_label", "p_suggested", "label_quality"):
        assert item[key] == pytest.approx(first[key], abs=1e-6)
    probs = np.asarray(digits.predictions("cnn@1", [first["image_id"]])["probabilities"][0])
    assert [t["class"] for t in item["top"]] == list(np.argsort(-probs, kind="stable")[:3])
    assert queue.image == digits.thumbnails([first["image_id"]], 256)[0]
    assert queue.counts == {"decided": 0, "remaining": 270, "total": 270, "session": 0, "restricted": False}
    assert queue.classes == list(digits.model("cnn@1").classes) and queue.decisions.height == 0


def test_accept_writes_the_suggested_label_with_the_model_score_and_method(digits, ranked):
    queue = _queue(digits)
    moved = []
    queue.on_select(moved.append)
    images_before = digits.images
    first, second = ranked.row(0, named=True), ranked.row(1, named=True)
    correction = queue.accept()
    row = _rows(digits, [correction]).row(0, named=True)
    assert (row["label_set"], row["image_id"], row["action"], row["old_label"], row["new_label"]) == (
        queue.label_set, first["image_id"], "accept", first["label"], first["suggested"])
    assert (row["model_id"], row["score"], row["method"], row["who"]) == (
        "cnn@1", first["label_quality"], "self_confidence", "tester")  # the exact score, not the shown one
    assert _label(digits, queue.label_set, first["image_id"]) == first["suggested"]
    assert digits.images.equals(images_before)  # the original labels are never overwritten
    assert queue.current["image_id"] == second["image_id"] and moved == [[second["image_id"]]]
    assert queue.counts["decided"] == 1 and queue.counts["remaining"] == 269 and queue.counts["session"] == 1
    assert queue.history[0]["correction_id"] == correction and queue.status.startswith(f"accepted {first['image_id']}")


def test_change_takes_a_class_index_or_name_and_keep_confirms_the_given_label(digits, ranked):
    queue = _queue(digits)
    ids = ranked["image_id"].to_list()
    changed = queue.change("7")
    kept = queue.keep()
    changed_by_index = queue.change(0)
    rows = _rows(digits, [changed, kept, changed_by_index]).sort("correction_id")
    assert rows["image_id"].to_list() == ids[:3] and rows["action"].to_list() == ["change", "keep", "change"]
    assert rows["new_label"].to_list() == [7, ranked["label"][1], 0]
    assert queue.decisions["correction_id"].to_list() == [changed, kept, changed_by_index]
    assert queue.decisions["new_name"].to_list() == ["7", str(ranked["label"][1]), "0"]
    before = digits.label_corrections.height
    with pytest.raises(odinlab.UnknownValueError, match="Unknown class 'eleven'"):
        queue.change("eleven")
    assert digits.label_corrections.height == before and queue.current["image_id"] == ids[3]


def test_skip_writes_nothing_and_skipped_images_come_back_after_the_last(digits, ranked):
    queue = _queue(digits)
    ids = ranked["image_id"].to_list()[:3]
    queue.show_selection(ids)
    before = digits.label_corrections.height
    assert [queue.skip(), queue.skip(), queue.skip()] == [ids[1], ids[2], ids[0]]
    assert digits.label_corrections.height == before and queue.decisions.height == 0
    queue.keep()
    assert queue.skip() == ids[2] and queue.skip() == ids[1]  # the decided one is passed over


def test_undo_reopens_the_undone_image_and_brings_back_its_label(digits, ranked):
    queue = _queue(digits)
    ids = ranked["image_id"].to_list()
    accepted = queue.accept()
    changed = queue.change(1)
    other = digits.correct_labels(ids[5], 2, label_set=queue.label_set)[0]  # someone else's: never undone here
    undo = queue.undo()
    assert _rows(digits, [undo])["undoes"].item() == changed
    assert queue.current["image_id"] == ids[1] and _label(digits, queue.label_set, ids[1]) == ranked["label"][1]
    queue.undo()
    assert queue.current["image_id"] == ids[0] and _label(digits, queue.label_set, ids[0]) == ranked["label"][0]
    assert queue.decisions["undone_by"].is_not_null().all() and queue.counts["session"] == 0
    with pytest.raises(odinlab.UnknownValueError, match="Nothing to undo"):
        queue.undo()
    assert _label(digits, queue.label_set, ids[5]) == 2 and other not in queue.decisions["correction_id"]
    assert accepted in queue.decisions["correction_id"].to_list()


def test_images_decided_in_the_set_before_or_meanwhile_are_passed_over(digits, ranked):
    ids = ranked["image_id"].to_list()
    label_set = f"t{uuid.uuid4().hex[:8]}"
    digits.keep_labels(ids[0], label_set=label_set)
    queue = ReviewQueue(digits, "cnn@1", "test", label_set=label_set)
    assert queue.current["image_id"] == ids[1] and queue.counts["decided"] == 1
    digits.correct_labels(ids[2], 4, label_set=label_set)  # another reviewer, meanwhile
    queue.accept()
    assert queue.current["image_id"] == ids[3] and queue.counts["decided"] == 3


def test_the_browser_buttons_call_the_same_api_and_stale_clicks_do_nothing(digits, ranked):
    queue = _queue(digits)
    ids = ranked["image_id"].to_list()

    def click(action, image_id=None, **extra):
        queue._on_message(queue, {"kind": "act", "action": action, "image_id": image_id or queue.current["image_id"],
                                  "last": next((d["correction_id"] for d in queue.history if not d["undone_by"]),
                                               None), **extra}, [])

    click("accept")
    click("accept", image_id=ids[0])  # the second click of a double click: that image is decided already
    assert queue.decisions["image_id"].to_list() == [ids[0]] and "no longer the current image" in queue.status
    click("change", label=3)
    click("keep")
    click("skip")
    assert queue.decisions["action"].to_list() == ["accept", "change", "keep"] and queue.current["image_id"] == ids[4]
    version = queue.version
    queue._on_message(queue, {"kind": "act", "action": "undo", "last": "corr-99999"}, [])  # a stale undo
    assert queue.decisions["undone_by"].is_null().all() and queue.version == version + 1
    click("undo")
    assert queue.decisions["undone_by"].to_list()[-1] is not None and queue.current["image_id"] == ids[2]
    click("change", label=99)  # a failure is shown, never raised in the kernel
    assert queue.status.startswith("change failed: UnknownValueError")


def test_show_selection_restricts_the_queue_without_callbacks(digits, ranked):
    queue = _queue(digits)
    moved = []
    queue.on_select(moved.append)
    chosen = ranked["image_id"].to_list()[10:20][::-1]
    queue.show_selection(chosen)
    assert queue.ids == ranked["image_id"].to_list()[10:20] and queue.current["image_id"] == queue.ids[0]
    assert queue.counts["total"] == 10 and queue.counts["restricted"] and moved == []
    queue.show_selection(["digits-not-in-the-queue"])
    assert queue.current is None and queue.item == {} and queue.ids == []
    queue.show_selection(None)
    assert queue.current["image_id"] == ranked["image_id"][0] and moved == []


def test_when_every_image_is_decided_it_says_so_and_undo_reopens(digits, ranked):
    queue = _queue(digits)
    queue.show_selection(ranked["image_id"].to_list()[:1])
    queue.keep()
    assert queue.current is None and queue.selected_ids == [] and queue.counts["remaining"] == 0
    for action in (queue.accept, queue.keep, queue.skip):
        with pytest.raises(odinlab.UnknownValueError, match="every image of the queue is decided"):
            action()
    queue.undo()
    assert queue.current["image_id"] == ranked["image_id"][0]


def test_the_evidence_is_the_detail_views_neighbours_with_their_labels_in_the_set(digits, ranked, embedding):
    queue = _queue(digits, embedding=embedding, n_neighbours=5)
    first = queue.current["image_id"]
    detail = DetailView(digits, "cnn@1", first, embedding=embedding, n_neighbours=5)
    detail.request("neighbours")
    found = queue.current["neighbours"]
    assert [n["image_id"] for n in found] == [n["image_id"] for n in detail.neighbours]
    assert [n["distance"] for n in found] == pytest.approx([n["distance"] for n in detail.neighbours], abs=1e-6)
    assert len(queue.neighbour_images) == 5 and all(png[:4] == b"\x89PNG" for png in queue.neighbour_images)
    neighbour = found[0]["image_id"]
    digits.correct_labels(neighbour, (found[0]["label"] + 1) % 10, label_set=queue.label_set)
    queue.show_selection(None)  # the item is read again: the neighbour's label is the set's
    assert queue.current["neighbours"][0]["label"] == (found[0]["label"] + 1) % 10
    assert "no embedding" in _queue(digits).current["evidence"]


def test_problems_are_shown_in_the_widget_and_raised_in_python(digits):
    missing = ReviewQueue(digits, "other@1", "test")
    assert "store.materialize('other@1', images='test')" in missing.message and missing.item == {}
    with pytest.raises(odinlab.NotMaterializedError, match="no stored predictions"):
        missing.accept()
    unknown = ReviewQueue(digits, "nope@1").message
    assert unknown.startswith("Unknown model 'nope@1'. Did you mean:") and "cnn@1" in unknown
    assert "label set name" in ReviewQueue(digits, "cnn@1", "test", label_set="a/b").message
    assert "label-quality method" in ReviewQueue(digits, "cnn@1", "test", method="vibes").message
    with pytest.raises(odinlab.OptionError, match="size must be an int of at least 32"):
        ReviewQueue(digits, "cnn@1", "test", size=4)


def test_in_the_explorer_a_decision_selects_the_next_image_and_a_selection_restricts_the_queue(digits, ranked):
    label_set = f"t{uuid.uuid4().hex[:8]}"
    views = {"review": lambda ex: ReviewQueue(ex.store, ex.model_id, ex.images, label_set=label_set,
                                              embedding=ex.embedding),
             "clusters": None, "pairs": None, "confusion": None, "detail": None}
    explorer = odinlab.explore(digits, "cnn@1", images="test", views=views, embedding={"reducer": "pca"},
                               progress=False)
    queue = explorer.views["review"]
    assert explorer.message is None and queue in explorer.hub.views
    queue.accept()
    assert explorer.selection == [ranked["image_id"][1]]
    assert explorer.views["gallery"].ids == [ranked["image_id"][1]]
    explorer.select(ranked["image_id"].to_list()[5:8])
    assert queue.ids == ranked["image_id"].to_list()[5:8] and queue.current["image_id"] == ranked["image_id"][5]


# -- the planted label noise ----------------------------------------------------------------------------

def test_the_top_50_of_the_queue_are_mostly_the_flipped_labels_of_the_planted_data():
    spec = importlib.util.spec_from_file_location("planted", Path(__file__).parents[1] / "debug" / "planted.py")
    planted = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(planted)
    data = planted.planted_data()
    store = odinlab.open_store(f"memory://review-planted-{uuid.uuid4().hex}", create=True)
    store.ingest(data)
    model_id = planted.train(store, seed=0)
    store.materialize(model_id, images="train", progress=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        queue = ReviewQueue(store, model_id, "train", k=50)
    assert any(issubclass(w.category, odinlab.InSampleWarning) for w in caught)
    assert "in the training set of" in queue.note and "store.cross_validate" in queue.note  # shown, not only warned
    flipped = set(np.asarray(data.ids)[data.label_noise])
    precision = len(set(queue.ids) & flipped) / len(queue.ids)
    assert len(queue.ids) == 50 and precision >= 0.9, precision  # measured 1.0 (in-sample, seed 0)
    truth = dict(zip(data.ids, data.true_labels.tolist(), strict=True))
    assert truth[queue.current["image_id"]] == queue.current["suggested"]
