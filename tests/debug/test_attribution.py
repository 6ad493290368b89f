"""Attribution: every method on a small trained CNN, caching, targets, overlays and aggregates."""

import pathlib
import re
import uuid
import warnings

import captum.attr
import numpy as np
import polars as pl
import pytest
import torch

import odinlab
from odinlab.debug.attribution import (
    Attributor,
    RegionError,
    TargetError,
    UnknownMethodError,
    mean_by_confusion,
    methods,
    share_inside,
)
from odinlab.draw.attribution import attribution_grid
from odinlab.draw.images import overlay
from odinlab.errors import (
    LabelError,
    NotMaterializedError,
    OptionError,
    UnknownColumnError,
    UnknownImageError,
    UnknownLayerError,
)
from odinlab.nets import SmallCNN
from odinlab.training import fit


@pytest.fixture(scope="module")
def digits():
    """Digits with a SmallCNN trained for a few epochs (val accuracy ~0.9), registered as cnn@1."""
    torch.manual_seed(0)
    store = odinlab.open_store(f"memory://attr-{uuid.uuid4().hex}", create=True)
    store.ingest(odinlab.datasets.digits())
    net = SmallCNN(1, 10, width=8)
    fit(net, store, "train", epochs=4, progress=False)
    store.register_model(net, "cnn")
    return store, net


@pytest.fixture
def ids(digits):
    return digits[0].select("val")["image_id"].head(12).to_list()


def _count_forwards(net):
    calls = []
    handle = net.register_forward_pre_hook(lambda module, inputs: calls.append(len(inputs[0])))
    return calls, handle


def _logits(net, x):
    with torch.no_grad():
        return net.eval()(torch.tensor(x))


METHODS = [("integrated_gradients", {"n_steps": 8}, None), ("saliency", {}, None), ("input_x_gradient", {}, None),
           ("gradient_shap", {"n_samples": 4}, None), ("deeplift", {}, None), ("occlusion", {}, None),
           ("layer_gradcam", {}, None), ("guided_backprop", {}, None), ("saliency", {}, "smoothgrad"),
           ("integrated_gradients", {"n_steps": 4}, {"nt_type": "vargrad", "nt_samples": 3}),
           ("layer_gradcam", {}, "smoothgrad_sq")]


@pytest.mark.parametrize(("method", "kwargs", "tunnel"), METHODS)
def test_every_method_returns_one_map_per_image_in_input_space(digits, ids, method, kwargs, tunnel):
    store, _ = digits
    attr = Attributor(store, "cnn@1", method=method, noise_tunnel=tunnel, **kwargs)
    maps = attr.attribute(ids[:6], target="label", progress=False)
    channels = 1  # digits have one channel, and layer maps are summed over channels
    assert maps.shape == (6, channels, 8, 8) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and np.abs(maps).sum(axis=(1, 2, 3)).min() > 0
    if method in ("integrated_gradients", "gradient_shap", "deeplift"):
        assert np.isfinite(attr.deltas(ids[:6], progress=False)).all()


def test_method_names_captum_class_names_and_classes_are_the_same_method(digits, ids):
    store, net = digits
    by_name = Attributor(store, net, method="integrated_gradients", n_steps=8)
    by_class_name = Attributor(store, net, method="IntegratedGradients", n_steps=8)
    by_class = Attributor(store, net, method=captum.attr.IntegratedGradients, n_steps=8)
    assert by_name.cache_key() == by_class_name.cache_key() == by_class.cache_key()
    assert Attributor(store, net, method="gradcam").method == "layer_gradcam"
    assert {"integrated_gradients", "saliency", "input_x_gradient", "gradient_shap", "deeplift", "occlusion",
            "layer_gradcam"} <= set(methods())


def test_integrated_gradients_are_complete_and_report_small_deltas(digits, ids):
    store, net = digits
    attr = Attributor(store, net, method="integrated_gradients", n_steps=64)
    maps = attr.attribute(ids, target="label", progress=False)
    x = store.pixels(ids).astype(np.float32) / 255
    labels = store.select(ids)["label"].to_numpy()
    gap = (_logits(net, x) - _logits(net, np.zeros_like(x))).numpy()[np.arange(len(ids)), labels]
    np.testing.assert_allclose(maps.sum(axis=(1, 2, 3)), gap, rtol=0.02, atol=0.02)
    deltas = attr.deltas(ids, progress=False)
    assert deltas.shape == (len(ids),) and np.abs(deltas).max() < 0.02 * max(1.0, np.abs(gap).max())


