"""A module given with a model id must be that version: results are never stored under another's name."""

import copy

import pytest
import torch
from torch import nn

import odinlab
import odinlab.store.models as models_module
from odinlab.nets import SmallCNN


@pytest.fixture
def registered(tiny_store):
    net = SmallCNN(1, 3, width=4)
    tiny_store.register_model(net, "cnn")
    return tiny_store, net


def _refused(store, module, match, model_id="cnn@1"):
    """Every entry point that takes a module and a model id refuses it, and writes nothing."""
    before = (store.materialized(), store.experiments.height, store.size_on_disk("arrays"))
    with pytest.raises(odinlab.WeightsMismatchError, match=match):
        store.materialize(module, ["head.fc1"], "val", model_id=model_id, progress=False)
    with pytest.raises(odinlab.WeightsMismatchError, match=match):
        store.evaluate(module, "val", model_id=model_id)
    with pytest.raises(odinlab.WeightsMismatchError, match=match):
        store.activations(model_id, "head.fc1", "val", module=module)
    with pytest.raises(odinlab.WeightsMismatchError, match=match):
        store.activations(model_id, "head.fc1", "val", module=module, store=False)
    after = (store.materialized(), store.experiments.height, store.size_on_disk("arrays"))
    assert after[0].equals(before[0]) and after[1:] == before[1:]


def test_a_module_with_other_weights_is_refused_and_told_how_to_register(registered):
    store, _ = registered
    _refused(store, SmallCNN(1, 3, width=4),
             r"not hold the weights of cnn@1: they match no registered version.*parent='cnn@1'")


def test_a_module_holding_another_version_is_refused_naming_that_version(registered):
    store, net = registered
    v2_net = copy.deepcopy(net)
    with torch.no_grad():
        v2_net.head.fc2.bias.add_(1.0)
    store.register_model(v2_net, "cnn", parent="cnn@1")
    _refused(store, v2_net, r"its weights are those of cnn@2, not cnn@1")
    # The other way round too: cnn@1's module is not cnn@2.
    with pytest.raises(odinlab.WeightsMismatchError, match=r"those of cnn@1, not cnn@2"):
        store.materialize(net, model_id="cnn@2", progress=False)


def test_another_architecture_is_refused_with_the_differing_shapes(registered):
    store, _ = registered
    _refused(store, SmallCNN(1, 3, width=8),
             r"architecture differs.*features\.conv1\.weight: stored \(4, 1, 3, 3\), module \(8, 1, 3, 3\)")


def test_a_wider_output_is_refused_not_cut_to_the_version_s_classes(registered):
    store, _ = registered
    _refused(store, SmallCNN(1, 5, width=4), r"head\.fc2\.bias: stored \(3,\), module \(5,\)")


def test_same_tensors_with_other_layer_types_are_refused(registered):
    store, net = registered
    other = copy.deepcopy(net)
    other.features.relu1 = nn.GELU()  # no parameters: the weights digest alone cannot tell
    _refused(store, other, r"features\.relu1: ReLU registered, GELU here")


def test_a_module_changed_in_place_after_registering_is_refused(registered):
    store, net = registered
    store.materialize(net, ["head.fc1"], "train", model_id="cnn@1", progress=False)
    with torch.no_grad():  # "one more epoch" in place: no longer cnn@1
        net.head.fc1.weight.mul_(1.5)
    _refused(store, net, r"match no registered version")


def test_the_right_module_is_accepted_and_checked_once_while_it_is_unchanged(registered, monkeypatch):
    store, net = registered
    same = copy.deepcopy(net)  # cnn@1's weights, not yet known to the store
    hashed = []
    real = models_module._weights_of
    monkeypatch.setattr(models_module, "_weights_of", lambda m: hashed.append(1) or real(m))
    report = store.materialize(same, ["head.fc1"], "val", model_id="cnn@1", progress=False)
    assert dict(zip(report["array"], report["computed"])) == {"predictions": 20, "head.fc1/float16": 20}
    for _ in range(3):  # repeated calls reuse the fingerprint: no hashing
        store.materialize(same, ["head.fc1"], "test", model_id="cnn@1", progress=False)
        store.activations("cnn@1", "head.fc1", "train", module=same)
        store.evaluate(same, "val", model_id="cnn@1")
    assert len(hashed) == 1
    assert store.materialized("cnn@1")["images"].to_list() == [60, 60]


def test_a_module_loaded_with_a_version_s_weights_is_that_version(registered):
    store, _ = registered
    v2 = store.register_model(SmallCNN(1, 3, width=4), "cnn", parent="cnn@1")
    loaded = store.load_weights(SmallCNN(1, 3, width=4), v2)
    assert store.evaluate(loaded, "val", model_id=v2)["model_id"][0] == "cnn@2"
    assert store.materialize(loaded, model_id=v2, progress=False)["computed"][0] == 60
