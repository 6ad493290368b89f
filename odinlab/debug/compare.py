"""Model comparison: where two versions disagree, per-class deltas, McNemar, layer CKA, flips.

Both versions must have stored predictions for the images (``store.materialize``); layer
similarity and movement read materialized activations (computed on demand when this
session has the modules). Every function is ``f(store, model_a, model_b, ..., images=None)``
and returns a polars frame; the figures are in :mod:`odinlab.draw.compare`.

:func:`cka_matrix` is out-of-core: above ``odinlab.in-memory-limit`` (Dask config, see
:mod:`odinlab.store.lazy`) it streams both layers through ``dask.array.from_zarr``.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import polars as pl
from scipy.stats import binomtest, chi2, rankdata

from odinlab.errors import ComparisonError, NotMaterializedError
from odinlab.store.layout import digest
from odinlab.store.lazy import compute, lazy_layer
from odinlab.store.metrics import classification_metrics
from odinlab.store.records import ModelRecord
from odinlab.store.selection import ImageSelection, Selection


def paired(store, model_a, model_b, images: ImageSelection = None) -> pl.DataFrame:
    """One row per labelled image: label, both predictions and whether each is right.

    Columns: image_id, label, label_name, predicted_a, predicted_b, correct_a, correct_b, agree.

    >>> _ = store.materialize(net, images="val", progress=False)
    >>> paired(store, "cnn@1", "cnn@1", "val")["agree"].all()
    True
    """
    a, b = _records(store, model_a, model_b)
    return _paired(store, a, b, store.select(images))[0]


def agreement(store, model_a, model_b, images: ImageSelection = None) -> pl.DataFrame:
    """One row: agreement rate, accuracies, the 2×2 table of paired correctness and McNemar's test.

    McNemar uses the exact binomial test when fewer than 25 images are discordant, else the
    chi-square statistic with continuity correction. Columns: model_a, model_b, images,
    agreement, accuracy_a, accuracy_b, both_right, only_a_right, only_b_right, both_wrong,
    mcnemar_statistic, mcnemar_p.

    >>> _ = store.materialize(net, images="val", progress=False)
    >>> agreement(store, "cnn@1", "cnn@1", "val")["agreement"].item()
    1.0
    """
    a, b = _records(store, model_a, model_b)
    pairs = _paired(store, a, b, store.select(images))[0]
    right_a, right_b = pairs["correct_a"].to_numpy(), pairs["correct_b"].to_numpy()
    only_a, only_b = int((right_a & ~right_b).sum()), int((~right_a & right_b).sum())
    statistic, p_value = _mcnemar(only_a, only_b)
    empty = pairs.height == 0
    return pl.DataFrame({
        "model_a": a.model_id, "model_b": b.model_id, "images": pairs.height,
        "agreement": None if empty else float(pairs["agree"].mean()),
        "accuracy_a": None if empty else float(right_a.mean()),
        "accuracy_b": None if empty else float(right_b.mean()),
        "both_right": int((right_a & right_b).sum()), "only_a_right": only_a, "only_b_right": only_b,
        "both_wrong": int((~right_a & ~right_b).sum()), "mcnemar_statistic": statistic, "mcnemar_p": p_value,
    }, schema_overrides={"agreement": pl.Float64, "accuracy_a": pl.Float64, "accuracy_b": pl.Float64})


def _mcnemar(only_a: int, only_b: int) -> tuple[float, float]:
    discordant = only_a + only_b
    if discordant == 0:
        return 0.0, 1.0
    if discordant < 25:
        return float(min(only_a, only_b)), float(binomtest(only_a, discordant, 0.5).pvalue)
    statistic = (abs(only_a - only_b) - 1) ** 2 / discordant
    return float(statistic), float(chi2.sf(statistic, df=1))


def disagreements(store, model_a, model_b, images: ImageSelection = None) -> pl.DataFrame:
    """The images where the two versions predict differently, with which one is right (a, b, neither).

    >>> _ = store.materialize(net, images="val", progress=False)
    >>> disagreements(store, "cnn@1", "cnn@1", "val").height
    0
    """
    a, b = _records(store, model_a, model_b)
    pairs = _paired(store, a, b, store.select(images))[0].filter(~pl.col("agree"))
    winner = (pl.when(pl.col("correct_a") & ~pl.col("correct_b")).then(pl.lit("a"))
              .when(pl.col("correct_b") & ~pl.col("correct_a")).then(pl.lit("b")).otherwise(pl.lit("neither")))
    return pairs.with_columns(right=winner).drop("agree")


def class_deltas(store, model_a, model_b, images: ImageSelection = None) -> pl.DataFrame:
    """Per class: precision, recall and F1 of both versions and their differences (b − a).

    Columns: label, label_name, support, then ``<metric>_a``, ``<metric>_b``, ``<metric>_delta``
    for precision, recall and f1. Draw it with :func:`odinlab.draw.compare.class_delta_figure`.

    >>> _ = store.materialize(net, images="val", progress=False)
    >>> class_deltas(store, "cnn@1", "cnn@1", "val")["f1_delta"].abs().max()
    0.0
    """
    a, b = _records(store, model_a, model_b)
    pairs = _paired(store, a, b, store.select(images))[0]
    labels, n = pairs["label"].to_numpy().astype(np.int64), a.num_classes
    metrics = {side: classification_metrics(labels, pairs[f"predicted_{side}"].to_numpy().astype(np.int64), n)
               for side in ("a", "b")}
    out = pl.DataFrame({"label": np.arange(n), "label_name": list(a.classes),
                        "support": np.bincount(labels, minlength=n)})
    for metric in ("precision", "recall", "f1"):
        first, second = np.asarray(metrics["a"][metric]), np.asarray(metrics["b"][metric])
        out = out.with_columns(**{f"{metric}_a": first, f"{metric}_b": second, f"{metric}_delta": second - first})
    return out


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA between two representations of the same images (rows), in [0, 1].

    Uses the n×n Gram form when there are fewer images than features, else the feature form.

    >>> rng = np.random.default_rng(0); x = rng.normal(size=(50, 8))
    >>> round(linear_cka(x, 3 * x @ np.linalg.qr(rng.normal(size=(8, 8)))[0]), 6)
    1.0
    """
    x = np.asarray(x).reshape(len(x), -1).astype(np.float64)
    y = np.asarray(y).reshape(len(y), -1).astype(np.float64)
    x, y = x - x.mean(axis=0), y - y.mean(axis=0)
    if len(x) < x.shape[1] + y.shape[1]:
        kx, ky = x @ x.T, y @ y.T
        numerator, norm_x, norm_y = (kx * ky).sum(), np.linalg.norm(kx), np.linalg.norm(ky)
    else:
        numerator = np.linalg.norm(y.T @ x) ** 2
        norm_x, norm_y = np.linalg.norm(x.T @ x), np.linalg.norm(y.T @ y)
    return float(numerator / (norm_x * norm_y)) if norm_x > 0 and norm_y > 0 else 0.0


