"""Clusters of feature vectors (e.g. a layer's activations of the misclassified images) whose
number is read from the data, and the medoid of each.

Pure numpy and scikit-learn, no store. :func:`cluster` runs HDBSCAN (Campello et al., 2013;
``sklearn.cluster.HDBSCAN``) at six smallest cluster sizes, from ``min_size`` to a quarter of the
rows, and keeps the best separated of those partitions (the highest silhouette), so k comes from
the data and the answer does not hinge on one size. Structure that fewer than half of the sizes
find is not kept: then every row is in cluster 0. Rows HDBSCAN leaves as noise join the cluster of
their nearest clustered row, so every row has a cluster (a user wants every error somewhere).

Why these choices (measured on the planted shapes data, five trainings, see
``bench/clusters_robustness.py``): k-means at a fixed k = sqrt(n/2) split the cue-driven errors
over several clusters (the one richest in cue carriers held 31-81% of them, ten trainings) and
silhouette-chosen k-means split ``head.fc1``'s errors along lines unrelated to the cue in three
trainings of five; HDBSCAN's density view kept them together (95-100% in ``features.pool``, ten
trainings), at every smallest size from 5 to 15. Choosing among the sizes by
silhouette, rather than by their agreement, keeps a small well-separated group that only the
smaller sizes can see. Standardizing the units hurt (near-silent units weigh as much as the ones
that carry the cue), so distances are the layer's own, Euclidean; wide layers are first projected
on their leading principal components, which keeps those distances.

>>> rng = np.random.default_rng(0)
>>> blobs = np.concatenate([rng.normal(centre, 0.3, (40, 5)) for centre in (0, 4, 8)])
>>> labels = cluster(blobs)
>>> np.bincount(labels).tolist(), len(set(labels[:40])), len(set(labels[40:80]))
([40, 40, 40], 1, 1)
>>> medoids(blobs, labels).shape
(3,)
"""

from __future__ import annotations

import numpy as np

from odinlab.errors import OptionError

# Fewest rows worth calling a cluster when the caller does not say (HDBSCAN's own default).
DEFAULT_MIN_SIZE = 5
# HDBSCAN's density smoothing (min_samples); kept small and apart from the cluster size, so that
# large sizes still find clusters (with min_samples = min_cluster_size, the default, big sizes
# declared everything noise on the planted data).
MIN_SAMPLES = 5
# Smallest cluster sizes tried: geometrically spaced from min_size to a quarter of the rows.
SIZES_TRIED = 6
LARGEST_SHARE = 0.25
# Wider features are projected on this many principal components (distances kept, noise and cost cut).
MAX_DIMENSIONS = 50
# Rows the silhouette of a partition is measured on, at most (a seeded sample beyond).
SILHOUETTE_SAMPLE = 5000
# Rows per block when summing distances for medoids (bounds memory to BLOCK x cluster size).
BLOCK = 1024


def cluster(features: np.ndarray, *, seed: int = 0, min_size: int | None = None) -> np.ndarray:
    """A cluster label (0..k-1, largest cluster first) for every row of ``features`` (N, ...).

    ``min_size`` is the fewest rows a cluster may have (default 5); k is chosen from the data.
    ``seed`` fixes the principal components of wide features, so a call is deterministic.

    >>> rng = np.random.default_rng(1)
    >>> points = np.concatenate([rng.normal(0, 1, (30, 2)), rng.normal(10, 1, (12, 2))])
    >>> np.bincount(cluster(points)).tolist()
    [30, 12]
    >>> int(cluster(points, min_size=50).max())  # no room for two clusters of 50: one group
    0
    """
    values = _checked(features)
    min_size = _checked_size(min_size)
    n = len(values)
    if n < 2 * min_size:
        return np.zeros(n, dtype=np.int64)
    values = _reduced(values, seed)
    sizes = np.unique(np.round(np.geomspace(min_size, max(min_size, LARGEST_SHARE * n), SIZES_TRIED)))
    partitions = [_hdbscan(values, int(size)) for size in sizes]
    return _ordered(_best_separated(values, partitions, seed))


