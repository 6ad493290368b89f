"""Materialize: predictions and the activations of many layers from one forward pass per batch.

Vista's lesson: extracting layer by layer repeats most of the work, and extracting
everything at once runs out of memory. So every requested layer is hooked on the same
forward pass, batches are sized from a memory budget, each batch is streamed to Zarr and
committed by its ``done`` mask, and a second call computes only what is missing.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import polars as pl
import torch
from dask.utils import parse_bytes
from torch import nn
from tqdm.auto import tqdm

from odinlab.errors import ImageFormatError, NotMaterializedError, UnknownLayerError, closest, listing
from odinlab.store.arrays import ArraySpec, RowArray, layer_path, predictions_path
from odinlab.store.images import ImageSelection
from odinlab.store.pixels import to_model_input
from odinlab.store.quantize import DTYPES


class MaterializeMixin:
    """Store methods that run models over images; mixed into :class:`odinlab.Store`."""

    def materialize(self, model: nn.Module | str, layers=(), images: ImageSelection = None, *,
                    model_id: str | None = None, batch_size: int | str = "auto",
                    memory_budget: int | str = "2GB", dtype: str = "float16",
                    pool: int | dict | None = None, progress: bool = True) -> pl.DataFrame:
        """Store predictions and the activations of ``layers`` for ``images``; return a report.

        All layers come from one forward pass per batch. ``dtype`` is float32, float16 or
        uint8 (per image and channel, with the reconstruction error recorded); ``pool=k``
        (or ``{layer: k}``) keeps a k×k per-channel average of convolutional maps. With
        ``batch_size="auto"`` batches fit ``memory_budget``. Interrupted runs resume: batches
        already done are skipped, so a second call costs nothing and says so.

        >>> report = store.materialize(net, ["features.conv2", "head.fc1"], "val", progress=False)
        >>> report.select("array", "computed").rows()
        [('predictions', 269), ('features.conv2/float16', 269), ('head.fc1/float16', 269)]
        """
        self._check_writable()
        module, model_id = self._module_for(model, model_id)
        layers = self._check_layers(module, model_id, list(layers))
        if dtype not in DTYPES:
            raise ValueError(f"Unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}.")
        self._check_input_shape(model_id)
        rows = np.unique(self._select_rows(images)["_row"].to_numpy())  # sorted: sequential writes
        targets = self._open_targets(model_id, layers, dtype, pool)
        size = self._batch_size(model_id, layers, batch_size, memory_budget)
        batches = [rows[i : i + size] for i in range(0, len(rows), size)]
        pending = [(b, [t for t in targets.values() if not t.done_rows(b).all()]) for b in batches]
        pending = [(b, todo) for b, todo in pending if todo]
        computed = {name: 0 for name in targets}
        if not pending:
            if progress:
                print(f"{model_id}: all {len(targets)} arrays are already materialized for these "
                      f"{len(rows)} images; nothing computed.")
        else:
            total = sum(len(b) for b, _ in pending)
            # One writer thread: batch i is encoded and written while batch i+1 runs forward.
            # At most one batch is in flight, so memory stays at two batches and batches are
            # committed in order.
            with tqdm(total=total, desc=f"materialize {model_id}", unit="img", disable=not progress) as bar, \
                    ThreadPoolExecutor(max_workers=1) as writer:
                in_flight: Future | None = None
                for batch, todo in pending:
                    outputs = self._forward(module, batch, layers, pool)
                    if in_flight is not None:
                        in_flight.result()
                    in_flight = writer.submit(_write_batch, targets, todo, batch, outputs, computed, bar)
                if in_flight is not None:
                    in_flight.result()
        return self._report(targets, rows, computed, size)

    def activations(self, model_id: str, layer: str, images: ImageSelection = None, *,
                    dtype: str | None = None, pool: int | None = None, model: nn.Module | None = None,
                    store: bool = True, lazy: bool = False):
        """Activations of ``layer`` for ``images``, rows in the order of the selection.

        Rows never materialized are computed on demand with ``model`` (or the module this
        session registered or loaded for ``model_id``) and stored unless ``store=False``.
        ``lazy=True`` returns a Dask array over the Zarr data instead of numpy.

        >>> store.activations("cnn@1", "head.fc1", ["digits-0000", "digits-0001"]).shape
        (2, 64)
        """
        model_id = self.resolve_model(model_id)
        self._check_layers(None, model_id, [layer])  # against the registered architecture
        selected = self._select_rows(images)
        rows = selected["_row"].to_numpy()
        target = self._find_layer_array(model_id, layer, dtype, pool)
        missing = rows[~target.done_rows(rows)] if target is not None else rows
        if len(missing):
            module = model if model is not None else self._modules.get(model_id)
            if module is None:
                raise NotMaterializedError(
                    f"{layer} of {model_id} is not materialized for {len(missing)} of these {len(rows)} "
                    f"images; pass model=<the module> to compute them, or call store.materialize first."
                )
            if not store:
                self._check_layers(module, model_id, [layer])
                return self._compute_rows(module, rows, layer, pool)
            ids = self._tables.read("images").filter(pl.col("_row").is_in(missing))["image_id"]
            self.materialize(module, [layer], ids, model_id=model_id, dtype=dtype or "float16",
                             pool=pool, progress=False)
            target = self._find_layer_array(model_id, layer, dtype or "float16", pool)
        if lazy:
            import dask.array as da
            return da.from_zarr(target.values)[rows].astype("float32") if not target.quantized \
                else da.from_array(target.read(rows))
        return target.read(rows)

    def predictions(self, model_id: str, images: ImageSelection = None) -> pl.DataFrame:
        """Materialized predictions joined to ``store.images``: predicted class, probability of
        each class, confidence, margin (top-1 minus top-2), loss against the label, correct.

        >>> _ = store.materialize(net, images="val", progress=False)
        >>> store.predictions("cnn@1").select("predicted", "correct").height
        269
        """
        model_id = self.resolve_model(model_id)
        table = self._tables.read("images") if images is None else self._select_rows(images)
        path = predictions_path(model_id)
        if path in self._arrays():
            target = RowArray(self._arrays()[path])
            table = table.filter(pl.Series(target.done_rows(table["_row"].to_numpy())))
            rows = table["_row"].to_numpy()
            probs = target.read(rows) if len(rows) else np.zeros((0, target.values.shape[1]), np.float32)
            frame = _predictions_frame(model_id, table, probs, target.read_extra("loss", rows))
        else:  # nothing materialized yet: the same columns, no rows
            frame = _predictions_frame(model_id, table.head(0), np.zeros((0, 1), np.float32), np.zeros(0))
        return frame.join(self.images, on="image_id", how="left", maintain_order="left")

    def materialized(self, model_id: str | None = None) -> pl.DataFrame:
        """What is stored per model version: array, layer, dtype, shape, images done, bytes, error.

        >>> _ = store.materialize(net, ["head.fc1"], "val", dtype="uint8", progress=False)
        >>> store.materialized("cnn@1").select("array", "images").rows()
        [('predictions', 269), ('head.fc1/uint8', 269)]
        """
        ids = [self.resolve_model(model_id)] if model_id else self.models["model_id"].to_list()
        rows = []
        for mid in ids:
            for path, label in self._stored_paths(mid):
                target = RowArray(self._arrays()[path])
                done = np.asarray(target.done[:])
                errors = np.asarray(target.group["error"][:])[done]
                rows.append({"model_id": mid, "array": label, "layer": target.group.attrs.get("layer"),
                             "dtype": target.dtype, "shape": list(target.values.shape[1:]),
                             "images": int(done.sum()),
                             "bytes": self._fs.size(("arrays", *path.split("/"))),
                             "mean_relative_error": float(errors.mean()) if len(errors) else None})
        return pl.DataFrame(rows, schema={"model_id": pl.String, "array": pl.String, "layer": pl.String,
                                          "dtype": pl.String, "shape": pl.List(pl.Int64),
                                          "images": pl.Int64, "bytes": pl.Int64,
                                          "mean_relative_error": pl.Float64})

    # -- internals -------------------------------------------------------------------------

    def _module_for(self, model, model_id: str | None) -> tuple[nn.Module, str]:
        if isinstance(model, nn.Module):
            model_id = self.resolve_model(model_id) if model_id else self.model_id_of(model)
            self._modules[model_id] = model
            return model, model_id
        model_id = self.resolve_model(model)
        module = self._modules.get(model_id)
        if module is None:
            raise NotMaterializedError(
                f"No module for {model_id} in this session: the store keeps weights, not code. "
                f"Build the network and pass it: store.load_weights({model_id!r}, MyNet())."
            )
        return module, model_id

    def _check_layers(self, module: nn.Module | None, model_id: str, layers: list[str]) -> list[str]:
        """``layers`` without repeats, or UnknownLayerError naming the closest and all layers.

        Checked against the module's ``named_modules()``, or the registered architecture when
        no module is given."""
        names = [n for n, _ in module.named_modules() if n] if module is not None else self.layers(model_id)
        for layer in layers:
            if layer not in names:
                raise UnknownLayerError(
                    f"Unknown layer {layer!r} of {model_id}.{closest(layer, names)} Layers: {listing(names, 40)}."
                )
        return list(dict.fromkeys(layers))

    def _check_input_shape(self, model_id: str) -> None:
        expected = tuple(self._row(model_id)["input_shape"])
        actual = tuple(self.pixel_array.shape[1:])
        if expected != actual:
            raise ImageFormatError(
                f"{model_id} expects input {expected} (C, H, W) but the store's images are {actual}; "
                "materialize a model trained on these images."
            )

    def _open_targets(self, model_id, layers, dtype, pool) -> dict[str, RowArray]:
        group, capacity = self._arrays(mode="a"), self.pixel_array.shape[0]
        arch = self.architecture(model_id)
        shapes = dict(zip(arch["layer"].to_list(), arch["output_shape"].to_list()))
        n_classes = len(self._row(model_id)["classes"])
        predictions = ArraySpec(predictions_path(model_id), (n_classes,), "float32",
                                (("model_id", model_id),), extras=("loss",))
        targets = {"predictions": predictions.open(group, capacity)}
        for layer in layers:
            k = pool.get(layer) if isinstance(pool, dict) else pool
            k = k if k and len(shapes[layer]) == 3 else None  # only conv maps (C, H, W) are pooled
            shape = (shapes[layer][0], k, k) if k else tuple(shapes[layer])
            variant = dtype + (f"-pool{k}" if k else "")
            spec = ArraySpec(layer_path(model_id, layer, variant), shape, dtype,
                             (("layer", layer), ("model_id", model_id), ("pool", k)))
            targets[f"{layer}/{variant}"] = spec.open(group, capacity)
        return targets

    def _batch_size(self, model_id: str, layers: list[str], batch_size, memory_budget) -> int:
        """Images per batch: given, or as many as the budget holds (activations of every layer
        during the forward pass, kept copies of the requested ones, and the input)."""
        if batch_size != "auto":
            if not isinstance(batch_size, int) or batch_size < 1:
                raise ValueError(f"batch_size must be a positive int or 'auto', not {batch_size!r}.")
            return batch_size
        budget = parse_bytes(memory_budget) if isinstance(memory_budget, str) else int(memory_budget)
        arch = self.architecture(model_id)
        numel = {r["layer"]: int(np.prod(r["output_shape"] or [0])) for r in arch.iter_rows(named=True)}
        leaves = [r["layer"] for r in arch.iter_rows(named=True)
                  if not any(other.startswith(r["layer"] + ".") for other in numel)]
        per_image = 4 * (sum(numel[name] for name in leaves) + 3 * sum(numel[name] for name in layers)
                         + 2 * int(np.prod(self.pixel_array.shape[1:])))
        return int(np.clip(budget // max(per_image, 1), 1, 4096))

    def _forward(self, module: nn.Module, rows: np.ndarray, layers: list[str], pool) -> dict:
        """One forward pass over a batch; every requested layer caught by a hook."""
        caught: dict[str, torch.Tensor] = {}
        modules = dict(module.named_modules())
        handles = [modules[layer].register_forward_hook(_catch(caught, layer, pool)) for layer in layers]
        device = next(module.parameters(), torch.empty(0)).device
        was_training = module.training
        try:
            module.eval()
            with torch.no_grad():
                x = torch.from_numpy(to_model_input(self._read_rows(rows))).to(device)
                logits = module(x)
        finally:
            module.train(was_training)
            for handle in handles:
                handle.remove()
        logits = (logits[0] if isinstance(logits, tuple | list) else logits).float()
        probs = torch.softmax(logits, dim=1)
        labels = self._labels_for_rows(rows)
        loss = np.full(len(rows), np.nan, np.float32)
        known = labels >= 0
        if known.any():
            picked = torch.from_numpy(labels[known]).to(device)
            loss[known] = nn.functional.cross_entropy(logits[known], picked, reduction="none").cpu().numpy()
        outputs = {"predictions": (probs.cpu().numpy(), {"loss": loss})}
        for layer in layers:
            outputs[layer] = (caught[layer].cpu().numpy(), {})
        return outputs

    def _labels_for_rows(self, rows: np.ndarray) -> np.ndarray:
        table = self._tables.read("images")
        lookup = pl.DataFrame({"_row": rows}).join(table.select("_row", "label"), on="_row",
                                                   how="left", maintain_order="left")
        return lookup["label"].fill_null(-1).to_numpy().astype(np.int64)

    def _report(self, targets: dict[str, RowArray], rows: np.ndarray, computed: dict, size: int):
        return pl.DataFrame([{
            "array": name, "dtype": target.dtype, "shape": list(target.values.shape[1:]),
            "images": len(rows), "computed": computed[name], "reused": len(rows) - computed[name],
            "batch_size": size,
        } for name, target in targets.items()])

    def _find_layer_array(self, model_id: str, layer: str, dtype, pool) -> RowArray | None:
        suffix = f"-pool{pool}" if pool else ""
        variants = [dtype + suffix] if dtype else [d + suffix for d in DTYPES]  # most precise first
        for variant in variants:
            path = layer_path(model_id, layer, variant)
            if path in self._arrays():
                return RowArray(self._arrays()[path])
        return None

    def _stored_paths(self, model_id: str) -> list[tuple[str, str]]:
        found, group = [], self._arrays()
        if predictions_path(model_id) in group:
            found.append((predictions_path(model_id), "predictions"))
        layers_path = predictions_path(model_id).rsplit("/", 1)[0] + "/layers"
        if layers_path in group:
            for layer in sorted(group[layers_path].group_keys()):
                for variant in sorted(group[layers_path][layer].group_keys()):
                    found.append((f"{layers_path}/{layer}/{variant}", f"{layer}/{variant}"))
        return found

    def _compute_rows(self, module, rows, layer, pool) -> np.ndarray:
        batches = [rows[start : start + 256] for start in range(0, len(rows), 256)]
        return np.concatenate([self._forward(module, batch, [layer], pool)[layer][0] for batch in batches])


def _write_batch(targets: dict, todo: list, batch: np.ndarray, outputs: dict, computed: dict, bar) -> None:
    """Write one batch's outputs to the arrays that lack some of its rows (only those rows)."""
    for name, target in targets.items():
        if target not in todo:
            continue
        values, extras = outputs[name.rsplit("/", 1)[0]]
        fresh = ~target.done_rows(batch)
        if not fresh.all():  # copy only when some rows are already there
            values, extras = values[fresh], {k: v[fresh] for k, v in extras.items()}
        target.write(batch[fresh], values, **extras)
        computed[name] += int(fresh.sum())
    bar.update(len(batch))


