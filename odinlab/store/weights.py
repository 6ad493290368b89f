"""Content-addressed tensor storage: no pickle, and versions that share tensors share bytes.

Each tensor is one safetensors file named by the SHA-256 of its dtype, shape and bytes
(ModelHub's archival idea). A fine-tuned version with frozen layers re-uses the frozen
tensors' files and adds only the ones that changed. The name is also the check: every load
re-hashes the tensor and refuses one that does not match its name (a tampered or damaged file).
"""

from __future__ import annotations

import hashlib
import json

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from odinlab.errors import CorruptStoreError, listing
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

    def get(self, digest: str, model_id: str | None = None) -> torch.Tensor:
        """The tensor named ``digest``, re-hashed: a file that is missing, unreadable or not the
        tensor its name promises raises :class:`CorruptStoreError` naming the file and the model
        versions that use it (``model_id`` when given, else found from the manifests).

        >>> ws = WeightStore(StoreFS("memory://weights-tampered"))
        >>> digest, _ = ws.put(torch.ones(3))
        >>> ws._fs.write_bytes(ws._parts(digest), save_safetensors({"tensor": torch.zeros(3)}))
        >>> ws.get(digest, "cnn@1")
        Traceback (most recent call last):
        odinlab.errors.CorruptStoreError: The weights file weights/.../....safetensors of cnn@1 holds other values...
        """
        return self.check(digest, self._read(digest, model_id), model_id)

    def check(self, digest: str, data: bytes, model_id: str | None = None) -> torch.Tensor:
        """Parse and re-hash the bytes of weights file ``digest``; refuse them if damaged."""
        try:
            tensor = load_safetensors(data)["tensor"]
        except Exception as error:  # noqa: BLE001 - safetensors' own errors name no file
            raise self._damaged(digest, model_id, f"is not a readable safetensors file ({error})") from None
        if tensor_digest(tensor) != digest:
            raise self._damaged(digest, model_id, "holds other values than the tensor its name (a SHA-256) "
                                "promises: it was altered or damaged")
        return tensor

    def _read(self, digest: str, model_id: str | None) -> bytes:
        try:
            return self._fs.read_bytes(self._parts(digest))
        except FileNotFoundError:
            raise self._damaged(digest, model_id, "is missing") from None

    def _damaged(self, digest: str, model_id: str | None, why: str) -> CorruptStoreError:
        users = [model_id] if model_id else self.users(digest)
        of = f" of {listing(users)}" if users else ""
        return CorruptStoreError(
            f"The weights file {'/'.join(self._parts(digest))}{of} {why}. The store is damaged: restore that "
            "file from a copy; `odinlab verify STORE` lists everything that is damaged."
        )

    def users(self, digest: str) -> list[str]:
        """Model versions whose manifests use the tensor ``digest`` (read only to name them in errors)."""
        found = []
        for path in sorted(self._fs.fs.glob(self._fs.path(("models",)) + "/*/*.json")):
            try:
                manifest = json.loads(self._fs.fs.cat_file(path))
            except (OSError, ValueError):
                continue  # a damaged manifest is verify()'s to report
            if any(t.get("digest") == digest for t in manifest.get("tensors", {}).values()):
                found.append(manifest.get("model_id", path.rsplit("/", 2)[-2]))
        return found

    @staticmethod
    def _parts(digest: str) -> tuple[str, ...]:
        return ("weights", digest[:2], f"{digest}.safetensors")
