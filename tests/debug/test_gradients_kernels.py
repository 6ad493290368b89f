"""The compact-form math against per-sample gradients from torch.func (vmap over grad)."""

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

from odinlab.debug.gradients import Grads, LayerSpec, forward_backward, layer_specs
from odinlab.errors import OptionError, UnsupportedLayerError

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")

TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


def linear_net():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(inplace=True), nn.Linear(16, 3))


def conv_net():
    # stride 2, padding 1, dilation 2, a non-square kernel; then 'same' padding with an even kernel
    # (PyTorch pads it asymmetrically) and no bias; then a Linear head.
    return nn.Sequential(
        nn.Conv2d(1, 4, (3, 2), stride=2, padding=1, dilation=2), nn.ReLU(inplace=True),
        nn.Conv2d(4, 6, (2, 2), padding="same", bias=False), nn.Tanh(),
        nn.Flatten(), nn.Linear(72, 3))


LAYERS = {"linear": (linear_net, ["1", "3"]), "conv": (conv_net, ["0", "2", "5"])}


def reference(model, x, y):
    """{layer: (n, numel of the layer's parameters)} per-sample gradients, weight then bias."""
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p, xi, yi):
        return F.cross_entropy(functional_call(model, p, (xi[None],)), yi[None], reduction="sum")

    grads = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
    out = {}
    for name, _ in model.named_modules():
        keys = [k for k in (f"{name}.weight", f"{name}.bias") if k in grads]
        if name and keys:
            out[name] = torch.cat([grads[k].reshape(len(x), -1) for k in keys], dim=1)
    return out


def setup(kind, dtype, n=7):
    make, layers = LAYERS[kind]
    torch.manual_seed(1)
    model = make().to(dtype)
    x = torch.rand(n, 1, 8, 8, dtype=dtype)
    y = torch.randint(0, 3, (n,))
    caught = forward_backward(model, x, y, layers)
    specs = layer_specs(model, layers, (1, 8, 8))
    compact = {l: Grads(specs[l], prefix=caught[l][0], suffix=caught[l][1]) for l in layers}
    return model, x, y, compact, reference(model, x, y)


def close(got, want, dtype):
    scale = want.abs().max().clamp_min(1e-30)
    assert (got - want).abs().max() / scale <= TOL[dtype], float((got - want).abs().max() / scale)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_restore_is_exact(kind, dtype):
    model, _, _, compact, ref = setup(kind, dtype)
    for layer, grads in compact.items():
        close(grads.to_full().flat, ref[layer], dtype)
        restored = grads.restore()
        module = dict(model.named_modules())[layer]
        assert restored["weight"].shape[1:] == module.weight.shape
        assert ("bias" in restored) == (module.bias is not None)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["linear", "conv"])
@pytest.mark.parametrize("method", ["kernel", "restore"])
def test_norms_and_dots(kind, dtype, method):
    _, _, _, compact, ref = setup(kind, dtype)
    for layer, grads in compact.items():
        want = ref[layer]
        close(grads.sq_norms(method), want.square().sum(1), dtype)
        a, b = grads.take(slice(0, 3)), grads.take(slice(3, None))
        close(a.dot(b, method), want[:3] @ want[3:].T, dtype)
        close(grads.dot(grads, method), want @ want.T, dtype)
        close(a.dot(b.to_full()), want[:3] @ want[3:].T, dtype)  # mixed forms


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_dense_query(kind, dtype):
    _, _, _, compact, ref = setup(kind, dtype)
    for layer, grads in compact.items():
        query = torch.randn(grads.spec.full_values, dtype=dtype)
        close(grads.dense(query), ref[layer] @ query, dtype)


def test_linear_norm_is_product_of_norms():
    _, _, _, compact, ref = setup("linear", torch.float64)
    g = compact["3"]
    want = g.suffix.norm(dim=1) * torch.sqrt(g.prefix.square().sum(1) + 1)  # ‖g‖·‖[a, 1]‖
    close(g.sq_norms().sqrt(), want, torch.float64)
    close(want, ref["3"].norm(dim=1), torch.float64)


def test_blocks_give_the_same_result(monkeypatch):
    from odinlab.debug.gradients import kernels

    _, _, _, compact, ref = setup("conv", torch.float64, n=9)
    monkeypatch.setattr(kernels, "BLOCK_ELEMENTS", 40)  # forces many tiny blocks
    g = compact["0"]
    close(g.dot(g, "kernel"), ref["0"] @ ref["0"].T, torch.float64)
    close(g.sq_norms("kernel"), ref["0"].square().sum(1), torch.float64)
    close(g.to_full().flat, ref["0"], torch.float64)


def test_unsupported_layers_are_refused():
    model = nn.Sequential(nn.Conv2d(2, 4, 3, groups=2), nn.BatchNorm2d(4), nn.ReLU())
    with pytest.raises(UnsupportedLayerError, match=r"'1' of the model is a BatchNorm2d.*Supported layers: 0"):
        layer_specs(model, ["1"], (2, 5, 5))
    with pytest.raises(UnsupportedLayerError, match=r"grouped Conv2d \(groups=2\).*groups=1"):
        layer_specs(model, ["0"], (2, 5, 5))
    shared = nn.Linear(4, 4)
    twice = nn.Sequential(shared, nn.ReLU(), shared)
    with pytest.raises(UnsupportedLayerError, match="runs 2 times per forward pass"):
        layer_specs(twice, ["0"], (4,))


def test_bad_method():
    _, _, _, compact, _ = setup("conv", torch.float32, n=2)
    with pytest.raises(OptionError, match="Unknown method 'fast'"):
        compact["0"].sq_norms("fast")


def test_spec_roundtrip():
    specs = layer_specs(conv_net(), ["0", "2"], (1, 8, 8))
    assert specs["2"].padding == (0, 1, 0, 1)  # 'same' with an even kernel: the extra zero goes right/bottom
    assert all(LayerSpec.from_json(s.to_json()) == s for s in specs.values())
