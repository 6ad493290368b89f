"""Label corrections: decisions kept beside the original labels, label sets that apply them,
undo, training and evaluation on a set, and writes that survive kills and concurrent writers."""

from __future__ import annotations

import getpass
import multiprocessing
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from torch import nn

import odinlab
from odinlab.training import fit

IDS = ["img-00", "img-01", "img-02"]


def _original(store, ids):
    return store.images.filter(pl.col("image_id").is_in(ids)).sort("image_id")["label"].to_list()


def _linear(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 3))


# -- decisions and label sets ---------------------------------------------------------------------

def test_a_correction_changes_the_sets_label_and_not_the_images_table(tiny_store):
    before = tiny_store.images
    old = _original(tiny_store, IDS)
    new = [(y + 1) % 3 for y in old]
    ids = tiny_store.correct_labels(IDS, [tiny_store.classes[y] for y in new[:2]] + [new[2]])  # names and an index
    assert ids == ["corr-00001", "corr-00002", "corr-00003"]
    assert tiny_store.images.equals(before)  # the original labels are never overwritten
    labels = tiny_store.label_set("reviewed")
    assert labels.columns == ["image_id", "label", "label_name", "original_label", "corrected", "correction_id"]
    assert labels.height == 60 and labels["original_label"].to_list() == before["label"].to_list()
    changed = labels.filter(pl.col("corrected")).sort("image_id")
    assert changed["image_id"].to_list() == IDS and changed["label"].to_list() == new
    assert changed["label_name"].to_list() == [tiny_store.classes[y] for y in new]
    assert changed["correction_id"].to_list() == ids
    # Selections with the set's labels: ids, splits, SQL and expressions over the set's labels.
    assert tiny_store.select(IDS, labels="reviewed").labels.tolist() == new
    assert tiny_store.select(IDS).labels.tolist() == old
    in_set = tiny_store.select(pl.col("label") == new[0], labels="reviewed").ids
    assert "img-00" in in_set and "img-00" not in tiny_store.select(pl.col("label") == new[0]).ids
    train = tiny_store.select("train", labels="reviewed")
    assert train.frame.filter(pl.col("image_id").is_in(IDS))["label"].to_list() == new


def test_a_selection_carries_its_label_set_through_slices_and_can_be_relabelled(tiny_store):
    tiny_store.correct_labels(["img-00"], [(_original(tiny_store, ["img-00"])[0] + 1) % 3])
    plain = tiny_store.select("train")
    reviewed = tiny_store.select(plain, labels="reviewed")
    assert reviewed.label_set == "reviewed" and plain.label_set is None
    assert reviewed.ids == plain.ids and (reviewed.rows == plain.rows).all()
    assert reviewed.labels[0] != plain.labels[0] and (reviewed.labels[1:] == plain.labels[1:]).all()
    assert tiny_store.select(reviewed) is reviewed  # labels=None keeps a selection's own labels
    assert reviewed[:5].label_set == "reviewed" and all(c.label_set == "reviewed" for c in reviewed.chunks(7))
    assert "with labels 'reviewed'" in repr(reviewed)
    with pytest.raises(odinlab.UnknownValueError, match="No label set 'reveiwed'.*Did you mean: reviewed"):
        tiny_store.select("train", labels="reveiwed")


