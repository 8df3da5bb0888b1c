"""Scoring engine: known answers on hand-made matrices, and properties with hypothesis."""

from __future__ import annotations

import json
import math
import statistics
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.errors import InvalidParameter
from app.scoring.engine import Matrix, normalise, score
from app.scoring.profile import Profile

NAN = math.nan


def matrix(
    values: dict[str, list[float]],
    countries: list[str] | None = None,
    directions: dict[str, int] | None = None,
) -> Matrix:
    """A matrix with units u0, u1, … in one country (GTM) unless told, every direction +1 unless told."""
    frame = pd.DataFrame(
        values, index=[f"u{i}" for i in range(len(next(iter(values.values()))))], dtype=float
    )
    country = pd.Series(countries or ["GTM"] * len(frame), index=frame.index)
    return Matrix(frame, country, {c: 1 for c in frame.columns} | (directions or {}))


def one_pillar(*items: dict[str, Any], **kw: Any) -> Profile:
    """A profile with a single pillar I holding the given indicators (so the score is that pillar)."""
    return Profile(pillars={"I": list(items)}, **kw)


def col(m: Matrix, profile: Profile, code: str) -> list[float]:
    """The normalised values of one indicator."""
    return [float(v) for v in normalise(m, profile)[code]]


# normalisers


def test_minmax() -> None:
    m = matrix({"a": [1, 2, 4, 5, NAN]})
    assert col(m, one_pillar({"code": "a"}), "a")[:4] == pytest.approx([0, 0.25, 0.75, 1])
    assert math.isnan(col(m, one_pillar({"code": "a"}), "a")[4])
    flat = matrix({"a": [3, 3, 3]})
    assert col(flat, one_pillar({"code": "a"}), "a") == [0.5, 0.5, 0.5]


def test_rank_with_ties() -> None:
    m = matrix({"a": [10, 20, 20, 40, NAN]})
    got = col(m, one_pillar({"code": "a", "normalise": "rank"}), "a")
    # average ranks 1, 2.5, 2.5, 4 over n = 4 → (r − 1)/3
    assert got[:4] == pytest.approx([0, 0.5, 0.5, 1])
    assert math.isnan(got[4])
    single = matrix({"a": [NAN, 7, NAN]})
    assert col(single, one_pillar({"code": "a", "normalise": "rank"}), "a")[1] == 0.5


def test_zscore_is_the_normal_cdf() -> None:
    raw = [1.0, 2.0, 3.0, 4.0, 10.0]
    mean, sd = statistics.mean(raw), statistics.stdev(raw)
    expected = [0.5 * (1 + math.erf((x - mean) / sd / math.sqrt(2))) for x in raw]
    got = col(matrix({"a": raw}), one_pillar({"code": "a", "normalise": "zscore"}), "a")
    assert got == pytest.approx(expected)
    assert all(0 < v < 1 for v in got)


def test_goalposts_clip_and_direction() -> None:
    m = matrix({"a": [-5, 0, 5, 10, 20]})
    up = one_pillar({"code": "a", "normalise": "goalposts", "goalposts": (0, 10)})
    assert col(m, up, "a") == pytest.approx([0, 0, 0.5, 1, 1])
    down = one_pillar({"code": "a", "normalise": "goalposts", "goalposts": (0, 10), "direction": -1})
    assert col(m, down, "a") == pytest.approx([1, 1, 0.5, 0, 0])
    # goalposts are in raw units: the catalogue direction −1 does not move them either
    m_neg = matrix({"a": [-5, 0, 5, 10, 20]}, directions={"a": -1})
    assert col(m_neg, one_pillar({"code": "a", "normalise": "goalposts", "goalposts": (0, 10)}), "a") == (
        pytest.approx([1, 1, 0.5, 0, 0])
    )


def test_winsorise() -> None:
    m = matrix({"a": [1, 2, 3, 4, 100]})
    # quantiles 0.25 and 0.75 of five values are 2 and 4: clip to [2, 4], then min-max
    got = col(m, one_pillar({"code": "a", "outliers": "winsorise", "winsor_fraction": 0.25}), "a")
    assert got == pytest.approx([0, 0, 0.5, 1, 1])