def test_deeplift_sums_to_the_output_difference_too(digits, ids):
    store, net = digits
    attr = Attributor(store, net, method="deeplift")
    maps = attr.attribute(ids, target="prediction", progress=False)
    x = store.pixels(ids).astype(np.float32) / 255
    logits = _logits(net, x)
    gap = (logits - _logits(net, np.zeros_like(x))).numpy()[np.arange(len(ids)), logits.argmax(1).numpy()]
    np.testing.assert_allclose(maps.sum(axis=(1, 2, 3)), gap, rtol=0.01, atol=0.01)
    assert np.abs(attr.deltas(ids, target="prediction", progress=False)).max() < 1e-3


def test_saliency_is_the_absolute_input_gradient(digits, ids):
    store, net = digits
    maps = Attributor(store, net, method="saliency").attribute(ids, target=3, progress=False)
    x = torch.from_numpy(store.pixels(ids).astype(np.float32) / 255).requires_grad_(True)
    net(x)[:, 3].sum().backward()
    expected = x.grad.abs().numpy()
    scale = expected.reshape(len(ids), -1).max(axis=1)[:, None, None, None]
    np.testing.assert_allclose(maps, expected, atol=2e-3 * scale.max(), rtol=2e-3)  # float16, scaled per image


def test_a_second_call_is_a_read_that_runs_no_model_and_returns_the_same_arrays(digits, ids):
    store, net = digits
    attr = Attributor(store, net, method="integrated_gradients", n_steps=10)
    first = attr.attribute(ids, target="prediction", progress=False)
    calls, handle = _count_forwards(net)
    try:
        again = Attributor(store, "cnn@1", method="integrated_gradients", n_steps=10)
        second = again.attribute(ids[::-1], target="prediction", progress=False)
        deltas = again.deltas(ids, target="prediction", progress=False)
    finally:
        handle.remove()
    assert calls == []
    np.testing.assert_array_equal(second, first[::-1])
    assert np.isfinite(deltas).all()


def test_a_bigger_selection_computes_only_the_new_images(digits):
    store, net = digits
    val = store.select("val")["image_id"].to_list()
    attr = Attributor(store, net, method="saliency")
    attr.attribute(val[20:30], target="label", progress=False)
    calls, handle = _count_forwards(net)
    try:
        maps = attr.attribute(val[20:45], target="label", batch_size=8, progress=False)
    finally:
        handle.remove()
    assert sum(calls) == 15 and max(calls) <= 8 and maps.shape[0] == 25


def test_settings_that_change_the_maps_are_kept_apart(digits, ids):
    store, net = digits
    coarse = Attributor(store, net, method="integrated_gradients", n_steps=4).attribute(ids, progress=False)
    fine = Attributor(store, net, method="integrated_gradients", n_steps=32).attribute(ids, progress=False)
    mean = Attributor(store, net, method="integrated_gradients", n_steps=4).attribute(ids, baselines="mean",
                                                                                     progress=False)
    assert not np.array_equal(coarse, fine) and not np.array_equal(coarse, mean)
    # internal_batch_size only trades memory for speed: same stored maps, nothing recomputed.
    calls, handle = _count_forwards(net)
    try:
        Attributor(store, net, method="integrated_gradients", n_steps=4, internal_batch_size=7).attribute(
            ids, progress=False)
    finally:
        handle.remove()
    assert calls == []


