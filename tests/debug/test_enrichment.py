import numpy as np
import polars as pl
import pytest
from scipy.stats import false_discovery_control, fisher_exact, mannwhitneyu

from odinlab.debug.enrichment import SCHEMA, over_represented
from odinlab.errors import OptionError


def planted(seed=0, n=400, share=0.3):
    """A frame with a planted over-representation: the selected rows are mostly "archive" and
    brighter; "site" and "noise" are independent of the selection."""
    rng = np.random.default_rng(seed)
    mask = rng.random(n) < share
    source = np.where(rng.random(n) < np.where(mask, 0.7, 0.1), "archive", "camera")
    frame = pl.DataFrame({
        "image_id": [f"img-{i}" for i in range(n)],
        "source": source,
        "site": rng.choice(["north", "south", "east"], n),
        "brightness": rng.normal(0, 1, n) + np.where(mask, 0.8, 0.0),
        "noise": rng.normal(0, 1, n),
    })
    return frame, mask


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_planted_value_and_a_shifted_measurement_are_found_and_independent_columns_are_not(seed):
    frame, mask = planted(seed)
    found = over_represented(frame, mask)
    significant = found.filter(pl.col("significant"))
    assert set(zip(significant["column"], significant["value"])) == {("source", "archive"),
                                                                     ("brightness", "higher")}
    archive = found.filter((pl.col("column") == "source") & (pl.col("value") == "archive")).row(0, named=True)
    assert archive["p_adjusted"] < 1e-10 and archive["ratio"] > 3
    assert found.filter(pl.col("column").is_in(["site", "noise"]))["p_adjusted"].min() > 0.05


def test_counts_shares_and_statistics_are_those_of_the_tests_themselves():
    frame, mask = planted(3)
    found = over_represented(frame, mask)
    archive = found.filter((pl.col("column") == "source") & (pl.col("value") == "archive")).row(0, named=True)
    is_archive = (frame["source"] == "archive").to_numpy()
    n_in, n_out = int((is_archive & mask).sum()), int((is_archive & ~mask).sum())
    odds, p = fisher_exact([[n_in, mask.sum() - n_in], [n_out, (~mask).sum() - n_out]], alternative="greater")
    assert (archive["n_in"], archive["n_out"], archive["test"]) == (n_in, n_out, "fisher")
    assert archive["share_in"] == pytest.approx(n_in / mask.sum())
    assert archive["share_out"] == pytest.approx(n_out / (~mask).sum())
    assert archive["ratio"] == pytest.approx(archive["share_in"] / archive["share_out"])
    assert (archive["statistic"], archive["p_value"]) == (pytest.approx(odds), pytest.approx(p))
    bright = found.filter(pl.col("column") == "brightness").row(0, named=True)
    values = frame["brightness"].to_numpy()
    u, p = mannwhitneyu(values[mask], values[~mask], alternative="two-sided")
    assert (bright["statistic"], bright["p_value"], bright["test"]) == (pytest.approx(u), pytest.approx(p),
                                                                       "mann-whitney")
    assert bright["median_in"] == pytest.approx(np.median(values[mask]))
    assert bright["median_out"] == pytest.approx(np.median(values[~mask]))
    assert (bright["n_in"], bright["n_out"]) == (mask.sum(), (~mask).sum())


def test_p_values_are_benjamini_hochberg_corrected_across_all_tests_and_sorted_most_significant_first():
    frame, mask = planted(4)
    found = over_represented(frame, mask)
    assert found["p_adjusted"].is_sorted()
    assert np.allclose(found["p_adjusted"], false_discovery_control(found["p_value"].to_numpy(), method="bh"))
    assert (found["p_adjusted"] >= found["p_value"]).all()
    by_p = found.sort("p_value")
    assert by_p["p_adjusted"].is_sorted()  # monotone in the raw p-value
    assert found["significant"].to_list() == (found["p_adjusted"] <= 0.05).to_list()


def test_alpha_sets_the_significance_threshold():
    frame, mask = planted(5, n=120)
    found = over_represented(frame, mask, alpha=0.2)
    assert found["significant"].to_list() == (found["p_adjusted"] <= 0.2).to_list()
    strict = over_represented(frame, mask, alpha=1e-12)
    assert strict["significant"].sum() <= found["significant"].sum()


