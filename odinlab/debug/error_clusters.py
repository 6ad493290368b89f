"""Clusters of a model's mistakes in a layer's space, each explained: what it holds and what it shares.

A debugging story should not hinge on one k or one training run, so the number of clusters is
chosen from the data (:func:`odinlab.debug.clustering.cluster`: HDBSCAN at several smallest
cluster sizes, the partition with the best silhouette kept), and each
cluster is reported with its full composition of (label, predicted) pairs, the share of its
most common prediction (a "many classes called one class" cluster shows there, not in any one
pair), the metadata values over-represented in it against the other mistakes (a test per value,
Benjamini–Hochberg corrected: :func:`odinlab.debug.enrichment.over_represented`) and its medoid.
Results are cached in the store.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from odinlab.debug.error_analysis import PREDICTION_COLUMNS, _per_image, _stored_predictions
from odinlab.errors import OptionError
from odinlab.store.layout import digest
from odinlab.store.records import ModelRecord
from odinlab.store.selection import ImageSelection, Selection

VERSION = 3  # of the cached results' format; part of their keys
# Columns of the images table that are not metadata to explain a cluster with.
NOT_METADATA = ("image_id", "label", "label_name")

PAIR = pl.Struct({"label_name": pl.String, "predicted_name": pl.String, "count": pl.Int64})
VALUE = pl.Struct({"column": pl.String, "value": pl.String, "test": pl.String, "share_in": pl.Float64,
                   "share_out": pl.Float64, "ratio": pl.Float64, "statistic": pl.Float64, "p_adjusted": pl.Float64})
SCHEMA = {"cluster": pl.Int64, "image_id": pl.String, "size": pl.Int64, "label": pl.Int64, "label_name": pl.String,
          "predicted": pl.Int64, "predicted_name": pl.String, "pair_share": pl.Float64,
          "top_predicted_name": pl.String, "predicted_share": pl.Float64, "pairs": pl.List(PAIR),
          "over_represented": pl.List(VALUE), "image_ids": pl.List(pl.String)}


def error_clusters(store, model, layer: str, images: ImageSelection = None, *, n_clusters: int | None = None,
                   seed: int = 0) -> pl.DataFrame:
    """Every misclassified image with its ``cluster`` and whether it is the cluster's medoid.

    Columns: image_id, label, label_name, cluster, medoid, the prediction's columns, then the
    images' columns (split, metadata). :func:`error_exemplars` summarizes the same clusters.

    >>> _ = store.materialize(net, ["head.fc1"], "val", progress=False)
    >>> members = error_clusters(store, "cnn@1", "head.fc1", "val")
    >>> members.columns[:5], bool(members["correct"].any())
    (['image_id', 'label', 'label_name', 'cluster', 'medoid'], False)
    """
    record, wrong, frame, labels, medoid_rows = _clustered(store, model, layer, images, n_clusters, seed)
    medoid = np.zeros(len(wrong), bool)
    medoid[medoid_rows] = True
    marked = frame.with_columns(cluster=pl.Series(labels, dtype=pl.Int64), medoid=pl.Series(medoid))
    return _per_image(marked, wrong, ("cluster", "medoid", *PREDICTION_COLUMNS))


def error_exemplars(store, model, layer: str, images: ImageSelection = None, *,
                    n_clusters: int | None = None, seed: int = 0) -> pl.DataFrame:
    """Clusters of the misclassified images in ``layer``'s space, one explained row each, largest first.

    ``image_id`` is the medoid; ``size``; the dominant (label, predicted) pair and its share
    (``pair_share``); ``top_predicted_name`` and ``predicted_share``, the cluster's most common
    prediction and its share; ``pairs``, every (label_name, predicted_name, count) in it;
    ``over_represented``, the metadata values significantly more common in it than in the other
    mistakes (column, value, shares in and out, test statistic, corrected p-value); ``image_ids``.
    ``n_clusters`` fixes the number of clusters (default: chosen from the data). Cached in the store.

    >>> _ = store.materialize(net, ["head.fc1"], "val", progress=False)
    >>> clusters = error_exemplars(store, "cnn@1", "head.fc1", "val")
    >>> clusters.columns[:3], clusters["image_ids"].list.len().sum() == clusters["size"].sum()
    (['cluster', 'image_id', 'size'], True)
    """
    record = store.model(model)
    _check_n_clusters(n_clusters)
    frame, selection = _stored_predictions(store, record, store.select(images))
    wrong = selection.where(~frame["correct"].to_numpy())
    params = {"layer": layer, "images": digest({"ids": sorted(wrong.ids)}), "k": n_clusters, "seed": seed,
              "version": VERSION, "predicted_by": digest({"by": sorted(set(frame["predicted_by"]))})}
    return store.results.table(record, "error_exemplars", params,
                               lambda: _summaries(store, record, layer, images, n_clusters, seed))


# -- computing ---------------------------------------------------------------------------------

def _check_n_clusters(n_clusters) -> None:
    if n_clusters is not None and (isinstance(n_clusters, bool) or not isinstance(n_clusters, int)
                                   or n_clusters < 1):
        raise OptionError(f"n_clusters must be a positive int or None (chosen from the data), not {n_clusters!r}.")


def _clustered(store, model, layer, images, n_clusters, seed):
    """The mistakes (selection and prediction frame), a cluster per mistake and the medoids' positions."""
    from odinlab.debug import clustering

    _check_n_clusters(n_clusters)
    record = store.model(model)
    store.check_layers(record, [layer])
    frame, selection = _stored_predictions(store, record, store.select(images))
    mask = ~frame["correct"].to_numpy()
    wrong, wrong_frame = selection.where(mask), frame.filter(pl.Series(mask, dtype=pl.Boolean))
    if len(wrong) == 0:
        return record, wrong, wrong_frame, np.zeros(0, np.int64), np.zeros(0, np.int64)
    features = store.activations(record, layer, wrong).values.reshape(len(wrong), -1).astype(np.float64)
    if n_clusters is None:
        labels = clustering.cluster(features, seed=seed)
    else:  # a fixed k: k-means, several restarts
        from sklearn.cluster import KMeans

        labels = KMeans(n_clusters=min(n_clusters, len(wrong)), n_init=10, random_state=seed).fit_predict(features)
    order = np.argsort(-np.bincount(labels), kind="stable")  # cluster 0 is the largest, in both functions
    rename = np.empty_like(order)
    rename[order] = np.arange(len(order))
    labels = rename[labels]
    return record, wrong, wrong_frame, labels, clustering.medoids(features, labels)


