"""Capturing per-sample gradients: one forward and one backward pass per batch, streamed to Zarr.

The model runs in eval mode and the cross-entropy against each image's label is *summed* over
the batch, so the gradient of the loss with respect to a layer's output is, row by row, each
sample's own (a mean would scale it by 1/batch). Forward hooks keep every chosen layer's input
(the prefix) and its output; one ``torch.autograd.grad`` call returns the output gradients (the
suffixes) without computing any weight gradient.

Arrays live beside the activations, one row per pixel row of the store::

    models/<name>/v<N>/gradients/<layer>/compact-<dtype>/{prefix,suffix}   inputs, output gradients
    models/<name>/v<N>/gradients/<layer>/full-<dtype>                       weight then bias gradient

each a :class:`~odinlab.store.arrays.RowArray` whose ``done`` mask commits a batch, so an
interrupted capture resumes and a second one computes nothing. The layer group's attributes
keep the layer's :class:`LayerSpec` (enough to use the arrays without the network's code) and
the plan (form chosen, bytes of each form per image).
"""

from __future__ import annotations

import numpy as np
import polars as pl
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from odinlab.debug.gradients.kernels import Grads
from odinlab.debug.gradients.layers import LayerSpec
from odinlab.errors import LabelError, listing
from odinlab.store.arrays import ArraySpec, RowArray, read_rows, write_rows
from odinlab.store.fs import check_name
from odinlab.store.pixels import to_model_input

DTYPES = ("float32", "float64")


def gradients_path(model_id: str, layer: str) -> str:
    """Where a layer's gradients of a model version live, under the store's arrays.

    >>> gradients_path("cnn@1", "head.fc2")
    'models/cnn/v1/gradients/head.fc2'
    """
    name, version = model_id.rsplit("@", 1)
    return f"models/{check_name(name)}/v{int(version)}/gradients/{check_name(layer, 'layer name')}"


def forward_backward(module: nn.Module, x: torch.Tensor, y: torch.Tensor, layers: list[str]) -> dict:
    """``{layer: (prefix, suffix)}`` for a batch: layer inputs and d(summed loss)/d(layer output).

    >>> x, y = torch.rand(3, 1, 8, 8), torch.tensor([0, 1, 2])
    >>> prefix, suffix = forward_backward(net, x, y, ["head.fc2"])["head.fc2"]
    >>> prefix.shape, suffix.shape
    (torch.Size([3, 64]), torch.Size([3, 10]))
    """
    modules = dict(module.named_modules())
    inputs: dict[str, torch.Tensor] = {}
    outputs: dict[str, torch.Tensor] = {}

    def hook_for(layer):
        def hook(mod, args, output):
            inputs[layer] = args[0].detach().clone()
            outputs[layer] = output
            # Downstream gets a copy, so an in-place op after the layer (ReLU(inplace=True))
            # cannot change the tensor we differentiate against.
            return output.clone()
        return hook

    handles = [modules[layer].register_forward_hook(hook_for(layer)) for layer in layers]
    was_training = module.training
    try:
        module.eval()
        with torch.enable_grad():
            # Makes every layer's output part of the graph even when the weights are frozen;
            # autograd.grad computes nothing for x itself.
            logits = module(x.detach().requires_grad_(True))
            logits = logits[0] if isinstance(logits, tuple | list) else logits
            loss = F.cross_entropy(logits, y, reduction="sum")
            grads = torch.autograd.grad(loss, [outputs[layer] for layer in layers], allow_unused=True)
    finally:
        module.train(was_training)
        for handle in handles:
            handle.remove()
    return {layer: (inputs[layer], torch.zeros_like(outputs[layer]) if g is None else g.detach())
            for layer, g in zip(layers, grads)}


def check_labels(store, rows: np.ndarray) -> np.ndarray:
    """Labels of ``rows``, or :class:`LabelError` naming unlabeled images."""
    labels = store._labels_for_rows(rows)
    if (labels < 0).any():
        table = store._tables.read("images")
        missing = table.filter(pl.col("_row").is_in(rows[labels < 0]))["image_id"].to_list()
        raise LabelError(
            f"{len(missing)} of the {len(rows)} selected images have no label (e.g. {listing(missing[:5])}); "
            "per-sample gradients need a loss against a label. Label them, or leave them out of images=.")
    return labels


