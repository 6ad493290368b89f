"""Model comparison: where two versions disagree, per-class deltas, McNemar, layer CKA, flips.

Both versions must have stored predictions for the images (``store.materialize``); layer
similarity and movement read materialized activations (computed on demand when this
session has the modules).
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import polars as pl
from scipy.stats import binomtest, chi2, rankdata

from odinlab.store.layout import digest
from odinlab.debug.error_analysis import per_class_metrics, predictions_for
from odinlab.errors import ComparisonError
from odinlab.store.images import ImageSelection


def paired(store, model_a: str, model_b: str, images: ImageSelection = None) -> pl.DataFrame:
    """One row per image: label, both predictions and whether each is right.

    >>> _ = store.materialize(net, images="val", progress=False)
    >>> paired(store, "cnn@1", "cnn@1", "val")["agree"].all()
    True
    """
    a, b = store.resolve_model(model_a), store.resolve_model(model_b)
    if list(store._row(a)["classes"]) != list(store._row(b)["classes"]):
        raise ComparisonError(f"{a} and {b} predict different classes; compare versions of one task.")
    left = predictions_for(store, a, images).select("image_id", "label", pl.col("predicted").alias("predicted_a"),
                                                   pl.col("correct").alias("correct_a"))
    right = predictions_for(store, b, images).select("image_id", pl.col("predicted").alias("predicted_b"),
                                                    pl.col("correct").alias("correct_b"))
    return left.join(right, on="image_id", maintain_order="left").with_columns(
        agree=pl.col("predicted_a") == pl.col("predicted_b"))


def agreement(store, model_a: str, model_b: str, images: ImageSelection = None) -> dict:
    """Agreement rate, the 2×2 table of paired correctness and McNemar's test on it.

    McNemar uses the exact binomial test when fewer than 25 images are discordant, else the
    chi-square statistic with continuity correction.

    >>> _ = store.materialize(net, images="val", progress=False)
    >>> agreement(store, "cnn@1", "cnn@1", "val")["agreement"]
    1.0
    """
    pairs = paired(store, model_a, model_b, images)
    a, b = pairs["correct_a"].to_numpy(), pairs["correct_b"].to_numpy()
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    discordant = only_a + only_b
    if discordant == 0:
        statistic, p_value = 0.0, 1.0
    elif discordant < 25:
        statistic, p_value = float(min(only_a, only_b)), binomtest(only_a, discordant, 0.5).pvalue
    else:
        statistic = (abs(only_a - only_b) - 1) ** 2 / discordant
        p_value = float(chi2.sf(statistic, df=1))
    return {"images": pairs.height, "agreement": float(pairs["agree"].mean()),
            "accuracy_a": float(a.mean()), "accuracy_b": float(b.mean()),
            "both_right": int((a & b).sum()), "only_a_right": only_a, "only_b_right": only_b,
            "both_wrong": int((~a & ~b).sum()), "mcnemar_statistic": float(statistic),
            "mcnemar_p": float(p_value)}


def disagreements(store, model_a: str, model_b: str, images: ImageSelection = None) -> pl.DataFrame:
    """The images where the two versions predict differently, with which one is right.

    >>> _ = store.materialize(net, images="val", progress=False)
    >>> disagreements(store, "cnn@1", "cnn@1", "val").height
    0
    """
    pairs = paired(store, model_a, model_b, images).filter(~pl.col("agree"))
    winner = (pl.when(pl.col("correct_a") & ~pl.col("correct_b")).then(pl.lit("a"))
              .when(pl.col("correct_b") & ~pl.col("correct_a")).then(pl.lit("b")).otherwise(pl.lit("neither")))
    return pairs.with_columns(right=winner).drop("agree")


def class_deltas(store, model_a: str, model_b: str, images: ImageSelection = None) -> pl.DataFrame:
    """Per-class precision, recall and F1 of both versions and their differences (b − a).

    >>> _ = store.materialize(net, images="val", progress=False)
    >>> class_deltas(store, "cnn@1", "cnn@1", "val")["f1_delta"].abs().max()
    0.0
    """
    ids = paired(store, model_a, model_b, images)["image_id"]
    a = per_class_metrics(store, model_a, ids)
    b = per_class_metrics(store, model_b, ids)
    out = a.select("class", "name", "support")
    for metric in ("precision", "recall", "f1"):
        out = out.with_columns(**{f"{metric}_a": a[metric], f"{metric}_b": b[metric],
                                  f"{metric}_delta": b[metric] - a[metric]})
    return out


def class_delta_figure(store, model_a: str, model_b: str, images: ImageSelection = None,
                       metric: str = "f1") -> go.Figure:
    """Bar chart of the per-class change of ``metric`` from version a to b.

    >>> _ = store.materialize(net, images="val", progress=False)
    >>> class_delta_figure(store, "cnn@1", "cnn@1", "val").data[0].type
    'bar'
    """
    deltas = class_deltas(store, model_a, model_b, images)
    values = deltas[f"{metric}_delta"].to_list()
    figure = go.Figure(go.Bar(x=deltas["name"].to_list(), y=values,
                              marker_color=["#2a9d8f" if v >= 0 else "#e76f51" for v in values]))
    figure.update_layout(title=f"{metric} per class: {model_b} − {model_a}", xaxis_title="class",
                         yaxis_title=f"Δ {metric}")
    return figure


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA between two representations of the same images (rows), in [0, 1].

    Uses the n×n Gram form when there are fewer images than features, else the feature form.

    >>> rng = np.random.default_rng(0); x = rng.normal(size=(50, 8))
    >>> round(linear_cka(x, 3 * x @ np.linalg.qr(rng.normal(size=(8, 8)))[0]), 6)
    1.0
    """
    x = x.reshape(len(x), -1).astype(np.float64)
    y = y.reshape(len(y), -1).astype(np.float64)
    x, y = x - x.mean(axis=0), y - y.mean(axis=0)
    if len(x) < x.shape[1] + y.shape[1]:
        kx, ky = x @ x.T, y @ y.T
        numerator, norm_x, norm_y = (kx * ky).sum(), np.linalg.norm(kx), np.linalg.norm(ky)
    else:
        numerator = np.linalg.norm(y.T @ x) ** 2
        norm_x, norm_y = np.linalg.norm(x.T @ x), np.linalg.norm(y.T @ y)
    return float(numerator / (norm_x * norm_y)) if norm_x > 0 and norm_y > 0 else 0.0


