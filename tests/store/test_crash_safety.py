"""A process killed in the middle of a write leaves the previous version of the store readable."""

import subprocess
import sys
import textwrap

import numpy as np
import polars as pl
import pytest
import torch
from torch import nn

import odinlab

CHILD = textwrap.dedent("""
    import os, sys, time
    import numpy as np
    import odinlab
    from odinlab.store import ingest

    path, phase = sys.argv[1], sys.argv[2]
    if phase == "table":  # stall inside the atomic table write, after the temp file is written
        real_fsync = os.fsync
        def stalled_fsync(fd):
            real_fsync(fd)
            print("stalled", flush=True)
            time.sleep(120)
        os.fsync = stalled_fsync
    else:  # stall after the first batch of pixels went to Zarr, before the table commit
        real_store = ingest.PixelWriter._store_batch
        def stalled_store(self, batch, offset):
            real_store(self, batch, offset)
            print("stalled", flush=True)
            time.sleep(120)
        ingest.PixelWriter._store_batch = stalled_store
    store = odinlab.open_store(path, create=True)
    rng = np.random.default_rng(1)
    store.ingest(rng.integers(0, 256, (50, 8, 8), dtype=np.uint8), labels=np.zeros(50, int),
                 split="train", batch_size=10)
""")


def _kill_mid_write(path, phase):
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), phase],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()
        assert line.strip() == "stalled", child.stderr.read()
    finally:
        child.kill()  # SIGKILL: no cleanup handlers run
        child.wait()


@pytest.mark.parametrize("phase", ["table", "pixels"])
def test_killed_ingest_leaves_the_previous_version_readable(tmp_path, phase):
    path = tmp_path / "store"
    store = odinlab.open_store(path, create=True)
    first = np.random.default_rng(0).integers(0, 256, (20, 8, 8), dtype=np.uint8)
    store.ingest(first, labels=np.ones(20, int), classes=["a", "b"], split="test")
    before = store.images

    _kill_mid_write(path, phase)

    reopened = odinlab.open_store(path, create=True)
    assert reopened.images.equals(before)
    np.testing.assert_array_equal(reopened.pixels(before["image_id"])[:, 0], first)
    # The interrupted ingest can simply be run again and completes.
    again = np.random.default_rng(1).integers(0, 256, (50, 8, 8), dtype=np.uint8)
    added = reopened.ingest(again, labels=np.zeros(50, int), split="train", batch_size=10)
    assert added.height == 50 and reopened.images.height == 70
    assert reopened.pixel_array.shape == (70, 1, 8, 8)
    np.testing.assert_array_equal(reopened.pixels(added["image_id"])[:, 0], again)


# -- kills that used to leave a trace: the first ingest, new classes, a half-made array --------

STALL = textwrap.dedent("""
    import sys, time
    import numpy as np
    import odinlab
    from odinlab.store import ingest, tables

    def stall(*args, **kwargs):
        print("stalled", flush=True)
        time.sleep(120)

    path, phase = sys.argv[1], sys.argv[2]
    if phase == "before-table":  # pixels written, the images table not yet saved
        tables.Tables.append = stall
    elif phase == "after-table":  # the ingest committed (its manifest put), nothing after it run
        real_commit = tables.Tables._commit
        def commit_then_stall(self):
            real_commit(self)
            stall()
        tables.Tables._commit = commit_then_stall
    else:  # the first batch of a first ingest written
        real_store = ingest.PixelWriter._store_batch
        def store_then_stall(self, batch, offset):
            real_store(self, batch, offset)
            stall()
        ingest.PixelWriter._store_batch = store_then_stall
    store = odinlab.open_store(path, create=True)
    shape = (50, 3, 16, 16) if phase == "first" else (50, 8, 8)
    store.ingest(np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8), labels=np.full(50, 2),
                 classes=["a", "b", "c"], split="train", batch_size=10)
""")




