"""Spatial structure of the priority score: queen contiguity, Getis-Ord Gi* hot spots, programme zones.

Choices, checked on the mirrored boundaries (tests/test_scoring_spatial.py):

- Contiguity is plain queen contiguity on shared vertices (``Queen.from_dataframe``), no tolerance. On the
  GTM (MINFIN TopoJSON, shared arcs), HND (A2SIT, "no gaps or overlaps") and SLV (COD-AB) municipios it
  gives exactly the pairs that ``fuzzy_contiguity`` finds with zero buffer, so there are no slivers or
  T-junctions to bridge. A buffer of 1e-4° (≈11 m) would add at most one pair per country (HN1703
  Amapala's island to Nacaome across 1.7 m of water in the simplified HND file; GT1315–GT1333, 11 m
  apart; none in SLV), so islands stay islands: HN1102 Guanaja, HN1104 Utila, HN1703 Amapala and SLV's
  Meanguera del Golfo have no neighbours; HN1101 Roatán and HN1103 José Santos Guardiola share Roatán.
- Gi* (``esda.G_Local``, ``star=True``) uses binary weights (``transform="B"``) with the focal unit weighted
  1: the classic Getis-Ord (1995) statistic, whose analytic z-score (``gi_z``) accounts for how many
  neighbours a unit has, as in ArcGIS's Hot Spot Analysis. Row standardisation would scale each
  unit's statistic and its permutations by the same constant, so the permutation p-values are the same
  either way (checked on GTM); only the z-score differs, and with ``"R"`` it ignores neighbour counts.
- Inference uses ``permutations`` conditional permutations (the focal value held fixed, its k neighbours'
  values drawn without replacement from the group's other units), seeded per group with
  ``numpy.random.default_rng(seed)`` so one country's result does not depend on the others. As esda's
  ``crand``, one matrix of draws (permutations × the largest neighbour count) serves every unit: unit i
  takes the first k_i draws of each row, and a draw that falls on i itself stands for the group's last
  unit, so each unit gets a uniform sample of its others. The permuted neighbour sums of all units with k
  neighbours are then one cumulative sum, sorted once, and each unit's count is a binary search plus the
  few rows where its stand-in was drawn (``_conditional_pvalues``): exact, vectorised, no per-unit loop.
  The pseudo p-value is esda's "directed" one, (larger + 1)/(permutations + 1) with larger the number of
  permuted sums ≥ the observed one (equal within 1e-9 relative counts as ≥, so summation order does not
  split ties), folded to the other tail when that is the smaller; ``p_sim`` is two-sided: twice that,
  capped at 1, since a unit is tested for being either hot or cold (esda announces the same change for its
  next major release). The draws differ from esda's own (numba's generator), so p-values agree with
  ``esda.G_Local`` within Monte Carlo error, not bit for bit (tests/test_scoring_spatial.py). The
  resolution is 2/(permutations + 1): 0.002 with 999, 0.0002 with the 9,999 the service uses.
- ``gi_z`` is esda's analytic z-score of Gi* (``G_Local.calc``: star, binary weights), computed here with
  the same formula on the same sparse weights (equal to esda's to 1e-12).
- Multiple testing: Benjamini–Hochberg over the p-values of the units tested in each group (units with a
  value and at least one neighbour with a value). A unit is significant when p ≤ the BH threshold at
  ``alpha``; hot when significant and ``gi_z`` > 0, cold when significant and ``gi_z`` < 0. Permutation
  p-values are coarse: nothing passes unless at least m·p_min/α units reach the smallest p-value (14 of
  GTM's 340 at 999 permutations and α = 0.05), so small clusters in large groups need more permutations
  (9,999 take ≈0.01 s on GTM).
- Confidence: for a significant unit, the highest of 99, 95, 90 whose BH procedure at α = 1 − level/100
  over the same p-values rejects it (BH rejection sets are nested in α, so at the default ``alpha=0.05``
  a significant unit has 99 or 95); None for every unit that is not significant.
- Units with no value are left out of the analysis (label "no data"); units whose neighbours all lack a
  value, or that have none, are "no neighbours", never significant. Values must be non-negative: Gi* is a
  ratio to the group total.
- Zones are the connected components of the member units in the contiguity graph with edges between
  groups removed, numbered within each prefix by descending mean ``value_column``, then size, then
  smallest id. A lone member (an island or a unit with no member neighbour) is a one-unit zone, so
  every member belongs to exactly one zone.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Hashable, Sequence
from typing import Any

import geopandas as gpd
import libpysal
import numpy as np
import numpy.typing as npt
import pandas as pd
import shapely
from scipy import sparse

BoolArray = npt.NDArray[np.bool_]

EQUAL_AREA_CRS = "EPSG:6933"
CONFIDENCE_LEVELS = (99, 95, 90)
HOT, COLD, NOT_SIGNIFICANT, NO_NEIGHBOURS, NO_DATA = (
    "hot",
    "cold",
    "not significant",
    "no neighbours",
    "no data",
)
HOTSPOT_COLUMNS = ["gi_z", "p_sim", "significant", "label", "confidence"]


def contiguity(units: gpd.GeoDataFrame, id_column: str = "key") -> libpysal.weights.W:
    """Queen contiguity (shared vertices, no tolerance) keyed by id_column; islands have no neighbours."""
    ids = _ids(units, id_column)
    frame = gpd.GeoDataFrame({"geometry": units.geometry.to_numpy()}, geometry="geometry", crs=units.crs)
    with warnings.catch_warnings():
        # libpysal warns about islands and disconnected components; both are expected here
        warnings.simplefilter("ignore", UserWarning)
        return libpysal.weights.Queen.from_dataframe(frame, ids=ids, use_index=False, silence_warnings=True)


def benjamini_hochberg(pvalues: Sequence[float] | np.ndarray, alpha: float) -> float:
    """The Benjamini–Hochberg p-value threshold at false discovery rate alpha (0.0 when nothing passes)."""
    p = np.sort(np.asarray(pvalues, dtype=float))
    m = len(p)
    if m == 0:
        return 0.0
    passed = np.nonzero(p <= alpha * np.arange(1, m + 1) / m)[0]
    return float(p[passed[-1]]) if len(passed) else 0.0


def hotspots(
    units: gpd.GeoDataFrame,
    value_column: str = "score",
    *,
    group_column: str | None = "country",
    id_column: str = "key",
    permutations: int = 999,
    seed: int = 2021,
    alpha: float = 0.05,
    w: libpysal.weights.W | None = None,
) -> pd.DataFrame:
    """Getis-Ord Gi* hot and cold spots of value_column within each group, FDR-controlled (see module doc).
    `w`: the units' contiguity when already built (``contiguity`` of these or more units); else built here."""
    ids = _ids(units, id_column)
    values = pd.to_numeric(units[value_column], errors="coerce").to_numpy(dtype=float)
    if (values < 0).any():
        raise ValueError(f"Gi* needs non-negative values; '{value_column}' has negative ones.")
    n = len(ids)
    # the columns as arrays, filled by position group by group (no pandas .loc per column and group)
    out: dict[str, np.ndarray] = {
        "gi_z": np.full(n, np.nan),
        "p_sim": np.full(n, np.nan),
        "significant": np.zeros(n, dtype=bool),
        "label": np.where(np.isnan(values), NO_DATA, NO_NEIGHBOURS).astype(object),
        "confidence": np.full(n, None, dtype=object),
    }
    adjacency = adjacency_matrix(w if w is not None else contiguity(units, id_column), ids)
    groups = (
        pd.Series(0, index=units.index) if group_column is None else units[group_column].fillna("")
    ).to_numpy()
    for group in pd.unique(groups):
        rows = np.nonzero((groups == group) & ~np.isnan(values))[0]
        if len(rows):
            _hotspots_in_group(rows, values[rows], adjacency, out, permutations, seed, alpha)
    return pd.DataFrame(out, index=pd.Index(ids, name=id_column))


