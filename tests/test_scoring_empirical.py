"""The empirical profile on synthetic data whose answer is known: a planted driver is recovered, folds never
share a department, a country with too few outcomes is not fitted, a missing outcome never helps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from app.scoring.empirical import department_folds, run
from app.scoring.engine import Matrix
from app.scoring.profile import Profile


def planted(units_per_dept: int = 20, departments: int = 8, seed: int = 1) -> Matrix:
    """Out-migration = 3 × driver a (pillar I) + a little noise; b (II) and c (IV) are unrelated."""
    rng = np.random.default_rng(seed)
    n = units_per_dept * departments
    index = pd.Index([f"u{i:03d}" for i in range(n)])
    a, b, c = rng.uniform(0, 10, n), rng.uniform(0, 10, n), rng.uniform(0, 10, n)
    values = pd.DataFrame({"mig": 3 * a + rng.normal(0, 1, n), "a": a, "b": b, "c": c}, index=index)
    dept = pd.Series([f"D{i // units_per_dept}" for i in range(n)], index=index)
    return Matrix(values, pd.Series("GTM", index=index), dict.fromkeys(values.columns, 1), department=dept)


def profile(**empirical: object) -> Profile:
    return Profile(
        id="emp",
        migration=[{"code": "mig"}],
        pillars={"I": [{"code": "a"}], "II": [{"code": "b"}], "IV": [{"code": "c"}]},
        empirical={"min_units": 30, **empirical},
        draws=40,
    )


def test_a_planted_driver_is_recovered() -> None:
    m = planted()
    result = run(m, profile())
    (fit,) = result.fits
    assert fit["status"] == "fitted" and fit["units_with_outcome"] == 160 and fit["departments"] == 8
    coefs = {c["code"]: c["coefficient"] for c in fit["coefficients"]}
    assert coefs["a"] > 0.2 and abs(coefs["b"]) < 0.02 and abs(coefs["c"]) < 0.02
    assert fit["coefficients"][0]["code"] == "a" and fit["coefficients"][0]["pillar"] == "I"
    assert fit["out_of_sample"]["spearman"] > 0.9 and fit["out_of_sample"]["r2"] > 0.8
    nominal = result.nominal
    high_a = m.values["a"] > m.values["a"].quantile(0.75)
    assert (nominal.loc[high_a, "pillar"] == "I").all()  # the pillar whose drivers add most leads
    assert nominal["ranked"].all() and sorted(nominal["rank"]) == list(range(1, 161))
    unc = result.uncertainty
    assert (unc["rank_lo"] <= nominal["rank"]).all() and (nominal["rank"] <= unc["rank_hi"]).all()


def test_folds_never_share_a_department() -> None:
    dept = planted().department
    assert dept is not None
    values = dept.to_numpy()
    folds = department_folds(values)
    assert len(folds) == 8
    for train, test in folds:
        assert len(set(values[test])) == 1 and not set(values[train]) & set(values[test])


def test_too_few_outcomes_are_not_fitted() -> None:
    m = planted()
    m.values.loc[m.values.index[25:], "mig"] = np.nan  # 25 outcomes in two departments
    result = run(m, profile())
    (fit,) = result.fits
    assert fit["status"].startswith("not fitted") and "min_units 30" in fit["status"]
    assert fit["coefficients"] == [] and result.nominal["pillar"].isna().all()


def test_a_missing_outcome_never_raises_the_score() -> None:
    m = planted()
    before = run(m, profile()).nominal
    unit = before["score"].idxmax()
    m.values.loc[unit, "mig"] = np.nan
    after = run(m, profile()).nominal
    assert after.at[unit, "score"] < before.at[unit, "score"]


def test_a_shuffled_outcome_predicts_nothing_out_of_sample() -> None:
    m = planted()
    m.values["mig"] = np.random.default_rng(5).permutation(m.values["mig"].to_numpy())
    (fit,) = run(m, profile()).fits
    assert fit["out_of_sample"]["spearman"] < 0.3 and fit["out_of_sample"]["r2"] < 0.1


def test_an_empirical_profile_needs_an_outcome_and_drivers() -> None:
    with pytest.raises(ValueError, match="needs migration indicators"):
        Profile(pillars={"I": [{"code": "a"}]}, empirical={})