def cka_matrix(store, model_a, model_b, layers_a: list[str], layers_b: list[str],
               images: ImageSelection = None, *, scheduler=None) -> pl.DataFrame:
    """Linear CKA between every layer of a and every layer of b, on the same images (cached).

    Columns: layer_a, layer_b, cka. Draw it with :func:`odinlab.draw.compare.cka_figure`.

    Out-of-core: when the layers' rows exceed ``odinlab.in-memory-limit``, or with
    ``scheduler=client`` (a Dask client, or ``odinlab.parallel``), each layer is read on Dask by
    Zarr chunk: its mean first, then ``XᵀY``, ``XᵀX``, ``YᵀY`` of the centred rows summed over
    chunks (float64), so memory holds chunks and features × features matrices, never all images.

    >>> m = cka_matrix(store, "cnn@1", "cnn@1", ["head.fc1"], ["head.fc1"], "val")
    >>> round(m["cka"][0], 6)
    1.0
    """
    a, b = _records(store, model_a, model_b, same_classes=False)
    layers_a, layers_b = store.check_layers(a, layers_a), store.check_layers(b, layers_b)
    selection = store.select(images)
    params = {"b": b.model_id, "layers_a": layers_a, "layers_b": layers_b,
              "images": digest({"ids": selection.ids})}

    def compute() -> pl.DataFrame:
        streamed = _streamed_cka(store, a, b, layers_a, layers_b, selection, scheduler)
        if streamed is not None:
            return pl.DataFrame([{"layer_a": la, "layer_b": lb, "cka": streamed[la, lb]}
                                 for la in layers_a for lb in layers_b],
                                schema={"layer_a": pl.String, "layer_b": pl.String, "cka": pl.Float64})
        acts_b = {layer: _values(store, b, layer, selection) for layer in layers_b}
        rows = []
        for layer_a in layers_a:
            acts_a = _values(store, a, layer_a, selection)
            rows += [{"layer_a": layer_a, "layer_b": layer_b, "cka": linear_cka(acts_a, acts_b[layer_b])}
                     for layer_b in layers_b]
        return pl.DataFrame(rows, schema={"layer_a": pl.String, "layer_b": pl.String, "cka": pl.Float64})

    return store.results.table(a, "cka", params, compute)


