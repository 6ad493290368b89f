"""The network the distributed tests run (the cluster is tests/conftest.py's ``client``)."""

import pytest
import torch


@pytest.fixture(scope="module")
def net():
    from odinlab.nets import SmallCNN

    torch.manual_seed(0)
    return SmallCNN(1, 10, width=8)
