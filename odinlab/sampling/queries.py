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

from dataclasses import dataclass

import dask.array as da
import numpy as np
import polars as pl
import xarray as xr

from odinlab.errors import OptionError, UnknownColumnError, UnknownValueError
from odinlab.sampling.boundary import complete_predictions
from odinlab.sampling.estimators import (
    Design,
    domain_auc,
    domain_means,
    totals,
    z_value,
)
from odinlab.sampling.sample import Sample, sample_selection, uniform_sample  # noqa: F401  (examples)
from odinlab.store.arrays import RowArray
from odinlab.store.labelled import labelled
from odinlab.store.lazy import by_unit_blocks, compute, lazy_layer
from odinlab.store.records import ModelRecord
from odinlab.store.selection import ImageSelection, Selection

# Grouping by more distinct values than this is a continuous column, not a category.
MAX_GROUPS = 100


def sample_activations(store, model, layer: str, sample: Sample, *, module=None, keep: bool = True,
                       pool: int | None = None) -> xr.DataArray:
    """Activations of ``layer`` for the sampled images, in sample order, labelled by image id.

    With ``keep=True`` (and a writable store) a compact copy of these rows is kept in the
    store, so the next call reads only them; a layer never materialized is computed with
    ``module`` (or this session's module of ``model``) for the sampled images only. ``pool``
    picks the variant materialized with ``pool=k``.

    >>> s = uniform_sample(store, "cnn@1", 20, "val", seed=0)
    >>> acts = sample_activations(store, "cnn@1", "head.fc1", s, module=net)
    >>> acts.dims, acts.shape, acts.image_id.values[0] == s.image_ids[0]
    (('image_id', 'unit'), (20, 64), True)
    """
    record = store.model(model)
    values = _sample_values(store, record, layer, sample, module, keep, pool)
    return labelled(values, sample.image_ids.to_list(), name=layer, model_id=record.model_id)


def class_means(store, model, layer: str, images: ImageSelection = None, *, by: str = "label",
                sample: Sample | None = None, level: float = 0.95, module=None, keep: bool = True,
                pool: int | None = None, scheduler=None) -> pl.DataFrame:
    """Mean activation of every unit within each value of ``by`` (a class by default).

    Columns: the grouping column under its own name (``label`` and ``label_name`` for
    ``by="label"``, ``predicted`` and ``predicted_name`` for ``by="predicted"``, ``split`` for
    ``by="split"``...), unit, estimate, se, lower, upper, n (images of that value used).
    ``sample=`` gives an estimate over the set the sample was drawn from; without it the
    answer is exact over ``images``. ``pool`` reads the variant materialized with ``pool=k``.

    Out-of-core (exact answers): when the layer's rows exceed ``odinlab.in-memory-limit``, or
    with ``scheduler=client`` (a Dask client, or ``odinlab.parallel``), per-class sums are a
    tree of per-chunk ``one_hot.T @ values`` (float64) on Dask, so memory holds a few chunks;
    rows not materialized yet are materialized first, on the same client. Same answer.

    >>> exact = class_means(store, "cnn@1", "head.fc1", "val", module=net)
    >>> exact.columns, exact.height, float(exact["se"].max())
    (['label', 'label_name', 'unit', 'estimate', 'se', 'lower', 'upper', 'n'], 640, 0.0)
    """
    record = store.model(model)
    selection, design = _rows(store, sample, images)
    groups = _groups(store, record, selection, by)
    lazy = _lazy_units(store, record, layer, selection, sample, module, pool, scheduler)
    if lazy is None:
        acts = _units(store, record, layer, selection, sample, module, keep, pool)
        estimate, se = domain_means(acts, groups.codes, len(groups), design)
    else:
        estimate, se = _streamed_means(lazy, groups.codes, len(groups), scheduler)
    n = np.bincount(groups.codes[groups.codes >= 0], minlength=len(groups))
    z = z_value(level)
    units = estimate.shape[1]
    return groups.frame(np.repeat(np.arange(len(groups)), units)).hstack(pl.DataFrame({
        "unit": np.tile(np.arange(units), len(groups)), "estimate": estimate.ravel(), "se": se.ravel(),
        "lower": (estimate - z * se).ravel(), "upper": (estimate + z * se).ravel(), "n": np.repeat(n, units)}))


