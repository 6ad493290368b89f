"""Samples of images with known inclusion probabilities: uniform, or focused on decision boundaries.

:func:`boundary_sample` stratifies the image set by (predicted class × region of the
embedding, k-means cells), allocates the sample to strata in proportion to their total size
measure ``1 + boost · boundary score`` (so strata near boundaries get more) with a floor so
that every stratum is represented, and draws within each stratum with probability
proportional to that size measure (systematic PPS on a random order, exact ``π_i``). The
inclusion probabilities are kept, so weighting by ``1/π`` gives estimates without bias;
:mod:`odinlab.sampling.queries` does that and estimates the error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import polars as pl

from odinlab.errors import OptionError, SampleSizeError
from odinlab.sampling.boundary import boundary_scores, embedding_coordinates
from odinlab.sampling.estimators import Design
from odinlab.store.layout import digest
from odinlab.store.selection import ImageSelection, Selection


@dataclass(frozen=True, eq=False)
class Sample:
    """Sampled image ids with their inclusion probabilities ``pi`` and strata.

    ``image_ids`` are the sampled images (a polars Series of ids, in population order) and
    ``selection`` the same images as a :class:`~odinlab.store.selection.Selection`, ready to pass
    as ``images=`` anywhere. ``population_ids`` is the image set the sample was drawn from and
    ``population_pi`` the inclusion probability of each of its images (they sum to the sample
    size); ``stratum_size`` gives, per sampled image, the number of images of its stratum in
    that set. ``key`` names the sample (a digest of ids and probabilities).

    >>> s = uniform_sample(store, None, 100, "val", seed=0)
    >>> len(s), round(float(s.population_pi.sum()), 6), round(float(s.weights.sum()), 6)
    (100, 100.0, 269.0)
    """

    model_id: str | None
    image_ids: pl.Series
    pi: np.ndarray
    stratum: np.ndarray
    stratum_size: np.ndarray
    population_ids: pl.Series
    population_pi: np.ndarray
    design: str
    params: dict = field(default_factory=dict)
    selection: Selection | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return self.image_ids.len()

    @property
    def population(self) -> int:
        """Number of images in the set the sample was drawn from."""
        return self.population_ids.len()

    @property
    def weights(self) -> np.ndarray:
        """``1/π``: how many images of the set each sampled image stands for."""
        return 1.0 / self.pi

    @cached_property  # every query names the sample's stored rows by it: hash the ids once
    def key(self) -> str:
        """A digest naming this sample (its ids and probabilities)."""
        return digest({"ids": self.image_ids.to_list(), "pi": np.round(self.pi, 12).tolist()})

    def estimation_design(self) -> Design:
        """The :class:`~odinlab.sampling.estimators.Design` that estimators weight by."""
        return Design.from_sample(self.pi, self.stratum, self.stratum_size)

    def frame(self) -> pl.DataFrame:
        """image_id, pi, weight, stratum and stratum_size of every sampled image.

        >>> uniform_sample(store, None, 5, "val").frame().columns
        ['image_id', 'pi', 'weight', 'stratum', 'stratum_size']
        """
        return pl.DataFrame({"image_id": self.image_ids, "pi": self.pi, "weight": self.weights,
                             "stratum": self.stratum, "stratum_size": self.stratum_size})

    def __repr__(self) -> str:
        return (f"<Sample {self.design}: {len(self)} of {self.population} images, "
                f"{len(np.unique(self.stratum))} strata>")


def sample_size(size: float, population: int) -> int:
    """An int size, or a fraction of ``population``; refuses sizes the set cannot give.

    >>> sample_size(0.1, 2000), sample_size(50, 2000)
    (200, 50)
    """
    if isinstance(size, bool) or not isinstance(size, int | float | np.integer | np.floating):
        raise SampleSizeError(f"size must be a number of images or a fraction in (0, 1], not {size!r}.")
    n = int(np.rint(size * population)) if isinstance(size, float | np.floating) and size <= 1 else int(size)
    if isinstance(size, float | np.floating) and size > 1 and size != int(size):
        raise SampleSizeError(f"size {size!r} is neither a fraction in (0, 1] nor a whole number of images.")
    if n > population:
        raise SampleSizeError(f"Sample size {n} is larger than the image set ({population} images); "
                              f"ask for at most {population}, or a fraction such as 0.1.")
    if n < 1:
        raise SampleSizeError(f"Sample size {size!r} gives no image of the {population}; ask for at least 1.")
    return n


def allocate(size: int, measure: np.ndarray, counts: np.ndarray, floor: int = 2) -> np.ndarray:
    """Integer sizes per stratum ∝ ``measure`` (total size measure), each in [min(floor, N_h), N_h].

    >>> allocate(10, np.array([1.0, 1.0, 8.0]), np.array([50, 50, 50]), floor=2).tolist()
    [2, 2, 6]
    """
    counts = np.asarray(counts, int)
    low = np.minimum(floor, counts)
    if low.sum() > size:
        raise SampleSizeError(
            f"A sample of {size} cannot represent all {len(counts)} strata with at least {floor} images each "
            f"(needs {int(low.sum())}); ask for a larger sample, fewer regions, or floor=1.")
    measure = np.asarray(measure, float)
    lo, hi = 0.0, 1.0
    while np.clip(hi * measure, low, counts).sum() < size:
        hi *= 2
    for _ in range(100):  # bisection on the scale so that Σ clip(c·measure) = size
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.clip(mid * measure, low, counts).sum() < size else (lo, mid)
    ideal = np.clip(hi * measure, low, counts)
    n = np.floor(ideal).astype(int)
    n = np.maximum(n, low)
    short = size - n.sum()
    if short > 0:  # largest remainders first, where there is room
        order = np.argsort(-(ideal - n), kind="stable")
        for h in order:
            if short == 0:
                break
            if n[h] < counts[h]:
                n[h] += 1
                short -= 1
    while short < 0:  # rounding up the floors overshot: take from the largest above their floor
        h = int(np.argmax(np.where(n > low, n - ideal, -np.inf)))
        n[h] -= 1
        short += 1
    return n


def pps_probabilities(n: int, measure: np.ndarray) -> np.ndarray:
    """Inclusion probabilities ∝ ``measure`` summing to ``n``, capped at 1 (capped ones taken).

    >>> pps_probabilities(2, np.array([1.0, 1.0, 10.0])).round(3).tolist()
    [0.5, 0.5, 1.0]
    """
    pi = np.zeros(len(measure))
    free = np.ones(len(measure), bool)
    remaining = n
    while remaining > 0:
        pi[free] = remaining * measure[free] / measure[free].sum()
        over = free & (pi >= 1)
        if not over.any():
            break
        pi[over] = 1.0
        free &= ~over
        remaining = n - int(np.rint(pi[~free].sum()))
        if not free.any():
            break
    return np.minimum(pi, 1.0)


def systematic(pi: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Positions drawn by systematic sampling on a random order: each included with prob ``pi``.

    >>> systematic(np.array([1.0, 0.5, 0.5]), np.random.default_rng(0)).size
    2
    """
    order = rng.permutation(len(pi))
    edges = np.concatenate([[0.0], np.cumsum(pi[order])])
    n = int(np.rint(edges[-1]))
    points = rng.uniform() + np.arange(n)
    picked = np.searchsorted(edges, points, side="right") - 1
    return np.sort(order[np.clip(picked, 0, len(pi) - 1)])