def test_log_shifts_to_zero_first() -> None:
    m = matrix({"a": [-1, 0, 2, 6]})
    # log1p(x + 1) = ln 1, ln 2, ln 4, ln 8 = ln 2 · (0, 1, 2, 3)
    assert col(m, one_pillar({"code": "a", "outliers": "log"}), "a") == pytest.approx([0, 1 / 3, 2 / 3, 1])


def test_log_with_goalposts_maps_the_goalposts_too() -> None:
    m = matrix({"a": [0, 3, 7, 15]})
    p = one_pillar({"code": "a", "outliers": "log", "normalise": "goalposts", "goalposts": (0, 15)})
    # log1p(x) / log1p(15) = log 1, 4, 8, 16 over log 16
    assert col(m, p, "a") == pytest.approx([0, 0.5, 0.75, 1])


def test_direction_reversal_and_override() -> None:
    m = matrix({"a": [0, 5, 10]}, directions={"a": -1})
    assert col(m, one_pillar({"code": "a"}), "a") == pytest.approx([1, 0.5, 0])
    assert col(m, one_pillar({"code": "a", "direction": 1}), "a") == pytest.approx([0, 0.5, 1])
    ranked = score(m, one_pillar({"code": "a"}))
    assert list(ranked["rank"]) == [1, 2, 3]


# aggregation


def g(values: list[float], weights: list[float]) -> float:
    """The weighted geometric mean on the affine rescale 1 + 99·v, mapped back to 0–1."""
    total = sum(weights)
    prod = 1.0
    for v, w in zip(values, weights, strict=True):
        prod *= (1 + 99 * v) ** (w / total)
    return (prod - 1) / 99


def test_arithmetic_against_geometric() -> None:
    # min-max: a → 0, 0.5, 1 ; b → 1, 0.25, 0 ; weights 1 and 3
    m = matrix({"a": [0, 5, 10], "b": [4, 1, 0]})
    items = ({"code": "a", "weight": 1}, {"code": "b", "weight": 3})
    arith = score(m, one_pillar(*items))["score"]
    assert list(arith) == pytest.approx([75.0, 31.25, 25.0])
    geo = score(m, one_pillar(*items, aggregation_within="geometric"))["score"]
    expected = [g([0, 1], [1, 3]), g([0.5, 0.25], [1, 3]), g([1, 0], [1, 3])]
    assert list(geo) == pytest.approx([100 * e for e in expected])
    # a floor at 0.01 would give the third unit 100 × 0.01**0.75 ≈ 3.16 (a kink); the rescale ≈ 2.18
    assert abs(geo.iloc[2] - 100 * 0.01**0.75) > 0.5
    assert list(score(m, one_pillar(*items))["pillar_I"]) == pytest.approx([75.0, 31.25, 25.0])


def test_across_migration_and_drivers() -> None:
    m = matrix({"mig": [0, 4, 8], "x": [0, 1, 4], "y": [10, 0, 5]})
    base = {"migration": [{"code": "mig"}], "pillars": {"I": [{"code": "x"}], "IV": [{"code": "y"}]}}
    # normalised: mig 0, .5, 1 ; x 0, .25, 1 ; y 1, 0, .5 ; pillar weights I 1, IV 3 ; migration weight 0.4
    weights = {"pillar_weights": {"I": 1.0, "IV": 3.0}, "migration_weight": 0.4}
    drivers = [(0 + 3 * 1) / 4, (0.25 + 0) / 4, (1 + 3 * 0.5) / 4]
    arith = score(m, Profile(**base, **weights))
    assert list(arith["score"]) == pytest.approx(
        [100 * (0.4 * mg + 0.6 * d) for mg, d in zip([0, 0.5, 1], drivers, strict=True)]
    )
    geo = score(m, Profile(**base, **weights, aggregation_across="geometric"))
    geo_drivers = [g([f1, f4], [1, 3]) for f1, f4 in zip((0, 0.25, 1), (1, 0, 0.5), strict=True)]
    expected = [g([mg, d], [0.4, 0.6]) for mg, d in zip([0, 0.5, 1], geo_drivers, strict=True)]
    assert list(geo["score"]) == pytest.approx([100 * e for e in expected])


