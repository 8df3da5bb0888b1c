"""An empirical profile: which drivers go with observed out-migration, country by country, and a score that
blends observed migration with the migration those drivers predict. Association, not cause.

Per scope group (a country), for a profile with an `empirical` block:

- Outcome y: the unit's migration sub-score (0–1) as the profile scores it (its `migration` indicators,
  normalised and aggregated by the engine), on the units with a municipal value. Department figures are not
  outcomes.
- Drivers X: the profile's pillar indicators, normalised by the engine (0–1, higher = worse), those with a
  value for at least half of the country's units; a missing value is the country median of that driver
  (for the regression only), and each column is standardised (z-score over the country). Constant
  columns are left out.
- Model: scikit-learn's `ElasticNetCV` (least squares with an L1 + L2 penalty) with `alpha` (20 values on a
  log grid from the smallest that zeroes every coefficient down to 1/100 of it) and `l1_ratio` chosen by
  leave-one-department-out cross-validation (`LeaveOneGroupOut` on the departments, so a unit's
  neighbours in its department never inform its prediction). The country is fitted only with at least
  `min_units` units with an outcome in at least `min_departments` departments; otherwise it says so.
- Out-of-sample figures: nested leave-one-department-out. For each department the whole procedure
  (hyper-parameters included) is fitted on the other departments and predicts the held-out one; Spearman's
  ρ and R² = 1 − Σ(y − ŷ)² / Σ(y − ȳ)² (can be negative) are taken over those held-out predictions.
- Fitted model: the same procedure on all units; its coefficients are per standardised driver (a unit of
  one standard deviation of the driver across the country), so they compare across drivers.
- Score: blend × observed + (1 − blend) × predicted (ŷ clipped to [0, 1]), × 100. A unit without an observed
  outcome gets the profile's `missing` treatment (shrink: observed 0, so a missing outcome never raises a
  score; country_median; reweight: predicted only). A country not fitted is scored on observed migration
  alone.
- Lead pillar: local attribution, the pillar whose drivers add most to the unit's predicted migration above
  the country mean (Σ over the pillar's drivers of coefficient × standardised value); secondary the next;
  none when no pillar adds anything.
- Rank uncertainty: a cluster bootstrap over departments (profile.draws draws, seeded): each draw resamples
  a country's departments with replacement, refits the elastic net with the chosen hyper-parameters,
  predicts every unit, blends and ranks.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import ElasticNet, ElasticNetCV
from sklearn.model_selection import LeaveOneGroupOut
from threadpoolctl import threadpool_limits

from app.errors import InvalidParameter
from app.scoring.engine import (
    MIGRATION,
    FloatArray,
    Matrix,
    layout,
    normalise,
    nullable_int,
    rank_desc,
    scope_groups,
    score,
    tiers,
)
from app.scoring.profile import PILLARS, Profile

MAX_ITER = 5_000
N_ALPHAS = 20
EPS_ALPHA = 1e-2


@dataclass
class CountryFit:
    """One country's fit, or why there is none."""

    country: str
    status: str  # "fitted" or "not fitted: <reason>"
    units: int = 0
    departments: int = 0
    alpha: float | None = None
    l1_ratio: float | None = None
    oos_spearman: float | None = None
    oos_r2: float | None = None
    in_sample_r2: float | None = None
    coefficients: dict[str, float] = field(default_factory=dict)
    left_out: list[str] = field(default_factory=list)  # drivers without enough data, or constant

    def summary(self, pillar_of: dict[str, str]) -> dict[str, Any]:
        """JSON-ready figures, coefficients largest first."""
        return {
            "country": self.country,
            "status": self.status,
            "units_with_outcome": self.units,
            "departments": self.departments,
            "alpha": self.alpha,
            "l1_ratio": self.l1_ratio,
            "out_of_sample": {"spearman": self.oos_spearman, "r2": self.oos_r2},
            "in_sample_r2": self.in_sample_r2,
            "coefficients": [
                {"code": c, "pillar": pillar_of.get(c), "coefficient": round(v, 5)}
                for c, v in sorted(self.coefficients.items(), key=lambda kv: -abs(kv[1]))
            ],
            "drivers_left_out": self.left_out,
        }


@dataclass
class _Design:
    """One country's regression inputs."""

    rows: np.ndarray  # positions of the country's units in the matrix
    codes: list[str]  # drivers used
    z: FloatArray  # standardised drivers, units × drivers
    y: FloatArray  # outcome (NaN: none)
    dept: np.ndarray
    left_out: list[str]


