"""Design-based estimators: weighted means, totals and AUCs with their standard errors.

Pure numpy, no store: the query functions in :mod:`odinlab.sampling.queries` feed them the
rows of a :class:`~odinlab.sampling.sample.Sample` (or every image, for exact answers).

A :class:`Design` holds what variance estimation needs: the weight ``1/π`` of every sampled
row, its variance group (a stratum, with rows drawn with certainty split off) and each group's
finite-population correction. Totals are Horvitz–Thompson; means and AUCs are ratios of
totals (Hájek), so their variance comes from the linearization ``z`` of the statistic:
``V(Σ w z)`` with the stratified with-replacement formula times ``1 − n_h/N_h``, which is exact
for simple random sampling and a close (slightly conservative) approximation for the
probability-proportional-to-size draws within strata.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.stats import norm

from odinlab.errors import OptionError


@dataclass(frozen=True, eq=False)
class Design:
    """Weights and variance groups of the rows an estimate is computed from.

    >>> d = Design.full_scan(4)
    >>> d.weights.tolist(), d.exact
    ([1.0, 1.0, 1.0, 1.0], True)
    """

    weights: np.ndarray  # (n,) 1/π
    group: np.ndarray  # (n,) variance group code, 0..G-1
    fpc: np.ndarray  # (G,) finite-population correction 1 - n_g/N_g (0 for take-all groups)
    exact: bool = False  # every image of the set: no sampling error

    @classmethod
    def full_scan(cls, n: int) -> Design:
        """The design of a full scan: unit weights, no sampling variance."""
        return cls(np.ones(n), np.zeros(n, np.int64), np.zeros(1), exact=True)

    @classmethod
    def from_sample(cls, pi: np.ndarray, stratum: np.ndarray, stratum_size: np.ndarray) -> Design:
        """Variance groups from strata: rows drawn with certainty (π = 1) form their own groups.

        >>> d = Design.from_sample(np.array([0.5, 0.5, 1.0]), np.array([0, 0, 0]), np.array([5, 5, 5]))
        >>> d.group.tolist(), d.fpc.round(2).tolist()
        ([0, 0, 1], [0.5, 0.0])
        """
        pi = np.asarray(pi, float)
        certain = pi >= 1 - 1e-9
        keys = np.asarray(stratum, np.int64) * 2 + certain
        uniq, group = np.unique(keys, return_inverse=True)
        n_g = np.bincount(group, minlength=len(uniq)).astype(float)
        # population of a group: the stratum minus its certainty rows (which are all sampled)
        certain_in = np.bincount(np.asarray(stratum)[certain], minlength=int(np.max(stratum)) + 1)
        fpc = np.zeros(len(uniq))
        for g, key in enumerate(uniq):
            h, is_certain = divmod(int(key), 2)
            if not is_certain:
                population = float(stratum_size[group == g][0]) - certain_in[h]
                fpc[g] = max(0.0, 1.0 - n_g[g] / population) if population > 0 else 0.0
        return cls(1.0 / pi, group, fpc)

    def total_variance(self, z: np.ndarray) -> np.ndarray:
        """Estimated variance of the HT total ``Σ w z`` (``z`` is (n,) or (n, k)).

        >>> d = Design(np.full(4, 2.0), np.zeros(4, np.int64), np.array([0.5]))
        >>> round(float(d.total_variance(np.array([1.0, 2.0, 3.0, 4.0]))), 6)
        13.333333
        """
        if self.exact:
            return np.zeros(z.shape[1:])
        wz = z * self.weights.reshape(-1, *([1] * (z.ndim - 1)))
        flat = wz.reshape(len(wz), -1)
        n_groups = len(self.fpc)
        one_hot = sparse.csr_matrix((np.ones(len(self.group)), (self.group, np.arange(len(self.group)))),
                                    shape=(n_groups, len(self.group)))
        n_g = np.bincount(self.group, minlength=n_groups).astype(float)
        sums = one_hot @ flat
        squares = one_hot @ (flat * flat)
        with np.errstate(invalid="ignore", divide="ignore"):
            within = squares - sums**2 / n_g[:, None]  # Σ (wz - mean)^2 per group
            factor = np.where(n_g > 1, n_g / (n_g - 1), 0.0) * self.fpc
        variance = (factor[:, None] * np.maximum(within, 0)).sum(axis=0)
        return variance.reshape(z.shape[1:])


def z_value(level: float) -> float:
    """The two-sided normal quantile of a confidence ``level``.

    >>> round(z_value(0.95), 3)
    1.96
    """
    if not 0 < level < 1:
        raise OptionError(f"level must be in (0, 1), e.g. 0.95; got {level!r}.")
    return float(norm.ppf(0.5 + level / 2))


def domain_means(y: np.ndarray, domain: np.ndarray, n_domains: int, design: Design):
    """Hájek means of ``y`` (n, k) within each domain code 0..D-1: (estimate, se), both (D, k).

    >>> est, se = domain_means(np.array([[1.0], [3.0], [5.0]]), np.array([0, 0, 1]), 2, Design.full_scan(3))
    >>> est.ravel().tolist(), se.ravel().tolist()
    ([2.0, 5.0], [0.0, 0.0])
    """
    y = np.asarray(y, float).reshape(len(y), -1)
    w = design.weights
    estimates = np.full((n_domains, y.shape[1]), np.nan)
    ses = np.full((n_domains, y.shape[1]), np.nan)
    for d in range(n_domains):
        member = domain == d
        size = w[member].sum()
        if size == 0:
            continue
        mean = (w[member, None] * y[member]).sum(axis=0) / size
        estimates[d] = mean
        z = np.where(member[:, None], (y - mean) / size, 0.0)
        ses[d] = np.sqrt(design.total_variance(z))
    return estimates, ses


def totals(indicators: np.ndarray, design: Design):
    """Horvitz–Thompson totals of the columns of ``indicators`` (n, k): (estimate, se).

    >>> est, se = totals(np.array([[1, 0], [1, 1]]), Design.full_scan(2))
    >>> est.tolist(), se.tolist()
    ([2.0, 1.0], [0.0, 0.0])
    """
    x = np.asarray(indicators, float)
    return (design.weights[:, None] * x).sum(axis=0), np.sqrt(design.total_variance(x))


def domain_auc(x: np.ndarray, positive: np.ndarray, design: Design, valid: np.ndarray | None = None):
    """Weighted one-vs-rest ROC AUC of every column of ``x`` (n, U): (auc, se), both (U,).

    The AUC is the weighted share of (positive, negative) pairs ordered correctly (ties count
    one half), an unbiased-in-the-limit ratio of HT double sums; its standard error is from the
    DeLong-style linearization ``z_i = (F_neg(x_i) − AUC)/W_pos`` for positives and
    ``(G_pos(x_i) − AUC)/W_neg`` for negatives.

    >>> auc, se = domain_auc(np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([0, 0, 1, 1], bool), Design.full_scan(4))
    >>> auc.tolist()
    [1.0]
    """
    x = np.asarray(x, np.float32).reshape(len(x), -1)
    w = design.weights
    valid = np.ones(len(x), bool) if valid is None else valid
    pos = (positive & valid).astype(float) * w
    neg = (~positive & valid).astype(float) * w
    w_pos, w_neg = pos.sum(), neg.sum()
    if w_pos == 0 or w_neg == 0:
        return np.full(x.shape[1], np.nan), np.full(x.shape[1], np.nan)
    ties = TieIndex(x)
    below_neg, equal_neg = ties.cumulative(neg)
    below_pos, equal_pos = ties.cumulative(pos)
    f_neg = (below_neg + 0.5 * equal_neg) / w_neg  # share of negatives under x_i
    g_pos = (w_pos - below_pos - 0.5 * equal_pos) / w_pos  # share of positives above x_i
    auc = (pos[:, None] * f_neg).sum(axis=0) / w_pos
    if design.exact:
        return auc, np.zeros_like(auc)
    is_pos, is_neg = (positive & valid)[:, None], (~positive & valid)[:, None]
    z = np.where(is_pos, (f_neg - auc) / w_pos, 0.0) + np.where(is_neg, (g_pos - auc) / w_neg, 0.0)
    return auc, np.sqrt(design.total_variance(z))


class TieIndex:
    """Column-wise sort of ``x`` (n, U) with tie groups, for weighted ranks of many weightings.

    >>> below, equal = TieIndex(np.array([[1.0], [0.0], [1.0]])).cumulative(np.array([1.0, 2.0, 4.0]))
    >>> below.ravel().tolist(), equal.ravel().tolist()
    ([2.0, 0.0, 2.0], [5.0, 2.0, 5.0])
    """

    def __init__(self, x: np.ndarray):
        n = len(x)
        self.order = np.argsort(x, axis=0, kind="stable")
        xs = np.take_along_axis(x, self.order, axis=0)
        index = np.arange(n)[:, None]
        starts = np.ones_like(xs, bool)
        starts[1:] = xs[1:] != xs[:-1]
        self.first = np.maximum.accumulate(np.where(starts, index, 0), axis=0)  # tie group start
        ends = np.ones_like(xs, bool)
        ends[:-1] = xs[1:] != xs[:-1]
        last = np.where(ends, index, n - 1)
        self.last = np.minimum.accumulate(last[::-1], axis=0)[::-1]  # tie group end (inclusive)
        self.inverse = np.empty_like(self.order)
        np.put_along_axis(self.inverse, self.order, np.broadcast_to(index, self.order.shape), axis=0)

    def cumulative(self, a: np.ndarray):
        """For every row and column: Σ a over rows with a smaller value, and over ties (self included)."""
        sorted_a = a[self.order]
        c = np.zeros((len(a) + 1, self.order.shape[1]))
        np.cumsum(sorted_a, axis=0, out=c[1:])
        below = np.take_along_axis(c, self.first, axis=0)
        upto = np.take_along_axis(c, self.last + 1, axis=0)
        below = np.take_along_axis(below, self.inverse, axis=0)
        equal = np.take_along_axis(upto, self.inverse, axis=0) - below
        return below, equal
