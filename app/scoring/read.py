"""Reads of stored score runs: ranked priorities, one municipio's explanation, zones. Plain SQL."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text

from app.cache import Memo
from app.errors import InvalidParameter, NotFound
from app.queries import COUNTRIES
from app.scoring.profile import PILLARS


@dataclass(frozen=True)
class PriorityFilter:
    """Filters of the priority list."""

    country: str | None = None
    department: str | None = None
    pillar: str | None = None
    tier: int | None = None
    top: int | None = None
    ranked_only: bool = True
    rank_by: str | None = None  # a pillar: order by its within-country rank (units with its data only)

    @classmethod
    def parse(
        cls,
        country: str | None,
        department: str | None,
        pillar: str | None,
        tier: int | None,
        top: int | None,
        rank_by: str | None = None,
        include_unranked: bool = False,
    ) -> PriorityFilter:
        """Validate raw values; raise InvalidParameter with what to fix."""
        iso3 = country.strip().upper() if country else None
        if iso3 and iso3 not in COUNTRIES:
            raise InvalidParameter(f"country must be one of {', '.join(COUNTRIES)} (ISO3), got '{country}'.")
        if pillar and pillar.strip().upper() not in PILLARS:
            raise InvalidParameter(f"pillar must be one of {', '.join(PILLARS)}, got '{pillar}'.")
        by = rank_by.strip().upper() if rank_by else None
        if by and by not in (*PILLARS, "SCORE"):
            raise InvalidParameter(
                f"rank_by must be 'score' or a pillar ({', '.join(PILLARS)}), got '{rank_by}'."
            )
        return cls(
            iso3,
            department.strip().upper() if department else None,
            pillar.strip().upper() if pillar else None,
            tier,
            top,
            rank_by=None if by in (None, "SCORE") else by,
            ranked_only=not include_unranked,
        )

    def order_by(self) -> str:
        """The ORDER BY of the list: by country, then the composite rank or the chosen pillar's rank; for a
        region-scoped run (its ranked units have a `rank_region`) one regional order, the unranked after."""
        region_first = "CASE WHEN p.rank_region IS NULL THEN p.country END NULLS FIRST"
        if self.rank_by:
            return f"{region_first}, (p.pillar_ranks ->> :rank_by)::int NULLS LAST, p.pcode"
        return "p.rank_region NULLS LAST, p.country, p.rank NULLS LAST, p.pcode"


# Every read of a run's priorities selects from the `priority_items` view (migration 0009): the one read
# model, with the one rule for unranked municipios (listed with ranked = false and a reason; what derives
# from their composite score is NULL). Values arrive rounded by the view.
_ITEM = """
    p.pcode, p.name, p.country, p.boundary_set, p.department_pcode, p.department_name, p.score, p.rank,
    p.rank_region, p.rank_lo, p.rank_hi, p.rank_median, p.p_top, p.robust, p.tier_stability, p.tier, p.pillar,
    p.pillar_secondary, p.pillar_scores, p.pillar_ranks, p.migration, p.top_indicators, p.hotspot,
    p.hotspot_confidence, p.gi_z, p.zone, p.coverage, p.driver_coverage, p.not_ranked_reason, p.ranked, p.vintage
