"""Small torch helpers used across odinlab: eval mode that restores itself, hooks by layer name.

Every module that runs a network goes through these, so "evaluate, then restore the mode"
and "catch the outputs of named layers during a forward pass" are written once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import nn

# on_output(layer name, output tensor, module inputs) -> a replacement output, or None to keep it
OutputHook = Callable[[str, torch.Tensor, tuple], "torch.Tensor | None"]


@contextlib.contextmanager
def evaluating(module: nn.Module) -> Iterator[nn.Module]:
    """Run ``module`` in eval mode inside the block, restoring its mode after.

    >>> with evaluating(net.train()) as model:
    ...     model.training
    False
    >>> net.training
    True
    """
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter (the CPU for a module without any).

    >>> module_device(nn.Linear(2, 2))
    device(type='cpu')
    """
    return next(module.parameters(), torch.empty(0)).device


def first_tensor(output):
    """The tensor of a layer's output (the first item when a layer returns a tuple or list)."""
    return output[0] if isinstance(output, tuple | list) and output else output


@contextlib.contextmanager
def hooks(module: nn.Module, layers: Iterable[str], on_output: OutputHook) -> Iterator[None]:
    """Call ``on_output(name, output, inputs)`` after each named layer runs, inside the block.

    A non-None return value replaces the layer's output (for a tuple output, its first item).
    The hooks are removed when the block ends, also on errors.

    >>> seen = []
    >>> with hooks(net, ["head.fc1"], lambda name, out, inputs: seen.append((name, tuple(out.shape)))):
    ...     _ = net(torch.zeros(2, 1, 8, 8))
    >>> seen
    [('head.fc1', (2, 64))]
    """
    modules = dict(module.named_modules())

    def hook_for(name: str):
        def hook(layer, inputs, output):
            replaced = on_output(name, first_tensor(output), inputs)
            if replaced is None:
                return None
            return (replaced, *output[1:]) if isinstance(output, tuple | list) else replaced
        return hook

    handles = [modules[name].register_forward_hook(hook_for(name)) for name in dict.fromkeys(layers)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def forward_with_hooks(module: nn.Module, x: torch.Tensor, layers: Iterable[str], *,
                       keep: Callable[[str, torch.Tensor], torch.Tensor] | None = None,
                       ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One forward pass returning (logits, {layer: output}) for the named layers.

    By default each output is detached and copied (a later in-place op such as
    ``nn.ReLU(inplace=True)`` would otherwise rewrite it); ``keep(name, tensor)`` chooses what
    to keep instead (pass ``lambda name, t: t`` to keep the graph). The module's mode is not
    changed: wrap the call in :func:`evaluating` and ``torch.no_grad()`` as needed.

    >>> logits, caught = forward_with_hooks(net, torch.zeros(2, 1, 8, 8), ["head.fc1"])
    >>> logits.shape, caught["head.fc1"].shape
    (torch.Size([2, 10]), torch.Size([2, 64]))
    """
    caught: dict[str, torch.Tensor] = {}
    keep = keep or (lambda name, tensor: tensor.detach().clone())

    def on_output(name, output, inputs):
        caught[name] = keep(name, output)

    with hooks(module, layers, on_output):
        logits = first_tensor(module(x))
    return logits, caught


# Below this many parameters a model's operations are too small to split across threads. Measured
# on the demo (13,706-parameter CNN, 2 cores): beside two other 2-thread torch processes, one thread
# took 10.4 s against 14.3 s; on a quiet machine 1.7 s against 1.4 s. Oversubscription costs far
# more than a second thread gains, and grows with every other process.
SMALL_MODEL_PARAMS = 1_000_000


@contextlib.contextmanager
def threads_for(module: nn.Module) -> Iterator[int]:
    """Inside the block, torch uses one thread for a small model (fewer than a million
    parameters), where splitting tiny operations across threads costs more than it gains;
    larger models keep torch's setting. Restores the thread count after.

    >>> with threads_for(nn.Linear(4, 2)) as n:
    ...     n
    1
    """
    before = torch.get_num_threads()
    small = sum(p.numel() for p in module.parameters()) < SMALL_MODEL_PARAMS
    wanted = 1 if small else before
    torch.set_num_threads(wanted)
    try:
        yield wanted
    finally:
        torch.set_num_threads(before)