def test_accept_keep_and_change_are_recorded_with_who_when_old_new_model_and_score(tiny_store):
    tiny_store.register_model(_linear(), "m")
    old = _original(tiny_store, IDS)
    start = datetime.now(UTC)
    accepted = tiny_store.correct_labels(IDS[:2], [(old[0] + 1) % 3, (old[1] + 2) % 3], action="accept",
                                         model="m", score=[0.91, 0.52], method="self_confidence", who="ann",
                                         note="queue page 1")
    kept = tiny_store.keep_labels(IDS[2], model="m@1", score=0.3)
    changed = tiny_store.correct_labels(IDS[0], old[0], label_set="second-look")
    rows = tiny_store.label_corrections
    assert rows["correction_id"].to_list() == accepted + kept + changed
    assert rows.select("label_set", "image_id", "action", "old_label", "new_label", "who", "model_id", "score",
                       "method", "note").rows() == [
        ("reviewed", "img-00", "accept", old[0], (old[0] + 1) % 3, "ann", "m@1", 0.91, "self_confidence",
         "queue page 1"),
        ("reviewed", "img-01", "accept", old[1], (old[1] + 2) % 3, "ann", "m@1", 0.52, "self_confidence",
         "queue page 1"),
        ("reviewed", "img-02", "keep", old[2], old[2], getpass.getuser(), "m@1", 0.3, None, None),
        ("second-look", "img-00", "change", old[0], old[0], getpass.getuser(), None, None, None, None),
    ]
    assert rows["at"].dtype == pl.Datetime("us", "UTC")
    assert all(start <= at <= datetime.now(UTC) for at in rows["at"])
    assert rows["undoes"].null_count() == 4
    # A kept image is reviewed (a decision is in effect) but not corrected; sets are independent.
    reviewed = tiny_store.label_set().filter(pl.col("image_id").is_in(IDS)).sort("image_id")
    assert reviewed["corrected"].to_list() == [True, True, False]
    assert reviewed["correction_id"].to_list() == [*accepted, *kept]
    assert tiny_store.label_set("second-look").filter(pl.col("corrected")).height == 0


# -- undo ---------------------------------------------------------------------------------------------

def test_undo_restores_the_previous_label_and_keeps_the_history(tiny_store):
    y = _original(tiny_store, ["img-00"])[0]
    first, = tiny_store.correct_labels("img-00", (y + 1) % 3)
    second, = tiny_store.correct_labels("img-00", (y + 2) % 3)
    other, = tiny_store.correct_labels("img-01", 0)

    def label(image_id):
        return tiny_store.label_set().filter(pl.col("image_id") == image_id)["label"][0]

    undo = tiny_store.undo_correction(second)  # not the latest of the set: the one named
    assert label("img-00") == (y + 1) % 3 and label("img-01") == 0
    assert tiny_store.undo_correction() == "corr-00005"  # the latest not undone: img-01's
    assert label("img-01") == _original(tiny_store, ["img-01"])[0]
    tiny_store.undo_correction()  # then the one before: back to the original label
    assert label("img-00") == y and tiny_store.label_set().filter(pl.col("corrected")).height == 0
    history = tiny_store.label_corrections
    assert history.height == 6  # nothing deleted: three decisions, three undos
    assert history.filter(pl.col("action") == "undo").select("undoes", "image_id", "old_label", "new_label").rows() == [
        (second, "img-00", (y + 2) % 3, (y + 1) % 3),
        (other, "img-01", 0, _original(tiny_store, ["img-01"])[0]),
        (first, "img-00", (y + 1) % 3, y),
    ]
    assert history.filter(pl.col("correction_id") == undo)["undoes"][0] == second
    with pytest.raises(odinlab.OptionError, match=f"{second} was already undone by {undo}"):
        tiny_store.undo_correction(second)
    with pytest.raises(odinlab.OptionError, match=f"{undo} is itself an undo .*correct_labels"):
        tiny_store.undo_correction(undo)
    assert tiny_store.label_corrections.height == 6


def test_undo_when_nothing_is_left_to_undo_is_a_clear_error(tiny_store):
    with pytest.raises(odinlab.UnknownValueError, match="No label set 'reviewed' in the store. Label sets: "):
        tiny_store.undo_correction()
    tiny_store.correct_labels("img-00", 1)
    tiny_store.undo_correction()
    with pytest.raises(odinlab.UnknownValueError, match="Nothing to undo in label set 'reviewed': its 1 decision"):
        tiny_store.undo_correction()
    with pytest.raises(odinlab.UnknownValueError, match="No label correction 'corr-9'. Did you mean: corr-0000"):
        tiny_store.undo_correction("corr-9")
    assert tiny_store.label_corrections.height == 2


