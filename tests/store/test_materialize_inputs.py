"""Bad arguments to materialize and evaluate are refused before anything is written."""

import pytest

import odinlab
from odinlab.nets import SmallCNN


@pytest.fixture
def registered(tiny_store):
    net = SmallCNN(1, 3, width=4)
    tiny_store.register_model(net, "cnn")
    return tiny_store, net


def test_a_layer_given_as_a_string_is_one_layer(registered):
    store, net = registered
    report = store.materialize(net, "head.fc1", "val", progress=False)
    assert report["array"].to_list() == ["predictions", "head.fc1/float16"]


@pytest.mark.parametrize("options, match", [
    ({"batch_size": 0}, "batch_size must be a positive int or 'auto', not 0"),
    ({"batch_size": -3}, "batch_size must be a positive int"),
    ({"batch_size": 2.5}, "batch_size must be a positive int"),
    ({"batch_size": True}, "batch_size must be a positive int"),
    ({"memory_budget": "lots"}, "memory_budget must be a positive size such as '2GB'.*not 'lots'"),
    ({"memory_budget": 0}, "memory_budget must be a positive size"),
    ({"memory_budget": "-1GB"}, "memory_budget must be a positive size"),
    ({"memory_budget": None}, "memory_budget must be a positive size"),
    ({"memory_budget": "lots", "batch_size": 10}, "memory_budget must be a positive size"),
    ({"pool": "x"}, "pool must be None, a positive int"),
    ({"pool": {"features.conv2": 0}}, "pool must be None, a positive int"),
])
def test_bad_options_are_refused_with_nothing_written(registered, options, match):
    store, net = registered
    before = store.size_on_disk("arrays")
    with pytest.raises(odinlab.OptionError, match=match):
        store.materialize(net, ["features.conv2"], "val", progress=False, **options)
    assert store.materialized().height == 0 and store.size_on_disk("arrays") == before


@pytest.mark.parametrize("batch_size", [0, -1, "auto", None])
def test_evaluate_refuses_a_bad_batch_size_and_records_nothing(registered, batch_size):
    store, net = registered
    with pytest.raises(odinlab.OptionError, match="batch_size must be a positive int"):
        store.evaluate(net, "val", batch_size=batch_size)
    assert store.experiments.height == 0
