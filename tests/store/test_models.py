import json

import pytest
import torch
from torch import nn

import odinlab
from odinlab.nets import SmallCNN


def test_register_creates_numbered_versions_with_lineage(tiny_store):
    v1 = tiny_store.register_model(SmallCNN(1, 3, width=4), "cnn")
    v2 = tiny_store.register_model(SmallCNN(1, 3, width=4), "cnn", parent=v1)
    v3 = tiny_store.register_model(SmallCNN(1, 3, width=4), "cnn", parent=v2)
    other = tiny_store.register_model(SmallCNN(1, 3, width=4), "cnn", parent=v1)
    assert (v1, v2, v3, other) == ("cnn@1", "cnn@2", "cnn@3", "cnn@4")
    assert tiny_store.ancestors(v3)["model_id"].to_list() == ["cnn@2", "cnn@1"]
    assert tiny_store.ancestors(v3)["depth"].to_list() == [1, 2]
    assert tiny_store.ancestors(v1).height == 0
    descendants = tiny_store.descendants(v1)
    assert sorted(descendants["model_id"].to_list()) == ["cnn@2", "cnn@3", "cnn@4"]
    assert dict(zip(descendants["model_id"], descendants["depth"])) == {"cnn@2": 1, "cnn@4": 1, "cnn@3": 2}
    assert tiny_store.resolve_model("cnn") == "cnn@4"


def test_architecture_lists_every_named_layer_with_output_shape_and_params(tiny_store):
    model_id = tiny_store.register_model(SmallCNN(1, 3, width=4), "cnn")
    arch = tiny_store.architecture(model_id)
    rows = {r["layer"]: r for r in arch.iter_rows(named=True)}
    assert list(rows) == [n for n, _ in SmallCNN(1, 3, width=4).named_modules() if n]
    assert rows["features.conv1"]["type"] == "Conv2d"
    assert rows["features.conv1"]["output_shape"] == [4, 8, 8]
    assert rows["features.conv1"]["num_params"] == 4 * 1 * 9 + 4
    assert rows["head.fc2"]["output_shape"] == [3]
    model_row = tiny_store.models.row(0, named=True)
    assert model_row["input_shape"] == [1, 8, 8] and model_row["classes"] == ["a", "b", "c"]
    assert model_row["num_params"] == sum(p.numel() for p in SmallCNN(1, 3, width=4).parameters())


def test_load_weights_restores_exact_tensors_into_a_fresh_module(tiny_store):
    trained = SmallCNN(1, 3, width=4)
    model_id = tiny_store.register_model(trained, "cnn")
    restored = tiny_store.load_weights(SmallCNN(1, 3, width=4), model_id)
    for key, value in trained.state_dict().items():
        assert torch.equal(restored.state_dict()[key], value)
    x = torch.rand(5, 1, 8, 8)
    assert torch.equal(restored.eval()(x), trained.eval()(x))


def test_frozen_layers_are_stored_once_by_content(tmp_path):
    store = odinlab.open_store(tmp_path / "s", create=True)
    v1_net = SmallCNN(1, 10, width=16)
    v1 = store.register_model(v1_net, "cnn", input_shape=(1, 8, 8))
    after_v1 = store.size_on_disk("weights")
    v2_net = store.load_weights(SmallCNN(1, 10, width=16), v1)
    v2_net.features.requires_grad_(False)
    with torch.no_grad():  # "fine-tune" only the head
        for p in v2_net.head.parameters():
            p.add_(0.01)
    store.register_model(v2_net, "cnn", parent=v1)
    added = store.size_on_disk("weights") - after_v1
    head_bytes = sum(p.numel() * 4 for p in v2_net.head.parameters())
    feature_bytes = sum(p.numel() * 4 for p in v2_net.features.parameters())
    assert added < head_bytes + 1024 * 4  # the head's tensors plus per-file headers
    assert added < after_v1 - feature_bytes + 1024
    assert store.models["new_weight_bytes"][1] == pytest.approx(added, rel=0.01)
    # Registering identical weights again adds nothing at all.
    store.register_model(v2_net, "cnn-copy", input_shape=(1, 8, 8))
    assert store.size_on_disk("weights") - after_v1 == added


def test_weights_are_safetensors_not_pickle(tmp_path):
    store = odinlab.open_store(tmp_path / "s", create=True)
    store.register_model(nn.Linear(4, 2), "lin", input_shape=(4,))
    files = list((tmp_path / "s" / "weights").rglob("*.safetensors"))
    assert len(files) == 2
    for file in files:
        header_len = int.from_bytes(file.read_bytes()[:8], "little")
        assert json.loads(file.read_bytes()[8 : 8 + header_len])["tensor"]["dtype"] == "F32"


