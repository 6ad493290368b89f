import uuid

import pytest
import torch

import odinlab
from odinlab.nets import SmallCNN
from odinlab.training import fit


@pytest.fixture(scope="package")
def digits_store():
    """Digits with a trained SmallCNN ("cnn@1"): predictions and head.fc1 materialized for all images.

    Shared by the sampling tests (read-mostly: tests that write use their own ids or results)."""
    torch.manual_seed(0)
    store = odinlab.open_store(f"memory://sampling-{uuid.uuid4().hex}", create=True)
    store.ingest(odinlab.datasets.digits())
    net = SmallCNN()
    fit(net, store, "train", epochs=2, progress=False)
    store.register_model(net, "cnn")
    store.materialize(net, ["head.fc1"], progress=False)
    return store, net
