"""The scoring engine: normalise → weight → aggregate → rank → tag, on an indicator matrix.

Method: OECD/JRC, *Handbook on Constructing Composite Indicators: Methodology and User Guide* (2008),
with COINr (the JRC's R package for composite indicators; Becker et al. 2022) as the reference for
each step. Everything is numpy over a units × indicators matrix; no database.

Semantics (the profile, `app.scoring.profile`, is the spec; the choices made where it left room):

- Only the profile's indicators are used; one missing from the matrix, or with no direction, raises
  `InvalidParameter` naming it.
- Scope: normalisation, ranks and tiers are computed within each scope group: each country when
  `scope == "country"` (units without a country form one group of their own), all units when "region".
- Per scope group and indicator, in this order:
  1. outliers: `winsorise` clips at the `winsor_fraction` and `1 − winsor_fraction` quantiles (numpy's
     linear interpolation); `log` applies log1p(x − min), min taken over the group (for goalposts the
     goalposts go through the same map and the min also covers them, so nothing goes negative);
  2. direction: the profile's override, else the catalogue's; values are multiplied by it so that
     higher = worse = higher priority;
  3. normalisation to [0, 1]: `minmax` (x − min)/(max − min), 0.5 when all values are equal;
     `rank` the percentile rank with average ties, (rank − 1)/(n − 1), 0.5 when n = 1; `zscore` Φ(z),
     the standard normal CDF of the z-score (sample sd, ddof = 1, as R's sd() in COINr): it maps to
     (0, 1) so it mixes with the other normalisers and never reaches 0 in a geometric mean; 0.5 when
     n < 2 or sd = 0; `goalposts` (x − lo)/(hi − lo) clipped to [0, 1] with (lo, hi) in raw units before
     direction, then 1 − v when the direction is −1. NaN (and ±inf) is "no data", never zero, and stays NaN.
- Within a component (migration, or a pillar), over the indicators the unit has: weights re-normalised
  over the available ones; arithmetic = weighted mean, geometric = weighted geometric mean on the affine
  rescale of each 0–1 value to [1, 100] (1 + 99·v), mapped back to 0–1: a 0 no longer zeroes the mean, and
  no floor puts a kink at a small value (OECD/JRC Handbook: geometric aggregation needs strictly positive
  values, obtained by a rescale). A component with no
  available indicator (or only zero-weight ones) is NaN.
- Across: drivers = the same kind of mean (`aggregation_across`) of the available pillar sub-scores
  with `pillar_weights` (a listed pillar missing from them weighs 0), re-weighted over the available
  pillars; final = the mean of migration and drivers with weights migration_weight and
  1 − migration_weight, re-weighted when one of them is NaN (geometric: the weighted geometric mean of
  the two on the same [1, 100] rescale). Score = 100 × final. The effective migration weight is 0 for a profile
  without migration indicators and 1 for one without pillars.
- Coverage: the share of the component weights with data, the weights being migration_weight for
  migration and (1 − migration_weight) · pw_p / Σ pw for each listed pillar, out of the components the
  unit's scope group has any data for (a pillar a whole country lacks is "no data" there, not each
  municipio's gap). Driver coverage: the share of the group's driver (pillar) weight for which the unit
  has a municipal value (department figures standing in do not count). ranked = coverage ≥ min_coverage
  − 1e-9, driver coverage ≥ min_driver_coverage − 1e-9 and a score exists; otherwise `not_ranked_reason`
  says which gate it missed.
- Missing values: `fill_missing` with the profile's `missing` treatment (shrink, the default; country
  median; reweight), applied after normalisation and before aggregation, in the nominal run, the Monte
  Carlo draws and the sensitivity analysis alike.
- Ranks: among ranked units, by score descending, ties sharing the lowest rank ('min'); scores are
  compared rounded to 1e-10 (on 0–1) so that float noise does not split equal scores. `rank` is within
  the scope group; `rank_region` across all units, only for a region-scoped profile (null otherwise:
  scores normalised per country on different indicators are not comparable across countries).
- Tiers: with cutoffs c_1 < … < c_m and n ranked units in the group, tier t is the first with
  rank ≤ ceil(c_t · n) (1e-9 tolerance on the product), else m + 1.
- Contributions: an available indicator's effective final weight (its re-weighted within-component
  weight × its component's re-weighted final weight) × its normalised value × 100. For arithmetic
  aggregation they sum to the score; for geometric they are the same formula and only approximate.
- Local score (`local_score`, the input of the Gi* hot spots): the score recomputed with the profile's own
  treatment after leaving out every cell that cannot vary within a department (`department_constant`: the
  department figures standing in for municipios, and indicators constant within each department of the
  group), so that a hot spot is a cluster of municipios, not a department block repeated.
- Pillar ranks and tags: sub-scores of different pillars are not on comparable scales (an inverted
  management index runs high everywhere), so tags are read from within-group percentiles, not from raw
  sub-scores. Per scope group and pillar, over the units with data for that pillar: `pillar_rank` is the
  rank of the sub-score, descending (1 = most severe; ties share the lowest rank), and the percentile is
  the average-tie percentile rank (r − 1)/(n − 1) of the sub-score ascending (0.5 when n = 1). Lead
  pillar: among the pillars with data for the unit and a positive pillar weight, the highest percentile;
  secondary the next; ties go to the earlier pillar (I < II < … < V); None when no pillar has data. A
  pillar without data is never tagged.
"""

from __future__ import annotations