def test_missing_values_are_reweighted_not_zeroed() -> None:
    # min-max: a → 0, 1, .5 ; b → 1, 0, 0 ; c → 0, 1, NaN (weights 1, 1, 2)
    m = matrix({"a": [0, 2, 1], "b": [5, 1, 1], "c": [0, 3, NAN]})
    out = score(m, one_pillar({"code": "a"}, {"code": "b"}, {"code": "c", "weight": 2}, missing="reweight"))
    assert out.loc["u2", "score"] == pytest.approx(100 * (0.5 + 0) / 2)
    assert out.loc["u0", "score"] == pytest.approx(100 * (0 + 1 + 0) / 4)
    assert out.loc["u2", "coverage"] == 1.0  # the pillar has data: coverage counts components


def test_missing_component_is_reweighted_and_reported_as_no_data() -> None:
    m = matrix({"mig": [0, 10, NAN], "x": [0, 5, 10], "y": [1, 2, NAN]})
    p = Profile(
        migration=[{"code": "mig"}], pillars={"I": [{"code": "x"}], "II": [{"code": "y"}]}, missing="reweight"
    )
    out = score(m, p)
    # u2: no migration, no pillar II → its score is pillar I alone, not diluted by zeros
    assert out.loc["u2", "score"] == pytest.approx(100.0)
    assert math.isnan(out.loc["u2", "migration"]) and math.isnan(out.loc["u2", "pillar_II"])
    assert math.isnan(out.loc["u0", "pillar_III"])  # not in the profile: no data, never zero
    assert out.loc["u2", "coverage"] == pytest.approx(0.25)
    assert not out.loc["u2", "ranked"] and pd.isna(out.loc["u2", "rank"]) and pd.isna(out.loc["u2", "tier"])


def test_coverage_and_min_coverage() -> None:
    m = matrix({"mig": [1, NAN, 3, NAN], "x": [1, 2, NAN, NAN], "y": [2, NAN, 1, NAN]})
    p = Profile(
        migration=[{"code": "mig"}],
        pillars={"I": [{"code": "x"}], "II": [{"code": "y"}]},
        pillar_weights={"I": 1.0, "II": 3.0},
        min_coverage=0.6,
        missing="reweight",
    )
    out = score(m, p)
    # component weights: migration .5, I .5·1/4 = .125, II .5·3/4 = .375
    assert list(out["coverage"]) == pytest.approx([1.0, 0.125, 0.875, 0.0])
    assert list(out["ranked"]) == [True, False, True, False]
    assert not math.isnan(out.loc["u1", "score"])  # scored, just not ranked
    assert math.isnan(out.loc["u3", "score"])
    # u0: migration 0, drivers (0·1 + 1·3)/4 → 37.5 ; u2: migration 1, drivers 0 → 50
    assert out.loc["u0", "score"] == pytest.approx(37.5) and out.loc["u2", "score"] == pytest.approx(50)
    assert out["rank"].tolist() == [2, pd.NA, 1, pd.NA]
    at_threshold = score(m, p.model_copy(update={"min_coverage": 0.875}))
    assert at_threshold.loc["u2", "ranked"]
    # 0.7 + 0.3 · 1/3 is 0.7999999999999999 in floating point: still reaches a min_coverage of 0.8
    near = p.model_copy(
        update={
            "migration_weight": 0.7,
            "pillar_weights": {"I": 1.0, "II": 2.0},
            "min_coverage": 0.8,
            "min_driver_coverage": 0.0,
        }
    )
    m_near = matrix({"mig": [1, 2, NAN], "x": [1, 2, 3], "y": [NAN, NAN, 1]})
    assert score(m_near, near)["ranked"].tolist() == [True, True, False]


def test_contributions_sum_to_the_score_and_are_sorted() -> None:
    m = matrix({"mig": [0, 4, 8], "x": [0, 1, 4], "y": [10, 0, 5], "z": [1, NAN, 3]})
    p = Profile(
        migration=[{"code": "mig"}],
        pillars={"I": [{"code": "x"}, {"code": "z", "weight": 2}], "IV": [{"code": "y"}]},
        pillar_weights={"I": 2.0, "IV": 1.0},
        missing="reweight",
    )
    out = score(m, p)
    for unit, row in score(m, p.model_copy(update={"missing": "shrink"})).iterrows():
        top = row["top_indicators"]  # shrink: the zeros it counts add nothing, the listed parts still sum
        assert sum(t["contribution"] for t in top) == pytest.approx(row["score"]), unit
    for unit, row in out.iterrows():
        top = row["top_indicators"]
        assert sum(t["contribution"] for t in top) == pytest.approx(row["score"]), unit
        assert [t["contribution"] for t in top] == sorted((t["contribution"] for t in top), reverse=True)
        assert all(not math.isnan(t["normalised"]) for t in top)
    u1 = {t["code"]: t for t in out.loc["u1", "top_indicators"]}
    assert set(u1) == {"mig", "x", "y"}  # z is missing there: never listed
    assert u1["x"]["value"] == 1.0 and u1["x"]["normalised"] == pytest.approx(0.25)
    # u1: migration .5 · .5 ; pillar I (only x) ·.5·2/3 ; IV ·.5·1/3
    assert u1["mig"]["contribution"] == pytest.approx(100 * 0.5 * 0.5)
    assert u1["x"]["contribution"] == pytest.approx(100 * 0.5 * (2 / 3) * 0.25)


