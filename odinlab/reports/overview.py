"""Report sections read from the store's tables: models, experiments, label corrections, provenance."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

from odinlab.reports.blocks import Section, note, table
from odinlab.reports.context import Context

MODEL_COLUMNS = ("model_id", "parent", "created_at", "num_params", "num_layers", "new_weight_bytes",
                 "hyperparams", "description")
EXPERIMENT_COLUMNS = ("experiment_id", "model_id", "kind", "created_at", "n_train", "n_test", "test_splits",
                      "label_set", "accuracy", "loss", "test_look", "test_reuse", "notes")
ARCHITECTURE_ROWS = 60  # a ResNet has hundreds of named layers: the rest is counted, not listed


def models_section(ctx: Context) -> Section:
    """The models with their lineage (every version of their families) and architecture summaries.

    >>> section = models_section(Context(store, [store.model("cnn@1")], store.select("val"), "head.fc1"))
    >>> [b["kind"] for b in section.blocks], section.blocks[0]["rows"][0][0]
    (['table', 'table'], 'cnn@1')
    """
    store = ctx.store
    family = list(dict.fromkeys(m for r in ctx.records for m in store.lineage(r)))
    versions = store.models.filter(pl.col("model_id").is_in(family))
    chains = {m: " ← ".join([m, *store.ancestors(m)["model_id"].to_list()]) for m in family}
    shown = versions.select(*MODEL_COLUMNS).with_columns(
        lineage=pl.col("model_id").replace_strict(chains, default=None),
        reported=pl.col("model_id").is_in([r.model_id for r in ctx.records]))
    section = Section("models", "Models", "The versions reported on and their families (lineage: the version, "
                      "then its ancestors).")
    section.add(table(shown, "Versions", name="models"))
    for record in ctx.records:
        arch = store.architecture(record).with_columns(pl.col("output_shape").list.eval(
            pl.element().cast(pl.String)).list.join("×"))
        section.add(table(arch, f"Architecture of {record.model_id}: {record.num_params:,} parameters, "
                                f"input {'×'.join(map(str, record.input_shape))}, {len(record.classes)} classes",
                          max_rows=ARCHITECTURE_ROWS, name=f"architecture-{record.model_id}"))
    return section


def experiments_section(ctx: Context) -> Section:
    """Training and evaluation runs of the models' families, and the test-set guard's count of looks.

    >>> _ = store.evaluate(net, "test")
    >>> section = experiments_section(Context(store, [store.model("cnn@1")], store.select("val"), "head.fc1"))
    >>> section.blocks[0]["text"]
    'Test-set guard: the test split has been looked at 1 time(s) by the lineage of cnn@1.'
    """
    store = ctx.store
    section = Section("experiments", "Experiments", "Every recorded run of these model families, with its "
                      "metrics; test_look numbers the looks at the test split, test_reuse marks a look after "
                      "a change of hyper-parameters.")
    runs = store.experiments
    lineages = {tuple(store.lineage(r)): r for r in reversed(ctx.records)}  # two versions of one family: once
    for lineage, record in reversed(lineages.items()):
        # The guard numbers each look at the test split within a lineage (experiments.test_look).
        looks = runs.filter(pl.col("model_id").is_in(lineage))["test_look"].max()
        reused = runs.filter(pl.col("model_id").is_in(lineage) & pl.col("test_reuse").fill_null(False)).height
        text = f"Test-set guard: the test split has been looked at {looks or 0} time(s) by the lineage of " \
               f"{record.model_id}."
        if reused:
            text += f" {reused} of those looks followed a change of hyper-parameters."
        section.add(note(text, "warn" if reused else "info"))
    family = list(dict.fromkeys(m for r in ctx.records for m in store.lineage(r)))
    shown = runs.filter(pl.col("model_id").is_in(family)).select(*EXPERIMENT_COLUMNS)
    if shown.is_empty():
        return section.add(note("No experiments are recorded for these models (store.evaluate records one)."))
    return section.add(table(shown, "Experiments", max_rows=200, name="experiments"))


def corrections_block(ctx: Context) -> list[dict]:
    """Label corrections made in the store (every decision and undo), as blocks."""
    corrections = ctx.store.label_corrections
    if corrections.is_empty():
        return [note("No label corrections have been made in this store.")]
    classes = ctx.model.classes
    name = {i: c for i, c in enumerate(classes)}
    shown = corrections.select(
        "at", "image_id", "action", "label_set",
        old=pl.col("old_label").replace_strict(name, default=None, return_dtype=pl.String),
        new=pl.col("new_label").replace_strict(name, default=None, return_dtype=pl.String),
        who="who", model_id="model_id", score="score", note="note")
    return [table(shown, f"Label corrections ({corrections.height} decisions)", max_rows=100,
                  name="label-corrections")]


def provenance_section(ctx: Context, started: datetime) -> Section:
    """How the report was made: odinlab's version, the store, the time, the models and the image set.

    >>> section = provenance_section(Context(store, [store.model("cnn@1")], store.select("val"), "head.fc1",
    ...                                      images_label="val"), datetime(2025, 1, 1, tzinfo=UTC))
    >>> dict(section.blocks[0]["rows"])["image set"]
    'val: 269 images'
    """
    from odinlab import __version__

    splits = ctx.selection.frame.group_by("split").len().sort("split")
    per_split = ", ".join(f"{s}: {n}" for s, n in splits.iter_rows())
    rows = [["odinlab version", __version__], ["store", ctx.store.url],
            ["made at", started.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")],
            ["models", ", ".join(r.model_id for r in ctx.records)],
            ["image set", f"{ctx.images_label}: {len(ctx.selection)} images"], ["splits", per_split],
            ["layer (clusters, embedding)", ctx.layer], ["unit layer", ctx.unit_layer or ""],
            ["attribution", ctx.attribution or "off"]]
    section = Section("provenance", "How this report was made")
    return section.add({"kind": "table", "caption": "", "columns": ["", ""], "rows": rows, "more": 0,
                        "name": "provenance"})