import functools
import itertools
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from app.errors import InvalidParameter
from app.scoring.profile import PILLARS, Aggregation, IndicatorWeight, Normaliser, Profile
from app.scoring.survey import Survey, treat

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

MIGRATION = "migration"
# geometric means are taken on the affine rescale 1 + 99·v of a 0–1 value (so on [1, 100]), never on a floor
GEO_LOW, GEO_HIGH = 1.0, 100.0
RANK_DECIMALS = 10
EPS = 1e-9
TOP_INDICATORS = 5


@dataclass
class Matrix:
    """Indicator values per unit, each unit's country (ISO3) and the catalogue direction of each indicator;
    `fallback` marks values that are a department's figure standing in for its municipios. For survey
    estimates: `sample_size` (Kish effective sample per value), `small` (the small_sample flag per value) and
    `scales` (100 for a percentage, 1 for a 0–1 share, None for a rate; see `app.scoring.survey`).
    `department` is each unit's department key (empirical Bayes priors, department-constant inputs)."""

    values: pd.DataFrame
    country: pd.Series
    directions: dict[str, int]
    fallback: pd.DataFrame | None = None
    sample_size: pd.DataFrame | None = None
    small: pd.DataFrame | None = None
    department: pd.Series | None = None
    scales: dict[str, float | None] = field(default_factory=dict)
    # what does not depend on a profile's weights, shared by every matrix built from the same data (the data
    # epoch and boundary sets: `app.scoring.data.load` sets it); None: nothing is kept beyond `survey_memo`
    memo: WeightFree | None = field(default=None, repr=False, compare=False)

    _surveys: dict[tuple[Any, ...], Survey] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def survey(self, profile: Profile) -> Survey:
        """The profile's indicator values after its small-sample treatment, with survey standard errors
        (remembered inside ``survey_memo``, and in ``memo`` when there is one). Callers must not modify it."""
        codes = [i.code for i in profile.indicators()]
        key = (tuple(codes), profile.small_samples)
        if self._surveys is not None and key in self._surveys:
            return self._surveys[key]

        def build() -> Survey:
            return treat(
                self.values[codes],
                self.sample_size,
                self.small,
                self.department,
                self.country,
                self.scales,
                profile.small_samples,
            )

        out = self.memo.get(("survey", *key), build) if self.memo is not None else build()
        if self._surveys is not None:
            self._surveys[key] = out
        return out


class WeightFree:
    """Results that depend on the data and on a profile's treatment of its indicators (normalisers, outliers,
    directions, scope, small samples, missing-data treatment) but not on its weights: the normalised and
    filled matrices of the nominal run and of the Monte Carlo's normalisers, the department-constant cells.
    A scenario that moves a weight slider finds them here instead of normalising again. At most `max_bytes`
    of arrays and `max_entries` entries are kept, the least recently used dropped first; the arrays are
    read-only."""

    def __init__(self, max_bytes: int = 256 * 2**20, max_entries: int = 256) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable, build: Callable[[], Any]) -> Any:
        """The value kept under key, else `build()` kept and returned (built outside the lock: two threads
        may both build, and the values are equal)."""
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key][0]
        value = build()
        size = _nbytes(value)
        if isinstance(value, np.ndarray):
            value.setflags(write=False)
        with self._lock:
            if key not in self._entries and size <= self.max_bytes:
                self._entries[key] = (value, size)
                self._bytes += size
                while self._bytes > self.max_bytes or len(self._entries) > self.max_entries:
                    _, (_, dropped) = self._entries.popitem(last=False)
                    self._bytes -= dropped
        return value


def _nbytes(value: Any) -> int:
    """The bytes an entry of WeightFree holds (its arrays; a Survey's two frames)."""
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, Survey):
        return int(value.values.memory_usage().sum() + value.se.memory_usage().sum())
    return 0


def treatment_key(profile: Profile) -> tuple[Hashable, ...]:
    """What normalised values depend on in a profile: each indicator's code and treatment (not its weight), the
    scope and the small-sample treatment."""
    items = tuple(
        (i.code, i.normalise, i.goalposts, i.outliers, i.winsor_fraction, i.direction)
        for i in profile.indicators()
    )
    return (items, profile.scope, profile.small_samples)


@contextmanager
def survey_memo(matrix: Matrix) -> Iterator[Matrix]:
    """Within the block, `matrix.survey(profile)` is treated once per profile's indicators and small-sample
    treatment: a scenario asks for it from the score, the Monte Carlo and each of its normalisers. The matrix
    must not change inside the block (outside, every call treats the values again)."""
    matrix._surveys = {}
    try:
        with weight_free(matrix):
            yield matrix
    finally:
        matrix._surveys = None


@contextmanager
def weight_free(matrix: Matrix) -> Iterator[Matrix]:
    """Within the block, `matrix.memo` keeps the weight-free results (a `WeightFree` for the block when the
    matrix has none of its own), so a scenario normalises each (normaliser, missing treatment) once. The
    matrix must not change inside the block."""
    if matrix.memo is not None:
        yield matrix
        return
    matrix.memo = WeightFree()
    try:
        yield matrix
    finally:
        matrix.memo = None


