"""Doctest namespace: the docstring examples run against a small real store."""

import uuid

import numpy as np
import polars as pl
import pytest
import torch
from torch import nn

import odinlab
from odinlab.nets import SmallCNN
from odinlab.training import fit

torch.set_num_threads(1)  # tiny doctest models: one thread is fastest and plays well with others


@pytest.fixture(autouse=True)
def _doctest_namespace(request, doctest_namespace):
    if not isinstance(request.node, pytest.DoctestItem):
        return
    torch.manual_seed(0)
    store = odinlab.open_store(f"memory://doctest-{uuid.uuid4().hex}", create=True)
    store.ingest(odinlab.datasets.digits())
    net = SmallCNN()
    fit(net, store, "train", epochs=2, progress=False)
    store.register_model(net, "cnn", hyperparams={"lr": 0.01, "epochs": 2})
    doctest_namespace.update(odinlab=odinlab, np=np, pl=pl, torch=torch, nn=nn,
                             SmallCNN=SmallCNN, fit=fit, store=store, net=net)


def pytest_ignore_collect(collection_path, config):
    """conftest.py files hold fixtures, not doctests: collecting them as modules (--doctest-modules)
    imports each under the one name 'conftest', and two folders' conftests then clash."""
    if collection_path.name == "conftest.py":
        return True
    return None
