"""Content-addressed tensor storage: no pickle, and versions that share tensors share bytes.

Each tensor is one safetensors file named by the SHA-256 of its dtype, shape and bytes
(ModelHub's archival idea). A fine-tuned version with frozen layers re-uses the frozen
tensors' files and adds only the ones that changed.
"""

from __future__ import annotations

import hashlib

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from odinlab.store.fs import StoreFS


def tensor_digest(tensor: torch.Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and bytes.

    >>> tensor_digest(torch.zeros(2)) == tensor_digest(torch.zeros(2))
    True
    """
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    header = f"{flat.dtype}|{tuple(tensor.shape)}|".encode()
    return hashlib.sha256(header + flat.view(torch.uint8).numpy().tobytes()).hexdigest()


class WeightStore:
    """Put and get tensors by content digest under ``weights/``.

    >>> ws = WeightStore(StoreFS("memory://weights-doc"))
    >>> digest, added = ws.put(torch.ones(3)); ws.get(digest)
    tensor([1., 1., 1.])
    """

    def __init__(self, fs: StoreFS):
        self._fs = fs

    def put(self, tensor: torch.Tensor) -> tuple[str, int]:
        """Store ``tensor`` unless an identical one is there; return (digest, bytes added)."""
        digest = tensor_digest(tensor)
        parts = self._parts(digest)
        if self._fs.exists(parts):
            return digest, 0
        data = save_safetensors({"tensor": tensor.detach().cpu().contiguous()})
        self._fs.write_bytes(parts, data)
        return digest, len(data)

    def get(self, digest: str) -> torch.Tensor:
        return load_safetensors(self._fs.read_bytes(self._parts(digest)))["tensor"]

    @staticmethod
    def _parts(digest: str) -> tuple[str, ...]:
        return ("weights", digest[:2], f"{digest}.safetensors")
