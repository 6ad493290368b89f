"""A process killed in the middle of a write leaves the previous version of the store readable."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

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