def _summaries(store, record: ModelRecord, layer, images, n_clusters, seed) -> pl.DataFrame:
    from odinlab.debug.enrichment import over_represented

    _, wrong, frame, labels, medoid_rows = _clustered(store, record, layer, images, n_clusters, seed)
    if len(wrong) == 0:
        return pl.DataFrame(schema=SCHEMA)
    ids, metadata = wrong.ids, _metadata(wrong)
    rows = []
    for cluster in range(int(labels.max()) + 1):
        members = np.flatnonzero(labels == cluster)
        if not len(members):
            continue
        pairs = (frame[members].group_by("label", "label_name", "predicted", "predicted_name", maintain_order=True)
                 .len().sort("len", descending=True, maintain_order=True))
        top = pairs.row(0, named=True)
        predicted = frame[members]["predicted_name"].value_counts(sort=True)
        rows.append({
            "cluster": cluster, "image_id": ids[medoid_rows[cluster]], "size": len(members),
            "label": top["label"], "label_name": top["label_name"], "predicted": top["predicted"],
            "predicted_name": top["predicted_name"], "pair_share": top["len"] / len(members),
            "top_predicted_name": predicted["predicted_name"][0],
            "predicted_share": predicted["count"][0] / len(members),
            "pairs": [{"label_name": p["label_name"], "predicted_name": p["predicted_name"], "count": p["len"]}
                      for p in pairs.iter_rows(named=True)],
            "over_represented": _values(over_represented(metadata, labels == cluster)),
            "image_ids": [ids[m] for m in members],
        })
    return pl.DataFrame(rows, schema=SCHEMA)


def _metadata(selection: Selection) -> pl.DataFrame:
    return selection.frame.drop([c for c in NOT_METADATA if c in selection.frame.columns])


def _values(enriched: pl.DataFrame) -> list[dict]:
    """The significant over-represented values, as the cluster row's list of structs."""
    significant = enriched.filter(pl.col("significant")) if enriched.height else enriched
    return [{name: r.get(name) for name in VALUE.to_schema()} for r in significant.iter_rows(named=True)]
