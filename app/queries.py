"""Read queries over the stored boundaries. Every value is a bound parameter; identifiers are fixed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, text

from app.cache import Memo, data_epoch
from app.errors import InvalidParameter, NotFound
from app.text import name_key

COUNTRIES = {"GTM": "Guatemala", "SLV": "El Salvador", "HND": "Honduras"}


@dataclass(frozen=True)
class UnitFilter:
    """Filters of the municipio list; parse and validate with `UnitFilter.parse`."""

    country: str | None = None
    department: str | None = None
    q: str | None = None
    bbox: tuple[float, float, float, float] | None = None
    set: str | None = None

    @classmethod
    def parse(
        cls, country: str | None, department: str | None, q: str | None, bbox: str | None, set_id: str | None
    ) -> UnitFilter:
        """Validate raw query values; raise InvalidParameter with what to fix."""
        iso3 = None
        if country:
            iso3 = country.strip().upper()
            if iso3 not in COUNTRIES:
                raise InvalidParameter(
                    f"country must be one of {', '.join(COUNTRIES)} (ISO3), got '{country}'."
                )
        if q and q.strip() and not name_key(q):
            raise InvalidParameter("q must contain at least one letter or digit.")
        return cls(
            iso3,
            department.strip().upper() if department else None,
            q.strip() if q and q.strip() else None,
            parse_bbox(bbox) if bbox else None,
            set_id.strip() if set_id else None,
        )


def parse_bbox(raw: str) -> tuple[float, float, float, float]:
    """'minLon,minLat,maxLon,maxLat' in degrees → a checked tuple."""
    parts = raw.split(",")
    if len(parts) != 4:
        raise InvalidParameter("bbox must be four comma-separated numbers: minLon,minLat,maxLon,maxLat.")
    try:
        minx, miny, maxx, maxy = (float(p) for p in parts)
    except ValueError:
        raise InvalidParameter(
            "bbox must be four comma-separated numbers: minLon,minLat,maxLon,maxLat."
        ) from None
    values = (minx, miny, maxx, maxy)
    if any(v != v or v in (float("inf"), float("-inf")) for v in values):
        raise InvalidParameter("bbox values must be finite numbers.")
    if not (-180 <= minx <= 180 and -180 <= maxx <= 180 and -90 <= miny <= 90 and -90 <= maxy <= 90):
        raise InvalidParameter("bbox must be in degrees: longitudes within ±180, latitudes within ±90.")
    if minx > maxx or miny > maxy:
        raise InvalidParameter("bbox minimum must not exceed its maximum (minLon,minLat,maxLon,maxLat).")
    return values


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def boundary_set_ids(conn: Connection) -> list[str]:
    """Ids of the stored boundary sets."""
    return list(conn.execute(text("SELECT id FROM boundary_sets ORDER BY id")).scalars())


def _where(f: UnitFilter, conn: Connection) -> tuple[str, dict[str, Any]]:
    clauses = ["u.level = 2"]
    params: dict[str, Any] = {}
    if f.set:
        if f.set not in boundary_set_ids(conn):
            known = ", ".join(boundary_set_ids(conn)) or "none loaded"
            raise InvalidParameter(f"Unknown boundary set '{f.set}'; known sets: {known}.")
        clauses.append("u.boundary_set_id = :set")
        params["set"] = f.set
    else:
        clauses.append("bs.is_default")
    if f.country:
        clauses.append("u.country = :country")
        params["country"] = f.country
    if f.department:
        clauses.append("u.parent_pcode = :department")
        params["department"] = f.department
    if f.q:
        clauses.append("u.name_key LIKE :q ESCAPE '\\'")
        params["q"] = f"%{_escape_like(name_key(f.q))}%"
    if f.bbox:
        clauses.append("ST_Intersects(u.geom, ST_MakeEnvelope(:minx, :miny, :maxx, :maxy, 4326))")
        params.update(dict(zip(("minx", "miny", "maxx", "maxy"), f.bbox, strict=True)))
    return " AND ".join(clauses), params


_UNIT_COLUMNS = """
    u.pcode, u.national_code, u.name, u.country, u.level, u.boundary_set_id, u.area_km2,
    u.parent_pcode, d.name AS department_name, d.national_code AS department_national_code,
    ST_X(c.pt) AS lon, ST_Y(c.pt) AS lat
"""
_UNIT_FROM = """
    FROM admin_units u
    JOIN boundary_sets bs ON bs.id = u.boundary_set_id
    LEFT JOIN admin_units d ON d.boundary_set_id = u.boundary_set_id AND d.pcode = u.parent_pcode
    CROSS JOIN LATERAL (SELECT ST_Centroid(u.geom) AS pt) c