"""
_FROM = "FROM priority_items p"


def _round(v: Any, n: int = 2) -> Any:
    return round(v, n) if isinstance(v, float) and math.isfinite(v) else v


def item(r: Any) -> dict[str, Any]:
    """One priority item, the shape shared by every output."""
    return {
        "pcode": r.pcode,
        "name": r.name,
        "country": r.country,
        "boundary_set": r.boundary_set,
        "department": {"pcode": r.department_pcode, "name": r.department_name},
        "score": _round(r.score),
        "rank": r.rank,
        "rank_region": r.rank_region,
        "rank_interval": [r.rank_lo, r.rank_hi] if r.rank_lo is not None else None,
        "rank_median": r.rank_median,
        "p_top": _round(r.p_top, 3),
        "robust": r.robust,
        "tier": r.tier,
        "pillar": r.pillar,
        "pillar_secondary": r.pillar_secondary,
        "pillar_scores": {p: _round(v) for p, v in r.pillar_scores.items()},
        "pillar_ranks": {p: r.pillar_ranks.get(p) for p in PILLARS},
        "migration": _round(r.migration),
        "top_indicators": [{**t, "contribution": _round(t.get("contribution"))} for t in r.top_indicators],
        "hotspot": r.hotspot,
        "hotspot_confidence": r.hotspot_confidence,
        "zone": r.zone,
        "coverage": _round(r.coverage, 3),
        "driver_coverage": _round(r.driver_coverage, 3),
        "ranked": r.ranked,
        "not_ranked_reason": r.not_ranked_reason,
        "vintage": list(r.vintage),
    }


def _where(f: PriorityFilter) -> tuple[str, dict[str, Any]]:
    clauses = ["p.run_id = :run"]
    params: dict[str, Any] = {}
    if f.ranked_only:
        clauses.append("p.ranked")
    if f.country:
        clauses.append("p.country = :country")
        params["country"] = f.country
    if f.department:
        clauses.append("p.department_pcode = :department")
        params["department"] = f.department
    if f.pillar:
        clauses.append("p.pillar = :pillar")
        params["pillar"] = f.pillar
    if f.tier is not None:
        clauses.append("p.tier = :tier")
        params["tier"] = f.tier
    if f.rank_by:
        clauses.append("(p.pillar_ranks ->> :rank_by) IS NOT NULL")
        params["rank_by"] = f.rank_by
    if f.top is not None:
        clauses.append("(p.pillar_ranks ->> :rank_by)::int <= :top" if f.rank_by else "p.rank <= :top")
        params["top"] = f.top
    return " AND ".join(clauses), params


# a stored run never changes (its rows are written once, in the transaction that creates it, and run ids are
# never reused), so its answers are remembered per database, run and request; the lookup of the run
# (`service.ensure_run`) reads the data epoch on every request
_memo = Memo(256)


def priorities(
    conn: Connection, run: int, f: PriorityFilter, *, limit: int, offset: int, geometry: bool = False
) -> tuple[int, list[dict[str, Any]], list[str | None]]:
    """Total, one page of ranked municipios (by country, then rank) and, on request, their GeoJSON geometry
    (remembered per run and request)."""
    result: tuple[int, list[dict[str, Any]], list[str | None]] = _memo.get(
        conn,
        ("priorities", run, f, limit, offset, geometry),
        lambda: _priorities(conn, run, f, limit=limit, offset=offset, geometry=geometry),
    )
    return result


def _priorities(
    conn: Connection, run: int, f: PriorityFilter, *, limit: int, offset: int, geometry: bool
) -> tuple[int, list[dict[str, Any]], list[str | None]]:
    where, params = _where(f)
    params["run"] = run
    geom = ", ST_AsGeoJSON(p.geom_simple, 6) AS g" if geometry else ""
    # without geometry the total comes with the page (a window count: one round trip instead of two); with it,
    # on its own, as the window would have every matching row's GeoJSON built before the LIMIT
    window = "" if geometry else ", count(*) OVER () AS total"
    rows = conn.execute(
        text(
            f"SELECT {_ITEM}{geom}{window} {_FROM} WHERE {where} ORDER BY {f.order_by()} "
            "LIMIT :limit OFFSET :offset"
        ),
        {**params, "limit": limit, "offset": offset},
    ).all()
    if rows and not geometry:
        total = int(rows[0].total)
    else:
        total = int(conn.execute(text(f"SELECT count(*) {_FROM} WHERE {where}"), params).scalar_one())
    return total, [item(r) for r in rows], [getattr(r, "g", None) for r in rows]


FLAT_COLUMNS = [
    "pcode",
    "name",
    "country",
    "department_pcode",
    "department_name",
    "boundary_set",
    "score",
    "rank",
    "rank_region",
    "rank_lo",
    "rank_hi",
    "p_top",
    "robust",
    "tier",
    "pillar",
    "pillar_secondary",
    *[f"pillar_{p}" for p in PILLARS],
    *[f"pillar_rank_{p}" for p in PILLARS],
    "migration",
    "hotspot",
    "hotspot_confidence",
    "zone",
    "coverage",
    "ranked",
    "not_ranked_reason",
    "top_indicator_1",
    "top_indicator_2",
    "top_indicator_3",
    "vintage",
]


def priorities_frame(conn: Connection, run: int, f: PriorityFilter, *, full_geometry: bool = False) -> Any:
    """Every priority matching the filter as a GeoDataFrame (EPSG:4326) of the view's flat columns
    (FLAT_COLUMNS), in rank order."""
    import geopandas as gpd
    import shapely

    where, params = _where(f)
    column = "p.geom" if full_geometry else "p.geom_simple"
    selected = ", ".join(
        "array_to_string(p.vintage, ',') AS vintage" if c == "vintage" else f'p."{c}"' for c in FLAT_COLUMNS
    )
    rows = conn.execute(
        text(
            f"SELECT {selected}, ST_AsBinary({column}) AS wkb {_FROM} WHERE {where} ORDER BY {f.order_by()}"
        ),
        {**params, "run": run},
    ).all()
    return gpd.GeoDataFrame(
        [dict(zip(FLAT_COLUMNS, r[:-1], strict=True)) for r in rows],
        columns=FLAT_COLUMNS,
        geometry=shapely.from_wkb([bytes(r.wkb) for r in rows]),
        crs=4326,
    )


def explain(conn: Connection, run: int, pcode: str) -> dict[str, Any]:
    """A municipio's score with its pillar sub-scores, contributions, rank interval, hotspot, zone, and the five
    municipios of its country whose pillar and migration profile is most alike (remembered per run)."""
    out: dict[str, Any] = _memo.get(
        conn, ("explain", run, pcode.strip().upper()), lambda: _explain(conn, run, pcode)
    )
    return out


_tables = Memo(8)  # whole runs (a few hundred kB each), for explanations


def _run_rows(conn: Connection, run: int) -> dict[str, Any]:
    """Every row of a run by P-code, read once per run: an explanation compares a municipio with every
    other of its country, so one read of the run serves them all."""
    rows: dict[str, Any] = _tables.get(
        conn,
        ("rows", run),
        lambda: {
            r.pcode: r
            for r in conn.execute(text(f"SELECT {_ITEM} {_FROM} WHERE p.run_id = :run"), {"run": run})
        },
    )
    return rows


@dataclass(frozen=True)
class _Peers:
    """One country's ranked municipios of a run, in P-code order, with their pillar sub-scores and migration
    score as columns (NaN where a value is missing): what an explanation compares a municipio with."""

    rows: list[Any]
    index: dict[str, int]
    columns: dict[str, Any]  # key → float64 array over `rows`


def _peers(conn: Connection, run: int) -> dict[str, _Peers]:
    """A run's `_Peers` by country, built once per run from its rows."""

    def build() -> dict[str, _Peers]:
        import numpy as np  # here, not at import: the server answers /health without numpy

        by_country: dict[str, list[Any]] = {}
        for r in _run_rows(conn, run).values():
            if r.ranked:
                by_country.setdefault(r.country, []).append(r)
        out = {}
        for country, rows in by_country.items():
            rows.sort(key=lambda r: r.pcode)
            keys = dict.fromkeys(k for r in rows for k in r.pillar_scores)
            columns = {
                k: np.array([_nan(r.pillar_scores.get(k)) for r in rows], dtype="float64") for k in keys
            }
            columns["migration"] = np.array([_nan(r.migration) for r in rows], dtype="float64")
            out[country] = _Peers(rows, {r.pcode: i for i, r in enumerate(rows)}, columns)
        return out

    peers: dict[str, _Peers] = _tables.get(conn, ("peers", run), build)
    return peers


