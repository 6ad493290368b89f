import numpy as np
import pytest
from scipy.spatial.distance import cdist
from sklearn.metrics import adjusted_rand_score

from odinlab.debug import clustering
from odinlab.debug.clustering import cluster, medoids
from odinlab.errors import OptionError


def blobs(sizes, dims, seed, spread=1.0, separation=12.0):
    """Gaussian blobs whose centres are at least ``separation`` standard deviations apart."""
    rng = np.random.default_rng(seed)
    centres = np.zeros((len(sizes), dims))
    for i in range(len(sizes)):  # one axis each (two signs when there are more blobs than axes)
        centres[i, i % dims] = separation * (1 + i // dims) * (-1) ** (i // dims)
    points = np.concatenate([rng.normal(c, spread, (n, dims)) for c, n in zip(centres, sizes)])
    truth = np.repeat(np.arange(len(sizes)), sizes)
    order = rng.permutation(len(points))  # clusters must not depend on the rows' order
    return points[order], truth[order]


@pytest.mark.parametrize("k", [2, 3, 5, 8])
@pytest.mark.parametrize("dims", [2, 20, 120])  # 120 > MAX_DIMENSIONS: the principal-components path
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_separated_blobs_are_recovered_exactly_whatever_their_number_and_sizes(k, dims, seed):
    sizes = [20 + 15 * i for i in range(k)]
    points, truth = blobs(sizes, dims, seed)
    labels = cluster(points, seed=seed)
    assert adjusted_rand_score(truth, labels) == 1.0
    assert labels.max() + 1 == k


def test_labels_number_clusters_from_the_largest_and_cover_every_row():
    points, truth = blobs([15, 60, 30], 4, seed=3)
    labels = cluster(points)
    assert labels.dtype == np.int64 and labels.shape == (len(points),)
    assert np.bincount(labels).tolist() == [60, 30, 15]
    assert (labels[truth == 1] == 0).all() and (labels[truth == 0] == 2).all()


def test_the_same_seed_gives_the_same_labels_and_other_seeds_the_same_partition():
    points, _ = blobs([40, 40, 40], 80, seed=4)  # wide: principal components depend on the seed
    first = cluster(points, seed=0)
    assert np.array_equal(first, cluster(points, seed=0))
    for seed in (1, 2):
        assert adjusted_rand_score(first, cluster(points, seed=seed)) == 1.0


def test_outliers_join_the_cluster_of_their_nearest_neighbour():
    points, truth = blobs([40, 40], 2, seed=5)
    near_first = points[truth == 0].mean(axis=0) + np.array([[6.0, 0.0], [0.0, 6.0]])
    near_second = points[truth == 1].mean(axis=0) + np.array([[0.0, -6.0]])
    labels = cluster(np.concatenate([points, near_first, near_second]))
    assert labels.max() == 1  # no group of its own for the outliers
    first, second = labels[:80][truth == 0][0], labels[:80][truth == 1][0]
    assert labels[80:].tolist() == [first, first, second]


def test_data_without_structure_is_one_cluster():
    for seed in range(4):
        points = np.random.default_rng(seed).normal(size=(200, 10))
        assert (cluster(points, seed=seed) == 0).all()


def test_min_size_is_the_smallest_cluster_allowed():
    points, truth = blobs([40, 40, 7], 3, seed=6)
    assert cluster(points).max() == 2  # the default (5) lets the 7 points be a cluster
    labels = cluster(points, min_size=10)
    assert labels.max() == 1 and np.bincount(labels).min() >= 10
    assert len(set(labels[truth == 2])) == 1  # the small blob joins one cluster whole


def test_min_size_within_the_blobs_sizes_does_not_change_the_answer():
    points, truth = blobs([30, 45, 60], 6, seed=7)
    for min_size in (3, 5, 10, 20):
        assert adjusted_rand_score(truth, cluster(points, min_size=min_size)) == 1.0


def test_too_few_rows_for_two_clusters_are_one_cluster():
    assert cluster(np.arange(9.0).reshape(9, 1)).tolist() == [0] * 9  # fewer than 2 x min_size
    assert cluster(np.zeros((0, 3))).shape == (0,)
    assert cluster(np.zeros((30, 3))).tolist() == [0] * 30  # identical rows


def test_trailing_axes_are_flattened_like_a_feature_map():
    points, truth = blobs([30, 30], 2 * 3 * 3, seed=8)
    labels = cluster(points.reshape(-1, 2, 3, 3))
    assert adjusted_rand_score(truth, labels) == 1.0


@pytest.mark.parametrize("features, message", [
    (np.zeros(10), "shape"),
    (np.array([["a", "b"]] * 10), "numeric"),
    (np.array([[0.0, np.nan]] * 10), "NaN"),
])
def test_features_that_cannot_be_clustered_are_refused_with_the_reason(features, message):
    with pytest.raises(OptionError, match=message):
        cluster(features)


@pytest.mark.parametrize("min_size", [1, 0, 2.5, True, "5"])
def test_a_bad_min_size_is_refused(min_size):
    with pytest.raises(OptionError, match="min_size"):
        cluster(np.zeros((20, 2)), min_size=min_size)


def test_each_medoid_has_the_least_summed_distance_in_its_cluster():
    rng = np.random.default_rng(9)
    points = rng.normal(size=(90, 7))
    labels = rng.integers(0, 4, 90)
    found = medoids(points, labels)
    for c, row in enumerate(found):
        members = np.flatnonzero(labels == c)
        assert labels[row] == c
        summed = cdist(points[members], points[members]).sum(axis=1)
        assert summed[members.tolist().index(row)] == pytest.approx(summed.min())


def test_the_medoid_of_a_symmetric_cluster_is_its_centre_point():
    ring = [[np.cos(a), np.sin(a)] for a in np.linspace(0, 2 * np.pi, 8, endpoint=False)]
    points = np.array([*ring, [0.0, 0.0], *(np.array(ring) + 10), [10.0, 10.0]])
    assert medoids(points, np.repeat([0, 1], 9)).tolist() == [8, 17]


def test_medoids_in_blocks_equal_medoids_in_one_piece(monkeypatch):
    rng = np.random.default_rng(10)
    points, labels = rng.normal(size=(70, 5)), rng.integers(0, 3, 70)
    whole = medoids(points, labels)
    monkeypatch.setattr(clustering, "BLOCK", 8)
    assert np.array_equal(medoids(points, labels), whole)


@pytest.mark.parametrize("labels, message", [
    (np.array([0, 0, 2, 2]), "no members"),
    (np.array([0, 1, 1]), "one non-negative int per row"),
    (np.array([0, -1, 1, 1]), "one non-negative int per row"),
    (np.array([0.0, 1.0, 1.0, 0.0]), "one non-negative int per row"),
])
def test_labels_that_do_not_number_clusters_are_refused(labels, message):
    with pytest.raises(OptionError, match=message):
        medoids(np.zeros((4, 2)), labels)