def _streamed_cka(store, a: ModelRecord, b: ModelRecord, layers_a: list[str], layers_b: list[str],
                  selection: Selection, scheduler) -> dict | None:
    """``{(layer_a, layer_b): cka}`` computed by chunks on Dask, or None when the layers fit in memory."""
    record = {a.model_id: a, b.model_id: b}
    sides = [(a.model_id, layer) for layer in layers_a] + [(b.model_id, layer) for layer in layers_b]
    lazy = {side: lazy_layer(store, record[side[0]], side[1], selection, scheduler=scheduler) for side in sides}
    if all(x is None for x in lazy.values()):
        return None
    lazy = {side: x if x is not None else lazy_layer(store, record[side[0]], side[1], selection, force=True)
            for side, x in lazy.items()}
    flat = {side: x.reshape(x.shape[0], -1).astype(np.float64) for side, x in lazy.items()}
    # The means first, in their own pass: centring inside one graph would keep every chunk until
    # the mean is known, i.e. the whole layer in memory.
    means = compute(*[x.mean(axis=0) for x in flat.values()], scheduler=scheduler)
    centred = {side: x - mean for (side, x), mean in zip(flat.items(), means)}
    norms = compute(*[da.linalg.norm(x.T @ x) for x in centred.values()], scheduler=scheduler)
    norm = dict(zip(centred, norms))
    pairs = [((a.model_id, la), (b.model_id, lb)) for la in layers_a for lb in layers_b]
    crossed = compute(*[da.linalg.norm(centred[y].T @ centred[x]) ** 2 for x, y in pairs], scheduler=scheduler)
    return {(x[1], y[1]): float(c / (norm[x] * norm[y])) if norm[x] > 0 and norm[y] > 0 else 0.0
            for (x, y), c in zip(pairs, crossed)}


def flips(store, model_a, model_b, layer: str, images: ImageSelection = None, *,
          components: int = 50) -> pl.DataFrame:
    """How each image changed from a to b: whether its prediction flipped, and how far it moved.

    Both versions' activations of ``layer`` are projected on one PCA basis fitted to the two
    together (a shared embedding); ``moved`` is the distance between an image's two points,
    divided by the median distance between images, so 1.0 is "as far as a typical neighbour
    pair". Sorted by movement.

    >>> _ = store.materialize(net, images="val", progress=False)
    >>> flips(store, "cnn@1", "cnn@1", "head.fc1", "val")["moved"].max()
    0.0
    """
    from sklearn.decomposition import PCA

    a, b = _records(store, model_a, model_b)
    pairs, selection = _paired(store, a, b, store.select(images))
    x = _values(store, a, layer, selection).reshape(len(selection), -1)
    y = _values(store, b, layer, selection).reshape(len(selection), -1)
    if x.shape[1] != y.shape[1]:
        raise ComparisonError(f"{layer} has {x.shape[1]} values in {a} but {y.shape[1]} in {b}; "
                              f"movement needs the same layer shape (use cka_matrix instead).")
    k = max(1, min(components, x.shape[1], 2 * len(selection) - 1))
    basis = PCA(n_components=k, random_state=0).fit(np.vstack([x, y]))
    za, zb = basis.transform(x), basis.transform(y)
    sample = za[np.random.default_rng(0).permutation(len(za))[: min(len(za), 500)]]
    typical = np.median(np.linalg.norm(sample[:, None] - sample[None], axis=2)[np.triu_indices(len(sample), 1)]) \
        if len(sample) > 1 else 1.0
    moved = np.linalg.norm(za - zb, axis=1) / (typical if typical > 0 else 1.0)
    return pairs.with_columns(flipped=~pl.col("agree"), moved=pl.Series(moved)).drop("agree").sort(
        "moved", descending=True)


