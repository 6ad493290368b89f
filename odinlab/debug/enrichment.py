"""Which metadata values are over-represented in a selection of rows (a cluster of errors, a lasso
selection) compared with the other rows, with a test statistic and corrected p-values.

- Values of categorical columns (strings, categoricals, booleans, integers with at most
  ``MAX_LEVELS`` distinct values; a missing value counts as one more value): per value, a one-sided
  Fisher exact test (``scipy.stats.fisher_exact``, alternative "greater") of the 2x2 table
  (in / out of the selection) x (has the value / has not). ``statistic`` is its odds ratio and
  ``ratio`` the share of the selection with the value over the share of the other rows with it.
- Numeric columns: a two-sided Mann-Whitney U test (``scipy.stats.mannwhitneyu``) of the values in
  against the values out; ``value`` says whether the selection's values are "higher" or "lower",
  ``statistic`` is U and ``median_in``/``median_out`` the medians (missing values left out).

Every p-value is then corrected for the number of tests, across all columns, with the
Benjamini-Hochberg procedure (``scipy.stats.false_discovery_control``): ``significant`` means
``p_adjusted <= alpha``. Id-like columns (a different value on every row: strings or integers) and
columns with a single value are skipped, as are list and struct columns.

>>> frame = pl.DataFrame({"source": ["archive"] * 8 + ["camera"] * 32, "size": np.arange(40.0)})
>>> mask = np.arange(40) < 10          # rows 0-9: all 8 archive images and 2 small camera ones
>>> found = over_represented(frame, mask)
>>> found.select("column", "value", "n_in", "n_out", "significant").rows()
[('source', 'archive', 8, 0, True), ('size', 'lower', 10, 30, True), ('source', 'camera', 2, 30, False)]
"""

from __future__ import annotations

import numpy as np
import polars as pl

from odinlab.errors import OptionError

# Integer columns with at most this many distinct values are read as categories (a label, a site).
MAX_LEVELS = 12

SCHEMA = {
    "column": pl.String, "value": pl.String, "test": pl.String, "n_in": pl.Int64, "n_out": pl.Int64,
    "share_in": pl.Float64, "share_out": pl.Float64, "ratio": pl.Float64, "median_in": pl.Float64,
    "median_out": pl.Float64, "statistic": pl.Float64, "p_value": pl.Float64, "p_adjusted": pl.Float64,
    "significant": pl.Boolean,
}


def over_represented(frame: pl.DataFrame, mask: np.ndarray, columns=None, *, alpha: float = 0.05) -> pl.DataFrame:
    """One row per test (a value of a categorical column, or a numeric column), most significant first.

    Columns: column, value, test ("fisher" or "mann-whitney"), n_in, n_out (rows with the value
    in / out of the selection; for a numeric column, rows with a value), share_in, share_out,
    ratio (categorical), median_in, median_out (numeric), statistic, p_value, p_adjusted,
    significant. ``columns`` limits the columns tested (default: every usable column). A selection
    of no row or of every row has nothing to be compared with: the result is empty.

    >>> frame = pl.DataFrame({"site": ["a", "a", "b", "b", "b", "b"], "ok": [True] * 6})
    >>> found = over_represented(frame, np.array([1, 1, 0, 0, 0, 1], bool))   # "ok" has one value
    >>> found.select("column", "value", "n_in", "n_out", pl.col("ratio").round(2)).rows()
    [('site', 'a', 2, 0, inf), ('site', 'b', 1, 3, 0.33)]
    """
    inside = _checked_mask(frame, mask)
    if not 0 < alpha < 1:
        raise OptionError(f"alpha must be a probability in (0, 1), got {alpha!r}; e.g. alpha=0.05.")
    names = _columns(frame, columns)
    if inside.all() or not inside.any():
        return pl.DataFrame(schema=SCHEMA)
    rows = []
    for name in names:
        series = frame[name]
        rows += _numeric(name, series, inside) if _is_numeric(series) else _categorical(name, series, inside)
    if not rows:
        return pl.DataFrame(schema=SCHEMA)
    from scipy.stats import false_discovery_control  # deferred: scipy.stats is slow to import

    result = pl.DataFrame(rows, schema={k: v for k, v in SCHEMA.items() if k not in ("p_adjusted", "significant")},
                          orient="row")
    adjusted = false_discovery_control(result["p_value"].to_numpy(), method="bh")
    return result.with_columns(p_adjusted=pl.Series(adjusted), significant=pl.Series(adjusted <= alpha)).sort(
        ["p_adjusted", "p_value"], maintain_order=True)