def adjacency_matrix(w: libpysal.weights.W, ids: Sequence[Hashable]) -> sparse.csr_array:
    """The binary contiguity of `ids` (rows and columns in that order, no diagonal) taken from w."""
    position = {unit: i for i, unit in enumerate(w.id_order)}
    missing = [unit for unit in ids if unit not in position]
    if missing:
        raise ValueError(f"The weights do not cover {len(missing)} units, e.g. {missing[:3]}.")
    order = np.fromiter((position[unit] for unit in ids), dtype=np.int64, count=len(ids))
    full = sparse.csr_array(w.sparse, copy=True)  # w keeps its own (libpysal caches it)
    full.data[:] = 1.0  # binary, whatever transform w carries
    if np.array_equal(order, np.arange(len(order))):
        return full
    return sparse.csr_array(full[order][:, order])


def _hotspots_in_group(
    rows: np.ndarray,
    values: np.ndarray,
    adjacency: sparse.csr_array,
    out: dict[str, np.ndarray],
    permutations: int,
    seed: int,
    alpha: float,
) -> None:
    """Fill the columns of out at positions `rows`, one group's units that have a value."""
    a = sparse.csr_array(adjacency[rows][:, rows])
    linked = np.asarray(a.sum(axis=1)).ravel() > 0
    if not linked.any():
        return
    connected = rows[linked]
    out["label"][connected] = NOT_SIGNIFICANT
    y = values[linked]
    if len(y) < 3 or np.ptp(y) == 0:
        return  # nothing to permute against, or no variation to find
    a = sparse.csr_array(a[linked][:, linked])
    z = gi_star_z(y, a)
    p = np.minimum(1.0, 2 * _conditional_pvalues(y, a, permutations, np.random.default_rng(seed)))
    significant = p <= benjamini_hochberg(p, alpha)
    confidence: list[int | None] = [None] * len(p)
    for level in sorted(CONFIDENCE_LEVELS):  # highest level last, so it wins
        passed = significant & (p <= benjamini_hochberg(p, 1 - level / 100))
        confidence = [level if ok else c for ok, c in zip(passed, confidence, strict=True)]
    out["gi_z"][connected] = z
    out["p_sim"][connected] = p
    out["significant"][connected] = significant
    out["label"][connected] = np.where(
        significant & (z > 0), HOT, np.where(significant & (z < 0), COLD, NOT_SIGNIFICANT)
    )
    out["confidence"][connected] = np.array(confidence, dtype=object)


