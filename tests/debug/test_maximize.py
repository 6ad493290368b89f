import logging
import uuid

import numpy as np
import plotly.graph_objects as go
import polars as pl
import pytest
import torch

import odinlab
from odinlab.debug import units
from odinlab.debug.maximize import Maximizer, objectives, param, transforms
from odinlab.draw.maximize import comparison_figure
from odinlab.errors import (
    OdinError,
    OptionError,
    TransformError,
    UnknownLayerError,
    UnknownObjectiveError,
    UnknownUnitError,
)
from odinlab.nets import SmallCNN
from odinlab.training import fit

STEPS, LR = 96, 0.1


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread, and do not fight other processes for the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits(_one_thread):
    """A small CNN trained on the digits, with its conv activations materialized for every image."""
    torch.manual_seed(0)
    store = odinlab.open_store(f"memory://maximize-{uuid.uuid4().hex}", create=True)
    store.ingest(odinlab.datasets.digits())
    net = SmallCNN(1, 10, width=8)
    fit(net, store, "train", epochs=10, progress=False)
    model_id = store.register_model(net, "cnn")
    store.materialize(net, ["features.conv2", "features.relu2"], dtype="float32", progress=False)
    return store, net, model_id


@pytest.fixture(scope="module")
def maximizer(digits):
    store, net, _ = digits
    return Maximizer(store, net, steps=STEPS, lr=LR, seed=0)


def _channel_means(store, model_id, layer):
    return store.activations(model_id, layer).values.mean(axis=(2, 3))  # materialized: a read


def _probability(net, image, unit):
    with torch.no_grad():
        return torch.softmax(net(torch.from_numpy(image)[None]), 1)[0, unit].item()


def _mean_pairwise_correlation(images):
    flat = images.reshape(len(images), -1)
    flat = flat - flat.mean(1, keepdims=True)
    flat = flat / np.linalg.norm(flat, axis=1, keepdims=True)
    similarity = flat @ flat.T
    return (similarity.sum() - np.trace(similarity)) / (len(flat) * (len(flat) - 1))


def test_class_logit_maximization_is_classified_as_that_class(digits, maximizer):
    _, net, _ = digits
    probabilities = {}
    for unit in (0, 3, 8):
        image = maximizer.maximize("class", unit=unit)
        assert image.shape == (1, 8, 8) and image.dtype == np.float32
        assert 0.0 <= image.min() and image.max() <= 1.0  # the model's input range
        probabilities[unit] = _probability(net, image, unit)
    print(f"class-logit maximization, probability of the class: {probabilities}")
    assert min(probabilities.values()) > 0.9


def test_channel_maximization_beats_the_best_real_image(digits, maximizer):
    store, _, model_id = digits
    real = _channel_means(store, model_id, "features.relu2")
    live = np.argsort(-real.max(0))[:3]  # the three channels real images drive hardest
    ratios = {}
    for channel in live.tolist():
        image = maximizer.maximize("channel", "features.relu2", channel)
        reached = maximizer.score(image, "channel", "features.relu2", channel)[0]
        ratios[channel] = round(float(reached / real[:, channel].max()), 2)
    print(f"channel maximization / best real image: {ratios}")
    assert min(ratios.values()) > 1.0


def test_neuron_maximization_beats_the_best_real_image(digits, maximizer):
    store, net, model_id = digits
    real = store.activations(model_id, "features.relu2").values[:, :, 4, 4]  # the centre of the map
    channel = int(real.max(0).argmax())
    image = maximizer.maximize("neuron", "features.relu2", channel)
    reached = maximizer.score(image, "neuron", "features.relu2", (channel, 4, 4))[0]
    print(f"neuron maximization / best real image: {reached / real[:, channel].max():.2f}")
    assert reached > real[:, channel].max()
    flat = store.activations(model_id, "head.fc1", module=net).values  # computed on demand
    unit = int(flat.max(0).argmax())
    reached = maximizer.score(maximizer.maximize("neuron", "head.fc1", unit), "neuron", "head.fc1", unit)[0]
    assert reached > flat[:, unit].max()


