"""Capturing per-sample gradients: one forward and one backward pass per batch, streamed to Zarr.

The model runs in eval mode and the cross-entropy against each image's label is *summed* over
the batch, so the gradient of the loss with respect to a layer's output is, row by row, each
sample's own (a mean would scale it by 1/batch). Forward hooks keep every chosen layer's input
(the prefix) and its output; one ``torch.autograd.grad`` call returns the output gradients (the
suffixes) without computing any weight gradient.

Arrays live in the version's ``gradients`` area of ``store.results`` (the store's layout module
names the paths), one row per pixel row of the store: per layer, ``compact-<dtype>/prefix`` and
``compact-<dtype>/suffix`` (inputs and output gradients) or ``full-<dtype>`` (weight then bias
gradient), each a :class:`~odinlab.store.arrays.RowArray` whose ``done`` mask commits a batch, so
an interrupted capture resumes and a second one computes nothing. The layer group's attributes
keep the layer's :class:`LayerSpec` (enough to use the arrays without the network's code) and
the plan (form chosen, bytes of each form per image).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from odinlab.debug.gradients.kernels import Grads
from odinlab.debug.gradients.layers import LayerSpec
from odinlab.errors import LabelError, listing
from odinlab.parallel.context import current_client
from odinlab.store.arrays import RowArray, read_rows, write_rows
from odinlab.store.records import ModelRecord
from odinlab.store.selection import Selection
from odinlab.torch_helpers import evaluating, first_tensor, hooks, module_device

DTYPES = ("float32", "float64")
AREA = "gradients"  # the version's area of store.results that holds them


def forward_backward(module: nn.Module, x: torch.Tensor, y: torch.Tensor, layers: list[str]) -> dict:
    """``{layer: (prefix, suffix)}`` for a batch: layer inputs and d(summed loss)/d(layer output).

    >>> x, y = torch.rand(3, 1, 8, 8), torch.tensor([0, 1, 2])
    >>> prefix, suffix = forward_backward(net, x, y, ["head.fc2"])["head.fc2"]
    >>> prefix.shape, suffix.shape
    (torch.Size([3, 64]), torch.Size([3, 10]))
    """
    inputs: dict[str, torch.Tensor] = {}
    outputs: dict[str, torch.Tensor] = {}

    def on_output(name, output, args):
        inputs[name] = args[0].detach().clone()
        outputs[name] = output
        # Downstream gets a copy, so an in-place op after the layer (ReLU(inplace=True))
        # cannot change the tensor we differentiate against.
        return output.clone()

    with evaluating(module), hooks(module, layers, on_output), torch.enable_grad():
        # Makes every layer's output part of the graph even when the weights are frozen;
        # autograd.grad computes nothing for x itself.
        logits = first_tensor(module(x.detach().requires_grad_(True)))
        loss = F.cross_entropy(logits, y, reduction="sum")
        grads = torch.autograd.grad(loss, [outputs[layer] for layer in layers], allow_unused=True)
    return {layer: (inputs[layer], torch.zeros_like(outputs[layer]) if g is None else g.detach())
            for layer, g in zip(layers, grads)}


def model_input(store, module: nn.Module, selection: Selection) -> torch.Tensor:
    """The selected images as the module's input: its device and its parameters' dtype."""
    param = next(module.parameters(), torch.empty(0))
    return torch.from_numpy(store.model_input(selection)).to(module_device(module), param.dtype)


def check_labels(selection: Selection) -> np.ndarray:
    """Labels of the selected images, or :class:`LabelError` naming unlabeled images."""
    labels = selection.labels
    if (labels < 0).any():
        missing = selection.where(labels < 0).ids
        raise LabelError(
            f"{len(missing)} of the {len(selection)} selected images have no label (e.g. {listing(missing[:5])}); "
            "per-sample gradients need a loss against a label. Label them, or leave them out of images=.")
    return labels


class LayerArrays:
    """The stored gradients of one layer of one model version, in one form and dtype."""

    def __init__(self, parts: dict[str, RowArray], spec: LayerSpec, form: str):
        self.parts, self.spec, self.form = parts, spec, form

    @classmethod
    def open(cls, store, record: ModelRecord, spec: LayerSpec, form: str, dtype: str, create: bool = False):
        """The arrays, created (and grown to the store's rows) when ``create``; None if absent."""
        shapes = {"prefix": spec.in_shape, "suffix": spec.out_shape} if form == "compact" \
            else {"full": (spec.full_values,)}
        variant = f"{form}-{dtype}"

        def where(part: str) -> tuple[str, ...]:  # compact keeps two arrays under its variant
            return (spec.name, variant, part) if form == "compact" else (spec.name, variant)

        if not create:
            found = {k: store.results.find_row_array(record, AREA, *where(k)) for k in shapes}
            return None if any(v is None for v in found.values()) else cls(found, spec, form)
        attrs = (("layer", spec.name), ("model_id", record.model_id), ("form", form))
        parts = {k: store.results.row_array(record, AREA, *where(k), shape=tuple(shape), dtype=dtype, attrs=attrs)
                 for k, shape in shapes.items()}
        return cls(parts, spec, form)

    @property
    def capacity(self) -> int:
        return min(part.values.shape[0] for part in self.parts.values())

    def done_rows(self, rows: np.ndarray) -> np.ndarray:
        """Which ``rows`` are stored; rows of images ingested after the arrays were made are not."""
        done = np.zeros(len(rows), bool)
        inside = rows < self.capacity
        done[inside] = True
        for part in self.parts.values():
            done[inside] &= part.done_rows(rows[inside])
        return done

    def done_count(self) -> int:
        return int(np.logical_and.reduce([np.asarray(p.done[:]) for p in self.parts.values()]).sum())

    def write(self, rows: np.ndarray, grads: Grads) -> None:
        """Values first, then each part's ``done`` (the commit point); ``rows`` sorted."""
        for part in self.parts.values():
            with part.guard():  # the store's writer lock: two processes never mix rows in a chunk
                self.write_values(rows, grads, only=part)
        self.commit(rows)

    def write_values(self, rows: np.ndarray, grads: Grads, only: RowArray | None = None) -> None:
        """Write the values of ``rows`` (sorted) without marking them done: for a worker of a Dask
        cluster that owns their chunks; the caller commits them with :meth:`commit`."""
        values = {"full": lambda: grads.to_full().flat, "prefix": lambda: grads.prefix, "suffix": lambda: grads.suffix}
        for name, part in self.parts.items():
            if only is None or part is only:
                write_rows(part.values, rows, values[name]().detach().cpu().numpy().astype(part.dtype, copy=False))

    def commit(self, rows: np.ndarray) -> None:
        """Mark ``rows`` done in every part, once their values are written (stored exactly: no
        encoding error, but the ``error`` column is written, so that ``store.verify()`` finds it whole)."""
        for part in self.parts.values():
            part.commit(rows, error=np.zeros(len(rows), np.float32))

    def chunk_rows(self) -> list[int]:
        return [part.values.chunks[0] for part in self.parts.values()]

    def read(self, rows: np.ndarray, device=None) -> Grads:
        """The gradients of ``rows`` (any order) as a :class:`Grads` of the stored dtype."""
        got = {k: torch.from_numpy(read_rows(p.values, rows)).to(device) for k, p in self.parts.items()}
        if self.form == "full":
            return Grads(self.spec, flat=got["full"])
        return Grads(self.spec, prefix=got["prefix"], suffix=got["suffix"])


def capture_selection(store, module: nn.Module, model_id: str, targets: dict[str, LayerArrays],
                      selection: Selection, *, batch_size: int, progress: bool, scheduler=None) -> dict[str, int]:
    """Capture every layer's gradients for the images some array lacks; return images computed per layer.

    ``selection`` holds each image once, in row order (``Selection.unique``), so every batch
    writes sorted rows.
    """
    check_labels(selection)
    client = current_client(scheduler)
    if client is not None:
        from odinlab.debug.gradients.distributed import capture_on  # it builds on this module

        return capture_on(client, store, module, model_id, targets, selection, batch_size, progress)
    pending = []  # (batch, {layer: images of the batch that layer lacks}): each done mask read once
    for batch in selection.chunks(batch_size):
        fresh = {layer: ~t.done_rows(batch.rows) for layer, t in targets.items()}
        fresh = {layer: mask for layer, mask in fresh.items() if mask.any()}
        if fresh:
            pending.append((batch, fresh))
    computed = {layer: 0 for layer in targets}
    total = sum(len(batch) for batch, _ in pending)
    with tqdm(total=total, desc=f"gradients {model_id}", unit="img", disable=not progress or not total) as bar:
        for batch, todo in pending:
            x = model_input(store, module, batch)
            y = torch.from_numpy(batch.labels).to(x.device)
            caught = forward_backward(module, x, y, list(todo))
            for layer, fresh in todo.items():
                target = targets[layer]
                grads = Grads(target.spec, prefix=caught[layer][0], suffix=caught[layer][1])
                if not fresh.all():
                    grads = grads.take(torch.from_numpy(np.flatnonzero(fresh)))
                target.write(batch.rows[fresh], grads)
                computed[layer] += int(fresh.sum())
            bar.update(len(batch))
    return computed


def compute_selection(store, module: nn.Module, specs: dict[str, LayerSpec], selection: Selection,
                      targets: np.ndarray, batch_size: int = 256) -> dict[str, Grads]:
    """Compact gradients of the selected images against ``targets`` (a class per image), in
    memory; nothing stored."""
    pieces: dict[str, list] = {layer: [] for layer in specs}
    for start, batch in zip(range(0, len(selection), batch_size), selection.chunks(batch_size)):
        x = model_input(store, module, batch)
        y = torch.as_tensor(targets[start : start + len(batch)], device=x.device)
        for layer, pair in forward_backward(module, x, y, list(specs)).items():
            pieces[layer].append(pair)
    return {layer: Grads(specs[layer], prefix=torch.cat([p for p, _ in parts]), suffix=torch.cat([s for _, s in parts]))
            for layer, parts in pieces.items()}


def predicted_classes(store, module: nn.Module, selection: Selection, batch_size: int = 256) -> np.ndarray:
    """The class ``module`` predicts for each selected image."""
    out = [np.zeros(0, np.int64)]
    with evaluating(module), torch.no_grad():
        for batch in selection.chunks(batch_size):
            out.append(first_tensor(module(model_input(store, module, batch))).argmax(1).cpu().numpy())
    return np.concatenate(out).astype(np.int64)
