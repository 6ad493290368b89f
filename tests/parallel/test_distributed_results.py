"""Materialize, attribution and gradient capture on a Dask cluster give what a local run gives."""

import numpy as np
import pytest
import torch

import odinlab
from odinlab.debug.attribution import Attributor
from odinlab.debug.gradients import GradientStore
from odinlab.parallel.skeleton import pack

LAYERS = ["features.conv2", "head.fc1"]


def _twin_stores(tmp_path, net):
    """Two folder stores with the same images and version: one computed on the cluster, one locally."""
    stores = []
    for name in ("cluster", "local"):
        store = odinlab.open_store(tmp_path / name, create=True)
        store.ingest(odinlab.datasets.digits())
        store.register_model(net, "cnn")
        stores.append(store)
    return stores


@pytest.mark.parametrize("dtype, pool", [("float32", None), ("float16", None), ("uint8", 2)])
def test_materialize_on_a_cluster_stores_exactly_what_a_local_run_stores(tmp_path, net, client, dtype, pool):
    on_cluster, local = _twin_stores(tmp_path, net)
    report = on_cluster.materialize("cnn@1", LAYERS, dtype=dtype, pool=pool, scheduler=client, progress=False)
    local.materialize("cnn@1", LAYERS, dtype=dtype, pool=pool, progress=False)
    assert report["computed"].to_list() == [1797, 1797, 1797]
    for layer in LAYERS:
        k = pool if layer == "features.conv2" else None  # only convolutional maps are pooled
        a = on_cluster.activations("cnn@1", layer, dtype=dtype, pool=k)
        b = local.activations("cnn@1", layer, dtype=dtype, pool=k)
        np.testing.assert_array_equal(a.values, b.values)
    a, b = on_cluster.predictions("cnn@1"), local.predictions("cnn@1")
    np.testing.assert_array_equal(np.stack(a["probabilities"].to_numpy()), np.stack(b["probabilities"].to_numpy()))
    np.testing.assert_array_equal(a["loss"].to_numpy(), b["loss"].to_numpy())
    assert on_cluster.materialized("cnn@1")["mean_relative_error"].to_list() == \
        local.materialized("cnn@1")["mean_relative_error"].to_list()


def test_a_second_run_on_the_cluster_computes_only_what_is_missing(tmp_path, net, client):
    store, _ = _twin_stores(tmp_path, net)
    store.materialize("cnn@1", ["head.fc1"], "val", progress=False)  # locally, first
    with odinlab.parallel(client):
        report = store.materialize("cnn@1", ["head.fc1", "features.conv2"], progress=False)
        again = store.materialize("cnn@1", ["head.fc1", "features.conv2"], progress=False)
    assert report["computed"].to_list() == [1797 - 269, 1797 - 269, 1797]
    assert again["computed"].to_list() == [0, 0, 0]


def test_the_cluster_reports_progress_like_a_local_run(tmp_path, net, client, capsys):
    store, _ = _twin_stores(tmp_path, net)
    store.materialize("cnn@1", ["head.fc1"], scheduler=client)
    err = capsys.readouterr().err
    assert "materialize cnn@1 on 2 workers" in err and "1797/1797" in err


@pytest.mark.parametrize("method, kwargs", [("integrated_gradients", {"n_steps": 16}), ("saliency", {})])
def test_attributions_on_a_cluster_equal_a_local_run(tmp_path, net, client, method, kwargs):
    on_cluster, local = _twin_stores(tmp_path, net)
    a = Attributor(on_cluster, "cnn@1", method, **kwargs).attribute(scheduler=client, progress=False)
    b = Attributor(local, "cnn@1", method, **kwargs).attribute(progress=False)
    np.testing.assert_allclose(a.values, b.values, rtol=0, atol=1e-6 * float(np.abs(b.values).max()))
    if method == "integrated_gradients":
        np.testing.assert_allclose(Attributor(on_cluster, "cnn@1", method, **kwargs).deltas(progress=False).values,
                                   Attributor(local, "cnn@1", method, **kwargs).deltas(progress=False).values,
                                   atol=1e-6)


def test_gradient_capture_on_a_cluster_equals_a_local_capture(tmp_path, net, client):
    on_cluster, local = _twin_stores(tmp_path, net)
    layers = ["features.conv1", "head.fc2"]  # one kept full, one compact
    report = GradientStore(on_cluster, "cnn@1", layers).capture(scheduler=client, progress=False)
    GradientStore(local, "cnn@1", layers).capture(progress=False)
    assert report["computed"].to_list() == [1797, 1797]
    a, b = GradientStore(on_cluster, "cnn@1", layers), GradientStore(local, "cnn@1", layers)
    np.testing.assert_allclose(a.similarity("val").values, b.similarity("val").values, rtol=1e-6)
    for layer in layers:
        for key, value in a.restore(layer, "test").items():
            torch.testing.assert_close(value, b.restore(layer, "test")[key])


def test_workers_get_the_network_as_code_and_load_its_weights_from_the_store(tmp_path, client):
    class Widened(torch.nn.Module):  # defined here: it can only reach the workers as code
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(64, 10)

        def forward(self, x):
            return self.fc(x.flatten(1))

    torch.manual_seed(3)
    net = Widened()
    store = odinlab.open_store(tmp_path / "s", create=True)
    store.ingest(odinlab.datasets.digits())
    store.register_model(net, "flat")
    weights = sum(t.numel() * t.element_size() for t in net.state_dict().values())
    assert len(pack(net)) < weights  # the skeleton holds no weights
    store.materialize("flat@1", ["fc"], dtype="float32", scheduler=client, progress=False)
    x = torch.from_numpy(store.model_input(store.select())).float()
    np.testing.assert_allclose(store.activations("flat@1", "fc").values, net(x).detach().numpy(), atol=1e-5)


def test_a_scheduler_that_is_not_a_dask_client_is_refused_with_what_to_pass(tmp_path, net):
    store, _ = _twin_stores(tmp_path, net)
    with pytest.raises(odinlab.OptionError, match="scheduler must be a dask.distributed Client"):
        store.materialize("cnn@1", ["head.fc1"], scheduler="threads", progress=False)
    assert store.materialized("cnn@1").height == 0  # refused before anything was created


def test_stored_gradients_pass_the_store_check(tmp_path, net, client):
    store, local = _twin_stores(tmp_path, net)
    GradientStore(store, "cnn@1", ["head.fc2"]).capture("val", scheduler=client, progress=False)
    GradientStore(local, "cnn@1", ["head.fc2"]).capture("val", progress=False)
    assert store.verify().height == 0 and local.verify().height == 0  # each array's columns are whole