# tags, ranks, tiers


def test_lead_pillar_is_the_highest_within_country_percentile() -> None:
    # normalised: x (I) .8, 0, 1 ; y (II) .5, 0, 1 ; w (IV) constant .5 ; pillar weights I 1, II 2
    m = matrix({"x": [8, 0, 10, NAN], "y": [5, 0, 10, NAN], "w": [0, 0, 0, 0]})
    p = Profile(
        pillars={"I": [{"code": "x"}], "II": [{"code": "y"}], "IV": [{"code": "w"}]},
        pillar_weights={"I": 1.0, "II": 2.0, "IV": 1.0},
        min_coverage=0,
    )
    out = score(m, p)
    # u0: I and II both sit at percentile 0.5 of their pillar (weights do not matter): tie → the earlier
    assert (out.loc["u0", "pillar"], out.loc["u0", "pillar_secondary"]) == ("I", "II")
    # u1: lowest in I and II (percentile 0); IV is constant (every unit at 0.5) → IV leads
    assert (out.loc["u1", "pillar"], out.loc["u1", "pillar_secondary"]) == ("IV", "I")
    # u3: only pillar IV has data: it leads and nothing else is tagged
    assert (out.loc["u3", "pillar"], out.loc["u3", "pillar_secondary"]) == ("IV", None)
    assert list(out["pillar_rank_I"]) == [2, 3, 1, pd.NA]
    assert list(out["pillar_rank_IV"]) == [1, 1, 1, 1]


def test_a_pillar_high_everywhere_does_not_take_every_tag() -> None:
    # pillar II (an inverted index) runs at 0.9–1.0 for every unit, pillar I spreads over 0–0.6: the raw
    # sub-scores would tag II everywhere; within-country percentiles do not
    rng = np.random.default_rng(7)
    n = 40
    m = matrix({"x": [*rng.uniform(0, 60, n), 0, 100], "y": [*rng.uniform(90, 100, n), 0, 100]})
    p = Profile(pillars={"I": [{"code": "x"}], "II": [{"code": "y"}]}, min_coverage=0)
    out = score(m, p)
    high = out["pillar_II"] > out["pillar_I"]
    assert high.iloc[:n].all()  # II's raw sub-score is higher for every unit
    tags = out["pillar"].iloc[:n].value_counts()
    assert 0.25 * n < tags.get("I", 0) < 0.75 * n  # but the tags split between I and II
    # a pillar with weight 0 never leads
    zero = score(m, Profile(**{**p.model_dump(), "pillar_weights": {"I": 1.0, "II": 0.0}}))
    assert set(zero["pillar"]) == {"I"}


def test_never_a_pillar_without_data() -> None:
    m = matrix({"mig": [1, 2, 3], "x": [NAN, NAN, NAN], "y": [NAN, 1, 2]})
    p = Profile(migration=[{"code": "mig"}], pillars={"I": [{"code": "x"}], "II": [{"code": "y"}]})
    out = score(m, p)
    assert out.loc["u0", "pillar"] is None and out.loc["u0", "pillar_secondary"] is None
    assert out.loc["u2", "pillar"] == "II" and out.loc["u2", "pillar_secondary"] is None
    assert "I" not in set(out["pillar"]) | set(out["pillar_secondary"])


def test_ties_share_the_lowest_rank() -> None:
    m = matrix({"a": [5, 9, 9, 1, 9]})
    out = score(m, one_pillar({"code": "a"}))
    assert list(out["rank"]) == [4, 1, 1, 5, 1]
    assert out["rank_region"].isna().all()  # country scope: no cross-country rank


