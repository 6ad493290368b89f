import numpy as np
import polars as pl
import pytest
from sklearn.metrics import confusion_matrix, roc_auc_score

import odinlab
from odinlab.errors import (
    NotMaterializedError,
    OptionError,
    UnknownColumnError,
    UnknownValueError,
)
from odinlab.sampling import (
    Design,
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
from odinlab.store.selection import Selection

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
    acts = store.activations("cnn@1", "head.fc1", "val").values.astype(np.float64)
    labels = store.select("val").labels
    means = class_means(store, "cnn@1", "head.fc1", "val")
    direct = np.stack([acts[labels == c].mean(0) for c in range(10)])
    np.testing.assert_allclose(means["estimate"].to_numpy().reshape(10, -1), direct, rtol=1e-5, atol=1e-6)
    assert (means["se"] == 0).all()
    assert means.columns[:3] == ["label", "label_name", "unit"]
    assert means["label"][0] == 0 and means["label_name"][0] == "0"

    top = top_units(store, "cnn@1", "head.fc1", "val", value=3, k=64)
    aucs = np.array([roc_auc_score(labels == 3, acts[:, u]) for u in top["unit"]])
    np.testing.assert_allclose(top["auc"].to_numpy(), aucs, atol=1e-6)
    assert top["score"].is_sorted(descending=True)
    assert top["label"].unique().to_list() == [3] and top["label_name"].unique().to_list() == ["3"]
    every = top_units(store, "cnn@1", "head.fc1", "val", value=3, k=None)  # k=None: every unit, ranked
    assert every.height == acts.shape[1] and sorted(every["unit"].to_list()) == list(range(acts.shape[1]))
    assert every.head(top.height)["unit"].to_list() == top["unit"].to_list()

    preds = store.predictions("cnn@1", "val")
    predicted = preds["predicted"].to_numpy()
    accuracy = class_accuracy(store, "cnn@1", "val")
    recall = [(predicted[labels == c] == c).mean() for c in range(10)]
    np.testing.assert_allclose(accuracy["accuracy"].to_numpy(), recall)
    assert accuracy["n"].to_list() == np.bincount(labels, minlength=10).tolist()
    counts = confusion_counts(store, "cnn@1", "val")
    assert counts.columns[:4] == ["label", "label_name", "predicted", "predicted_name"]
    np.testing.assert_allclose(counts["count"].to_numpy().reshape(10, 10),
                               confusion_matrix(labels, predicted, labels=range(10)))


def test_sampled_answers_are_close_with_error_bars(digits_store):
    store, _ = digits_store
    coords = store.activations("cnn@1", "head.fc1").values[:, :2]
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
    assert means.columns[:2] == ["predicted", "predicted_name"]


def test_sample_rows_are_kept_compactly_and_read_back(digits_store, monkeypatch):
    store, _ = digits_store
    s = uniform_sample(store, "cnn@1", 100, seed=11)
    first = sample_activations(store, "cnn@1", "head.fc1", s)
    assert first.dims == ("image_id", "unit") and first.image_id.values.tolist() == s.image_ids.to_list()
    copy = store.results.find_row_array("cnn@1", "samples", s.key, "head.fc1", "full")
    assert copy is not None and copy.values.shape == (100, 64)
    calls = []
    original = store.activations
    monkeypatch.setattr(store, "activations", lambda *a, **k: calls.append(1) or original(*a, **k))
    again = top_units(store, "cnn@1", "head.fc1", k=3, sample=s)
    assert calls == [] and again.height == 30
    np.testing.assert_array_equal(sample_activations(store, "cnn@1", "head.fc1", s).values, first.values)


def test_query_errors(digits_store):
    store, _ = digits_store
    s = uniform_sample(store, None, 50, "val", seed=0)
    with pytest.raises(UnknownColumnError, match="Unknown column 'colour'"):
        top_units(store, "cnn@1", "head.fc1", "val", by="colour")
    with pytest.raises(UnknownValueError, match="Values: 0, 1"):
        top_units(store, "cnn@1", "head.fc1", "val", value="eleven")
    with pytest.raises(UnknownValueError):
        top_units(store, "cnn@1", "head.fc1", value=12, sample=s)
    with pytest.raises(OptionError, match="not both"):
        class_means(store, "cnn@1", "head.fc1", "val", sample=s)
    with pytest.raises(OptionError, match="must be a Sample"):
        class_accuracy(store, "cnn@1", sample=["digits-0000"])
    with pytest.raises(OptionError, match="positive int"):
        top_units(store, "cnn@1", "head.fc1", "val", k=0)
    with pytest.raises(OptionError, match="level"):
        class_accuracy(store, "cnn@1", "val", level=95)
    reopened = odinlab.open_store(store.url)  # no module for cnn@1 in this session
    with pytest.raises(NotMaterializedError, match="pass module="):
        class_means(reopened, "cnn@1", "features.conv1", sample=s)
    with pytest.raises(NotMaterializedError):
        top_units(reopened, "cnn@1", "features.conv1", "val")


def test_metadata_column(digits_store):
    store, _ = digits_store
    top = top_units(store, "cnn@1", "head.fc1", by="split", k=2)
    assert top.columns[0] == "split"
    assert top["split"].to_list() == ["test", "test", "train", "train", "val", "val"]
    means = class_means(store, "cnn@1", "head.fc1", by="split")
    assert means["n"].unique().sort().to_list() == [269, 270, 1258]
    assert top_units(store, "cnn@1", "head.fc1", by="split", value="val", k=1)["split"].to_list() == ["val"]
    with pytest.raises(OptionError, match="Bin it first"):
        top_units(store, "cnn@1", "head.fc1", by="ink")


# -- one selection, resolved once, in any form ----------------------------------------------

def _selection_forms(store):
    ids = store.select("val").ids
    return {
        "split": "val",
        "ids": ids,
        "sql": "SELECT image_id FROM images WHERE split = 'val'",
        "selection": store.select("val"),
        "expression": pl.col("split") == "val",
        "series": pl.Series("image_id", ids),
    }


def test_every_selection_form_gives_the_same_answers(digits_store):
    store, net = digits_store
    expected = class_accuracy(store, "cnn@1", "val")
    counts = confusion_counts(store, "cnn@1", "val")
    means = class_means(store, "cnn@1", "head.fc1", "val")
    for form, images in _selection_forms(store).items():
        assert class_accuracy(store, "cnn@1", images).equals(expected), form
        assert confusion_counts(store, "cnn@1", images).equals(counts), form
        assert class_means(store, "cnn@1", "head.fc1", images).equals(means), form
    # and every form of model
    for model in ("cnn", store.model("cnn@1"), net):
        assert class_accuracy(store, model, "val").equals(expected)


def test_a_sample_s_selection_is_an_image_selection(digits_store):
    store, _ = digits_store
    s = uniform_sample(store, "cnn@1", 40, "val", seed=2)
    assert isinstance(s.selection, Selection) and s.selection.ids == s.image_ids.to_list()
    exact_on_sample = class_accuracy(store, "cnn@1", s.selection)
    assert exact_on_sample["n"].sum() == 40 and (exact_on_sample["se"] == 0).all()


class _CountSQL:
    """Counts the SQL statements the store executes (its selections go through polars' SQLContext)."""

    def __init__(self, monkeypatch):
        self.queries = []
        original = pl.SQLContext.execute

        def execute(context, query, *args, **kwargs):
            self.queries.append(query)
            return original(context, query, *args, **kwargs)

        monkeypatch.setattr(pl.SQLContext, "execute", execute)


def test_a_sql_selection_is_executed_once_per_call(digits_store, monkeypatch):
    store, _ = digits_store
    sql = "SELECT image_id FROM images WHERE split = 'val'"
    coords = store.activations("cnn@1", "head.fc1", "val").values[:, :2]
    counter = _CountSQL(monkeypatch)
    s = boundary_sample(store, "cnn@1", 150, sql, embedding=coords, regions=2, seed=0)
    assert counter.queries == [sql]
    assert s.population == 269
    emb = odinlab.sampling.Embedding(store, "cnn@1", "head.fc1", reducer="pca", progress=False).fit(sql)
    counter.queries.clear()
    boundary_sample(store, "cnn@1", 150, sql, embedding=emb, regions=2, seed=0)
    assert counter.queries == [sql]
    for query in (lambda: uniform_sample(store, "cnn@1", 30, sql),
                  lambda: class_accuracy(store, "cnn@1", sql),
                  lambda: confusion_counts(store, "cnn@1", sql),
                  lambda: class_means(store, "cnn@1", "head.fc1", sql, by="predicted"),
                  lambda: top_units(store, "cnn@1", "head.fc1", sql, by="predicted", k=2)):
        counter.queries.clear()
        query()
        assert counter.queries == [sql]
