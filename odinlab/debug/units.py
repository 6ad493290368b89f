"""What is the model learning? Units that fire for images, labels and metadata, and linear probes.

Reads materialized activations (computed on demand when this session has the module). A
convolutional channel's activation for an image is its spatial mean. Every score is computed
for all units at once with matrix operations; results are cached in the store.

:func:`unit_scores` is out-of-core: above ``odinlab.in-memory-limit`` (Dask config, see
:mod:`odinlab.store.lazy`), or given a Dask client, it reads the layer through
``dask.array.from_zarr`` in blocks of units holding every image, so each score is exact.

A unit that gives the same value for every selected image (a "dead" ReLU channel: 0.0
everywhere) has no top images: :func:`top_images` flags it and logs a warning instead of
presenting an arbitrary order of tied images.
"""

from __future__ import annotations

import logging

import numpy as np
import polars as pl
import xarray as xr
from scipy.stats import rankdata

from odinlab.errors import (
    LabelError,
    OptionError,
    UnknownColumnError,
    UnknownImageError,
    UnknownUnitError,
)
from odinlab.store.labelled import labelled
from odinlab.store.layout import digest
from odinlab.store.lazy import by_unit_blocks, lazy_layer
from odinlab.store.selection import ImageSelection, Selection

log = logging.getLogger(__name__)

VERSION = 2  # of the cached results' format; part of their keys


def unit_activations(store, model, layer: str, images: ImageSelection = None) -> xr.DataArray:
    """(image_id, unit) activations of ``layer``: conv channels averaged over space.

    >>> acts = unit_activations(store, "cnn@1", "features.relu2", "val")
    >>> acts.shape, acts.dims
    ((269, 32), ('image_id', 'unit'))
    """
    record, selection = store.model(model), store.select(images)
    values = _unit_values(store, record, layer, selection)
    return labelled(values, selection.ids, dims=("unit",), name=layer, model_id=record.model_id)


def top_images(store, model, layer: str, images: ImageSelection = None, *, unit: int | None = None, k: int = 9,
               lowest: bool = False) -> pl.DataFrame:
    """The ``k`` images that activate each unit (or one ``unit``) most (least with ``lowest=True``).

    Columns: unit, rank, image_id, label, label_name, activation, dead. Images at the unit's
    least value over the selection (for a ReLU: those it is silent on) are never ranked, so a
    sparse unit may list fewer than ``k``. A unit with one value on every image is ``dead``:
    one row with no image and a logged warning, never a ranking of ties.

    >>> top = top_images(store, "cnn@1", "head.fc1", "val", unit=3, k=2)
    >>> top["rank"].to_list(), top["dead"].to_list()
    ([1, 2], [False, False])
    """
    record, selection = store.model(model), store.select(images)
    values = _unit_values(store, record, layer, selection)
    units = _check_units(values.shape[1], unit, layer)
    return rank_images(values[:, units], selection, k=k, lowest=lowest, units=units,
                       what=f"{layer} of {record.model_id}")


def rank_images(values: np.ndarray, selection: Selection, *, k: int = 9, lowest: bool = False,
                units: np.ndarray | None = None, what: str = "") -> pl.DataFrame:
    """Rank the images of ``selection`` by each column of ``values`` (N, U): the one ranking
    behind :func:`top_images` and ``Maximizer.top_images`` (same columns and rules).

    >>> sel = store.select(["digits-0000", "digits-0001", "digits-0002"])
    >>> rank_images(np.array([[0.0, 1.0], [2.0, 1.0], [0.0, 1.0]]), sel, k=2).select("unit", "rank", "dead").rows()
    [(0, 1, False), (1, None, True)]
    """
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise OptionError(f"k must be a positive int, not {k!r}.")
    values = np.asarray(values, np.float64).reshape(len(selection), -1)
    units = np.arange(values.shape[1]) if units is None else np.asarray(units)
    frame = selection.frame
    parts, dead_units = [], []
    for column, unit in enumerate(units.tolist()):
        v = values[:, column]
        if len(v) == 0 or v.max() == v.min():
            dead_units.append(unit)
            parts.append(_rows(frame.head(0), unit, [None], [float(v[0]) if len(v) else None], dead=True))
            continue
        floor = v.max() if lowest else v.min()
        order = np.argsort(v if lowest else -v, kind="stable")
        order = order[v[order] != floor][: int(k)]  # a tie at the floor is no ranking
        parts.append(_rows(frame[order.tolist()], unit, list(range(1, len(order) + 1)), v[order].tolist()))
    if dead_units:
        log.warning("%s: unit%s %s %s the same activation on all %d images (dead here); no top images.",
                    what or "these units", "s" if len(dead_units) > 1 else "", ", ".join(map(str, dead_units[:20])),
                    "have" if len(dead_units) > 1 else "has", len(selection))
    return pl.concat(parts, how="vertical_relaxed")