# -- helpers ------------------------------------------------------------------------------

def _checked_mask(frame: pl.DataFrame, mask) -> np.ndarray:
    if not isinstance(frame, pl.DataFrame):
        raise OptionError(f"frame must be a polars DataFrame (one row per image), got {type(frame).__name__}.")
    inside = np.asarray(mask)
    if inside.shape != (frame.height,) or inside.dtype != bool:
        raise OptionError(f"mask must be a boolean array with one entry per row ({frame.height}), got shape "
                          f"{inside.shape} and dtype {inside.dtype}; e.g. labels == cluster.")
    return inside


def _columns(frame: pl.DataFrame, columns) -> list[str]:
    """The columns to test: the usable ones, or the asked ones (refusing unknown and unusable ones)."""
    if columns is None:
        return [name for name in frame.columns if _usable(frame[name])]
    names = [columns] if isinstance(columns, str) else list(columns)
    unknown = [name for name in names if name not in frame.columns]
    if unknown:
        raise OptionError(f"Unknown columns {unknown}; the frame has {frame.columns}.")
    nested = [name for name in names if frame[name].dtype.is_nested()]
    if nested:
        raise OptionError(f"Columns {nested} hold lists or structs; test scalar columns only.")
    return [name for name in names if _usable(frame[name])]


def _usable(series: pl.Series) -> bool:
    """Scalar, not an id (unique per row, unless a measurement), with more than one value."""
    if series.dtype.is_nested() or series.dtype == pl.Object:
        return False
    distinct = series.n_unique()
    measurement = series.dtype.is_float() or series.dtype.is_temporal()
    id_like = distinct == len(series) > 1 and not measurement
    return distinct > 1 and not id_like


def _is_numeric(series: pl.Series) -> bool:
    if series.dtype.is_float() or series.dtype.is_temporal():
        return True
    return series.dtype.is_integer() and series.n_unique() > MAX_LEVELS


def _categorical(name: str, series: pl.Series, inside: np.ndarray) -> list[tuple]:
    """One one-sided Fisher exact test per value (missing values are a value too)."""
    from scipy.stats import fisher_exact

    values = series.cast(pl.String) if series.dtype != pl.String else series
    size_in, size_out = int(inside.sum()), int((~inside).sum())
    counts = pl.DataFrame({"value": values, "inside": inside}).group_by("value", maintain_order=True).agg(
        n_in=pl.col("inside").sum().cast(pl.Int64), n=pl.len().cast(pl.Int64))
    rows = []
    for value, n_in, n in counts.iter_rows():
        n_out = n - n_in
        odds, p = fisher_exact([[n_in, size_in - n_in], [n_out, size_out - n_out]], alternative="greater")
        share_in, share_out = n_in / size_in, n_out / size_out
        ratio = share_in / share_out if share_out > 0 else np.inf
        rows.append((name, value, "fisher", n_in, n_out, share_in, share_out, ratio, None, None,
                     float(odds), float(p)))
    return rows


def _numeric(name: str, series: pl.Series, inside: np.ndarray) -> list[tuple]:
    """One two-sided Mann-Whitney U test of the values in against the values out."""
    from scipy.stats import mannwhitneyu

    values = series.to_physical().cast(pl.Float64).to_numpy()
    present = ~np.isnan(values)
    values_in, values_out = values[inside & present], values[~inside & present]
    if not len(values_in) or not len(values_out):
        return []
    u, p = mannwhitneyu(values_in, values_out, alternative="two-sided")
    # U counts the pairs where the selection's value is larger: above half of the pairs means higher.
    direction = "higher" if u > len(values_in) * len(values_out) / 2 else "lower"
    return [(name, direction, "mann-whitney", len(values_in), len(values_out), None, None, None,
             float(np.median(values_in)), float(np.median(values_out)), float(u), float(p))]
