"""Table commits are all or nothing without rename: new objects, then one manifest put.

A change that touches two tables (``record_experiment`` writes ``image_sets`` and ``experiments``)
is one commit: a process killed between the puts leaves the previous commit whole, a reader
polling while another process commits never sees one table of a commit without the other, old
stores (one ``tables/<name>.parquet`` per table, no manifest) still read and are upgraded by
their first write, and superseded objects are removed only once no recent manifest names them.
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
import textwrap
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from torch import nn

import odinlab
from odinlab.store import tables
from tests.s3server import moto_s3

N_IMAGES = 60
COMMITS = 50


@pytest.fixture(scope="module")
def server():
    with moto_s3() as running:
        yield running


@pytest.fixture(params=["folder", "s3"])
def where(request, tmp_path):
    """A new store location: a local folder, or a place on the S3 server."""
    if request.param == "folder":
        return str(tmp_path / "store")
    return request.getfixturevalue("server").url("store")


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 3))


def _store_with_a_model(url: str) -> odinlab.Store:
    store = odinlab.open_store(url, create=True)
    images = np.random.default_rng(0).integers(0, 256, (N_IMAGES, 8, 8), dtype=np.uint8)
    store.ingest(images, labels=np.arange(N_IMAGES) % 3, classes=["a", "b", "c"],
                 ids=[f"img-{i:03d}" for i in range(N_IMAGES)], split="test")
    store.register_model(_net(), "m")
    return store


def _unnamed_objects(store: odinlab.Store) -> set[str]:
    """Table objects in the store that its manifest does not name (a killed commit's)."""
    fs, manifest = store._backend.fs, tables.Tables(store._backend.fs).manifest()
    root = fs.path(("tables",))
    found = {p[len(root):].lstrip("/") for p in fs.fs.glob(f"{root}/*/*.parquet")}
    return found - set(manifest["tables"].values()) - {r["object"] for r in manifest["retired"]}


def _check_whole(experiments: pl.DataFrame, image_sets: pl.DataFrame) -> None:
    """Every experiment's image set is there, complete; experiment ids have no gap."""
    assert experiments["experiment_id"].to_list() == [f"exp-{i:05d}" for i in range(1, experiments.height + 1)]
    sizes = dict(image_sets.group_by("set_id").len().iter_rows())
    for run in experiments.iter_rows(named=True):
        assert sizes.get(run["test_set"]) == run["n_test"], f"{run['experiment_id']} without its image set"


# -- a kill between the puts ---------------------------------------------------------------------

KILL = textwrap.dedent("""
    import sys, time
    import odinlab
    from odinlab.store.fs import StoreFS

    url, stop_after = sys.argv[1], int(sys.argv[2])
    real, puts = StoreFS.write_bytes, []

    def put_then_stall(self, parts, data):  # stall after the n-th table object, before the manifest
        real(self, parts, data)
        if parts[0] == "tables" and parts[-1].endswith(".parquet"):
            puts.append(parts)
            if len(puts) == stop_after:
                print("stalled", flush=True)
                time.sleep(120)

    StoreFS.write_bytes = put_then_stall
    store = odinlab.open_store(url)
    store.record_experiment("m@1", test_images=store.images["image_id"].to_list()[:7], notes="killed")
""")


@pytest.mark.parametrize("stop_after", [1, 2], ids=["between-the-tables", "before-the-manifest"])
def test_a_two_table_change_killed_between_its_puts_leaves_the_previous_commit(where, stop_after,
                                                                                stall_then_kill):
    store = _store_with_a_model(where)
    store.record_experiment("m@1", test_images=store.images["image_id"].to_list()[:3], notes="kept")
    before = store.experiments, store.image_sets

    stall_then_kill(KILL, where, stop_after)

    again = odinlab.open_store(where, mode="r")
    assert again.experiments.equals(before[0]) and again.image_sets.equals(before[1])
    assert len(_unnamed_objects(again)) == stop_after  # the kill did come after those puts
    assert again.verify().height == 0  # left-overs of a killed commit are no damage
    if where.startswith("s3://"):  # a dead writer keeps its lease (see LeaseLock): let go of it by hand
        again._backend.fs.fs.rm(again._backend.fs.lock_path())
    writer = odinlab.open_store(where)
    assert writer.record_experiment("m@1", test_images=writer.images["image_id"].to_list()[:7]) == "exp-00002"
    _check_whole(writer.experiments, writer.image_sets)


def test_an_exception_inside_a_write_commits_nothing_of_it(tmp_path):
    store = _store_with_a_model(tmp_path / "s")
    ids = store.images["image_id"].to_list()
    with pytest.raises(ValueError, match="changed my mind"), store._backend.writing("outer"):
        store.record_experiment("m@1", test_images=ids[:3])
        raise ValueError("changed my mind")
    assert store.experiments.height == 0 and store.image_sets.height == 0
    with store._backend.writing("outer"):
        store.record_experiment("m@1", test_images=ids[:3])
        with pytest.raises(KeyError), store._backend.writing("inner"):  # a savepoint: only its own writes go
            store._backend.tables.append("image_sets", pl.DataFrame({"set_id": ["x"], "image_id": ["y"]}))
            raise KeyError("inner")
    reopened = odinlab.open_store(tmp_path / "s", mode="r")
    assert reopened.experiments["experiment_id"].to_list() == ["exp-00001"]
    assert set(reopened.image_sets["set_id"]) == {reopened.experiments["test_set"][0]}


# -- readers see whole commits ---------------------------------------------------------------------

def _record_many(url: str, n: int) -> int:
    torch.set_num_threads(1)
    store = odinlab.open_store(url)
    ids = store.images["image_id"].to_list()
    for k in range(n):  # each commit: a new image set and the experiment that uses it
        store.record_experiment("m@1", test_images=ids[k : k + 3 + k % 5], notes=f"run {k}")
    return n


def test_a_reader_polling_during_50_commits_never_sees_half_of_one(where):
    _store_with_a_model(where)
    reader, seen = odinlab.open_store(where, mode="r"), set()
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        writing = pool.apply_async(_record_many, (where, COMMITS))
        while not writing.ready():
            reader.refresh()
            # image_sets first: were the tables read from different commits, an experiment
            # committed in between would show without its image set.
            sets, experiments = reader.image_sets, reader.experiments
            _check_whole(experiments, sets)
            seen.add(experiments.height)
        assert writing.get() == COMMITS
    reader.refresh()
    _check_whole(reader.experiments, reader.image_sets)
    assert reader.experiments.height == COMMITS
    assert len(seen - {0, COMMITS}) >= 3, f"the reader saw too few commits in between: {sorted(seen)}"


# -- superseded objects, left-overs, a reader left behind ----------------------------------------------

def test_superseded_objects_are_removed_only_when_both_old_and_some_commits_back(tmp_path, monkeypatch):
    store = _store_with_a_model(tmp_path / "s")
    ids = store.images["image_id"].to_list()
    named = []
    for k in range(3):
        store.record_experiment("m@1", test_images=ids[k : k + 2])
        named.append(tables.Tables(store._backend.fs).manifest()["tables"]["experiments"])
    root = tmp_path / "s" / "tables"
    assert all((root / n).is_file() for n in named)  # young: kept though superseded
    monkeypatch.setattr(tables, "KEEP_SECONDS", 0.0)
    for k in range(3, 3 + tables.KEEP_COMMITS + 1):
        store.record_experiment("m@1", test_images=ids[k : k + 2])
    assert not (root / named[0]).exists()  # KEEP_COMMITS commits old: gone
    manifest = tables.Tables(store._backend.fs).manifest()
    assert all((root / r["object"]).is_file() for r in manifest["retired"])
    assert len(manifest["retired"]) >= tables.KEEP_COMMITS - 1
    _check_whole(store.refresh().experiments, store.image_sets)


def test_a_stale_snapshot_whose_objects_are_gone_reads_the_latest_commit(tmp_path, monkeypatch):
    store = _store_with_a_model(tmp_path / "s")
    ids = store.images["image_id"].to_list()
    store.record_experiment("m@1", test_images=ids[:2])
    stale = odinlab.open_store(tmp_path / "s", mode="r")
    assert stale.models.height == 1  # snapshot taken: experiments named but not read yet
    monkeypatch.setattr(tables, "KEEP_SECONDS", 0.0)
    for k in range(1, tables.KEEP_COMMITS + 2):
        store.record_experiment("m@1", test_images=ids[k : k + 2])
    assert stale.experiments.height == tables.KEEP_COMMITS + 2  # no error: it moved on to the latest commit
    _check_whole(stale.experiments, stale.image_sets)


def test_objects_of_killed_commits_are_swept_and_named_ones_kept(tmp_path, monkeypatch):
    store = _store_with_a_model(tmp_path / "s")
    left = tmp_path / "s" / "tables" / "experiments" / "99999999-deadbeef.parquet"
    left.parent.mkdir(exist_ok=True)
    left.write_bytes(b"a killed writer's half")
    monkeypatch.setattr(tables, "SWEEP_EVERY", 1)
    store.record_experiment("m@1")
    assert not left.exists()
    assert odinlab.open_store(tmp_path / "s").experiments.height == 1 and store.verify().height == 0


# -- older stores and verify ------------------------------------------------------------------------

def _to_old_layout(root: Path) -> None:
    """Turn a store into what odinlab wrote before manifests: tables/<name>.parquet, classes in the marker."""
    manifest = json.loads((root / "tables" / "manifest.json").read_text())
    for name, obj in manifest["tables"].items():
        shutil.copyfile(root / "tables" / obj, root / "tables" / f"{name}.parquet")
        shutil.rmtree(root / "tables" / name)
    (root / "tables" / "manifest.json").unlink()
    marker = json.loads((root / "odinlab.json").read_text())
    (root / "odinlab.json").write_text(json.dumps({**marker, "format_version": 1,
                                                   "classes": manifest["meta"]["classes"]}))


def test_an_old_layout_store_reads_and_its_first_write_upgrades_it_without_copying(tmp_path):
    store = _store_with_a_model(tmp_path / "s")
    store.record_experiment("m@1", test_images=store.images["image_id"].to_list()[:4])
    before = {name: getattr(store, name) for name in ("images", "models", "experiments", "image_sets")}
    _to_old_layout(tmp_path / "s")

    old = odinlab.open_store(tmp_path / "s", mode="r")
    assert all(getattr(old, name).equals(frame) for name, frame in before.items())
    assert old.classes == ["a", "b", "c"] and old.verify().height == 0

    writer = odinlab.open_store(tmp_path / "s")
    assert writer.record_experiment("m@1", notes="after the upgrade") == "exp-00002"
    manifest = json.loads((tmp_path / "s" / "tables" / "manifest.json").read_text())
    assert manifest["tables"]["images"] == "images.parquet"  # named as it was, not copied
    assert manifest["tables"]["experiments"].startswith("experiments/")
    assert json.loads((tmp_path / "s" / "odinlab.json").read_text())["format_version"] == tables.FORMAT_VERSION
    again = odinlab.open_store(tmp_path / "s", mode="r")
    assert again.images.equals(before["images"]) and again.classes == ["a", "b", "c"]
    assert again.experiments.height == 2 and again.verify().height == 0


def test_verify_reports_a_missing_named_object_and_a_damaged_manifest(tmp_path):
    store = _store_with_a_model(tmp_path / "s")
    store.record_experiment("m@1")
    named = store._backend.tables.object_of("experiments")
    (tmp_path / "s" / named).unlink()
    problems = odinlab.open_store(tmp_path / "s").verify()
    assert problems.select("what", "where").rows() == [("table", named)]
    assert "tables/manifest.json names it for the experiments table" in problems["error"][0]
    with pytest.raises(odinlab.CorruptStoreError, match="experiments table .* is missing"):
        odinlab.open_store(tmp_path / "s").experiments
    (tmp_path / "s" / "tables" / "manifest.json").write_text("{not json")
    with pytest.raises(odinlab.CorruptStoreError, match="manifest .* is damaged"):
        odinlab.open_store(tmp_path / "s").models
    assert "tables/manifest.json" in odinlab.open_store(tmp_path / "s", mode="r").verify()["where"].to_list()
