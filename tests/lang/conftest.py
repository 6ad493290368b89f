"""A small digits store for the language tests: cnn@1 and its child cnn@2, both with predictions
materialized, and cnn@2's head.fc1 activations."""

import uuid

import pytest
import torch

import odinlab
from odinlab.lang import Runner
from odinlab.nets import SmallCNN
from odinlab.training import fit

torch.set_num_threads(1)


def build_store(url: str):
    """cnn@1 (one epoch) and cnn@2 (one more), predictions of both, cnn@2's head.fc1; returns (store, nets)."""
    torch.manual_seed(0)
    store = odinlab.open_store(url, create=True)
    store.ingest(odinlab.datasets.digits())
    net1 = SmallCNN()
    fit(net1, store, "train", epochs=1, progress=False)
    store.register_model(net1, "cnn", hyperparams={"lr": 0.01})
    net2 = SmallCNN()
    net2.load_state_dict(net1.state_dict())
    fit(net2, store, "train", epochs=2, progress=False)
    store.register_model(net2, "cnn", parent="cnn@1", hyperparams={"lr": 0.01})
    store.materialize(net1, progress=False)
    store.materialize(net2, ["head.fc1"], progress=False)
    store.evaluate(net1, "val")
    store.evaluate(net2, "val")
    return store, (net1, net2)


@pytest.fixture(scope="session")
def lang_store():
    store, _ = build_store(f"memory://lang-{uuid.uuid4().hex}")
    return store


@pytest.fixture
def runner(lang_store):
    return Runner(lang_store, {})


@pytest.fixture
def run(runner):
    """Run one statement, return its result."""
    return lambda text: runner.run(text)[-1]
