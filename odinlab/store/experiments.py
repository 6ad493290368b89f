"""Experiments: training and evaluation runs, their image sets and metrics, and the test-set guard."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import warnings
from datetime import UTC, datetime

import numpy as np
import polars as pl
import torch
from torch import nn

from odinlab.errors import LabelError, OptionError, TestSetReuseWarning, listing
from odinlab.store.backend import Backend, writes
from odinlab.store.images import ImageCatalog
from odinlab.store.metrics import classification_metrics
from odinlab.store.models import ModelRef, ModelRegistry
from odinlab.store.selection import ImageSelection, Selection
from odinlab.torch_helpers import evaluating, module_device

TEST_SPLIT = "test"


class ExperimentLog:
    """Training and evaluation runs, their image sets and metrics, and the test-set guard."""

    def __init__(self, backend: Backend, images: ImageCatalog, models: ModelRegistry):
        self._backend = backend
        self._images = images
        self._models = models
        models.on_trained = self._record_training

    def _record_training(self, model_id: str, run) -> str:
        """Record a noted training run (:meth:`ModelRegistry.note_training`) of a newly registered version."""
        hyperparams = {**self._models.record(model_id).hyperparams, **run.hyperparams}
        return self.record(model_id, kind="train", train_images=list(run.image_ids), hyperparams=hyperparams,
                           metrics=run.metrics, notes=run.notes, labels=run.label_set)

    @property
    def table(self) -> pl.DataFrame:
        """The experiments table: model, image sets, hyper-parameters, metrics, test-set looks.

        >>> store.experiments.columns[:4]
        ['experiment_id', 'model_id', 'kind', 'created_at']
        """
        return self._backend.tables.read("experiments")

    @property
    def image_sets(self) -> pl.DataFrame:
        """Image sets of experiments in long form (set_id, image_id), for joins with ``images``.

        >>> _ = store.evaluate(net, "val")  # its image set joins the one fit trained on
        >>> store.image_sets.group_by("set_id").len()["len"].sort().to_list()
        [269, 1258]
        """
        return self._backend.tables.read("image_sets")

    @writes("record")
    def record(self, model: ModelRef, *, kind: str = "train",
                          train_images: ImageSelection = None, test_images: ImageSelection = None,
                          hyperparams: dict | None = None, metrics: dict | None = None,
                          notes: str | None = None, labels: str | None = None) -> str:
        """Record a run of a model version and return its experiment id.

        ``train_images``/``test_images`` are image selections (split, ids or frame); ``metrics``
        may hold accuracy, loss, precision, recall, f1, confusion and anything else (kept as
        JSON). Hyper-parameters default to the ones the version was registered with. A run
        whose test images include the test split counts as a look at the test set.
        ``labels`` names the label set the run used (column ``label_set``; by default the one
        its selections carry, None for the original labels).

        >>> store.record_experiment("cnn@1", train_images="train", metrics={"loss": 0.2})
        'exp-00002'
        """
        self._backend.check_writable()
        record = self._models.record(model)
        model_id = record.model_id
        if hyperparams is None:
            hyperparams = dict(record.hyperparams)
        train = self._images.select(train_images, labels=labels) if train_images is not None else None
        test = self._images.select(test_images, labels=labels) if test_images is not None else None
        label_set = _label_set(train, test)
        metrics = dict(metrics or {})
        known = {k: metrics.pop(k, None) for k in ("accuracy", "loss", "precision", "recall", "f1", "confusion")}
        hyper_json = json.dumps(hyperparams, sort_keys=True, default=str)
        look, reuse = self._test_look(model_id, test, hyper_json)
        experiment_id = f"exp-{self.table.height + 1:05d}"
        row = {
            "experiment_id": experiment_id, "model_id": model_id, "kind": kind,
            "created_at": datetime.now(UTC),
            "train_set": self._image_set(train), "test_set": self._image_set(test),
            "n_train": None if train is None else len(train),
            "n_test": None if test is None else len(test),
            "test_splits": None if test is None else sorted(test.frame["split"].drop_nulls().unique().to_list()),
            "hyperparams": hyper_json, **known,
            "metrics": json.dumps(metrics, default=str), "test_look": look, "test_reuse": reuse,
            "notes": notes, "label_set": label_set,
        }
        self._backend.tables.append("experiments", pl.DataFrame([row], schema=self.table.schema))
        return experiment_id

    def evaluate(self, model: ModelRef, images: ImageSelection = TEST_SPLIT, *,
                 model_id: str | None = None, hyperparams: dict | None = None,
                 batch_size: int = 256, notes: str | None = None, labels: str | None = None) -> pl.DataFrame:
        """Run a model on labelled images, record the metrics as an experiment, return its row.

        ``model`` is a module (its version found from its weights, or give ``model_id``, whose
        weights it must hold) or a version whose module this session holds. Metrics: accuracy,
        mean cross-entropy loss, per-class precision/recall/F1 and the confusion matrix
        (``store.metrics`` has them long). ``labels`` names a label set to score against
        (:meth:`~odinlab.Store.correct_labels`); the experiment records it in ``label_set``.

        >>> result = store.evaluate(net, "val")
        >>> result.select("experiment_id", "model_id", "n_test").row(0), result["accuracy"][0] > 0.5
        (('exp-00002', 'cnn@1', 269), True)
        >>> _ = store.correct_labels(store.select("val").ids[:5], [0] * 5)
        >>> store.evaluate(net, "val", labels="reviewed")["label_set"].to_list()
        ['reviewed']
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise OptionError(f"batch_size must be a positive int, not {batch_size!r}.")
        record, module = self._models.record_and_module(model, model_id)
        selected = self._images.select(images, labels=labels)
        unlabelled = int((selected.labels < 0).sum())
        if unlabelled:
            raise LabelError(
                f"{unlabelled} of the selected images have no label; evaluate needs labelled images "
                "(select them with pl.col('label').is_not_null())."
            )
        y_true, y_pred, loss = _predict(module, self._images.batches(selected, batch_size, progress="evaluate"))
        n_classes = max(record.num_classes, int(y_true.max()) + 1, int(y_pred.max()) + 1)
        metrics = {**classification_metrics(y_true, y_pred, n_classes), "loss": loss}
        experiment_id = self.record(record, kind="eval", test_images=selected,
                                    hyperparams=hyperparams, metrics=metrics, notes=notes)
        return self.table.filter(pl.col("experiment_id") == experiment_id)

    def metrics(self, experiments: str | list[str] | None = None) -> pl.DataFrame:
        """Metrics of experiments in long form: one row per (experiment, metric, class).

        ``class`` is null for whole-set metrics (accuracy, loss, and any extra metric recorded);
        per-class precision, recall and F1 carry the class index and name.

        >>> _ = store.evaluate(net, "val")
        >>> m = store.metrics()
        >>> m.filter(pl.col("metric") == "accuracy").select("experiment_id", "class").row(0)
        ('exp-00002', None)
        >>> m.filter(pl.col("metric") == "recall").height
        10
        """
        table = self.table
        if experiments is not None:
            table = table.filter(pl.col("experiment_id").is_in([experiments] if isinstance(experiments, str)
                                                               else list(experiments)))
        rows = []
        for run in table.iter_rows(named=True):
            classes = self._models.record(run["model_id"]).classes
            base = {"experiment_id": run["experiment_id"], "model_id": run["model_id"], "kind": run["kind"]}
            extra = {k: v for k, v in json.loads(run["metrics"] or "{}").items() if isinstance(v, int | float)}
            for metric, value in {"accuracy": run["accuracy"], "loss": run["loss"], **extra}.items():
                if value is not None:
                    rows.append({**base, "metric": metric, "class": None, "class_name": None, "value": float(value)})
            for metric in ("precision", "recall", "f1"):
                for index, value in enumerate(run[metric] or []):
                    name = classes[index] if index < len(classes) else str(index)
                    rows.append({**base, "metric": metric, "class": index, "class_name": name, "value": value})
        return pl.DataFrame(rows, schema={"experiment_id": pl.String, "model_id": pl.String, "kind": pl.String,
                                          "metric": pl.String, "class": pl.Int64, "class_name": pl.String,
                                          "value": pl.Float64})

    # -- internals -------------------------------------------------------------------------

    def _test_look(self, model_id: str, test: Selection | None, hyper_json: str):
        """Count this run as the lineage's n-th look at the test split; warn if tuned since."""
        if test is None or not (test.frame["split"] == TEST_SPLIT).any():
            return None, None
        lineage = self._models.lineage(model_id)
        looks = self.table.filter(pl.col("model_id").is_in(lineage) & pl.col("test_look").is_not_null())
        changed = sorted(set(looks["hyperparams"].to_list()) - {hyper_json})
        reuse = bool(changed)
        if reuse:
            warnings.warn(
                f"The test split has been looked at {looks.height} time(s) by the lineage of {model_id} "
                f"({', '.join(sorted(set(lineage)))}) and the hyper-parameters changed since "
                f"(before: {changed[-1]}, now: {hyper_json}). Choosing hyper-parameters by test accuracy "
                "overstates it: tune on the validation split and evaluate on the test split once. "
                "This run is marked test_reuse=True in store.experiments.",
                TestSetReuseWarning, stacklevel=_user_stacklevel(),
            )
        return looks.height + 1, reuse

    def _image_set(self, selection: Selection | None) -> str | None:
        if selection is None:
            return None
        ids = sorted(selection.ids)
        set_id = "set-" + hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]
        if set_id not in self.image_sets["set_id"]:
            self._backend.tables.append("image_sets", pl.DataFrame({"set_id": set_id, "image_id": ids}))
        return set_id