@dataclass(frozen=True)
class Layout:
    """A profile compiled to arrays: indicator order, component membership and nominal weights."""

    codes: tuple[str, ...]
    components: tuple[str, ...]
    members: tuple[slice, ...]
    component_index: IntArray
    indicator_weights: FloatArray
    pillars: tuple[str, ...]
    pillar_weights: FloatArray
    migration_weight: float

    @property
    def has_migration(self) -> bool:
        """Whether the first component is migration."""
        return bool(self.components) and self.components[0] == MIGRATION

    def component_weights(self) -> FloatArray:
        """The nominal final-level weight of each component (migration, then pillars); sums to 1."""
        mw = self.migration_weight
        pw = self.pillar_weights
        pillars = (1.0 - mw) * pw / pw.sum() if len(pw) and pw.sum() > 0 else np.zeros(len(pw))
        head = np.array([mw]) if self.has_migration else np.zeros(0)
        return np.concatenate([head, pillars])


@dataclass(frozen=True)
class Aggregate:
    """Aggregation results with a trailing draws axis: sub-scores, final weights and final scores (0–1)."""

    components: FloatArray
    weights: FloatArray
    final: FloatArray


def layout(profile: Profile) -> Layout:
    """Compile a profile into the arrays the aggregation works on."""
    items = profile.indicators()
    codes = tuple(i.code for i in items)
    pillars = tuple(p for p in PILLARS if profile.pillars.get(p))
    has_migration = bool(profile.migration)
    components = ((MIGRATION,) if has_migration else ()) + pillars
    sizes = [len(profile.migration)] * has_migration + [len(profile.pillars[p]) for p in pillars]
    bounds = np.cumsum([0, *sizes])
    # profile.indicators() lists each component's indicators together, so a component is a slice
    members = tuple(slice(int(a), int(b)) for a, b in itertools.pairwise(bounds))
    index = np.repeat(np.arange(len(components), dtype=np.int64), sizes)
    mw = profile.migration_weight if has_migration and pillars else float(has_migration)
    return Layout(
        codes=codes,
        components=components,
        members=members,
        component_index=index,
        indicator_weights=np.array([i.weight for i in items], dtype=np.float64),
        pillars=pillars,
        pillar_weights=np.array([profile.pillar_weights.get(p, 0.0) for p in pillars], dtype=np.float64),
        migration_weight=float(mw),
    )


def check(matrix: Matrix, profile: Profile) -> None:
    """Raise InvalidParameter when a profile indicator is not in the matrix or has no direction."""
    missing = [i.code for i in profile.indicators() if i.code not in matrix.values.columns]
    if missing:
        raise InvalidParameter(f"unknown indicator(s) in the profile: {', '.join(missing)}")
    undirected = [
        i.code for i in profile.indicators() if i.direction is None and i.code not in matrix.directions
    ]
    if undirected:
        raise InvalidParameter(f"no direction for indicator(s): {', '.join(undirected)}")


def scope_groups(matrix: Matrix, profile: Profile) -> IntArray:
    """An integer scope group per unit: its country for scope 'country', 0 for everyone for 'region'."""
    n = len(matrix.values.index)
    if profile.scope == "region":
        return np.zeros(n, dtype=np.int64)
    country = matrix.country.reindex(matrix.values.index).fillna("").astype(str)
    codes, _ = pd.factorize(country)
    return np.asarray(codes, dtype=np.int64)


def normalise(
    matrix: Matrix, profile: Profile, method_override: Normaliser | None = None, *, fill: bool = False
) -> pd.DataFrame:
    """Treated, directed and normalised values (0–1, higher = higher priority) of the profile's indicators
    (NaN: no data), with the profile's missing-data treatment applied (`fill_missing`) when `fill` is True."""
    x = normalised(matrix, profile, method_override, profile.missing if fill else None)
    codes = [i.code for i in profile.indicators()]
    return pd.DataFrame(x.copy(), index=matrix.values.index, columns=codes)


def normalised(
    matrix: Matrix, profile: Profile, method_override: Normaliser | None = None, missing: str | None = None
) -> FloatArray:
    """`normalise` as an array (units × the profile's indicators), filled with the `missing` treatment when
    one is given; kept in `matrix.memo` when there is one (then read-only: callers must not modify it)."""
    check(matrix, profile)
    if method_override == "goalposts":
        raise InvalidParameter(
            "goalposts need per-indicator goalposts: they cannot override every normaliser"
        )
    if missing is not None:

        def build() -> FloatArray:
            raw = normalised(matrix, profile, method_override)
            return fill_missing(raw, scope_groups(matrix, profile), missing)

        key: tuple[Hashable, ...] = ("filled", treatment_key(profile), method_override, missing)
    else:

        def build() -> FloatArray:
            return _normalise(matrix, profile, method_override)

        key = ("normalised", treatment_key(profile), method_override)
    if matrix.memo is None:
        return build()
    out: FloatArray = matrix.memo.get(key, build)
    return out


def _normalise(matrix: Matrix, profile: Profile, method_override: Normaliser | None) -> FloatArray:
    items = profile.indicators()
    codes = [i.code for i in items]
    raw = matrix.survey(profile).values[codes].to_numpy(dtype=np.float64, copy=True)
    raw[~np.isfinite(raw)] = np.nan
    out: FloatArray = np.full_like(raw, np.nan)
    groups = scope_groups(matrix, profile)
    for g in np.unique(groups):
        rows = np.flatnonzero(groups == g)
        for j, item in enumerate(items):
            direction = item.direction if item.direction is not None else matrix.directions[item.code]
            out[rows, j] = _normalise_column(raw[rows, j], item, direction, method_override or item.normalise)
    return out


