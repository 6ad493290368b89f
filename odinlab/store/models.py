"""Model versions: registration with lineage and an architecture summary, weights, lookups."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime

import polars as pl
import torch
from torch import nn

from odinlab.errors import ImageFormatError, UnknownModelError, WeightsMismatchError, closest, listing
from odinlab.store.fs import check_name
from odinlab.store.weights import WeightStore, tensor_digest


class ModelsMixin:
    """Store methods for model versions; mixed into :class:`odinlab.Store`."""

    @property
    def models(self) -> pl.DataFrame:
        """The models table: one row per version (model_id ``name@N``, parent, params, digest...).

        >>> store.models.select("model_id", "parent", "num_params").rows()
        [('cnn@1', None, 13706)]
        """
        return self._tables.read("models")

    def register_model(self, model: nn.Module, name: str, *, parent: str | None = None,
                       classes: Sequence[str] | None = None,
                       input_shape: Sequence[int] | None = None,
                       hyperparams: dict | None = None, description: str | None = None) -> str:
        """Store ``model``'s weights as a new version ``name@N`` and return its model id.

        Records the architecture (every named layer's type, output shape and parameter count,
        from one forward pass on zeros), class names, input shape (default: the store's image
        shape, or the parent's) and lineage (``parent``). Tensors already in the store are not written again.

        >>> store.register_model(net, "cnn", parent="cnn@1", hyperparams={"lr": 0.001})
        'cnn@2'
        """
        self._check_writable()
        check_name(name, "model name")
        parent_id = self.resolve_model(parent) if parent is not None else None
        if parent_id is not None:  # a derived version takes its parent's interface by default
            parent_row = self._row(parent_id)
            input_shape = parent_row["input_shape"] if input_shape is None else input_shape
            classes = parent_row["classes"] if classes is None else classes
        input_shape = self._input_shape(input_shape)
        architecture = summarize(model, input_shape)
        tensors, added = self._put_weights(model)
        versions = self.models.filter(pl.col("name") == name)["version"]
        version = int(versions.max()) + 1 if versions.len() else 1
        model_id = f"{name}@{version}"
        manifest = {"model_id": model_id, "tensors": tensors, "architecture": architecture}
        self._fs.write_bytes(_manifest_parts(name, version), json.dumps(manifest).encode())
        self._tables.append("models", pl.DataFrame([{
            "model_id": model_id, "name": name, "version": version, "parent": parent_id,
            "created_at": datetime.now(UTC), "num_params": sum(p.numel() for p in model.parameters()),
            "num_layers": len(architecture), "input_shape": list(input_shape),
            "classes": list(classes if classes is not None else self.classes),
            "weights_digest": weights_digest(tensors), "new_weight_bytes": added,
            "hyperparams": json.dumps(hyperparams or {}, sort_keys=True, default=str),
            "description": description,
        }], schema=self.models.schema))
        self._modules[model_id] = model
        return model_id

    def resolve_model(self, ref: str) -> str:
        """The model id for ``"name@N"`` or ``"name"`` (its latest version).

        >>> store.resolve_model("cnn")
        'cnn@1'
        """
        table = self.models
        if isinstance(ref, str) and ref in table["model_id"]:
            return ref
        if isinstance(ref, str) and ref in table["name"]:
            return table.filter(pl.col("name") == ref).sort("version")["model_id"][-1]
        known = table["model_id"].to_list()
        raise UnknownModelError(
            f"Unknown model {ref!r}.{closest(str(ref), known + table['name'].unique().to_list())}"
            f" Models: {listing(known)}."
        )

    def model_id_of(self, model: nn.Module) -> str:
        """The id of the registered version whose weights equal ``model``'s (latest if several).

        >>> store.model_id_of(net)
        'cnn@1'
        """
        digest = weights_digest({k: {"digest": tensor_digest(t)} for k, t in model.state_dict().items()})
        match = self.models.filter(pl.col("weights_digest") == digest).sort("created_at")
        if match.height == 0:
            raise UnknownModelError(
                "These weights are not registered in the store; call "
                "store.register_model(model, name) first, or pass model_id=."
            )
        return match["model_id"][-1]

    def state_dict(self, model_id: str) -> dict[str, torch.Tensor]:
        """The stored weights of a version, as a state dict (read without unpickling anything).

        >>> store.state_dict("cnn@1")["head.fc2.bias"].shape
        torch.Size([10])
        """
        weights = WeightStore(self._fs)
        return {key: weights.get(t["digest"]) for key, t in self._manifest(model_id)["tensors"].items()}

    def load_weights(self, model_id: str, model: nn.Module) -> nn.Module:
        """Load a version's exact weights into ``model`` (a module you built) and return it.

        >>> restored = store.load_weights("cnn@1", SmallCNN())
        >>> torch.equal(restored.head.fc2.weight, net.head.fc2.weight)
        True
        """
        stored = self._manifest(self.resolve_model(model_id))["tensors"]
        own = model.state_dict()
        problems = [f"missing {k}" for k in stored.keys() - own.keys()]
        problems += [f"unexpected {k}" for k in own.keys() - stored.keys()]
        problems += [f"{k}: stored {tuple(stored[k]['shape'])}, module {tuple(own[k].shape)}"
                     for k in stored.keys() & own.keys() if list(own[k].shape) != stored[k]["shape"]]
        if problems:
            raise WeightsMismatchError(
                f"The weights of {model_id} do not fit this module ({len(problems)} problems: "
                f"{listing(sorted(problems), 5)}). Build the same architecture that was registered."
            )
        model_id = self.resolve_model(model_id)
        model.load_state_dict(self.state_dict(model_id))
        self._modules[model_id] = model
        return model

    def architecture(self, model_id: str) -> pl.DataFrame:
        """Every named layer of a version: name, type, output shape (per image), parameters.

        >>> store.architecture("cnn@1").row(1)
        ('features.conv1', 'Conv2d', [16, 8, 8], 160)
        """
        return pl.DataFrame(self._manifest(self.resolve_model(model_id))["architecture"],
                            schema={"layer": pl.String, "type": pl.String,
                                    "output_shape": pl.List(pl.Int64), "num_params": pl.Int64})

    def layers(self, model_id: str) -> list[str]:
        """Names of a version's layers, as ``named_modules()`` gives them.

        >>> store.layers("cnn@1")[:3]
        ['features', 'features.conv1', 'features.relu1']
        """
        return self.architecture(model_id)["layer"].to_list()

    def ancestors(self, model_id: str) -> pl.DataFrame:
        """Rows of ``store.models`` from the parent up to the root, with ``depth`` 1, 2, ...

        >>> v2 = store.register_model(net, "cnn", parent="cnn@1")
        >>> store.ancestors(v2)["model_id"].to_list()
        ['cnn@1']
        """
        chain, current = [], self._row(self.resolve_model(model_id))["parent"]
        while current is not None:
            chain.append(current)
            current = self._row(current)["parent"]
        return self._lineage_rows(chain)

    def descendants(self, model_id: str) -> pl.DataFrame:
        """Rows of ``store.models`` derived from a version (children, grandchildren...), with ``depth``.

        >>> v2 = store.register_model(net, "cnn", parent="cnn@1")
        >>> store.descendants("cnn@1").select("model_id", "depth").rows()
        [('cnn@2', 1)]
        """
        table, frontier, found = self.models, [self.resolve_model(model_id)], []
        while frontier:
            frontier = table.filter(pl.col("parent").is_in(frontier))["model_id"].to_list()
            found.extend(frontier)
        return self._lineage_rows(found, table, depth_of=self._depth_from(model_id))

    # -- internals -------------------------------------------------------------------------

    def _put_weights(self, model: nn.Module) -> tuple[dict, int]:
        weights, tensors, added = WeightStore(self._fs), {}, 0
        for key, tensor in model.state_dict().items():
            digest, new_bytes = weights.put(tensor)
            tensors[key] = {"digest": digest, "dtype": str(tensor.dtype), "shape": list(tensor.shape)}
            added += new_bytes
        return tensors, added

    def _input_shape(self, input_shape: Sequence[int] | None) -> tuple[int, ...]:
        if input_shape is not None:
            return tuple(int(d) for d in input_shape)
        if "images/pixels" not in self._arrays():
            raise ImageFormatError("No images in the store yet: pass input_shape=(C, H, W).")
        return tuple(self.pixel_array.shape[1:])

    def _manifest(self, model_id: str) -> dict:
        row = self._row(self.resolve_model(model_id))
        return json.loads(self._fs.read_bytes(_manifest_parts(row["name"], row["version"])))

    def _row(self, model_id: str) -> dict:
        return self.models.filter(pl.col("model_id") == model_id).row(0, named=True)

    def _lineage_rows(self, ids: list[str], table=None, depth_of=None) -> pl.DataFrame:
        table = self.models if table is None else table
        order = pl.DataFrame({"model_id": ids, "depth": [depth_of(i) if depth_of else n + 1
                                                         for n, i in enumerate(ids)]},
                             schema={"model_id": pl.String, "depth": pl.Int64})
        return order.join(table, on="model_id", how="left", maintain_order="left")

    def _depth_from(self, root: str):
        root = self.resolve_model(root)

        def depth(model_id: str) -> int:
            steps = 0
            while model_id != root:
                model_id, steps = self._row(model_id)["parent"], steps + 1
            return steps
        return depth


def summarize(model: nn.Module, input_shape: tuple[int, ...]) -> list[dict]:
    """One forward pass on zeros, recording each named layer's type, output shape and params.

    >>> summarize(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), (1, 2, 2))[1]
    {'layer': '1', 'type': 'Linear', 'output_shape': [2], 'num_params': 10}
    """
    shapes: dict[str, list[int]] = {}
    named = [(n, m) for n, m in model.named_modules() if n]

    def hook_for(name):
        def hook(module, inputs, output):
            first = output[0] if isinstance(output, tuple | list) and output else output
            shapes[name] = list(first.shape[1:]) if isinstance(first, torch.Tensor) else []
        return hook

    handles = [module.register_forward_hook(hook_for(name)) for name, module in named]
    was_training = model.training
    try:
        device = next(model.parameters(), torch.empty(0)).device
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_shape, device=device))
    except Exception as error:
        raise ImageFormatError(
            f"The model does not accept input of shape {(1, *input_shape)} (batch, C, H, W): {error}. "
            "Pass the input_shape it expects."
        ) from error
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return [{"layer": name, "type": type(module).__name__, "output_shape": shapes.get(name, []),
             "num_params": sum(p.numel() for p in module.parameters(recurse=False))}
            for name, module in named]


def weights_digest(tensors: dict) -> str:
    """One digest for a whole state dict: the SHA-256 of its sorted (key, tensor digest) pairs."""
    pairs = sorted((key, value["digest"]) for key, value in tensors.items())
    return hashlib.sha256(json.dumps(pairs).encode()).hexdigest()


def _manifest_parts(name: str, version: int) -> tuple[str, ...]:
    return ("models", check_name(name, "model name"), f"v{int(version)}.json")
