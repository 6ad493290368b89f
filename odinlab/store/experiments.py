"""Experiments: training and evaluation runs, their image sets and metrics, and the test-set guard."""

from __future__ import annotations

import hashlib
import json
import warnings
from datetime import UTC, datetime

import numpy as np
import polars as pl
import torch
from torch import nn

from odinlab.errors import LabelError, TestSetReuseWarning
from odinlab.store.images import ImageSelection
from odinlab.store.metrics import classification_metrics

TEST_SPLIT = "test"
# Every reuse must be seen, not only the first one from a given line of code.
warnings.filterwarnings("always", category=TestSetReuseWarning)


class ExperimentsMixin:
    """Store methods for experiments; mixed into :class:`odinlab.Store`."""

    @property
    def experiments(self) -> pl.DataFrame:
        """The experiments table: model, image sets, hyper-parameters, metrics, test-set looks.

        >>> store.experiments.columns[:4]
        ['experiment_id', 'model_id', 'kind', 'created_at']
        """
        return self._tables.read("experiments")

    @property
    def image_sets(self) -> pl.DataFrame:
        """Image sets of experiments in long form (set_id, image_id), for joins with ``images``.

        >>> _ = store.evaluate(net, "val")
        >>> store.image_sets.height
        269
        """
        return self._tables.read("image_sets")

    def record_experiment(self, model_id: str, *, kind: str = "train",
                          train_images: ImageSelection = None, test_images: ImageSelection = None,
                          hyperparams: dict | None = None, metrics: dict | None = None,
                          notes: str | None = None) -> str:
        """Record a run of a model version and return its experiment id.

        ``train_images``/``test_images`` are image selections (split, ids or frame); ``metrics``
        may hold accuracy, loss, precision, recall, f1, confusion and anything else (kept as
        JSON). Hyper-parameters default to the ones the version was registered with. A run
        whose test images include the test split counts as a look at the test set.

        >>> store.record_experiment("cnn@1", train_images="train", metrics={"loss": 0.2})
        'exp-00001'
        """
        self._check_writable()
        model_id = self.resolve_model(model_id)
        if hyperparams is None:
            hyperparams = json.loads(self._row(model_id)["hyperparams"] or "{}")
        train = self.select(train_images) if train_images is not None else None
        test = self.select(test_images) if test_images is not None else None
        metrics = dict(metrics or {})
        known = {k: metrics.pop(k, None) for k in ("accuracy", "loss", "precision", "recall", "f1", "confusion")}
        hyper_json = json.dumps(hyperparams, sort_keys=True, default=str)
        look, reuse = self._test_look(model_id, test, hyper_json)
        experiment_id = f"exp-{self.experiments.height + 1:05d}"
        row = {
            "experiment_id": experiment_id, "model_id": model_id, "kind": kind,
            "created_at": datetime.now(UTC),
            "train_set": self._image_set(train), "test_set": self._image_set(test),
            "n_train": None if train is None else train.height,
            "n_test": None if test is None else test.height,
            "test_splits": None if test is None else sorted(test["split"].drop_nulls().unique().to_list()),
            "hyperparams": hyper_json, **known,
            "metrics": json.dumps(metrics, default=str), "test_look": look, "test_reuse": reuse,
            "notes": notes,
        }
        self._tables.append("experiments", pl.DataFrame([row], schema=self.experiments.schema))
        return experiment_id

    def evaluate(self, model: nn.Module, images: ImageSelection = TEST_SPLIT, *,
                 model_id: str | None = None, hyperparams: dict | None = None,
                 batch_size: int = 256, notes: str | None = None) -> dict:
        """Run ``model`` on labelled images, record the metrics as an experiment, return them.

        The version is found from the module's weights (or give ``model_id``). Metrics:
        accuracy, mean cross-entropy loss, per-class precision/recall/F1, confusion matrix.

        >>> result = store.evaluate(net, "val")
        >>> result["model_id"], result["n"], result["accuracy"] > 0.5
        ('cnn@1', 269, True)
        """
        model_id = self.resolve_model(model_id) if model_id is not None else self.model_id_of(model)
        selected = self.select(images)
        if selected["label"].null_count():
            raise LabelError(
                f"{selected['label'].null_count()} of the selected images have no label; "
                "evaluate needs labelled images (filter store.images on label.is_not_null())."
            )
        y_true, y_pred, loss = _predict(model, self.batches(selected, batch_size, progress="evaluate"))
        n_classes = max(len(self._row(model_id)["classes"]), int(y_true.max()) + 1, int(y_pred.max()) + 1)
        metrics = {**classification_metrics(y_true, y_pred, n_classes), "loss": loss}
        experiment_id = self.record_experiment(model_id, kind="eval", test_images=selected,
                                               hyperparams=hyperparams, metrics=metrics, notes=notes)
        return {"experiment_id": experiment_id, "model_id": model_id, "n": len(y_true), **metrics}

    # -- internals -------------------------------------------------------------------------

    def _test_look(self, model_id: str, test: pl.DataFrame | None, hyper_json: str):
        """Count this run as the lineage's n-th look at the test split; warn if tuned since."""
        if test is None or not (test["split"] == TEST_SPLIT).any():
            return None, None
        lineage = self._lineage_of(model_id)
        looks = self.experiments.filter(pl.col("model_id").is_in(lineage) & pl.col("test_look").is_not_null())
        changed = sorted(set(looks["hyperparams"].to_list()) - {hyper_json})
        reuse = bool(changed)
        if reuse:
            warnings.warn(
                f"The test split has been looked at {looks.height} time(s) by the lineage of {model_id} "
                f"({', '.join(sorted(set(lineage)))}) and the hyper-parameters changed since "
                f"(before: {changed[-1]}, now: {hyper_json}). Choosing hyper-parameters by test accuracy "
                "overstates it: tune on the validation split and evaluate on the test split once. "
                "This run is marked test_reuse=True in store.experiments.",
                TestSetReuseWarning, stacklevel=3,
            )
        return looks.height + 1, reuse

    def _lineage_of(self, model_id: str) -> list[str]:
        ancestors = self.ancestors(model_id)["model_id"].to_list()
        root = ancestors[-1] if ancestors else model_id
        return [root, *self.descendants(root)["model_id"].to_list()]

    def _image_set(self, rows: pl.DataFrame | None) -> str | None:
        if rows is None:
            return None
        ids = sorted(rows["image_id"].to_list())
        set_id = "set-" + hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]
        if set_id not in self.image_sets["set_id"]:
            self._tables.append("image_sets", pl.DataFrame({"set_id": set_id, "image_id": ids}))
        return set_id


def _predict(model: nn.Module, batches) -> tuple[np.ndarray, np.ndarray, float]:
    device = next(model.parameters(), torch.empty(0)).device
    was_training, truth, predicted, loss_sum = model.training, [], [], 0.0
    model.eval()
    try:
        with torch.no_grad():
            for rows, x in batches:
                logits = model(torch.from_numpy(x).to(device))
                y = torch.tensor(rows["label"].to_numpy(), device=device)
                loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
                truth.append(rows["label"].to_numpy())
                predicted.append(logits.argmax(dim=1).cpu().numpy())
    finally:
        model.train(was_training)
    y_true, y_pred = np.concatenate(truth), np.concatenate(predicted)
    return y_true, y_pred, loss_sum / max(len(y_true), 1)