def test_baselines_are_settable_and_checked(digits, ids):
    store, net = digits
    attr = Attributor(store, net, method="integrated_gradients", n_steps=32)
    half = attr.attribute(ids[:4], target="label", baselines=0.5, progress=False)
    same = attr.attribute(ids[:4], target="label", baselines=np.full((1, 8, 8), 0.5, np.float32), progress=False)
    np.testing.assert_allclose(half, same, atol=1e-6)
    x = store.pixels(ids[:4]).astype(np.float32) / 255
    labels = store.select(ids[:4])["label"].to_numpy()
    gap = (_logits(net, x) - _logits(net, np.full_like(x, 0.5))).numpy()[np.arange(4), labels]
    np.testing.assert_allclose(half.sum(axis=(1, 2, 3)), gap, rtol=0.03, atol=0.03)
    with pytest.raises(OptionError, match="one baseline, not a distribution"):
        attr.attribute(ids[:4], baselines=np.zeros((3, 1, 8, 8)), progress=False)
    with pytest.raises(OptionError, match="takes no baselines"):
        Attributor(store, net, method="saliency").attribute(ids[:4], baselines="zeros", progress=False)
    shap = Attributor(store, net, method="gradient_shap")
    assert shap.cache_key()["baselines"]["kind"] == "zeros+mean"


def test_targets_label_prediction_class_index_and_class_name(digits):
    store, net = digits
    attr = Attributor(store, net, method="saliency")
    frame = attr.predictions("val")
    right = frame.filter(pl.col("label") == pl.col("predicted"))["image_id"].head(6).to_list()
    wrong = frame.filter(pl.col("label") != pl.col("predicted"))["image_id"].head(4).to_list()
    chosen = right + wrong
    by_label = attr.attribute(chosen, target="label", progress=False)
    by_prediction = attr.attribute(chosen, target="prediction", progress=False)
    np.testing.assert_allclose(by_label[:6], by_prediction[:6], rtol=1e-5)
    assert all(not np.array_equal(a, b) for a, b in zip(by_label[6:], by_prediction[6:]))
    label = int(store.select(chosen[0])["label"][0])
    single = attr.attribute(chosen[:1], target=label, progress=False)
    np.testing.assert_allclose(single, by_label[:1], rtol=1e-5)  # another batch: float rounding only
    np.testing.assert_array_equal(attr.attribute(chosen[:1], target=str(label), progress=False), single)
    other = attr.attribute(chosen[:1], target=(label + 1) % 10, progress=False)
    assert not np.array_equal(other, single)


def test_layer_gradcam_defaults_to_the_last_conv_and_takes_any_conv_layer(digits, ids):
    store, net = digits
    attr = Attributor(store, net, method="layer_gradcam")
    assert attr.layer == "features.conv2"
    first = Attributor(store, net, method="layer_gradcam", layer="features.conv1")
    by_module = Attributor(store, net, method="layer_gradcam", layer=net.features.conv1)
    assert first.cache_key() == by_module.cache_key() != attr.cache_key()
    assert first.attribute(ids[:3], progress=False).shape == (3, 1, 8, 8)


def test_the_model_mode_is_restored(digits, ids):
    store, net = digits
    net.train()
    try:
        Attributor(store, net, method="deeplift").attribute(ids[:3], target="prediction", progress=False)
        assert net.training
    finally:
        net.eval()


def test_overlay_is_an_rgb_image_that_keeps_the_image_where_the_map_is_zero():
    image = np.full((1, 8, 8), 100, np.uint8)
    heat = np.zeros((1, 8, 8), np.float32)
    heat[0, 2, 2], heat[0, 5, 5] = 1.0, -1.0
    out = overlay(image, heat, alpha=0.8)
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    assert (out[0, 0] == 100).all()
    assert out[2, 2, 0] > out[2, 2, 2] and out[5, 5, 2] > out[5, 5, 0]  # red for, blue against
    assert overlay(np.zeros((3, 8, 8), np.float32), np.abs(heat), sign="absolute", cmap="hot").shape == (8, 8, 3)
    with pytest.raises(ValueError, match="colour map"):
        overlay(image, heat, cmap="no-such-map")


def test_attribution_grid_draws_the_maps_with_their_predictions(digits, ids):
    store, net = digits
    attr = Attributor(store, net, method="saliency")
    maps = attr.attribute(ids[:5], progress=False)
    fig = attribution_grid(maps, store=store, captions=attr.predictions(ids[:5]), columns=2)
    assert len(fig.data) == 10 and all(trace.type == "image" for trace in fig.data)
    titles = [a.text for a in fig.layout.annotations]
    assert ids[0] in titles[0] and "label" in titles[0] and "pred" in titles[0]
    assert fig.layout.title.text == "saliency of cnn@1, target: prediction"
    np.testing.assert_allclose(fig.data[1].customdata, maps.values[0].sum(axis=0), rtol=1e-6)