def test_negative_objective_goes_below_every_real_image(digits, maximizer):
    store, _, model_id = digits
    real = _channel_means(store, model_id, "features.conv2")  # before the ReLU, so it can go negative
    below = {}
    for channel in (1, 3):
        image = maximizer.maximize("channel", "features.conv2", channel, negative=True)
        reached = maximizer.score(image, "channel", "features.conv2", channel)[0]
        below[channel] = (round(float(reached), 2), round(float(real[:, channel].min()), 2))
        assert reached < real[:, channel].min()
    print(f"negative objective (reached, least real image): {below}")
    high = maximizer.maximize("class", unit=3)
    low = maximizer.maximize("class", unit=3, negative=True)
    assert maximizer.score(low, "class", unit=3)[0] < maximizer.score(high, "class", unit=3)[0]


def test_diversity_spreads_a_batch_of_images(digits, maximizer):
    plain = maximizer.maximize("channel", "features.relu2", 3, n=3)
    diverse = maximizer.maximize("channel", "features.relu2", 3, n=3, diversity=2.0)
    assert plain.shape == diverse.shape == (3, 1, 8, 8)
    before, after = _mean_pairwise_correlation(plain), _mean_pairwise_correlation(diverse)
    print(f"mean pairwise correlation: {before:.2f} without diversity, {after:.2f} with")
    assert after < before - 0.2
    assert maximizer.score(diverse, "channel", "features.relu2", 3).max() > 0  # still about the channel


def test_same_seed_gives_the_same_image_and_another_seed_another(digits):
    store, net, _ = digits
    first = Maximizer(store, net, steps=24, lr=LR, seed=7, cache=False).maximize("channel", "features.relu2", 5)
    again = Maximizer(store, net, steps=24, lr=LR, seed=7, cache=False).maximize("channel", "features.relu2", 5)
    other = Maximizer(store, net, steps=24, lr=LR, seed=8, cache=False).maximize("channel", "features.relu2", 5)
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 1e-3


def test_a_second_identical_call_reads_the_store_without_a_forward_pass(digits):
    store, net, model_id = digits
    grads = {name: None if p.grad is None else p.grad.clone() for name, p in net.named_parameters()}
    calls = []
    handle = net.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        first = Maximizer(store, net, steps=16, lr=LR, seed=3).maximize("neuron", "features.conv1", 2, n=2)
        computed = len(calls)
        again = Maximizer(store, "cnn@1", steps=16, lr=LR, seed=3).maximize("neuron", "features.conv1", 2, n=2)
        assert computed >= 16 and len(calls) == computed  # the second call ran no forward pass
        np.testing.assert_array_equal(first, again)
        Maximizer(store, net, steps=16, lr=LR, seed=3, tv=0.1).maximize("neuron", "features.conv1", 2, n=2)
        assert len(calls) > computed  # another parameter, another result
    finally:
        handle.remove()
    listed = Maximizer(store, net).stored()
    assert listed.filter(pl.col("objective").str.contains("features.conv1")).height == 2
    stored = store.state_dict(model_id)  # the model is left as it was: weights, gradients, mode
    assert all(torch.equal(stored[k], v) for k, v in net.state_dict().items())
    assert all((p.grad is None and grads[k] is None) or torch.equal(p.grad, grads[k])
               for k, p in net.named_parameters())
    assert not net.training


def test_bad_requests_are_refused_clearly(digits, maximizer):
    with pytest.raises(UnknownLayerError, match=r"Did you mean: features.relu2.*Layers: features, features.conv1"):
        maximizer.maximize("channel", "features.relu3", 0)
    with pytest.raises(UnknownUnitError, match=r"0\.\.15") as error:
        maximizer.maximize("channel", "features.relu2", 16)
    assert isinstance(error.value, IndexError) and isinstance(error.value, OdinError)
    with pytest.raises(UnknownUnitError, match=r"10 classes, 0\.\.9"):
        maximizer.maximize("class", unit=10)
    with pytest.raises(UnknownUnitError, match=r"valid x is 0\.\.7"):
        maximizer.maximize("neuron", "features.relu2", (0, 2, 8))
    with pytest.raises(UnknownUnitError, match=r"valid units are 0\.\.31"):
        maximizer.maximize("neuron", "head.fc1", 32)
    with pytest.raises(UnknownObjectiveError, match=r"Did you mean: channel\? Objectives: class, channel, neuron") \
            as error:
        maximizer.maximize("chanel", "features.relu2", 0)
    assert isinstance(error.value, ValueError)
    with pytest.raises(UnknownLayerError, match="needs layer="):
        maximizer.maximize("channel", unit=0)
    with pytest.raises(UnknownUnitError, match="needs unit="):
        maximizer.maximize("channel", "features.relu2")
    with pytest.raises(TransformError, match="Unknown transforms"):
        Maximizer(digits[0], digits[1], transforms="strong")
    with pytest.raises(OptionError, match="steps must be a positive int"):
        Maximizer(digits[0], digits[1], steps=0)
    with pytest.raises(UnknownUnitError, match="unit=\\(channel, y, x\\)"):
        maximizer.maximize("neuron", "features.relu2", (0, 2))


