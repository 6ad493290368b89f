"""Error analysis from stored predictions: what a model gets wrong, how sure it was, and why.

Everything here reads ``store.predictions(model_id)`` (materialize first), so it costs no
forward pass; results that need a computation are cached in the store.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import polars as pl

from odinlab.store.layout import digest
from odinlab.errors import NotMaterializedError
from odinlab.store.images import ImageSelection
from odinlab.store.metrics import confusion_matrix as _matrix


def predictions_for(store, model_id: str, images: ImageSelection = None) -> pl.DataFrame:
    """Stored predictions of labelled images; refuses clearly when none are materialized.

    >>> _ = store.materialize(net, images="val", progress=False)
    >>> predictions_for(store, "cnn@1", "val").height
    269
    """
    model_id = store.resolve_model(model_id)
    selected = store.select(images)
    frame = store.predictions(model_id, selected).filter(pl.col("label").is_not_null())
    if frame.height < selected.filter(pl.col("label").is_not_null()).height:
        missing = selected.height - frame.height
        raise NotMaterializedError(
            f"{missing} of the selected images have no stored predictions of {model_id}; "
            f"run store.materialize(model, images=...) for them first."
        )
    return frame


def confusion_matrix(store, model_id: str, images: ImageSelection = None) -> np.ndarray:
    """``C[i, j]`` = images of class i predicted as j, from stored predictions.

    >>> _ = store.materialize(net, images="val", progress=False)
    >>> int(confusion_matrix(store, "cnn@1", "val").sum())
    269
    """
    frame = predictions_for(store, model_id, images)
    return _matrix(frame["label"].to_numpy(), frame["predicted"].to_numpy(), _n_classes(store, model_id))


def confusion_figure(store, model_id: str, images: ImageSelection = None) -> go.Figure:
    """A plotly heat map of the confusion matrix, class names on both axes.

    >>> _ = store.materialize(net, images="val", progress=False)
    >>> confusion_figure(store, "cnn@1", "val").data[0].type
    'heatmap'
    """
    matrix = confusion_matrix(store, model_id, images)
    names = _class_names(store, model_id)
    figure = go.Figure(go.Heatmap(z=matrix, x=names, y=names, colorscale="Blues", text=matrix,
                                  texttemplate="%{text}", hovertemplate="true %{y}, predicted %{x}: %{z}"))
    figure.update_layout(xaxis_title="predicted", yaxis_title="true", yaxis_autorange="reversed",
                         title=f"Confusion matrix of {store.resolve_model(model_id)}")
    return figure


def per_class_metrics(store, model_id: str, images: ImageSelection = None) -> pl.DataFrame:
    """Precision, recall, F1 and support per class.

    >>> _ = store.materialize(net, images="val", progress=False)
    >>> per_class_metrics(store, "cnn@1", "val").columns
    ['class', 'name', 'precision', 'recall', 'f1', 'support']
    """
    matrix = confusion_matrix(store, model_id, images).astype(float)
    hits, predicted, actual = np.diag(matrix), matrix.sum(0), matrix.sum(1)
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    recall = np.divide(hits, actual, out=np.zeros_like(hits), where=actual > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(hits), where=total > 0)
    return pl.DataFrame({"class": np.arange(len(hits)), "name": _class_names(store, model_id),
                         "precision": precision, "recall": recall, "f1": f1, "support": actual.astype(int)})


def hardness(store, model_id: str, images: ImageSelection = None) -> pl.DataFrame:
    """Per image: entropy of the predicted distribution (nats), margin, confidence, correct.

    Sorted hardest first (highest entropy).

    >>> _ = store.materialize(net, images="val", progress=False)
    >>> hardness(store, "cnn@1", "val")["entropy"].is_sorted(descending=True)
    True
    """
    frame = predictions_for(store, model_id, images)
    probs = _probabilities(frame)
    entropy = -(probs * np.log(np.clip(probs, 1e-12, 1))).sum(axis=1)
    return frame.select("image_id", "label", "predicted", "confidence", "margin", "correct").with_columns(
        entropy=pl.Series(entropy)).sort("entropy", descending=True)


def confident_mistakes(store, model_id: str, images: ImageSelection = None, k: int = 20) -> pl.DataFrame:
    """The ``k`` misclassified images the model was most sure about.

    >>> _ = store.materialize(net, images="val", progress=False)
    >>> confident_mistakes(store, "cnn@1", "val", k=3)["correct"].to_list()
    [False, False, False]
    """
    frame = predictions_for(store, model_id, images)
    return (frame.filter(~pl.col("correct")).sort("confidence", descending=True).head(k)
            .select("image_id", "label", "predicted", "confidence", "margin", "loss", "correct"))


def label_errors(store, model_id: str, images: ImageSelection = None) -> pl.DataFrame:
    """Images whose given label is probably wrong, most suspicious first (confident learning).

    Per class j a threshold t_j is the mean probability of j over images labelled j. An image
    is suspect when the probability of its label is below that label's threshold while
    another class k reaches t_k; suspects are ranked by the probability of the given label
    (lowest first). ``out_of_sample`` says the model did not train on the image (from the
    experiments' training sets): those probabilities are the ones to trust.

    >>> _ = store.materialize(net, images="val", progress=False)
    >>> label_errors(store, "cnn@1", "val").columns[:4]
    ['image_id', 'label', 'suggested', 'p_label']
    """
    frame = predictions_for(store, model_id, images)
    probs, labels = _probabilities(frame), frame["label"].to_numpy()
    thresholds = np.array([probs[labels == j, j].mean() if (labels == j).any() else 1.0
                           for j in range(probs.shape[1])])
    p_label = probs[np.arange(len(labels)), labels]
    confident = np.where(probs >= thresholds[None, :], probs, -1.0)
    confident[np.arange(len(labels)), labels] = -1.0  # another class must be the confident one
    suggested = confident.argmax(axis=1)
    suspect = (p_label < thresholds[labels]) & (confident.max(axis=1) >= 0)
    trained_on = _training_images(store, model_id)
    result = pl.DataFrame({
        "image_id": frame["image_id"], "label": labels, "suggested": suggested,
        "p_label": p_label, "p_suggested": probs[np.arange(len(labels)), suggested],
        "out_of_sample": ~frame["image_id"].is_in(trained_on.implode()).to_numpy(),
    }).filter(pl.Series(suspect))
    return result.sort(["p_label", "p_suggested"], descending=[False, True])


def error_exemplars(store, model_id: str, layer: str, images: ImageSelection = None,
                    n_clusters: int | None = None, seed: int = 0) -> pl.DataFrame:
    """Representative misclassified images: clusters of the errors in ``layer``'s space.

    Returns one row per cluster: its medoid image, size, and dominant (true, predicted) pair
    with the share of the cluster it covers; largest clusters first. Cached in the store.

    >>> _ = store.materialize(net, ["head.fc1"], "val", progress=False)
    >>> error_exemplars(store, "cnn@1", "head.fc1", "val", n_clusters=2).columns[:3]
    ['cluster', 'medoid', 'size']
    """
    from sklearn.cluster import KMeans

    wrong = predictions_for(store, model_id, images).filter(~pl.col("correct"))
    ids = wrong["image_id"].to_list()
    params = {"layer": layer, "images": digest({"ids": sorted(ids)}), "k": n_clusters, "seed": seed}

    def compute() -> pl.DataFrame:
        if not ids:
            return pl.DataFrame(schema={"cluster": pl.Int64, "medoid": pl.String, "size": pl.Int64,
                                        "true": pl.Int64, "predicted": pl.Int64, "pair_share": pl.Float64,
                                        "members": pl.List(pl.String)})
        features = store.activations(model_id, layer, ids).reshape(len(ids), -1)
        k = min(n_clusters or max(1, int(np.sqrt(len(ids) / 2))), len(ids))
        fitted = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(features)
        rows = []
        for cluster in range(k):
            members = np.flatnonzero(fitted.labels_ == cluster)
            distances = np.linalg.norm(features[members] - fitted.cluster_centers_[cluster], axis=1)
            pairs = wrong[members].group_by("label", "predicted").len().sort("len", descending=True)
            rows.append({"cluster": cluster, "medoid": ids[members[distances.argmin()]], "size": len(members),
                         "true": pairs["label"][0], "predicted": pairs["predicted"][0],
                         "pair_share": pairs["len"][0] / len(members),
                         "members": [ids[m] for m in members]})
        return pl.DataFrame(rows).sort("size", descending=True)

    return store.results.table(model_id, "error_exemplars", params, compute)


def _probabilities(frame: pl.DataFrame) -> np.ndarray:
    return np.stack(frame["probabilities"].to_numpy()) if frame.height else np.zeros((0, 1))


def _n_classes(store, model_id: str) -> int:
    return len(store._row(store.resolve_model(model_id))["classes"])


def _class_names(store, model_id: str) -> list[str]:
    return list(store._row(store.resolve_model(model_id))["classes"])


def _training_images(store, model_id: str) -> pl.Series:
    runs = store.experiments.filter((pl.col("model_id") == store.resolve_model(model_id))
                                    & pl.col("train_set").is_not_null())
    sets = store.image_sets.filter(pl.col("set_id").is_in(runs["train_set"].implode()))
    return sets["image_id"].unique()


__all__ = ["confident_mistakes", "confusion_figure", "confusion_matrix", "error_exemplars", "hardness",
           "label_errors", "per_class_metrics", "predictions_for"]
