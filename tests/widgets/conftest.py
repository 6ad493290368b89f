"""The store the widget tests look at, built once for the whole session."""

import uuid

import pytest
import torch

import odinlab
from odinlab.nets import SmallCNN
from odinlab.training import fit


@pytest.fixture(scope="session")
def digits():
    """Digits, a tiny CNN trained briefly (plenty of mistakes) with its test predictions and
    head.fc1 stored, and a second model, "other", with nothing stored."""
    torch.manual_seed(0)
    store = odinlab.open_store(f"memory://widgets-{uuid.uuid4().hex}", create=True)
    store.ingest(odinlab.datasets.digits())
    net = SmallCNN(1, 10, width=4)
    fit(net, store, "train", epochs=2, progress=False)
    store.register_model(net, "cnn")
    store.materialize(net, ["head.fc1"], images="test", progress=False)
    store.register_model(SmallCNN(1, 10, width=4), "other")
    return store
