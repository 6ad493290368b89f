"""The user-facing object: per-sample gradients of some layers of one model version, kept in the
store in compact form (MetaStore's prefix and suffix) or full, and the analytics run on them.
"""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import torch
from torch import nn

from odinlab.debug.gradients import operators as ops
from odinlab.debug.gradients.capture import (
    DTYPES,
    LayerArrays,
    capture_rows,
    compute_rows,
    gradients_path,
)
from odinlab.debug.gradients.kernels import Grads
from odinlab.debug.gradients.layers import LayerSpec, UnsupportedLayerError, layer_specs
from odinlab.debug.gradients.plan import choose_forms, plan_frame
from odinlab.errors import LabelError, NotMaterializedError, UnknownLayerError, listing
from odinlab.store.images import ImageSelection


class GradientStore:
    """Per-sample gradients of ``layers`` (Linear or Conv2d) of one model version.

    ``model`` is a module (its version is found from its weights, or give ``model_id``) or a
    model id; with an id and no module in this session, everything already captured can still
    be read and compared (the layer geometry is stored with the arrays). ``form`` is "auto"
    (the smaller of compact and full per layer), "compact", "full" or ``{layer: form}``.
    ``dtype`` ("float32" or "float64") is what is stored and computed with.

    >>> grads = GradientStore(store, net, ["features.conv1", "head.fc2"])
    >>> grads.capture("val", progress=False).select("layer", "form", "computed").rows()
    [('features.conv1', 'full', 269), ('head.fc2', 'compact', 269)]
    >>> grads.similarity("val", cosine=True).shape
    (269, 269)
    """

    def __init__(self, store, model: nn.Module | str, layers, form: str | dict = "auto", *,
                 dtype: str = "float32", model_id: str | None = None):
        if dtype not in DTYPES:
            raise ValueError(f"Unknown dtype {dtype!r}; gradients are stored as {' or '.join(DTYPES)}.")
        layers = [layers] if isinstance(layers, str) else list(layers)
        if not layers:
            raise UnknownLayerError("No layers given; name one or more Linear or Conv2d layers.")
        if isinstance(model, nn.Module):
            self.module, self.model_id = store._module_for(model, model_id)
        else:
            self.model_id = store.resolve_model(model)
            self.module = store._modules.get(self.model_id)
        self.store, self.dtype, self._form = store, dtype, form
        self._opened: dict[str, LayerArrays | None] = {}  # arrays opened in this session, per layer
        self._memo = None  # (targets, in-memory gradients) of the last influence(target=...)
        self.layers = store._check_layers(self.module, self.model_id, layers)
        self.specs = self._layer_specs()
        self.forms = choose_forms(self.specs, form)

    def __repr__(self) -> str:
        forms = ", ".join(f"{layer}: {form}" for layer, form in self.forms.items())
        return f"<GradientStore {self.model_id} ({forms}), {self.dtype}>"

    def plan(self) -> pl.DataFrame:
        """Per layer: bytes per image of the compact and the full form, and the form kept.

        >>> plan = GradientStore(store, net, ["features.conv1"]).plan()
        >>> plan.select("layer", "compact_bytes", "full_bytes", "form").rows()
        [('features.conv1', 4352, 640, 'full')]
        """
        return plan_frame(self.specs, self.forms, self.dtype)

    def capture(self, images: ImageSelection = None, *, batch_size: int = 128, progress: bool = True) -> pl.DataFrame:
        """Compute and store the gradients of every layer for ``images``: one forward and one
        backward pass per batch, model in eval mode, cross-entropy against the label summed over
        the batch. Rows already stored are skipped (a second call computes nothing).

        >>> grads = GradientStore(store, net, "head.fc2")
        >>> grads.capture(["digits-0000", "digits-0001"], progress=False)["computed"].to_list()
        [2]
        >>> grads.capture(["digits-0000", "digits-0001"], progress=False)["reused"].to_list()
        [2]
        """
        self.store._check_writable()
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, not {batch_size!r}.")
        module = self._require_module("capture gradients")
        self.store._check_input_shape(self.model_id)
        rows = np.unique(self.store._select_rows(images)["_row"].to_numpy())
        targets = {layer: self._open(layer, create=True) for layer in self.layers}
        self._record_plan()
        computed = capture_rows(self.store, module, self.model_id, targets, rows, batch_size=batch_size,
                                progress=progress)
        if progress and not any(computed.values()):
            print(f"{self.model_id}: gradients of {len(self.layers)} layers are already stored for these "
                  f"{len(rows)} images; nothing computed.")
        return pl.DataFrame([{"layer": layer, "form": self.forms[layer], "images": len(rows),
                              "computed": computed[layer], "reused": len(rows) - computed[layer]}
                             for layer in self.layers])

    def restore(self, images: ImageSelection, layer: str) -> dict[str, torch.Tensor]:
        """The exact weight and bias gradients of ``layer``: ``{"weight", "bias"}`` tensors,
        unbatched for one image id, else with the selected images first.

        >>> grads = GradientStore(store, net, "head.fc2")
        >>> {k: tuple(v.shape) for k, v in grads.restore("digits-0000", "head.fc2").items()}
        {'weight': (10, 64), 'bias': (10,)}
        """
        self._check_layer(layer)
        selected = self.store._select_rows(images)
        restored = self._grads(layer, selected["_row"].to_numpy()).restore()
        if isinstance(images, str) and selected.height == 1 and selected["image_id"][0] == images:
            return {k: v[0] for k, v in restored.items()}
        return restored

    def norms(self, images: ImageSelection = None, *, layers=None) -> np.ndarray:
        """Per-image gradient norms over ``layers`` (all by default; weights and biases together).

        For a Linear layer on vectors ‖∇‖ = ‖g‖·‖[a, 1]‖, exactly, without building ∇.

        >>> GradientStore(store, net, "head.fc2").norms(["digits-0000", "digits-0001"]).shape
        (2,)
        """
        rows = self.store._select_rows(images)["_row"].to_numpy()
        total = np.zeros(len(rows))
        for layer in self._chosen(layers):
            for start in range(0, len(rows), self._block(layer)):
                part = rows[start : start + self._block(layer)]
                total[start : start + len(part)] += self._grads(layer, part).sq_norms().double().cpu().numpy()
        return np.sqrt(total)

    def similarity(self, a: ImageSelection = None, b: ImageSelection = None, *, cosine: bool = False,
                   layers=None) -> np.ndarray:
        """(len(a), len(b)) matrix of gradient dot products (or cosines) summed over ``layers``;
        ``b`` defaults to ``a``. Computed on the stored form with batched matrix products.

        >>> GradientStore(store, net, "head.fc2").similarity(["digits-0000"], "val", cosine=True).shape
        (1, 269)
        """
        rows_a = self.store._select_rows(a)["_row"].to_numpy()
        rows_b = rows_a if b is None else self.store._select_rows(b)["_row"].to_numpy()
        dots, sq_a, sq_b = self._pairwise([(self, 1.0)], rows_a, rows_b, self._chosen(layers))
        return ops.cosine(dots, sq_a, sq_b) if cosine else dots

    def most_similar(self, query, images: ImageSelection = None, k: int = 5, *, cosine: bool = True,
                     layers=None) -> pl.DataFrame:
        """The ``k`` images (of ``images``, all by default) most similar in gradient to each query:
        query_id, rank, image_id, score. ``query`` is an image selection (a test image...) or a
        dense gradient ``{layer: weight-shaped tensor or {"weight", "bias"}}`` (query_id "query").

        >>> grads = GradientStore(store, net, "head.fc2")
        >>> grads.most_similar("digits-0000", "train", k=3)["rank"].to_list()
        [1, 2, 3]
        """
        table = self.store._select_rows(images)
        if isinstance(query, dict):
            scores = self.scores(query, table["image_id"], cosine=cosine)[None, :]
            return ops.top_k(scores, ["query"], table["image_id"].to_list(), k)
        queries = self.store._select_rows(query)
        scores = self.similarity(queries["image_id"], table["image_id"], cosine=cosine, layers=layers)
        return ops.top_k(scores, queries["image_id"].to_list(), table["image_id"].to_list(), k)

    def influence(self, test_images: ImageSelection, train_images: ImageSelection = None, *, checkpoints=None,
                  lr=None, target=None, layers=None) -> np.ndarray:
        """TracIn: (test, train) matrix of Σ_checkpoints lr · ⟨∇ℓ(test), ∇ℓ(train)⟩ over ``layers``.

        ``checkpoints`` are model ids of the same architecture; by default this version and every
        ancestor (``store.ancestors``) whose gradients of these layers were captured. ``lr`` is a
        number, ``{model_id: lr}``, or None for each version's ``hyperparams["lr"]`` (else 1).
        Test gradients use the label, or ``target`` (a class index or name, or one per test image).

        >>> grads = GradientStore(store, net, "head.fc2")
        >>> grads.influence(["digits-0000"], "val").shape
        (1, 269)
        """
        rows_a = self.store._select_rows(test_images)["_row"].to_numpy()
        rows_b = self.store._select_rows(train_images)["_row"].to_numpy()
        sources = [(self._at(c), self._lr(c, lr)) for c in self._checkpoints(checkpoints)]
        classes = None if target is None else self._targets(target, len(rows_a))
        dots, _, _ = self._pairwise(sources, rows_a, rows_b, self._chosen(layers), classes)
        return dots

    def scores(self, query: dict, images: ImageSelection = None, *, cosine: bool = False) -> np.ndarray:
        """⟨Q, ∇_i⟩ per image for a dense query ``{layer: Q}`` (Q of the weight's shape, or
        ``{"weight", "bias"}``), summed over its layers: Σ_p g_pᵀ Q u_p without building ∇_i.

        >>> grads = GradientStore(store, net, "head.fc2")
        >>> grads.scores({"head.fc2": torch.ones(10, 64)}, ["digits-0000", "digits-0001"]).shape
        (2,)
        """
        if not isinstance(query, dict) or not query:
            raise ops.QueryShapeError("query is a dict {layer: weight-shaped tensor}, e.g. what restore() returns.")
        rows = self.store._select_rows(images)["_row"].to_numpy()
        total, sq, q_sq = np.zeros(len(rows)), np.zeros(len(rows)), 0.0
        for layer, q in query.items():
            self._check_layer(layer)
            flat = ops.flat_query(self.specs[layer], q, getattr(torch, self.dtype))
            q_sq += float(flat.double().square().sum())
            for start in range(0, len(rows), self._block(layer)):
                grads = self._grads(layer, rows[start : start + self._block(layer)])
                total[start : start + len(grads)] += grads.dense(flat).double().cpu().numpy()
                if cosine:
                    sq[start : start + len(grads)] += grads.sq_norms().double().cpu().numpy()
        return ops.cosine(total[None], np.array([q_sq]), sq)[0] if cosine else total

    def sizes(self) -> pl.DataFrame:
        """Bytes on disk per layer of the compact and the full form (None where not stored), the
        images stored, and the ratio full / compact (on disk if both are stored, else per image).

        >>> grads = GradientStore(store, net, "head.fc2")
        >>> _ = grads.capture("val", progress=False)
        >>> grads.sizes().select("layer", "form", "images").rows()
        [('head.fc2', 'compact', 269)]
        """
        rows = []
        for layer, spec in self.specs.items():
            disk, images = {}, 0
            for form in ("compact", "full"):
                arrays = LayerArrays.open(self.store, self.model_id, spec, form, self.dtype)
                path = ("arrays", *gradients_path(self.model_id, layer).split("/"), f"{form}-{self.dtype}")
                disk[form] = self.store._fs.size(path) if arrays is not None else None
                images = arrays.done_count() if arrays is not None and form == self.forms[layer] else images
            both = disk["compact"] and disk["full"]
            rows.append({"layer": layer, "form": self.forms[layer], "images": images,
                         "compact_disk_bytes": disk["compact"], "full_disk_bytes": disk["full"],
                         "full_over_compact": disk["full"] / disk["compact"] if both
                         else spec.full_values / spec.compact_values})
        return pl.DataFrame(rows, schema={"layer": pl.String, "form": pl.String, "images": pl.Int64,
                                          "compact_disk_bytes": pl.Int64, "full_disk_bytes": pl.Int64,
                                          "full_over_compact": pl.Float64})

    # -- internals -------------------------------------------------------------------------

    def _layer_specs(self) -> dict[str, LayerSpec]:
        if self.module is not None:
            shape = tuple(self.store._row(self.model_id)["input_shape"])
            return layer_specs(self.module, self.layers, shape, self.model_id)
        specs, group = {}, self.store._arrays()
        arch = self.store.architecture(self.model_id)
        for layer in self.layers:
            kind = arch.filter(pl.col("layer") == layer)["type"][0]
            if kind not in ("Linear", "Conv2d"):
                raise UnsupportedLayerError(f"Layer {layer!r} of {self.model_id} is a {kind}; per-sample "
                                            "gradients are kept for nn.Linear and nn.Conv2d layers only.")
            path = gradients_path(self.model_id, layer)
            if path not in group or "spec" not in group[path].attrs:
                raise NotMaterializedError(
                    f"No gradients of {layer} of {self.model_id} are stored and this session has no module "
                    f"for it; pass the module: GradientStore(store, my_net, ...).")
            specs[layer] = LayerSpec.from_json(group[path].attrs["spec"])
        return specs

    def _record_plan(self) -> None:
        for layer, spec in self.specs.items():
            group = self.store._arrays(mode="a").require_group(gradients_path(self.model_id, layer))
            size = np.dtype(self.dtype).itemsize
            group.attrs.update({"spec": spec.to_json(), "form": self.forms[layer], "dtype": self.dtype,
                                "compact_bytes": spec.compact_values * size, "full_bytes": spec.full_values * size})

    def _open(self, layer: str, create: bool = False) -> LayerArrays | None:
        """The layer's arrays, opened once per session (opening reads Zarr metadata) unless created."""
        if create or self._opened.get(layer) is None:
            self._opened[layer] = LayerArrays.open(self.store, self.model_id, self.specs[layer],
                                                   self.forms[layer], self.dtype, create)
        return self._opened[layer]

    def _require_module(self, what: str) -> nn.Module:
        if self.module is None:
            raise NotMaterializedError(
                f"No module for {self.model_id} in this session to {what} with: the store keeps weights, "
                f"not code. Build the network and pass it: store.load_weights({self.model_id!r}, MyNet()).")
        return self.module

    def _grads(self, layer: str, rows: np.ndarray) -> Grads:
        """Stored gradients of ``rows`` (any order), capturing missing ones when the module is here."""
        arrays = self._open(layer)
        if arrays is not None and len(rows) and rows.max() >= arrays.capacity:  # images ingested since
            arrays = self._open(layer, create=not self.store.read_only)
        missing = np.unique(rows) if arrays is None else np.unique(rows[~arrays.done_rows(rows)])
        if len(missing):
            if self.module is None:
                raise NotMaterializedError(
                    f"Gradients of {layer} of {self.model_id} are not captured for {len(missing)} of these "
                    f"{len(rows)} images; pass the module (GradientStore(store, my_net, ...)) or capture them.")
            ids = self.store._tables.read("images").filter(pl.col("_row").is_in(missing))["image_id"]
            self.capture(ids, progress=False)
            arrays = self._opened[layer]
        return arrays.read(rows)

    def _block(self, layer: str) -> int:
        return ops.block_rows(self.specs[layer], self.forms[layer], np.dtype(self.dtype).itemsize)

    def _pairwise(self, sources, rows_a, rows_b, layers, classes=None):
        def terms():  # one term's gradients of the first set in memory at a time
            for source, weight in sources:
                for layer in layers:
                    grads_a = source._grads(layer, rows_a) if classes is None \
                        else source._computed(layer, rows_a, classes)
                    yield weight, grads_a, lambda rows, s=source, name=layer, a=grads_a: \
                        a if classes is None and np.array_equal(rows, rows_a) else s._grads(name, rows)

        block = min(self._block(layer) for layer in layers)
        return ops.pairwise(terms(), len(rows_a), rows_b, block)

    def _computed(self, layer: str, rows: np.ndarray, classes: np.ndarray) -> Grads:
        module = self._require_module("compute test gradients against a target")
        if self._memo is None or self._memo[0] is not classes:
            self._memo = (classes, compute_rows(self.store, module, self.specs, rows, classes))
        grads = self._memo[1][layer]
        dtype = getattr(torch, self.dtype)
        return Grads(grads.spec, prefix=grads.prefix.to(dtype), suffix=grads.suffix.to(dtype))

    def _chosen(self, layers) -> list[str]:
        layers = self.layers if layers is None else [layers] if isinstance(layers, str) else list(layers)
        for layer in layers:
            self._check_layer(layer)
        return layers

    def _check_layer(self, layer: str) -> None:
        if layer not in self.specs:
            raise UnknownLayerError(f"Layer {layer!r} is not one of this GradientStore's layers: "
                                    f"{listing(self.layers)}. Make a GradientStore with it.")

    def _at(self, model_id: str) -> GradientStore:
        model_id = self.store.resolve_model(model_id)
        if model_id == self.model_id:
            return self
        return GradientStore(self.store, model_id, self.layers, self._form, dtype=self.dtype)

    def _checkpoints(self, checkpoints) -> list[str]:
        if checkpoints is not None:
            ids = [checkpoints] if isinstance(checkpoints, str) else list(checkpoints)
            return [self.store.resolve_model(c) for c in ids]
        found, group = [self.model_id], self.store._arrays()
        for ancestor in self.store.ancestors(self.model_id)["model_id"].to_list():
            if all(gradients_path(ancestor, layer) in group for layer in self.layers):
                found.append(ancestor)
        return found

    def _lr(self, model_id: str, lr) -> float:
        if isinstance(lr, dict):
            if model_id not in lr:
                raise ValueError(f"lr has no value for checkpoint {model_id}; give {{model_id: lr}} for each.")
            return float(lr[model_id])
        if lr is not None:
            return float(lr)
        hyper = json.loads(self.store._row(model_id)["hyperparams"] or "{}")
        return float(hyper.get("lr", 1.0))

    def _targets(self, target, n: int) -> np.ndarray:
        classes = self.store.classes
        values = [target] * n if isinstance(target, int | str | np.integer) else list(target)
        if len(values) != n:
            raise LabelError(f"target has {len(values)} values for {n} test images; give one, or one per image.")
        out = []
        for value in values:
            if isinstance(value, str) and value in classes:
                value = classes.index(value)
            if not isinstance(value, int | np.integer) or not 0 <= value < max(len(classes), 1):
                raise LabelError(f"Unknown target {value!r}; use a class index 0..{len(classes) - 1} "
                                 f"or a class name ({listing(classes)}).")
            out.append(int(value))
        return np.array(out, np.int64)
