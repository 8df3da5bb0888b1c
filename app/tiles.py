"""Mapbox vector tiles (WebMercatorQuad) of the municipios and their priorities, rendered by PostGIS.

Below `FULL_GEOMETRY_ZOOM` tiles are cut from `geom_simple` (simplified at ingest, ~55 m); from there on from
the full `geom`. Either is further simplified in EPSG:3857 with a tolerance of half a tile unit
(`_tolerance`): invisible at 4096 units a tile, it makes low-zoom tiles 10-25 % smaller at no cost in time.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text

from app import baselines
from app.cache import Memo, data_epoch
from app.errors import InvalidParameter, NotFound
from app.scoring.service import DEFAULT_PROFILE, profile_by_id

MIN_ZOOM = 0
MAX_ZOOM = 22
EXTENT = 4096
BUFFER = 64
FULL_GEOMETRY_ZOOM = 9
# Bump when the SQL below changes what a tile holds: ETags derive from it and the data version, not the bytes.
TILE_FORMAT = "1"
WEB_MERCATOR_HALF_WORLD_M = 20037508.342789244
# ensure_run fingerprints every observation (~40 ms, more than a tile); data changes only on ingest


@dataclass(frozen=True)
class Collection:
    """A tile layer: its fields (name → TileJSON type) and whether it needs a score run."""

    id: str
    title: str
    description: str
    fields: dict[str, str]
    scored: bool


_UNIT_FIELDS = {"pcode": "String", "name": "String", "country": "String"}
COLLECTIONS: dict[str, Collection] = {
    c.id: c
    for c in (
        Collection(
            "municipalities",
            "Municipios",
            "Municipios of the current boundary set of each country.",
            {**_UNIT_FIELDS, "department": "String", "boundary_set": "String"},
            scored=False,
        ),
        Collection(
            "priorities",
            "Priority municipios",
            "Municipios with score, rank, tier and lead pillar of the default profile; a municipio not ranked "
            "has ranked = false, not_ranked_reason, and no score, rank, tier, pillar, hot spot or zone.",
            {
                **_UNIT_FIELDS,
                "ranked": "Boolean",
                "not_ranked_reason": "String",
                "score": "Number",
                "rank": "Number",
                "tier": "Number",
                "pillar": "String",
                "pillar_secondary": "String",
                "hotspot": "String",
                "zone": "String",
                "coverage": "Number",
            },
            scored=True,
        ),
        Collection(
            "priority-changes",
            "Priority changes since the baseline",
            "Municipios with the default profile's score, rank, tier and lead pillar now and at its newest "
            "baseline (POST /v1/baselines), and the changes (positive: more priority); empty until a baseline "
            "of the default profile exists.",
            {
                **_UNIT_FIELDS,
                "score_then": "Number",
                "score_now": "Number",
                "score_change": "Number",
                "rank_then": "Number",
                "rank_now": "Number",
                "rank_change": "Number",
                "tier_then": "Number",
                "tier_now": "Number",
                "tier_change": "Number",
                "pillar_then": "String",
                "pillar_now": "String",
                "pillar_changed": "Boolean",
            },
            scored=True,
        ),
    )
}


def collection(collection_id: str) -> Collection:
    """The tile collection with this id, or NotFound naming those there are."""
    if collection_id not in COLLECTIONS:
        raise NotFound(f"No tile collection '{collection_id}'; collections: {', '.join(COLLECTIONS)}.")
    return COLLECTIONS[collection_id]


def check_tile(z: int, x: int, y: int) -> None:
    """Raise InvalidParameter unless z/x/y names a WebMercatorQuad tile."""
    if not MIN_ZOOM <= z <= MAX_ZOOM:
        raise InvalidParameter(f"z must be between {MIN_ZOOM} and {MAX_ZOOM}, got {z}.")
    last = (1 << z) - 1
    for name, value in (("x", x), ("y", y)):
        if not 0 <= value <= last:
            raise InvalidParameter(f"{name} must be between 0 and {last} at zoom {z}, got {value}.")


def _tolerance(z: int) -> float:
    """Half a tile unit in metres at zoom z."""
    return WEB_MERCATOR_HALF_WORLD_M / ((1 << z) * EXTENT)


_SELECT = {
    "municipalities": """
        u.pcode, u.name, u.country, u.parent_pcode AS department, u.boundary_set_id AS boundary_set""",
    # the run's rows of the `priority_items` view: its rule nulls what derives from an unranked score
    "priorities": """
        u.pcode, u.name, u.country, u.ranked, u.not_ranked_reason, u.score, u.rank, u.tier, u.pillar,
        u.pillar_secondary, u.hotspot, u.zone, u.coverage""",
    # app.baselines' one SQL over `priority_items`: the run now against the newest default-profile baseline
    "priority-changes": """
        u.pcode, u.name, u.country, u.score_then, u.score_now, u.score_change, u.rank_then, u.rank_now,
        u.rank_change, u.tier_then, u.tier_now, u.tier_change, u.pillar_then, u.pillar_now, u.pillar_changed""",
}
_SOURCE = {
    "municipalities": """admin_units u
        JOIN boundary_sets bs ON bs.id = u.boundary_set_id AND bs.is_default AND u.level = 2""",
    "priorities": "priority_items u",
    "priority-changes": f"({baselines.changes_sql(now=':run', then=baselines.NEWEST_DEFAULT_BASELINE_RUN)}) u",
}
_UNIT = {"municipalities": "u.id", "priorities": "u.unit_id", "priority-changes": "u.unit_id"}
_SCOPE = {"municipalities": "", "priorities": " AND u.run_id = :run", "priority-changes": ""}


def _tile_sql(c: Collection, z: int) -> str:
    # geom_column is one of two fixed names; everything else the client sends is a bound parameter
    geom_column = "geom" if z >= FULL_GEOMETRY_ZOOM else "geom_simple"
    return f"""
    WITH bounds AS (
        SELECT ST_TileEnvelope(:z, :x, :y) AS env,
               -- the buffer's margin, clipped to the world so that edge tiles do not wrap the antimeridian
               ST_Transform(ST_ClipByBox2D(ST_TileEnvelope(:z, :x, :y, margin => :margin),
                                           ST_TileEnvelope(0, 0, 0)::box2d), 4326) AS env4326
    ), features AS MATERIALIZED (
        -- materialised: inlined, the planner runs ST_AsMVTGeom twice (filter and output), twice the time
        SELECT {_UNIT[c.id]} AS id,{_SELECT[c.id]},
               ST_AsMVTGeom(ST_Simplify(ST_Transform(u.{geom_column}, 3857), :tolerance, true),
                            b.env, {EXTENT}, {BUFFER}, true) AS geom
        FROM bounds b
        JOIN {_SOURCE[c.id]} ON u.{geom_column} && b.env4326{_SCOPE[c.id]}
    )
    -- ordered so that the same data always gives the same bytes, as the strong ETag promises
    SELECT coalesce(ST_AsMVT(features.*, :layer, {EXTENT}, 'geom', 'id' ORDER BY features.id), ''::bytea)
    FROM features WHERE geom IS NOT NULL
    """


def tile(conn: Connection, collection_id: str, z: int, x: int, y: int, run_id: int | None = None) -> bytes:
    """One MVT tile (empty bytes when no feature touches it); `run_id` is required for scored collections."""
    c = collection(collection_id)
    check_tile(z, x, y)
    if c.scored and run_id is None:
        raise ValueError(f"collection '{c.id}' needs a score run")
    params: dict[str, Any] = {
        "z": z,
        "x": x,
        "y": y,
        "margin": BUFFER / EXTENT,
        "tolerance": _tolerance(z),
        "layer": c.id,
        "run": run_id,
    }
    return bytes(conn.execute(text(_tile_sql(c, z)), params).scalar_one())


def newest_baseline(conn: Connection) -> int | None:
    """The id of the newest baseline of the default profile, which the `priority-changes` tiles compare with."""
    found = conn.execute(
        text("SELECT max(id) FROM baselines WHERE profile_id = :p"), {"p": DEFAULT_PROFILE}
    ).scalar()
    return int(found) if found is not None else None


_versions = Memo(8)


def boundary_version(conn: Connection) -> str:
    """A fingerprint of the default boundary sets: changes whenever one is reloaded or replaced. Kept per
    data epoch: the load that writes a boundary set bumps the epoch in the same transaction."""
    version: str = _versions.get(conn, ("boundaries", data_epoch(conn)), lambda: _boundary_version(conn))
    return version


def _boundary_version(conn: Connection) -> str:
    return str(
        conn.execute(
            text(
                "SELECT md5(coalesce(string_agg(id || '@' || loaded_at::text, ';' ORDER BY id), '')) "
                "FROM boundary_sets WHERE is_default"
            )
        ).scalar_one()
    )


def etag(collection_id: str, version: str, z: int, x: int, y: int, run_id: int | None = None) -> str:
    """A strong ETag for a tile: the same tile of the same data (and score run) renders the same bytes."""
    key = f"{TILE_FORMAT}|{collection_id}|{version}|{run_id}|{z}/{x}/{y}"
    return '"' + hashlib.sha256(key.encode()).hexdigest()[:32] + '"'


def bounds(conn: Connection) -> tuple[float, float, float, float] | None:
    """West, south, east, north of the municipios of the default sets, or None when none are loaded."""
    row = conn.execute(
        text("""
        SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM (
            SELECT ST_Extent(u.geom_simple) AS e FROM admin_units u
            JOIN boundary_sets bs ON bs.id = u.boundary_set_id AND bs.is_default
            WHERE u.level = 2) t""")
    ).one()
    if row[0] is None:
        return None
    return (
        math.floor(row[0] * 1e4) / 1e4,
        math.floor(row[1] * 1e4) / 1e4,
        math.ceil(row[2] * 1e4) / 1e4,
        math.ceil(row[3] * 1e4) / 1e4,
    )


def attribution(conn: Connection, c: Collection) -> str:
    """Publishers of the default boundary sets and, for scored collections, of the default profile's indicators."""
    boundaries = conn.execute(
        text(
            "SELECT DISTINCT s.publisher FROM sources s JOIN boundary_sets b ON b.source_id = s.id "
            "WHERE b.is_default ORDER BY 1"
        )
    ).scalars()
    out = f"Boundaries: {'; '.join(boundaries)}."
    if c.scored:
        indicators = conn.execute(
            text(
                "SELECT DISTINCT s.publisher FROM sources s JOIN indicators i ON i.source_id = s.id "
                "WHERE i.code = ANY(:codes) ORDER BY 1"
            ),
            {"codes": [i.code for i in profile_by_id(DEFAULT_PROFILE).indicators()]},
        ).scalars()
        out += f" Indicators: {'; '.join(indicators)}."
    return out