def gi_star_z(y: np.ndarray, adjacency: sparse.csr_array) -> np.ndarray:
    """The analytic z-score of Gi* with binary weights and the focal unit weighted 1: esda's ``G_Local.calc``
    (star=True, transform="B") on the same weights, written out so the weights need no libpysal W."""
    n = len(y)
    total = y.sum()
    statistic = (adjacency @ y + y) / total
    empirical_mean = total / n
    empirical_variance = (y**2).sum() / n - empirical_mean**2
    cardinality = np.asarray(adjacency.sum(axis=1)).ravel() + 1.0
    expected_value = cardinality / n
    expected_variance = cardinality * (n - cardinality)
    expected_variance = expected_variance / (n - 1)
    expected_variance = expected_variance * (1 / n**2)
    expected_variance = expected_variance * (empirical_variance / (empirical_mean**2))
    return np.asarray((statistic - expected_value) / np.sqrt(expected_variance), dtype=float)


def _conditional_pvalues(
    y: np.ndarray, adjacency: sparse.csr_array, permutations: int, rng: np.random.Generator
) -> np.ndarray:
    """esda's folded ("directed") pseudo p-value of each unit's neighbour sum under conditional permutation,
    all units at once (module doc): (larger + 1)/(permutations + 1), larger folded to the smaller tail."""
    n = len(y)
    k = np.asarray(adjacency.sum(axis=1)).ravel().astype(np.int64)
    observed = adjacency @ y
    threshold = observed - 1e-9 * np.abs(observed)  # equal up to summation order counts as ≥
    draws = _draws_without_replacement(rng, n - 1, int(k.max()), permutations)
    sums = np.cumsum(y[draws], axis=1)  # sums[p, c]: the first c + 1 draws as unit n − 1 sees them
    larger = np.zeros(n)
    for kk in np.unique(k):
        members = np.flatnonzero(k == kk)
        column = np.sort(sums[:, kk - 1])
        larger[members] = permutations - np.searchsorted(column, threshold[members], side="left")
    # rows where unit u < n − 1 drew itself among its first k_u: that draw stands for unit n − 1
    row, col = np.divmod(np.arange(draws.size), draws.shape[1])
    unit = draws.ravel()
    hit = col < k[unit]
    row, unit = row[hit], unit[hit]
    before = sums[row, k[unit] - 1]
    after = before + (y[n - 1] - y[unit])
    change = (after >= threshold[unit]).astype(float) - (before >= threshold[unit])
    larger += np.bincount(unit, weights=change, minlength=n)
    low = (permutations - larger) < larger
    larger[low] = permutations - larger[low]
    return np.asarray((larger + 1) / (permutations + 1), dtype=float)