def top_units(store, model, layer: str, images: ImageSelection = None, *, by: str = "label", value=None,
              k: int | None = 10, sample: Sample | None = None, level: float = 0.95, module=None,
              keep: bool = True, pool: int | None = None, scheduler=None) -> pl.DataFrame:
    """The ``k`` units that best separate each value of ``by`` (or one ``value``) from the rest
    (``k=None``: every unit, ranked).

    The score is ``|AUC − 0.5| · 2`` of the unit's activation for that value against all
    others (weighted by ``1/π`` from a sample, with a linearized standard error), as in
    :func:`odinlab.debug.units.unit_scores`. Columns: the grouping column under its own name
    (``label``, ``label_name`` for ``by="label"``), rank, unit, score, se, lower, upper, auc.
    ``pool`` reads the variant materialized with ``pool=k``.

    Out-of-core (exact answers): above ``odinlab.in-memory-limit``, or with ``scheduler=client``,
    the layer is read in blocks of units holding every image (rechunked on Dask), so each AUC is
    exact and memory holds one block (about ``in_memory_limit()``, at least one unit's column).

    >>> top = top_units(store, "cnn@1", "head.fc1", "val", value="3", k=3, module=net)
    >>> top["rank"].to_list(), top["label_name"].unique().to_list()
    ([1, 2, 3], ['3'])
    """
    if k is not None and (isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1):
        raise OptionError(f"k must be a positive int (or None for every unit), not {k!r}.")
    record = store.model(model)
    selection, design = _rows(store, sample, images)
    groups = _groups(store, record, selection, by)
    wanted = range(len(groups)) if value is None else [groups.index(value)]
    lazy = _lazy_units(store, record, layer, selection, sample, module, pool, scheduler)
    if lazy is None:
        acts = _units(store, record, layer, selection, sample, module, keep, pool)
        aucs = [domain_auc(acts, groups.codes == d, design, valid=groups.codes >= 0) for d in wanted]
    else:
        aucs = _streamed_aucs(lazy, groups.codes, list(wanted), scheduler)
    z = z_value(level)
    frames = []
    for d, (auc, se) in zip(wanted, aucs):
        score, score_se = np.abs(auc - 0.5) * 2, 2 * se
        order = np.argsort(-score, kind="stable")[: len(score) if k is None else min(int(k), len(score))]
        frames.append(groups.frame(np.full(len(order), d)).hstack(pl.DataFrame({
            "rank": np.arange(1, len(order) + 1), "unit": order, "score": score[order], "se": score_se[order],
            "lower": score[order] - z * score_se[order], "upper": score[order] + z * score_se[order],
            "auc": auc[order]})))
    return pl.concat(frames)


def class_accuracy(store, model, images: ImageSelection = None, *, sample: Sample | None = None,
                   level: float = 0.95) -> pl.DataFrame:
    """Accuracy of each class (share of its labelled images predicted right), with error bars.

    Columns: label, label_name, accuracy, se, lower, upper, n (labelled images used).

    >>> _ = store.materialize(net, images="val", progress=False)
    >>> class_accuracy(store, "cnn@1", "val").columns
    ['label', 'label_name', 'accuracy', 'se', 'lower', 'upper', 'n']
    """
    record = store.model(model)
    selection, design = _rows(store, sample, images)
    preds = complete_predictions(store, record, selection)
    labels = preds["label"].fill_null(-1).to_numpy().astype(np.int64)
    correct = preds["correct"].fill_null(False).to_numpy().astype(float)
    c = record.num_classes
    estimate, se = domain_means(correct[:, None], labels, c, design)
    z = z_value(level)
    estimate, se = estimate[:, 0], se[:, 0]
    return pl.DataFrame({"label": np.arange(c), "label_name": list(record.classes), "accuracy": estimate,
                         "se": se, "lower": np.clip(estimate - z * se, 0, 1),
                         "upper": np.clip(estimate + z * se, 0, 1),
                         "n": np.bincount(labels[labels >= 0], minlength=c)})


