import uuid

import numpy as np
import pytest
import torch

import odinlab

# Tiny models run fastest on one thread, and tests must not fight other processes for cores.
torch.set_num_threads(1)


@pytest.fixture
def store():
    """A fresh in-memory store (fsspec's memory filesystem is global, so each gets its own name)."""
    return odinlab.open_store(f"memory://test-{uuid.uuid4().hex}", create=True)


@pytest.fixture
def tiny_store(store):
    """A store with 60 random 1×8×8 images over 3 classes, 20 per split."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(60, 8, 8), dtype=np.uint8)
    store.ingest(images, labels=rng.integers(0, 3, 60), classes=["a", "b", "c"],
                 split=["train"] * 20 + ["val"] * 20 + ["test"] * 20,
                 ids=[f"img-{i:02d}" for i in range(60)])
    return store


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def two_versions():
    """Build, at a store URL or path, digits with two versions of a small CNN: cnn@1 trained briefly and
    cnn@2 = cnn@1 with its conv layers frozen and the head trained on; both with their test predictions
    and ``layers`` stored (``images=None``: of every image). Returns the store (the comparison view's tests, in Python and in the browser)."""
    def build(where, layers=("features.relu2", "head.fc1"), *, tuned_epochs=2, images="test"):
        from odinlab.nets import SmallCNN
        from odinlab.training import fit

        torch.manual_seed(0)
        store = odinlab.open_store(str(where), create=True)
        store.ingest(odinlab.datasets.digits())
        v1 = SmallCNN(1, 10, width=8)
        fit(v1, store, "train", epochs=2, lr=1e-2, progress=False)
        store.register_model(v1, "cnn")
        v2 = store.load_weights(SmallCNN(1, 10, width=8), "cnn@1")
        v2.features.requires_grad_(False)
        fit(v2, store, "train", epochs=tuned_epochs, lr=1e-2, seed=1, progress=False)
        store.register_model(v2, "cnn", parent="cnn@1")
        for net in (v1, v2):
            store.materialize(net, list(layers), images=images, progress=False)
        return store

    return build


@pytest.fixture(scope="module")
def client():
    """A real dask.distributed cluster (two worker processes, one thread each) for one test module.

    Module scope: a client lives on as Dask's default scheduler, and a later test's dask arrays over a
    ``memory://`` store would be computed by workers that cannot see it.
    """
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as connected:
        connected.run(torch.set_num_threads, 1)
        yield connected