def test_mean_by_confusion_averages_the_maps_of_each_cell(digits):
    store, net = digits
    attr = Attributor(store, net, method="input_x_gradient")
    cells = mean_by_confusion(attr, "val", progress=False)
    frame = attr.predictions("val")
    maps = attr.attribute("val", target="prediction", progress=False)
    assert cells.columns == ["label", "label_name", "predicted", "predicted_name", "correct", "count",
                             "image_ids", "mean", "mean_abs"]
    assert cells["count"].sum() == frame.height
    assert (cells.filter(pl.col("correct"))["count"].sum() == (frame["label"] == frame["predicted"]).sum())
    for cell in cells.head(3).iter_rows(named=True):
        picked = ((frame["label"] == cell["label"]) & (frame["predicted"] == cell["predicted"])).to_numpy()
        assert cell["count"] == picked.sum() == len(cell["image_ids"])
        assert cell["image_ids"] == frame["image_id"].filter(picked).to_list()
        assert cell["label_name"] == store.classes[cell["label"]]
        np.testing.assert_allclose(np.asarray(cell["mean"]), maps.values[picked].mean(axis=0), rtol=1e-5,
                                   atol=1e-6)
    calls, handle = _count_forwards(net)
    try:
        assert mean_by_confusion(attr, "val", progress=False).equals(cells)
    finally:
        handle.remove()
    assert calls == []


@pytest.fixture(scope="module")
def spurious():
    """Shapes where every image of class 0 carries a white box in its corner, and a model that uses it."""
    torch.manual_seed(0)
    data = odinlab.datasets.shapes(n=600, size=16, spurious_class=0, spurious_rate=1.0)
    store = odinlab.open_store(f"memory://attr-shapes-{uuid.uuid4().hex}", create=True)
    store.ingest(data)
    net = SmallCNN(3, 5, width=8)
    fit(net, store, "train", epochs=6, progress=False)
    store.register_model(net, "shapes")
    return store, net, data


def test_share_inside_finds_the_spurious_cue(spurious):
    store, net, data = spurious
    top, left, height, width = data.cue_box
    cue_images = [i for i, s, split in zip(data.ids, data.spurious, data.split) if s and split == "val"]
    attr = Attributor(store, net, method="input_x_gradient")
    cue = share_inside(attr, cue_images, box=data.cue_box, by=None, progress=False)
    assert cue.per_image["image_id"].to_list() == cue_images
    assert cue.summary["count"].to_list() == [len(cue_images)]
    assert cue.per_image.height == len(cue_images) and cue.per_image["area"][0] == pytest.approx(height * width / 256)
    assert cue.summary["lift"][0] > 3 and cue.summary["above_area"][0] > 0.9
    rng = np.random.default_rng(0)
    boxes = [(int(t), int(left_), height, width) for t, left_ in rng.integers(top + height, 16 - height, (5, 2))]
    elsewhere = [share_inside(attr, cue_images, box=box, by=None).summary["mean_share"][0] for box in boxes]
    assert cue.summary["mean_share"][0] > 3 * max(elsewhere)  # random boxes of the same size, away from the cue
    mask = np.zeros((16, 16), bool)
    mask[top : top + height, left : left + width] = True
    np.testing.assert_allclose(share_inside(attr, cue_images, mask=mask).per_image["share"], cue.per_image["share"])
    grouped = share_inside(attr, "val", box=data.cue_box, progress=False).summary  # by="label" by default
    assert grouped.columns[:3] == ["label", "label_name", "count"]
    lift = dict(zip(grouped["label"].to_list(), grouped["lift"].to_list()))
    assert lift[0] > max(v for k, v in lift.items() if k != 0)
    overall = share_inside(attr, "val", box=data.cue_box, by=None, progress=False).summary
    assert overall.height == 1 and overall["count"][0] == grouped["count"].sum()
    by_prediction = share_inside(attr, "val", box=data.cue_box, by="predicted", progress=False).summary
    assert by_prediction.columns[:2] == ["predicted", "predicted_name"]
    assert by_prediction["count"].sum() == overall["count"][0]


