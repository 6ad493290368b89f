"""Model versions: registration with lineage and an architecture summary, weights, lookups."""

from __future__ import annotations

import hashlib
import json
import warnings
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import polars as pl
import torch
from torch import nn

from odinlab.errors import (
    ImageFormatError,
    LineageError,
    NotMaterializedError,
    UnknownLayerError,
    UnknownModelError,
    WeightsMismatchError,
    closest,
    listing,
)
from odinlab.store.backend import Backend, writes
from odinlab.store.fs import check_name
from odinlab.store.images import ImageCatalog
from odinlab.store.layout import manifest_parts
from odinlab.store.records import ModelRecord
from odinlab.store.weights import WeightStore, tensor_digest
from odinlab.torch_helpers import evaluating, hooks, module_device

# What `model=` accepts everywhere: an id, a name (its latest version), a record, or a module.
ModelRef = str | ModelRecord | nn.Module


@dataclass(frozen=True)
class TrainingRun:
    """A training run of a module, noted until the module is registered (then it is an experiment)."""

    image_ids: tuple[str, ...]
    hyperparams: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    notes: str | None = None
    label_set: str | None = None  # the label set it trained on; None: the original labels


class ModelRegistry:
    """Model versions, their weights and lineage, and the modules this session holds for them."""

    def __init__(self, backend: Backend, images: ImageCatalog):
        self._backend = backend
        self._images = images
        # Modules registered, loaded or passed in this session, so that a model id is enough to
        # compute on demand. Held until the store is closed: a module given to the store stays.
        # Per version, every module given for it with a fingerprint of its tensors, newest last.
        self._modules: dict[str, list[tuple[nn.Module, tuple]]] = {}
        # Training runs of modules not registered yet (odinlab.training.fit notes them), and who
        # records them once the module is registered: the experiment log sets ``on_trained``.
        self._training: weakref.WeakKeyDictionary[nn.Module, list[TrainingRun]] = weakref.WeakKeyDictionary()
        self.on_trained: Callable[[str, TrainingRun], object] | None = None

    def note_training(self, module: nn.Module, images, *, hyperparams: dict | None = None,
                      metrics: dict | None = None, notes: str | None = None, labels: str | None = None) -> None:
        """Note that ``module`` was trained on ``images``; registering it records the run.

        ``odinlab.training.fit`` calls this; a custom training loop may too. The run becomes an
        experiment (kind ``train``, with its image set) of the version the module is registered
        as, which is how the store knows which predictions are in-sample. ``labels`` names the
        label set trained on (default: the one a selection carries; None: the original labels).

        >>> fresh = SmallCNN()
        >>> store.note_training(fresh, "train", hyperparams={"epochs": 0})
        >>> model_id = store.register_model(fresh, "untrained")
        >>> store.experiments.filter(pl.col("model_id") == model_id).select("kind", "n_train").row(0)
        ('train', 1258)
        """
        selection = self._images.select(images, labels=labels)
        run = TrainingRun(tuple(selection.ids), dict(hyperparams or {}), dict(metrics or {}), notes,
                          selection.label_set)
        self._training.setdefault(module, []).append(run)

    def noted_training(self, module: nn.Module) -> list[TrainingRun]:
        """The training runs noted for ``module`` and not recorded yet."""
        return list(self._training.get(module, []))

    def pop_training(self, module: nn.Module) -> list[TrainingRun]:
        """The training runs noted for ``module`` and not recorded yet, forgotten here."""
        return self._training.pop(module, [])

    @property
    def table(self) -> pl.DataFrame:
        """The models table: one row per version (model_id ``name@N``, parent, params, digest...).

        >>> store.models.select("model_id", "parent", "num_params").rows()
        [('cnn@1', None, 13706)]
        """
        return self._backend.tables.read("models")

    @writes("register")
    def register(self, module: nn.Module, name: str, *, parent: ModelRef | None = None,
                 classes: Sequence[str] | None = None, input_shape: Sequence[int] | None = None,
                 hyperparams: dict | None = None, description: str | None = None) -> str:
        """Store ``module``'s weights as a new version ``name@N`` and return its model id.

        Records the architecture (every named layer's type, output shape and parameter count,
        from one forward pass on zeros), class names, input shape (default: the store's image
        shape, or the parent's) and lineage (``parent``). Tensors already in the store are not
        written again. The module stays attached to the version for this session.

        A new version of an existing name needs ``parent=``: lineage is what the test-set guard
        counts looks by, so an unlinked version would quietly start that count again. The exact
        weights (and settings) of an existing version of the name give back that version.

        >>> store.register_model(net, "cnn")  # the weights of cnn@1: nothing new
        'cnn@1'
        >>> store.register_model(SmallCNN(), "cnn")
        Traceback (most recent call last):
        odinlab.errors.LineageError: There is already a model named 'cnn' (cnn@1). ...
        >>> store.register_model(net, "cnn", parent="cnn@1", hyperparams={"lr": 0.001})
        'cnn@2'
        """
        self._backend.check_writable()
        check_name(name, "model name")
        parent_record = self.record(parent) if parent is not None else None
        if parent_record is None and name in self.table["name"]:
            settings = {"classes": classes, "input_shape": input_shape, "hyperparams": hyperparams,
                        "description": description}
            existing = self._same_version(module, name, settings)
            if existing is None:
                raise self._unlinked_error(name)
            self._attach(existing, module)
            self._record_training(existing, module)
            return existing
        if parent_record is not None:  # a derived version takes its parent's interface by default
            input_shape = parent_record.input_shape if input_shape is None else input_shape
            classes = parent_record.classes if classes is None else classes
        input_shape = self._input_shape(input_shape)
        architecture = summarize(module, input_shape)
        tensors, added = self._put_weights(module)
        versions = self.table.filter(pl.col("name") == name)["version"]
        version = int(versions.max()) + 1 if versions.len() else 1
        model_id = f"{name}@{version}"
        manifest = {"model_id": model_id, "tensors": tensors, "architecture": architecture}
        self._backend.fs.write_bytes(manifest_parts(model_id), json.dumps(manifest).encode())
        self._backend.tables.append("models", pl.DataFrame([{
            "model_id": model_id, "name": name, "version": version,
            "parent": parent_record.model_id if parent_record else None,
            "created_at": datetime.now(UTC), "num_params": sum(p.numel() for p in module.parameters()),
            "num_layers": len(architecture), "input_shape": list(input_shape),
            "classes": list(classes if classes is not None else self._images.classes),
            "weights_digest": weights_digest(tensors), "new_weight_bytes": added,
            "hyperparams": json.dumps(hyperparams or {}, sort_keys=True, default=str),
            "description": description,
        }], schema=self.table.schema))
        self._attach(model_id, module)
        self._record_training(model_id, module)
        return model_id

    def _record_training(self, model_id: str, module: nn.Module) -> None:
        if self.on_trained is not None:
            for run in self.pop_training(module):
                self.on_trained(model_id, run)

    def record(self, model: ModelRef) -> ModelRecord:
        """The frozen record of a version, from ``"name@N"``, ``"name"`` (latest), a record or a module.

        A module is found by its weights (and stays attached to its version for this session).

        >>> store.model("cnn").model_id, store.model(net).model_id
        ('cnn@1', 'cnn@1')
        """
        if isinstance(model, nn.Module):
            model_id = self.model_id_of(model)
            self._attach(model_id, model)
        else:
            model_id = model.model_id if isinstance(model, ModelRecord) else self.resolve(model)
        rows = self.table.filter(pl.col("model_id") == model_id)
        if rows.height == 0:
            raise UnknownModelError(f"Unknown model {model_id!r}: it is not in this store. "
                                    f"Models: {listing(self.table['model_id'].to_list())}.")
        return ModelRecord.from_row(rows.row(0, named=True), lineage=tuple(self._ancestor_ids(model_id)))

    def resolve(self, ref: str | ModelRecord) -> str:
        """The model id for ``"name@N"``, ``"name"`` (its latest version) or a record.

        >>> store.resolve_model("cnn")
        'cnn@1'
        """
        if isinstance(ref, ModelRecord):
            return ref.model_id
        table = self.table
        if isinstance(ref, str) and ref in table["model_id"]:
            return ref
        if isinstance(ref, str) and ref in table["name"]:
            return table.filter(pl.col("name") == ref).sort("version")["model_id"][-1]
        known = table["model_id"].to_list()
        raise UnknownModelError(
            f"Unknown model {ref!r}.{closest(str(ref), known + table['name'].unique().to_list())}"
            f" Models: {listing(known)}."
        )

    def module(self, model: ModelRef) -> nn.Module:
        """The ``nn.Module`` of a version: the one given, or the one this session holds for it.

        The store keeps weights, not code, so in a new session build the network and load the
        weights once (``store.load_weights(MyNet(), "cnn@1")``); the store then holds it.

        >>> store.module("cnn@1") is net
        True
        """
        if isinstance(model, nn.Module):
            self.record(model)  # checks the weights are registered, and attaches the module
            return model
        record = self.record(model)
        module = self._held(record)
        if module is None:
            raise NotMaterializedError(
                f"No module for {record.model_id} in this session: the store keeps weights, not code. "
                f"Build the network and load them once: store.load_weights(MyNet(), {record.model_id!r})."
            )
        return module

    def model_id_of(self, module: nn.Module) -> str:
        """The id of the registered version whose weights equal ``module``'s (latest if several).

        >>> store.model_id_of(net)
        'cnn@1'
        """
        match = self.table.filter(pl.col("weights_digest") == self._digest_of(module)).sort("created_at")
        if match.height == 0:
            raise UnknownModelError(
                "These weights are not registered in the store; call store.register_model(module, name) "
                "first, or load a registered version into it with store.load_weights(module, 'name@N')."
            )
        return match["model_id"][-1]

    def state_dict(self, model: ModelRef) -> dict[str, torch.Tensor]:
        """The stored weights of a version, as a state dict (read without unpickling anything).

        >>> store.state_dict("cnn@1")["head.fc2.bias"].shape
        torch.Size([10])
        """
        weights = WeightStore(self._backend.fs)
        model_id = self.resolve_any(model)
        return {key: weights.get(t["digest"], model_id) for key, t in self._manifest(model_id)["tensors"].items()}

    def load_weights(self, module: nn.Module, model: ModelRef) -> nn.Module:
        """Load a version's exact weights into ``module`` (one you built), attach it, return it.

        The module stays attached to the version until the store is closed, so ids are then
        enough everywhere (``Attributor(store, "cnn@1")``...).

        >>> restored = store.load_weights(SmallCNN(), "cnn@1")
        >>> torch.equal(restored.head.fc2.weight, net.head.fc2.weight)
        True
        """
        if not isinstance(module, nn.Module) and isinstance(model, nn.Module):
            warnings.warn("store.load_weights(model_id, module) is deprecated: the module comes first, "
                          "store.load_weights(module, model_id).", DeprecationWarning, stacklevel=3)
            module, model = model, module
        record = self.record(model)
        problems = self._shape_problems(record, module)
        if problems:
            raise WeightsMismatchError(
                f"The weights of {record.model_id} do not fit this module ({len(problems)} problems: "
                f"{listing(sorted(problems), 5)}). Build the same architecture that was registered."
            )
        module.load_state_dict(self.state_dict(record))
        self._attach(record.model_id, module)
        return module

    def check_module(self, module: nn.Module, model: ModelRef) -> ModelRecord:
        """The record of ``model`` once ``module`` is known to hold its exact weights (then attached).

        Anything computed with ``module`` is stored under this version, so a module with other
        weights or another architecture is refused with :class:`WeightsMismatchError`, which
        says the version the module does hold, if any. Cheap when repeated: a module attached
        to the version is hashed again only if its tensors changed since.

        >>> store.check_module(net, "cnn@1").model_id
        'cnn@1'
        >>> store.check_module(SmallCNN(), "cnn@1")
        Traceback (most recent call last):
        odinlab.errors.WeightsMismatchError: This module does not hold the weights of cnn@1: ...
        """
        record = self.record(model)
        if record.model_id in self._attached_to(module):
            return record
        if self._digest_of(module) != record.weights_digest or self._type_problems(record, module):
            raise WeightsMismatchError(self._mismatch(record, module))
        self._attach(record.model_id, module)
        return record

    def record_and_module(self, model: ModelRef, model_id: str | None = None) -> tuple[ModelRecord, nn.Module]:
        """The version to store results under and the module to compute them with.

        ``model`` is a module (its version found by its weights, or ``model_id``, which it must
        hold: see :meth:`check_module`) or a version whose module this session holds.

        >>> record, module = store._models.record_and_module(net, "cnn@1")
        >>> record.model_id, module is net
        ('cnn@1', True)
        """
        if isinstance(model, nn.Module) and model_id is not None:
            return self.check_module(model, model_id), model
        return self.record(model), self.module(model)

    def architecture(self, model: ModelRef) -> pl.DataFrame:
        """Every named layer of a version: name, type, output shape (per image), parameters.

        >>> store.architecture("cnn@1").row(1)
        ('features.conv1', 'Conv2d', [16, 8, 8], 160)
        """
        return pl.DataFrame(self._manifest(model)["architecture"],
                            schema={"layer": pl.String, "type": pl.String,
                                    "output_shape": pl.List(pl.Int64), "num_params": pl.Int64})

    def layers(self, model: ModelRef) -> list[str]:
        """Names of a version's layers, as ``named_modules()`` gives them.

        >>> store.layers("cnn@1")[:3]
        ['features', 'features.conv1', 'features.relu1']
        """
        return self.architecture(model)["layer"].to_list()

    def check_layers(self, model: ModelRef, layers: str | Sequence[str], module: nn.Module | None = None) -> list[str]:
        """``layers`` without repeats, or :class:`UnknownLayerError` naming the closest and all layers.

        Checked against ``module``'s ``named_modules()`` when given, else the registered architecture.

        >>> store.check_layers("cnn@1", ["head.fc1", "head.fc1"])
        ['head.fc1']
        >>> store.check_layers("cnn@1", "head.fc3")
        Traceback (most recent call last):
        odinlab.errors.UnknownLayerError: Unknown layer 'head.fc3' of cnn@1. Did you mean: head.fc2, head.fc1, head? ...
        """
        layers = [layers] if isinstance(layers, str) else list(layers)
        model_id = self.record(model).model_id
        names = [n for n, _ in module.named_modules() if n] if module is not None else self.layers(model_id)
        for layer in layers:
            if layer not in names:
                raise UnknownLayerError(
                    f"Unknown layer {layer!r} of {model_id}.{closest(layer, names)} Layers: {listing(names, 40)}."
                )
        return list(dict.fromkeys(layers))

    def check_input_shape(self, model: ModelRef) -> None:
        """Raise :class:`ImageFormatError` unless the version takes the store's images as input.

        >>> store.check_input_shape("cnn@1")
        """
        record = self.record(model)
        actual = tuple(self._images.pixel_array.shape[1:])
        if record.input_shape != actual:
            raise ImageFormatError(
                f"{record.model_id} expects input {record.input_shape} (C, H, W) but the store's images are "
                f"{actual}; use a model trained on these images."
            )

    def ancestors(self, model: ModelRef) -> pl.DataFrame:
        """Rows of ``store.models`` from the parent up to the root, with ``depth`` 1, 2, ...

        >>> v2 = store.register_model(net, "cnn", parent="cnn@1")
        >>> store.ancestors(v2)["model_id"].to_list()
        ['cnn@1']
        """
        return self._lineage_rows(self._ancestor_ids(self.resolve_any(model)))

    def descendants(self, model: ModelRef) -> pl.DataFrame:
        """Rows of ``store.models`` derived from a version (children, grandchildren...), with ``depth``.

        >>> v2 = store.register_model(net, "cnn", parent="cnn@1")
        >>> store.descendants("cnn@1").select("model_id", "depth").rows()
        [('cnn@2', 1)]
        """
        root = self.resolve_any(model)
        table, frontier, found, depths, depth = self.table, [root], [], [], 0
        while frontier:
            depth += 1
            frontier = table.filter(pl.col("parent").is_in(frontier))["model_id"].to_list()
            found.extend(frontier)
            depths.extend([depth] * len(frontier))
        return self._lineage_rows(found, depths)

    def lineage(self, model: ModelRef) -> list[str]:
        """Every version of the family of ``model``: its root and all the root's descendants.

        >>> store.lineage("cnn@1")
        ['cnn@1']
        """
        ancestors = self._ancestor_ids(self.resolve_any(model))
        root = ancestors[-1] if ancestors else self.resolve_any(model)
        return [root, *self.descendants(root)["model_id"].to_list()]

    def resolve_any(self, model: ModelRef) -> str:
        """The model id of anything accepted as ``model=``."""
        return self.record(model).model_id if isinstance(model, nn.Module) else self.resolve(model)

    def forget_modules(self) -> None:
        """Let go of every module this session attached (``store.close()`` calls it)."""
        self._modules.clear()

    # -- internals -------------------------------------------------------------------------

    def _attach(self, model_id: str, module: nn.Module) -> None:
        held = [(m, f) for m, f in self._modules.get(model_id, []) if m is not module]
        self._modules[model_id] = [*held, (module, _fingerprint(module))]

    def _held(self, record: ModelRecord) -> nn.Module | None:
        """The newest module given for a version that still holds its weights.

        A module loaded from v1 and then fine-tuned in place no longer computes v1's results:
        its tensors changed (torch counts in-place changes), so its weights are checked
        against the version's digest, and it is let go if they differ.
        """
        held = self._modules.get(record.model_id, [])
        for index in range(len(held) - 1, -1, -1):
            module, fingerprint = held[index]
            if _fingerprint(module) == fingerprint:
                return module
            if _weights_of(module) == record.weights_digest:
                held[index] = (module, _fingerprint(module))
                return module
            del held[index]
        return None

    def _attached_to(self, module: nn.Module) -> list[str]:
        """The versions ``module`` is attached to with its tensors unchanged since (no hashing)."""
        fingerprint = _fingerprint(module)
        return [model_id for model_id, held in self._modules.items()
                if any(m is module and f == fingerprint for m, f in held)]

    def _digest_of(self, module: nn.Module) -> str:
        """``module``'s weights digest, hashed only if its tensors changed since it was attached.

        Every attached module held its version's weights when attached, so an unchanged
        fingerprint means the version's digest still holds (repeated calls cost no hashing).
        """
        attached = self._attached_to(module)
        rows = self.table.filter(pl.col("model_id").is_in(attached)) if attached else None
        return rows["weights_digest"][0] if rows is not None and rows.height else _weights_of(module)

    def _mismatch(self, record: ModelRecord, module: nn.Module) -> str:
        """Why ``module`` is not ``record``'s version, and what to do instead."""
        start = f"This module does not hold the weights of {record.model_id}: "
        problems = self._shape_problems(record, module) or self._type_problems(record, module)
        if problems:
            return (start + f"its architecture differs ({len(problems)} differences: "
                    f"{listing(sorted(problems), 5)}). Pass the network registered as {record.model_id}, "
                    f"or register this one under its own name.")
        holds = self.table.filter(pl.col("weights_digest") == _weights_of(module)).sort("created_at")
        if holds.height:
            return (start + f"its weights are those of {holds['model_id'][-1]}, not {record.model_id}. "
                    f"Pass model_id={holds['model_id'][-1]!r}, or the module of {record.model_id}.")
        return (start + "they match no registered version (trained or changed since?). Register them "
                f"first: store.register_model(module, {record.name!r}, parent={record.model_id!r}), "
                f"or load {record.model_id} into it with store.load_weights(module, {record.model_id!r}).")

    def _shape_problems(self, record: ModelRecord, module: nn.Module) -> list[str]:
        """Tensors missing, unexpected or shaped differently in ``module`` than in the version."""
        stored, own = self._manifest(record)["tensors"], module.state_dict()
        problems = [f"missing {k}" for k in stored.keys() - own.keys()]
        problems += [f"unexpected {k}" for k in own.keys() - stored.keys()]
        problems += [f"{k}: stored {tuple(stored[k]['shape'])}, module {tuple(own[k].shape)}"
                     for k in stored.keys() & own.keys() if list(own[k].shape) != stored[k]["shape"]]
        return problems

    def _type_problems(self, record: ModelRecord, module: nn.Module) -> list[str]:
        """Named layers whose type differs (same tensors, other layers: e.g. GELU for ReLU)."""
        stored = dict(self.architecture(record).select("layer", "type").iter_rows())
        own = {name: type(m).__name__ for name, m in module.named_modules() if name}
        return [f"{name}: {stored.get(name, 'no layer')} registered, {own.get(name, 'no layer')} here"
                for name in sorted(stored.keys() | own.keys()) if stored.get(name) != own.get(name)]

    def _same_version(self, module: nn.Module, name: str, settings: dict) -> str | None:
        """The latest version of ``name`` with ``module``'s weights and no conflicting setting."""
        given = {key: value for key, value in settings.items() if value is not None}
        given = {**given, **({"hyperparams": json.dumps(given["hyperparams"], sort_keys=True, default=str)}
                             if "hyperparams" in given else {})}
        rows = self.table.filter((pl.col("name") == name) & (pl.col("weights_digest") == self._digest_of(module)))
        for row in rows.sort("version", descending=True).iter_rows(named=True):
            if all(_plain(value) == _plain(row[key]) for key, value in given.items()):
                return row["model_id"]
        return None

    def _unlinked_error(self, name: str) -> LineageError:
        versions = self.table.filter(pl.col("name") == name).sort("version")["model_id"].to_list()
        return LineageError(
            f"There is already a model named {name!r} ({listing(versions)}). A new version needs its "
            f"lineage: pass parent={versions[-1]!r} (or the version it was derived from), or register "
            f"it under a new name. Lineage is how the test-set guard counts looks at the test split."
        )

    def _ancestor_ids(self, model_id: str) -> list[str]:
        parents = dict(self.table.select("model_id", "parent").iter_rows())
        chain, current = [], parents.get(model_id)
        while current is not None:
            chain.append(current)
            current = parents.get(current)
        return chain

    def _put_weights(self, module: nn.Module) -> tuple[dict, int]:
        weights, tensors, added = WeightStore(self._backend.fs), {}, 0
        for key, tensor in module.state_dict().items():
            digest, new_bytes = weights.put(tensor)
            tensors[key] = {"digest": digest, "dtype": str(tensor.dtype), "shape": list(tensor.shape)}
            added += new_bytes
        return tensors, added

    def _input_shape(self, input_shape: Sequence[int] | None) -> tuple[int, ...]:
        if input_shape is not None:
            return tuple(int(d) for d in input_shape)
        if "images/pixels" not in self._backend.arrays():
            raise ImageFormatError("No images in the store yet: pass input_shape=(C, H, W).")
        return tuple(self._images.pixel_array.shape[1:])

    def _manifest(self, model: ModelRef) -> dict:
        return json.loads(self._backend.fs.read_bytes(manifest_parts(self.resolve_any(model))))

    def _lineage_rows(self, ids: list[str], depths: list[int] | None = None) -> pl.DataFrame:
        order = pl.DataFrame({"model_id": ids, "depth": depths or list(range(1, len(ids) + 1))},
                             schema={"model_id": pl.String, "depth": pl.Int64})
        return order.join(self.table, on="model_id", how="left", maintain_order="left")


