"""Survey estimates in a score: small-sample shares shrunk towards their department or dropped, and the
sampling error the Monte Carlo draws from.

A value with a known effective sample size `n` (Kish, (Σw)²/Σw², stored in `observations.sample_size`) is a
survey estimate. Its sampling variance follows from the kind of estimate, read from the indicator's unit:

- a share (a percentage, scale 100, or a 0–1 share, scale 1): p = y / scale and
  Var(y) = scale² · p(1 − p) / n, the binomial variance with the design effect folded into the Kish n;
- anything else is a rate of a weighted total (e.g. weighted emigrants per 1,000 residents): under Poisson
  sampling the Horvitz–Thompson total has Var ≈ Σw², so its relative variance is Σw²/(Σw)² = 1/n and
  Var(y) = y² / n.

Small samples (the `small_sample` flag, set by the loaders below SMALL_SAMPLE_MIN effective records) are treated
per the profile's `small_samples`:

- `shrink` (default): empirical Bayes towards the unit's department (Morris 1983, the method-of-moments
  Fay–Herriot estimator without covariates). Per indicator and department d, over the units with a value
  and a sample size: the prior mean μ_d = Σ n_i y_i / Σ n_i, each unit's sampling variance v_i = V(μ_d, n_i)
  (the variance function above at the department mean, which is stable where y_i is 0 or 100 %), and, per
  country, the between-unit variance τ² = max(0, Σ (y_i − μ_d)² / (m − D) − mean v_i) over the m units of the
  D departments holding at least two. The shrinkage factor is B_i = v_i / (v_i + τ²) and the estimate
  ỹ_i = μ_d + (1 − B_i)(y_i − μ_d), with posterior variance (1 − B_i) v_i. Only flagged values are replaced;
  a unit alone in its department keeps its value (its department mean is itself); a country where τ² cannot
  be estimated (m − D < 1) keeps its values.
- `drop`: flagged values become missing (the profile's `missing` treatment then applies).
- `keep`: flagged values are used as published.

The standard error of every survey value (after the treatment) is what the Monte Carlo perturbs
(`app.scoring.uncertainty`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

SHARE_PERCENT = re.compile(r"^\s*%|%\s+of\b|\bpercent", re.IGNORECASE)
SHARE_UNIT = re.compile(r"\bshare\b.*\(0\s*-\s*1\)", re.IGNORECASE)


def proportion_scale(unit: str) -> float | None:
    """100 for a percentage, 1 for a 0–1 share, None for anything else (a rate of a weighted total)."""
    if SHARE_PERCENT.search(unit):
        return 100.0
    if SHARE_UNIT.search(unit):
        return 1.0
    return None


def sampling_variance(value: np.ndarray, n: np.ndarray, scale: float | None) -> np.ndarray:
    """Sampling variance of survey estimates `value` with effective samples `n` (see the module doc)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if scale is None:
            return np.asarray(value**2 / n, dtype=np.float64)
        p = np.clip(value / scale, 0.0, 1.0)
        return np.asarray(scale**2 * p * (1.0 - p) / n, dtype=np.float64)


@dataclass(frozen=True)
class Survey:
    """Values after the small-sample treatment, and the standard error of each survey value (NaN elsewhere)."""

    values: pd.DataFrame
    se: pd.DataFrame


def treat(
    values: pd.DataFrame,
    sample_size: pd.DataFrame | None,
    small: pd.DataFrame | None,
    department: pd.Series | None,
    country: pd.Series,
    scales: dict[str, float | None],
    how: str,
) -> Survey:
    """Apply the small-sample treatment `how` (shrink, drop, keep) to `values` (units × indicators) and return
    the standard errors of the survey values."""
    out = values.copy()
    se = pd.DataFrame(np.nan, index=values.index, columns=values.columns)
    if sample_size is None:
        return Survey(out, se)
    n_all = sample_size.reindex(index=values.index, columns=values.columns)
    flagged = (
        small.reindex(index=values.index, columns=values.columns).astype("boolean").fillna(False).astype(bool)
        if small is not None
        else pd.DataFrame(False, index=values.index, columns=values.columns)
    )
    dept = department.reindex(values.index) if department is not None else None
    for code in values.columns:
        n = n_all[code].to_numpy(dtype=np.float64)
        y = values[code].to_numpy(dtype=np.float64)
        survey = ~np.isnan(n) & (n > 0) & ~np.isnan(y)
        if not survey.any():
            continue
        scale = scales.get(code)
        flag = flagged[code].to_numpy() & survey
        new = y.copy()
        var = sampling_variance(y, n, scale)
        if how == "drop":
            new[flag] = np.nan
            var[flag] = np.nan
        elif how == "shrink" and flag.any() and dept is not None:
            shrunk, post = _empirical_bayes(
                y, n, survey, dept.to_numpy(), country.reindex(values.index), scale
            )
            new[flag] = shrunk[flag]
            var[flag] = post[flag]
        out[code] = new
        se[code] = np.where(survey, np.sqrt(var), np.nan)
    return Survey(out, se)


def _empirical_bayes(
    y: np.ndarray,
    n: np.ndarray,
    survey: np.ndarray,
    dept: np.ndarray,
    country: pd.Series,
    scale: float | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Shrunk estimates and posterior variances for every survey value (see the module doc)."""
    shrunk = y.copy()
    post = sampling_variance(y, n, scale)
    frame = pd.DataFrame({"y": y, "n": n, "dept": dept, "country": country.to_numpy()})[survey]
    frame["ny"] = frame["n"] * frame["y"]
    sums = frame.groupby("dept")[["ny", "n"]].transform("sum")
    frame["mu"] = sums["ny"] / sums["n"]
    frame["v"] = sampling_variance(frame["mu"].to_numpy(), frame["n"].to_numpy(), scale)
    frame["size"] = frame.groupby("dept")["y"].transform("size")
    for _, block in frame.groupby("country"):
        pooled = block[block["size"] >= 2]
        dof = len(pooled) - pooled["dept"].nunique()
        if dof < 1:
            continue
        tau2 = max(0.0, float(((pooled["y"] - pooled["mu"]) ** 2).sum() / dof - pooled["v"].mean()))
        with np.errstate(divide="ignore", invalid="ignore"):
            b = np.where(block["v"] + tau2 > 0, block["v"] / (block["v"] + tau2), 0.0)
        idx = block.index.to_numpy()
        shrunk[idx] = block["mu"] + (1 - b) * (block["y"] - block["mu"])
        post[idx] = (1 - b) * block["v"]
    return shrunk, post