def test_bad_input_gets_clear_errors(digits, ids):
    store, net = digits
    with pytest.raises(UnknownMethodError, match=r"Did you mean: integrated_gradients\b.*Known methods: .*saliency"):
        Attributor(store, net, method="integrated_gradient")
    with pytest.raises(UnknownMethodError, match="noise_tunnel="):
        Attributor(store, net, method="smoothgrad")
    with pytest.raises(UnknownMethodError, match="neuron"):
        Attributor(store, net, method=captum.attr.NeuronGradient)
    with pytest.raises(UnknownLayerError, match="Did you mean: features.conv2"):
        Attributor(store, net, method="layer_gradcam", layer="features.conv3")
    with pytest.raises(UnknownLayerError, match="spatial outputs: .*features.conv1"):
        Attributor(store, net, method="layer_gradcam", layer="head.fc1")
    with pytest.raises(UnknownLayerError, match="takes no layer"):
        Attributor(store, net, method="saliency", layer="features.conv1")
    with pytest.raises(OptionError, match="takes no argument n_step.*n_steps"):
        Attributor(store, net, method="integrated_gradients", n_step=5)
    with pytest.raises(OptionError, match="Unknown noise tunnel 'smoothgrd'. Did you mean: smoothgrad"):
        Attributor(store, net, method="saliency", noise_tunnel="smoothgrd")
    attr = Attributor(store, net, method="saliency")
    for bad in (10, -1, "dog", True, 2.5):
        with pytest.raises(TargetError, match="'label', 'prediction', a class index 0..9"):
            attr.attribute(ids, target=bad, progress=False)
    with pytest.raises(UnknownImageError, match="unknown image ids"):
        attr.attribute(["digits-0000", "no-such-image"], progress=False)
    with pytest.raises(UnknownMethodError, match="no convergence delta"):
        attr.deltas(ids)
    with pytest.raises(RegionError, match="does not fit"):
        share_inside(attr, ids, box=(6, 6, 4, 4))
    with pytest.raises(RegionError, match="exactly one"):
        share_inside(attr, ids)
    with pytest.raises(RegionError, match="N = 12"):
        share_inside(attr, ids, mask=np.ones((3, 8, 8), bool))
    with pytest.raises(UnknownColumnError, match="Cannot group by 'agee'"):
        share_inside(attr, ids, box=(0, 0, 4, 4), by="agee", progress=False)
    with pytest.raises(OptionError, match="batch_size"):
        attr.attribute(ids, batch_size=0, progress=False)


def test_images_without_labels_need_another_target(store):
    store.ingest(np.random.default_rng(0).integers(0, 255, (4, 8, 8), dtype=np.uint8), ids=list("abcd"))
    net = SmallCNN(1, 3, width=4)
    store.register_model(net, "tiny", classes=["x", "y", "z"])
    attr = Attributor(store, net, method="saliency")
    with pytest.raises(LabelError, match="target='prediction'"):
        attr.attribute(None, target="label", progress=False)
    assert attr.attribute(None, progress=False).shape == (4, 1, 8, 8)  # the prediction, by default
    assert attr.attribute(None, target="z", progress=False).shape == (4, 1, 8, 8)


def test_images_ingested_after_a_first_call_are_attributed_too(store):
    rng = np.random.default_rng(0)
    store.ingest(rng.integers(0, 255, (6, 8, 8), dtype=np.uint8), labels=[0, 1, 2] * 2, classes=["a", "b", "c"],
                 ids=[f"old-{i}" for i in range(6)])
    net = SmallCNN(1, 3, width=4)
    store.register_model(net, "tiny")
    attr = Attributor(store, net, method="integrated_gradients", n_steps=8)
    first = attr.attribute(None, progress=False)
    store.ingest(rng.integers(0, 255, (5, 8, 8), dtype=np.uint8), labels=[0, 1, 2, 0, 1],
                 ids=[f"new-{i}" for i in range(5)])
    calls, handle = _count_forwards(net)
    try:
        everything = attr.attribute(None, progress=False)
    finally:
        handle.remove()
    assert everything.shape == (11, 1, 8, 8) and np.array_equal(everything[:6], first)
    # the new images' prediction (the default target), their steps, plus two delta passes
    assert calls and sum(calls) <= 5 + 5 * 8 + 2 * 5
    assert np.isfinite(attr.deltas(None, progress=False)).all()


