"""Rank uncertainty (Monte Carlo) and weight sensitivity (Sobol', one-at-a-time)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from app.errors import InvalidParameter
from app.scoring.engine import Matrix, layout, score
from app.scoring.profile import Profile
from app.scoring.uncertainty import (
    MISSING_TREATMENTS,
    SOURCES,
    draw_ranks,
    rank_uncertainty,
    rank_variance_shares,
    sample_draws,
    sensitivity,
)


def synthetic(n: int, k: int, seed: int = 0, missing: float = 0.1) -> tuple[Matrix, Profile]:
    """A random n × k matrix over three countries, and a profile using every component."""
    rng = np.random.default_rng(seed)
    values = rng.lognormal(size=(n, k))
    values[rng.random((n, k)) < missing] = np.nan
    codes = [f"x{j:02d}" for j in range(k)]
    frame = pd.DataFrame(values, index=[f"u{i}" for i in range(n)], columns=codes)
    country = pd.Series(rng.choice(["GTM", "SLV", "HND"], n), index=frame.index)
    directions = {c: 1 if j % 3 else -1 for j, c in enumerate(codes)}
    norms = ["minmax", "rank", "zscore"]
    items = [{"code": c, "weight": 1 + j % 3, "normalise": norms[j % 3]} for j, c in enumerate(codes)]
    groups = np.array_split(np.arange(k), 6)
    profile = Profile(
        migration=[items[j] for j in groups[0]],
        pillars={
            p: [items[j] for j in g] for p, g in zip(("I", "II", "III", "IV", "V"), groups[1:], strict=True)
        },
        draws=200,
    )
    return Matrix(frame, country, directions), profile


def test_seeded_runs_are_identical() -> None:
    m, p = synthetic(60, 8)
    a = rank_uncertainty(m, p)
    pd.testing.assert_frame_equal(a, rank_uncertainty(m, p))
    other = rank_uncertainty(m, p.model_copy(update={"seed": p.seed + 1}))
    assert not a["p_top"].equals(other["p_top"]) or not a["tier_stability"].equals(other["tier_stability"])


def test_draws_follow_the_documented_distributions() -> None:
    _, p = synthetic(10, 8)
    p = p.model_copy(update={"draws": 4000, "migration_weight": 0.3})
    d = sample_draws(layout(p), p, [s for s in SOURCES if s != "exclusion"])
    assert set(np.unique(d.normaliser)) == {0, 1, 2} and set(np.unique(d.aggregation)) == {1, 2}
    assert set(np.unique(d.missing)) == {0, 1, 2} and (d.excluded == -1).all()
    assert d.migration_weight.mean() == pytest.approx(p.migration_weight, abs=0.01)
    lay = layout(p)
    np.testing.assert_allclose(d.pillar_weights.sum(axis=1), 1.0)
    np.testing.assert_allclose(
        d.pillar_weights.mean(axis=0), lay.pillar_weights / lay.pillar_weights.sum(), atol=0.01
    )
    for idx in lay.members:
        share = lay.indicator_weights[idx] / lay.indicator_weights[idx].sum()
        np.testing.assert_allclose(d.indicator_weights[:, idx].mean(axis=0), share, atol=0.01)


def test_nothing_to_vary_collapses_to_the_nominal_rank() -> None:
    # one component with one indicator: every normaliser and aggregation gives the same order
    # (values chosen so min-max stays above the 0.01 floor of the geometric mean except the minimum)
    values = [3.0, 9.0, 1.0, 7.0, 7.0, 5.0, 2.0, 8.0]
    m = Matrix(
        pd.DataFrame({"a": values}, index=[f"u{i}" for i in range(8)]),
        pd.Series(["GTM"] * 4 + ["HND"] * 4, index=[f"u{i}" for i in range(8)]),
        {"a": 1},
    )
    p = Profile(migration=[{"code": "a", "normalise": "zscore"}], draws=300, top_k=2)
    nominal = score(m, p)
    out = rank_uncertainty(m, p, nominal)
    assert list(out["rank_lo"]) == list(nominal["rank"])
    assert list(out["rank_hi"]) == list(nominal["rank"])
    assert list(out["rank_median"]) == [float(r) for r in nominal["rank"]]
    assert (out["tier_stability"] == 1.0).all() and out["robust"].all()
    assert list(out["p_top"]) == [1.0 if r <= 2 else 0.0 for r in nominal["rank"]]


def test_a_dominant_unit_is_top_and_robust() -> None:
    m, p = synthetic(40, 12, seed=3, missing=0.0)
    m.values.iloc[0] = m.values.max() * 2
    for code, direction in m.directions.items():
        if direction == -1:
            m.values.loc["u0", code] = m.values[code].min() / 2
    same_country = m.country == m.country.iloc[0]
    p = p.model_copy(update={"top_k": 1, "draws": 500})
    out = rank_uncertainty(m, p)
    assert out.loc["u0", "p_top"] == 1.0
    assert out.loc["u0", "robust"] and out.loc["u0", "rank_hi"] == 1
    others = out[same_country & (out.index != "u0")]
    assert (others["p_top"] == 0.0).all()


def test_intervals_contain_the_median_and_unranked_units_are_empty() -> None:
    m, p = synthetic(120, 10, seed=5, missing=0.3)
    p = p.model_copy(update={"min_coverage": 0.9})
    nominal = score(m, p)
    assert (~nominal["ranked"]).any() and nominal["ranked"].any()
    out = rank_uncertainty(m, p, nominal)
    ranked = out[nominal["ranked"]]
    assert (ranked["rank_lo"] <= ranked["rank_median"]).all()
    assert (ranked["rank_median"] <= ranked["rank_hi"]).all()
    assert (ranked["rank_lo"] < ranked["rank_hi"]).any()  # something does move
    assert str(out["rank_lo"].dtype) == "Int64" and str(out["rank_hi"].dtype) == "Int64"
    assert (ranked["rank_median"] * 2 == (ranked["rank_median"] * 2).round()).all()  # a rank or a half
    sizes = nominal[nominal["ranked"]].groupby(m.country)["ranked"].sum()
    assert (ranked["rank_hi"] <= m.country[ranked.index].map(sizes)).all()
    assert ranked["p_top"].between(0, 1).all() and ranked["tier_stability"].between(0, 1).all()
    assert (ranked["robust"] == (ranked["tier_stability"] >= 0.8)).all()
    unranked = out[~nominal["ranked"]]
    assert unranked["rank_median"].isna().all() and unranked["rank_lo"].isna().all()
    assert unranked["p_top"].isna().all() and not unranked["robust"].any()


def test_no_draws_gives_no_intervals() -> None:
    m, p = synthetic(20, 6)
    out = rank_uncertainty(m, p.model_copy(update={"draws": 0}))
    assert out["rank_median"].isna().all() and not out["robust"].any()


def test_a_thousand_draws_over_700_by_30() -> None:
    m, p = synthetic(700, 30)
    p = p.model_copy(update={"draws": 1000})
    nominal = score(m, p)
    out = rank_uncertainty(m, p, nominal)
    assert len(out) == 700 and out.loc[nominal["ranked"], "rank_median"].notna().all()
    assert (out.loc[nominal["ranked"], "rank_lo"] >= 1).all()


def sensitivity_case() -> tuple[Matrix, Profile]:
    """Pillars I and III vary across units; pillar II is constant, so its weight cannot change any rank."""
    rng = np.random.default_rng(11)
    index = [f"u{i}" for i in range(50)]
    frame = pd.DataFrame({"a": rng.random(50), "b": 4.0, "c": rng.random(50)}, index=index)
    m = Matrix(frame, pd.Series("GTM", index=index), {"a": 1, "b": 1, "c": 1})
    p = Profile(
        pillars={"I": [{"code": "a"}], "II": [{"code": "b"}], "III": [{"code": "c"}]},
        pillar_weights={"I": 1.0, "II": 2.0, "III": 1.0},
    )
    return m, p


def test_sobol_ranks_a_factor_that_matters_above_one_that_cannot() -> None:
    m, p = sensitivity_case()
    out = sensitivity(m, p, method="sobol", n=128)
    assert list(out.index) == ["pillar_weights.I", "pillar_weights.II", "pillar_weights.III"]
    assert list(out.columns) == ["nominal", "low", "high", "S1", "S1_conf", "ST", "ST_conf"]
    assert out.loc["pillar_weights.II", "ST"] == pytest.approx(0.0, abs=1e-12)
    assert out.loc["pillar_weights.I", "ST"] > 0.1 and out.loc["pillar_weights.III", "ST"] > 0.1
    assert out.loc["pillar_weights.II", ["low", "high"]].tolist() == [1.0, 3.0]
    pd.testing.assert_frame_equal(out, sensitivity(m, p, method="sobol", n=128))


def test_oat_ranks_a_factor_that_matters_above_one_that_cannot() -> None:
    m, p = sensitivity_case()
    out = sensitivity(m, p, method="oat")
    assert list(out.columns) == ["nominal", "low", "high", "rank_change_low", "rank_change_high"]
    assert out.loc["pillar_weights.II", ["rank_change_low", "rank_change_high"]].tolist() == [0.0, 0.0]
    assert (out.loc[["pillar_weights.I", "pillar_weights.III"], "rank_change_low"] > 0).all()
    assert (out.loc[["pillar_weights.I", "pillar_weights.III"], "rank_change_high"] > 0).all()


def test_migration_weight_is_a_factor_clipped_to_one() -> None:
    m, p = synthetic(80, 6, seed=2)
    p = p.model_copy(update={"migration_weight": 0.8})
    out = sensitivity(m, p, method="oat")
    assert out.index[0] == "migration_weight"
    assert out.loc["migration_weight", ["low", "high"]].tolist() == pytest.approx([0.4, 1.0])
    assert out.loc["migration_weight", "rank_change_low"] > 0
    assert not math.isnan(out.loc["migration_weight", "rank_change_high"])


def test_unknown_sensitivity_method() -> None:
    m, p = sensitivity_case()
    with pytest.raises(InvalidParameter):
        sensitivity(m, p, method="morris")


def test_each_draw_leaves_out_at_most_one_indicator_uniformly() -> None:
    _, p = synthetic(10, 8)
    p = p.model_copy(update={"draws": 9000})
    lay = layout(p)
    d = sample_draws(lay, p, ["exclusion"])
    counts = np.bincount(d.excluded + 1, minlength=len(lay.codes) + 1) / p.draws
    np.testing.assert_allclose(counts, 1 / (len(lay.codes) + 1), atol=0.01)
    for row, j in enumerate(d.excluded[:200]):
        expected = lay.indicator_weights.copy()
        if j >= 0:
            expected[j] = 0.0
        np.testing.assert_array_equal(d.indicator_weights[row], expected)


def test_sources_that_do_not_vary_hold_their_nominal_value() -> None:
    _, p = synthetic(10, 8)
    p = p.model_copy(update={"missing": "reweight"})
    lay = layout(p)
    d = sample_draws(lay, p, ["weights"], survey_values=3)
    assert (d.normaliser == 0).all() and (d.aggregation == 0).all() and (d.excluded == -1).all()
    assert (d.missing == MISSING_TREATMENTS.index("reweight")).all() and (d.noise == 0).all()
    assert d.noise.shape == (p.draws, 3)
    same = sample_draws(lay, p, ["weights", "normaliser"])
    np.testing.assert_array_equal(d.pillar_weights, same.pillar_weights)  # a source's draws don't shift
    with pytest.raises(InvalidParameter, match="unknown uncertainty sources"):
        sample_draws(lay, p, ["colour"])


def test_no_source_varying_reproduces_the_nominal_ranks() -> None:
    m, p = synthetic(90, 9, seed=2, missing=0.2)
    m = survey_matrix(m, n=12.0)
    nominal = score(m, p)
    ranks, _, ranked = draw_ranks(m, p, nominal, sources=())
    expected = nominal["rank"][ranked].to_numpy(dtype=np.int64)
    assert (ranks == expected[:, None]).all()


def survey_matrix(m: Matrix, n: float, column: str = "x00", scale: float | None = None) -> Matrix:
    """The same matrix with every value of one column a survey estimate with effective sample n."""
    sizes = pd.DataFrame(np.nan, index=m.values.index, columns=m.values.columns)
    sizes[column] = np.where(m.values[column].notna(), n, np.nan)
    return Matrix(m.values, m.country, m.directions, sample_size=sizes, scales={column: scale})


def test_sampling_error_moves_ranks_by_the_size_of_the_sample() -> None:
    m, p = synthetic(120, 6, seed=7, missing=0.0)
    p = p.model_copy(update={"draws": 400})
    nominal = score(m, p)
    spread = {}
    for n in (4.0, 400.0, 4e8):
        ranks, _, _ = draw_ranks(survey_matrix(m, n), p, nominal, sources=("sampling",))
        spread[n] = float(ranks.var(axis=1).mean())
    assert spread[4.0] > spread[400.0] > spread[4e8]
    assert spread[4e8] < 1e-3  # an exact census does not move


def test_missing_treatment_only_matters_where_values_are_missing() -> None:
    full, p = synthetic(80, 8, seed=4, missing=0.0)
    gappy, _ = synthetic(80, 8, seed=4, missing=0.25)
    for m, moves in ((full, False), (gappy, True)):
        ranks, _, _ = draw_ranks(m, p, score(m, p), sources=("missing",))
        assert bool((ranks.var(axis=1) > 0).any()) is moves


def test_variance_shares_name_the_source_that_moves_ranks() -> None:
    m, p = synthetic(100, 6, seed=9, missing=0.0)
    p = p.model_copy(update={"draws": 300})
    shares = rank_variance_shares(survey_matrix(m, 2.0, column="x03"), p)
    precise = rank_variance_shares(survey_matrix(m, 2000.0, column="x03"), p)
    assert list(shares.index) == [*SOURCES, "all"]
    assert shares.loc[list(SOURCES), "share"].sum() == pytest.approx(1.0)
    assert shares.loc["sampling", "share"] > 5 * precise.loc["sampling", "share"] > 0
    others = [s for s in SOURCES if s != "sampling"]  # they do not depend on the sample size
    np.testing.assert_allclose(shares.loc[others, "variance"], precise.loc[others, "variance"])
    assert shares.loc["missing", "variance"] == 0.0 and not shares.loc["missing", "applies"]
    assert shares.loc["all", "variance"] > shares.loc[list(SOURCES), "variance"].max()
    none = rank_variance_shares(m, p)  # no survey values: sampling cannot act
    assert none.loc["sampling", "variance"] == 0.0 and not none.loc["sampling", "applies"]
