"""A real dask.distributed cluster (two worker processes, one thread each) for each test module.

Module scope, not package: tests/parallel is no package, so a package-scoped client would live for the
whole session and stay Dask's default scheduler for every later test."""

import pytest
import torch


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as connected:
        connected.run(torch.set_num_threads, 1)
        yield connected


@pytest.fixture(scope="module")
def net():
    from odinlab.nets import SmallCNN

    torch.manual_seed(0)
    return SmallCNN(1, 10, width=8)