def attribution_agreement(store, model_a, model_b, images: ImageSelection = None, *,
                          method: str = "integrated_gradients", target="prediction", **method_kwargs) -> pl.DataFrame:
    """Per image, the Spearman rank correlation between the two versions' attribution maps.

    Both maps come from the same method and target (``"prediction"``: what each version
    predicted; ``"label"`` or a class for one shared target), cached in the store; 1 means the
    versions rank the pixels' importance identically. Columns image_id, spearman; most
    different first.

    >>> _ = store.materialize(net, images="val", progress=False)
    >>> agree = attribution_agreement(store, "cnn@1", "cnn@1", store.select("val")[:3], method="saliency")
    >>> round(agree["spearman"][0], 6)
    1.0
    """
    from odinlab.debug.attribution import Attributor

    a, b = _records(store, model_a, model_b)
    _, selection = _paired(store, a, b, store.select(images))
    # np.asarray: the maps are a labelled (image_id, channel, y, x) array, the same rows as the selection.
    maps = [np.asarray(Attributor(store, record, method=method, **method_kwargs).attribute(selection, target=target))
            for record in (a, b)]
    ranks = [rankdata(m.reshape(len(selection), -1), axis=1) for m in maps]
    centred = [r - r.mean(axis=1, keepdims=True) for r in ranks]
    denominator = np.sqrt((centred[0] ** 2).sum(1) * (centred[1] ** 2).sum(1))
    rho = np.divide((centred[0] * centred[1]).sum(1), denominator, out=np.zeros(len(selection)),
                    where=denominator > 0)
    return pl.DataFrame({"image_id": selection.ids, "spearman": rho}).sort("spearman", maintain_order=True)


# -- internals ------------------------------------------------------------------------------

def _records(store, model_a, model_b, same_classes: bool = True) -> tuple[ModelRecord, ModelRecord]:
    """Both versions resolved once; versions of different tasks cannot be paired."""
    a, b = store.model(model_a), store.model(model_b)
    if same_classes and a.classes != b.classes:
        raise ComparisonError(f"{a} and {b} predict different classes; compare versions of one task.")
    return a, b


def _paired(store, a: ModelRecord, b: ModelRecord, selection: Selection) -> tuple[pl.DataFrame, Selection]:
    """The paired frame and the sub-selection it covers (labelled images), row for row."""
    selection = selection.where(pl.col("label").is_not_null())
    sides = []
    for record, side in ((a, "a"), (b, "b")):
        predictions = store.predictions(record, selection)
        if predictions.height < len(selection):
            raise NotMaterializedError(
                f"{len(selection) - predictions.height} of the {len(selection)} selected labelled images have no "
                f"stored predictions of {record}; run store.materialize({str(record)!r}, images=...) first.")
        sides.append(predictions.select(pl.col("predicted").alias(f"predicted_{side}"),
                                        pl.col("correct").alias(f"correct_{side}")))
    frame = selection.frame.select("image_id", "label", "label_name").hstack(sides[0]).hstack(sides[1])
    return frame.with_columns(agree=pl.col("predicted_a") == pl.col("predicted_b")), selection


def _values(store, record: ModelRecord, layer: str, selection: Selection) -> np.ndarray:
    return np.asarray(store.activations(record, layer, selection, store=not store.read_only).values)


__all__ = ["ComparisonError", "agreement", "attribution_agreement", "cka_matrix", "class_deltas", "disagreements",
           "flips", "linear_cka", "paired"]