def _draws_without_replacement(rng: np.random.Generator, n: int, k: int, size: int) -> np.ndarray:
    """`size` rows of k distinct integers in [0, n), each row a uniform ordered sample (so every prefix of a row
    is a uniform sample too): rows of independent uniform draws, redrawn whole while they repeat a value
    (a row kept is uniform over the ordered samples without repetition); when repeats would be common
    (k(k − 1)/2 > n), whole rows are shuffled instead."""
    if k * (k - 1) // 2 > n:
        return np.asarray(rng.permuted(np.tile(np.arange(n), (size, 1)), axis=1)[:, :k], dtype=np.int64)
    out = rng.integers(0, n, (size, k))
    redo = np.arange(size)
    while len(redo):
        ordered = np.sort(out[redo], axis=1)
        redo = redo[(ordered[:, 1:] == ordered[:, :-1]).any(axis=1)]
        out[redo] = rng.integers(0, n, (len(redo), k))
    return np.asarray(out, dtype=np.int64)


def zones(
    units: gpd.GeoDataFrame,
    members: pd.Series,
    w: libpysal.weights.W,
    *,
    group_column: str = "country",
    id_column: str = "key",
    prefix_column: str = "country",
    value_column: str = "score",
    area_km2: pd.Series | None = None,
) -> tuple[pd.Series, pd.DataFrame]:
    """Contiguous zones of member units (boolean Series by id) within each group, with a summary per zone.
    `area_km2`: the units' areas by id when already known (``zone_areas_km2``); else computed here."""
    ids = _ids(units, id_column)
    frame = units.set_axis(pd.Index(ids, name=id_column))
    is_member = members.reindex(frame.index).fillna(False).astype(bool)
    group = frame[group_column]
    components = _components(frame, is_member.to_numpy(), w, group)
    scores = pd.to_numeric(frame[value_column], errors="coerce").to_numpy(dtype=float)
    # each component's positions in frame, from one lookup of all the members
    lengths = np.fromiter(map(len, components), dtype=np.int64, count=len(components))
    found = frame.index.get_indexer([m for c in components for m in c]).astype(np.int64)
    at = np.split(found, np.cumsum(lengths)[:-1]) if len(components) else []
    prefixes, groups = frame[prefix_column].to_numpy(dtype=object), group.to_numpy(dtype=object)
    mean_of = [_nanmean(scores[pos]) for pos in at]
    means = [_nan_to(m, -np.inf) for m in mean_of]
    order = sorted(
        range(len(components)),
        key=lambda i: (str(prefixes[at[i][0]]), -means[i], -len(components[i]), str(components[i][0])),
    )
    zone_of = np.full(len(frame), None, dtype=object)
    rows: list[dict[str, Any]] = []
    numbered: dict[str, int] = {}
    width = max(2, len(str(len(components))))
    areas = (area_km2 if area_km2 is not None else zone_areas_km2(frame, id_column)).reindex(frame.index)
    areas_km2 = areas.to_numpy(dtype=float)
    # the members' bounds in EPSG:4326, transformed once (not per zone) and only when in another CRS
    geoms = frame.geometry
    if geoms.crs is None or not geoms.crs.equals("EPSG:4326"):
        geoms = geoms[is_member.to_numpy()].to_crs("EPSG:4326").reindex(frame.index)
    bounds = shapely.bounds(geoms.to_numpy())
    # each zone's bounds at once: [minx, miny, maxx, maxy], NaN ignored, over its members' rows
    if at:
        starts = np.cumsum([0, *map(len, at[:-1])])
        member_bounds = bounds[np.concatenate(at)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            low = np.fmin.reduceat(member_bounds[:, :2], starts, axis=0)
            high = np.fmax.reduceat(member_bounds[:, 2:], starts, axis=0)
        boxes = np.hstack([low, high]).tolist()
    pillars = frame["pillar"].to_numpy(dtype=object) if "pillar" in frame.columns else None
    for i in order:
        members_, pos = components[i], at[i]
        prefix = str(prefixes[pos[0]])
        numbered[prefix] = numbered.get(prefix, 0) + 1
        zone = f"{prefix}-Z{numbered[prefix]:0{width}d}"
        zone_of[pos] = zone
        row = {
            "zone": zone,
            group_column: groups[pos[0]],
            "units": len(members_),
            "members": list(members_),
            "mean_score": _nan_to(mean_of[i], None),
            "max_score": _nan_to(np.nan if np.isnan(scores[pos]).all() else np.nanmax(scores[pos]), None),
            "area_km2": float(np.where(np.isnan(areas_km2[pos]), 0.0, areas_km2[pos]).sum()),
            "bbox": boxes[i],
        }
        if pillars is not None:
            row["pillar"] = _mode(pillars[pos])
        rows.append(row)
    columns = ["zone", group_column, "units", "members", "mean_score", "max_score", "area_km2", "bbox"]
    columns += ["pillar"] if "pillar" in frame.columns else []
    return pd.Series(zone_of, index=frame.index, dtype=object, name="zone"), pd.DataFrame(
        rows, columns=columns
    )


def zone_areas_km2(units: gpd.GeoDataFrame, id_column: str = "key") -> pd.Series:
    """Each unit's area in km², in an equal-area projection (EQUAL_AREA_CRS), by id."""
    areas = units.geometry.to_crs(EQUAL_AREA_CRS).area.to_numpy() / 1e6
    return pd.Series(areas, index=pd.Index(_ids(units, id_column), name=id_column))


def _components(
    frame: pd.DataFrame, is_member: BoolArray, w: libpysal.weights.W, group: pd.Series
) -> list[list[Hashable]]:
    """Connected components of the member units (rows of frame where is_member) in w, edges only within a
    group; each sorted by str of its ids, in the order of their first member (scipy's connected components
    of the members' adjacency, no per-edge Python)."""
    from scipy.sparse.csgraph import connected_components

    members = np.flatnonzero(is_member)
    if not len(members):
        return []
    ids = frame.index.to_numpy(dtype=object)
    where = pd.Index(w.id_order).get_indexer(ids[members])  # -1: a unit w does not know has no neighbours
    known = np.flatnonzero(where >= 0)
    a = sparse.coo_array(sparse.csr_array(w.sparse)[where[known]][:, where[known]])
    row, col = known[a.row], known[a.col]
    codes = pd.factorize(group.to_numpy(dtype=object)[members])[0]
    keep = codes[row] == codes[col]
    n = len(members)
    graph = sparse.csr_array((np.ones(int(keep.sum())), (row[keep], col[keep])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    # components in the order of their first member, as a breadth-first walk from each member in turn finds them
    _, first = np.unique(labels, return_index=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    out: list[list[Hashable]] = [[] for _ in first]
    for unit, label in zip(ids[members].tolist(), rank[labels].tolist(), strict=True):
        out[label].append(unit)
    return [sorted(component, key=str) for component in out]


def _ids(units: gpd.GeoDataFrame, id_column: str) -> list[Hashable]:
    """The unit ids, checked to be present and unique."""
    ids = units[id_column].to_numpy(dtype=object)
    out: list[Hashable] = ids.tolist()
    if pd.isna(ids).any() or len(set(out)) != len(out):
        raise ValueError(f"Column '{id_column}' must hold a unique, non-null id for every unit.")
    return out


def _nanmean(values: np.ndarray) -> float:
    """The mean of the non-NaN values, computed as pandas' Series.mean does (NaN when there are none)."""
    missing = np.isnan(values)
    count = len(values) - int(missing.sum())
    return float(np.where(missing, 0.0, values).sum() / count) if count else float("nan")


def _mode(values: np.ndarray) -> Any:
    """The most frequent non-null value (ties broken by sort order), None when all are null."""
    counts = Counter(str(v) for v in values if not pd.isna(v))
    if not counts:
        return None
    top = max(counts.values())
    return sorted(v for v, c in counts.items() if c == top)[0]


def _nan_to(value: Any, default: Any) -> Any:
    """value as a float, or default when it is NaN."""
    return default if pd.isna(value) else float(value)
