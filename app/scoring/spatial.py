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
- Inference uses ``permutations`` conditional permutations (the focal value held fixed), seeded per group
  so one country's result does not depend on the others. ``p_sim`` is two-sided: twice esda's folded
  pseudo p-value (the tail the observed value falls in), capped at 1, since a unit is tested for being
  either hot or cold; esda announces the same change for its next major release. With 999 permutations
  the smallest is 0.002.
- Multiple testing: Benjamini–Hochberg over the p-values of the units tested in each group (units with a
  value and at least one neighbour with a value). A unit is significant when p ≤ the BH threshold at
  ``alpha``; hot when significant and ``gi_z`` > 0, cold when significant and ``gi_z`` < 0. Permutation
  p-values are coarse: nothing passes unless at least m·p_min/α units reach the smallest p-value (14 of
  GTM's 340 at 999 permutations and α = 0.05), so small clusters in large groups need more permutations
  (9,999 take ≈0.2 s on GTM).
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
from collections import deque
from collections.abc import Hashable, Sequence
from typing import Any

import esda
import geopandas as gpd
import libpysal
import numpy as np
import pandas as pd

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
) -> pd.DataFrame:
    """Getis-Ord Gi* hot and cold spots of value_column within each group, FDR-controlled (see module doc)."""
    ids = _ids(units, id_column)
    values = pd.to_numeric(units[value_column], errors="coerce").to_numpy(dtype=float)
    if (values < 0).any():
        raise ValueError(f"Gi* needs non-negative values; '{value_column}' has negative ones.")
    out = pd.DataFrame(
        {
            "gi_z": np.nan,
            "p_sim": np.nan,
            "significant": False,
            "label": np.where(np.isnan(values), NO_DATA, NO_NEIGHBOURS),
            "confidence": [None] * len(ids),
        },
        index=pd.Index(ids, name=id_column),
    )
    groups = (
        pd.Series(0, index=units.index) if group_column is None else units[group_column].fillna("")
    ).to_numpy()
    for group in pd.unique(groups):
        rows = np.nonzero((groups == group) & ~np.isnan(values))[0]
        if len(rows):
            _hotspots_in_group(units.iloc[rows], values[rows], out, id_column, permutations, seed, alpha)
    return out


def _hotspots_in_group(
    units: gpd.GeoDataFrame,
    values: np.ndarray,
    out: pd.DataFrame,
    id_column: str,
    permutations: int,
    seed: int,
    alpha: float,
) -> None:
    """Fill out's rows for one group's units that have a value."""
    w = contiguity(units, id_column)
    connected = [i for i in w.id_order if w.cardinalities[i] > 0]
    if not connected:
        return
    out.loc[connected, "label"] = NOT_SIGNIFICANT
    y = pd.Series(values, index=w.id_order)[connected].to_numpy()
    if len(connected) < 3 or np.ptp(y) == 0:
        return  # nothing to permute against, or no variation to find
    w = libpysal.weights.w_subset(w, connected, silence_warnings=True)
    state = np.random.get_state()  # esda seeds numpy's global generator; leave it as it was
    try:
        with warnings.catch_warnings():
            # G_Local cannot choose the alternative yet; we make the folded p-value two-sided below
            warnings.simplefilter("ignore", DeprecationWarning)
            g = esda.G_Local(
                y,
                w,
                transform="B",
                permutations=permutations,
                star=True,
                keep_simulations=False,
                n_jobs=1,
                seed=seed,
            )
    finally:
        np.random.set_state(state)
    z = np.asarray(g.Zs, dtype=float)
    p = np.minimum(1.0, 2 * np.asarray(g.p_sim, dtype=float))
    significant = p <= benjamini_hochberg(p, alpha)
    confidence: list[int | None] = [None] * len(p)
    for level in sorted(CONFIDENCE_LEVELS):  # highest level last, so it wins
        passed = significant & (p <= benjamini_hochberg(p, 1 - level / 100))
        confidence = [level if ok else c for ok, c in zip(passed, confidence, strict=True)]
    out.loc[connected, "gi_z"] = z
    out.loc[connected, "p_sim"] = p
    out.loc[connected, "significant"] = significant
    out.loc[connected, "label"] = np.where(
        significant & (z > 0), HOT, np.where(significant & (z < 0), COLD, NOT_SIGNIFICANT)
    )
    out.loc[connected, "confidence"] = pd.Series(confidence, index=connected, dtype=object)


