"""Rank uncertainty (seeded Monte Carlo) and weight sensitivity (Sobol' via SALib, or one-at-a-time).

Follows the uncertainty and sensitivity steps of the OECD/JRC Handbook on Constructing Composite
Indicators (2008, steps 7–8) and COINr's `get_sensitivity()`: the methodological choices are sampled
around the profile and the resulting ranks summarised per unit.

Monte Carlo (`rank_uncertainty`), per draw, from `numpy.random.default_rng(profile.seed)` in this order:
1. a normaliser, uniform over {the profile's own per-indicator choice, minmax, rank} (the first may
   coincide with minmax; outlier treatment and direction always stay the profile's);
2. an aggregation, uniform over {arithmetic, geometric}, used both within and across components;
3. the migration weight from Beta(κ·m, κ·(1 − m)) with κ = `dirichlet_concentration` and m the
   effective migration weight (fixed when m is 0 or 1, i.e. when one side of the profile is absent);
4. the listed pillars' weights from Dirichlet(κ · w / Σw) over those with a positive weight;
5. within each component, in profile order, the indicator weights from Dirichlet(κ · w / Σw) over those
   with a positive weight (zero weights stay zero; a single indicator keeps weight 1).
Each draw ranks the units ranked in the nominal run (the set is held fixed so ranks compare; a unit
whose draw score is missing goes last) within their scope group, ties sharing the lowest rank, and
assigns tiers with the profile's cut-offs over that same set. Summaries per unit: rank_median (numpy
median, may be a half), rank_lo / rank_hi the 5th / 95th percentiles taken as observed ranks
(numpy 'lower' / 'higher', so the interval never shrinks by interpolation), p_top the share of draws
with rank ≤ top_k, tier_stability the share of draws in the nominal tier, robust = tier_stability ≥ 0.8.

Sensitivity (`sensitivity`): factors are the migration weight (only when the profile has migration and
pillar indicators, otherwise it cannot act) and each listed pillar's weight, each varied over
[0.5×, 1.5×] its profile value (the migration weight clipped to [0, 1]); the profile's normalisers and
aggregation are kept. The output is the mean absolute change in scope-group rank against the nominal
ranking, over the nominally ranked units. A factor whose range is empty (a zero weight) gets zero
indices without being sampled. 'sobol': SALib's Saltelli scheme (`SALib.sample.sobol`, n base samples,
n·(F + 2) model runs, no second order) and `SALib.analyze.sobol` (S1, ST, 95 % bootstrap intervals),
both seeded with profile.seed; all indices 0 when the metric never varies. 'oat': the metric with one
factor at its low or high end and the others nominal. Columns: nominal, low, high, then S1, S1_conf,
ST, ST_conf or rank_change_low, rank_change_high; one row per factor, indexed by its profile field path.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from SALib.analyze import sobol as sobol_analyze
from SALib.sample import sobol as sobol_sample

from app.errors import InvalidParameter
from app.scoring.engine import (
    FloatArray,
    IntArray,
    Layout,
    Matrix,
    final_scores,
    layout,
    normalise,
    rank_desc,
    scope_groups,
    score,
    tiers,
)
from app.scoring.profile import Aggregation, Normaliser, Profile

AGGREGATIONS: tuple[Aggregation, ...] = ("arithmetic", "geometric")
ALT_NORMALISERS: tuple[Normaliser, ...] = ("minmax", "rank")
ROBUST_SHARE = 0.8
CHUNK_CELLS = 500_000
UNCERTAINTY_COLUMNS = ["rank_median", "rank_lo", "rank_hi", "p_top", "tier_stability", "robust"]


@dataclass(frozen=True)
class Draws:
    """Sampled methodological choices, one row per draw."""

    normaliser: IntArray
    aggregation: IntArray
    migration_weight: FloatArray
    pillar_weights: FloatArray
    indicator_weights: FloatArray


def _dirichlet(rng: np.random.Generator, weights: FloatArray, concentration: float, size: int) -> FloatArray:
    """Dirichlet draws centred on weights/Σweights over the positive weights; zero weights stay zero."""
    out = np.zeros((size, len(weights)))
    positive = weights > 0
    if positive.sum() == 1:
        out[:, positive] = 1.0
    elif positive.sum() > 1:
        share = weights[positive] / weights[positive].sum()
        out[:, positive] = rng.dirichlet(concentration * share, size=size)
    return out


def sample_draws(lay: Layout, profile: Profile) -> Draws:
    """Sample profile.draws methodological variants with profile.seed, in the documented order."""
    rng = np.random.default_rng(profile.seed)
    d, kappa = profile.draws, profile.dirichlet_concentration
    normaliser = rng.integers(0, 1 + len(ALT_NORMALISERS), size=d)
    aggregation = rng.integers(0, len(AGGREGATIONS), size=d)
    m = lay.migration_weight
    mw = rng.beta(kappa * m, kappa * (1 - m), size=d) if 0 < m < 1 else np.full(d, m)
    pw = _dirichlet(rng, lay.pillar_weights, kappa, d)
    wi = np.zeros((d, len(lay.codes)))
    for idx in lay.members:
        wi[:, idx] = _dirichlet(rng, lay.indicator_weights[idx], kappa, d)
    return Draws(normaliser, aggregation, mw, pw, wi)


def _chunks(selection: IntArray, rows: int) -> Iterator[IntArray]:
    """Split draw indices so that each aggregation holds about CHUNK_CELLS cells per array."""
    step = max(1, CHUNK_CELLS // max(rows, 1))
    for start in range(0, len(selection), step):
        yield selection[start : start + step]


def rank_uncertainty(matrix: Matrix, profile: Profile, nominal: pd.DataFrame | None = None) -> pd.DataFrame:
    """Monte Carlo rank intervals, top-k probability and tier stability per nominally ranked unit."""
    nominal = score(matrix, profile) if nominal is None else nominal
    index = matrix.values.index
    out = pd.DataFrame(
        {
            "rank_median": np.nan,
            "rank_lo": pd.array([pd.NA] * len(index), dtype="Int64"),
            "rank_hi": pd.array([pd.NA] * len(index), dtype="Int64"),
            "p_top": np.nan,
            "tier_stability": np.nan,
            "robust": False,
        },
        index=index,
    )
    ranked = nominal["ranked"].reindex(index).fillna(False).to_numpy(dtype=bool)
    if profile.draws == 0 or not ranked.any():
        return out
    lay = layout(profile)
    groups = scope_groups(matrix, profile)[ranked]
    nominal_tier = nominal["tier"].reindex(index).to_numpy()[ranked].astype(np.int64)
    draws = sample_draws(lay, profile)

    variants: list[Normaliser | None] = [None, *ALT_NORMALISERS]
    ranks = np.empty((int(ranked.sum()), profile.draws), dtype=np.int32)
    for v, method in enumerate(variants):
        chosen = np.flatnonzero(draws.normaliser == v)
        if not len(chosen):
            continue
        x = normalise(matrix, profile, method_override=method, fill=True).to_numpy()[ranked]
        for a, how in enumerate(AGGREGATIONS):
            for chunk in _chunks(chosen[draws.aggregation[chosen] == a], len(x)):
                final = final_scores(
                    x,
                    lay,
                    indicator_weights=draws.indicator_weights[chunk],
                    pillar_weights=draws.pillar_weights[chunk],
                    migration_weight=draws.migration_weight[chunk],
                    within=how,
                    across=how,
                )
                ranks[:, chunk] = rank_desc(final, groups)

    median = np.empty(len(ranks))
    lo = np.empty(len(ranks), dtype=np.int64)
    hi = np.empty(len(ranks), dtype=np.int64)
    p_top = np.empty(len(ranks))
    stable = np.empty(len(ranks))
    step = max(1, CHUNK_CELLS // profile.draws)
    for start in range(0, len(ranks), step):
        rows = slice(start, start + step)
        block = ranks[rows]
        median[rows] = np.median(block, axis=1)
        lo[rows] = np.quantile(block, 0.05, axis=1, method="lower")
        hi[rows] = np.quantile(block, 0.95, axis=1, method="higher")
        p_top[rows] = (block <= profile.top_k).mean(axis=1)
        tier = tiers(block.astype(np.int64), groups[rows], profile.tier_cutoffs, sizes=np.bincount(groups))
        stable[rows] = (tier == nominal_tier[rows, None]).mean(axis=1)

    out.loc[ranked, "rank_median"] = median
    out.loc[ranked, "rank_lo"] = lo
    out.loc[ranked, "rank_hi"] = hi
    out.loc[ranked, "p_top"] = p_top
    out.loc[ranked, "tier_stability"] = stable
    out.loc[ranked, "robust"] = stable >= ROBUST_SHARE - 1e-12
    return out


@dataclass(frozen=True)
class _Factor:
    """One sensitivity factor: its name, nominal value and range."""

    name: str
    nominal: float
    low: float
    high: float


def _factors(lay: Layout) -> list[_Factor]:
    """Migration weight (when it can act) and each listed pillar's weight, over [0.5×, 1.5×]."""
    out: list[_Factor] = []
    if lay.has_migration and lay.pillars:
        m = lay.migration_weight
        out.append(_Factor("migration_weight", m, 0.5 * m, min(1.5 * m, 1.0)))
    for p, w in zip(lay.pillars, lay.pillar_weights, strict=True):
        out.append(_Factor(f"pillar_weights.{p}", float(w), 0.5 * float(w), 1.5 * float(w)))
    return out


