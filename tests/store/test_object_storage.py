"""Stores on object storage: s3fs against a real S3 protocol server (moto's) on 127.0.0.1.

Nothing of odinlab is mocked: the store talks HTTP to the server through s3fs and Zarr, and the
writer lock is a lease object created with a conditional put (``If-None-Match: *``), which the
server refuses with 412 when the lease is there. Two spawned processes race to prove that the
lease makes writers take turns.

The server (tests/s3server.py) answers one request at a time, which gives it S3's atomicity
for the lease's conditional puts.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

import odinlab
from odinlab.store.backend import LeaseLock
from odinlab.store.fs import StoreFS
from tests.s3server import moto_s3

N_INGEST = 200
CLASSES = [str(i) for i in range(10)]


@pytest.fixture(scope="module")
def server():
    """A moto S3 server on 127.0.0.1 with one bucket; the environment points boto at it.

    Spawned workers inherit the environment; credentials live there, never in a store.
    """
    with moto_s3() as running:
        yield running


@pytest.fixture(scope="module")
def s3(server):
    return server.filesystem()


@pytest.fixture
def url(server):
    return server.url("store")


@pytest.fixture(scope="module")
def pool(server):
    """Two spawned workers, started after the environment points at the server."""
    import torch

    with multiprocessing.get_context("spawn").Pool(2, initializer=torch.set_num_threads, initargs=(1,)) as workers:
        yield workers


def _images_of(k: int) -> tuple[np.ndarray, list[str]]:
    images = np.random.default_rng(200 + k).integers(0, 256, (N_INGEST, 8, 8), dtype=np.uint8)
    return images, [f"p{k}-{i:04d}" for i in range(N_INGEST)]


def _net(seed: int):
    import torch

    from odinlab.nets import SmallCNN

    torch.manual_seed(seed)
    return SmallCNN(1, 10, width=4)


def _meet(folder: Path, name: str, k: int, n: int = 2) -> None:
    """Wait until ``n`` workers reached this point, so that their writes overlap."""
    (folder / f"{name}-{k}.ready").touch()
    deadline = time.monotonic() + 60
    while len(list(folder.glob(f"{name}-*.ready"))) < n:
        assert time.monotonic() < deadline, "the other worker never came"
        time.sleep(0.01)


# -- what the workers do (module level, so that spawned processes can import them) --------------

def _ingest_and_register(url: str, folder: str, k: int) -> list[str]:
    store = odinlab.open_store(url)
    images, ids = _images_of(k)
    _meet(Path(folder), "ingest", k)
    for part in range(2):  # two commits each, so that the writers interleave
        rows = slice(part * N_INGEST // 2, (part + 1) * N_INGEST // 2)
        store.ingest(images[rows], labels=np.arange(N_INGEST)[rows] % 10, classes=CLASSES, ids=ids[rows],
                     split=f"p{k}")
    _meet(Path(folder), "register", k)
    return [store.register_model(_net(1000 * k + v), "race", parent="base@1") for v in range(3)]


def _hold(url: str, folder: str, seconds: float) -> int:
    store = odinlab.open_store(url)
    with store._backend.writing("holding the lease for a test"):
        (Path(folder) / "held").write_text(str(os.getpid()))
        time.sleep(seconds)
    return os.getpid()


# -- the tests ----------------------------------------------------------------------------------

def test_the_lease_is_a_conditional_put_that_one_of_many_racers_wins(s3, url):
    import s3fs

    fs = StoreFS(url)
    first, second = LeaseLock(fs), LeaseLock(fs)
    assert first.acquire(1.0, {"pid": 1, "what": "first"})
    assert not second.acquire(0.3, {"pid": 2, "what": "second"})
    assert second.holder() == {"pid": 1, "what": "first"}
    with pytest.raises(FileExistsError):  # the server refuses, not a check made by odinlab
        s3fs.S3FileSystem(skip_instance_cache=True).pipe_file(fs.lock_path(), b"{}", mode="create")
    first.release()
    assert not s3.exists(fs.lock_path()) and second.holder() is None

    won, ready = [], threading.Barrier(8)

    def race(k):  # each racer with its own client and connection, as separate processes would have
        lease = LeaseLock(fs)
        lease._fs = s3fs.S3FileSystem(skip_instance_cache=True)
        ready.wait()
        if lease.acquire(0, {"pid": k}):
            won.append(k)

    threads = [threading.Thread(target=race, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and LeaseLock(fs).holder() == {"pid": won[0]}


def test_a_store_on_s3_is_created_ingested_and_read_back(s3, url):
    digits = odinlab.datasets.digits()
    n = 300
    store = odinlab.open_store(url, create=True)
    store.ingest(digits.images[:n], labels=digits.labels[:n], classes=digits.classes, ids=digits.ids[:n],
                 split=digits.split[:n])
    assert not s3.exists(StoreFS(url).lock_path())  # the lease is gone after the write
    again = odinlab.open_store(url, mode="r")
    assert again.images.height == n
    assert again.images["image_id"].to_list() == list(digits.ids[:n])
    np.testing.assert_array_equal(again.pixels(list(digits.ids[:n])), digits.images[:n])
    assert s3.exists(f"{url}/odinlab.json") and s3.exists(f"{url}/tables/manifest.json")
    assert s3.exists(f"{url}/{again._backend.tables.object_of('images')}")
    written = b"".join(s3.cat_file(p) for p in s3.find(url) if "/c/" not in p)  # all but pixel chunks
    assert b"testing" not in written and b"127.0.0.1" not in written  # credentials and endpoint stay outside


def test_two_processes_writing_one_s3_store_take_turns(s3, url, pool, tmp_path):
    store = odinlab.open_store(url, create=True)
    store.register_model(_net(99), "base", input_shape=(1, 8, 8))
    got = pool.starmap(_ingest_and_register, [(url, str(tmp_path), 0), (url, str(tmp_path), 1)], chunksize=1)
    store = odinlab.open_store(url, mode="r")
    assert store.images.height == 2 * N_INGEST and store.images["image_id"].n_unique() == 2 * N_INGEST
    ids = store.images["image_id"].to_list()
    pixels = store.pixels(ids)[:, 0]
    for k in (0, 1):
        images, mine = _images_of(k)
        rows = [ids.index(i) for i in mine]
        np.testing.assert_array_equal(pixels[rows], images, err_msg=f"pixels of process {k}")
        assert set(store.images.filter(store.images["image_id"].str.starts_with(f"p{k}-"))["split"]) == {f"p{k}"}
    assert store.pixel_array.shape[0] == 2 * N_INGEST
    versions = sorted(got[0] + got[1], key=lambda m: int(m.split("@")[1]))
    assert versions == [f"race@{v}" for v in range(1, 7)]
    assert store.models.height == 7
    for k, model_ids in enumerate(got):
        for v, model_id in enumerate(model_ids):
            assert store.model_id_of(_net(1000 * k + v)) == model_id
    assert not s3.exists(StoreFS(url).lock_path())


def test_a_writer_that_waits_too_long_on_s3_is_told_who_holds_the_lease(s3, url, pool, tmp_path, busy_then_free):
    odinlab.open_store(url, create=True)
    holding = pool.apply_async(_hold, (url, str(tmp_path), 3.0))
    flag = tmp_path / "held"
    deadline = time.monotonic() + 60
    while not flag.exists():
        assert time.monotonic() < deadline, "the holder never took the lease"
        time.sleep(0.01)
    reader = odinlab.open_store(url)
    assert reader._backend.lock_holder()["pid"] == int(flag.read_text())  # read from the lease object
    busy_then_free(url, holding, flag, "holding the lease")