def _design(matrix: Matrix, profile: Profile, x: pd.DataFrame, y: FloatArray, rows: np.ndarray) -> _Design:
    drivers = [i.code for p in PILLARS for i in profile.pillars.get(p, [])]
    block = x.iloc[rows][drivers]
    coverage = block.notna().mean()
    use, left_out = [], []
    for code in drivers:
        col = block[code]
        if coverage[code] < 0.5 or col.std(ddof=0) == 0 or np.isnan(col.std(ddof=0)):
            left_out.append(code)
        else:
            use.append(code)
    filled = block[use].fillna(block[use].median())
    z = ((filled - filled.mean()) / filled.std(ddof=0)).to_numpy(dtype=np.float64)
    dept = (
        matrix.department.reindex(matrix.values.index).to_numpy()[rows]
        if matrix.department is not None
        else np.zeros(len(rows))
    )
    return _Design(rows, use, z, y[rows], dept, left_out)


def department_folds(dept: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Leave-one-department-out folds (train, test positions): each test set is one whole department."""
    return list(LeaveOneGroupOut().split(np.zeros(len(dept)), groups=dept))


def _fit_cv(z: FloatArray, y: FloatArray, dept: np.ndarray, l1_ratios: tuple[float, ...]) -> ElasticNetCV:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        cv = department_folds(dept)
        return ElasticNetCV(
            l1_ratio=list(l1_ratios), alphas=N_ALPHAS, eps=EPS_ALPHA, cv=cv, max_iter=MAX_ITER, n_jobs=1
        ).fit(z, y)


def _fit(profile: Profile, d: _Design, country: str) -> tuple[CountryFit, FloatArray | None, Any]:
    """Fit one country; return its summary, predictions for every unit (None when not fitted) and the model."""
    spec = profile.empirical
    assert spec is not None
    has = ~np.isnan(d.y)
    units, departments = int(has.sum()), len(set(d.dept[has]))
    if units < spec.min_units or departments < spec.min_departments:
        return (
            CountryFit(
                country,
                f"not fitted: {units} units with an outcome in {departments} departments, fewer than "
                f"min_units {spec.min_units} or min_departments {spec.min_departments}",
                units,
                departments,
                left_out=d.left_out,
            ),
            None,
            None,
        )
    if not d.codes:
        return CountryFit(country, "not fitted: no driver with data", units, departments), None, None
    z, y, dept = d.z[has], d.y[has], d.dept[has]
    oos = np.empty(units)
    for train, test in department_folds(dept):
        inner = _fit_cv(z[train], y[train], dept[train], spec.l1_ratios)
        oos[test] = inner.predict(z[test])
    model = _fit_cv(z, y, dept, spec.l1_ratios)
    sst = float(((y - y.mean()) ** 2).sum())
    rho = spearmanr(y, oos).statistic if np.ptp(oos) > 0 else 0.0
    fit = CountryFit(
        country,
        "fitted",
        units,
        departments,
        alpha=float(model.alpha_),
        l1_ratio=float(model.l1_ratio_),
        oos_spearman=round(float(rho), 4),
        oos_r2=round(1 - float(((y - oos) ** 2).sum()) / sst, 4) if sst > 0 else None,
        in_sample_r2=round(float(model.score(z, y)), 4),
        coefficients={c: float(b) for c, b in zip(d.codes, model.coef_, strict=True)},
        left_out=d.left_out,
    )
    return fit, np.asarray(model.predict(d.z), dtype=np.float64), model


def _blend(observed: FloatArray, predicted: FloatArray | None, profile: Profile) -> FloatArray:
    """The final 0–1 score of a country's units (see the module doc for missing outcomes)."""
    spec = profile.empirical
    assert spec is not None
    has = ~np.isnan(observed)
    fill = (
        0.0
        if profile.missing == "shrink"
        else float(np.nanmedian(observed))
        if profile.missing == "country_median" and has.any()
        else np.nan
    )
    filled = np.where(has, observed, fill)
    if predicted is None:
        return filled
    p = np.clip(predicted, 0.0, 1.0)
    # reweight (and a fill that is still missing): the predicted part alone
    return np.where(np.isnan(filled), p, spec.blend * filled + (1 - spec.blend) * p)


@dataclass
class EmpiricalRun:
    """The nominal result (engine.score's columns), the rank uncertainty and the fit per country."""

    nominal: pd.DataFrame
    uncertainty: pd.DataFrame
    fits: list[dict[str, Any]]


def run(matrix: Matrix, profile: Profile) -> EmpiricalRun:
    """Fit, score, tag and bootstrap an empirical profile (see the module doc). BLAS runs single-threaded: the
    many small solves of the coordinate descent only pay for thread start-up otherwise."""
    with threadpool_limits(limits=1, user_api="blas"):
        return _run(matrix, profile)


def _run(matrix: Matrix, profile: Profile) -> EmpiricalRun:
    if profile.empirical is None:
        raise InvalidParameter(f"profile {profile.id} has no 'empirical' block")
    lay = layout(profile)
    base = score(matrix, profile)  # coverage, gates, pillar sub-scores and ranks of the drivers
    x = normalise(matrix, profile)
    observed = base["migration"].to_numpy(dtype=np.float64) / 100.0
    groups = scope_groups(matrix, profile)
    country = matrix.country.reindex(matrix.values.index).fillna("").to_numpy()
    final = np.full(len(base), np.nan)
    pillar: list[str | None] = [None] * len(base)
    secondary: list[str | None] = [None] * len(base)
    tops: list[list[dict[str, Any]]] = [[] for _ in range(len(base))]
    pillar_of = {c: comp for c, comp in profile.component_of().items() if comp != MIGRATION}
    fits: list[dict[str, Any]] = []
    models: dict[int, tuple[_Design, Any]] = {}
    for g in np.unique(groups):
        rows = np.flatnonzero(groups == g)
        name = str(country[rows[0]]) if profile.scope == "country" else "region"
        d = _design(matrix, profile, x, observed, rows)
        fit, predicted, model = _fit(profile, d, name)
        fits.append(fit.summary(pillar_of))
        final[rows] = _blend(observed[rows], predicted, profile)
        if model is None:
            continue
        models[int(g)] = (d, model)
        contribution = d.z * model.coef_  # units × drivers: what each driver adds to the prediction
        by_pillar = {
            p: contribution[:, [j for j, c in enumerate(d.codes) if pillar_of[c] == p]].sum(axis=1)
            for p in lay.pillars
        }
        for i, r in enumerate(rows):
            adds = sorted(
                ((v[i], p) for p, v in by_pillar.items() if v[i] > 1e-12), key=lambda t: (-t[0], t[1])
            )
            pillar[r] = adds[0][1] if adds else None
            secondary[r] = adds[1][1] if len(adds) > 1 else None
            order = np.argsort(-contribution[i])[:5]
            tops[r] = [
                {
                    "code": d.codes[j],
                    "value": float(matrix.values.iloc[r][d.codes[j]]),
                    "normalised": float(x.iloc[r][d.codes[j]]),
                    "contribution": float(contribution[i, j] * 100 * (1 - profile.empirical.blend)),
                }
                for j in order
                if contribution[i, j] > 0 and not np.isnan(x.iloc[r][d.codes[j]])
            ]
    out = base.copy()
    ranked = base["ranked"].to_numpy(dtype=bool) & ~np.isnan(final)
    out["score"] = final * 100.0
    out["local_score"] = final * 100.0
    out["ranked"] = ranked
    rank = np.full(len(out), -1, dtype=np.int64)
    tier = rank.copy()
    if ranked.any():
        rank[ranked] = rank_desc(final[ranked, None], groups[ranked])[:, 0]
        tier[ranked] = tiers(rank[ranked], groups[ranked], profile.tier_cutoffs)
    out["rank"] = nullable_int(rank, ranked)
    out["tier"] = nullable_int(tier, ranked)
    out["rank_region"] = nullable_int(rank, ranked & (profile.scope == "region"))
    out["pillar"] = pd.Series(pillar, index=out.index, dtype=object)
    out["pillar_secondary"] = pd.Series(secondary, index=out.index, dtype=object)
    out["top_indicators"] = tops
    out["not_ranked_reason"] = np.where(ranked, None, base["not_ranked_reason"].fillna("no score"))
    unc = _bootstrap(matrix, profile, out, observed, groups, models)
    return EmpiricalRun(out, unc, fits)


def _bootstrap(
    matrix: Matrix,
    profile: Profile,
    nominal: pd.DataFrame,
    observed: FloatArray,
    groups: np.ndarray,
    models: dict[int, tuple[_Design, Any]],
) -> pd.DataFrame:
    """Rank intervals from a cluster bootstrap over departments (see the module doc), in the columns of
    `uncertainty.rank_uncertainty`."""
    from app.scoring.uncertainty import summarise

    ranked = nominal["ranked"].to_numpy(dtype=bool)
    draws = profile.draws
    if draws == 0 or not ranked.any():
        return summarise(None, nominal, ranked, groups, profile)
    rng = np.random.default_rng(profile.seed)
    scores = np.tile(nominal["score"].to_numpy(dtype=np.float64)[:, None] / 100.0, (1, draws))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _, (d, model) in sorted(models.items()):
            has = ~np.isnan(d.y)
            depts = np.unique(d.dept[has])
            for k in range(draws):
                pick = rng.choice(depts, size=len(depts), replace=True)
                idx = np.concatenate([np.flatnonzero(has & (d.dept == p)) for p in pick])
                refit = ElasticNet(alpha=model.alpha_, l1_ratio=model.l1_ratio_, max_iter=MAX_ITER)
                refit.fit(d.z[idx], d.y[idx])
                scores[d.rows, k] = _blend(observed[d.rows], refit.predict(d.z), profile)
    ranks = rank_desc(scores[ranked], groups[ranked])
    return summarise(ranks, nominal, ranked, groups, profile)