def test_a_read_only_store_computes_in_memory_without_writing(tmp_path):
    writable = odinlab.open_store(tmp_path / "s", create=True)
    writable.ingest(np.random.default_rng(0).integers(0, 255, (6, 8, 8), dtype=np.uint8),
                    labels=[0, 1, 2, 0, 1, 2], classes=["a", "b", "c"], ids=list("abcdef"))
    net = SmallCNN(1, 3, width=4)
    writable.register_model(net, "tiny")
    stored = Attributor(writable, net, method="saliency").attribute(list("abc"), progress=False)
    files = sorted((p, p.stat().st_size) for p in (tmp_path / "s").rglob("*") if p.is_file())
    reader = odinlab.open_store(tmp_path / "s", mode="r")
    calls, handle = _count_forwards(net)
    try:
        again = Attributor(reader, net, method="saliency").attribute(list("cab"), progress=False)
    finally:
        handle.remove()
    assert calls == [] and again.image_id.values.tolist() == list("cab")  # stored maps are read
    np.testing.assert_array_equal(again, stored[[2, 0, 1]])
    maps = Attributor(reader, net, method="saliency").attribute(list("abcdef"), progress=False)
    assert maps.shape == (6, 1, 8, 8)
    np.testing.assert_array_equal(maps[:3], stored)
    assert np.isfinite(Attributor(reader, net, n_steps=4).deltas(list("abcdef"), progress=False)).all()
    assert sorted((p, p.stat().st_size) for p in (tmp_path / "s").rglob("*") if p.is_file()) == files
    fresh = Attributor(writable, net, method="saliency").attribute(list("def"), progress=False)
    np.testing.assert_allclose(maps[3:], fresh, rtol=2e-3, atol=1e-3 * np.abs(fresh).max())