def confusion_counts(store, model, images: ImageSelection = None, *, sample: Sample | None = None,
                     level: float = 0.95) -> pl.DataFrame:
    """Images of each (label, predicted) class pair, estimated for the whole set, with error bars.

    Columns: label, label_name, predicted, predicted_name, count, se, lower, upper.

    >>> _ = store.materialize(net, images="val", progress=False)
    >>> int(confusion_counts(store, "cnn@1", "val")["count"].sum())
    269
    """
    record = store.model(model)
    selection, design = _rows(store, sample, images)
    preds = complete_predictions(store, record, selection)
    labels = preds["label"].fill_null(-1).to_numpy().astype(np.int64)
    predicted = preds["predicted"].to_numpy().astype(np.int64)
    c = record.num_classes
    cell = np.where(labels >= 0, labels * c + predicted, -1)
    indicators = cell[:, None] == np.arange(c * c)[None, :]
    estimate, se = totals(indicators, design)
    z = z_value(level)
    names = np.array(record.classes, dtype=object)
    label, pred = np.repeat(np.arange(c), c), np.tile(np.arange(c), c)
    return pl.DataFrame({"label": label, "label_name": names[label].tolist(), "predicted": pred,
                         "predicted_name": names[pred].tolist(), "count": estimate, "se": se,
                         "lower": np.maximum(estimate - z * se, 0), "upper": estimate + z * se})


# -- internals -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Groups:
    """The values a query groups by (sorted) and each selected image's code (-1: none)."""

    by: str
    values: pl.Series  # class indices for label/predicted, else the column's own values
    codes: np.ndarray
    classes: tuple[str, ...] = ()

    def __len__(self) -> int:
        return self.values.len()

    def frame(self, index: np.ndarray) -> pl.DataFrame:
        """The grouping column(s) of the groups at ``index``: the column, and names for classes."""
        picked = self.values.gather(np.asarray(index, np.int64))
        if not self.classes:
            return pl.DataFrame([picked.alias(self.by)])
        return pl.DataFrame({self.by: picked, f"{self.by}_name": [self.classes[i] for i in picked.to_list()]})

    def index(self, value) -> int:
        """The group of ``value`` (for classes: an index or a class name)."""
        values = self.values.to_list()
        if self.classes:
            if isinstance(value, int | np.integer) and not isinstance(value, bool) and 0 <= value < len(values):
                return int(value)
            if str(value) in self.classes:
                return self.classes.index(str(value))
            choices = self.classes
        else:
            if value in values:
                return values.index(value)
            text = [str(v) for v in values]
            if str(value) in text:
                return text.index(str(value))
            choices = text
        raise UnknownValueError(f"Unknown value {value!r} of {self.by!r}. Values: {', '.join(map(str, choices))}.")


def _rows(store, sample: Sample | None, images: ImageSelection) -> tuple[Selection, Design]:
    """The images a query reads and the design its estimates are weighted by."""
    if sample is None:
        selection = store.select(images)
        return selection, Design.full_scan(len(selection))
    if images is not None:
        raise OptionError("Pass either sample= (an estimate over the set it was drawn from) or images "
                          "(an exact answer over those images), not both.")
    if not isinstance(sample, Sample):
        raise OptionError(f"sample must be a Sample (uniform_sample or boundary_sample), "
                          f"not {type(sample).__name__}.")
    return sample_selection(store, sample), sample.estimation_design()


def _groups(store, record: ModelRecord, selection: Selection, by: str) -> _Groups:
    """Distinct values of ``by`` (class indices for label/predicted) and each image's code."""
    if by in ("label", "predicted"):
        raw = selection["label"] if by == "label" else \
            complete_predictions(store, record, selection)["predicted"]
        codes = raw.fill_null(-1).to_numpy().astype(np.int64)
        return _Groups(by, pl.Series(by, np.arange(record.num_classes)), codes, tuple(record.classes))
    columns = selection.frame.columns
    if by not in columns or by in ("image_id", "label_name"):
        choices = [c for c in columns if c not in ("image_id", "label_name")] + ["predicted"]
        raise UnknownColumnError(f"Unknown column {by!r}. Columns: {', '.join(choices)}.")
    raw = selection[by]
    values = raw.drop_nulls().unique().sort()
    if values.len() > MAX_GROUPS:
        raise OptionError(f"Column {by!r} has {values.len()} distinct values; these queries group by a "
                          "categorical column (a class, a site...). Bin it first, e.g. with pl.cut.")
    lookup = {v: i for i, v in enumerate(values.to_list())}
    codes = np.array([-1 if v is None else lookup.get(v, -1) for v in raw.to_list()], np.int64)
    return _Groups(by, values, codes)


