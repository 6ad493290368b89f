"""Cross-validation: held-out probabilities for every image, from fold models kept as a lineage.

A model's probabilities on its own training images are overconfident, so they hide the
images whose labels are wrong (it learned them). ``store.cross_validate`` trains one model
per fold on the other folds, keeps each image's probabilities from the fold model that did
not see it (a named *held-out prediction set* of the validated model), and records every
fold as a version (``<name>-cv@N``, child of the validated model) with its training run and
its score on the held-out fold. ``store.predictions`` then uses these probabilities for
those images (``held_out`` and ``predicted_by`` say so), and so does every error analysis.

On disk: ``models/<name>/v<N>/heldout/<set>`` is a row array of probabilities with ``loss``
and ``fold`` per row; its attributes hold the fold models. A stopped run resumes: folds
whose rows are all done are not trained again.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import polars as pl
import torch
from torch import nn
from tqdm.auto import trange

from odinlab.errors import LabelError, OptionError
from odinlab.store.selection import ImageSelection, Selection
from odinlab.torch_helpers import evaluating, module_device

DEFAULT_SET = "cv"


@dataclass(frozen=True)
class CrossValidation:
    """What ``store.cross_validate`` did: the validated model, its held-out set and the folds.

    ``folds`` has one row per fold: fold, model_id (the fold model), n_train, n_held_out,
    accuracy and loss on the held-out fold. ``assignment`` maps image_id to fold.
    """

    model_id: str
    name: str
    folds: pl.DataFrame
    assignment: pl.DataFrame

    @property
    def fold_models(self) -> list[str]:
        return self.folds["model_id"].to_list()

    @property
    def accuracy(self) -> float:
        """Held-out accuracy over every image (each predicted by the fold model that did not see it)."""
        weights = self.folds["n_held_out"].to_numpy()
        return float(np.average(self.folds["accuracy"].to_numpy(), weights=weights))

    def __repr__(self) -> str:
        return (f"<CrossValidation {self.name!r} of {self.model_id}: {self.folds.height} folds, "
                f"{self.assignment.height} images, held-out accuracy {self.accuracy:.3f}>")

    def _repr_html_(self) -> str:
        return f"<p>{self!r}</p>".replace("<C", "&lt;C").replace(">", "&gt;", 1) + self.folds._repr_html_()


def cross_validate(store, build: Callable[[], nn.Module], images: ImageSelection = "train", *, folds: int = 5,
                   fit: Callable | None = None, seed: int = 0, model=None, name: str = DEFAULT_SET,
                   progress: bool = True) -> CrossValidation:
    """Held-out probabilities for every image of ``images`` from ``folds`` models, kept in the store.

    ``build()`` returns a fresh network (a class such as ``SmallCNN`` works, or a lambda);
    ``fit(module, store, images)`` trains it (default: :func:`odinlab.training.fit` with its
    defaults and ``seed``). Folds are stratified by label. The held-out set belongs to ``model``
    (a version trained on these images); without ``model``, one more network is trained on all of
    them and registered as ``build``'s class name in lower case, so one call gives a model with
    out-of-sample probabilities. Afterwards ``store.predictions(model)``, ``label_errors`` and
    every error analysis use the held-out probabilities for these images.

    >>> one_epoch = lambda module, store, images: fit(module, store, images, epochs=1, progress=False)
    >>> cv = store.cross_validate(SmallCNN, "val", folds=3, fit=one_epoch, model="cnn@1", progress=False)
    >>> cv.fold_models
    ['cnn-cv@1', 'cnn-cv@2', 'cnn-cv@3']
    >>> frame = store.predictions("cnn@1", "val")
    >>> frame["held_out"].all(), sorted(set(frame["predicted_by"])) == cv.fold_models
    (True, True)
    """
    _check_options(folds, seed, name, fit)
    selection = store.select(images).unique()
    unlabelled = int((selection.labels < 0).sum())
    if unlabelled:
        raise LabelError(f"{unlabelled} of the selected images have no label; cross-validation needs labels "
                         "(select them with pl.col('label').is_not_null()).")
    fold_of = _assign_folds(selection.labels, folds, seed)
    fit = fit or functools.partial(_default_fit, seed=seed)
    record = store.model(model) if model is not None else _train_full(store, build, fit, selection, seed)
    target = _held_out_array(store, record, name, folds, seed, selection)
    rows = []
    for fold in trange(folds, desc=f"cross_validate {record.model_id}", unit="fold", disable=not progress):
        held, train = selection[fold_of == fold], selection[fold_of != fold]
        fold_model = _fold_model(store, target, fold, held)
        if fold_model is None:
            fold_model = _train_fold(store, build, fit, record, name, folds, fold, seed, train, target, held)
        rows.append({"fold": fold, "model_id": fold_model, "n_train": len(train), "n_held_out": len(held),
                     **_held_out_scores(target, held)})
    assignment = pl.DataFrame({"image_id": selection.ids, "fold": fold_of.astype(np.int64)})
    return CrossValidation(record.model_id, name, pl.DataFrame(rows), assignment)


# -- steps ------------------------------------------------------------------------------------

def _check_options(folds, seed, name, fit) -> None:
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise OptionError(f"folds must be an int of at least 2, not {folds!r}; 5 is usual.")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise OptionError(f"seed must be a non-negative int, not {seed!r}.")
    if not isinstance(name, str) or not name:
        raise OptionError(f"name must be a non-empty string naming the held-out set, not {name!r}.")
    if fit is not None and not callable(fit):
        raise OptionError(f"fit must be a function fit(module, store, images) that trains module, not {fit!r}.")


def _assign_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """A fold per image, stratified by label; refuses a class with fewer images than folds."""
    from sklearn.model_selection import StratifiedKFold  # sklearn is slow to import

    counts = np.bincount(labels)
    small = [int(c) for c in np.flatnonzero((counts > 0) & (counts < folds))]
    if small:
        raise OptionError(f"Classes {small} have fewer images than folds={folds} "
                          f"(as few as {int(counts[small].min())}); use fewer folds or more images.")
    fold_of = np.zeros(len(labels), np.int64)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fold, (_, held) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        fold_of[held] = fold
    return fold_of


def _default_fit(module: nn.Module, store, images, *, seed: int) -> None:
    from odinlab.training import fit

    fit(module, store, images, seed=seed, progress=False)


def _build(build, seed: int) -> nn.Module:
    torch.manual_seed(seed)  # the same initial weights on every run of the same call
    module = build()
    if not isinstance(module, nn.Module):
        raise OptionError(f"build() must return a fresh torch.nn.Module, not {type(module).__name__}.")
    return module


def _train_full(store, build, fit, selection: Selection, seed: int):
    module = _build(build, seed)
    _fit_noted(store, fit, module, selection)
    name = type(module).__name__.lower()
    parent = store.resolve_model(name) if name in store.models["name"] else None
    return store.model(store.register_model(module, name, parent=parent,
                                            description="trained on all cross-validated images"))


def _fit_noted(store, fit, module: nn.Module, images: Selection) -> None:
    """Train, and make sure the run is noted even when a custom ``fit`` does not note it."""
    fit(module, store, images)
    if not store._models.noted_training(module):
        store.note_training(module, images, notes=f"cross_validate with fit={getattr(fit, '__name__', fit)!r}")


def _held_out_array(store, record, name: str, folds: int, seed: int, selection: Selection):
    settings = {"folds": folds, "seed": seed, "images": _ids_digest(selection.ids)}
    attrs = (("set", name), ("settings", json.dumps(settings, sort_keys=True)))
    existing = store.results.find_row_array(record, "heldout", name)
    if existing is not None and existing.group.attrs.get("settings") != attrs[1][1]:
        raise OptionError(
            f"{record.model_id} already has a held-out set {name!r} made with other settings "
            f"({existing.group.attrs.get('settings')}); pass name='...' for another set."
        )
    target = store.results.row_array(record, "heldout", name, shape=(record.num_classes,), dtype="float32",
                                      attrs=attrs, extras=("loss", "fold"))
    if "created_at" not in target.group.attrs:
        target.group.attrs.update({"created_at": datetime.now(UTC).isoformat(), "fold_models": [None] * folds})
    return target


def _fold_model(store, target, fold: int, held: Selection) -> str | None:
    """The fold's model if its held-out rows are all written (a resumed run skips it)."""
    fold_models = target.group.attrs.get("fold_models") or []
    done = fold < len(fold_models) and fold_models[fold] is not None
    return fold_models[fold] if done and target.done_rows(held.rows).all() else None