def test_integrated_gradients_split_over_cores_equal_one_core(digits):
    store, net = digits
    attr = Attributor(store, net, n_steps=8)
    batch, base = store.select("val")[:40], attr._baselines(None)[1]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one, one_delta = attr._attribute_batch(batch, "label", base)
        torch.set_num_threads(2)
        two, two_delta = attr._attribute_batch(batch, "label", base)
    finally:
        torch.set_num_threads(threads)
    assert len(attr._explainers) == 2  # the second call ran on two worker threads
    np.testing.assert_allclose(two, one, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(two_delta, one_delta, atol=1e-5)


@pytest.mark.parametrize("method, kwargs", [("deeplift", {}), ("saliency", {"noise_tunnel": "smoothgrad"}),
                                            ("gradient_shap", {}), ("layer_gradcam", {})])
def test_methods_with_hooks_or_random_draws_run_on_one_thread(digits, method, kwargs):
    store, net = digits
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert Attributor(store, net, method, **kwargs)._workers(torch.device("cpu"), 64) == 1
        assert Attributor(store, net, "occlusion")._workers(torch.device("cpu"), 64) == 2
    finally:
        torch.set_num_threads(threads)


# -- one vocabulary: labelled results, the prediction as default target, any selection and model -----

def test_maps_are_labelled_by_the_selected_ids_in_order(digits, ids):
    store, net = digits
    attr = Attributor(store, net, method="saliency")
    chosen = ids[5:] + ids[:5] + ids[:1]  # any order, repeats allowed
    maps = attr.attribute(chosen, progress=False)
    assert maps.dims == ("image_id", "channel", "y", "x") and maps.dtype == np.float32
    assert maps.image_id.values.tolist() == chosen
    assert maps.attrs == {"model_id": "cnn@1", "method": "saliency", "target": "prediction"}
    np.testing.assert_array_equal(maps.sel(image_id=ids[3]).values, maps.values[chosen.index(ids[3])])
    assert Attributor(store, net, method="layer_gradcam").attribute(ids[:2], target=3, progress=False).attrs == {
        "model_id": "cnn@1", "method": "layer_gradcam", "target": 3, "layer": "features.conv2"}
    assert attr.attribute(ids[:2], target="7", progress=False).attrs["target"] == 7  # a class name
    deltas = Attributor(store, net, n_steps=8).deltas(chosen, progress=False)
    assert deltas.dims == ("image_id",) and deltas.image_id.values.tolist() == chosen
    assert deltas.attrs["method"] == "integrated_gradients"


def test_the_default_target_is_the_prediction_everywhere(digits, ids):
    store, net = digits
    attr = Attributor(store, net, method="saliency")
    default = attr.attribute(ids, progress=False)
    np.testing.assert_array_equal(default, attr.attribute(ids, target="prediction", progress=False))
    assert attr.cache_key() == attr.cache_key(target="prediction") != attr.cache_key(target="label")
    assert mean_by_confusion(attr, ids, progress=False).equals(
        mean_by_confusion(attr, ids, target="prediction", progress=False))
    region = {"box": (0, 0, 4, 4), "by": None, "progress": False}
    shares = share_inside(attr, ids, **region).per_image
    assert shares.equals(share_inside(attr, ids, target="prediction", **region).per_image)
    assert not shares.equals(share_inside(attr, ids, target="label", **region).per_image) or \
        (attr.predictions(ids)["predicted"] == attr.predictions(ids)["label"]).all()


def test_every_form_of_selection_gives_the_same_maps(digits):
    store, net = digits
    attr = Attributor(store, net, method="saliency")
    val = store.select("val")
    forms = {"split": "val", "ids": val.ids, "sql": "SELECT image_id FROM images WHERE split = 'val'",
             "selection": val, "expression": pl.col("split") == "val", "series": pl.Series(val.ids)}
    expected = attr.attribute(val, progress=False)
    cells = mean_by_confusion(attr, val, progress=False)
    shares = share_inside(attr, val, box=(2, 2, 4, 4), progress=False)
    for form, images in forms.items():
        maps = attr.attribute(images, progress=False)
        assert maps.image_id.values.tolist() == val.ids, form
        np.testing.assert_array_equal(maps, expected, err_msg=form)
        assert mean_by_confusion(attr, images, progress=False).equals(cells), form
        other = share_inside(attr, images, box=(2, 2, 4, 4), progress=False)
        assert other.per_image.equals(shares.per_image) and other.summary.equals(shares.summary), form
        assert attr.predictions(images)["image_id"].to_list() == val.ids, form


def test_the_model_is_an_id_a_name_a_record_or_the_module(digits, ids):
    store, net = digits
    forms = ["cnn@1", "cnn", store.model("cnn@1"), net]
    attributors = [Attributor(store, model, "saliency") for model in forms]
    assert {a.model_id for a in attributors} == {"cnn@1"} and all(a.module is net for a in attributors)
    maps = [a.attribute(ids, progress=False) for a in attributors]
    for other in maps[1:]:
        np.testing.assert_array_equal(other, maps[0])
    with pytest.raises(OptionError, match="no argument model_id"):
        Attributor(store, net, "saliency", model_id="cnn@1")  # the module is found by its weights


def test_a_new_session_needs_the_module_and_says_how(digits, ids):
    store, net = digits
    again = odinlab.open_store(store.url)  # a new session: the store keeps weights, not code
    with pytest.raises(NotMaterializedError, match=r"load_weights\(MyNet\(\), 'cnn@1'\)"):
        Attributor(again, "cnn@1", "saliency")
    again.load_weights(SmallCNN(1, 10, width=8), "cnn@1")
    np.testing.assert_array_equal(Attributor(again, "cnn@1", "saliency").attribute(ids, progress=False),
                                  Attributor(store, net, "saliency").attribute(ids, progress=False))


def test_attributing_leaves_the_warning_filters_alone(digits, ids):
    store, net = digits
    before = list(warnings.filters)
    Attributor(store, net, method="deeplift").attribute(ids[:3], progress=False)
    assert list(warnings.filters) == before


def test_the_attribution_package_uses_only_the_public_store():
    package = pathlib.Path(odinlab.__file__).parent / "debug" / "attribution"
    for path in package.glob("*.py"):
        source = path.read_text()
        assert not re.search(r"store\._[a-z]", source), path.name
        assert '"_row"' not in source, path.name
