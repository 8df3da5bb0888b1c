"""Trends (issue 15, point 2): Theil–Sen slope and Mann–Kendall test on synthetic series of known slope,
and the stored El Salvador emigration trend (real data, pinned), usable in a profile."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from scipy import stats
from sqlalchemy import Engine, text

from app.ingest.series import PARTIAL_YEAR, SLV_TREND_WINDOW
from app.trends import (
    ALPHA,
    MIN_PERIODS,
    NOT_SIGNIFICANT,
    SERIES_GAP,
    TOO_FEW_PERIODS,
    period_year,
    trend,
    unit_trends,
)

YEARS = list(range(2014, 2024))
WINDOW = (2014, 2023)


def test_increasing_series_has_its_slope_and_is_significant() -> None:
    t = trend(YEARS, [2.0 * (y - 2014) + 5 for y in YEARS], WINDOW)
    assert t.slope == pytest.approx(2.0) and t.tau == pytest.approx(1.0)
    assert t.p_value is not None and t.p_value < 1e-5 and t.significant
    assert t.n == 10 and t.flags == ()


def test_decreasing_series_with_an_outlier_keeps_its_slope() -> None:
    values = [-1.5 * (y - 2014) + 40 for y in YEARS]
    values[3] += 100.0  # one wild year: Theil–Sen ignores it, least squares would not
    t = trend(YEARS, values, WINDOW)
    assert t.slope == pytest.approx(-1.5)
    assert t.significant and t.tau is not None and t.tau < 0
    ols = stats.linregress(YEARS, values).slope
    assert abs(ols - -1.5) > 1.0  # the outlier moves an ordinary least-squares slope a lot


def test_flat_series_has_no_trend() -> None:
    constant = trend(YEARS, [7.0] * 10, WINDOW)
    assert constant.slope == 0.0 and constant.p_value == 1.0 and not constant.significant
    assert NOT_SIGNIFICANT in constant.flags
    wobble = trend(YEARS, [7.0, 8.0] * 5, WINDOW)  # up, down, up…: no monotonic change
    assert wobble.slope == pytest.approx(0.0, abs=0.2)
    assert wobble.p_value is not None and wobble.p_value > 0.5 and NOT_SIGNIFICANT in wobble.flags


def test_too_short_series_gets_no_trend_and_says_so() -> None:
    t = trend([2020, 2021, 2022, 2023], [1.0, 2.0, 3.0, 4.0], WINDOW)
    assert t.slope is None and t.p_value is None and t.n == 4
    assert TOO_FEW_PERIODS in t.flags and SERIES_GAP in t.flags and not t.significant
    # why the minimum is 5: four strictly increasing values cannot reach p < 0.05 (exact p = 2/4!)
    assert stats.kendalltau([1, 2, 3, 4], [1, 2, 3, 4]).pvalue == pytest.approx(2 / 24)
    assert stats.kendalltau(range(MIN_PERIODS), range(MIN_PERIODS)).pvalue < ALPHA
    five = trend([2019, 2020, 2021, 2022, 2023], [1.0, 2.0, 3.0, 4.0, 5.0], WINDOW)
    assert five.slope == pytest.approx(1.0) and five.significant


def test_gap_uses_the_real_years() -> None:
    years = [y for y in YEARS if y not in (2017, 2018, 2019)]
    values: list[float | None] = [3.0 * (y - 2014) for y in years]
    t = trend(years, values, WINDOW)
    assert t.slope == pytest.approx(3.0) and t.n == 7 and SERIES_GAP in t.flags and t.significant
    # a missing value (None or NaN) is a gap too; a value outside the window is ignored
    with_none = trend([*years, 2017, 2024], [*values, None, 1e6], WINDOW)
    assert with_none.slope == pytest.approx(3.0) and with_none.n == 7
    # had the years been taken as consecutive positions, the slope would be wrong across the gap
    assert stats.theilslopes(values).slope != pytest.approx(3.0)


def test_unit_trends_per_unit() -> None:
    rows: list[dict[str, Any]] = []
    for pcode, f in (("A", lambda y: 2.0 * y), ("B", lambda y: 5.0), ("C", lambda y: float(y))):
        n = YEARS if pcode != "C" else YEARS[:3]
        rows += [{"boundary_set_id": "s", "pcode": pcode, "period": str(y), "value": f(y)} for y in n]
    out = unit_trends(pd.DataFrame(rows), WINDOW).set_index("pcode")
    assert out.loc["A", "slope"] == pytest.approx(2.0) and bool(out.loc["A", "significant"])
    assert out.loc["B", "slope"] == 0.0 and not bool(out.loc["B", "significant"])
    assert out.loc["C", "slope"] is None or math.isnan(out.loc["C", "slope"])
    assert TOO_FEW_PERIODS in out.loc["C", "flags"]
    with pytest.raises(ValueError, match="not a single year"):
        period_year("2014-2023")


# --- real data: El Salvador's census 2024 ----------------------------------------------------------------


def _trend_rows(engine: Engine, code: str) -> dict[str, tuple[float | None, list[str], str]]:
    with engine.connect() as conn:
        return {
            r.pcode: (r.value, list(r.flags), r.period)
            for r in conn.execute(
                text("SELECT pcode, value, flags, period FROM observations WHERE indicator_code = :c"),
                {"c": code},
            )
        }


def test_slv_emigration_trend_is_pinned(engine: Engine) -> None:
    slopes = _trend_rows(engine, "slv_emigrants_per_1000_trend")
    pvalues = _trend_rows(engine, "slv_emigrants_per_1000_trend_p")
    assert len(slopes) == len(pvalues) == 44
    assert {p for _, _, p in slopes.values()} == {"2014-2023"}
    significant = {k for k, (v, flags, _) in slopes.items() if v is not None and NOT_SIGNIFICANT not in flags}
    rising = {k for k in significant if (slopes[k][0] or 0) > 0}
    # reported and pinned: 35 of El Salvador's 44 municipios have a significant trend at 5 %, all of them
    # rising (with no trend anywhere about 2 would pass by chance)
    assert len(significant) == 35 and rising == significant
    for k, (_value, flags, _) in slopes.items():
        p = pvalues[k][0]
        assert p is not None and (p < ALPHA) == (k in significant)
        assert TOO_FEW_PERIODS not in flags and SERIES_GAP not in flags


def test_slv_trend_recomputed_from_the_stored_series_without_2024(engine: Engine) -> None:
    with engine.connect() as conn:
        series = pd.DataFrame(
            conn.execute(
                text("""
            SELECT boundary_set_id, pcode, period, value, flags FROM observations
            WHERE indicator_code = 'slv_emigrants_per_1000_year'""")
            ).mappings()
        )
    assert sorted(series["period"].unique()) == [str(y) for y in range(2014, 2025)]
    partial = series[series["flags"].map(lambda f: PARTIAL_YEAR in f)]
    assert set(partial["period"]) == {"2024"} and len(partial) == 44
    expected = unit_trends(series, SLV_TREND_WINDOW).set_index("pcode")
    with_2024 = unit_trends(series, (2014, 2024)).set_index("pcode")
    stored = _trend_rows(engine, "slv_emigrants_per_1000_trend")
    for pcode, (value, _, _) in stored.items():
        assert value == pytest.approx(expected.loc[pcode, "slope"])
    # leaving the incomplete 2024 out matters: with it, fewer municipios would show a significant rise
    assert with_2024["significant"].sum() < expected["significant"].sum()


def test_trend_in_the_catalogue_with_its_method(client: TestClient) -> None:
    items = {
        i["code"]: i for i in client.get("/v1/indicators", params={"theme": "migration"}).json()["items"]
    }
    t = items["slv_emigrants_per_1000_trend"]
    assert t["period"] == "2014-2023" and t["unit"] == "emigrants per 1000 residents, change per year"
    assert "Theil-Sen" in t["description"] and "Mann-Kendall" in t["description"]
    assert "p < 0.05" in t["description"] and "2024 is left out" in t["description"]
    assert t["source"]["id"] == "slv-censo2024" and t["coverage"]["SLV"][0]["values"] == 44


def test_trend_is_usable_in_a_profile(client: TestClient) -> None:
    body = {
        "id": "emigration-trend",
        "migration": [{"code": "slv_emigrants_per_1000_trend"}],
        "pillars": {"I": [{"code": "no_drinking_water_pct_2007"}]},
        "migration_weight": 0.5,
        "draws": 5,
    }
    r = client.post("/v1/scores", json=body, params={"country": "SLV", "limit": 44})
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert len(items) == 44
    steepest = client.get(
        "/v1/indicators/slv_emigrants_per_1000_trend/values", params={"country": "SLV"}
    ).json()["items"]
    top = max(steepest, key=lambda i: i["value"])
    ranks = {i["pcode"]: i["rank"] for i in items}
    assert ranks[top["pcode"]] <= 10  # the steepest rise ranks near the top when it weighs half