def _catch(caught: dict, layer: str, pool):
    k = pool.get(layer) if isinstance(pool, dict) else pool

    def hook(module, inputs, output):
        tensor = output[0] if isinstance(output, tuple | list) else output
        # A copy: a later in-place op (nn.ReLU(inplace=True)) would otherwise rewrite it.
        tensor = tensor.detach().float().clone()
        if k and tensor.ndim == 4:
            tensor = nn.functional.adaptive_avg_pool2d(tensor, k)
        caught[layer] = tensor
    return hook


def _predictions_frame(model_id: str, table: pl.DataFrame, probs: np.ndarray, loss: np.ndarray):
    top2 = np.sort(probs, axis=1)[:, -2:] if probs.shape[1] > 1 else np.hstack([probs * 0, probs])
    predicted = probs.argmax(axis=1) if len(probs) else np.zeros(0, np.int64)
    labels = table["label"]
    return pl.DataFrame({
        "model_id": [model_id] * table.height,
        "image_id": table["image_id"],
        "predicted": predicted.astype(np.int64),
        "confidence": top2[:, 1] if len(probs) else np.zeros(0, np.float32),
        "margin": (top2[:, 1] - top2[:, 0]) if len(probs) else np.zeros(0, np.float32),
        "loss": loss,
        "probabilities": probs,
    }).with_columns(
        correct=pl.when(labels.is_null()).then(None).otherwise(pl.col("predicted") == labels),
        loss=pl.col("loss").fill_nan(None),
    )
