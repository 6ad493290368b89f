"""Selections of the ``%%odin`` language: images, models and experiments that meet conditions.

Each condition is answered by the store's public API (``store.images``, ``store.predictions``,
``confusion_matrix``, ``compare.disagreements``, ``boundary_scores``, ``store.ancestors``...).

>>> from odinlab.lang.run import Runner
>>> len(Runner(store).run("images where split = test and label = 3")[-1])
28
"""

from __future__ import annotations

import fnmatch
import operator
from datetime import UTC, datetime

import polars as pl

from odinlab.debug import compare
from odinlab.debug.error_analysis import confusion_matrix
from odinlab.errors import closest, listing
from odinlab.lang import ast
from odinlab.sampling import boundary_scores

OPS = {"=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt,
       ">=": operator.ge}
MODEL_ALIASES = {"params": "num_params", "parameters": "num_params", "layers": "num_layers", "model": "model_id"}
NEAR_BOUNDARY = 50  # images kept by "near boundary of M" without "top N"


def select_images(run, node: ast.Images):
    """The store's images that meet every condition of ``node``, as a Selection (store order)."""
    store = run.store
    frame = store.images
    for condition in node.conditions:
        frame = _filter_images(run, frame, condition)
    if node.limit is not None:
        frame = frame.head(node.limit)
    return store.select(frame["image_id"])


def _filter_images(run, frame: pl.DataFrame, c) -> pl.DataFrame:
    if isinstance(c, ast.Compare | ast.Within):
        return frame.filter(_column_test(run, frame, c, "images table"))
    ids = run.store.select(frame["image_id"])
    if isinstance(c, ast.PredCompare):
        preds = run.predictions(c.model, ids)
        column = "predicted" if c.field == "prediction" else c.field
        value = run.class_index(c.value) if c.field == "prediction" else run.number(c.value)
        keep = preds.filter(OPS[c.op](pl.col(column), value))
    elif isinstance(c, ast.Misclassified):
        keep = run.predictions(c.model, ids).filter(pl.col("correct") == c.correct)
    elif isinstance(c, ast.Disagree):
        keep = run.call(c, compare.disagreements, run.store, run.model(c.model_a), run.model(c.model_b), ids)
    elif isinstance(c, ast.Mistakes):
        label, predicted = run.class_index(c.label), run.class_index(c.predicted)
        cells = run.call(c, confusion_matrix, run.store, run.model(c.model), ids)
        cell = cells.filter((pl.col("label") == label) & (pl.col("predicted") == predicted))
        keep = pl.DataFrame({"image_id": cell["image_ids"].explode().drop_nulls()}, schema={"image_id": pl.String})
    elif isinstance(c, ast.NearBoundary):
        scores = run.call(c, boundary_scores, run.store, run.model(c.model), ids)
        keep = scores.sort("score", descending=True).head(c.top or NEAR_BOUNDARY)
    else:
        raise run.fail(c, "This condition is for models or experiments, not images.")
    return frame.filter(pl.col("image_id").is_in(keep["image_id"].implode()))


def _column_test(run, frame: pl.DataFrame, c, table: str) -> pl.Expr:
    name = MODEL_ALIASES.get(c.field.text, c.field.text) if table == "models table" else c.field.text
    if name not in frame.columns:
        raise run.fail(c.field, f"Unknown column {c.field.text!r} of the {table}.{closest(name, frame.columns)}"
                                f" Columns: {listing(frame.columns)}.")
    values = [c.value] if isinstance(c, ast.Compare) else list(c.values)
    values = [_coerce(run, frame.schema[name], name, v) for v in values]
    if frame.schema[name] == pl.String and (isinstance(c, ast.Within) or c.op in ("=", "!=")):
        _check_known(run, frame[name], c, values)
    if isinstance(c, ast.Within):
        return pl.col(name).is_in(values)
    return OPS[c.op](pl.col(name), values[0]).fill_null(False)


def _check_known(run, column: pl.Series, c, values) -> None:
    """A value a short list of values does not hold (a split, a label name) is a typo: say which exist."""
    known = column.drop_nulls().unique().sort().to_list()
    if len(known) > 50:
        return
    nodes = [c.value] if isinstance(c, ast.Compare) else list(c.values)
    for node, value in zip(nodes, values, strict=True):
        if value not in known:
            raise run.fail(node, f"No {column.name} is {value!r}.{closest(value, known)}"
                                 f" Values of {column.name}: {listing(known)}.")