def _rows(frame: pl.DataFrame, unit: int, ranks: list, activations: list, dead: bool = False) -> pl.DataFrame:
    n = len(ranks)
    ids = frame.select("image_id", "label", "label_name") if frame.height else pl.DataFrame(
        {"image_id": [None] * n, "label": [None] * n, "label_name": [None] * n},
        schema={"image_id": pl.String, "label": pl.Int64, "label_name": pl.String})
    return pl.DataFrame({"unit": [unit] * n, "rank": ranks}, schema={"unit": pl.Int64, "rank": pl.Int64}).hstack(
        ids).with_columns(activation=pl.Series(activations, dtype=pl.Float64), dead=pl.lit(dead))


def unit_scores(store, model, layer: str, images: ImageSelection = None, *, by: str = "label",
                scheduler=None) -> pl.DataFrame:
    """How well each unit separates the values of ``by`` (a label or metadata column), best first.

    For a categorical column (``label``, strings, booleans): one-vs-rest ROC AUC of every
    unit for every value, computed by :func:`odinlab.sampling.estimators.domain_auc` over all
    the images (``score`` = |AUC − 0.5| · 2, ``auc`` kept); columns unit, ``<by>`` (plus
    ``label_name`` for labels), auc, score. For a numeric column: Spearman correlation;
    columns unit, rho, score. Cached in the store.

    Out-of-core: above ``odinlab.in-memory-limit``, or with ``scheduler=client`` (a Dask client,
    or ``odinlab.parallel``), the layer is read on Dask in blocks of units holding every image
    (each AUC or correlation exact, memory about one block); missing rows are materialized first.

    >>> unit_scores(store, "cnn@1", "head.fc1", "val").columns
    ['unit', 'label', 'label_name', 'auc', 'score']
    """
    record, selection = store.model(model), _select(store, images)
    target = _column(selection, by)
    params = {"v": VERSION, "layer": layer, "by": by, "images": digest({"ids": selection.ids})}

    def compute() -> pl.DataFrame:
        numeric = _numeric(target, by)
        lazy = lazy_layer(store, record, layer, selection, scheduler=scheduler, units=True)
        if lazy is None:
            values = _unit_values(store, record, layer, selection)
            return _spearman(values, target.to_numpy().astype(float)) if numeric \
                else _auc(values, target, by, record.classes)
        if numeric:
            y = target.to_numpy().astype(float)
            return _rho_frame(by_unit_blocks(lambda v: _rho(v, y)[None], lazy, 1, scheduler=scheduler)[0])
        valid, values = _separated(target)
        positives = [(target == value).fill_null(False).to_numpy() for value in values]
        aucs = by_unit_blocks(lambda v: np.stack([_one_auc(v, p, valid) for p in positives]), lazy,
                              len(values), scheduler=scheduler)
        return _auc_frame(aucs, values, target, by, record.classes)

    return store.results.table(record, "unit_scores", params, compute)


def linear_probe(store, model, layers: list[str], images: ImageSelection = None, *, by: str = "label",
                 cv: int = 5, seed: int = 0) -> pl.DataFrame:
    """Which layer's features best predict ``by`` (a label or metadata column)? (Vista's question.)

    Per layer: a standardized logistic regression (categorical column, score = accuracy) or
    ridge regression (numeric, score = R²), cross-validated with ``cv`` folds; features are
    the layer's unit activations. Best layer first; cached in the store.

    >>> linear_probe(store, "cnn@1", ["features.relu1", "head.fc1"], "val", cv=3)["layer"][0]
    'head.fc1'
    """
    from sklearn.linear_model import LogisticRegression, RidgeCV
    from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    record, selection = store.model(model), _select(store, images)
    layers = store.check_layers(record, layers)
    target = _column(selection, by)
    selection = selection[target.is_not_null().to_numpy()]
    y, numeric = selection[by].to_numpy(), _numeric(target, by)
    params = {"v": VERSION, "layers": layers, "by": by, "cv": cv, "seed": seed,
              "images": digest({"ids": selection.ids})}

    def compute() -> pl.DataFrame:
        results = []
        for layer in layers:
            x = _unit_values(store, record, layer, selection)
            if numeric:
                estimator, scoring = RidgeCV(alphas=np.logspace(-3, 3, 7)), "r2"
                folds = KFold(cv, shuffle=True, random_state=seed)
            else:
                estimator, scoring = LogisticRegression(max_iter=500), "accuracy"
                folds = StratifiedKFold(cv, shuffle=True, random_state=seed)
            scores = cross_val_score(make_pipeline(StandardScaler(), estimator), x, y, cv=folds, scoring=scoring)
            results.append({"layer": layer, "units": x.shape[1], "metric": scoring,
                            "score": float(scores.mean()), "std": float(scores.std())})
        return pl.DataFrame(results).sort("score", descending=True)

    return store.results.table(record, "linear_probe", params, compute)


