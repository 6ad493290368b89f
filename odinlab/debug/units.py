"""What is the model learning? Units that fire for images, labels and metadata, and linear probes.

Reads materialized activations (computed on demand when this session has the module). A
convolutional channel's activation for an image is its spatial mean. Every score is computed
for all units at once with matrix operations; results are cached in the store.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from scipy.stats import rankdata

from odinlab.store.layout import digest
from odinlab.errors import LabelError, UnknownColumnError, UnknownUnitError
from odinlab.store.images import ImageSelection


def unit_activations(store, model_id: str, layer: str, images: ImageSelection = None) -> np.ndarray:
    """(images, units) activations of ``layer``: conv channels averaged over space.

    >>> unit_activations(store, "cnn@1", "features.relu2", "val").shape
    (269, 32)
    """
    values = store.activations(model_id, layer, images)
    return values.reshape(len(values), values.shape[1], -1).mean(axis=2) if values.ndim > 2 else values


def top_images(store, model_id: str, layer: str, unit: int | None = None, k: int = 9,
               images: ImageSelection = None) -> pl.DataFrame:
    """The ``k`` images that activate each unit (or one ``unit``) most: unit, rank, image_id, activation.

    >>> top_images(store, "cnn@1", "head.fc1", unit=3, k=2, images="val")["rank"].to_list()
    [1, 2]
    """
    ids = store.select(images)["image_id"]
    acts = unit_activations(store, model_id, layer, ids)
    units = _check_units(acts.shape[1], unit, layer)
    k = min(k, len(ids))
    order = np.argsort(-acts[:, units], axis=0, kind="stable")[:k]  # (k, units)
    return pl.DataFrame({
        "unit": np.repeat(units, k), "rank": np.tile(np.arange(1, k + 1), len(units)),
        "image_id": ids.to_numpy()[order.T.ravel()],
        "activation": acts[order, units[None, :]].T.ravel(),
    })


def unit_scores(store, model_id: str, layer: str, column: str = "label",
                images: ImageSelection = None) -> pl.DataFrame:
    """How well each unit separates a label or metadata column, best first.

    For a categorical column (``label``, strings, booleans): one-vs-rest ROC AUC of every
    unit for every value (``score`` = |AUC − 0.5| · 2, ``auc`` kept). For a numeric column:
    Spearman correlation (``score`` = |rho|). Cached in the store.

    >>> unit_scores(store, "cnn@1", "head.fc1", "label", "val").columns
    ['unit', 'value', 'auc', 'score']
    """
    rows = store.select(images)
    target = _column(rows, column)
    params = {"layer": layer, "column": column, "images": digest({"ids": rows["image_id"].to_list()})}

    def compute() -> pl.DataFrame:
        acts = unit_activations(store, model_id, layer, rows["image_id"])
        ranks = rankdata(acts, axis=0)  # (images, units): average ranks handle ties
        if target.dtype.is_numeric() and column != "label" and target.n_unique() > 2:
            return _spearman(ranks, target.to_numpy().astype(float))
        return _auc(ranks, target)

    return store.results.table(model_id, "unit_scores", params, compute)


def linear_probe(store, model_id: str, layers: list[str], column: str = "label",
                 images: ImageSelection = None, cv: int = 5, seed: int = 0) -> pl.DataFrame:
    """Which layer's features best predict a label or metadata column? (Vista's question.)

    Per layer: a standardized logistic regression (categorical column, score = accuracy) or
    ridge regression (numeric, score = R²), cross-validated with ``cv`` folds; features are
    the layer's unit activations. Best layer first; cached in the store.

    >>> linear_probe(store, "cnn@1", ["features.relu1", "head.fc1"], images="val", cv=3)["layer"][0]
    'head.fc1'
    """
    from sklearn.linear_model import LogisticRegression, RidgeCV
    from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rows = store.select(images)
    target = _column(rows, column)
    keep = target.is_not_null().to_numpy()
    ids, y = rows["image_id"].filter(pl.Series(keep)), target.drop_nulls().to_numpy()
    numeric = target.dtype.is_numeric() and column != "label" and target.n_unique() > 2
    params = {"layers": layers, "column": column, "cv": cv, "seed": seed,
              "images": digest({"ids": ids.to_list()})}

    def compute() -> pl.DataFrame:
        results = []
        for layer in layers:
            x = unit_activations(store, model_id, layer, ids)
            if numeric:
                model, folds, scoring = RidgeCV(alphas=np.logspace(-3, 3, 7)), KFold(cv, shuffle=True, random_state=seed), "r2"
            else:
                model = LogisticRegression(max_iter=500)
                folds, scoring = StratifiedKFold(cv, shuffle=True, random_state=seed), "accuracy"
            scores = cross_val_score(make_pipeline(StandardScaler(), model), x, y, cv=folds, scoring=scoring)
            results.append({"layer": layer, "units": x.shape[1], "metric": scoring,
                            "score": float(scores.mean()), "std": float(scores.std())})
        return pl.DataFrame(results).sort("score", descending=True)

    return store.results.table(model_id, "linear_probe", params, compute)


def _auc(ranks: np.ndarray, target: pl.Series) -> pl.DataFrame:
    values = target.to_numpy()
    frames = []
    for value in sorted(set(v for v in values.tolist() if v is not None), key=str):
        positive = values == value
        n_pos, n_neg = int(positive.sum()), int((~positive).sum())
        if n_pos == 0 or n_neg == 0:
            continue
        # Mann-Whitney: AUC = (sum of positive ranks - n_pos(n_pos+1)/2) / (n_pos n_neg), all units at once.
        auc = (ranks[positive].sum(axis=0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
        frames.append(pl.DataFrame({"unit": np.arange(len(auc)), "value": str(value), "auc": auc,
                                    "score": np.abs(auc - 0.5) * 2}))
    if not frames:
        raise LabelError("The column has a single value over these images; nothing to separate.")
    return pl.concat(frames).sort("score", descending=True)


def _spearman(ranks: np.ndarray, target: np.ndarray) -> pl.DataFrame:
    keep = ~np.isnan(target)
    x = ranks[keep] - ranks[keep].mean(axis=0)
    y = rankdata(target[keep]) - rankdata(target[keep]).mean()
    denominator = np.sqrt((x**2).sum(axis=0) * (y**2).sum())
    rho = np.divide(x.T @ y, denominator, out=np.zeros(x.shape[1]), where=denominator > 0)
    return pl.DataFrame({"unit": np.arange(len(rho)), "value": None, "rho": rho, "score": np.abs(rho)},
                        schema_overrides={"value": pl.String}).sort("score", descending=True)


def _column(rows: pl.DataFrame, column: str) -> pl.Series:
    if column not in rows.columns:
        choices = [c for c in rows.columns if c not in ("image_id", "label_name")]
        raise UnknownColumnError(f"Unknown column {column!r}. Columns: {', '.join(choices)}.")
    return rows[column]


def _check_units(n_units: int, unit: int | None, layer: str) -> np.ndarray:
    if unit is None:
        return np.arange(n_units)
    if not isinstance(unit, int | np.integer) or not 0 <= unit < n_units:
        raise UnknownUnitError(f"Unit {unit!r} is out of range for {layer}: it has units 0..{n_units - 1}.")
    return np.array([unit])