def fill_missing(x: FloatArray, groups: IntArray, how: str) -> FloatArray:
    """The missing-data treatment, on normalised values, for indicators the unit's scope group has data for
    (an indicator with no value anywhere in the group stays NaN: that is "no data" for the country, and it is
    re-weighted away for every unit alike).

    - `shrink` (the default): a missing value counts as 0, the least severe value of the group. Within a
      component the mean becomes Σ_available w·x / Σ_group w: the unit's reweighted mean shrunk towards 0 by the
      share of the component's weight it lacks. Removing a value can therefore never raise a score (normalising
      bounds fixed), and a department figure standing in for a municipio keeps exactly its nominal share of
      the component. The unit's coverage still says how much it rests on.
    - `country_median`: a missing value is the group median of the indicator (a neutral imputation; it can
      raise the score of a unit whose unreported value was low).
    - `reweight`: unchanged; weights are re-normalised over the indicators the unit has (the OECD/JRC
      "available-case" treatment; a missing value then takes the mean of the others).
    """
    if how == "reweight":
        return x
    out = x.copy()
    for g in np.unique(groups):
        rows = np.flatnonzero(groups == g)
        block = out[rows]
        has = ~np.isnan(block)
        for j in np.flatnonzero(has.any(axis=0)):
            fill = 0.0 if how == "shrink" else float(np.median(block[has[:, j], j]))
            block[~has[:, j], j] = fill
        out[rows] = block
    return out


def _normalise_column(x: FloatArray, item: IndicatorWeight, direction: int, method: Normaliser) -> FloatArray:
    """One indicator in one scope group: outlier treatment, direction, then the normaliser."""
    ok = ~np.isnan(x)
    out = np.full_like(x, np.nan)
    if ok.any():
        out[ok] = normalise_block(x[ok, None], item, direction, method)[:, 0]
    return out


def normalise_block(v: FloatArray, item: IndicatorWeight, direction: int, method: Normaliser) -> FloatArray:
    """`_normalise_column` for the units with a value (rows, no NaN) under several draws of the values at once
    (columns): each column is treated and normalised on its own."""
    lo: Any
    hi: Any
    lo, hi = item.goalposts if (method == "goalposts" and item.goalposts) else (math.nan, math.nan)
    if item.outliers == "winsorise" and item.winsor_fraction > 0:
        q_lo, q_hi = np.quantile(v, [item.winsor_fraction, 1 - item.winsor_fraction], axis=0)
        v = np.clip(v, q_lo, q_hi)
    elif item.outliers == "log":
        shift = v.min(axis=0) if method != "goalposts" else np.minimum(v.min(axis=0), min(lo, hi))
        v = np.log1p(v - shift)
        lo, hi = np.log1p(lo - shift), np.log1p(hi - shift)
    if method == "goalposts":
        g = np.clip((v - lo) / (hi - lo), 0.0, 1.0)
        return np.asarray(g if direction == 1 else 1.0 - g, dtype=np.float64)
    v = v * direction
    n = v.shape[0]
    if method == "minmax":
        low = v.min(axis=0)
        span = v.max(axis=0) - low
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(span > 0, (v - low) / np.where(span > 0, span, 1.0), 0.5)
    from scipy.special import ndtr
    from scipy.stats import rankdata  # here, not at the top: the API starts without scipy.stats

    if method == "rank":
        return (rankdata(v, method="average", axis=0) - 1.0) / (n - 1) if n > 1 else np.full_like(v, 0.5)
    sd = np.std(v, ddof=1, axis=0) if n > 1 else np.zeros(v.shape[1])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sd > 0, ndtr((v - v.mean(axis=0)) / np.where(sd > 0, sd, 1.0)), 0.5)


def _to_space(x: FloatArray, how: Aggregation) -> FloatArray:
    """Map 0–1 values into the space where the mean is arithmetic: identity, or the log of the affine rescale
    to [1, 100] (GEO_LOW + (GEO_HIGH − GEO_LOW)·v), so a 0 is the lowest value and not a pole; no floor."""
    return np.log(GEO_LOW + (GEO_HIGH - GEO_LOW) * x) if how == "geometric" else x


def _from_space(x: FloatArray, how: Aggregation) -> FloatArray:
    """Undo `_to_space` (back to 0–1)."""
    return (np.exp(x) - GEO_LOW) / (GEO_HIGH - GEO_LOW) if how == "geometric" else x