def test_composed_objectives_and_regularizers(digits, maximizer):
    store, net, _ = digits
    objective = objectives.channel("features.relu2", 3) - 0.5 * objectives.channel("features.relu2", 5)
    image = maximizer.maximize(objective)
    assert maximizer.score(image, objective)[0] > maximizer.score(np.full((1, 8, 8), 0.3, np.float32), objective)[0]
    with pytest.raises(UnknownUnitError):
        maximizer.maximize(objectives.channel("features.relu2", 99))
    smooth = Maximizer(store, net, steps=STEPS, lr=LR, tv=3.0).maximize("class", unit=3)
    rough = maximizer.maximize("class", unit=3)
    tv = objectives.total_variation()
    assert tv({"image": torch.from_numpy(smooth)[None]}) < tv({"image": torch.from_numpy(rough)[None]})


def test_top_images_and_comparison_figure(digits, maximizer):
    store, _, model_id = digits
    top = maximizer.top_images("channel", "features.relu2", 3, k=4)
    real = _channel_means(store, model_id, "features.relu2")[:, 3]
    assert top.columns == ["rank", "image_id", "label", "label_name", "activation", "dead"]
    assert top["rank"].to_list() == [1, 2, 3, 4]
    assert top["image_id"][0] == store.images["image_id"][int(real.argmax())]
    assert top["activation"][0] == pytest.approx(real.max(), rel=1e-5)
    result = maximizer.comparison("channel", "features.relu2", 3, k=4)
    assert not result.dead and result.real.shape == (4, 1, 8, 8) and result.top.equals(top)
    np.testing.assert_array_equal(result.real, store.model_input(top["image_id"]))
    figure = comparison_figure(result)
    assert isinstance(figure, go.Figure)
    assert [trace.type for trace in figure.data] == ["image"] * 5
    assert figure.data[0].z.shape == (8, 8, 3)
    assert top["image_id"][0] in figure.layout.annotations[1].text
    lowest = maximizer.top_images("class", unit=3, images="val", k=2, lowest=True)
    assert lowest["activation"].is_sorted()
    minimized = comparison_figure(maximizer.comparison("class", unit=3, images="val", k=2, negative=True))
    assert minimized.layout.annotations[0].text.startswith("minimized")
    with pytest.warns(DeprecationWarning, match="comparison_figure"):
        old = maximizer.compare("channel", "features.relu2", 3, k=4)  # the README's call still draws
    assert [trace.type for trace in old.data] == ["image"] * 5


def test_top_images_of_a_unit_are_the_units_module_ranking(digits, maximizer):
    store, _, model_id = digits
    val = store.select("val")
    for images in ("val", val.ids, val, pl.col("split") == "val"):
        top = maximizer.top_images("channel", "features.relu2", 6, images, k=5)
        assert top.equals(units.top_images(store, model_id, "features.relu2", "val", unit=6, k=5).drop("unit"))
    flat = maximizer.top_images("neuron", "head.fc1", 2, "val", k=3)
    assert flat.equals(units.top_images(store, model_id, "head.fc1", "val", unit=2, k=3).drop("unit"))
    centre = maximizer.top_images("neuron", "features.relu2", (6, 4, 4), "val", k=3)
    values = store.activations(model_id, "features.relu2", "val").values[:, 6, 4, 4]
    order = np.argsort(-values, kind="stable")
    assert centre["image_id"].to_list() == np.array(val.ids)[order[values[order] > values.min()][:3]].tolist()


def test_a_dead_unit_has_no_top_images_and_the_comparison_says_so(digits, caplog):
    store, net, _ = digits
    dead = SmallCNN(1, 10, width=8)
    dead.load_state_dict(net.state_dict())
    with torch.no_grad():
        dead.features.conv2.bias[5] = -1e4  # channel 5 of relu2 is 0.0 on every image
    store.register_model(dead, "dead")
    m = Maximizer(store, dead, steps=8, lr=LR)
    with caplog.at_level(logging.WARNING, logger="odinlab.debug.units"):
        top = m.top_images("channel", "features.relu2", 5, "val", k=8)
    assert top.rows() == [(None, None, None, None, 0.0, True)]  # no ranking of eight tied ids
    assert "dead" in caplog.text
    result = m.comparison("channel", "features.relu2", 5, "val", k=8)
    assert result.dead and result.real.shape[0] == 0
    figure = comparison_figure(result)
    assert len(figure.data) == 1 and "dead unit" in figure.layout.title.text
    live = m.comparison("channel", "features.relu2", 3, "val", k=2)
    assert not live.dead and "dead unit" not in comparison_figure(live).layout.title.text


