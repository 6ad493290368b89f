import numpy as np
import polars as pl
import pytest

from odinlab.errors import OdinError, OptionError
from odinlab.sampling import (
    SampleSizeError,
    boundary_sample,
    boundary_scores,
    uniform_sample,
)
from odinlab.sampling.sample import allocate, draw, pps_probabilities


@pytest.fixture(scope="module")
def coords(digits_store):
    store, _ = digits_store
    return store.activations("cnn@1", "head.fc1").values[:, :2]  # a stand-in 2-D embedding of all images


def test_boundary_sample_is_stratified_and_probabilities_sum_to_the_size(digits_store, coords):
    store, _ = digits_store
    s = boundary_sample(store, "cnn@1", 600, embedding=coords, regions=4, boost=4, seed=0)
    assert len(s) == 600 and s.population == 1797
    assert abs(s.population_pi.sum() - 600) < 1e-6
    assert ((s.population_pi > 0) & (s.population_pi <= 1)).all()
    lookup = dict(zip(s.population_ids.to_list(), s.population_pi))
    np.testing.assert_allclose(s.pi, [lookup[i] for i in s.image_ids])
    # every stratum of the set (predicted class x region) is represented
    from sklearn.cluster import KMeans

    region = KMeans(n_clusters=4, n_init=3, random_state=0).fit_predict(coords)
    preds = store.predictions("cnn@1")
    strata = (preds["label"].to_numpy() * 10 + preds["predicted"].to_numpy()) * 4 + region
    drawn = set(strata[np.isin(s.population_ids.to_numpy(), s.image_ids.to_numpy())])
    assert drawn == set(strata)
    assert len(np.unique(s.stratum)) == len(set(strata))


def test_boundary_sample_over_weights_the_boundary(digits_store, coords):
    store, _ = digits_store
    scores = boundary_scores(store, "cnn@1", embedding=coords)
    s = boundary_sample(store, "cnn@1", 0.3, embedding=coords, scores=scores, regions=1, boost=4, seed=0)
    in_sample = scores.filter(pl.col("image_id").is_in(s.image_ids.implode()))
    assert in_sample["score"].mean() > scores["score"].mean()
    high, low = scores["score"].quantile(0.75), scores["score"].quantile(0.25)
    rate = lambda mask: s.population_pi[mask].mean()
    assert rate(scores["score"].to_numpy() >= high) > 1.5 * rate(scores["score"].to_numpy() <= low)
    # but estimates of the set's mean score stay unbiased when weighted by 1/pi
    weighted = (in_sample.sort("image_id")["score"].to_numpy() * s.frame().sort("image_id")["weight"].to_numpy()).sum()
    assert abs(weighted / 1797 - scores["score"].mean()) < 0.02


def test_deterministic_with_a_seed(digits_store, coords):
    store, _ = digits_store
    a = boundary_sample(store, "cnn@1", 300, embedding=coords, regions=1, seed=3)
    b = boundary_sample(store, "cnn@1", 300, embedding=coords, regions=1, seed=3)
    c = boundary_sample(store, "cnn@1", 300, embedding=coords, regions=1, seed=4)
    assert a.image_ids.equals(b.image_ids) and a.key == b.key
    assert not a.image_ids.equals(c.image_ids)
    assert uniform_sample(store, None, 50, seed=1).image_ids.equals(uniform_sample(store, None, 50, seed=1).image_ids)


def test_inclusion_frequencies_match_pi():
    """Over many draws each unit is drawn with its stated probability (the design is unbiased)."""
    rng = np.random.default_rng(0)
    measure = 1 + 4 * rng.uniform(size=60) ** 3
    strata = np.repeat([0, 1, 2], 20)
    counts = np.zeros(60)
    for seed in range(3000):
        positions, pi, _, _ = draw(12, measure, strata, seed=seed)
        counts[positions] += 1
    np.testing.assert_allclose(counts / 3000, pi, atol=0.035)
    assert abs(pi.sum() - 12) < 1e-9


def test_allocation_and_capping():
    assert allocate(10, np.array([1.0, 1.0, 8.0]), np.array([50, 50, 50])).sum() == 10
    assert allocate(10, np.array([1.0, 1.0, 100.0]), np.array([50, 50, 3])).tolist()[2] == 3  # capped at N_h
    pi = pps_probabilities(3, np.array([1.0, 1.0, 1.0, 50.0]))
    assert pi[3] == 1.0 and abs(pi.sum() - 3) < 1e-9


def test_sample_size_errors(digits_store, coords):
    store, _ = digits_store
    with pytest.raises(SampleSizeError, match="larger than the image set") as info:
        uniform_sample(store, None, 300, "val")
    assert isinstance(info.value, ValueError) and isinstance(info.value, OdinError)
    assert "269" in str(info.value)
    with pytest.raises(SampleSizeError, match="larger than the image set"):
        boundary_sample(store, "cnn@1", 5000, embedding=coords)
    with pytest.raises(SampleSizeError, match="at least 1"):
        uniform_sample(store, None, 0, "val")
    with pytest.raises(SampleSizeError, match="strata"):
        boundary_sample(store, "cnn@1", 30, embedding=coords, regions=8)
    with pytest.raises(SampleSizeError):
        uniform_sample(store, None, "ten", "val")
    whole = uniform_sample(store, None, 1.0, "val")
    assert len(whole) == 269 and (whole.pi == 1).all()


def test_uniform_sample_needs_no_model_and_records_one_given(digits_store):
    store, net = digits_store
    assert uniform_sample(store, None, 10, "val").model_id is None
    for model in ("cnn@1", "cnn", store.model("cnn@1"), net):
        s = uniform_sample(store, model, 10, "val", seed=5)
        assert s.model_id == "cnn@1"
    assert s.image_ids.equals(uniform_sample(store, None, 10, "val", seed=5).image_ids)
    assert set(s.image_ids) <= set(store.select("val").ids)
    assert s.selection.ids == s.image_ids.to_list() and s.frame()["image_id"].equals(s.image_ids)


def test_boundary_sample_takes_scores_for_the_same_images_only(digits_store, coords):
    store, _ = digits_store
    scores = boundary_scores(store, "cnn@1", "val")
    s = boundary_sample(store, "cnn@1", 100, "val", scores=scores, seed=0)
    assert s.model_id == "cnn@1" and s.population_ids.to_list() == store.select("val").ids
    with pytest.raises(SampleSizeError, match="one row per selected image"):
        boundary_sample(store, "cnn@1", 40, "test", scores=scores)
    with pytest.raises(OptionError, match="stratify"):
        boundary_sample(store, "cnn@1", 40, "val", stratify=("colour",))