def _train_fold(store, build, fit, record, name, folds, fold, seed, train, target, held) -> str:
    module = _build(build, seed + 1 + fold)
    _fit_noted(store, fit, module, train)
    fold_id = store.register_model(
        module, f"{record.name}-cv", parent=record.model_id,
        hyperparams={"held_out_set": name, "fold": fold, "folds": folds, "seed": seed},
        description=f"fold {fold + 1} of {folds} of cross-validation {name!r} of {record.model_id}")
    probs, loss = _probabilities(store, module, held)
    order = np.argsort(held.rows)  # writes go in row order
    target.write(held.rows[order], probs[order], loss=loss[order], fold=np.full(len(held), fold, np.float32))
    fold_models = list(target.group.attrs["fold_models"])
    fold_models[fold] = fold_id
    with store._backend.writing("cross_validate"):
        target.group.attrs.update({"fold_models": fold_models})
    store.record_experiment(fold_id, kind="eval", test_images=held,
                            metrics={"accuracy": float((probs.argmax(1) == held.labels).mean()),
                                     "loss": float(loss.mean())},
                            notes=f"held-out fold {fold + 1}/{folds} of {name!r}")
    return fold_id


def _probabilities(store, module: nn.Module, selection: Selection) -> tuple[np.ndarray, np.ndarray]:
    device, probs, losses = module_device(module), [], []
    with evaluating(module), torch.no_grad():
        for batch in selection.chunks(256):
            logits = module(torch.from_numpy(store.model_input(batch)).to(device)).float()
            labels = torch.from_numpy(batch.labels).to(device)
            probs.append(torch.softmax(logits, 1).cpu().numpy())
            losses.append(nn.functional.cross_entropy(logits, labels, reduction="none").cpu().numpy())
    return np.concatenate(probs), np.concatenate(losses)


def _held_out_scores(target, held: Selection) -> dict:
    probs, loss = target.read(held.rows), target.read_extra("loss", held.rows)
    return {"accuracy": float((probs.argmax(1) == held.labels).mean()), "loss": float(loss.mean())}


def _ids_digest(ids) -> str:
    import hashlib

    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]
