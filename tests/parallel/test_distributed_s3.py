"""A store on S3 (moto's server on 127.0.0.1) computed on a Dask cluster: the same results as a local folder.

The cluster is started inside the server's context: its worker processes inherit the
environment that points boto at the server (credentials never travel in the store).
"""

import numpy as np
import pytest
import torch

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

import odinlab  # noqa: E402
from odinlab.debug.attribution import Attributor  # noqa: E402
from odinlab.debug.gradients import GradientStore  # noqa: E402
from tests.s3server import moto_s3  # noqa: E402

LAYERS = ["features.conv2", "head.fc1"]


@pytest.fixture(scope="module")
def s3_client():
    from distributed import Client, LocalCluster

    with moto_s3() as s3, LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=":0") as cluster, Client(cluster) as client:
        client.run(torch.set_num_threads, 1)
        yield s3, client


def _pair(s3, tmp_path, net):
    made = []
    for where in (s3.url("cluster"), tmp_path / "local"):
        store = odinlab.open_store(where, create=True)
        store.ingest(odinlab.datasets.digits())
        store.register_model(net, "cnn")
        made.append(store)
    return made


def test_materialize_attribute_and_capture_on_a_cluster_over_s3_equal_a_local_folder(s3_client, tmp_path, net):
    s3, client = s3_client
    on_s3, local = _pair(s3, tmp_path, net)
    with odinlab.parallel(client):
        report = on_s3.materialize("cnn@1", LAYERS, dtype="uint8", progress=False)
        maps = Attributor(on_s3, "cnn@1", "integrated_gradients", n_steps=8).attribute("test", progress=False)
        grads = GradientStore(on_s3, "cnn@1", ["head.fc2"]).capture("val", progress=False)
    assert report["computed"].to_list() == [1797] * 3 and grads["computed"].to_list() == [269]
    local.materialize("cnn@1", LAYERS, dtype="uint8", progress=False)
    reopened = odinlab.open_store(on_s3.url, mode="r")  # what another reader of the bucket sees
    for layer in LAYERS:
        np.testing.assert_array_equal(reopened.activations("cnn@1", layer).values,
                                      local.activations("cnn@1", layer).values)
    np.testing.assert_array_equal(np.stack(reopened.predictions("cnn@1")["probabilities"].to_numpy()),
                                  np.stack(local.predictions("cnn@1")["probabilities"].to_numpy()))
    expected = Attributor(local, "cnn@1", "integrated_gradients", n_steps=8).attribute("test", progress=False)
    np.testing.assert_allclose(maps.values, expected.values, atol=1e-6 * float(np.abs(expected.values).max()))
    GradientStore(local, "cnn@1", ["head.fc2"]).capture("val", progress=False)
    np.testing.assert_allclose(GradientStore(reopened, "cnn@1", ["head.fc2"]).norms("val").values,
                               GradientStore(local, "cnn@1", ["head.fc2"]).norms("val").values, rtol=1e-6)
    assert reopened.verify().height == 0  # every chunk the workers wrote is whole and checksummed