def sensitivity(
    matrix: Matrix, profile: Profile, *, method: Literal["sobol", "oat"] | str = "sobol", n: int = 256
) -> pd.DataFrame:
    """How much each weight moves the ranking: Sobol' indices (SALib) or one-at-a-time rank changes."""
    if method not in ("sobol", "oat"):
        raise InvalidParameter(f"sensitivity method must be 'sobol' or 'oat', got {method!r}")
    nominal = score(matrix, profile)
    lay = layout(profile)
    ranked = nominal["ranked"].to_numpy(dtype=bool)
    groups = scope_groups(matrix, profile)[ranked]
    nominal_rank = nominal["rank"].to_numpy()[ranked].astype(np.int64)
    x = normalise(matrix, profile, fill=True).to_numpy()[ranked]
    factors = _factors(lay)

    def evaluate(values: FloatArray) -> FloatArray:
        """Mean absolute rank change for each row of factor values."""
        s = len(values)
        mw = np.full(s, lay.migration_weight)
        pw = np.tile(lay.pillar_weights, (s, 1))
        for f, factor in enumerate(factors):
            if factor.name == "migration_weight":
                mw = values[:, f]
            else:
                pw[:, lay.pillars.index(factor.name.rsplit(".", 1)[1])] = values[:, f]
        metric = np.zeros(s)
        for chunk in _chunks(np.arange(s), len(x)):
            final = final_scores(
                x,
                lay,
                pillar_weights=pw[chunk],
                migration_weight=mw[chunk],
                within=profile.aggregation_within,
                across=profile.aggregation_across,
            )
            change = np.abs(rank_desc(final, groups) - nominal_rank[:, None])
            metric[chunk] = change.mean(axis=0) if len(x) else 0.0
        return metric

    base = {
        "nominal": [f.nominal for f in factors],
        "low": [f.low for f in factors],
        "high": [f.high for f in factors],
    }
    names = pd.Index([f.name for f in factors], name="factor")
    if method == "oat":
        nominal_values = np.array([f.nominal for f in factors])
        rows_low = np.tile(nominal_values, (len(factors), 1))
        rows_high = rows_low.copy()
        np.fill_diagonal(rows_low, [f.low for f in factors])
        np.fill_diagonal(rows_high, [f.high for f in factors])
        changes = {"rank_change_low": evaluate(rows_low), "rank_change_high": evaluate(rows_high)}
        return pd.DataFrame({**base, **changes}, index=names)

    indices = {k: np.zeros(len(factors)) for k in ("S1", "S1_conf", "ST", "ST_conf")}
    varying = [f for f, factor in enumerate(factors) if factor.high > factor.low]
    if varying:
        problem = {
            "num_vars": len(varying),
            "names": [factors[f].name for f in varying],
            "bounds": [[factors[f].low, factors[f].high] for f in varying],
        }
        sample = sobol_sample.sample(problem, n, calc_second_order=False, seed=profile.seed)
        values = np.tile([f.nominal for f in factors], (len(sample), 1))
        values[:, varying] = sample
        y = evaluate(values)
        if np.var(y) > 0:
            result = sobol_analyze.analyze(problem, y, calc_second_order=False, seed=profile.seed)
            for k in indices:
                indices[k][varying] = np.asarray(result[k], dtype=np.float64)
    return pd.DataFrame({**base, **indices}, index=names)