def _coerce(run, dtype, name: str, value: ast.Value):
    if name in ("label", "predicted"):
        return run.class_index(value)
    if name == "model_id":
        return run.model(ast.ModelRef(value.line, value.column, value.end, str(value.value)))
    if dtype.is_numeric():
        return run.number(value)
    if dtype == pl.Boolean:
        return str(value.value).lower() in ("true", "1", "yes")
    return str(value.value)


# -- models and experiments ---------------------------------------------------------------------

def select_models(run, node: ast.Models) -> pl.DataFrame:
    """The models table (with each version's latest metrics) filtered by ``node``'s conditions."""
    frame = _with_metrics(run.store)
    for c in node.conditions:
        frame = _filter_models(run, frame, c)
    return frame.head(node.limit) if node.limit is not None else frame


def _with_metrics(store) -> pl.DataFrame:
    """Models, and for each the latest non-null value of every numeric experiment metric."""
    experiments = store.experiments
    metrics = [name for name, dtype in experiments.schema.items()
               if dtype.is_float() and name not in store.models.columns]
    if experiments.is_empty() or not metrics:
        return store.models
    latest = experiments.sort("created_at").group_by("model_id").agg(
        [pl.col(m).drop_nulls().last() for m in metrics])
    return store.models.join(latest, on="model_id", how="left")


def _filter_models(run, frame: pl.DataFrame, c) -> pl.DataFrame:
    store = run.store
    if isinstance(c, ast.Compare | ast.Within):
        return frame.filter(_column_test(run, frame, c, "models table"))
    if isinstance(c, ast.Like):
        name = MODEL_ALIASES.get(c.field.text, c.field.text)
        if name not in frame.columns:
            raise run.fail(c.field, f"Unknown column {c.field.text!r} of the models table."
                                    f"{closest(name, frame.columns)} Columns: {listing(frame.columns)}.")
        keep = [fnmatch.fnmatchcase(str(v), c.pattern) for v in frame[name]]
        return frame.filter(pl.Series(keep, dtype=pl.Boolean))
    if isinstance(c, ast.Created):
        when = _datetime(run, c.value)
        return frame.filter(pl.col("created_at") > when if c.after else pl.col("created_at") < when)
    if isinstance(c, ast.Lineage):
        model = run.model(c.model)
        family = store.ancestors(model) if c.ancestors else store.descendants(model)
        return frame.filter(pl.col("model_id").is_in(family["model_id"].implode()))
    if isinstance(c, ast.HasLayer):
        return frame.filter(pl.col("model_id").is_in(_with_layer_type(run, c.layer_type)))
    if isinstance(c, ast.ParamCount):
        return frame.filter(pl.col("num_params") > c.count if c.more else pl.col("num_params") < c.count)
    raise run.fail(c, "This condition is for images, not models.")


def _with_layer_type(run, layer_type: ast.Ident) -> list[str]:
    types = {mid: {t.lower(): t for t in run.store.architecture(mid)["type"]} for mid in run.store.models["model_id"]}
    known = sorted({t for names in types.values() for t in names.values()})
    if layer_type.text.lower() not in {t.lower() for t in known}:
        raise run.fail(layer_type, f"No model has a layer of type {layer_type.text!r}."
                                   f"{closest(layer_type.text, known)} Layer types: {listing(known)}.")
    return [mid for mid, names in types.items() if layer_type.text.lower() in names]


def _datetime(run, value: ast.Value) -> datetime:
    try:
        when = datetime.fromisoformat(str(value.value))
    except ValueError:
        raise run.fail(value, f"{value.value!r} is not a date: write it as 'YYYY-MM-DD' or "
                              f"'YYYY-MM-DD HH:MM'.") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def select_experiments(run, node: ast.Experiments) -> pl.DataFrame:
    """The experiments table filtered by ``node``'s column conditions."""
    frame = run.store.experiments
    for c in node.conditions:
        if not isinstance(c, ast.Compare | ast.Within):
            raise run.fail(c, "Experiments are selected by their columns (column = value, column in (...)).")
        frame = frame.filter(_column_test(run, frame, c, "experiments table"))
    return frame.head(node.limit) if node.limit is not None else frame