# -- bad input is refused before anything is written ----------------------------------------------

BAD = [
    (lambda s: s.correct_labels(["img-00", "img-99x"], [0, 1]), odinlab.UnknownImageError,
     r"1 unknown image id\(s\): img-99x\. Did you mean: img-\d\d"),
    (lambda s: s.correct_labels(["img-00", "img-01"], ["a", "dog"]), odinlab.UnknownValueError,
     r"Unknown class 'dog'\. Classes: a, b, c"),
    (lambda s: s.correct_labels(["img-00"], [3]), odinlab.UnknownValueError, r"Unknown class 3\. .*from 0 to 2"),
    (lambda s: s.correct_labels(["img-00"], [True]), odinlab.UnknownValueError, r"Unknown class True"),
    (lambda s: s.correct_labels(["img-00", "img-01"], [0, 1, 2]), odinlab.OptionError,
     r"2 image id\(s\) but 3 label\(s\)"),
    (lambda s: s.correct_labels(["img-00", "img-00"], [0, 1]), odinlab.OptionError, r"more than once: img-00"),
    (lambda s: s.correct_labels([], []), odinlab.OptionError, r"No image ids"),
    (lambda s: s.correct_labels(["img-00"], [0], action="keep"), odinlab.OptionError, r"keep_labels"),
    (lambda s: s.correct_labels(["img-00"], [0], model="nope"), odinlab.UnknownModelError, r"Unknown model"),
    (lambda s: s.correct_labels(["img-00", "img-01"], [0, 1], score=[0.5]), odinlab.OptionError,
     r"one number per image \(2\)"),
    (lambda s: s.correct_labels(["img-00"], [0], label_set="../x"), odinlab.InvalidNameError, r"label set name"),
    (lambda s: s.correct_labels(["img-00"], [0], who=7), odinlab.OptionError, r"who must be text"),
    (lambda s: s.keep_labels(["img-00", "new"]), odinlab.LabelError, r"no label to keep.*new"),
]


@pytest.mark.parametrize("call, error, message", BAD)
def test_bad_ids_classes_and_lengths_are_refused_with_nothing_written(tiny_store, call, error, message):
    tiny_store.ingest(np.zeros((1, 8, 8), np.uint8), ids=["new"])  # one unlabelled image
    tiny_store.correct_labels("img-05", 2)
    before = tiny_store.label_corrections
    with pytest.raises(error, match=message):
        call(tiny_store)
    assert tiny_store.refresh().label_corrections.equals(before)


def test_a_read_only_store_refuses_corrections(tmp_path):
    path = tmp_path / "s"
    odinlab.open_store(path, create=True).ingest(np.zeros((2, 8, 8), np.uint8), labels=[0, 1], ids=["a", "b"])
    with pytest.raises(odinlab.ReadOnlyStoreError):
        odinlab.open_store(path, mode="r").correct_labels("a", 1)


# -- training and evaluation on a label set -----------------------------------------------------

def _fit_and_register(store, name, labels=None):
    model = _linear()
    fit(model, store, "train", epochs=30, lr=0.05, batch_size=20, progress=False, labels=labels)
    return model, store.register_model(model, name)


def _predicted(model, store, split):
    with torch.no_grad():
        return model(torch.from_numpy(store.model_input(split))).argmax(1).numpy()


