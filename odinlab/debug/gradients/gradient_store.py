"""The user-facing object: per-sample gradients of some layers of one model version, kept in the
store in compact form (MetaStore's prefix and suffix) or full, and the analytics run on them.

Every result carries its image ids: per-image results are DataArrays over ``image_id``, matrices
over two image sets DataArrays over ``("image_id_a", "image_id_b")``, nearest neighbours a polars
frame with ``image_id_a`` (the query) and ``image_id_b`` (the neighbour).
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import polars as pl
import torch
import xarray as xr
from torch import nn

from odinlab.debug.gradients import operators as ops
from odinlab.debug.gradients.capture import (
    AREA,
    DTYPES,
    LayerArrays,
    capture_selection,
    compute_selection,
    predicted_classes,
)
from odinlab.debug.gradients.kernels import Grads
from odinlab.debug.gradients.layers import LayerSpec, layer_specs
from odinlab.debug.gradients.plan import choose_forms, plan_frame
from odinlab.errors import (
    NotMaterializedError,
    OptionError,
    QueryShapeError,
    TargetError,
    UnknownLayerError,
    UnsupportedLayerError,
    listing,
)
from odinlab.parallel.context import current_client
from odinlab.store.labelled import labelled
from odinlab.store.records import ModelRecord
from odinlab.store.selection import ImageSelection, Selection

log = logging.getLogger(__name__)


class GradientStore:
    """Per-sample gradients of ``layers`` (Linear or Conv2d) of one model version.

    ``model`` is a model id (``"name@N"``, or ``"name"`` for the latest version), a record from
    ``store.model``, or a registered module (found by its weights). Without a module in this
    session, everything already captured can still be read and compared (the layer geometry is
    stored with the arrays). ``form`` is "auto" (the smaller of compact and full per layer),
    "compact", "full" or ``{layer: form}``; ``dtype`` ("float32" or "float64") is what is stored
    and computed with.

    >>> grads = GradientStore(store, net, ["features.conv1", "head.fc2"])
    >>> grads.capture("val", progress=False).select("layer", "form", "computed").rows()
    [('features.conv1', 'full', 269), ('head.fc2', 'compact', 269)]
    >>> grads.similarity("val", cosine=True).dims
    ('image_id_a', 'image_id_b')
    """

    def __init__(self, store, model, layers, *, form: str | dict = "auto", dtype: str = "float32"):
        if dtype not in DTYPES:
            raise OptionError(f"Unknown dtype {dtype!r}; gradients are stored as {' or '.join(DTYPES)}.")
        layers = [layers] if isinstance(layers, str) else list(layers)
        if not layers:
            raise UnknownLayerError("No layers given; name one or more Linear or Conv2d layers.")
        self.store, self.dtype, self._form = store, dtype, form
        self.record: ModelRecord = store.model(model)
        self.model_id = self.record.model_id
        try:  # a module is needed to capture; reading what was captured works without one
            self.module: nn.Module | None = store.module(model if isinstance(model, nn.Module) else self.record)
        except NotMaterializedError:
            self.module = None
        self._opened: dict[str, LayerArrays | None] = {}  # arrays opened in this session, per layer
        self.layers = store.check_layers(self.record, layers, module=self.module)
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

    def capture(self, images: ImageSelection = None, *, batch_size: int = 128, progress: bool = True,
                scheduler=None) -> pl.DataFrame:
        """Compute and store the gradients of every layer for ``images``: one forward and one
        backward pass per batch, model in eval mode, cross-entropy against the label summed over
        the batch. Images already stored are skipped (a second call computes nothing). With a Dask
        client (``scheduler=client`` or ``with odinlab.parallel(client):``) the images are split by
        chunk across the cluster's workers.

        >>> grads = GradientStore(store, net, "head.fc2")
        >>> grads.capture(["digits-0000", "digits-0001"], progress=False)["computed"].to_list()
        [2]
        >>> grads.capture(["digits-0000", "digits-0001"], progress=False)["reused"].to_list()
        [2]
        """
        self.store.check_writable()
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise OptionError(f"batch_size must be a positive int, not {batch_size!r}.")
        module = self._require_module("capture gradients")
        client = current_client(scheduler)  # checked before any array is created
        self.store.check_input_shape(self.record)
        selection = self.store.select(images).unique()  # row order: each batch writes sorted rows
        targets = {layer: self._open(layer, create=True) for layer in self.layers}
        self._record_plan()
        computed = capture_selection(self.store, module, self.model_id, targets, selection,
                                     batch_size=batch_size, progress=progress, scheduler=client or "local")
        if not any(computed.values()):
            log.info("%s: gradients of %d layers are already stored for these %d images; nothing computed.",
                     self.model_id, len(self.layers), len(selection))
        return pl.DataFrame([{"layer": layer, "form": self.forms[layer], "images": len(selection),
                              "computed": computed[layer], "reused": len(selection) - computed[layer]}
                             for layer in self.layers])

    def restore(self, layer: str, images: ImageSelection) -> dict[str, torch.Tensor]:
        """The exact weight and bias gradients of ``layer``: ``{"weight", "bias"}`` tensors,
        unbatched for one image id, else with the selected images first (in selection order).

        >>> grads = GradientStore(store, net, "head.fc2")
        >>> {k: tuple(v.shape) for k, v in grads.restore("head.fc2", "digits-0000").items()}
        {'weight': (10, 64), 'bias': (10,)}
        """
        if layer not in self.specs and isinstance(images, str) and images in self.specs:
            warnings.warn("GradientStore.restore(images, layer) is deprecated: the layer comes first, "
                          "restore(layer, images).", DeprecationWarning, stacklevel=2)
            layer, images = images, layer
        self._check_layer(layer)
        selection = self.store.select(images)
        restored = self._grads(layer, selection).restore()
        if isinstance(images, str) and len(selection) == 1 and selection.ids[0] == images:
            return {k: v[0] for k, v in restored.items()}
        return restored

    def norms(self, images: ImageSelection = None, *, layers=None) -> xr.DataArray:
        """Per-image gradient norms over ``layers`` (all by default; weights and biases together),
        a DataArray over ``image_id``.

        For a Linear layer on vectors ‖∇‖ = ‖g‖·‖[a, 1]‖, exactly, without building ∇.

        >>> norms = GradientStore(store, net, "head.fc2").norms(["digits-0000", "digits-0001"])
        >>> norms.dims, norms.image_id.values.tolist()
        (('image_id',), ['digits-0000', 'digits-0001'])
        """
        selection = self.store.select(images)
        layers = self._chosen(layers)
        total = np.zeros(len(selection))
        for layer in layers:
            block = self._block(layer)
            for start in range(0, len(selection), block):
                part = selection[start : start + block]
                total[start : start + len(part)] += self._grads(layer, part).sq_norms().double().cpu().numpy()
        return labelled(np.sqrt(total), selection.ids, dims=(), name="gradient_norm", model_id=self.model_id,
                        layers=layers)

    def similarity(self, a: ImageSelection = None, b: ImageSelection = None, *, cosine: bool = False,
                   layers=None) -> xr.DataArray:
        """Gradient dot products (or cosines) summed over ``layers``, a DataArray with dims
        ``("image_id_a", "image_id_b")``; ``b`` defaults to ``a``. Computed on the stored form with
        batched matrix products.

        >>> sim = GradientStore(store, net, "head.fc2").similarity(["digits-0000"], "val", cosine=True)
        >>> sim.shape, sim.image_id_a.values.tolist()
        ((1, 269), ['digits-0000'])
        """
        sel_a = self.store.select(a)
        sel_b = sel_a if b is None else self.store.select(b)
        layers = self._chosen(layers)
        dots, sq_a, sq_b = self._pairwise([(self, 1.0)], sel_a, sel_b, layers)
        values = ops.cosine(dots, sq_a, sq_b) if cosine else dots
        return self._matrix(values, sel_a, sel_b, "gradient_cosine" if cosine else "gradient_dot", layers=layers)

    def most_similar(self, query, images: ImageSelection = None, *, k: int = 5, cosine: bool = True,
                     layers=None) -> pl.DataFrame:
        """The ``k`` images (of ``images``, all by default) most similar in gradient to each query:
        image_id_a (the query), image_id_b (the neighbour), rank, score. ``query`` is an image
        selection (a test image...) or a dense gradient ``{layer: weight-shaped tensor or
        {"weight", "bias"}}`` (image_id_a is then "query").

        >>> grads = GradientStore(store, net, "head.fc2")
        >>> grads.most_similar("digits-0000", "train", k=3).select("image_id_a", "rank").rows()
        [('digits-0000', 1), ('digits-0000', 2), ('digits-0000', 3)]
        """
        k = ops.check_k(k)
        selection = self.store.select(images)
        if isinstance(query, dict):
            scores = self.scores(query, selection, cosine=cosine).values[None, :]
            return ops.top_k(scores, ["query"], selection.ids, k)
        queries = self.store.select(query)
        scores = self.similarity(queries, selection, cosine=cosine, layers=layers).values
        return ops.top_k(scores, queries.ids, selection.ids, k)

    def influence(self, test_images: ImageSelection, train_images: ImageSelection = None, *, checkpoints=None,
                  lr=None, target="label", layers=None) -> xr.DataArray:
        """TracIn: Σ_checkpoints lr · ⟨∇ℓ(test), ∇ℓ(train)⟩ over ``layers``, a DataArray with dims
        ``("image_id_a", "image_id_b")``: test images by training images.

        ``checkpoints`` are versions of the same architecture (ids or records); by default this
        version and every ancestor (its lineage) whose gradients of these layers were captured.
        ``lr`` is a number, ``{model_id: lr}``, or None for each version's ``hyperparams["lr"]``
        (else 1). Test gradients are taken against the label (TracIn's loss) unless ``target`` is
        "prediction" (this version's predicted class), a class index or name, or one per test image.

        >>> grads = GradientStore(store, net, "head.fc2")
        >>> grads.influence(["digits-0000"], "val").shape
        (1, 269)
        """
        sel_a = self.store.select(test_images)
        sel_b = self.store.select(train_images)
        layers = self._chosen(layers)
        classes = self._targets(target, sel_a)
        sources = [(self._at(c), self._lr(c, lr)) for c in self._checkpoints(checkpoints)]
        dots, _, _ = self._pairwise(sources, sel_a, sel_b, layers, classes)
        return self._matrix(dots, sel_a, sel_b, "influence", layers=layers,
                            checkpoints=[source.model_id for source, _ in sources])

    def scores(self, query: dict, images: ImageSelection = None, *, cosine: bool = False) -> xr.DataArray:
        """⟨Q, ∇_i⟩ per image for a dense query ``{layer: Q}`` (Q of the weight's shape, or
        ``{"weight", "bias"}``), summed over its layers: Σ_p g_pᵀ Q u_p without building ∇_i.
        A DataArray over ``image_id``.

        >>> grads = GradientStore(store, net, "head.fc2")
        >>> grads.scores({"head.fc2": torch.ones(10, 64)}, ["digits-0000", "digits-0001"]).shape
        (2,)
        """
        if not isinstance(query, dict) or not query:
            raise QueryShapeError("query is a dict {layer: weight-shaped tensor}, e.g. what restore() returns.")
        selection = self.store.select(images)
        total, sq, q_sq = np.zeros(len(selection)), np.zeros(len(selection)), 0.0
        for layer, q in query.items():
            self._check_layer(layer)
            flat = ops.flat_query(self.specs[layer], q, getattr(torch, self.dtype))
            q_sq += float(flat.double().square().sum())
            block = self._block(layer)
            for start in range(0, len(selection), block):
                grads = self._grads(layer, selection[start : start + block])
                total[start : start + len(grads)] += grads.dense(flat).double().cpu().numpy()
                if cosine:
                    sq[start : start + len(grads)] += grads.sq_norms().double().cpu().numpy()
        values = ops.cosine(total[None], np.array([q_sq]), sq)[0] if cosine else total
        return labelled(values, selection.ids, dims=(), name="gradient_cosine" if cosine else "gradient_score",
                        model_id=self.model_id, layers=list(query))

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
                arrays = LayerArrays.open(self.store, self.record, spec, form, self.dtype)
                disk[form] = None if arrays is None \
                    else self.store.results.size(self.record, AREA, layer, f"{form}-{self.dtype}")
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
            return layer_specs(self.module, self.layers, self.record.input_shape, self.model_id)
        specs = {}
        arch = self.store.architecture(self.record)
        for layer in self.layers:
            kind = arch.filter(pl.col("layer") == layer)["type"][0]
            if kind not in ("Linear", "Conv2d"):
                raise UnsupportedLayerError(f"Layer {layer!r} of {self.model_id} is a {kind}; per-sample "
                                            "gradients are kept for nn.Linear and nn.Conv2d layers only.")
            group = self.store.results.group(self.record, AREA, layer)
            if group is None or "spec" not in group.attrs:
                raise NotMaterializedError(
                    f"No gradients of {layer} of {self.model_id} are stored and this session has no module "
                    f"for it; pass the module: GradientStore(store, my_net, ...).")
            specs[layer] = LayerSpec.from_json(group.attrs["spec"])
        return specs

    def _record_plan(self) -> None:
        size = np.dtype(self.dtype).itemsize
        for layer, spec in self.specs.items():
            group = self.store.results.group(self.record, AREA, layer, create=True)
            group.attrs.update({"spec": spec.to_json(), "form": self.forms[layer], "dtype": self.dtype,
                                "compact_bytes": spec.compact_values * size, "full_bytes": spec.full_values * size})

    def _open(self, layer: str, create: bool = False) -> LayerArrays | None:
        """The layer's arrays, opened once per session (opening reads Zarr metadata) unless created."""
        if create or self._opened.get(layer) is None:
            self._opened[layer] = LayerArrays.open(self.store, self.record, self.specs[layer],
                                                   self.forms[layer], self.dtype, create)
        return self._opened[layer]

    def _require_module(self, what: str) -> nn.Module:
        if self.module is None:
            raise NotMaterializedError(
                f"No module for {self.model_id} in this session to {what} with: the store keeps weights, "
                f"not code. Build the network and load them once: store.load_weights(MyNet(), {self.model_id!r}).")
        return self.module

    def _grads(self, layer: str, selection: Selection) -> Grads:
        """Stored gradients of the selected images (any order), capturing missing ones when the module is here."""
        rows = selection.rows
        arrays = self._open(layer)
        if arrays is not None and len(rows) and rows.max() >= arrays.capacity and not self.store.read_only:
            arrays = self._open(layer, create=True)  # images ingested since: grow the arrays
        done = np.zeros(len(rows), bool) if arrays is None else arrays.done_rows(rows)
        missing = selection.where(~done).unique()
        if len(missing):
            if self.module is None:
                raise NotMaterializedError(
                    f"Gradients of {layer} of {self.model_id} are not captured for {len(missing)} of these "
                    f"{len(rows)} images; pass the module (GradientStore(store, my_net, ...)) or capture them.")
            self.capture(missing, progress=False)
            arrays = self._opened[layer]
        if arrays is None:  # nothing asked for and nothing stored
            return _empty(self.specs[layer], self.dtype)
        return arrays.read(rows)

    def _block(self, layer: str) -> int:
        return ops.block_rows(self.specs[layer], self.forms[layer], np.dtype(self.dtype).itemsize)

    def _pairwise(self, sources, sel_a: Selection, sel_b: Selection, layers: list[str], classes=None):
        """Σ over (checkpoint, layer) terms of the first set's gradients against the second set's,
        read in blocks; the first set's are stored ones, or computed against ``classes``."""
        def terms():  # one term's gradients of the first set in memory at a time
            for source, weight in sources:
                computed = None if classes is None else source._computed(sel_a, classes, layers)
                for layer in layers:
                    grads_a = source._grads(layer, sel_a) if computed is None else computed[layer]

                    def read_b(part, s=source, name=layer, a=grads_a, reuse=computed is None):
                        return a if reuse and np.array_equal(part.rows, sel_a.rows) else s._grads(name, part)
                    yield weight, grads_a, read_b

        block = min(self._block(layer) for layer in layers)
        return ops.pairwise(terms(), len(sel_a), sel_b, block)

    def _computed(self, selection: Selection, classes: np.ndarray, layers: list[str]) -> dict[str, Grads]:
        """Compact gradients of ``layers`` against ``classes``, computed in memory (nothing stored)."""
        module = self._require_module("compute test gradients against a target")
        specs = {layer: self.specs[layer] for layer in layers}
        if not len(selection):
            return {layer: _empty(spec, self.dtype) for layer, spec in specs.items()}
        dtype = getattr(torch, self.dtype)  # on the CPU, like the stored gradients they are compared with
        return {layer: Grads(g.spec, prefix=g.prefix.to("cpu", dtype), suffix=g.suffix.to("cpu", dtype))
                for layer, g in compute_selection(self.store, module, specs, selection, classes).items()}

    def _matrix(self, values: np.ndarray, sel_a: Selection, sel_b: Selection, name: str, **attrs) -> xr.DataArray:
        return xr.DataArray(values, dims=("image_id_a", "image_id_b"),
                            coords={"image_id_a": sel_a.ids, "image_id_b": sel_b.ids}, name=name,
                            attrs={"model_id": self.model_id, **attrs})

    def _chosen(self, layers) -> list[str]:
        layers = self.layers if layers is None else [layers] if isinstance(layers, str) else list(layers)
        for layer in layers:
            self._check_layer(layer)
        return layers

    def _check_layer(self, layer: str) -> None:
        if layer not in self.specs:
            raise UnknownLayerError(f"Layer {layer!r} is not one of this GradientStore's layers: "
                                    f"{listing(self.layers)}. Make a GradientStore with it.")

    def _at(self, record: ModelRecord) -> GradientStore:
        if record.model_id == self.model_id:
            return self
        return GradientStore(self.store, record, self.layers, form=self._form, dtype=self.dtype)

    def _checkpoints(self, checkpoints) -> list[ModelRecord]:
        if checkpoints is not None:
            given = [checkpoints] if isinstance(checkpoints, str | ModelRecord) else list(checkpoints)
            return [self.store.model(c) for c in given]
        found = [self.record]
        for ancestor in self.record.lineage:  # parent first, up to the root
            if all(self.store.results.group(ancestor, AREA, layer) is not None for layer in self.layers):
                found.append(self.store.model(ancestor))
        return found

    def _lr(self, record: ModelRecord, lr) -> float:
        if isinstance(lr, dict):
            if record.model_id not in lr:
                raise OptionError(f"lr has no value for checkpoint {record.model_id}; give {{model_id: lr}} for each.")
            return float(lr[record.model_id])
        if lr is not None:
            return float(lr)
        return float(record.hyperparams.get("lr", 1.0))

    def _targets(self, target, selection: Selection) -> np.ndarray | None:
        """None for the label (the stored gradients), else the class of each test image."""
        if target is None or (isinstance(target, str) and target == "label"):
            return None
        if isinstance(target, str) and target == "prediction":
            return predicted_classes(self.store, self._require_module("predict the test images"), selection)
        classes, n = self.store.classes, len(selection)
        values = [target] * n if isinstance(target, int | str | np.integer) else list(target)
        if len(values) != n:
            raise TargetError(f"target has {len(values)} values for {n} test images; give one, or one per image.")
        out = []
        for value in values:
            if isinstance(value, str) and value in classes:
                value = classes.index(value)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) \
                    or not 0 <= value < max(len(classes), 1):
                raise TargetError(f"Unknown target {value!r}; use 'label', 'prediction', a class index "
                                  f"0..{len(classes) - 1} or a class name ({listing(classes)}).")
            out.append(int(value))
        return np.array(out, np.int64)


def _empty(spec: LayerSpec, dtype: str) -> Grads:
    """Gradients of no image (an empty selection)."""
    dtype = getattr(torch, dtype)
    return Grads(spec, prefix=torch.zeros((0, *spec.in_shape), dtype=dtype),
                 suffix=torch.zeros((0, *spec.out_shape), dtype=dtype))