def test_model_id_of_finds_the_version_by_its_weights(tiny_store):
    net = SmallCNN(1, 3, width=4)
    model_id = tiny_store.register_model(net, "cnn")
    assert tiny_store.model_id_of(net) == model_id
    with pytest.raises(odinlab.UnknownModelError, match="not registered"):
        tiny_store.model_id_of(SmallCNN(1, 3, width=4))


def test_unknown_model_lists_models_and_closest_match(tiny_store):
    tiny_store.register_model(SmallCNN(1, 3, width=4), "cnn")
    with pytest.raises(odinlab.UnknownModelError, match=r"Unknown model 'cnm'\. Did you mean: cnn.*Models: cnn@1"):
        tiny_store.resolve_model("cnm")
    with pytest.raises(KeyError):
        tiny_store.architecture("cnn@7")
    with pytest.raises(odinlab.UnknownModelError, match="cnn@9"):
        tiny_store.register_model(SmallCNN(1, 3, width=4), "cnn", parent="cnn@9")
    assert tiny_store.models.height == 1


def test_load_weights_into_a_different_architecture_is_refused(tiny_store):
    model_id = tiny_store.register_model(SmallCNN(1, 3, width=4), "cnn")
    with pytest.raises(odinlab.WeightsMismatchError, match=r"features\.conv1\.weight: stored \(4, 1, 3, 3\), module \(8, 1, 3, 3\)"):
        tiny_store.load_weights(SmallCNN(1, 3, width=8), model_id)


def test_input_shape_mismatch_is_refused_with_both_shapes(tiny_store):
    mlp_for_8x8 = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    with pytest.raises(odinlab.ImageFormatError, match=r"input of shape \(1, 3, 32, 32\)"):
        tiny_store.register_model(mlp_for_8x8, "mlp", input_shape=(3, 32, 32))
    assert tiny_store.models.height == 0


@pytest.mark.parametrize("name", ["../evil", "a/b", "..", ".hidden", "", "x" * 200, "name with space"])
def test_model_names_cannot_escape_the_store(tiny_store, name):
    with pytest.raises(odinlab.InvalidNameError, match="Invalid model name"):
        tiny_store.register_model(SmallCNN(1, 3, width=4), name)
    assert tiny_store.models.height == 0


def test_model_registered_in_one_process_loads_after_reopening(tmp_path):
    store = odinlab.open_store(tmp_path / "s", create=True)
    net = SmallCNN(1, 3, width=4)
    store.register_model(net, "cnn", input_shape=(1, 8, 8), hyperparams={"lr": 0.1})
    reopened = odinlab.open_store(tmp_path / "s", mode="r")
    assert json.loads(reopened.models["hyperparams"][0]) == {"lr": 0.1}
    restored = reopened.load_weights(SmallCNN(1, 3, width=4), "cnn")
    assert all(torch.equal(a, b) for a, b in zip(restored.state_dict().values(), net.state_dict().values()))


def test_an_existing_name_without_parent_is_refused_and_nothing_is_written(tiny_store):
    tiny_store.register_model(SmallCNN(1, 3, width=4), "cnn")
    weights = tiny_store.size_on_disk("weights")
    with pytest.raises(odinlab.LineageError, match=r"already a model named 'cnn' \(cnn@1\).*parent='cnn@1'.*new name"):
        tiny_store.register_model(SmallCNN(1, 3, width=4), "cnn")
    assert tiny_store.models.height == 1 and tiny_store.size_on_disk("weights") == weights
    assert tiny_store.register_model(SmallCNN(1, 3, width=4), "cnn", parent="cnn@1") == "cnn@2"
    assert tiny_store.register_model(SmallCNN(1, 3, width=4), "cnn-b") == "cnn-b@1"


def test_registering_a_version_s_exact_weights_again_gives_that_version(tiny_store):
    net = SmallCNN(1, 3, width=4)
    v1 = tiny_store.register_model(net, "cnn", hyperparams={"lr": 0.1})
    fresh = tiny_store.load_weights(SmallCNN(1, 3, width=4), v1)
    assert tiny_store.register_model(fresh, "cnn") == v1  # re-running a notebook cell
    assert tiny_store.register_model(fresh, "cnn", hyperparams={"lr": 0.1}, input_shape=(1, 8, 8)) == v1
    with pytest.raises(odinlab.LineageError, match="parent='cnn@1'"):  # same weights, other settings
        tiny_store.register_model(fresh, "cnn", hyperparams={"lr": 0.5})
    assert tiny_store.models["model_id"].to_list() == ["cnn@1"]