def cka_matrix(store, model_a: str, model_b: str, layers_a: list[str], layers_b: list[str],
               images: ImageSelection = None) -> pl.DataFrame:
    """Linear CKA between every layer of a and every layer of b, on the same images (cached).

    >>> m = cka_matrix(store, "cnn@1", "cnn@1", ["head.fc1"], ["head.fc1"], "val")
    >>> round(m["cka"][0], 6)
    1.0
    """
    ids = store.select(images)["image_id"]
    params = {"b": store.resolve_model(model_b), "layers_a": layers_a, "layers_b": layers_b,
              "images": digest({"ids": ids.to_list()})}

    def compute() -> pl.DataFrame:
        acts_b = {layer: store.activations(model_b, layer, ids) for layer in layers_b}
        rows = []
        for layer_a in layers_a:
            acts_a = store.activations(model_a, layer_a, ids)
            rows += [{"layer_a": layer_a, "layer_b": layer_b, "cka": linear_cka(acts_a, acts_b[layer_b])}
                     for layer_b in layers_b]
        return pl.DataFrame(rows)

    return store.results.table(model_a, "cka", params, compute)


def cka_figure(matrix: pl.DataFrame) -> go.Figure:
    """Heat map of a :func:`cka_matrix` result (layers of a down, layers of b across).

    >>> cka_figure(cka_matrix(store, "cnn@1", "cnn@1", ["head.fc1"], ["head.fc1"], "val")).data[0].type
    'heatmap'
    """
    wide = matrix.pivot(on="layer_b", index="layer_a", values="cka", maintain_order=True)
    figure = go.Figure(go.Heatmap(z=wide.drop("layer_a").to_numpy(), x=wide.columns[1:],
                                  y=wide["layer_a"].to_list(), zmin=0, zmax=1, colorscale="Viridis"))
    figure.update_layout(title="Linear CKA", yaxis_autorange="reversed")
    return figure


def flips(store, model_a: str, model_b: str, layer: str, images: ImageSelection = None,
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

    pairs = paired(store, model_a, model_b, images)
    ids = pairs["image_id"]
    a = store.activations(model_a, layer, ids).reshape(len(ids), -1)
    b = store.activations(model_b, layer, ids).reshape(len(ids), -1)
    if a.shape[1] != b.shape[1]:
        raise ComparisonError(f"{layer} has {a.shape[1]} values in {model_a} but {b.shape[1]} in "
                              f"{model_b}; movement needs the same layer shape (use cka_matrix instead).")
    k = max(1, min(components, a.shape[1], 2 * len(ids) - 1))
    basis = PCA(n_components=k, random_state=0).fit(np.vstack([a, b]))
    za, zb = basis.transform(a), basis.transform(b)
    sample = za[np.random.default_rng(0).permutation(len(za))[: min(len(za), 500)]]
    typical = np.median(np.linalg.norm(sample[:, None] - sample[None], axis=2)[np.triu_indices(len(sample), 1)]) \
        if len(sample) > 1 else 1.0
    moved = np.linalg.norm(za - zb, axis=1) / (typical if typical > 0 else 1.0)
    return pairs.with_columns(flipped=~pl.col("agree"), moved=pl.Series(moved)).drop("agree").sort(
        "moved", descending=True)


def attribution_agreement(store, model_a: str, model_b: str, images: ImageSelection = None, *,
                          method: str = "integrated_gradients", target="label", **method_kwargs) -> pl.DataFrame:
    """Per image, the Spearman rank correlation between the two versions' attribution maps.

    Both maps come from the same method and target (cached in the store); 1 means the
    versions rank the pixels' importance identically. Most different first.

    >>> _ = store.materialize(net, images="val", progress=False)
    >>> some = store.select("val")["image_id"].head(3)
    >>> agree = attribution_agreement(store, "cnn@1", "cnn@1", some, method="saliency")
    >>> round(agree["spearman"][0], 6)
    1.0
    """
    from odinlab.debug.attribution import Attributor

    ids = paired(store, model_a, model_b, images)["image_id"]
    maps = [Attributor(store, model, method=method, **method_kwargs).attribute(ids, target=target, progress=False)
            for model in (model_a, model_b)]
    ranks = [rankdata(m.reshape(len(ids), -1), axis=1) for m in maps]
    centred = [r - r.mean(axis=1, keepdims=True) for r in ranks]
    denominator = np.sqrt((centred[0] ** 2).sum(1) * (centred[1] ** 2).sum(1))
    rho = np.divide((centred[0] * centred[1]).sum(1), denominator, out=np.zeros(len(ids)), where=denominator > 0)
    return pl.DataFrame({"image_id": ids, "spearman": rho}).sort("spearman")