def test_fit_on_a_label_set_trains_on_the_corrected_labels_and_records_the_set(tiny_store):
    train = tiny_store.select("train")
    tiny_store.correct_labels(train.ids, ["c"] * len(train), label_set="all-c")  # a set where every label is c
    on_set, set_id = _fit_and_register(tiny_store, "on-set", labels="all-c")
    on_original, original_id = _fit_and_register(tiny_store, "on-original")
    assert (_predicted(on_set, tiny_store, "val") == 2).all()  # it learned the set's labels
    assert (_predicted(on_original, tiny_store, "val") != 2).any()
    assert (_predicted(on_original, tiny_store, "train") == train.labels).mean() > 0.9  # ...and these the originals
    runs = tiny_store.experiments.filter(pl.col("kind") == "train").select("model_id", "label_set", "n_train")
    assert runs.rows() == [(set_id, "all-c", 20), (original_id, None, 20)]


def test_evaluate_on_a_label_set_scores_against_it_and_records_it(tiny_store):
    model, model_id = _fit_and_register(tiny_store, "m")
    val = tiny_store.select("val")
    tiny_store.correct_labels(val.ids, _predicted(model, tiny_store, val).tolist(), label_set="as-predicted")
    original = tiny_store.evaluate(model, "val")
    on_set = tiny_store.evaluate(model, val, labels="as-predicted")
    assert original["accuracy"][0] < 1.0 and on_set["accuracy"][0] == 1.0
    assert original["label_set"][0] is None and on_set["label_set"][0] == "as-predicted"
    assert tiny_store.evaluate(model, tiny_store.select("val", labels="as-predicted"))["label_set"][0] == "as-predicted"
    assert tiny_store.sql("SELECT label_set FROM experiments WHERE kind = 'eval'")["label_set"].to_list() == [
        None, "as-predicted", "as-predicted"]
    with pytest.raises(odinlab.UnknownValueError, match="No label set 'as_predicted'"):
        tiny_store.evaluate(model, "val", labels="as_predicted")
    with pytest.raises(odinlab.OptionError, match="different label sets"):
        tiny_store.record_experiment(model_id, train_images=tiny_store.select("train"),
                                     test_images=tiny_store.select("val", labels="as-predicted"))


def test_an_older_experiments_table_without_label_set_reads_and_grows(tiny_store):
    tiny_store.record_experiment(tiny_store.register_model(_linear(), "m"), train_images="train")
    tables = tiny_store._backend.tables
    tables.write("experiments", tables.read("experiments").drop("label_set"))  # as an older odinlab wrote it
    tables.forget()
    assert tiny_store.experiments["label_set"].to_list() == [None]
    tiny_store.correct_labels("img-00", 1)
    tiny_store.record_experiment("m@1", train_images="train", labels="reviewed")
    assert tiny_store.refresh().experiments["label_set"].to_list() == [None, "reviewed"]


def test_sql_joins_label_corrections_to_images(tiny_store):
    tiny_store.correct_labels(IDS, [2, 2, 2], who="ann")
    tiny_store.undo_correction()
    joined = tiny_store.sql(
        "SELECT c.image_id, i.split, i.label AS original, c.new_label, c.action FROM label_corrections c "
        "JOIN images i ON c.image_id = i.image_id WHERE c.who = 'ann' ORDER BY c.correction_id")
    assert joined.rows() == [(i, "train", y, 2, "change") for i, y in zip(IDS, _original(tiny_store, IDS))]
    picked = tiny_store.select("SELECT image_id FROM label_corrections WHERE action = 'undo'", labels="reviewed")
    assert picked.ids == ["img-02"] and picked.labels.tolist() == _original(tiny_store, ["img-02"])
    with pytest.raises(odinlab.UnknownTableError, match="Did you mean: label_corrections"):
        tiny_store.sql("SELECT * FROM label_correction")


# -- a kill in the middle of a write, and two writers at once ---------------------------------------

