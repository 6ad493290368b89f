"""EstimateView: a sampled estimate's intervals joined with the exact answer, and its messages."""

import polars as pl
import pytest

from odinlab.sampling import boundary_sample, top_units
from odinlab.widgets.estimate import EstimateView, estimate_rows


def test_rows_join_the_exact_value_on_the_shared_key_columns():
    est = pl.DataFrame({"label": [3, 3], "label_name": ["3", "3"], "rank": [1, 2], "unit": [4, 7],
                        "score": [0.5, 0.3], "lower": [0.4, 0.1], "upper": [0.6, 0.35], "auc": [0.75, 0.65]})
    exact = pl.DataFrame({"label": [3, 3, 3], "label_name": ["3"] * 3, "rank": [1, 2, 3], "unit": [7, 4, 9],
                          "score": [0.4, 0.55, 0.1], "lower": [0.4, 0.55, 0.1], "upper": [0.4, 0.55, 0.1],
                          "auc": [0.7, 0.77, 0.55]})
    view = EstimateView(est, exact)
    assert [r["label"] for r in view.rows] == ["unit 4", "unit 7"] and view.subtitle == "label 3"
    assert [r["exact"] for r in view.rows] == [0.55, 0.4] and [r["covered"] for r in view.rows] == [True, False]
    assert view.summary == "1 of 2 exact values lie inside their intervals."


def test_an_interval_is_made_from_se_when_lower_and_upper_are_missing():
    rows, _ = estimate_rows(pl.DataFrame({"unit": [1], "score": [1.0], "se": [0.5]}), value="score")
    assert rows[0]["lower"] == pytest.approx(1 - 1.96 * 0.5, abs=1e-3) and rows[0]["exact"] is None


def test_bad_frames_are_clear_errors_or_messages():
    with pytest.raises(KeyError, match="no column 'scor'"):
        EstimateView(pl.DataFrame({"unit": [1], "score": [1.0]}), value="scor")
    with pytest.raises(KeyError, match="share no key column"):
        EstimateView(pl.DataFrame({"score": [1.0]}), pl.DataFrame({"score": [1.0]}))
    with pytest.raises(TypeError, match="polars DataFrame"):
        EstimateView([1, 2])
    empty = EstimateView(pl.DataFrame(schema={"unit": pl.Int64, "score": pl.Float64}))
    assert empty.message.startswith("No estimate") and empty.rows == []


def test_a_sampled_top_units_beside_the_exact_one(digits):
    sample = boundary_sample(digits, "cnn@1", 150, "test", seed=0)
    estimate = top_units(digits, "cnn@1", "head.fc1", value="3", k=4, sample=sample)
    exact = top_units(digits, "cnn@1", "head.fc1", "test", value="3", k=1000)
    view = EstimateView(estimate, exact)
    assert len(view.rows) == 4 and all(r["exact"] is not None for r in view.rows)
    assert all(r["lower"] <= r["estimate"] <= r["upper"] for r in view.rows)
    assert view.summary.endswith("of 4 exact values lie inside their intervals.")