class LayerArrays:
    """The stored gradients of one layer of one model version, in one form and dtype."""

    def __init__(self, parts: dict[str, RowArray], spec: LayerSpec, form: str):
        self.parts, self.spec, self.form = parts, spec, form

    @classmethod
    def open(cls, store, model_id: str, spec: LayerSpec, form: str, dtype: str, create: bool = False):
        """The arrays, created (and grown to the store's rows) when ``create``; None if absent."""
        root = gradients_path(model_id, spec.name)
        group = store._arrays(mode="a" if create else "r")
        names = {"prefix": spec.in_shape, "suffix": spec.out_shape} if form == "compact" \
            else {"full": (spec.full_values,)}
        paths = {k: f"{root}/{form}-{dtype}" + (f"/{k}" if form == "compact" else "") for k in names}
        if not create:
            if not all(p in group for p in paths.values()):
                return None
            return cls({k: RowArray(group[p]) for k, p in paths.items()}, spec, form)
        capacity = store.pixel_array.shape[0]
        attrs = (("layer", spec.name), ("model_id", model_id), ("form", form))
        parts = {k: ArraySpec(paths[k], tuple(shape), dtype, attrs).open(group, capacity)
                 for k, shape in names.items()}
        return cls(parts, spec, form)

    @property
    def capacity(self) -> int:
        return min(part.values.shape[0] for part in self.parts.values())

    def done_rows(self, rows: np.ndarray) -> np.ndarray:
        done = np.ones(len(rows), bool)
        for part in self.parts.values():
            done &= part.done_rows(rows)
        return done

    def done_count(self) -> int:
        return int(np.logical_and.reduce([np.asarray(p.done[:]) for p in self.parts.values()]).sum())

    def write(self, rows: np.ndarray, grads: Grads) -> None:
        """Values first, then each part's ``done`` (the commit point); ``rows`` sorted."""
        values = {"full": grads.to_full().flat} if self.form == "full" \
            else {"prefix": grads.prefix, "suffix": grads.suffix}
        for name, part in self.parts.items():
            data = values[name].detach().cpu().numpy().astype(part.dtype, copy=False)
            write_rows(part.values, rows, data)
            write_rows(part.done, rows, np.ones(len(rows), bool))

    def read(self, rows: np.ndarray, device=None) -> Grads:
        """The gradients of ``rows`` (any order) as a :class:`Grads` of the stored dtype."""
        got = {k: torch.from_numpy(read_rows(p.values, rows)).to(device) for k, p in self.parts.items()}
        if self.form == "full":
            return Grads(self.spec, flat=got["full"])
        return Grads(self.spec, prefix=got["prefix"], suffix=got["suffix"])


def capture_rows(store, module: nn.Module, model_id: str, targets: dict[str, LayerArrays], rows: np.ndarray,
                 *, batch_size: int, progress: bool) -> dict[str, int]:
    """Capture every layer's gradients for the rows some array lacks; return rows computed per layer."""
    rows = np.unique(rows)
    labels = check_labels(store, rows)
    pending = []  # (batch, {layer: rows of the batch that layer lacks}): each done mask read once
    for start in range(0, len(rows), batch_size):
        part = slice(start, start + batch_size)
        fresh = {layer: ~t.done_rows(rows[part]) for layer, t in targets.items()}
        fresh = {layer: mask for layer, mask in fresh.items() if mask.any()}
        if fresh:
            pending.append((part, fresh))
    computed = {layer: 0 for layer in targets}
    param = next(module.parameters(), torch.empty(0))
    total = sum(len(rows[part]) for part, _ in pending)
    with tqdm(total=total, desc=f"gradients {model_id}", unit="img", disable=not progress or not total) as bar:
        for part, todo in pending:
            batch = rows[part]
            x = torch.from_numpy(to_model_input(store._read_rows(batch))).to(param.device, param.dtype)
            y = torch.from_numpy(labels[part]).to(param.device)
            caught = forward_backward(module, x, y, list(todo))
            for layer, fresh in todo.items():
                target = targets[layer]
                grads = Grads(target.spec, prefix=caught[layer][0], suffix=caught[layer][1])
                if not fresh.all():
                    grads = grads.take(torch.from_numpy(np.flatnonzero(fresh)))
                target.write(batch[fresh], grads)
                computed[layer] += int(fresh.sum())
            bar.update(len(batch))
    return computed


def compute_rows(store, module: nn.Module, specs: dict[str, LayerSpec], rows: np.ndarray, targets: np.ndarray,
                 batch_size: int = 256) -> dict[str, Grads]:
    """Compact gradients of ``rows`` against ``targets`` (class per row), in memory, nothing stored."""
    param = next(module.parameters(), torch.empty(0))
    pieces: dict[str, list] = {layer: [] for layer in specs}
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        x = torch.from_numpy(to_model_input(store._read_rows(batch))).to(param.device, param.dtype)
        y = torch.as_tensor(targets[start : start + batch_size], device=param.device)
        for layer, pair in forward_backward(module, x, y, list(specs)).items():
            pieces[layer].append(pair)
    return {layer: Grads(specs[layer], prefix=torch.cat([p for p, _ in parts]), suffix=torch.cat([s for _, s in parts]))
            for layer, parts in pieces.items()}