KILL = textwrap.dedent("""
    import os, sys, time
    import odinlab
    from odinlab.store import tables

    path, phase = sys.argv[1], sys.argv[2]

    def stall(*args, **kwargs):
        print("stalled", flush=True)
        time.sleep(120)

    if phase == "mid-table":  # the corrections table's new file written to a temp file, not yet put in place
        writing = []
        real_write, real_fsync = tables.Tables.write, os.fsync
        def write(self, name, frame):
            writing.append(name)
            real_write(self, name, frame)
        def fsync_then_stall(fd):
            real_fsync(fd)
            if writing[-1:] == ["label_corrections"]:
                stall()
        tables.Tables.write, os.fsync = write, fsync_then_stall
    else:  # the table committed (its manifest put), the call not returned yet
        real_commit = tables.Tables._commit
        def commit_then_stall(self):
            real_commit(self)
            stall()
        tables.Tables._commit = commit_then_stall
    store = odinlab.open_store(path)
    store.correct_labels([f"img-{i}" for i in range(5)], [1] * 5, who="killed")
""")


@pytest.mark.parametrize("phase, kept", [("mid-table", 0), ("committed", 5)])
def test_a_kill_in_the_middle_of_a_correction_leaves_all_or_none_of_it(tmp_path, stall_then_kill, phase, kept):
    path = tmp_path / "s"
    store = odinlab.open_store(path, create=True)
    store.ingest(np.zeros((6, 8, 8), np.uint8), labels=[0] * 6, classes=["a", "b"], ids=[f"img-{i}" for i in range(6)])
    store.correct_labels("img-5", 1, who="before")
    stall_then_kill(KILL, path, phase)
    reopened = odinlab.open_store(path)
    rows = reopened.label_corrections
    assert rows["who"].to_list() == ["before"] + ["killed"] * kept
    assert reopened.label_set()["label"].to_list() == [1] * kept + [0] * (5 - kept) + [1]
    assert reopened.verify().height == 0
    # The lock died with the writer: the next correction goes through, numbered after what is there.
    assert reopened.correct_labels("img-0", 0) == [f"corr-{kept + 2:05d}"]


def _correct_in_turns(path: str, k: int) -> list[str]:
    store = odinlab.open_store(path)
    (Path(path).parent / f"labels-{k}.ready").touch()
    deadline = time.monotonic() + 60
    while len(list(Path(path).parent.glob("labels-*.ready"))) < 2:  # start together, so writes overlap
        assert time.monotonic() < deadline, "the other worker never came"
        time.sleep(0.01)
    ids = []
    for i in range(10):  # one image of its own and one shared image per decision
        ids += store.correct_labels([f"p{k}-{i}", "shared"], [(k + i) % 3, (k + i + 1) % 3], who=f"p{k}")
    return ids


def test_two_processes_correcting_at_once_keep_every_decision(tmp_path):
    path = tmp_path / "s"
    ids = [f"p{k}-{i}" for k in (0, 1) for i in range(10)] + ["shared"]
    odinlab.open_store(path, create=True).ingest(np.zeros((21, 8, 8), np.uint8), labels=[0] * 21,
                                                 classes=["a", "b", "c"], ids=ids)
    with multiprocessing.get_context("spawn").Pool(2, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        got = pool.starmap(_correct_in_turns, [(str(path), 0), (str(path), 1)], chunksize=1)
    rows = odinlab.open_store(path, mode="r").label_corrections
    assert rows.height == 40 and sorted(got[0] + got[1]) == rows["correction_id"].to_list()
    assert rows["correction_id"].to_list() == [f"corr-{n:05d}" for n in range(1, 41)]
    for k in (0, 1):
        own = rows.filter(pl.col("image_id").str.starts_with(f"p{k}-"))
        assert own.select("image_id", "new_label", "who").rows() == [(f"p{k}-{i}", (k + i) % 3, f"p{k}")
                                                                      for i in range(10)]
    # Each decision on the shared image saw the one committed before it, whichever process wrote that.
    shared = rows.filter(pl.col("image_id") == "shared")
    assert shared["old_label"].to_list() == [0, *shared["new_label"].to_list()[:-1]]
