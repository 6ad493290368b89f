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
