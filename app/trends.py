"""Trends over a series: a Theil–Sen slope with a Mann–Kendall test, per unit, over a stated window.

Method (stated here because the stored trend indicators point to it):

- Slope: Theil–Sen (Sen 1968), the median of the slopes between every pair of observations, in the series'
  unit per year, computed on the real years (`scipy.stats.theilslopes(values, years)`), so a missing year
  (a gap) is a gap and not a shift of the later years by one. Robust to a few outliers (breakdown 29 %).
- Test: Mann–Kendall (Mann 1945; Kendall 1975), two-sided, H0 "no monotonic trend". Its statistic S is
  Kendall's tau between time and value, so it is computed as `scipy.stats.kendalltau(years, values)`: the
  exact permutation distribution when there are no ties and the series is short (scipy's choice), else the
  normal approximation with the tie-corrected variance, without continuity correction. A series whose
  values are all equal has no trend: slope 0, p = 1.
- Why scipy and not pymannkendall: pymannkendall's tests and its Sen slope assume equally spaced
  observations (its slope divides by index differences), which is wrong across a gap; scipy takes the
  years as given and is maintained with the rest of the scientific stack the project already uses.
- Significance level ALPHA = 0.05 (two-sided). Trends are computed one unit at a time and not corrected
  for multiple testing: with 44 municipios about 2 would pass at 5 % by chance alone if no municipio had a
  trend; the p-value is stored beside each slope so a reader can apply a stricter rule.
- At least MIN_PERIODS = 5 observed periods in the window: with 4, the smallest two-sided exact p-value
  is 2/4! = 0.083, so no series of 4 could ever be significant at 5 %. A unit with fewer gets no slope
  (stored as missing, flagged TOO_FEW_PERIODS). A unit with some periods missing in the window gets its
  trend over the others, flagged SERIES_GAP.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

ALPHA = 0.05
MIN_PERIODS = 5
# flags of a trend value (documented in the README with the other quality flags)
TOO_FEW_PERIODS = "too_few_periods"  # fewer than MIN_PERIODS observed periods in the window: no trend
SERIES_GAP = "series_gap"  # some periods of the window have no value: the trend uses the others
NOT_SIGNIFICANT = "trend_not_significant"  # Mann–Kendall p >= ALPHA: the slope is not told from zero


@dataclass(frozen=True)
class Trend:
    """The trend of one series: Theil–Sen slope per year (None when too short), Mann–Kendall tau and
    two-sided p-value, the number of observed periods used, and the flags that qualify it."""

    slope: float | None
    intercept: float | None
    tau: float | None
    p_value: float | None
    n: int
    flags: tuple[str, ...]

    @property
    def significant(self) -> bool:
        """True when the Mann–Kendall test rejects 'no trend' at ALPHA."""
        return self.p_value is not None and self.p_value < ALPHA


def period_year(period: str) -> int:
    """The year of a one-year period ('2014' → 2014); a trend needs periods that are single years."""
    text = str(period).strip()
    if len(text) != 4 or not text.isdigit():
        raise ValueError(f"period '{period}' is not a single year (YYYY): a trend needs yearly periods")
    return int(text)


def trend(years: Sequence[float], values: Sequence[float | None], window: tuple[int, int]) -> Trend:
    """Theil–Sen slope and Mann–Kendall test of the values observed within `window` (first and last year,
    inclusive); values that are None or NaN count as missing periods."""
    first, last = window
    pairs = sorted(
        (int(y), float(v))
        for y, v in zip(years, values, strict=True)
        if first <= int(y) <= last and v is not None and not math.isnan(float(v))
    )
    n = len(pairs)
    flags = (SERIES_GAP,) if n < last - first + 1 else ()
    if n < MIN_PERIODS:
        return Trend(None, None, None, None, n, (TOO_FEW_PERIODS, *flags))
    x = np.array([p[0] for p in pairs], dtype="float64")
    y = np.array([p[1] for p in pairs], dtype="float64")
    if np.all(y == y[0]):
        return Trend(0.0, float(y[0]), 0.0, 1.0, n, (*flags, NOT_SIGNIFICANT))
    fit = stats.theilslopes(y, x)
    test = stats.kendalltau(x, y)
    p = float(test.pvalue)
    return Trend(
        float(fit.slope),
        float(fit.intercept),
        float(test.statistic),
        p,
        n,
        (*flags, *(() if p < ALPHA else (NOT_SIGNIFICANT,))),
    )


def unit_trends(series: pd.DataFrame, window: tuple[int, int]) -> pd.DataFrame:
    """Per unit of a stored series (columns boundary_set_id, pcode, period, value; periods single years),
    its trend over `window`: one row per unit with slope, intercept, tau, p_value, n and flags."""
    rows = []
    for (set_id, pcode), g in series.groupby(["boundary_set_id", "pcode"], sort=True):
        t = trend([period_year(p) for p in g["period"]], list(g["value"]), window)
        rows.append(
            {
                "boundary_set_id": set_id,
                "pcode": pcode,
                "slope": t.slope,
                "intercept": t.intercept,
                "tau": t.tau,
                "p_value": t.p_value,
                "n": t.n,
                "significant": t.significant,
                "flags": list(t.flags),
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "boundary_set_id",
            "pcode",
            "slope",
            "intercept",
            "tau",
            "p_value",
            "n",
            "significant",
            "flags",
        ],
    )
