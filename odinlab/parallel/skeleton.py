"""The network travels to workers as code; its weights come from the store.

A store keeps weights, never pickled modules. To run a version on a worker, the calling
process sends a *skeleton*: the module with every parameter and buffer replaced by a tensor
on PyTorch's ``meta`` device (shapes, no data), pickled by Dask like any function it ships.
The worker gives it real memory and loads the version's exact weights from the store, once
per worker process and version.
"""

from __future__ import annotations

import copy
import threading

import torch
from torch import nn

_LOADED: dict[tuple[str, str], nn.Module] = {}  # per worker process: (store url, model_id) -> module
_GUARD = threading.Lock()


def skeleton(module: nn.Module) -> nn.Module:
    """A copy of ``module`` without its weights: every tensor on the ``meta`` device.

    >>> from odinlab.nets import SmallCNN
    >>> bare = skeleton(SmallCNN(1, 10, width=4))
    >>> bare.head.fc2.weight.device.type, bare.head.fc2.weight.shape
    ('meta', torch.Size([10, 16]))
    """
    memo = {}
    for tensor in module.parameters():
        memo[id(tensor)] = nn.Parameter(torch.empty_like(tensor, device="meta"), tensor.requires_grad)
    for tensor in module.buffers():
        memo[id(tensor)] = torch.empty_like(tensor, device="meta")
    return copy.deepcopy(module, memo)  # the weights are in the memo: they are never copied


def pack(module: nn.Module) -> bytes:
    """The skeleton of ``module`` as bytes, pickled by cloudpickle (Dask's serializer cannot send meta
    tensors): a class defined in the notebook travels by value, an importable one by name.

    >>> len(pack(SmallCNN())) < 20_000
    True
    """
    import cloudpickle

    return cloudpickle.dumps(skeleton(module))


def worker_module(store, model_id: str, packed: bytes, device: str | None = None) -> nn.Module:
    """``model_id``'s network on this worker: the :func:`pack` ed skeleton given memory and the
    version's weights loaded from ``store`` (kept for the next task of this worker process), on
    the worker's GPU when it has one (``device`` None), else on its CPU.

    >>> net = worker_module(store, "cnn@1", pack(SmallCNN()))
    >>> torch.equal(net.head.fc2.weight, store.module("cnn@1").head.fc2.weight)
    True
    """
    key = (store.url, model_id)
    with _GUARD:
        module = _LOADED.get(key)
        if module is None:
            import cloudpickle

            device = device or ("cuda" if torch.cuda.is_available() else "cpu")
            module = cloudpickle.loads(packed).to_empty(device=device)
            store.load_weights(module, model_id)
            _LOADED[key] = module.eval()
        else:
            store.check_module(module, model_id)  # attaches it to this store handle
        return module