def test_a_killed_first_ingest_fixes_neither_the_image_shape_nor_anything_else(tmp_path, stall_then_kill):
    stall_then_kill(STALL, tmp_path / "store", "first")
    store = odinlab.open_store(tmp_path / "store")
    assert store.images.height == 0 and store.classes == []
    # Other images than the killed ingest's (8×8 grey, not 3×16×16) are welcome.
    pixels = np.random.default_rng(0).integers(0, 256, (20, 8, 8), dtype=np.uint8)
    added = store.ingest(pixels, labels=np.zeros(20, int), split="train")
    assert store.pixel_array.shape == (20, 1, 8, 8) and added.height == 20
    np.testing.assert_array_equal(store.pixels(added["image_id"])[:, 0], pixels)


def _with_two_classes(path):
    store = odinlab.open_store(path, create=True)
    store.ingest(np.random.default_rng(0).integers(0, 256, (20, 8, 8), dtype=np.uint8),
                 labels=np.ones(20, int), classes=["a", "b"], split="test")
    return store


def test_a_kill_before_the_images_table_is_saved_keeps_the_classes(tmp_path, stall_then_kill):
    before = _with_two_classes(tmp_path / "store").images
    stall_then_kill(STALL, tmp_path / "store", "before-table")
    store = odinlab.open_store(tmp_path / "store")
    assert store.classes == ["a", "b"] and store.images.equals(before)
    store.ingest(np.zeros((1, 8, 8), np.uint8), labels=[1], ids=["later"])  # the next ingest settles it
    assert store.classes == ["a", "b"] and "pending_classes" not in store._backend.meta


def test_a_kill_after_the_images_table_is_saved_keeps_its_classes(tmp_path, stall_then_kill):
    _with_two_classes(tmp_path / "store")
    stall_then_kill(STALL, tmp_path / "store", "after-table")
    store = odinlab.open_store(tmp_path / "store")
    assert store.images.height == 70  # committed: its labels are class 2, whose name came in the same commit
    assert store.classes == ["a", "b", "c"]
    assert store.images.filter(pl.col("split") == "train")["label_name"].unique().to_list() == ["c"]


class Killed(BaseException):
    """Stands for SIGKILL: no except clause of odinlab catches it."""


def _registered(tiny_store):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 4), nn.ReLU(), nn.Linear(4, 3))
    tiny_store.register_model(net, "m")
    return net


def test_a_kill_while_an_array_is_created_leaves_no_half_made_array(tiny_store, monkeypatch):
    from odinlab.store import arrays

    net = _registered(tiny_store)
    real = arrays._copy_metadata

    async def copy_two_then_die(source, target, prefix):
        copied = []

        class Partial:  # the target store, dying after two files (values, and one more)
            async def set(self, key, value):
                if len(copied) == 2:
                    raise Killed
                copied.append(key)
                await target.set(key, value)

        await real(source, Partial(), prefix)

    monkeypatch.setattr(arrays, "_copy_metadata", copy_two_then_die)
    with pytest.raises(Killed):
        tiny_store.materialize(net, ["2"], progress=False)
    monkeypatch.undo()
    assert tiny_store.predictions("m@1").height == 0  # no KeyError: 'done'; nothing is there
    tiny_store.materialize(net, ["2"], progress=False)  # resumes from nothing
    assert tiny_store.predictions("m@1").height == 60
    assert tiny_store.activations("m@1", "2").shape == (60, 4)


def test_an_array_half_made_by_an_older_odinlab_is_made_anew(tiny_store):
    net = _registered(tiny_store)
    group = tiny_store._backend.arrays().require_group("models/m/v1/predictions")
    group.create_array("values", shape=(60, 3), dtype="float32")  # then killed: no done, no attrs
    with pytest.raises(odinlab.errors.NotMaterializedError, match="materialize again"):
        tiny_store.predictions("m@1")
    tiny_store.materialize(net, progress=False)
    assert tiny_store.predictions("m@1").height == 60