def _nan(v: Any) -> float:
    return math.nan if v is None else float(v)


def _explain(conn: Connection, run: int, pcode: str) -> dict[str, Any]:
    """The explanation of one municipio. Its similar municipios are the five ranked ones of its country
    nearest in root-mean-square difference over the pillar sub-scores and migration score both have (ties
    by P-code); computed over the country's columns at once, adding the squared differences in the same
    order as a loop over the municipio's keys would, so the distances are the same to the last bit."""
    import numpy as np

    rows = _run_rows(conn, run)
    row = rows.get(pcode.strip().upper())
    if row is None:
        raise NotFound(
            f"No score for '{pcode}' in this profile's boundary sets. List them at /v1/priorities."
        )
    out = item(row)
    out["similar"] = []
    peers = _peers(conn, run).get(row.country)
    if peers is None:
        return out
    mine = {**row.pillar_scores, "migration": row.migration}
    n = len(peers.rows)
    total = np.zeros(n)
    common = np.zeros(n)
    for k, v in mine.items():
        column = peers.columns.get(k)
        if v is None or column is None:
            continue
        has = ~np.isnan(column)
        d = column - v
        total += np.where(has, d * d, 0.0)
        common += has
    candidate = common > 0
    me = peers.index.get(row.pcode)
    if me is not None:
        candidate[me] = False
    idx = np.flatnonzero(candidate)
    with np.errstate(invalid="ignore", divide="ignore"):
        dist = np.sqrt(total[idx] / common[idx])
    for j in np.argsort(dist, kind="stable")[:5]:  # stable: equal distances stay in P-code order
        o = peers.rows[idx[j]]
        out["similar"].append(
            {
                "pcode": o.pcode,
                "name": o.name,
                "score": _round(o.score),
                "rank": o.rank,
                "pillar": o.pillar,
                "distance": _round(float(dist[j])),
            }
        )
    return out


def zones(conn: Connection, run: int, country: str | None = None) -> list[dict[str, Any]]:
    """Programme zones of a run: contiguous tier-1 or hot-spot municipios, with their summary."""
    params: dict[str, Any] = {"run": run}
    where = "run_id = :run"
    if country:
        where += " AND country = :c"
        params["c"] = country.upper()
    rows = conn.execute(
        text(f"""
        SELECT zone, country, units, members, mean_score, max_score, area_km2, pillar,
               ST_AsGeoJSON(geom, 5) AS g, ST_XMin(geom) AS x0, ST_YMin(geom) AS y0, ST_XMax(geom) AS x1,
               ST_YMax(geom) AS y1
        FROM score_zones WHERE {where} ORDER BY country, zone"""),
        params,
    ).all()
    return [
        {
            "zone": r.zone,
            "country": r.country,
            "units": r.units,
            "members": list(r.members),
            "mean_score": _round(r.mean_score),
            "max_score": _round(r.max_score),
            "area_km2": _round(r.area_km2, 1),
            "pillar": r.pillar,
            "bbox": [_round(r.x0, 5), _round(r.y0, 5), _round(r.x1, 5), _round(r.y1, 5)],
            "geometry": r.g,
        }
        for r in rows
    ]
