"""A real dask.distributed cluster (two worker processes, one thread each) shared by the module's tests."""

import pytest
import torch


@pytest.fixture(scope="package")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as connected:
        connected.run(torch.set_num_threads, 1)
        yield connected


@pytest.fixture(scope="package")
def net():
    from odinlab.nets import SmallCNN

    torch.manual_seed(0)
    return SmallCNN(1, 10, width=8)
