"""A digits store on disk with two versions, hostile text in the store, and its report (built once)."""

import dataclasses
import uuid
import warnings

import polars as pl
import pytest
import torch

import odinlab
from odinlab.errors import TestSetReuseWarning
from odinlab.nets import SmallCNN
from odinlab.training import fit

HOSTILE = "<script>alert(1)</script>"
HOSTILE_NOTE = "<img src=x onerror=alert(2)>"
LAYERS = ["features.relu2", "head.fc1"]
OPTIONS = {"images": "test", "embedding": "pca", "attribution": "saliency", "max_steps": 16, "units": 2, "k": 6}


@pytest.fixture(scope="session")
def report_store(tmp_path_factory):
    """(store, v1, v2): digits whose metadata column ``note`` is hostile, v2 fine-tuned from v1 with a
    hostile description, both evaluated on the test split and materialized there, one label corrected."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    store = odinlab.open_store(tmp_path_factory.mktemp("report") / f"store-{uuid.uuid4().hex[:6]}", create=True)
    data = odinlab.datasets.digits()
    store.ingest(dataclasses.replace(data, metadata=data.metadata.with_columns(note=pl.lit(HOSTILE))))
    net = SmallCNN()
    fit(net, store, "train", epochs=3, progress=False)
    v1 = store.register_model(net, "digits", hyperparams={"epochs": 3}, description="from scratch")
    tuned = store.load_weights(SmallCNN(), v1)
    fit(tuned, store, "train", epochs=1, lr=0.003, seed=1, progress=False)
    v2 = store.register_model(tuned, "digits", parent=v1, hyperparams={"epochs": 1}, description=HOSTILE)
    for module in (net, tuned):
        with warnings.catch_warnings():  # v2's look at the test split after a change: the guard warns, on purpose
            warnings.simplefilter("ignore", TestSetReuseWarning)
            store.evaluate(module, "test")
        store.materialize(module, LAYERS, "test", progress=False)
    store.correct_labels([store.select("test").ids[0]], ["7"], note=HOSTILE_NOTE)
    return store, v1, v2


@pytest.fixture(scope="session")
def digits_report(report_store, tmp_path_factory):
    """(path, html) of the report comparing v1 and v2 on the test split."""
    store, v1, v2 = report_store
    path = odinlab_report(store, [v1, v2], tmp_path_factory.mktemp("out") / "report.html")
    return path, path.read_text(encoding="utf-8")


def odinlab_report(store, models, path, **options):
    from odinlab.reports import report

    return report(store, models, path, **{**OPTIONS, **options})