def test_tiers() -> None:
    m = matrix({"a": [float(i) for i in range(10)]})
    out = score(m, one_pillar({"code": "a"}))
    # rank 1 is the largest value; 0.2·10 = 2 → tier 1 ; 0.5·10 = 5 → tier 2
    assert list(out.sort_values("rank")["tier"]) == [1, 1, 2, 2, 2, 3, 3, 3, 3, 3]
    seven = score(matrix({"a": [float(i) for i in range(7)]}), one_pillar({"code": "a"}))
    # ceil(1.4) = 2 and ceil(3.5) = 4
    assert list(seven.sort_values("rank")["tier"]) == [1, 1, 2, 2, 3, 3, 3]
    # 0.28 · 25 is 7.000000000000001 in floating point: still seven units in tier 1
    odd = score(matrix({"a": [float(i) for i in range(25)]}), one_pillar({"code": "a"}, tier_cutoffs=[0.28]))
    assert list(odd.sort_values("rank")["tier"]) == [1] * 7 + [2] * 18


def test_tied_units_share_a_tier() -> None:
    out = score(matrix({"a": [1, 5, 5, 0, 0]}), one_pillar({"code": "a"}, tier_cutoffs=[0.2]))
    assert list(out["tier"]) == [2, 1, 1, 2, 2]


def test_scope_country_against_region() -> None:
    values = {"a": [1.0, 2.0, 3.0, 10.0, 20.0]}
    countries = ["GTM", "GTM", "GTM", "HND", "HND"]
    m = matrix(values, countries)
    by_country = score(m, one_pillar({"code": "a"}))
    assert list(by_country["score"]) == pytest.approx([0, 50, 100, 0, 100])
    assert list(by_country["rank"]) == [3, 2, 1, 2, 1]
    assert by_country["rank_region"].isna().all()  # per-country scores are not comparable across countries
    region = score(m, one_pillar({"code": "a"}, scope="region"))
    assert list(region["score"]) == pytest.approx([0, 100 / 19, 200 / 19, 900 / 19, 100])
    assert list(region["rank"]) == [5, 4, 3, 2, 1]
    assert list(region["rank"]) == list(region["rank_region"])
    assert list(region["tier"]) == [3, 3, 2, 2, 1]


def test_unknown_indicator_is_an_invalid_parameter() -> None:
    m = matrix({"a": [1, 2]})
    with pytest.raises(InvalidParameter, match="nope"):
        score(m, one_pillar({"code": "a"}, {"code": "nope"}))


def test_output_shape_and_types() -> None:
    m = matrix({"mig": [1, 2, 3], "x": [3, NAN, 1]})
    out = score(m, Profile(migration=[{"code": "mig"}], pillars={"I": [{"code": "x"}]}))
    expected = ["score", "ranked", "rank", "rank_region", "tier", "pillar", "pillar_secondary"]
    expected += [f"pillar_{p}" for p in ("I", "II", "III", "IV", "V")]
    expected += [f"pillar_rank_{p}" for p in ("I", "II", "III", "IV", "V")] + [
        "migration",
        "coverage",
        "driver_coverage",
        "not_ranked_reason",
        "top_indicators",
        "local_score",
    ]
    assert list(out.columns) == expected
    assert list(out.index) == ["u0", "u1", "u2"]
    assert str(out["rank"].dtype) == "Int64" and str(out["tier"].dtype) == "Int64"
    assert out["score"].between(0, 100).all()


# properties


values_strategy = st.lists(
    st.lists(st.one_of(st.floats(-50, 50, allow_nan=False), st.just(NAN)), min_size=3, max_size=3),
    min_size=3,
    max_size=8,
)


def frame(rows: list[list[float]]) -> Matrix:
    """Three indicators over hypothesis rows: m (migration), x (I), y (II)."""
    return matrix({c: [r[j] for r in rows] for j, c in enumerate(("m", "x", "y"))})


def prop_profile(normaliser: str, w: tuple[float, float, float, float, float], mw: float) -> Profile:
    """A profile over the three hypothesis indicators."""
    return Profile(
        migration=[{"code": "m", "weight": w[0], "normalise": normaliser}],
        pillars={
            "I": [{"code": "x", "weight": w[1], "normalise": normaliser}],
            "II": [{"code": "y", "weight": w[2]}],
        },
        pillar_weights={"I": w[3], "II": w[4]},
        migration_weight=mw,
        min_coverage=0,
    )