def _lazy_units(store, record: ModelRecord, layer: str, selection: Selection, sample: Sample | None,
                module, pool: int | None, scheduler) -> da.Array | None:
    """(images, units) as a lazy Dask array when an exact answer goes out of core, else None."""
    if sample is not None:  # a sample's rows are few: they are read in memory
        return None
    return lazy_layer(store, record, layer, selection, module=module, pool=pool, scheduler=scheduler, units=True)


def _streamed_means(x: da.Array, codes: np.ndarray, n_groups: int, scheduler) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-group means of ``x`` (what ``domain_means`` gives for a full scan), by chunks."""
    member = da.from_array(codes, chunks=(x.chunks[0],))[:, None] == np.arange(n_groups)[None, :]
    sums, = compute(member.astype(np.float64).T @ x.astype(np.float64), scheduler=scheduler)
    n = np.bincount(codes[codes >= 0], minlength=n_groups).astype(float)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        estimate = np.where(n > 0, sums / n, np.nan)
    return estimate, np.where(n > 0, 0.0, np.nan) + np.zeros_like(estimate)


def _streamed_aucs(x: da.Array, codes: np.ndarray, wanted: list[int], scheduler) -> list[tuple]:
    """Exact (auc, se) of every unit for each group in ``wanted``, over blocks of units."""
    design, valid = Design.full_scan(len(codes)), codes >= 0

    def block(values: np.ndarray) -> np.ndarray:
        return np.concatenate([np.stack(domain_auc(values, codes == d, design, valid=valid)) for d in wanted])

    both = by_unit_blocks(block, x, 2 * len(wanted), scheduler=scheduler)
    return [(both[2 * i], both[2 * i + 1]) for i in range(len(wanted))]


def _units(store, record: ModelRecord, layer: str, selection: Selection, sample: Sample | None,
           module, keep: bool, pool: int | None) -> np.ndarray:
    """(images, units) activations; a conv channel's unit value is its spatial mean."""
    if sample is not None:
        values = _sample_values(store, record, layer, sample, module, keep, pool, selection)
    else:
        values = store.activations(record, layer, selection, module=module, pool=pool).values
    if values.ndim > 2:
        values = values.reshape(len(values), values.shape[1], -1).mean(axis=2)
    return values


def _sample_values(store, record: ModelRecord, layer: str, sample: Sample, module, keep: bool,
                   pool: int | None, selection: Selection | None = None) -> np.ndarray:
    """The sampled rows: from the sample's compact copy when there is one, else read (and kept)."""
    copy = _compact_copy(store, record, layer, sample, pool)
    if copy is not None:
        return copy.read(np.arange(len(sample)))
    selection = sample_selection(store, sample) if selection is None else selection
    values = store.activations(record, layer, selection, module=module, pool=pool).values
    if keep and not store.read_only:
        source = store.layer_array(record, layer, None, pool)
        dtype = source.dtype if source is not None and source.dtype in ("float16", "float32") else "float32"
        copy = store.results.row_array(record, "samples", sample.key, layer, _variant(pool),
                                       shape=tuple(values.shape[1:]), dtype=dtype,
                                       attrs=(("layer", layer), ("sample", sample.key)), capacity=len(sample))
        copy.write(np.arange(len(sample)), values)
    return values


def _variant(pool: int | None) -> str:
    return f"pool{pool}" if pool else "full"


def _compact_copy(store, record: ModelRecord, layer: str, sample: Sample, pool: int | None) -> RowArray | None:
    """The sample's complete compact copy of ``layer``, or None."""
    copy = store.results.find_row_array(record, "samples", sample.key, layer, _variant(pool))
    if copy is None or copy.values.shape[0] != len(sample):
        return None
    return copy if bool(copy.done_rows(np.arange(len(sample))).all()) else None