def draw(size: int, measure: np.ndarray, strata: np.ndarray, *, floor: int = 2, seed: int = 0):
    """Stratified PPS draw: positions, π of every image, stratum size and code of each drawn one.

    >>> pos, pi, n_h, h = draw(4, np.ones(8), np.array([0, 0, 0, 0, 1, 1, 1, 1]), seed=0)
    >>> pi[pos].tolist(), n_h.tolist(), h.tolist()
    ([0.5, 0.5, 0.5, 0.5], [4, 4, 4, 4], [0, 0, 1, 1])
    """
    strata = np.asarray(strata)
    codes, strata = np.unique(strata, return_inverse=True)
    counts = np.bincount(strata, minlength=len(codes))
    totals = np.bincount(strata, weights=measure, minlength=len(codes))
    n_h = allocate(size, totals, counts, floor)
    rng = np.random.default_rng(seed)
    pi_all = np.zeros(len(measure))
    positions = []
    for h in range(len(codes)):
        members = np.flatnonzero(strata == h)
        if n_h[h] == 0:
            continue
        pi = pps_probabilities(int(n_h[h]), measure[members])
        pi_all[members] = pi
        positions.append(members[systematic(pi, rng)])
    positions = np.sort(np.concatenate(positions)) if positions else np.zeros(0, int)
    return positions, pi_all, counts[strata[positions]], strata[positions]