def summarize(model: nn.Module, input_shape: tuple[int, ...]) -> list[dict]:
    """One forward pass on zeros, recording each named layer's type, output shape and params.

    >>> summarize(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), (1, 2, 2))[1]
    {'layer': '1', 'type': 'Linear', 'output_shape': [2], 'num_params': 10}
    """
    shapes: dict[str, list[int]] = {}
    named = [(n, m) for n, m in model.named_modules() if n]

    def record(name, output, inputs):
        shapes[name] = list(output.shape[1:]) if isinstance(output, torch.Tensor) else []

    try:
        with evaluating(model), torch.no_grad(), hooks(model, [n for n, _ in named], record):
            model(torch.zeros(1, *input_shape, device=module_device(model)))
    except Exception as error:
        raise ImageFormatError(
            f"The model does not accept input of shape {(1, *input_shape)} (batch, C, H, W): {error}. "
            "Pass the input_shape it expects."
        ) from error
    return [{"layer": name, "type": type(module).__name__, "output_shape": shapes.get(name, []),
             "num_params": sum(p.numel() for p in module.parameters(recurse=False))}
            for name, module in named]


def _fingerprint(module: nn.Module) -> tuple:
    """Cheap identity of a module's tensors: where they live and how often they were changed in place."""
    return tuple((t.data_ptr(), t._version) for t in module.state_dict().values())


def _plain(value):
    """Sequences as lists, so a tuple given and a list stored compare equal."""
    return list(value) if isinstance(value, tuple | list) else value


def _weights_of(module: nn.Module) -> str:
    return weights_digest({k: {"digest": tensor_digest(t)} for k, t in module.state_dict().items()})


def weights_digest(tensors: dict) -> str:
    """One digest for a whole state dict: the SHA-256 of its sorted (key, tensor digest) pairs."""
    pairs = sorted((key, value["digest"]) for key, value in tensors.items())
    return hashlib.sha256(json.dumps(pairs).encode()).hexdigest()