def medoids(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per cluster 0..max(labels), the row index of the member with the least summed Euclidean
    distance to the other members (ties: the first such row).

    >>> points = np.array([[0.0], [1.0], [5.0], [10.0], [11.0], [12.0]])
    >>> medoids(points, np.array([0, 0, 0, 1, 1, 1])).tolist()
    [1, 4]
    """
    values = _checked(features)
    labels = np.asarray(labels)
    if labels.shape != (len(values),) or (len(labels) and (labels.min() < 0 or not np.issubdtype(
            labels.dtype, np.integer))):
        raise OptionError(f"labels must be one non-negative int per row ({len(values)} rows), got shape "
                          f"{labels.shape} and dtype {labels.dtype}; pass cluster(features)'s result.")
    k = int(labels.max()) + 1 if len(labels) else 0
    empty = [c for c in range(k) if not (labels == c).any()]
    if empty:
        raise OptionError(f"clusters {empty} have no members; labels must number clusters 0..k-1 without gaps.")
    result = np.empty(k, dtype=np.int64)
    for c in range(k):
        members = np.flatnonzero(labels == c)
        result[c] = members[int(np.argmin(_summed_distances(values[members])))]
    return result


# -- helpers ------------------------------------------------------------------------------

def _checked(features) -> np.ndarray:
    """Rows as float64 vectors (trailing axes flattened); refuses what cannot be clustered."""
    values = np.asarray(features)
    if values.ndim < 2 or not (np.issubdtype(values.dtype, np.number) or values.dtype == bool):
        raise OptionError(f"features must be a numeric array of shape (N, ...) with one row per item, got "
                          f"shape {values.shape} and dtype {values.dtype}; e.g. store.activations(...).values.")
    values = values.reshape(len(values), int(np.prod(values.shape[1:]))).astype(np.float64)
    if not np.isfinite(values).all():
        rows = np.flatnonzero(~np.isfinite(values).all(axis=1))
        raise OptionError(f"features hold NaN or infinite values in {len(rows)} rows (first: {rows[:5].tolist()}); "
                          f"drop or fix those rows first.")
    return values


def _checked_size(min_size) -> int:
    if min_size is None:
        return DEFAULT_MIN_SIZE
    if isinstance(min_size, bool) or not isinstance(min_size, int | np.integer) or min_size < 2:
        raise OptionError(f"min_size must be an int >= 2 (the fewest rows of a cluster), or None for "
                          f"{DEFAULT_MIN_SIZE}; got {min_size!r}.")
    return int(min_size)


def _reduced(values: np.ndarray, seed: int) -> np.ndarray:
    """Centred rows, on their leading principal components when wider than MAX_DIMENSIONS."""
    values = values - values.mean(axis=0)
    dims = min(MAX_DIMENSIONS, len(values) - 1)
    if values.shape[1] <= MAX_DIMENSIONS or dims < 1:
        return values
    from sklearn.decomposition import PCA  # deferred: sklearn is slow to import

    return PCA(n_components=dims, random_state=seed).fit_transform(values)


def _hdbscan(values: np.ndarray, size: int) -> np.ndarray:
    """HDBSCAN's clusters at this smallest size, its noise given to the nearest clustered row."""
    from sklearn.cluster import HDBSCAN

    labels = HDBSCAN(min_cluster_size=size, min_samples=min(MIN_SAMPLES, size), copy=True).fit(values).labels_
    noise = labels < 0
    if noise.all():
        return np.zeros(len(values), dtype=np.int64)
    if noise.any():
        labels = labels.copy()
        clustered = np.flatnonzero(~noise)
        labels[noise] = labels[clustered[_nearest(values[noise], values[clustered])]]
    return labels.astype(np.int64)


def _nearest(queries: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Index of the nearest point of each query (Euclidean), in blocks of queries."""
    squared = (points ** 2).sum(axis=1)
    out = np.empty(len(queries), dtype=np.int64)
    for start in range(0, len(queries), BLOCK):
        block = queries[start:start + BLOCK]
        out[start:start + BLOCK] = np.argmin(squared[None, :] - 2 * block @ points.T, axis=1)
    return out


def _best_separated(values: np.ndarray, partitions: list[np.ndarray], seed: int) -> np.ndarray:
    """The partition with the best silhouette (first on ties), or one cluster when fewer than half
    of the partitions found more than one: structure that vanishes at most sizes is not kept."""
    from sklearn.metrics import silhouette_score

    split = [p for p in partitions if p.max() > 0]
    if 2 * len(split) < len(partitions):
        return np.zeros(len(values), dtype=np.int64)
    sample = SILHOUETTE_SAMPLE if len(values) > SILHOUETTE_SAMPLE else None  # O(n^2) otherwise
    scores = [silhouette_score(values, p, sample_size=sample, random_state=seed) for p in split]
    return split[int(np.argmax(scores))]


def _ordered(labels: np.ndarray) -> np.ndarray:
    """Renumber clusters 0..k-1 by size, largest first (ties: the one whose first row comes first)."""
    found, first, counts = np.unique(labels, return_index=True, return_counts=True)
    order = np.lexsort((first, -counts))
    mapping = np.empty(found.max() + 1, dtype=np.int64)
    mapping[found[order]] = np.arange(len(found))
    return mapping[labels]


def _summed_distances(members: np.ndarray) -> np.ndarray:
    """Each member's summed Euclidean distance to all members, computed in blocks of rows."""
    squared = (members ** 2).sum(axis=1)
    total = np.empty(len(members))
    for start in range(0, len(members), BLOCK):
        block = members[start:start + BLOCK]
        d2 = squared[start:start + BLOCK, None] + squared[None, :] - 2 * block @ members.T
        total[start:start + BLOCK] = np.sqrt(np.clip(d2, 0, None)).sum(axis=1)
    return total