def test_a_lower_measurement_says_lower():
    frame, mask = planted(6)
    found = over_represented(frame.with_columns(-pl.col("brightness")), mask, ["brightness"])
    assert found.row(0, named=True)["value"] == "lower" and found["significant"].all()


def test_id_like_and_single_valued_columns_are_skipped_but_unique_measurements_are_tested():
    frame, mask = planted(7, n=100)
    frame = frame.with_columns(index=pl.int_range(100), constant=pl.lit("x"),
                               scores=pl.Series([[1.0, 2.0]] * 100))
    tested = set(over_represented(frame, mask)["column"])
    assert tested == {"source", "site", "brightness", "noise"}  # not image_id, index, constant, scores


def test_integers_with_few_values_are_categories_and_with_many_are_measurements():
    rng = np.random.default_rng(8)
    mask = rng.random(300) < 0.5
    frame = pl.DataFrame({"label": rng.integers(0, 4, 300), "age": rng.integers(20, 90, 300)})
    found = over_represented(frame, mask)
    assert set(found.filter(pl.col("column") == "label")["value"]) == {"0", "1", "2", "3"}
    assert found.filter(pl.col("column") == "age")["test"].to_list() == ["mann-whitney"]


def test_booleans_are_categories():
    mask = np.arange(40) < 10
    frame = pl.DataFrame({"flagged": np.arange(40) < 12})
    found = over_represented(frame, mask)
    assert found.row(0, named=True)["value"] == "true" and found.row(0, named=True)["significant"]


def test_a_missing_category_is_a_value_and_missing_measurements_are_left_out():
    mask = np.arange(60) < 20
    frame = pl.DataFrame({"site": [None] * 15 + ["a"] * 20 + ["b"] * 25,
                          "age": [None] * 10 + list(range(50))}, schema={"site": pl.String, "age": pl.Float64})
    found = over_represented(frame, mask)
    missing = found.filter((pl.col("column") == "site") & pl.col("value").is_null()).row(0, named=True)
    assert (missing["n_in"], missing["n_out"], missing["significant"]) == (15, 0, True)
    age = found.filter(pl.col("column") == "age").row(0, named=True)
    assert (age["n_in"], age["n_out"]) == (10, 40)


def test_columns_limits_the_tests_and_unknown_or_nested_columns_are_refused():
    frame, mask = planted(9, n=100)
    assert set(over_represented(frame, mask, ["source"])["column"]) == {"source"}
    assert set(over_represented(frame, mask, "noise")["column"]) == {"noise"}
    with pytest.raises(OptionError, match="Unknown columns"):
        over_represented(frame, mask, ["sauce"])
    with pytest.raises(OptionError, match="lists or structs"):
        over_represented(frame.with_columns(scores=pl.Series([[1.0]] * 100)), mask, ["scores"])


def test_a_selection_of_no_row_or_of_every_row_has_nothing_to_report():
    frame, _ = planted(10, n=50)
    for mask in (np.zeros(50, bool), np.ones(50, bool)):
        found = over_represented(frame, mask)
        assert found.height == 0 and found.schema == pl.Schema(SCHEMA)


def test_the_result_has_the_documented_columns_and_types():
    frame, mask = planted(11, n=80)
    assert over_represented(frame, mask).schema == pl.Schema(SCHEMA)


@pytest.mark.parametrize("mask, message", [
    (np.ones(49, bool), "one entry per row"),
    (np.ones(50, int), "boolean"),
    (np.ones((50, 1), bool), "one entry per row"),
])
def test_a_mask_that_is_not_one_boolean_per_row_is_refused(mask, message):
    frame, _ = planted(12, n=50)
    with pytest.raises(OptionError, match=message):
        over_represented(frame, mask)


@pytest.mark.parametrize("alpha", [0, 1, -0.1, 1.5])
def test_alpha_outside_zero_one_is_refused(alpha):
    frame, mask = planted(13, n=50)
    with pytest.raises(OptionError, match="alpha"):
        over_represented(frame, mask, alpha=alpha)


def test_a_frame_that_is_not_polars_is_refused():
    with pytest.raises(OptionError, match="polars DataFrame"):
        over_represented({"a": [1, 2]}, np.array([True, False]))