def test_transforms_keep_small_images_their_size_and_are_seeded():
    generator = lambda: torch.Generator().manual_seed(0)
    for height, width in ((8, 8), (17, 23), (32, 32), (64, 64)):
        pipeline = transforms.default(height, width)
        x = torch.rand(2, 3, height, width)
        out = pipeline(x, generator())
        assert out.shape == x.shape  # never resampled to another resolution
        assert torch.equal(out, pipeline(x, generator()))
    pads = [t.pixels for t in transforms.default(64, 64).transforms if isinstance(t, transforms.Pad)]
    assert pads == [8]
    shifted = transforms.Compose([transforms.Pad(1), transforms.Jitter(1), transforms.CenterCrop(8, 8)])
    x = torch.rand(4, 1, 8, 8)
    out = shifted(x, generator())
    interior = out[:, :, 1:-1, 1:-1]  # an integer shift: every interior pixel is an input pixel
    assert all(torch.isin(interior[i], x[i]).all() for i in range(4))


def test_fourier_parameterization_and_color_decorrelation():
    image = param.FourierImage(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        image.spectrum.fill_(1.0)
        power = torch.fft.rfft2(image()).abs()[0, 0]
    assert power[0, 1] > 2 * power[0, 4] > 0  # 1/f: low frequencies dominate
    covariance = np.array([[1.0, 0.8, 0.5], [0.8, 1.0, 0.7], [0.5, 0.7, 1.0]])
    root = param.color_sqrt(covariance)
    assert np.linalg.norm(root, axis=0).max() == pytest.approx(1.0)
    product = root @ root.T
    np.testing.assert_allclose(product / product[0, 0], covariance, atol=1e-9)
    np.testing.assert_allclose(param.color_sqrt(np.array([[0.07]])), [[1.0]])


def test_rgb_32x32_model_with_colors_from_its_store(_one_thread):
    torch.manual_seed(0)
    store = odinlab.open_store(f"memory://maximize-shapes-{uuid.uuid4().hex}", create=True)
    store.ingest(odinlab.datasets.shapes(n=1000, size=32, seed=0))
    net = SmallCNN(3, 5, width=8)
    fit(net, store, "train", epochs=15, lr=1e-2, progress=False)
    store.register_model(net, "shapes")
    m = Maximizer(store, net, steps=48, lr=LR)
    stats = m.color_stats
    assert stats.sqrt.shape == (3, 3) and not np.allclose(stats.sqrt, np.eye(3))
    pixels = store.pixels("train").astype(np.float64) / 255
    np.testing.assert_allclose(stats.mean, pixels.mean(axis=(0, 2, 3)), atol=0.02)  # a sample of the store
    probabilities = []
    for unit in (0, 2):
        image = m.maximize("class", unit=unit)
        assert image.shape == (3, 32, 32) and 0 <= image.min() and image.max() <= 1
        probabilities.append(_probability(net, image, unit))
    print(f"shapes 32x32 class probabilities: {probabilities}")
    assert min(probabilities) > 0.9
    means = store.activations("shapes@1", "features.relu2", "val", module=net).values.mean(axis=(2, 3))
    live = int(means.max(axis=0).argmax())  # channel 0 is silent on every image here: no real images to show
    figure = comparison_figure(m.comparison("channel", "features.relu2", live, "val", k=2, n=2, diversity=1.0))
    assert len(figure.data) == 4 and figure.data[0].z.shape == (32, 32, 3)


def test_a_read_only_store_reads_stored_results_and_keeps_new_ones_to_itself(digits, maximizer):
    store, net, _ = digits
    stored = maximizer.maximize("class", unit=0)
    reader = Maximizer(odinlab.open_store(store.url, mode="r"), net, steps=STEPS, lr=LR)
    np.testing.assert_array_equal(reader.maximize("class", unit=0), stored)
    before = reader.stored().height
    assert reader.maximize("class", unit=5, steps=8).shape == (1, 8, 8)
    assert reader.stored().height == before  # computed, not written
