"""A worker killed in the middle of a run, or the whole cluster gone, leaves the store resumable."""

import os
import signal
import threading
import time

import numpy as np
import pytest
import torch

import odinlab
from odinlab.nets import SmallCNN

N = 8_192  # 8 parts of 1,024 images: a run lasts a few seconds
LAYERS = ["features.conv1", "features.conv2", "head.fc1"]


@pytest.fixture
def cluster():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as local, \
            Client(local) as client:
        yield local, client


@pytest.fixture
def stores(tmp_path):
    """Two folder stores with the same noise images and version (one for the cluster, one local)."""
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (N, 8, 8), dtype=np.uint8), rng.integers(0, 10, N)
    torch.manual_seed(0)
    net = SmallCNN(1, 10, width=32)
    made = []
    for name in ("cluster", "local"):
        store = odinlab.open_store(tmp_path / name, create=True)
        store.ingest(images, labels=labels, classes=[str(i) for i in range(10)])
        store.register_model(net, "cnn")
        made.append(store)
    return made


def _in_background(run):
    """Start ``run`` in a thread; returns (thread, outcome dict with "error" or "report")."""
    outcome = {}

    def target():
        try:
            outcome["report"] = run()
        except BaseException as error:  # noqa: BLE001 - handed to the test
            outcome["error"] = error
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def _images_done(url) -> int:
    """Images whose predictions are committed, read through another handle (as another process would)."""
    done = odinlab.open_store(url, mode="r").materialized("cnn@1")
    return int(done.filter(done["array"] == "predictions")["images"].sum()) if done.height else 0


def _wait_for(condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _assert_same_as_local(on_cluster, local):
    local.materialize("cnn@1", LAYERS, dtype="float32", progress=False)
    for layer in LAYERS:
        np.testing.assert_array_equal(on_cluster.activations("cnn@1", layer).values,
                                      local.activations("cnn@1", layer).values)


def test_a_worker_killed_mid_run_is_replaced_and_the_run_completes_with_exact_results(cluster, stores):
    local_cluster, client = cluster
    on_cluster, local = stores
    before = set(client.run(os.getpid).values())
    thread, outcome = _in_background(lambda: on_cluster.materialize(
        "cnn@1", LAYERS, dtype="float32", scheduler=client, progress=False))
    _wait_for(lambda: _images_done(on_cluster.url) > 0)  # one part committed, others running
    os.kill(next(iter(before)), signal.SIGKILL)
    thread.join(120)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["report"]["computed"].to_list() == [N] * 4
    assert set(client.run(os.getpid).values()) != before  # the nanny started a new worker
    _assert_same_as_local(on_cluster, local)


def test_a_run_whose_cluster_goes_away_leaves_a_store_that_the_next_run_completes(cluster, stores):
    local_cluster, client = cluster
    on_cluster, local = stores
    thread, outcome = _in_background(lambda: on_cluster.materialize(
        "cnn@1", LAYERS, dtype="float32", scheduler=client, progress=False))
    _wait_for(lambda: _images_done(on_cluster.url) > 0)
    local_cluster.close()  # every worker and the scheduler gone mid-run
    thread.join(120)
    assert "error" in outcome
    done = _images_done(on_cluster.url)
    assert 0 < done < N
    resumed = on_cluster.materialize("cnn@1", LAYERS, dtype="float32", progress=False)  # locally this time
    assert resumed["computed"].to_list()[0] == N - done  # only what was not committed
    _assert_same_as_local(on_cluster, local)