def _broadcast_weights(
    lay: Layout,
    indicator_weights: FloatArray | None,
    pillar_weights: FloatArray | None,
    migration_weight: FloatArray | float | None,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Weights as (D, k), (D, P) and (D,) arrays, the profile's where not given."""
    wi = np.atleast_2d(lay.indicator_weights if indicator_weights is None else indicator_weights)
    wp = np.atleast_2d(lay.pillar_weights if pillar_weights is None else pillar_weights)
    mw = np.atleast_1d(np.asarray(lay.migration_weight if migration_weight is None else migration_weight))
    d = max(wi.shape[0], wp.shape[0], mw.shape[0])
    return (
        np.broadcast_to(wi, (d, wi.shape[1])),
        np.broadcast_to(wp, (d, wp.shape[1])),
        np.broadcast_to(mw.astype(np.float64), (d,)),
    )


class Prepared:
    """What the aggregation of x within components needs whatever the weights (`prepare`)."""

    def __init__(self, present: BoolArray, values: FloatArray, mask: FloatArray) -> None:
        self.present = present  # where x has a value
        self.values = values  # x in the aggregation space, 0 where absent
        self.mask = mask  # the presence as 0/1

    @functools.cached_property
    def rows(self) -> tuple[FloatArray, FloatArray]:
        """values and mask in row-major order (for a single draw: see `columns`)."""
        return np.ascontiguousarray(self.values), np.ascontiguousarray(self.mask)

    @functools.cached_property
    def columns(self) -> tuple[FloatArray, FloatArray]:
        """values and mask in column-major order: each component's columns are then one contiguous block, which
        BLAS's matrix-matrix product (two draws or more) multiplies 3-4x faster than the strided columns of the
        row-major arrays, with the same result bit for bit (checked on the real data for 2-100 draws). A
        single draw is a matrix-vector product whose summation order follows the layout: it keeps the
        row-major arrays."""
        return np.asfortranarray(self.values), np.asfortranarray(self.mask)


def prepare(x: FloatArray, within: Aggregation, *, column_major: bool = False) -> Prepared:
    """Where x has a value, x in the aggregation space (0 where absent) and the presence as 0/1; computed in
    column-major order when `column_major` (for draws: `Prepared.columns` is then no copy)."""
    if column_major:
        x = np.asfortranarray(x)
    present = ~np.isnan(x)
    return Prepared(present, np.where(present, _to_space(x, within), 0.0), present.astype(np.float64))


def _aggregate(
    x: FloatArray,
    lay: Layout,
    weights: tuple[FloatArray, FloatArray, FloatArray],
    within: Aggregation,
    across: Aggregation,
    explain: bool,
    overrides: dict[int, FloatArray] | None = None,
    prepared: Prepared | None = None,
) -> Aggregate:
    """The aggregation itself, component by component on (n, D) arrays; sub-scores kept when explaining.
    `overrides` maps an indicator's column to its values under each draw (n × D), for values that vary by draw
    (survey estimates perturbed within their sampling error); they must be present where x is. `prepared`:
    `prepare(x, within)` when the caller aggregates the same x under several chunks of draws."""
    wi, wp, mw = weights
    n, d, n_comp = x.shape[0], wi.shape[0], len(lay.components)
    prep = prepared if prepared is not None else prepare(x, within)
    present, values, mask = prep.present, prep.values, prep.mask
    # the layout each matrix product reads (see Prepared.columns): column-major for two draws or more; for one
    # draw, the caller's own layout (the nominal and local scores), or row-major for a prepared x (a single
    # Monte Carlo draw: its units' rows were always a row-major copy)
    if d >= 2:
        by_column, mask_by_column = prep.columns
    else:
        by_column, mask_by_column = (values, mask) if prepared is None else prep.rows
    # per overridden column, the change from the nominal value in aggregation space, under each draw
    delta = {
        j: np.where(present[:, j, None], _to_space(np.nan_to_num(v), within), 0.0) - values[:, j, None]
        for j, v in (overrides or {}).items()
    }
    subs = np.full((n_comp if explain else 0, n, d), np.nan)
    pillar = 0
    mig_space = drv_num = drv_den = np.zeros((n, d))
    has_mig = np.zeros((n, d), dtype=bool)
    for c, idx in enumerate(lay.members):
        w = np.ascontiguousarray(wi[:, idx].T)
        num, den = by_column[:, idx] @ w, mask_by_column[:, idx] @ w
        for j, change in delta.items():
            if idx.start <= j < idx.stop:
                num = num + change * w[j - idx.start][None, :]
        has = den > 0
        # without data num is 0 too (absent values are zeroed), so the mean comes out 0 and is masked later
        mean = num / np.maximum(den, np.finfo(np.float64).tiny)
        if explain:
            subs[c] = np.where(has, _from_space(mean, within), np.nan)
        space = mean if within == across else _to_space(_from_space(mean, within), across)
        if lay.components[c] == MIGRATION:
            mig_space, has_mig = space, has
        else:
            wpc = has * wp[:, pillar]
            drv_num = drv_num + wpc * space
            drv_den = drv_den + wpc
            pillar += 1
    has_drv = drv_den > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        drivers = np.where(has_drv, drv_num / drv_den, 0.0)
        w_mig = mw * has_mig
        w_drv = (1.0 - mw) * has_drv
        total = w_mig + w_drv
        f_mig = np.where(total > 0, w_mig / total, 0.0)
        f_drv = np.where(total > 0, w_drv / total, 0.0)
    final = np.where(total > 0, _from_space(f_mig * mig_space + f_drv * drivers, across), np.nan)
    comp_w = np.zeros_like(subs)
    if explain:
        start = 1 if lay.has_migration else 0
        if lay.has_migration:
            comp_w[0] = f_mig
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.where(has_drv, (~np.isnan(subs[start:])) * wp.T[:, None, :] / drv_den, 0.0)
        comp_w[start:] = f_drv * share
    return Aggregate(components=subs, weights=comp_w, final=final)


def aggregate(
    normalised: FloatArray,
    lay: Layout,
    *,
    indicator_weights: FloatArray | None = None,
    pillar_weights: FloatArray | None = None,
    migration_weight: FloatArray | float | None = None,
    within: Aggregation = "arithmetic",
    across: Aggregation = "arithmetic",
) -> Aggregate:
    """Sub-scores, final-level component weights and final scores (0–1) with a trailing axis of D draws."""
    weights = _broadcast_weights(lay, indicator_weights, pillar_weights, migration_weight)
    return _aggregate(np.asarray(normalised, np.float64), lay, weights, within, across, explain=True)


def final_scores(
    normalised: FloatArray,
    lay: Layout,
    *,
    indicator_weights: FloatArray | None = None,
    pillar_weights: FloatArray | None = None,
    migration_weight: FloatArray | float | None = None,
    within: Aggregation = "arithmetic",
    across: Aggregation = "arithmetic",
    overrides: dict[int, FloatArray] | None = None,
    prepared: Prepared | None = None,
) -> FloatArray:
    """Final scores (0–1) of n units × D weight draws: `aggregate` without the explanation (see `_aggregate`
    for `overrides` and `prepared`)."""
    weights = _broadcast_weights(lay, indicator_weights, pillar_weights, migration_weight)
    x = np.asarray(normalised, np.float64)
    return _aggregate(
        x, lay, weights, within, across, explain=False, overrides=overrides, prepared=prepared
    ).final


def rank_desc(scores: FloatArray, groups: IntArray) -> IntArray:
    """Ranks of scores (n × D) within groups: 1 = highest, ties share the lowest rank, NaN last."""
    key = np.where(np.isnan(scores), np.inf, -np.round(scores, RANK_DECIMALS)).T
    ranks = np.empty(key.shape, dtype=np.int64)
    for g in np.unique(groups):
        rows = np.flatnonzero(groups == g)
        sub = np.ascontiguousarray(key[:, rows])
        order = np.argsort(sub, axis=1)
        ordered = np.take_along_axis(sub, order, axis=1)
        position = np.arange(1, len(rows) + 1, dtype=np.int64)[None, :]
        new = np.ones(ordered.shape, dtype=bool)
        new[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
        first = np.maximum.accumulate(np.where(new, position, 0), axis=1)
        out = np.empty_like(first)
        np.put_along_axis(out, order, first, axis=1)
        ranks[:, rows] = out
    return ranks.T


def tiers(ranks: IntArray, groups: IntArray, cutoffs: list[float], sizes: IntArray | None = None) -> IntArray:
    """Tiers of ranks (n or n × D) from cut-off shares of each group's size (default: its count)."""
    counts = np.bincount(groups) if sizes is None else sizes
    n = counts[groups].astype(np.float64)
    out = np.ones(ranks.shape, dtype=np.int64)
    for c in cutoffs:
        limit = np.ceil(c * n - EPS)
        out += ranks > (limit[:, None] if ranks.ndim == 2 else limit)
    return out


def score(matrix: Matrix, profile: Profile) -> pd.DataFrame:
    """Score, rank, tier, tag and explain every unit of the matrix under a profile."""
    with weight_free(matrix):
        return _score(matrix, profile)


def _score(matrix: Matrix, profile: Profile) -> pd.DataFrame:
    lay = layout(profile)
    groups = scope_groups(matrix, profile)
    raw = normalised(matrix, profile)  # read-only (kept in matrix.memo)
    x = normalised(matrix, profile, missing=profile.missing)
    agg = aggregate(x, lay, within=profile.aggregation_within, across=profile.aggregation_across)
    subs, comp_w, final = agg.components[:, :, 0], agg.weights[:, :, 0], agg.final[:, 0]

    present = ~np.isnan(raw) & (lay.indicator_weights > 0)
    has: BoolArray = (
        np.array([present[:, m].any(axis=1) for m in lay.members], dtype=bool)
        if lay.members
        else np.zeros((0, len(x)), dtype=bool)
    )
    coverage = (
        group_coverage(lay.component_weights(), has, groups) if len(lay.components) else np.zeros(len(x))
    )
    # shown sub-scores, pillar ranks and tags rest on the unit's own data: a component it has no value for
    # is null for it (even where `shrink` counted it as 0 in the score)
    subs = np.where(has, subs, np.nan) if len(lay.components) else subs
    drivers = driver_coverage(matrix, lay, raw, groups)
    enough = coverage >= profile.min_coverage - EPS
    enough_drivers = drivers >= profile.min_driver_coverage - EPS
    ranked = enough & enough_drivers & ~np.isnan(final)
    reason: list[str | None] = [
        None
        if r
        else f"coverage {c:.2f} below the profile's min_coverage {profile.min_coverage:g}"
        if not e
        else f"municipal driver data cover {d:.2f} of the driver weight, below min_driver_coverage "
        f"{profile.min_driver_coverage:g}"
        if not ed
        else "no score"
        for r, e, ed, c, d in zip(ranked, enough, enough_drivers, coverage, drivers, strict=True)
    ]
    rank = np.full(len(x), -1, dtype=np.int64)
    rank_region = rank.copy()
    tier = rank.copy()
    if ranked.any():
        rank[ranked] = rank_desc(final[ranked, None], groups[ranked])[:, 0]
        rank_region[ranked] = rank_desc(final[ranked, None], np.zeros(int(ranked.sum()), np.int64))[:, 0]
        tier[ranked] = tiers(rank[ranked], groups[ranked], profile.tier_cutoffs)

    out = pd.DataFrame(index=matrix.values.index)
    out["score"] = final * 100.0
    out["ranked"] = ranked
    out["rank"] = nullable_int(rank, ranked)
    # scores normalised per country on different indicators are not comparable across countries: a
    # region-wide rank exists only for region-scoped profiles (there it equals `rank`)
    out["rank_region"] = nullable_int(rank_region, ranked & (profile.scope == "region"))
    out["tier"] = nullable_int(tier, ranked)
    pct, pillar_rank = pillar_percentiles(lay, subs, groups)
    lead, secondary = _lead_pillars(lay, pct)
    out["pillar"] = pd.Series(lead, index=out.index, dtype=object)
    out["pillar_secondary"] = pd.Series(secondary, index=out.index, dtype=object)
    for p in PILLARS:
        out[f"pillar_{p}"] = subs[lay.components.index(p)] * 100.0 if p in lay.components else np.nan
    for p in PILLARS:
        if p in lay.pillars:
            j = lay.pillars.index(p)
            out[f"pillar_rank_{p}"] = nullable_int(pillar_rank[j], ~np.isnan(pct[j]))
        else:
            out[f"pillar_rank_{p}"] = pd.array([pd.NA] * len(x), dtype="Int64")
    out["migration"] = subs[0] * 100.0 if lay.has_migration else np.nan
    out["coverage"] = coverage
    out["driver_coverage"] = drivers
    out["not_ranked_reason"] = pd.Series(reason, index=out.index, dtype=object)
    out["top_indicators"] = _top_indicators(matrix, lay, x, comp_w, ~np.isnan(raw))
    out["local_score"] = (
        final_scores(
            local_values(matrix, profile, lay, raw, groups),
            lay,
            within=profile.aggregation_within,
            across=profile.aggregation_across,
        )[:, 0]
        * 100.0
    )
    return out


def local_values(
    matrix: Matrix, profile: Profile, lay: Layout, raw: FloatArray, groups: IntArray
) -> FloatArray:
    """The filled values the local score aggregates: `raw` (the profile's normalised values) without the
    department-constant cells (`department_constant`), then the profile's missing-data treatment; kept in
    `matrix.memo` when there is one."""

    def build() -> FloatArray:
        local = raw.copy()
        local[department_constant(matrix, lay, raw, groups)] = np.nan
        return fill_missing(local, groups, profile.missing)

    if matrix.memo is None:
        return build()
    out: FloatArray = matrix.memo.get(("local", treatment_key(profile), profile.missing), build)
    return out


def fallback_mask(matrix: Matrix, lay: Layout) -> BoolArray:
    """Units × the layout's indicators: True where the value is a department's figure standing in (a writable
    copy: department_constant adds to it; read once per data and indicators when the matrix has a memo)."""
    if matrix.fallback is None:
        return np.zeros((len(matrix.values.index), len(lay.codes)), dtype=bool)
    fallback = matrix.fallback

    def build() -> BoolArray:
        frame = fallback.reindex(index=matrix.values.index, columns=list(lay.codes))
        mask: BoolArray = frame.astype("boolean").fillna(False).to_numpy(dtype=bool, copy=True)
        return mask

    if matrix.memo is None:
        return build()
    kept: BoolArray = matrix.memo.get(("fallback", lay.codes), build)
    return kept.copy()


def department_constant(matrix: Matrix, lay: Layout, raw: FloatArray, groups: IntArray) -> BoolArray:
    """Cells whose value cannot vary within a department: a department's figure standing in for its
    municipios, and every value of an indicator that is constant within each department of the scope group
    (judged on the departments with at least two values; an indicator with no such department is kept)."""
    out = fallback_mask(matrix, lay)
    if matrix.department is None:
        return out
    dept = matrix.department.reindex(matrix.values.index).to_numpy()
    for g in np.unique(groups):
        rows = np.flatnonzero(groups == g)
        by_dept = pd.DataFrame(raw[rows]).groupby(dept[rows])
        lo, hi, judged = by_dept.min(), by_dept.max(), by_dept.count() >= 2
        same = (hi - lo) <= EPS * (1.0 + np.maximum(hi.abs(), lo.abs()))
        constant = judged.any(axis=0) & (same | ~judged).all(axis=0)
        out[np.ix_(rows, np.flatnonzero(constant.to_numpy()))] = True
    return out


def nullable_int(values: IntArray, keep: BoolArray) -> pd.arrays.IntegerArray:
    """An Int64 array with <NA> where keep is False."""
    out = pd.array(values, dtype="Int64")
    out[~keep] = pd.NA
    return out


def pillar_percentiles(lay: Layout, subs: FloatArray, groups: IntArray) -> tuple[FloatArray, IntArray]:
    """Per pillar (rows, in `lay.pillars` order) and unit: the within-group percentile of its sub-score
    (NaN without data) and its descending rank among the group's units with data (-1 without data)."""
    start = 1 if lay.has_migration else 0
    n = subs.shape[1]
    pct = np.full((len(lay.pillars), n), np.nan)
    ranks = np.full((len(lay.pillars), n), -1, dtype=np.int64)
    for j in range(len(lay.pillars)):
        v = subs[start + j]
        for g in np.unique(groups):
            idx = np.flatnonzero((groups == g) & ~np.isnan(v))
            if not len(idx):
                continue
            vals = np.round(v[idx], RANK_DECIMALS)
            up, down = _tie_ranks(vals)
            pct[j, idx] = (up - 1) / (len(idx) - 1) if len(idx) > 1 else 0.5
            ranks[j, idx] = down
    return pct, ranks


def _tie_ranks(values: FloatArray) -> tuple[FloatArray, IntArray]:
    """Of values without NaN: the ascending rank with ties averaged and the descending rank with ties sharing
    the lowest, as scipy's ``rankdata(values, "average")`` and ``rankdata(-values, "min")`` give them (the
    same numbers: integers and halves are exact), from one sort."""
    n = len(values)
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    new = np.ones(n, dtype=bool)
    new[1:] = ordered[1:] != ordered[:-1]
    starts = np.flatnonzero(new)  # each run of equal values occupies [start, end) in ascending order
    ends = np.append(starts[1:], n)
    run = np.cumsum(new) - 1
    up = np.empty(n)
    up[order] = 0.5 * (starts + 1 + ends)[run]
    down = np.empty(n, dtype=np.int64)
    down[order] = (n - ends + 1)[run]
    return up, down


def _lead_pillars(lay: Layout, pct: FloatArray) -> tuple[list[str | None], list[str | None]]:
    """Lead and secondary pillar per unit: the highest within-group percentiles among weighted pillars with data."""
    n = pct.shape[1] if pct.ndim == 2 else 0
    if not lay.pillars:
        return [None] * n, [None] * n
    has = ~np.isnan(pct) & (lay.pillar_weights[:, None] > 0)
    key = np.where(has, -np.round(pct, 12), np.inf)
    order = np.argsort(key, axis=0, kind="stable")
    names = np.array(lay.pillars, dtype=object)

    def pick(level: int) -> list[str | None]:
        if level >= len(lay.pillars):
            return [None] * n
        idx = order[level]
        ok = has[idx, np.arange(n)]
        return [str(names[i]) if k else None for i, k in zip(idx, ok, strict=True)]

    return pick(0), pick(1)


def group_coverage(weights: FloatArray, has: BoolArray, groups: IntArray) -> FloatArray:
    """Per unit, the share of the component weight it has data for, out of the components its scope group
    has any data for: a pillar a whole country publishes nothing on is "no data" there (reported as such,
    and re-weighted away in every unit's score alike), not a gap of each of its municipios."""
    out = np.zeros(has.shape[1])
    for g in np.unique(groups):
        rows = np.flatnonzero(groups == g)
        available = has[:, rows].any(axis=1)
        den = float(weights @ available)
        if den > 0:
            out[rows] = (weights * available) @ has[:, rows] / den
    return out


def driver_coverage(matrix: Matrix, lay: Layout, raw: FloatArray, groups: IntArray) -> FloatArray:
    """Per unit, the share of its scope group's driver weight (pillars with data in the group, by pillar
    weight) for which the unit has at least one municipal value (not a department figure standing in).
    1.0 when the group has no driver data at all (nothing to require)."""
    n = raw.shape[0]
    if not lay.pillars:
        return np.ones(n)
    start = 1 if lay.has_migration else 0
    fallback = fallback_mask(matrix, lay)
    municipal = ~np.isnan(raw) & ~fallback & (lay.indicator_weights > 0)
    anywhere = ~np.isnan(raw) & (lay.indicator_weights > 0)
    out = np.ones(n)
    for g in np.unique(groups):
        rows = np.flatnonzero(groups == g)
        num = np.zeros(len(rows))
        den = 0.0
        for j, pillar_slice in enumerate(lay.members[start:]):
            w = float(lay.pillar_weights[j])
            if w <= 0 or not anywhere[np.ix_(rows, np.arange(raw.shape[1])[pillar_slice])].any():
                continue
            den += w
            num += w * municipal[rows][:, pillar_slice].any(axis=1)
        if den > 0:
            out[rows] = num / den
    return out


def _top_indicators(
    matrix: Matrix, lay: Layout, x: FloatArray, comp_w: FloatArray, present: BoolArray
) -> list[list[dict[str, Any]]]:
    """Up to five indicators the unit has a value for, largest contribution to the 0–100 score first (the
    within-component weights count every indicator that entered the mean, filled ones included)."""
    entered = ~np.isnan(x)
    weighted = entered * lay.indicator_weights
    within = np.zeros_like(x)
    for idx in lay.members:
        den = weighted[:, idx].sum(axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            within[:, idx] = np.where(den > 0, weighted[:, idx] / den, 0.0)
    effective = within * comp_w.T[:, lay.component_index] if len(lay.codes) else within
    contribution = np.where(present, effective * np.nan_to_num(x) * 100.0, np.nan)
    order = np.argsort(np.where(present, -contribution, np.inf), axis=1, kind="stable")[:, :TOP_INDICATORS]
    rows = np.arange(x.shape[0])[:, None]
    keep = present[rows, order]  # the five candidates of each unit: those it has a value for come first
    raw = matrix.values[list(lay.codes)].to_numpy(dtype=np.float64)
    codes = np.array(lay.codes, dtype=object)
    # one flat list of the entries kept (Python values, no per-cell float()), then each unit's slice of it
    flat = [
        {"code": code, "value": v, "normalised": n, "contribution": c}
        for code, v, n, c in zip(
            codes[order[keep]].tolist(),
            raw[rows, order][keep].tolist(),
            x[rows, order][keep].tolist(),
            contribution[rows, order][keep].tolist(),
            strict=True,
        )
    ]
    counts = keep.sum(axis=1)
    if not np.array_equal(keep, np.arange(keep.shape[1]) < counts[:, None]):  # pragma: no cover
        entries = iter(flat)  # (kept candidates not first: not expected) the same entries, unit by unit
        return [[next(entries) for ok in oks if ok] for oks in keep.tolist()]
    ends = np.cumsum(counts).tolist()
    return [flat[end - count : end] for end, count in zip(ends, counts.tolist(), strict=True)]