"""


def _item(row: Any) -> dict[str, Any]:
    return {
        "pcode": row.pcode,
        "national_code": row.national_code,
        "name": row.name,
        "country": row.country,
        "level": row.level,
        "boundary_set": row.boundary_set_id,
        "department": {
            "pcode": row.parent_pcode,
            "name": row.department_name,
            "national_code": row.department_national_code,
        },
        "area_km2": round(row.area_km2, 3),
        "centroid": [round(row.lon, 5), round(row.lat, 5)],
    }


_memo = Memo(512)


def list_municipalities(
    conn: Connection, f: UnitFilter, *, limit: int, offset: int, geometry: str | None = None
) -> tuple[int, list[dict[str, Any]]]:
    """Total matching municipios and one page of them, ordered by country and P-code (remembered per data
    epoch: boundaries change only through a load, which bumps it)."""
    key = ("municipalities", data_epoch(conn), f, limit, offset, geometry)
    result: tuple[int, list[dict[str, Any]]] = _memo.get(
        conn, key, lambda: _list_municipalities(conn, f, limit=limit, offset=offset, geometry=geometry)
    )
    return result


def _list_municipalities(
    conn: Connection, f: UnitFilter, *, limit: int, offset: int, geometry: str | None
) -> tuple[int, list[dict[str, Any]]]:
    where, params = _where(f, conn)
    total = conn.execute(text(f"SELECT count(*) {_UNIT_FROM} WHERE {where}"), params).scalar_one()
    geom_sql = ""
    if geometry in ("geom", "geom_simple"):
        geom_sql = f", ST_AsGeoJSON(u.{geometry}, 6) AS geojson"
    rows = conn.execute(
        text(
            f"SELECT {_UNIT_COLUMNS}{geom_sql} {_UNIT_FROM} WHERE {where} "
            "ORDER BY u.country, u.pcode LIMIT :limit OFFSET :offset"
        ),
        {**params, "limit": limit, "offset": offset},
    ).all()
    items = []
    for row in rows:
        item = _item(row)
        if geom_sql:
            item["geometry"] = orjson.Fragment(row.geojson)
        items.append(item)
    return int(total), items


def get_municipality(conn: Connection, pcode: str) -> dict[str, Any]:
    """One municipio (or distrito) with geometry, provenance and crosswalk partners."""
    row = conn.execute(
        text(
            f"SELECT {_UNIT_COLUMNS}, ST_AsGeoJSON(u.geom, 6) AS geojson, u.source_id, bs.title AS set_title, "
            f"bs.pcode_convention, bs.is_default, bs.provenance, bs.loaded_at "
            f"{_UNIT_FROM} WHERE u.level = 2 AND u.pcode = :pcode"
        ),
        {"pcode": pcode.strip().upper()},
    ).first()
    if row is None:
        raise NotFound(f"No municipio with P-code '{pcode}'. List them at /v1/municipalities.")
    item = _item(row)
    item["boundary_set"] = {
        "id": row.boundary_set_id,
        "title": row.set_title,
        "pcode_convention": row.pcode_convention,
        "is_default": row.is_default,
    }
    item["geometry"] = orjson.loads(row.geojson)
    item["provenance"] = {
        "source": _source(conn, row.source_id),
        "files": row.provenance,
        "loaded_at": row.loaded_at.isoformat(),
    }
    item["crosswalk"] = crosswalk_partners(conn, row.boundary_set_id, row.pcode)
    return item


def _source(conn: Connection, source_id: str) -> dict[str, Any]:
    row = (
        conn.execute(
            text("SELECT id, title, publisher, homepage, licence, citation FROM sources WHERE id = :id"),
            {"id": source_id},
        )
        .mappings()
        .one()
    )
    return dict(row)


def crosswalk_partners(conn: Connection, set_id: str, pcode: str) -> list[dict[str, Any]]:
    """Units of other sets that overlap this one, with the shares of area each way."""
    rows = (
        conn.execute(
            text("""
            SELECT x.to_set AS set, x.to_pcode AS pcode, o.name, x.share_of_from AS share_of_this,
                   x.share_of_to AS share_of_other
            FROM crosswalk x JOIN admin_units o ON o.boundary_set_id = x.to_set AND o.pcode = x.to_pcode
            WHERE x.from_set = :set AND x.from_pcode = :pcode
            UNION ALL
            SELECT x.from_set, x.from_pcode, o.name, x.share_of_to, x.share_of_from
            FROM crosswalk x JOIN admin_units o ON o.boundary_set_id = x.from_set AND o.pcode = x.from_pcode
            WHERE x.to_set = :set AND x.to_pcode = :pcode
            ORDER BY 2
        """),
            {"set": set_id, "pcode": pcode},
        )
        .mappings()
        .all()
    )
    return [
        {**r, "share_of_this": round(r["share_of_this"], 6), "share_of_other": round(r["share_of_other"], 6)}
        for r in rows
    ]


def countries(conn: Connection) -> list[dict[str, Any]]:
    """The three countries with their boundary sets and unit counts."""
    rows = conn.execute(
        text("""
        SELECT bs.country, bs.id, bs.title, bs.is_default, bs.loaded_at,
               count(*) FILTER (WHERE u.level = 1) AS departments,
               count(*) FILTER (WHERE u.level = 2) AS municipalities
        FROM boundary_sets bs LEFT JOIN admin_units u ON u.boundary_set_id = bs.id
        GROUP BY bs.id ORDER BY bs.country, bs.is_default DESC, bs.id
    """)
    ).all()
    out: dict[str, dict[str, Any]] = {
        iso: {"iso3": iso, "name": name, "boundary_sets": []} for iso, name in COUNTRIES.items()
    }
    for r in rows:
        out.setdefault(r.country, {"iso3": r.country, "name": r.country, "boundary_sets": []})
        out[r.country]["boundary_sets"].append(
            {
                "id": r.id,
                "title": r.title,
                "is_default": r.is_default,
                "departments": r.departments,
                "municipalities": r.municipalities,
                "loaded_at": r.loaded_at.isoformat(),
            }
        )
    return list(out.values())


def health(conn: Connection) -> dict[str, Any]:
    """The database's state: PostGIS version, migration revision, units stored."""
    postgis = conn.execute(text("SELECT postgis_lib_version()")).scalar()
    has_schema = conn.execute(text("SELECT to_regclass('public.admin_units') IS NOT NULL")).scalar()
    units = conn.execute(text("SELECT count(*) FROM admin_units")).scalar() if has_schema else 0
    revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar() if has_schema else None
    return {"reachable": True, "postgis": postgis, "revision": revision, "units": units}
