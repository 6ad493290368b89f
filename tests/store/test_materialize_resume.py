"""Materialization killed halfway resumes where it stopped, with the same result."""

import textwrap

import numpy as np
import torch

import odinlab
from odinlab.nets import SmallCNN

LAYERS = ["features.relu1", "features.relu2", "head.fc1"]
CHILD = textwrap.dedent("""
    import sys, time
    import odinlab
    from odinlab.nets import SmallCNN

    store = odinlab.open_store(sys.argv[1], create=True)
    net = store.load_weights(SmallCNN(1, 10, width=4), "cnn@1")
    batches = []
    def stall_after_five(module, inputs):
        batches.append(1)
        if len(batches) == 6:  # five batches ran; the fifth may still be in the writer thread
            print("stalled", flush=True)
            time.sleep(120)
    net.register_forward_pre_hook(stall_after_five)
    store.materialize(net, %r, dtype="uint8", batch_size=100, progress=False)
""" % LAYERS)


def _make_store(path):
    torch.manual_seed(0)
    store = odinlab.open_store(path, create=True)
    store.ingest(odinlab.datasets.digits())
    net = SmallCNN(1, 10, width=4)
    store.register_model(net, "cnn")
    return store, net


def test_killed_materialize_resumes_missing_batches_only_with_identical_result(tmp_path, stall_then_kill):
    store, net = _make_store(tmp_path / "interrupted")
    stall_then_kill(CHILD, tmp_path / "interrupted")

    resumed = odinlab.open_store(tmp_path / "interrupted", create=True)
    done = resumed.materialized("cnn@1")["images"].to_list()
    assert done in ([400] * 4, [500] * 4)  # whole committed batches survived the kill, nothing torn
    report = resumed.materialize(net, LAYERS, dtype="uint8", batch_size=100, progress=False)
    assert report["computed"].to_list() == [1797 - done[0]] * 4

    clean, clean_net = _make_store(tmp_path / "clean")
    clean.materialize(clean_net, LAYERS, dtype="uint8", batch_size=100, progress=False)
    for layer in LAYERS:
        np.testing.assert_array_equal(resumed.activations("cnn@1", layer), clean.activations("cnn@1", layer))
    a, b = resumed.predictions("cnn@1"), clean.predictions("cnn@1")
    assert a.select("image_id", "predicted", "loss").equals(b.select("image_id", "predicted", "loss"))
