"""Debugging queries answered from a sample, each with an error bar, or exactly over all images.

Every query takes ``sample=``: a :class:`~odinlab.sampling.Sample` gives a weighted
(``1/π``) estimate with its standard error and a ``level`` confidence interval; ``None``
computes the exact answer over ``images`` (se 0), so that the two can be compared.
Unit activations are a conv channel's spatial mean, as in :mod:`odinlab.debug.units`.

Reading a scattered sample's rows from a row-chunked Zarr array reads whole chunks, so it
costs about as much as reading every row. :func:`sample_activations` therefore keeps, by
default, a compact sample-ordered copy of the sampled rows in the store (built once per
sample and layer, like the stored samples of approximate query engines); later queries on
that sample read only its rows.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from odinlab.debug.units import UnknownColumnError
from odinlab.errors import UnknownValueError
from odinlab.sampling.boundary import stored_predictions
from odinlab.sampling.estimators import (
    Design,
    domain_auc,
    domain_means,
    totals,
    z_value,
)
from odinlab.sampling.sample import Sample, uniform_sample  # noqa: F401  (used by the examples)
from odinlab.store.arrays import ArraySpec, RowArray
from odinlab.store.fs import check_name
from odinlab.store.images import ImageSelection


def sample_activations(store, model_id: str, layer: str, sample: Sample, *, keep: bool = True,
                       model=None, pool: int | None = None) -> np.ndarray:
    """Activations of ``layer`` for the sampled images, in sample order.

    With ``keep=True`` (and a writable store) a compact copy of these rows is kept in the
    store, so the next call reads only them; a layer never materialized is computed with
    ``model`` (or this session's module) for the sampled images only. ``pool`` picks the
    variant materialized with ``pool=k``.

    >>> s = uniform_sample(store, 20, "val", seed=0)
    >>> sample_activations(store, "cnn@1", "head.fc1", s, model=net).shape
    (20, 64)
    """
    model_id = store.resolve_model(model_id)
    copy = _synopsis(store, model_id, layer, sample, pool)
    if copy is not None:
        return copy.read(np.arange(len(sample)))
    values = store.activations(model_id, layer, sample.image_ids, model=model, pool=pool)
    if keep and not store.read_only:
        source = store._find_layer_array(model_id, layer, None, pool)
        dtype = source.dtype if source is not None and source.dtype in ("float16", "float32") else "float32"
        spec = ArraySpec(_synopsis_path(model_id, layer, sample, pool), tuple(values.shape[1:]), dtype,
                         (("layer", layer), ("sample", sample.key)))
        spec.open(store._arrays(mode="a"), len(sample)).write(np.arange(len(sample)), values)
    return values


def class_means(store, model_id: str, layer: str, *, by: str = "label", sample: Sample | None = None,
                images: ImageSelection = None, level: float = 0.95, model=None, keep: bool = True,
                pool: int | None = None) -> pl.DataFrame:
    """Mean activation of every unit within each value of ``by`` (a class by default).

    Columns: value, unit, estimate, se, lower, upper, n (images of that value used).
    ``pool`` reads the variant materialized with ``pool=k``.

    >>> exact = class_means(store, "cnn@1", "head.fc1", images="val", model=net)
    >>> exact.columns, exact.height, float(exact["se"].max())
    (['value', 'unit', 'estimate', 'se', 'lower', 'upper', 'n'], 640, 0.0)
    """
    ids, design = _rows(store, sample, images)
    values, codes = _categories(store, model_id, ids, by)
    acts = _units(store, model_id, layer, ids, sample, model, keep, pool)
    estimate, se = domain_means(acts, codes, len(values), design)
    n = np.bincount(codes[codes >= 0], minlength=len(values))
    z = z_value(level)
    units = acts.shape[1]
    return pl.DataFrame({
        "value": np.repeat(values, units), "unit": np.tile(np.arange(units), len(values)),
        "estimate": estimate.ravel(), "se": se.ravel(),
        "lower": (estimate - z * se).ravel(), "upper": (estimate + z * se).ravel(),
        "n": np.repeat(n, units),
    })


def top_units(store, model_id: str, layer: str, *, column: str = "label", value=None, k: int = 10,
              sample: Sample | None = None, images: ImageSelection = None, level: float = 0.95,
              model=None, keep: bool = True, pool: int | None = None) -> pl.DataFrame:
    """The ``k`` units that best separate each value of ``column`` (or one ``value``) from the rest.

    The score is ``|AUC − 0.5| · 2`` of the unit's activation for that value against all
    others (weighted by ``1/π`` from a sample, with a linearized standard error), as in
    :func:`odinlab.debug.units.unit_scores`. Columns: value, rank, unit, score, se, lower,
    upper, auc. ``pool`` reads the variant materialized with ``pool=k``.

    >>> top = top_units(store, "cnn@1", "head.fc1", value="3", k=3, images="val", model=net)
    >>> top["rank"].to_list(), top["value"].unique().to_list()
    ([1, 2, 3], ['3'])
    """
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, not {k!r}.")
    ids, design = _rows(store, sample, images)
    values, codes = _categories(store, model_id, ids, column)
    wanted = range(len(values)) if value is None else [_value_index(values, value, column)]
    acts = _units(store, model_id, layer, ids, sample, model, keep, pool)
    z = z_value(level)
    frames = []
    for d in wanted:
        auc, se = domain_auc(acts, codes == d, design, valid=codes >= 0)
        score, score_se = np.abs(auc - 0.5) * 2, 2 * se
        order = np.argsort(-score, kind="stable")[: min(k, len(score))]
        frames.append(pl.DataFrame({
            "value": [values[d]] * len(order), "rank": np.arange(1, len(order) + 1), "unit": order,
            "score": score[order], "se": score_se[order], "lower": score[order] - z * score_se[order],
            "upper": score[order] + z * score_se[order], "auc": auc[order],
        }))
    return pl.concat(frames)


def class_accuracy(store, model_id: str, *, sample: Sample | None = None, images: ImageSelection = None,
                   level: float = 0.95) -> pl.DataFrame:
    """Accuracy of each class (share of its labelled images predicted right), with error bars.

    >>> _ = store.materialize(net, images="val", progress=False)
    >>> class_accuracy(store, "cnn@1", images="val").columns
    ['class', 'name', 'accuracy', 'se', 'lower', 'upper', 'n']
    """
    ids, design = _rows(store, sample, images)
    preds = stored_predictions(store, model_id, ids)
    labels = preds["label"].fill_null(-1).to_numpy().astype(np.int64)
    correct = preds["correct"].fill_null(False).to_numpy().astype(float)
    n_classes = len(store.classes)
    estimate, se = domain_means(correct[:, None], labels, n_classes, design)
    z = z_value(level)
    estimate, se = estimate[:, 0], se[:, 0]
    return pl.DataFrame({"class": np.arange(n_classes), "name": store.classes, "accuracy": estimate, "se": se,
                         "lower": np.clip(estimate - z * se, 0, 1), "upper": np.clip(estimate + z * se, 0, 1),
                         "n": np.bincount(labels[labels >= 0], minlength=n_classes)})


def confusion_counts(store, model_id: str, *, sample: Sample | None = None, images: ImageSelection = None,
                     level: float = 0.95) -> pl.DataFrame:
    """Images of each (true, predicted) class pair, estimated for the whole set, with error bars.

    >>> _ = store.materialize(net, images="val", progress=False)
    >>> int(confusion_counts(store, "cnn@1", images="val")["count"].sum())
    269
    """
    ids, design = _rows(store, sample, images)
    preds = stored_predictions(store, model_id, ids)
    labels = preds["label"].fill_null(-1).to_numpy().astype(np.int64)
    predicted = preds["predicted"].to_numpy().astype(np.int64)
    c = len(store.classes)
    cell = np.where(labels >= 0, labels * c + predicted, -1)
    indicators = cell[:, None] == np.arange(c * c)[None, :]
    estimate, se = totals(indicators, design)
    z = z_value(level)
    return pl.DataFrame({"true": np.repeat(np.arange(c), c), "predicted": np.tile(np.arange(c), c),
                         "count": estimate, "se": se, "lower": np.maximum(estimate - z * se, 0),
                         "upper": estimate + z * se})


# -- internals -------------------------------------------------------------------------------


def _rows(store, sample: Sample | None, images: ImageSelection) -> tuple[pl.Series, Design]:
    if sample is not None:
        if images is not None:
            raise ValueError("Pass either sample= (an estimate over the set it was drawn from) or images= "
                             "(an exact answer over those images), not both.")
        if not isinstance(sample, Sample):
            raise TypeError(f"sample must be a Sample (uniform_sample or boundary_sample), not {type(sample).__name__}.")
        return sample.image_ids, sample.estimation_design()
    ids = store.select(images)["image_id"]
    return ids, Design.full_scan(ids.len())


def _units(store, model_id, layer, ids, sample, model, keep, pool=None) -> np.ndarray:
    if sample is not None:
        values = sample_activations(store, model_id, layer, sample, keep=keep, model=model, pool=pool)
    else:
        values = store.activations(model_id, layer, ids, model=model, pool=pool)
    if values.ndim > 2:
        values = values.reshape(len(values), values.shape[1], -1).mean(axis=2)
    return values


def _categories(store, model_id: str, ids: pl.Series, column: str) -> tuple[list[str], np.ndarray]:
    """Sorted distinct values of ``column`` (class names for label/predicted) and each row's code (-1: null)."""
    classes = store.classes
    if column == "predicted":
        raw = stored_predictions(store, model_id, ids)["predicted"]
    else:
        rows = store.select(ids)
        if column not in rows.columns or column == "image_id":
            choices = [c for c in rows.columns if c not in ("image_id", "label_name")] + ["predicted"]
            raise UnknownColumnError(f"Unknown column {column!r}. Columns: {', '.join(choices)}.")
        raw = rows[column]
    if column in ("label", "predicted"):
        codes = raw.fill_null(-1).to_numpy().astype(np.int64)
        return list(classes), codes
    text = raw.cast(pl.String)
    values = sorted(v for v in text.unique().to_list() if v is not None)
    if len(values) > 100:
        raise UnknownColumnError(f"Column {column!r} has {len(values)} distinct values; these queries group by "
                                 "a categorical column (a class, a site...). Bin it first, e.g. with pl.cut.")
    lookup = {v: i for i, v in enumerate(values)}
    return values, np.array([lookup.get(v, -1) if v is not None else -1 for v in text.to_list()], np.int64)


def _value_index(values: list[str], value, column: str) -> int:
    if isinstance(value, int | np.integer) and not isinstance(value, bool) and column in ("label", "predicted"):
        if 0 <= value < len(values):
            return int(value)
    elif str(value) in values:
        return values.index(str(value))
    raise UnknownValueError(f"Unknown value {value!r} of {column!r}. Values: {', '.join(values)}.")


def _synopsis_path(model_id: str, layer: str, sample: Sample, pool: int | None = None) -> str:
    name, version = model_id.rsplit("@", 1)
    variant = f"pool{pool}" if pool else "full"
    return f"models/{check_name(name)}/v{int(version)}/samples/{sample.key}/{check_name(layer, 'layer name')}/{variant}"


def _synopsis(store, model_id: str, layer: str, sample: Sample, pool: int | None = None) -> RowArray | None:
    path = _synopsis_path(model_id, layer, sample, pool)
    group = store._arrays()
    if path not in group:
        return None
    copy = RowArray(group[path])
    return copy if copy.values.shape[0] == len(sample) and bool(np.asarray(copy.done[:]).all()) else None

