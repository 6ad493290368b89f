import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import odinlab
from odinlab.debug.error_analysis import confusion_matrix, per_class_metrics
from odinlab.debug.units import UnknownColumnError, unit_activations
from odinlab.errors import NotMaterializedError
from odinlab.sampling import (
    Design,
    UnknownValueError,
    boundary_sample,
    class_accuracy,
    class_means,
    confusion_counts,
    sample_activations,
    top_units,
    uniform_sample,
)
from odinlab.sampling.estimators import domain_auc, domain_means, totals, z_value
from odinlab.sampling.sample import draw

# -- coverage on synthetic data where the truth is known --------------------------------------

def _population(seed=0, n=4000):
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, n)
    x = rng.normal(1.5 * label, 1.0)
    y = np.column_stack([x, np.exp(0.5 * x) + rng.normal(0, 0.3, n), rng.normal(0, 1, n) + 0.2 * label])
    score = np.exp(-((x - 0.75) ** 2))  # highest at the boundary between the two classes
    predicted = (x > 0.75).astype(int)
    region = np.digitize(rng.uniform(size=n), [0.25, 0.5, 0.75])
    return label, y, score, predicted * 4 + region


def _sample_design(positions, pi_all, stratum, stratum_size):
    return Design.from_sample(pi_all[positions], stratum, stratum_size)


