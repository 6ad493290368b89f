"""Materialize: predictions and the activations of many layers from one forward pass per batch.

Vista's lesson: extracting layer by layer repeats most of the work, and extracting
everything at once runs out of memory. So every requested layer is hooked on the same
forward pass, batches are sized from a memory budget, each batch is streamed to Zarr and
committed by its ``done`` mask, and a second call computes only what is missing.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import polars as pl
import torch
from dask.utils import parse_bytes
from torch import nn
from tqdm.auto import tqdm

from odinlab.errors import NotMaterializedError, OptionError
from odinlab.store.arrays import ArraySpec, RowArray
from odinlab.parallel.context import current_client
from odinlab.store.backend import Backend, writes
from odinlab.store.distributed import materialize_on
from odinlab.store.images import ImageCatalog
from odinlab.store.labelled import labelled
from odinlab.store.layout import area_path, layer_path, model_root, predictions_path
from odinlab.store.models import ModelRef, ModelRegistry
from odinlab.store.quantize import DTYPES
from odinlab.store.records import ModelRecord
from odinlab.store.selection import ImageSelection, Selection
from odinlab.torch_helpers import evaluating, forward_with_hooks, module_device

log = logging.getLogger(__name__)


class Materializer:
    """Runs model versions over images and keeps predictions and activations, row-aligned."""

    def __init__(self, backend: Backend, images: ImageCatalog, models: ModelRegistry):
        self._backend = backend
        self._images = images
        self._models = models

    @writes("materialize")
    def materialize(self, model: ModelRef, layers=(), images: ImageSelection = None, *,
                    model_id: str | None = None, batch_size: int | str = "auto",
                    memory_budget: int | str = "2GB", dtype: str = "float16",
                    pool: int | dict | None = None, progress: bool = True, scheduler=None) -> pl.DataFrame:
        """Store predictions and the activations of ``layers`` for ``images``; return a report.

        All layers come from one forward pass per batch. ``dtype`` is float32, float16 or
        uint8 (per image and channel, with the reconstruction error recorded); ``pool=k``
        (or ``{layer: k}``) keeps a k×k per-channel average of convolutional maps. With
        ``batch_size="auto"`` batches fit ``memory_budget``. Interrupted runs resume: batches
        already done are skipped, so a second call costs nothing and says so. A module given
        with ``model_id=`` must hold that version's weights (else ``WeightsMismatchError``).
        With a Dask client (``scheduler=client``, or inside ``with odinlab.parallel(client):``)
        the images are split by chunk across the cluster's workers, which load the version's
        weights from the store and write their own chunks (see :mod:`odinlab.store.distributed`).

        >>> report = store.materialize(net, ["features.conv2", "head.fc1"], "val", progress=False)
        >>> report.select("array", "computed").rows()
        [('predictions', 269), ('features.conv2/float16', 269), ('head.fc1/float16', 269)]
        """
        # Every argument is checked before the first array is created: a bad call leaves no trace.
        self._backend.check_writable()
        record, module = self._models.record_and_module(model, model_id)
        model_id = record.model_id
        layers = self._models.check_layers(record, layers, module)  # a string is one layer
        if dtype not in DTYPES:
            raise OptionError(f"Unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}.")
        _check_pool(pool)
        client = current_client(scheduler)
        self._models.check_input_shape(record)
        selection = self._images.select(images).unique()  # in row order: sequential writes
        rows = selection.rows
        size = self._batch_size(record, layers, batch_size, memory_budget)
        targets = self._open_targets(record, layers, dtype, pool)
        pending = [(b, [t for t in targets.values() if not t.done_rows(b.rows).all()])
                   for b in selection.chunks(size)]
        pending = [(b, todo) for b, todo in pending if todo]
        computed = {name: 0 for name in targets}
        if not pending:
            log.info("%s: all %d arrays are already materialized for these %d images; nothing computed.",
                     model_id, len(targets), len(rows))
        elif client is not None:
            materialize_on(client, self._backend.url, module, record, layers, pool, targets,
                           selection[np.isin(rows, np.concatenate([b.rows for b, _ in pending]))], size,
                           computed, progress)
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
                    in_flight = writer.submit(_write_batch, targets, todo, batch.rows, outputs, computed, bar)
                if in_flight is not None:
                    in_flight.result()
        return self._report(targets, rows, computed, size)

    def activations(self, model: ModelRef, layer: str, images: ImageSelection = None, *,
                    dtype: str | None = None, pool: int | None = None, module: nn.Module | None = None,
                    store: bool = True, lazy: bool = False):
        """Activations of ``layer`` for ``images``, labelled by image id, in selection order.

        Returns an ``xarray.DataArray`` (N, ...) whose first axis is ``image_id`` (``.values``
        is the numpy array). Rows never materialized are computed on demand with ``module``
        (or the module this session holds for the version) and stored unless ``store=False``.
        ``lazy=True`` wraps a Dask array over the Zarr data instead of numpy.

        >>> acts = store.activations("cnn@1", "head.fc1", ["digits-0000", "digits-0001"])
        >>> acts.shape, acts.dims, acts.image_id.values.tolist()
        ((2, 64), ('image_id', 'unit'), ['digits-0000', 'digits-0001'])
        """
        record = self._models.record(model)
        if isinstance(model, nn.Module):
            module = model
        elif module is not None:  # what it computes is labelled (and stored) as this version's
            self._models.check_module(module, record)
        self._models.check_layers(record, [layer])  # against the registered architecture
        selection = self._images.select(images)
        rows = selection.rows
        target = self.layer_array(record, layer, dtype, pool)
        missing = selection[~target.done_rows(rows)] if target is not None else selection
        if len(missing):
            if module is None:
                try:
                    module = self._models.module(record)
                except NotMaterializedError:
                    raise NotMaterializedError(
                        f"{layer} of {record.model_id} is not materialized for {len(missing)} of these "
                        f"{len(rows)} images; pass module=<the network> to compute them, or load it once with "
                        f"store.load_weights(MyNet(), {record.model_id!r})."
                    ) from None
            if not store:
                self._models.check_layers(record, [layer], module)
                values = self._compute(module, selection, layer, pool)
                return labelled(values, selection.ids, name=layer, model_id=record.model_id)
            self.materialize(module, [layer], missing, model_id=record.model_id, dtype=dtype or "float16",
                             pool=pool, progress=False)
            target = self.layer_array(record, layer, dtype or "float16", pool)
        if lazy:
            import dask.array as da
            values = da.from_zarr(target.values)[rows].astype("float32") if not target.quantized \
                else da.from_array(target.read(rows, ids=selection.ids))
        else:
            values = target.read(rows, ids=selection.ids)
        return labelled(values, selection.ids, name=layer, model_id=record.model_id)

    def predictions(self, model: ModelRef, images: ImageSelection = None, *, held_out: bool = True) -> pl.DataFrame:
        """Materialized predictions joined to ``store.images``: predicted class, probability of
        each class, confidence, margin (top-1 minus top-2), loss against the label, correct.

        Where ``store.cross_validate`` left held-out probabilities for an image (from the fold
        model that did not train on it), those are used unless ``held_out=False``: ``held_out``
        says which rows, ``predicted_by`` names the version whose probabilities they are.

        >>> _ = store.materialize(net, images="val", progress=False)
        >>> frame = store.predictions("cnn@1")
        >>> frame.height, frame["held_out"].any(), frame["predicted_by"].unique().to_list()
        (269, False, ['cnn@1'])
        """
        record = self._models.record(model)
        selection = self._images.select(images)
        rows, ids = selection.rows, selection.ids
        probs = np.zeros((len(rows), record.num_classes), np.float32)
        loss = np.full(len(rows), np.nan, np.float32)
        by = np.full(len(rows), None, dtype=object)
        held = np.zeros(len(rows), bool)
        for target, source in self._prediction_sources(record, held_out):
            todo = np.flatnonzero(by == None)  # noqa: E711 (element-wise)
            todo = todo[target.done_rows(rows[todo])]
            if not len(todo):
                continue
            picked = [ids[i] for i in todo]
            probs[todo] = target.read(rows[todo], ids=picked)
            loss[todo] = target.read_extra("loss", rows[todo], ids=picked)
            if source is None:
                by[todo] = record.model_id
            else:
                folds = target.read_extra("fold", rows[todo], ids=picked).astype(np.int64)
                by[todo] = np.asarray(source, dtype=object)[folds]
                held[todo] = True
        have = by != None  # noqa: E711
        selection = selection[have]
        frame = _predictions_frame(record, selection.frame, probs[have], loss[have]).with_columns(
            held_out=pl.Series(held[have], dtype=pl.Boolean), predicted_by=pl.Series(by[have].tolist(), dtype=pl.String))
        return frame.join(selection.frame.unique("image_id", maintain_order=True), on="image_id", how="left",
                          maintain_order="left")

    def _prediction_sources(self, record: ModelRecord, held_out: bool):
        """(array, fold models or None) to read predictions from, best first: held-out sets (newest
        first) before the version's own predictions."""
        group, sources = self._backend.arrays(), []
        sets_path = area_path(record, "heldout")
        if held_out and sets_path in group:
            found = []
            for name in group[sets_path].group_keys():
                try:
                    target = RowArray(group[f"{sets_path}/{name}"])
                except NotMaterializedError:  # being created by another process: not there yet
                    continue
                found.append((target.group.attrs.get("created_at", ""), target))
            for _, target in sorted(found, key=lambda pair: pair[0], reverse=True):
                sources.append((target, list(target.group.attrs.get("fold_models") or [])))
        if predictions_path(record) in group:
            sources.append((RowArray(group[predictions_path(record)]), None))
        return sources

    def materialized(self, model: ModelRef | None = None) -> pl.DataFrame:
        """What is stored per model version: array, layer, dtype, shape, images done, bytes, error.

        >>> _ = store.materialize(net, ["head.fc1"], "val", dtype="uint8", progress=False)
        >>> store.materialized("cnn@1").select("array", "images").rows()
        [('predictions', 269), ('head.fc1/uint8', 269)]
        """
        ids = [self._models.resolve_any(model)] if model else self._models.table["model_id"].to_list()
        rows = []
        for mid in ids:
            for path, label in self._stored_paths(mid):
                target = RowArray(self._backend.arrays()[path])
                done = np.asarray(target.done[:])
                errors = np.asarray(target.group["error"][:])[done]
                rows.append({"model_id": mid, "array": label, "layer": target.group.attrs.get("layer"),
                             "dtype": target.dtype, "shape": list(target.values.shape[1:]),
                             "images": int(done.sum()),
                             "bytes": self._backend.fs.size(("arrays", *path.split("/"))),
                             "mean_relative_error": float(errors.mean()) if len(errors) else None})
        return pl.DataFrame(rows, schema={"model_id": pl.String, "array": pl.String, "layer": pl.String,
                                          "dtype": pl.String, "shape": pl.List(pl.Int64),
                                          "images": pl.Int64, "bytes": pl.Int64,
                                          "mean_relative_error": pl.Float64})

    def layer_array(self, model: ModelRef, layer: str, dtype: str | None = None,
                    pool: int | None = None) -> RowArray | None:
        """The stored array of a layer's activations (most precise variant first), or None.

        >>> _ = store.materialize(net, ["head.fc1"], "val", progress=False)
        >>> store.layer_array("cnn@1", "head.fc1").dtype
        'float16'
        """
        record = self._models.record(model)
        suffix = f"-pool{pool}" if pool else ""
        variants = [dtype + suffix] if dtype else [d + suffix for d in DTYPES]  # most precise first
        group = self._backend.arrays()
        for variant in variants:
            path = layer_path(record, layer, variant)
            if path in group:
                return RowArray(group[path])
        return None

    # -- internals -------------------------------------------------------------------------

    def _open_targets(self, record: ModelRecord, layers, dtype, pool) -> dict[str, RowArray]:
        group, capacity = self._backend.arrays(), self._images.capacity
        arch = self._models.architecture(record)
        shapes = dict(zip(arch["layer"].to_list(), arch["output_shape"].to_list()))
        predictions = ArraySpec(predictions_path(record), (record.num_classes,), "float32",
                                (("model_id", record.model_id),), extras=("loss",))
        targets = {"predictions": predictions.open(group, capacity)}
        for layer in layers:
            k = pool.get(layer) if isinstance(pool, dict) else pool
            k = k if k and len(shapes[layer]) == 3 else None  # only conv maps (C, H, W) are pooled
            shape = (shapes[layer][0], k, k) if k else tuple(shapes[layer])
            variant = dtype + (f"-pool{k}" if k else "")
            spec = ArraySpec(layer_path(record, layer, variant), shape, dtype,
                             (("layer", layer), ("model_id", record.model_id), ("pool", k)))
            targets[f"{layer}/{variant}"] = spec.open(group, capacity)
        return targets

    def _batch_size(self, record: ModelRecord, layers: list[str], batch_size, memory_budget) -> int:
        """Images per batch: given, or as many as the budget holds (activations of every layer
        during the forward pass, kept copies of the requested ones, and the input)."""
        budget = _budget_bytes(memory_budget)  # checked even when unused: a typo is refused alike
        if batch_size != "auto":
            if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
                raise OptionError(f"batch_size must be a positive int or 'auto', not {batch_size!r}.")
            return batch_size
        arch = self._models.architecture(record)
        numel = {r["layer"]: int(np.prod(r["output_shape"] or [0])) for r in arch.iter_rows(named=True)}
        leaves = [r["layer"] for r in arch.iter_rows(named=True)
                  if not any(other.startswith(r["layer"] + ".") for other in numel)]
        per_image = 4 * (sum(numel[name] for name in leaves) + 3 * sum(numel[name] for name in layers)
                         + 2 * int(np.prod(self._images.pixel_array.shape[1:])))
        return int(np.clip(budget // max(per_image, 1), 1, 4096))

    def _forward(self, module: nn.Module, batch: Selection, layers: list[str], pool) -> dict:
        """One forward pass over a batch; every requested layer caught by a hook."""
        device = module_device(module)
        x = torch.from_numpy(self._images.model_input(batch)).to(device)
        with evaluating(module), torch.no_grad():
            logits, caught = forward_with_hooks(module, x, layers, keep=_keeper(pool))
        logits = logits.float()
        probs = torch.softmax(logits, dim=1)
        labels = batch.labels
        loss = np.full(len(batch), np.nan, np.float32)
        known = labels >= 0
        if known.any():
            picked = torch.from_numpy(labels[known]).to(device)
            loss[known] = nn.functional.cross_entropy(logits[known], picked, reduction="none").cpu().numpy()
        outputs = {"predictions": (probs.cpu().numpy(), {"loss": loss})}
        for layer in layers:
            outputs[layer] = (caught[layer].cpu().numpy(), {})
        return outputs

    def _report(self, targets: dict[str, RowArray], rows: np.ndarray, computed: dict, size: int):
        return pl.DataFrame([{
            "array": name, "dtype": target.dtype, "shape": list(target.values.shape[1:]),
            "images": len(rows), "computed": computed[name], "reused": len(rows) - computed[name],
            "batch_size": size,
        } for name, target in targets.items()])

    def _stored_paths(self, model_id: str) -> list[tuple[str, str]]:
        found, group = [], self._backend.arrays()
        if predictions_path(model_id) in group:
            found.append((predictions_path(model_id), "predictions"))
        layers_path = f"{model_root(model_id)}/layers"
        if layers_path in group:
            for layer in sorted(group[layers_path].group_keys()):
                for variant in sorted(group[layers_path][layer].group_keys()):
                    found.append((f"{layers_path}/{layer}/{variant}", f"{layer}/{variant}"))
        return found

    def _compute(self, module, selection: Selection, layer, pool) -> np.ndarray:
        return np.concatenate([self._forward(module, batch, [layer], pool)[layer][0]
                               for batch in selection.chunks(256)])


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


def _budget_bytes(memory_budget) -> int:
    """``memory_budget`` in bytes ("2GB", "512 MB" or a number), or :class:`OptionError`.

    >>> _budget_bytes("64KB"), _budget_bytes(1e6)
    (64000, 1000000)
    >>> _budget_bytes("lots")
    Traceback (most recent call last):
    odinlab.errors.OptionError: memory_budget must be a positive size such as '2GB' or a number of bytes, not 'lots'.
    """
    try:
        budget = parse_bytes(memory_budget) if isinstance(memory_budget, str) else int(memory_budget)
    except (ValueError, TypeError):
        budget = 0
    if isinstance(memory_budget, bool) or budget < 1:
        raise OptionError("memory_budget must be a positive size such as '2GB' or a number of bytes, "
                          f"not {memory_budget!r}.")
    return budget


def _check_pool(pool) -> None:
    """Raise :class:`OptionError` unless ``pool`` is None, a positive int, or ``{layer: int}``.

    >>> _check_pool({"features.conv2": 2})
    >>> _check_pool(0)
    Traceback (most recent call last):
    odinlab.errors.OptionError: pool must be None, a positive int k (k×k averages) or {layer: k}, not 0.
    """
    sizes = pool.values() if isinstance(pool, dict) else [pool]
    if not all(k is None or (isinstance(k, int) and not isinstance(k, bool) and k >= 1) for k in sizes):
        raise OptionError(f"pool must be None, a positive int k (k×k averages) or {{layer: k}}, not {pool!r}.")


def _keeper(pool):
    """What to keep of a layer's output: a float32 copy, k×k average-pooled when asked."""
    def keep(layer: str, tensor: torch.Tensor) -> torch.Tensor:
        k = pool.get(layer) if isinstance(pool, dict) else pool
        # A copy: a later in-place op (nn.ReLU(inplace=True)) would otherwise rewrite it.
        tensor = tensor.detach().float().clone()
        if k and tensor.ndim == 4:
            tensor = nn.functional.adaptive_avg_pool2d(tensor, k)
        return tensor
    return keep


def _predictions_frame(record: ModelRecord, table: pl.DataFrame, probs: np.ndarray, loss: np.ndarray):
    top2 = np.sort(probs, axis=1)[:, -2:] if probs.shape[1] > 1 else np.hstack([probs * 0, probs])
    predicted = probs.argmax(axis=1) if len(probs) else np.zeros(0, np.int64)
    labels = table["label"]
    return pl.DataFrame({
        "model_id": [record.model_id] * table.height,
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