def uniform_sample(store, model, size: float, images: ImageSelection = None, *, seed: int = 0) -> Sample:
    """A simple random sample (without replacement) of ``size`` images (or a fraction).

    ``model`` names the version the sample is meant for (kept in ``model_id``); a uniform
    sample needs none, so it may be None.

    >>> uniform_sample(store, None, 0.1, "val", seed=1).pi[:2].round(3).tolist()
    [0.1, 0.1]
    """
    model_id = None if model is None else store.model(model).model_id
    population = store.select(images)
    n_all = len(population)
    n = sample_size(size, n_all)
    positions = np.sort(np.random.default_rng(seed).choice(n_all, n, replace=False))
    return Sample(model_id, population["image_id"].gather(positions), np.full(n, n / n_all),
                  np.zeros(n, np.int64), np.full(n, n_all), population["image_id"], np.full(n_all, n / n_all),
                  "uniform", {"size": n, "seed": seed}, population[positions])


def boundary_sample(store, model, size: float, images: ImageSelection = None, *, embedding=None,
                    scores: pl.DataFrame | None = None, regions: int = 4, boost: float = 1.0,
                    stratify: tuple[str, ...] = ("label", "predicted"), floor: int = 2, k: int = 15,
                    margin_weight: float = 0.5, seed: int = 0) -> Sample:
    """A sample that over-weights images near decision boundaries, every stratum represented.

    Strata are (label × predicted class × embedding region: ``regions`` k-means cells of the
    embedding; one region without an embedding); ``stratify`` picks the class columns. Every
    cell of the confusion matrix is thus a stratum of its own: the images on the wrong side of
    a boundary are always represented. Each image's size measure is ``1 + boost · score``
    (:func:`~odinlab.sampling.boundary.boundary_scores`, or ``scores`` given); strata get
    sample sizes ∝ their total measure, at least ``floor`` images each, and images within a
    stratum are drawn with probability ∝ their measure. ``boost=0`` gives a stratified sample
    with proportional allocation; large boosts make the weights unequal, which costs precision
    on questions about whole classes (bench/sampling.py). Deterministic for a ``seed``.

    >>> _ = store.materialize(net, images="val", progress=False)
    >>> s = boundary_sample(store, "cnn@1", 60, "val", seed=0)
    >>> len(s), round(float(s.population_pi.sum()), 6), s.design
    (60, 60.0, 'boundary')
    """
    if boost < 0:
        raise SampleSizeError(f"boost must be >= 0 (0: no over-weighting), got {boost!r}.")
    for column in stratify:
        if column not in ("label", "predicted"):
            raise OptionError(f"stratify takes 'label' and/or 'predicted', not {column!r}.")
    record, population = store.model(model), store.select(images)  # resolved once, then passed on
    if scores is None:
        scores = boundary_scores(store, record, population, embedding=embedding, k=k, margin_weight=margin_weight)
    ids = population["image_id"]
    if scores.height != len(population) or not scores["image_id"].equals(ids):
        raise SampleSizeError("scores must have one row per selected image, in selection order; "
                              "compute them with boundary_scores(store, model, images).")
    n = sample_size(size, len(population))
    strata = _regions(embedding_coordinates(embedding, population), len(population), regions, seed)
    for column in stratify:
        codes = scores[column].fill_null(-1).to_numpy().astype(np.int64) + 1
        strata = strata * (int(codes.max()) + 1) + codes
    measure = 1.0 + boost * np.clip(scores["score"].to_numpy().astype(float), 0, 1)
    positions, pi_all, stratum_size, stratum = draw(n, measure, strata, floor=floor, seed=seed)
    params = {"size": n, "seed": seed, "regions": regions, "boost": boost, "stratify": list(stratify),
              "floor": floor, "k": k, "margin_weight": margin_weight}
    return Sample(record.model_id, ids.gather(positions), pi_all[positions], stratum, stratum_size, ids, pi_all,
                  "boundary", params, population[positions])


def _regions(coords: np.ndarray | None, n: int, regions: int, seed: int) -> np.ndarray:
    """k-means cell of each of the ``n`` images in the embedding (all 0 without one)."""
    if coords is None or regions <= 1:
        return np.zeros(n, np.int64)
    from sklearn.cluster import KMeans

    found = KMeans(n_clusters=min(regions, len(coords)), n_init=3, random_state=seed).fit_predict(coords)
    return found.astype(np.int64)


def sample_selection(store, sample: Sample) -> Selection:
    """The sampled images as a :class:`~odinlab.store.selection.Selection` of ``store``.

    The sample's own selection when it was drawn from this store, else the ids selected again.

    >>> s = uniform_sample(store, None, 5, "val")
    >>> sample_selection(store, s) is s.selection
    True
    """
    if sample.selection is not None and sample.selection.store_url == store.url:
        return sample.selection
    return store.select(sample.image_ids)
