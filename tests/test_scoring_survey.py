"""Survey estimates: small-sample shares shrunk towards their department (empirical Bayes) or dropped, and their
sampling error, on synthetic matrices whose answer is computed by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from app.scoring.engine import Matrix, normalise, score
from app.scoring.profile import Profile
from app.scoring.survey import proportion_scale, sampling_variance, treat

# two departments of four municipios each: a survey share (%) with its effective sample; u0 rests on 4 people
INDEX = [f"u{i}" for i in range(8)]
SHARE = pd.Series([62.0, 40.0, 36.0, 44.0, 55.0, 58.0, 52.0, 56.0], index=INDEX)
N = pd.Series([4.0, 200.0, 150.0, 180.0, 100.0, 120.0, 80.0, 90.0], index=INDEX)
DEPT = pd.Series(["D1"] * 4 + ["D2"] * 4, index=INDEX)
SMALL = N < 30


def matrix(**extra: pd.Series) -> Matrix:
    values = pd.DataFrame({"share": SHARE, "other": np.arange(8.0), **extra}, index=INDEX)
    return Matrix(
        values,
        pd.Series("HND", index=INDEX),
        {c: 1 for c in values.columns},
        sample_size=pd.DataFrame({"share": N}, index=INDEX),
        small=pd.DataFrame({"share": SMALL}, index=INDEX),
        department=DEPT,
        scales={"share": 100.0, "other": None},
    )


def expected_shrinkage() -> tuple[float, float]:
    """u0's empirical-Bayes estimate and posterior variance, computed step by step from the docstring."""
    p = SHARE / 100
    mu = (N * p).groupby(DEPT).sum() / N.groupby(DEPT).sum()
    mu_i = DEPT.map(mu)
    v = mu_i * (1 - mu_i) / N
    tau2 = max(0.0, float(((p - mu_i) ** 2).sum() / (8 - 2) - v.mean()))
    b = v["u0"] / (v["u0"] + tau2)
    return 100 * (mu_i["u0"] + (1 - b) * (p["u0"] - mu_i["u0"])), 100**2 * (1 - b) * v["u0"]


def test_units_and_scales() -> None:
    assert proportion_scale("% of households") == 100.0
    assert proportion_scale("share of population (0-1)") == 1.0
    assert proportion_scale("weighted emigrants (EMR 2023) per 1000 residents") is None
    np.testing.assert_allclose(sampling_variance(np.array([50.0]), np.array([25.0]), 100.0), [100.0])
    np.testing.assert_allclose(sampling_variance(np.array([8.0]), np.array([16.0]), None), [4.0])


def test_a_small_sample_share_is_shrunk_towards_its_department() -> None:
    m = matrix()
    out = treat(m.values, m.sample_size, m.small, m.department, m.country, m.scales, "shrink")
    value, variance = expected_shrinkage()
    assert out.values.at["u0", "share"] == pytest.approx(value)
    assert out.se.at["u0", "share"] == pytest.approx(np.sqrt(variance))
    assert 40.0 < value < 55.0  # pulled well below the 62 % of four people, not all the way to D1's mean
    # values with enough sample, and every other indicator, are untouched
    pd.testing.assert_series_equal(out.values["share"].drop("u0"), SHARE.drop("u0"), check_names=False)
    pd.testing.assert_series_equal(out.values["other"], m.values["other"])
    assert out.se["other"].isna().all()
    assert out.se.at["u1", "share"] == pytest.approx(100 * np.sqrt(0.4 * 0.6 / 200))


def test_drop_and_keep() -> None:
    m = matrix()
    dropped = treat(m.values, m.sample_size, m.small, m.department, m.country, m.scales, "drop")
    assert np.isnan(dropped.values.at["u0", "share"]) and np.isnan(dropped.se.at["u0", "share"])
    kept = treat(m.values, m.sample_size, m.small, m.department, m.country, m.scales, "keep")
    assert kept.values.at["u0", "share"] == 62.0


def test_a_unit_alone_in_its_department_keeps_its_value() -> None:
    m = matrix()
    m.department = pd.Series(["D0"] + ["D1"] * 3 + ["D2"] * 4, index=INDEX)
    out = treat(m.values, m.sample_size, m.small, m.department, m.country, m.scales, "shrink")
    assert out.values.at["u0", "share"] == 62.0


def test_the_profile_option_decides_whether_four_people_rank_a_municipio_first() -> None:
    m = matrix()
    base = {"pillars": {"I": [{"code": "share"}]}, "min_driver_coverage": 0.0}
    keep = score(m, Profile(**base, small_samples="keep"))
    shrink = score(m, Profile(**base))  # the default
    drop = score(m, Profile(**base, small_samples="drop"))
    assert keep.at["u0", "rank"] == 1  # 62 % of four weighted respondents
    assert shrink.at["u0", "rank"] > 1
    assert np.isnan(normalise(m, Profile(**base, small_samples="drop")).at["u0", "share"])
    assert not drop.at["u0", "ranked"] and drop.at["u0", "not_ranked_reason"]
