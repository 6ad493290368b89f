"""What a layer's per-sample gradient is made of: its shapes, its im2col view, its sizes.

A :class:`LayerSpec` describes a Linear or Conv2d layer well enough to do all the gradient
math without the module (it is saved in the store beside the captured arrays, so a store
read later, without the network's code, can still restore and compare gradients). Every
supported layer is seen the same way: per sample, an input matrix ``U`` (positions × fan-in,
the im2col unfolding for a convolution, the input vector for a Linear layer) and an output
gradient ``G`` (positions × out-features); the weight gradient is ``Gᵀ U`` and the bias
gradient ``Gᵀ 1``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from odinlab.errors import UnsupportedLayerError, listing
from odinlab.torch_helpers import evaluating, hooks, module_device

SUPPORTED = (nn.Linear, nn.Conv2d)


@dataclass(frozen=True)
class LayerSpec:
    """One Linear or Conv2d layer: per-sample input and output shapes and the convolution geometry.

    >>> spec = layer_spec("fc", nn.Linear(4, 3), (4,), (3,))
    >>> spec.positions, spec.fan_in, spec.compact_values, spec.full_values
    (1, 4, 7, 15)
    """

    name: str
    type: str  # "Linear" or "Conv2d"
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    weight_shape: tuple[int, ...]
    bias: bool
    kernel_size: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    padding: tuple[int, ...] = ()  # (left, right, top, bottom), as F.pad takes it
    dilation: tuple[int, ...] = ()

    @property
    def out_features(self) -> int:
        return self.weight_shape[0]

    @property
    def fan_in(self) -> int:
        """Columns of ``U``: in-features, or C_in · kh · kw."""
        return math.prod(self.weight_shape[1:])

    @property
    def positions(self) -> int:
        """Rows of ``U`` and ``G``: 1 for a Linear layer on vectors, H_out · W_out for a conv."""
        if self.type == "Linear":
            return math.prod(self.in_shape[:-1])
        return math.prod(self.out_shape[1:])

    @property
    def compact_values(self) -> int:
        """Numbers stored per sample in compact form: the layer input and the output gradient."""
        return math.prod(self.in_shape) + math.prod(self.out_shape)

    @property
    def full_values(self) -> int:
        """Numbers stored per sample in full form: the weight and bias gradients."""
        return math.prod(self.weight_shape) + (self.out_features if self.bias else 0)

    def unfold(self, prefix: torch.Tensor) -> torch.Tensor:
        """``U`` for stored inputs: (n, positions, fan_in), im2col for a convolution.

        >>> spec = layer_spec("c", nn.Conv2d(2, 3, 3, padding=1), (2, 5, 5), (3, 5, 5))
        >>> spec.unfold(torch.zeros(4, 2, 5, 5)).shape
        torch.Size([4, 25, 18])
        """
        n = prefix.shape[0]
        if self.type == "Linear":
            return prefix.reshape(n, self.positions, self.fan_in)  # explicit sizes: n may be 0
        padded = F.pad(prefix, self.padding) if any(self.padding) else prefix
        cols = F.unfold(padded, self.kernel_size, dilation=self.dilation, stride=self.stride)
        return cols.transpose(1, 2)

    def per_position(self, suffix: torch.Tensor) -> torch.Tensor:
        """``G`` for stored output gradients: (n, positions, out_features).

        >>> spec = layer_spec("c", nn.Conv2d(2, 3, 3, padding=1), (2, 5, 5), (3, 5, 5))
        >>> spec.per_position(torch.zeros(4, 3, 5, 5)).shape
        torch.Size([4, 25, 3])
        """
        n = suffix.shape[0]
        if self.type == "Linear":
            return suffix.reshape(n, self.positions, self.out_features)
        return suffix.reshape(n, self.out_features, self.positions).transpose(1, 2)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> LayerSpec:
        """The spec saved with :meth:`to_json` (tuples restored).

        >>> spec = layer_spec("fc", nn.Linear(4, 3), (4,), (3,))
        >>> LayerSpec.from_json(spec.to_json()) == spec
        True
        """
        fields = json.loads(text)
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})


def layer_spec(name: str, module: nn.Module, in_shape, out_shape) -> LayerSpec:
    """The spec of a Linear or Conv2d ``module`` seen with per-sample input/output shapes.

    Anything else (BatchNorm, ReLU, a grouped or circular-padded conv) gets
    :class:`UnsupportedLayerError` naming the type and what is supported.

    >>> layer_spec("bn", nn.BatchNorm2d(3), (3, 4, 4), (3, 4, 4))
    Traceback (most recent call last):
    ...
    odinlab.errors.UnsupportedLayerError: Layer 'bn' is a BatchNorm2d; per-sample gradients
    are kept for nn.Linear and nn.Conv2d layers only.
    """
    kind = type(module).__name__
    if not isinstance(module, SUPPORTED):
        raise UnsupportedLayerError(
            f"Layer {name!r} is a {kind}; per-sample gradients are kept for nn.Linear and nn.Conv2d layers only.")
    weight = tuple(module.weight.shape)
    bias = module.bias is not None
    in_shape, out_shape = tuple(int(d) for d in in_shape), tuple(int(d) for d in out_shape)
    if isinstance(module, nn.Linear):
        return LayerSpec(name, "Linear", in_shape, out_shape, weight, bias)
    if module.groups != 1:
        raise UnsupportedLayerError(
            f"Layer {name!r} is a grouped Conv2d (groups={module.groups}); per-sample gradients support "
            "groups=1 convolutions only. Choose another layer.")
    if module.padding_mode != "zeros":
        raise UnsupportedLayerError(
            f"Layer {name!r} is a Conv2d with padding_mode={module.padding_mode!r}; only 'zeros' padding "
            "is supported. Choose another layer.")
    spec = LayerSpec(name, "Conv2d", in_shape, out_shape, weight, bias, tuple(module.kernel_size),
                     tuple(module.stride), _explicit_padding(module), tuple(module.dilation))
    return spec


def layer_specs(module: nn.Module, layers: list[str], input_shape, model_id: str = "the model") -> dict:
    """Specs of ``layers`` of ``module`` from one forward pass on zeros of ``input_shape`` (C, H, W).

    >>> specs = layer_specs(net, ["features.conv1", "head.fc2"], (1, 8, 8))
    >>> specs["features.conv1"].positions, specs["head.fc2"].weight_shape
    (64, (10, 64))
    """
    modules = dict(module.named_modules())
    for layer in layers:
        if not isinstance(modules[layer], SUPPORTED):
            supported = [n for n, m in modules.items() if n and isinstance(m, SUPPORTED)]
            raise UnsupportedLayerError(
                f"Layer {layer!r} of {model_id} is a {type(modules[layer]).__name__}; per-sample gradients "
                f"are kept for nn.Linear and nn.Conv2d layers only. Supported layers: {listing(supported, 40)}.")
    seen: dict[str, list] = {layer: [] for layer in layers}

    def on_output(name, output, inputs):  # per-sample shapes: drop the batch axis
        seen[name].append((tuple(inputs[0].shape[1:]), tuple(output.shape[1:])))

    param = next(module.parameters(), torch.empty(0))
    with evaluating(module), hooks(module, layers, on_output), torch.no_grad():
        module(torch.zeros(1, *input_shape, dtype=param.dtype, device=module_device(module)))
    specs = {}
    for layer in layers:
        if len(seen[layer]) != 1:
            raise UnsupportedLayerError(
                f"Layer {layer!r} of {model_id} runs {len(seen[layer])} times per forward pass; per-sample "
                "gradients are kept for layers that run exactly once (no weight sharing).")
        specs[layer] = layer_spec(layer, modules[layer], *seen[layer][0])
    return specs


def _explicit_padding(conv: nn.Conv2d) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) zeros, also for padding='same' (PyTorch puts the odd one right)."""
    if conv.padding == "valid":
        return (0, 0, 0, 0)
    if conv.padding == "same":
        pads = []
        for k, d in zip(reversed(conv.kernel_size), reversed(conv.dilation)):  # width first, as F.pad
            total = d * (k - 1)
            pads += [total // 2, total - total // 2]
        return tuple(pads)
    ph, pw = conv.padding
    return (pw, pw, ph, ph)