def _select(store, images: ImageSelection) -> Selection:
    """``store.select(images)``, and for a column name given where the images go, the fix."""
    try:
        return store.select(images)
    except UnknownImageError:
        if isinstance(images, str) and images in store.images.columns:
            raise OptionError(f"{images!r} is a column, not an image selection: group by it with by={images!r} "
                              f"(the images come right after the layer).") from None
        raise


def _unit_values(store, record, layer: str, selection: Selection) -> np.ndarray:
    """(N, units) float32 activations, conv maps averaged over space (read once per call)."""
    values = store.activations(record, layer, selection, store=not store.read_only).values
    values = np.asarray(values, np.float32)
    return values.reshape(len(values), values.shape[1], -1).mean(axis=2) if values.ndim > 2 else values


def _auc(values: np.ndarray, target: pl.Series, by: str, classes: tuple[str, ...]) -> pl.DataFrame:
    valid, kept = _separated(target)
    aucs = [_one_auc(values, (target == value).fill_null(False).to_numpy(), valid) for value in kept]
    return _auc_frame(np.array(aucs).reshape(len(kept), values.shape[1]), kept, target, by, classes)


def _separated(target: pl.Series) -> tuple[np.ndarray, list]:
    """Rows with a value, and the values that have both images with and images without them."""
    valid = target.is_not_null().to_numpy()
    kept = []
    for value in sorted(target.drop_nulls().unique().to_list(), key=str):
        positive = (target == value).fill_null(False).to_numpy()
        if positive.sum() > 0 and (valid & ~positive).sum() > 0:
            kept.append(value)
    return valid, kept


def _one_auc(values: np.ndarray, positive: np.ndarray, valid: np.ndarray) -> np.ndarray:
    # Imported here: odinlab.sampling imports this module, so a top-level import would be circular.
    from odinlab.sampling.estimators import Design, domain_auc

    return domain_auc(values, positive, Design.full_scan(len(values)), valid=valid)[0]


def _auc_frame(aucs: np.ndarray, kept: list, target: pl.Series, by: str, classes: tuple[str, ...]) -> pl.DataFrame:
    """unit, the value, (label_name), auc, score for each value kept (rows of ``aucs``), best first."""
    frames = []
    for value, auc in zip(kept, aucs):
        frame = pl.DataFrame({"unit": np.arange(len(auc))}).with_columns(pl.lit(value, dtype=target.dtype).alias(by))
        if by == "label":
            frame = frame.with_columns(label_name=pl.lit(classes[value] if 0 <= value < len(classes) else None,
                                                         dtype=pl.String))
        frames.append(frame.with_columns(auc=pl.Series(auc, dtype=pl.Float64),
                                         score=pl.Series(np.abs(auc - 0.5) * 2, dtype=pl.Float64)))
    if not frames:
        raise LabelError(f"{by!r} has a single value over these images; nothing to separate.")
    return pl.concat(frames).sort("score", descending=True, maintain_order=True)


def _spearman(values: np.ndarray, target: np.ndarray) -> pl.DataFrame:
    return _rho_frame(_rho(values, target))


def _rho(values: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Spearman correlation of every column of ``values`` with ``target`` (NaN targets left out)."""
    keep = ~np.isnan(target)
    ranks = rankdata(values[keep], axis=0)  # average ranks handle ties
    x = ranks - ranks.mean(axis=0)
    y = rankdata(target[keep]) - rankdata(target[keep]).mean()
    denominator = np.sqrt((x**2).sum(axis=0) * (y**2).sum())
    return np.divide(x.T @ y, denominator, out=np.zeros(x.shape[1]), where=denominator > 0)


def _rho_frame(rho: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame({"unit": np.arange(len(rho)), "rho": rho, "score": np.abs(rho)}).sort(
        "score", descending=True, maintain_order=True)


def _numeric(target: pl.Series, by: str) -> bool:
    """A numeric column with more than two values is correlated, anything else is grouped."""
    return target.dtype.is_numeric() and by != "label" and target.n_unique() > 2


def _column(selection: Selection, by: str) -> pl.Series:
    columns = selection.frame.columns
    if by not in columns:
        choices = [c for c in columns if c not in ("image_id", "label_name")]
        raise UnknownColumnError(f"Unknown column {by!r}. Columns: {', '.join(choices)}.")
    return selection[by]


def _check_units(n_units: int, unit: int | None, layer: str) -> np.ndarray:
    if unit is None:
        return np.arange(n_units)
    if isinstance(unit, bool) or not isinstance(unit, int | np.integer) or not 0 <= unit < n_units:
        raise UnknownUnitError(f"Unit {unit!r} is out of range for {layer}: it has units 0..{n_units - 1}.")
    return np.array([int(unit)])


__all__ = ["UnknownColumnError", "UnknownUnitError", "linear_probe", "rank_images", "top_images", "unit_activations",
           "unit_scores"]
