"""A plain training loop over store images, for the demo, tests and quick experiments."""

from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import trange

from odinlab.errors import LabelError
from odinlab.torch_helpers import threads_for


def fit(model: nn.Module, store, images="train", *, epochs: int = 10, lr: float = 1e-2,
        batch_size: int = 64, weight_decay: float = 0.0, seed: int = 0,
        progress: bool = True, labels: str | None = None) -> list[float]:
    """Train ``model`` with Adam on labelled store images; return the mean loss of each epoch.

    Only parameters with ``requires_grad`` are updated, so frozen layers stay bit-identical
    (and are stored once when the new version is registered). The store notes the run, and
    registering the model records it as a ``train`` experiment with its images and settings,
    so the store knows which images the version has seen (``out_of_sample`` in error analysis).
    ``labels`` names a label set to train on (``store.correct_labels`` makes them); the
    training experiment records it (column ``label_set``).

    >>> losses = fit(SmallCNN(), store, "train", epochs=2, progress=False)
    >>> len(losses), losses[1] < losses[0]
    (2, True)
    >>> _ = store.correct_labels(["digits-0001"], ["7"])
    >>> fresh = SmallCNN()
    >>> _ = fit(fresh, store, "train", epochs=1, progress=False, labels="reviewed")
    >>> model_id = store.register_model(fresh, "on-reviewed")
    >>> store.experiments.filter(pl.col("model_id") == model_id)["label_set"].to_list()
    ['reviewed']
    """
    selection = store.select(images, labels=labels)
    if (selection.labels < 0).any():
        raise LabelError("fit needs labelled images; some of the selected images have no label.")
    x = torch.from_numpy(store.model_input(selection))
    y = torch.from_numpy(selection.labels)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    losses = []
    with threads_for(model):
        losses = _epochs(model, x, y, optimizer, generator, epochs, batch_size, progress)
    model.eval()
    settings = {"epochs": epochs, "lr": lr, "batch_size": batch_size, "weight_decay": weight_decay, "seed": seed}
    store.note_training(model, selection, hyperparams=settings,
                        metrics={"loss": losses[-1]} if losses else None, notes="odinlab.training.fit")
    return losses


def _epochs(model, x, y, optimizer, generator, epochs, batch_size, progress) -> list[float]:
    losses = []
    for _ in trange(epochs, desc="train", unit="epoch", disable=not progress, delay=1):
        order, total = torch.randperm(len(y), generator=generator), 0.0
        for start in range(0, len(y), batch_size):
            batch = order[start : start + batch_size]
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        losses.append(total / len(y))
    return losses
