"""`odinlab demo`: digits in a store, two CNN versions with lineage, experiments, a summary, and a
standalone report; then it says how to open the explorer."""

from __future__ import annotations

import shutil
import time
import warnings
from pathlib import Path

import polars as pl
import torch

import odinlab
from odinlab.errors import StoreError, TestSetReuseWarning
from odinlab.nets import SmallCNN
from odinlab.training import fit

V1_HYPERPARAMS = {"epochs": 15, "lr": 0.01, "batch_size": 64, "width": 16}
DEMO_LAYERS = ["features.relu1", "features.relu2", "head.fc1"]
V2_HYPERPARAMS = {"epochs": 10, "lr": 0.003, "batch_size": 64, "width": 16, "frozen": "features",
                  "weight_decay": 1e-4}


def run_demo(store_path: str | Path = "odinlab-demo-store", echo=print) -> odinlab.Store:
    """Build the demo store and print what is in it; return the store.

    >>> import tempfile
    >>> demo = run_demo(tempfile.mkdtemp() + "/demo", echo=lambda *args: None)
    >>> demo.models["model_id"].to_list()
    ['digits-cnn@1', 'digits-cnn@2']
    """
    started = time.perf_counter()
    torch.manual_seed(0)
    store = _fresh_store(Path(store_path), echo)
    store.ingest(odinlab.datasets.digits())
    echo(f"Ingested {store.images.height} digits (8×8, 10 classes) into {store.url}")

    v1 = SmallCNN(in_channels=1, num_classes=10, width=V1_HYPERPARAMS["width"])
    fit(v1, store, "train", epochs=V1_HYPERPARAMS["epochs"], lr=V1_HYPERPARAMS["lr"])
    v1_id = store.register_model(v1, "digits-cnn", hyperparams=V1_HYPERPARAMS,
                                 description="trained from scratch")

    # v2 is fine-tuned from v1 with the conv layers frozen: those tensors are stored once.
    v2 = store.load_weights(SmallCNN(in_channels=1, num_classes=10, width=V2_HYPERPARAMS["width"]), v1_id)
    v2.features.requires_grad_(False)
    fit(v2, store, "train", epochs=V2_HYPERPARAMS["epochs"], lr=V2_HYPERPARAMS["lr"],
                 weight_decay=V2_HYPERPARAMS["weight_decay"], seed=1)
    v2_id = store.register_model(v2, "digits-cnn", parent=v1_id, hyperparams=V2_HYPERPARAMS,
                                 description="v1 fine-tuned, conv layers frozen")

    with warnings.catch_warnings(record=True) as caught:
        results = {(m, split): store.evaluate(net, split)
                   for m, net in ((v1_id, v1), (v2_id, v2)) for split in ("val", "test")}
    # Predictions and three layers of both versions, one forward pass per batch each.
    for net in (v1, v2):
        store.materialize(net, DEMO_LAYERS, dtype="float16", progress=False)
    _print_summary(store, results, caught, time.perf_counter() - started, echo)
    _write_report(store, [v1_id, v2_id], Path(store_path), echo)
    return store


def _write_report(store, models, store_path: Path, echo) -> Path:
    """The standalone report of both versions beside the store, and how to go on in JupyterLab."""
    from odinlab.reports import report

    path = report(store, models, store_path.resolve().parent / f"{store_path.name}-report.html", images="test")
    echo(f"\nReport: {path} ({path.stat().st_size / 1e6:.1f} MB, one file that opens offline in any browser)")
    echo("Explore it in JupyterLab: jupyter lab notebooks/quickstart.ipynb "
         "(or, in any notebook: odinlab.explore(odinlab.open_store(...), 'digits-cnn@1'))")
    return path


def _fresh_store(path: Path, echo) -> odinlab.Store:
    if path.exists() and any(path.iterdir()):
        if not (path / "odinlab.json").is_file():
            raise StoreError(f"{str(path)!r} exists and is not an odinlab store; choose another --store.")
        echo(f"Replacing the earlier demo store at {path}")
        shutil.rmtree(path)
    return odinlab.open_store(path, mode="w-")


def _print_summary(store, results, caught, seconds, echo) -> None:
    echo("\nModels")
    models = store.models.select("model_id", "parent", "num_params", "new_weight_bytes", "description")
    echo(_table(models))
    echo("\nEvaluations")
    rows = pl.concat([r.with_columns(split=pl.lit(split)) for (m, split), r in results.items()])
    echo(_table(rows.select("model_id", "split", pl.col("accuracy").round(4), pl.col("loss").round(4),
                            misclassified=(pl.col("n_test") * (1 - pl.col("accuracy"))).round().cast(pl.Int64),
                            of="n_test")))
    echo("\nMaterialized (predictions and activations of every image)")
    echo(_table(store.materialized().select("model_id", "array", "shape", "images", "bytes")))
    wrong = store.sql("SELECT model_id, COUNT(*) AS wrong FROM predictions WHERE NOT correct "
                      "AND split = 'test' GROUP BY model_id ORDER BY model_id")
    echo("Misclassified test images per version (from stored predictions): "
         + ", ".join(f"{m}: {n}" for m, n in wrong.iter_rows()))
    for warning in caught:
        if issubclass(warning.category, TestSetReuseWarning):
            echo("\nTest-set guard (the demo triggers it on purpose, to show it: v2 was tuned with other "
                 f"hyper-parameters and then evaluated on the test split again):\n{warning.message}")
    summary = store.summary()
    echo(f"\nStore: {summary['images']} images {summary['splits']}, {len(summary['models'])} model "
         f"versions, {summary['experiments']} experiments, {summary['bytes_on_disk'] / 1e6:.2f} MB on disk")
    echo(f"Store path: {store.url}")
    echo(f"Demo took {seconds:.1f} s. Next: store = odinlab.open_store({store.url!r}); "
         "store.sql('SELECT * FROM experiments')")


def _table(frame: pl.DataFrame) -> str:
    with pl.Config(tbl_rows=50, tbl_cols=20, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True,
                   fmt_str_lengths=40, tbl_width_chars=140):
        return str(frame)
