"""The optimization loop: parameterized image -> transforms -> model -> objective -> Adam step.

The model's weights are never touched: gradients are taken with respect to the image
parameters only, the model runs in eval mode and gets its training mode back afterwards.
During the first steps every ``nn.ReLU`` passes gradient to units it would block when a
whole map is dead (Lucid's redirected ReLU), so a channel that is silent on the starting
image can still be woken up.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch import nn

from odinlab.debug.maximize.objectives import PSEUDO_LAYERS, Objective
from odinlab.debug.maximize.transforms import Compose
from odinlab.torch_helpers import evaluating, forward_with_hooks

REDIRECT_STEPS = 16


def render(model: nn.Module, objective: Objective, param: nn.Module, transforms: Compose, *, steps: int,
           lr: float, generator: torch.Generator, normalize=None) -> tuple[torch.Tensor, list[float]]:
    """Maximize ``objective`` (summed over the batch) over ``param``'s images for ``steps`` Adam steps.

    Returns the final images (detached, in the valid range) and the objective's total at each step.

    >>> from odinlab.debug.maximize import objectives, param as P, transforms as T
    >>> stats = P.ColorStats(np.array([.3]), np.array([0.]), np.array([1.]), np.eye(1))
    >>> image = P.ImageParam(stats, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    >>> images, trace = render(net, objectives.class_logit(3), image, T.default(8, 8), steps=5, lr=0.05,
    ...                        generator=torch.Generator().manual_seed(0))
    >>> images.shape, len(trace)
    (torch.Size([1, 1, 8, 8]), 5)
    """
    optimizer = torch.optim.Adam(param.parameters(), lr=lr)
    parameters = list(param.parameters())
    trace = []
    with evaluating(model):
        for step in range(steps):
            image = param()
            x = transforms(image, generator)
            with redirected_relus(model, enabled=step < min(REDIRECT_STEPS, steps // 4)):
                outputs = forward(model, x, objective.layers, normalize)
            outputs.update(image=image, input=x)
            total = objective(outputs).sum()
            optimizer.zero_grad(set_to_none=True)
            (-total).backward(inputs=parameters)
            optimizer.step()
            trace.append(float(total.detach()))
    with torch.no_grad():
        return param().detach(), trace


def forward(model: nn.Module, x: torch.Tensor, layers: Sequence[str], normalize=None) -> dict:
    """One forward pass keeping the graph: the outputs of ``layers`` plus ``"logits"``, as one dict.

    Built on :func:`odinlab.torch_helpers.forward_with_hooks`; adds what objectives need:
    the input standardized with ``normalize=(mean, std)``, pseudo layers (``"logits"``,
    ``"image"``, ``"input"``) skipped, and outputs kept differentiable (copied, so that an
    in-place ReLU further on cannot change them).

    >>> out = forward(net, torch.zeros(2, 1, 8, 8), ["head.fc1"])
    >>> out["head.fc1"].shape, out["logits"].shape
    (torch.Size([2, 64]), torch.Size([2, 10]))
    """
    hooked = [name for name in dict.fromkeys(layers) if name not in PSEUDO_LAYERS]
    logits, caught = forward_with_hooks(model, _normalized(x, normalize), hooked, keep=lambda name, t: t.clone())
    caught["logits"] = logits
    return caught


def _normalized(x: torch.Tensor, normalize) -> torch.Tensor:
    """``(x - mean) / std`` per channel when ``normalize=(mean, std)``, else ``x``."""
    if normalize is None:
        return x
    mean, std = (torch.as_tensor(v, dtype=x.dtype, device=x.device).reshape(-1, 1, 1) for v in normalize)
    return (x - mean) / std


@contextlib.contextmanager
def redirected_relus(model: nn.Module, enabled: bool = True):
    """Inside the block, every ``nn.ReLU`` of ``model`` back-propagates Lucid's redirected gradient.

    A dead unit still gets the gradient that would wake it up:

    >>> x = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    >>> with redirected_relus(nn.ReLU()) as relu:
    ...     (-relu(x).sum()).backward()
    >>> x.grad.tolist()
    [[-1.0, -1.0]]
    """
    if not enabled:
        yield model
        return
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    inputs: dict[int, torch.Tensor] = {}

    def before(module, args):
        inputs[id(module)] = args[0]
        return (args[0].clone(),) if module.inplace else None  # keep the input intact

    def after(module, args, output):
        return _RedirectedReLU.apply(inputs.pop(id(module)), output)

    # Hand-made hooks, not torch_helpers.hooks: an in-place ReLU needs a pre-hook that keeps its input.
    handles = []
    for relu in relus:
        handles += [relu.register_forward_pre_hook(before), relu.register_forward_hook(after)]
    try:
        yield model
    finally:
        for handle in handles:
            handle.remove()


class _RedirectedReLU(torch.autograd.Function):
    """Forward: the ReLU's output. Backward: the ReLU gradient, or for an image whose whole
    gradient is zero, the incoming gradient except where it would push a negative unit lower."""

    @staticmethod
    def forward(ctx, x, output):
        ctx.save_for_backward(x)
        return output.clone()

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        relu_grad = torch.where(x < 0, torch.zeros_like(grad), grad)
        # grad is d(loss)/d(out) for a loss that is minimized: grad > 0 pushes the unit lower.
        redirected = torch.where((x < 0) & (grad > 0), torch.zeros_like(grad), grad)
        dead = relu_grad.flatten(1).norm(dim=1) == 0 if grad.ndim > 1 else (relu_grad.norm() == 0).reshape(1)
        shape = (-1,) + (1,) * (grad.ndim - 1) if grad.ndim > 1 else (1,)
        return torch.where(dead.reshape(shape), redirected, relu_grad), None
