"""Rank uncertainty (seeded Monte Carlo) and weight sensitivity (Sobol' via SALib, or one-at-a-time).

Follows the uncertainty and sensitivity steps of the OECD/JRC Handbook on Constructing Composite
Indicators (2008, steps 7–8) and COINr's `get_sensitivity()`: the methodological choices are sampled
around the profile and the resulting ranks summarised per unit.

Monte Carlo (`rank_uncertainty`), per draw, from `numpy.random.default_rng(profile.seed)` in this order:
1. a normaliser, uniform over {the profile's own per-indicator choice, minmax, rank} (the first may
   coincide with minmax; outlier treatment and direction always stay the profile's);
2. an aggregation, uniform over {arithmetic, geometric}, used both within and across components;
3. a missing-data treatment, uniform over {shrink, country_median, reweight} (`engine.fill_missing`);
4. the migration weight from Beta(κ·m, κ·(1 − m)) with κ = `dirichlet_concentration` and m the
   effective migration weight (fixed when m is 0 or 1, i.e. when one side of the profile is absent);
5. the listed pillars' weights from Dirichlet(κ · w / Σw) over those with a positive weight;
6. within each component, in profile order, the indicator weights from Dirichlet(κ · w / Σw) over those
   with a positive weight (zero weights stay zero; a single indicator keeps weight 1);
7. one indicator left out (its weight set to 0; a component left empty drops out and the others are
   re-weighted), uniform over {none} ∪ the positive-weight indicators (only with two or more of them);
8. for each survey value with a known effective sample (`app.scoring.survey`), a standard normal deviate z:
   the value becomes value + z · se, clipped to [0, scale] for a share and to ≥ 0 for a rate, and its
   indicator is re-normalised over its scope group under the draw's normaliser and missing treatment (the
   fill of units without a value follows the perturbed column).
Each source can be held at its nominal value (the profile's normaliser, aggregation, missing treatment and
weights; no indicator left out; no perturbation): it is still drawn, so the other sources' draws do not
change. Each draw ranks the units ranked in the nominal run (the set is held fixed so ranks compare; a unit
whose draw score is missing goes last) within their scope group, ties sharing the lowest rank, and
assigns tiers with the profile's cut-offs over that same set. Summaries per unit: rank_median (numpy
median, may be a half), rank_lo / rank_hi the 5th / 95th percentiles taken as observed ranks
(numpy 'lower' / 'higher', so the interval never shrinks by interpolation), p_top the share of draws
with rank ≤ top_k, tier_stability the share of draws in the nominal tier, robust = tier_stability ≥ 0.8.

Variance shares (`rank_variance_shares`): the Monte Carlo run once per source with only that source varying;
a source's variance is the mean over ranked units of the variance of their rank across draws, and its share
is that over the sum of the sources' (first-order, one source at a time; the joint run says how far the
sources add up).

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

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from threadpoolctl import threadpool_limits

from app.errors import InvalidParameter
from app.scoring.engine import (
    BoolArray,
    FloatArray,
    IntArray,
    Layout,
    Matrix,
    Prepared,
    final_scores,
    layout,
    normalise_block,
    normalised,
    prepare,
    rank_desc,
    scope_groups,
    score,
    tiers,
    weight_free,
)
from app.scoring.profile import Aggregation, Missing, Normaliser, Profile

SOURCES = ("weights", "normaliser", "aggregation", "missing", "exclusion", "sampling")
MISSING_TREATMENTS: tuple[Missing, ...] = ("shrink", "country_median", "reweight")
AGGREGATIONS: tuple[Aggregation, ...] = ("arithmetic", "geometric")
ALT_NORMALISERS: tuple[Normaliser, ...] = ("minmax", "rank")
ROBUST_SHARE = 0.8
CHUNK_CELLS = 500_000
UNCERTAINTY_COLUMNS = ["rank_median", "rank_lo", "rank_hi", "p_top", "tier_stability", "robust"]


@dataclass(frozen=True)
class Draws:
    """Sampled methodological choices, one row per draw (a source that does not vary holds its nominal value)."""

    normaliser: IntArray  # 0: the profile's own per-indicator choice; 1, 2: ALT_NORMALISERS
    aggregation: IntArray  # 0: the profile's own (within, across); 1, 2: AGGREGATIONS, used within and across
    missing: IntArray  # index into MISSING_TREATMENTS
    excluded: IntArray  # the indicator left out (index into the layout's codes), -1 for none
    migration_weight: FloatArray
    pillar_weights: FloatArray
    indicator_weights: FloatArray  # the excluded indicator's weight is 0
    noise: (
        FloatArray  # (D, m) standard normal deviates, one per survey value; zeros when sampling does not vary
    )


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


def sample_draws(
    lay: Layout, profile: Profile, sources: Sequence[str] = SOURCES, survey_values: int = 0
) -> Draws:
    """Sample profile.draws methodological variants with profile.seed, in the documented order. Every source is
    drawn whether it varies or not, so a source's draws are the same whichever others vary; a source not in
    `sources` is then set to its nominal value."""
    unknown = sorted(set(sources) - set(SOURCES))
    if unknown:
        raise InvalidParameter(f"unknown uncertainty sources {unknown}; sources: {', '.join(SOURCES)}")
    rng = np.random.default_rng(profile.seed)
    d, kappa = profile.draws, profile.dirichlet_concentration
    normaliser = rng.integers(0, 1 + len(ALT_NORMALISERS), size=d)
    aggregation = 1 + rng.integers(0, len(AGGREGATIONS), size=d)
    missing = rng.integers(0, len(MISSING_TREATMENTS), size=d)
    m = lay.migration_weight
    mw = rng.beta(kappa * m, kappa * (1 - m), size=d) if 0 < m < 1 else np.full(d, m)
    pw = _dirichlet(rng, lay.pillar_weights, kappa, d)
    wi = np.zeros((d, len(lay.codes)))
    for idx in lay.members:
        wi[:, idx] = _dirichlet(rng, lay.indicator_weights[idx], kappa, d)
    candidates = np.flatnonzero(lay.indicator_weights > 0)
    excluded = (
        rng.choice(np.concatenate([[-1], candidates]), size=d) if len(candidates) >= 2 else np.full(d, -1)
    ).astype(np.int64)
    noise = rng.standard_normal((d, survey_values))
    if "normaliser" not in sources:
        normaliser[:] = 0
    if "aggregation" not in sources:
        aggregation[:] = 0
    if "missing" not in sources:
        missing[:] = MISSING_TREATMENTS.index(profile.missing)
    if "weights" not in sources:
        mw[:] = m
        pw = np.tile(lay.pillar_weights, (d, 1))
        wi = np.tile(lay.indicator_weights, (d, 1))
    if "exclusion" not in sources:
        excluded[:] = -1
    if "sampling" not in sources:
        noise[:] = 0.0
    out = excluded >= 0
    wi[np.flatnonzero(out), excluded[out]] = 0.0
    return Draws(normaliser, aggregation, missing, excluded, mw, pw, wi, noise)


def _chunks(selection: IntArray, rows: int) -> Iterator[IntArray]:
    """Split draw indices so that each aggregation holds about CHUNK_CELLS cells per array."""
    step = max(1, CHUNK_CELLS // max(rows, 1))
    for start in range(0, len(selection), step):
        yield selection[start : start + step]


@dataclass(frozen=True)
class _Inputs:
    """What every draw starts from: the treated raw values, their survey standard errors, the survey cells,
    the scope groups and the nominally ranked units."""

    raw: FloatArray
    se: FloatArray
    cells: IntArray  # (m, 2): row and column of each survey value with a standard error
    groups: IntArray  # scope group of every unit
    ranked: BoolArray


def _inputs(matrix: Matrix, profile: Profile, nominal: pd.DataFrame) -> _Inputs:
    codes = [i.code for i in profile.indicators()]
    survey = matrix.survey(profile)
    raw = survey.values[codes].to_numpy(dtype=np.float64, copy=True)
    raw[~np.isfinite(raw)] = np.nan
    se = survey.se[codes].to_numpy(dtype=np.float64)
    cells = np.argwhere(~np.isnan(raw) & np.isfinite(se) & (se > 0)).astype(np.int64)
    ranked = nominal["ranked"].reindex(matrix.values.index).fillna(False).to_numpy(dtype=bool)
    return _Inputs(raw, se, cells, scope_groups(matrix, profile), ranked)


def _perturbed(
    matrix: Matrix,
    profile: Profile,
    inputs: _Inputs,
    noise: FloatArray,
    method: Normaliser | None,
    how: Missing,
) -> dict[int, FloatArray]:
    """Per survey column, its normalised and filled values (ranked units × draws) with each survey value
    perturbed by noise × its standard error (clipped to [0, scale] for a share, to ≥ 0 otherwise)."""
    items = profile.indicators()
    out: dict[int, FloatArray] = {}
    for j in np.unique(inputs.cells[:, 1]):
        item = items[j]
        on = inputs.cells[:, 1] == j
        rows = inputs.cells[on, 0]
        block = np.repeat(inputs.raw[:, j, None], len(noise), axis=1)
        block[rows] += noise[:, on].T * inputs.se[rows, j, None]
        scale = matrix.scales.get(item.code)
        block[rows] = np.clip(block[rows], 0.0, scale if scale is not None else np.inf)
        direction = item.direction if item.direction is not None else matrix.directions[item.code]
        x = np.full_like(block, np.nan)
        for g in np.unique(inputs.groups):
            in_group = inputs.groups == g
            has = in_group & ~np.isnan(inputs.raw[:, j])
            if not has.any():
                continue
            x[has] = normalise_block(block[has], item, direction, method or item.normalise)
            lack = in_group & ~has
            if how == "shrink":
                x[lack] = 0.0
            elif how == "country_median":
                x[lack] = np.median(x[has], axis=0)
        out[int(j)] = x[inputs.ranked]
    return out


def draw_ranks(
    matrix: Matrix, profile: Profile, nominal: pd.DataFrame, sources: Sequence[str] = SOURCES
) -> tuple[npt.NDArray[np.int32], IntArray, BoolArray]:
    """Ranks of the nominally ranked units (rows) under each Monte Carlo draw (columns) with the given sources
    varying, their scope groups, and the mask of ranked units over the matrix. BLAS runs single-threaded here:
    the products are small (units × a few indicators × a chunk of draws), and thread start-up cost 4× the
    time on two cores (0.81 s against 0.22 s for the default profile's 1,000 draws)."""
    with threadpool_limits(limits=1, user_api="blas"), weight_free(matrix):
        return _draw_ranks(matrix, profile, nominal, sources)


def _draw_ranks(
    matrix: Matrix, profile: Profile, nominal: pd.DataFrame, sources: Sequence[str]
) -> tuple[npt.NDArray[np.int32], IntArray, BoolArray]:
    lay = layout(profile)
    inputs = _inputs(matrix, profile, nominal)
    groups = inputs.groups[inputs.ranked]
    draws = sample_draws(lay, profile, sources, len(inputs.cells))
    perturb = "sampling" in sources and len(inputs.cells) > 0
    ranks = np.empty((int(inputs.ranked.sum()), profile.draws), dtype=np.int32)
    variants: list[Normaliser | None] = [None, *ALT_NORMALISERS]
    for v, method in enumerate(variants):
        if not (draws.normaliser == v).any():
            continue
        for m, how in enumerate(MISSING_TREATMENTS):
            if not ((draws.normaliser == v) & (draws.missing == m)).any():
                continue
            # normalised and filled once per data, treatment, normaliser and missing treatment (matrix.memo)
            full = normalised(matrix, profile, method, how)
            x = full if inputs.ranked.all() else full[inputs.ranked]  # read-only either way
            prepared: dict[Aggregation, Prepared] = {}  # per within-component aggregation, for every chunk
            for a in range(1 + len(AGGREGATIONS)):
                chosen = np.flatnonzero(
                    (draws.normaliser == v) & (draws.missing == m) & (draws.aggregation == a)
                )
                within, across = (
                    (profile.aggregation_within, profile.aggregation_across)
                    if a == 0
                    else (AGGREGATIONS[a - 1], AGGREGATIONS[a - 1])
                )
                if len(chosen) and within not in prepared:
                    prepared[within] = prepare(x, within, column_major=True)
                for chunk in _chunks(chosen, len(x)):
                    overrides = (
                        _perturbed(matrix, profile, inputs, draws.noise[chunk], method, how)
                        if perturb
                        else None
                    )
                    final = final_scores(
                        x,
                        lay,
                        indicator_weights=draws.indicator_weights[chunk],
                        pillar_weights=draws.pillar_weights[chunk],
                        migration_weight=draws.migration_weight[chunk],
                        within=within,
                        across=across,
                        overrides=overrides,
                        prepared=prepared[within],
                    )
                    ranks[:, chunk] = rank_desc(final, groups)
    return ranks, groups, inputs.ranked


def rank_uncertainty(matrix: Matrix, profile: Profile, nominal: pd.DataFrame | None = None) -> pd.DataFrame:
    """Monte Carlo rank intervals, top-k probability and tier stability per nominally ranked unit."""
    nominal = score(matrix, profile) if nominal is None else nominal
    ranked = nominal["ranked"].reindex(matrix.values.index).fillna(False).to_numpy(dtype=bool)
    groups = scope_groups(matrix, profile)
    if profile.draws == 0 or not ranked.any():
        return summarise(None, nominal, ranked, groups, profile)
    ranks, _, ranked = draw_ranks(matrix, profile, nominal)
    return summarise(ranks, nominal, ranked, groups, profile)


def summarise(
    ranks: npt.NDArray[np.integer] | None,
    nominal: pd.DataFrame,
    ranked: BoolArray,
    groups: IntArray,
    profile: Profile,
) -> pd.DataFrame:
    """Per unit, from the ranks of the ranked units (rows) under each draw (columns): median, 5–95 % interval,
    p_top, tier stability and robust (empty for the unranked, and for all when there are no draws)."""
    index = nominal.index
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
    if ranks is None or not ranked.any():
        return out
    groups = groups[ranked]
    nominal_tier = nominal["tier"].to_numpy()[ranked].astype(np.int64)
    median = np.empty(len(ranks))
    lo = np.empty(len(ranks), dtype=np.int64)
    hi = np.empty(len(ranks), dtype=np.int64)
    p_top = np.empty(len(ranks))
    stable = np.empty(len(ranks))
    step = max(1, CHUNK_CELLS // ranks.shape[1])
    # numpy's median and 'lower' / 'higher' quantiles read from one sort of each unit's ranks: the positions
    # are the ones numpy picks among D draws (found by asking it about 0 … D − 1)
    d = ranks.shape[1]
    at_lo = int(np.quantile(np.arange(d), 0.05, method="lower"))
    at_hi = int(np.quantile(np.arange(d), 0.95, method="higher"))
    for start in range(0, len(ranks), step):
        rows = slice(start, start + step)
        block = ranks[rows]
        ordered = np.sort(block, axis=1)
        median[rows] = (ordered[:, (d - 1) // 2].astype(np.float64) + ordered[:, d // 2]) / 2
        lo[rows] = ordered[:, at_lo]
        hi[rows] = ordered[:, at_hi]
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


def rank_variance_shares(
    matrix: Matrix, profile: Profile, nominal: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The share of rank variance due to each source of uncertainty (first order, one source at a time).

    For each source the Monte Carlo is run with only that source varying (the others at their nominal
    value, same seed); its variance is the mean over the nominally ranked units of the variance of their rank
    across the draws. `share` is that variance over the sum of the sources' variances; `applies` says whether
    the source can act at all (no survey value with a known sample, a single indicator, no pillar...). The row
    `all` holds the variance with every source varying; its `share` is Σ first-order variances / joint
    variance (1 when the sources add up; below 1 when they interact, above when they partly cancel)."""
    nominal = score(matrix, profile) if nominal is None else nominal
    rows: list[dict[str, object]] = []
    if profile.draws < 2 or not nominal["ranked"].any():
        return pd.DataFrame(
            [{"source": s, "variance": 0.0, "share": 0.0, "applies": False} for s in (*SOURCES, "all")]
        ).set_index("source")
    with weight_free(matrix):  # the normalised matrices once for the seven runs
        for source in (*SOURCES, "all"):
            ranks, _, _ = draw_ranks(matrix, profile, nominal, SOURCES if source == "all" else (source,))
            rows.append({"source": source, "variance": float(ranks.var(axis=1).mean())})
    frame = pd.DataFrame(rows).set_index("source")
    first = frame.loc[list(SOURCES), "variance"]
    total = float(first.sum())
    frame["share"] = (frame["variance"] / total) if total > 0 else 0.0
    joint = float(frame.at["all", "variance"])
    frame.at["all", "share"] = total / joint if joint > 0 else 0.0
    frame["applies"] = frame["variance"] > 0
    return frame


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
    x = normalised(matrix, profile, missing=profile.missing)[ranked]
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
        # SALib imports scipy.stats (seconds): here, so that the API and the CLI start without it
        from SALib.analyze import sobol as sobol_analyze
        from SALib.sample import sobol as sobol_sample

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