def zones(
    units: gpd.GeoDataFrame,
    members: pd.Series,
    w: libpysal.weights.W,
    *,
    group_column: str = "country",
    id_column: str = "key",
    prefix_column: str = "country",
    value_column: str = "score",
) -> tuple[pd.Series, pd.DataFrame]:
    """Contiguous zones of member units (boolean Series by id) within each group, with a summary per zone."""
    ids = _ids(units, id_column)
    frame = units.set_axis(pd.Index(ids, name=id_column))
    is_member = members.reindex(frame.index).fillna(False).astype(bool)
    group = frame[group_column]
    components = _components([i for i in frame.index if is_member[i]], w, group)
    scores = pd.to_numeric(frame[value_column], errors="coerce")
    ranked = sorted(
        components,
        key=lambda c: (
            str(frame.at[c[0], prefix_column]),
            -_nan_to(scores[c].mean(), -np.inf),
            -len(c),
            str(c[0]),
        ),
    )
    zone_of = pd.Series([None] * len(frame), index=frame.index, dtype=object, name="zone")
    rows: list[dict[str, Any]] = []
    numbered: dict[str, int] = {}
    width = max(2, len(str(len(components))))
    areas_km2 = frame.geometry.to_crs(EQUAL_AREA_CRS).area / 1e6
    for members_ in ranked:
        prefix = str(frame.at[members_[0], prefix_column])
        numbered[prefix] = numbered.get(prefix, 0) + 1
        zone = f"{prefix}-Z{numbered[prefix]:0{width}d}"
        zone_of[members_] = zone
        row = {
            "zone": zone,
            group_column: frame.at[members_[0], group_column],
            "units": len(members_),
            "members": list(members_),
            "mean_score": _nan_to(scores[members_].mean(), None),
            "max_score": _nan_to(scores[members_].max(), None),
            "area_km2": float(areas_km2[members_].sum()),
            "bbox": [float(v) for v in frame.geometry[members_].to_crs("EPSG:4326").total_bounds],
        }
        if "pillar" in frame.columns:
            row["pillar"] = _mode(frame.loc[members_, "pillar"])
        rows.append(row)
    columns = ["zone", group_column, "units", "members", "mean_score", "max_score", "area_km2", "bbox"]
    columns += ["pillar"] if "pillar" in frame.columns else []
    return zone_of, pd.DataFrame(rows, columns=columns)


def _components(members: list[Hashable], w: libpysal.weights.W, group: pd.Series) -> list[list[Hashable]]:
    """Connected components of members in w, edges only within a group; each sorted, in first-member order."""
    member_set, seen = set(members), set()
    components = []
    for start in members:
        if start in seen:
            continue
        seen.add(start)
        component, queue = [start], deque([start])
        while queue:
            unit = queue.popleft()
            for other in w.neighbors.get(unit, []):
                if other in member_set and other not in seen and group[other] == group[unit]:
                    seen.add(other)
                    component.append(other)
                    queue.append(other)
        components.append(sorted(component, key=str))
    return components


def _ids(units: gpd.GeoDataFrame, id_column: str) -> list[Hashable]:
    """The unit ids, checked to be present and unique."""
    ids = units[id_column]
    if ids.isna().any() or not ids.is_unique:
        raise ValueError(f"Column '{id_column}' must hold a unique, non-null id for every unit.")
    return list(ids)


def _mode(values: pd.Series) -> Any:
    """The most frequent non-null value (ties broken by sort order), None when all are null."""
    counts = values.dropna().astype(str).value_counts()
    if counts.empty:
        return None
    best = counts[counts == counts.max()].index
    return sorted(best)[0]


def _nan_to(value: Any, default: Any) -> Any:
    """value as a float, or default when it is NaN."""
    return default if pd.isna(value) else float(value)