weights_strategy = st.tuples(*[st.floats(0.1, 10)] * 5)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=values_strategy,
    unit=st.integers(0, 7),
    column=st.integers(0, 2),
    delta=st.floats(0.001, 100),
    normaliser=st.sampled_from(["minmax", "rank"]),
    w=weights_strategy,
    mw=st.floats(0, 1),
)
def test_worse_value_never_lowers_own_score(
    rows: list[list[float]],
    unit: int,
    column: int,
    delta: float,
    normaliser: str,
    w: tuple[float, float, float, float, float],
    mw: float,
) -> None:
    unit %= len(rows)
    if math.isnan(rows[unit][column]):
        rows[unit][column] = 0.0
    p = prop_profile(normaliser, w, mw)
    before = score(frame(rows), p)["score"].iloc[unit]
    rows[unit][column] += delta
    after = score(frame(rows), p)["score"].iloc[unit]
    if math.isnan(before):  # no component with weight: unscored either way
        assert math.isnan(after)
    else:
        assert after >= before - 1e-9


@settings(max_examples=60, deadline=None)
@given(
    rows=values_strategy,
    w=weights_strategy,
    factor=st.floats(0.01, 50),
    mw=st.floats(0, 1),
    across=st.sampled_from(["arithmetic", "geometric"]),
)
def test_scaling_all_weights_changes_nothing(
    rows: list[list[float]],
    w: tuple[float, float, float, float, float],
    factor: float,
    mw: float,
    across: str,
) -> None:
    m = frame(rows)
    base = prop_profile("minmax", w, mw).model_copy(update={"aggregation_across": across})
    scaled = prop_profile("minmax", tuple(v * factor for v in w), mw).model_copy(  # type: ignore[arg-type]
        update={"aggregation_across": across}
    )
    a, b = score(m, base), score(m, scaled)
    np.testing.assert_allclose(a["score"], b["score"], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(a["coverage"], b["coverage"], rtol=1e-12)
    assert a["rank"].equals(b["rank"]) and a["tier"].equals(b["tier"])
    assert list(a["pillar"]) == list(b["pillar"])


@settings(max_examples=30, deadline=None)
@given(rows=values_strategy, w=weights_strategy, mw=st.floats(0, 1))
def test_same_hash_same_result(
    rows: list[list[float]], w: tuple[float, float, float, float, float], mw: float
) -> None:
    p = prop_profile("rank", w, mw)
    spec = p.model_dump(mode="json")
    reordered = Profile.model_validate(json.loads(json.dumps(dict(reversed(list(spec.items()))))))
    assert reordered.hash() == p.hash()
    pd.testing.assert_frame_equal(score(frame(rows), p), score(frame(rows), reordered))


# missing data (issue 11): shrink never lets a missing value help; the driver gate; fallbacks keep their share


def test_shrink_counts_a_missing_value_as_the_least_severe_and_says_how_much_data_there_is() -> None:
    # min-max: a → 0, 1, .5 ; b → 1, 0, 0 ; c → 0, 1, NaN (weights 1, 1, 2)
    m = matrix({"a": [0, 2, 1], "b": [5, 1, 1], "c": [0, 3, NAN]})
    out = score(m, one_pillar({"code": "a"}, {"code": "b"}, {"code": "c", "weight": 2}))
    assert out.loc["u2", "score"] == pytest.approx(100 * (0.5 + 0 + 2 * 0) / 4)  # not (0.5 + 0) / 2
    reweighted = score(
        m, one_pillar({"code": "a"}, {"code": "b"}, {"code": "c", "weight": 2}, missing="reweight")
    )
    assert out.loc["u2", "score"] < reweighted.loc["u2", "score"]
    median = score(
        m, one_pillar({"code": "a"}, {"code": "b"}, {"code": "c", "weight": 2}, missing="country_median")
    )
    assert median.loc["u2", "score"] == pytest.approx(100 * (0.5 + 0 + 2 * 0.5) / 4)
    # an indicator the whole country lacks is "no data" for everyone, not a zero
    m2 = matrix({"a": [0, 2, 1], "d": [NAN, NAN, NAN]})
    out2 = score(m2, one_pillar({"code": "a"}, {"code": "d"}))
    assert list(out2["score"]) == pytest.approx([0, 100, 50])


def test_department_fallback_keeps_its_nominal_share() -> None:
    # migration: a municipal rate (weight 1) and a department figure standing in (weight 0.5)
    m = matrix({"mun": [0, 10, NAN, 5], "dep": [10, 10, 10, 0], "x": [1, 2, 3, 4]})
    m.fallback = pd.DataFrame({"dep": [True] * 4, "mun": [False] * 4, "x": [False] * 4}, index=m.values.index)
    p = Profile(migration=[{"code": "mun"}, {"code": "dep", "weight": 0.5}], pillars={"I": [{"code": "x"}]})
    out = score(m, p)
    # u2 has only the department figure (normalised 1): 0.5/1.5 of the migration component, never all of it
    assert out.loc["u2", "migration"] == pytest.approx(100 * (0.5 / 1.5) * 1.0)
    old = score(m, p.model_copy(update={"missing": "reweight"}))
    assert old.loc["u2", "migration"] == pytest.approx(100.0)  # the defect: the fallback took full weight


def test_driver_gate_lists_the_unranked_with_a_reason() -> None:
    m = matrix({"mig": [1, 2, 3, 4], "x": [1, NAN, 2, 3], "y": [1, NAN, 2, NAN]})
    m.fallback = pd.DataFrame(False, index=m.values.index, columns=["mig", "x", "y"])
    m.fallback.loc["u3", "x"] = True  # u3's pillar I value is a department's
    p = Profile(migration=[{"code": "mig"}], pillars={"I": [{"code": "x"}], "II": [{"code": "y"}]})
    out = score(m, p)
    assert list(out["driver_coverage"]) == pytest.approx([1.0, 0.0, 1.0, 0.0])
    assert list(out["ranked"]) == [True, False, True, False]
    assert "min_driver_coverage" in out.loc["u1", "not_ranked_reason"]
    assert out.loc["u0", "not_ranked_reason"] is None
    assert not math.isnan(out.loc["u1", "score"])  # scored, listed, just not ranked


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    values=st.lists(
        st.lists(st.floats(0, 100, allow_nan=False), min_size=4, max_size=4), min_size=4, max_size=9
    ),
    unit=st.integers(0, 8),
    column=st.integers(0, 3),
    weights=st.lists(st.floats(0.1, 3), min_size=4, max_size=4),
)
def test_removing_a_value_never_raises_a_rank_under_the_default(
    values: list[list[float]], unit: int, column: int, weights: list[float]
) -> None:
    """All else equal (fixed goalposts, so the others' normalised values do not move), taking away one of a
    unit's values never improves its score or its rank under the default treatment."""
    unit = unit % len(values)
    codes = ["m", "a", "b", "c"]
    m = matrix({c: [row[j] for row in values] for j, c in enumerate(codes)})
    item = {"normalise": "goalposts", "goalposts": (0.0, 100.0)}
    p = Profile(
        migration=[{"code": "m", "weight": weights[0], **item}],
        pillars={
            "I": [{"code": "a", "weight": weights[1], **item}, {"code": "b", "weight": weights[2], **item}],
            "IV": [{"code": "c", "weight": weights[3], **item}],
        },
        min_coverage=0,
        min_driver_coverage=0,
    )
    before = score(m, p)
    removed = m.values.copy()
    removed.iloc[unit, column] = NAN
    after = score(Matrix(removed, m.country, m.directions), p)
    key = m.values.index[unit]
    assert after.loc[key, "score"] <= before.loc[key, "score"] + 1e-9
    assert after.loc[key, "rank"] >= before.loc[key, "rank"]


def test_coverage_counts_only_what_the_country_has() -> None:
    # HND has no pillar II at all; GTM has it for one unit of two
    m = matrix(
        {"mig": [1, 2, 3, 4], "x": [1, 2, 3, 4], "y": [5, NAN, NAN, NAN]}, ["GTM", "GTM", "HND", "HND"]
    )
    p = Profile(migration=[{"code": "mig"}], pillars={"I": [{"code": "x"}], "II": [{"code": "y"}]})
    out = score(m, p)
    # weights: migration .5, I .25, II .25 ; HND: II is "no data" for the country → full coverage
    assert list(out["coverage"]) == pytest.approx([1.0, 0.75, 1.0, 1.0])
    assert out["ranked"].all()