@pytest.mark.parametrize("design", ["boundary", "uniform"])
def test_intervals_cover_the_truth_at_the_nominal_rate(design):
    label, y, score, strata = _population()
    n = len(label)
    truth_means, _ = domain_means(y, label, 2, Design.full_scan(n))
    truth_auc, _ = domain_auc(y, label == 1, Design.full_scan(n))
    truth_totals = np.bincount(label * 2 + strata // 4, minlength=4).astype(float)
    indicators = (label * 2 + strata // 4)[:, None] == np.arange(4)
    measure = 1 + 4 * score if design == "boundary" else np.ones(n)
    hits = {0.95: [], 0.90: []}
    errors = []
    for rep in range(200):
        if design == "boundary":
            positions, pi_all, size_h, stratum = draw(200, measure, strata, seed=rep)
        else:  # simple random sample: one stratum
            positions, pi_all, size_h, stratum = draw(200, measure, np.zeros(n, int), seed=rep)
        d = _sample_design(positions, pi_all, stratum, size_h)
        means, se_m = domain_means(y[positions], label[positions], 2, d)
        auc, se_a = domain_auc(y[positions], label[positions] == 1, d)
        tot, se_t = totals(indicators[positions], d)
        estimates = np.concatenate([means.ravel(), auc, tot])
        ses = np.concatenate([se_m.ravel(), se_a, se_t])
        truth = np.concatenate([truth_means.ravel(), truth_auc, truth_totals])
        errors.append(estimates - truth)
        for level, found in hits.items():
            found.append(np.abs(estimates - truth) <= z_value(level) * ses)
    coverage = {level: np.mean(h) for level, h in hits.items()}
    assert 0.92 <= coverage[0.95] <= 0.985, coverage
    assert 0.86 <= coverage[0.90] <= 0.95, coverage
    # no visible bias: the mean error is small against the spread
    errors = np.array(errors)
    assert (np.abs(errors.mean(axis=0)) < 0.25 * errors.std(axis=0) + 1e-9).all()


def test_weighted_auc_equals_sklearn_exactly_and_with_ties():
    rng = np.random.default_rng(1)
    x = np.round(rng.normal(size=(300, 4)), 1)  # many ties
    x[:50, 0] = 0.0
    positive = rng.uniform(size=300) < 0.3
    auc, se = domain_auc(x, positive, Design.full_scan(300))
    np.testing.assert_allclose(auc, [roc_auc_score(positive, x[:, j]) for j in range(4)], atol=1e-6)
    assert (se == 0).all()
    # integer weights = repeated rows
    w = rng.integers(1, 4, 300)
    weighted, _ = domain_auc(x, positive, Design(w.astype(float), np.zeros(300, int), np.zeros(1)))
    repeated = np.repeat(np.arange(300), w)
    np.testing.assert_allclose(weighted, [roc_auc_score(positive[repeated], x[repeated, j]) for j in range(4)],
                               atol=1e-6)


# -- the store-level queries --------------------------------------------------------------------

def test_exact_mode_equals_a_direct_computation(digits_store):
    store, _ = digits_store
    acts = unit_activations(store, "cnn@1", "head.fc1", "val")
    labels = store.select("val")["label"].to_numpy()
    means = class_means(store, "cnn@1", "head.fc1", images="val")
    direct = np.stack([acts[labels == c].mean(0) for c in range(10)])
    np.testing.assert_allclose(means["estimate"].to_numpy().reshape(10, -1), direct, rtol=1e-5, atol=1e-6)
    assert (means["se"] == 0).all() and means["value"][0] == "0"

    top = top_units(store, "cnn@1", "head.fc1", value=3, k=64, images="val")
    aucs = np.array([roc_auc_score(labels == 3, acts[:, u]) for u in top["unit"]])
    np.testing.assert_allclose(top["auc"].to_numpy(), aucs, atol=1e-6)
    assert top["score"].is_sorted(descending=True)

    accuracy = class_accuracy(store, "cnn@1", images="val")
    np.testing.assert_allclose(accuracy["accuracy"].to_numpy(), per_class_metrics(store, "cnn@1", "val")["recall"].to_numpy())
    counts = confusion_counts(store, "cnn@1", images="val")
    np.testing.assert_allclose(counts["count"].to_numpy().reshape(10, 10), confusion_matrix(store, "cnn@1", "val"))


def test_sampled_answers_are_close_with_error_bars(digits_store):
    store, _ = digits_store
    coords = store.activations("cnn@1", "head.fc1")[:, :2]
    s = boundary_sample(store, "cnn@1", 0.3, embedding=coords, regions=2, seed=0)
    exact = class_accuracy(store, "cnn@1")
    approx = class_accuracy(store, "cnn@1", sample=s)
    assert (approx["se"] > 0).all()
    inside = (exact["accuracy"] >= approx["lower"] - 1e-9) & (exact["accuracy"] <= approx["upper"] + 1e-9)
    assert inside.mean() >= 0.7
    counts = confusion_counts(store, "cnn@1", sample=s)
    assert abs(counts["count"].sum() - 1797) < 100
    means = class_means(store, "cnn@1", "head.fc1", sample=s, by="predicted")
    assert means.height == 640 and (means["lower"] <= means["upper"]).all()


def test_sample_rows_are_kept_compactly_and_read_back(digits_store, monkeypatch):
    store, _ = digits_store
    s = uniform_sample(store, 100, seed=11, model_id="cnn@1")
    first = sample_activations(store, "cnn@1", "head.fc1", s)
    calls = []
    original = store.activations
    monkeypatch.setattr(store, "activations", lambda *a, **k: calls.append(1) or original(*a, **k))
    again = top_units(store, "cnn@1", "head.fc1", k=3, sample=s)
    assert calls == [] and again.height == 30
    np.testing.assert_array_equal(sample_activations(store, "cnn@1", "head.fc1", s), first)


def test_query_errors(digits_store):
    store, _ = digits_store
    s = uniform_sample(store, 50, "val", seed=0)
    with pytest.raises(UnknownColumnError, match="Unknown column 'colour'"):
        top_units(store, "cnn@1", "head.fc1", column="colour", images="val")
    with pytest.raises(UnknownValueError, match="Values: 0, 1"):
        top_units(store, "cnn@1", "head.fc1", value="eleven", images="val")
    with pytest.raises(UnknownValueError):
        top_units(store, "cnn@1", "head.fc1", value=12, sample=s)
    with pytest.raises(ValueError, match="not both"):
        class_means(store, "cnn@1", "head.fc1", sample=s, images="val")
    reopened = odinlab.open_store(store.url)  # no module for cnn@1 in this session
    with pytest.raises(NotMaterializedError, match="pass model="):
        class_means(reopened, "cnn@1", "features.conv1", sample=s)
    with pytest.raises(NotMaterializedError):
        top_units(reopened, "cnn@1", "features.conv1", images="val")


def test_metadata_column(digits_store):
    store, _ = digits_store
    top = top_units(store, "cnn@1", "head.fc1", column="split", k=2)
    assert top["value"].to_list() == ["test", "test", "train", "train", "val", "val"]
    means = class_means(store, "cnn@1", "head.fc1", by="split")
    assert means["n"].unique().sort().to_list() == [269, 270, 1258]
    with pytest.raises(UnknownColumnError, match="Bin it first"):
        top_units(store, "cnn@1", "head.fc1", column="ink")