def _label_set(*selections: Selection | None) -> str | None:
    """The label set a run's selections share (None: the original labels); two different ones are refused."""
    sets = {s.label_set for s in selections if s is not None}
    if len(sets) > 1:
        used = listing(sorted(map(str, sets)))
        raise OptionError(f"The train and test images of one run use different label sets ({used}); "
                          "pass labels= to use one for both.")
    return sets.pop() if sets else None


def _user_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning point at the first caller outside odinlab.

    Called from the function that warns: level 1 is that function, and every odinlab frame
    above it (``store.evaluate`` → ``ExperimentLog.evaluate`` → ``record`` → ...) is skipped,
    however the user got there, so the warning names the user's file and line.
    """
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep  # odinlab/
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def _predict(module: nn.Module, batches) -> tuple[np.ndarray, np.ndarray, float]:
    device = module_device(module)
    truth, predicted, loss_sum = [], [], 0.0
    with evaluating(module), torch.no_grad():
        for rows, x in batches:
            logits = module(torch.from_numpy(x).to(device))
            y = torch.tensor(rows["label"].to_numpy(), device=device)
            loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            truth.append(rows["label"].to_numpy())
            predicted.append(logits.argmax(dim=1).cpu().numpy())
    y_true, y_pred = np.concatenate(truth), np.concatenate(predicted)
    return y_true, y_pred, loss_sum / max(len(y_true), 1)
