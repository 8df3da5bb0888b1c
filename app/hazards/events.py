"""Reading the disaster event table (`hazard_events`, DesInventar records): filters, validation, totals.

The one place the event query lives; `/v1/hazards/events` calls `list_events`. Every value is a bound
parameter; identifiers are fixed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text

from app.errors import InvalidParameter
from app.queries import COUNTRIES
from app.text import name_key

_ITEM_COLUMNS = """e.serial, e.event_type, e.hydromet, e.date, e.year, e.department_name, e.municipio_name,
    e.boundary_set_id, e.pcode, u.name AS unit_name, e.place, e.deaths, e.injured, e.missing,
    e.houses_destroyed, e.houses_affected, e.victims, e.affected, e.glide, e.source_id"""
_FROM = """FROM hazard_events e
    LEFT JOIN admin_units u ON u.boundary_set_id = e.boundary_set_id AND u.pcode = e.pcode"""


@dataclass(frozen=True)
class EventFilter:
    """Validated filters of the event list (see `parse`)."""

    country: str | None = None
    boundary_set_id: str | None = None
    pcode: str | None = None
    event_type: str | None = None
    hydromet: bool | None = None
    year_from: int | None = None
    year_to: int | None = None


def event_types(conn: Connection, country: str | None = None) -> list[str]:
    """The event types stored (for a country), alphabetically."""
    return list(
        conn.execute(
            text(
                "SELECT DISTINCT event_type FROM hazard_events "
                "WHERE CAST(:c AS text) IS NULL OR country = :c ORDER BY 1"
            ),
            {"c": country},
        ).scalars()
    )


def _municipio(conn: Connection, country: str | None, value: str) -> tuple[str, str]:
    """A municipio given as P-code or name (accent- and case-insensitive) → (boundary set, P-code)."""
    raw = value.strip()
    rows = conn.execute(
        text("""
        SELECT u.boundary_set_id, u.pcode, u.name, d.name AS dep_name
        FROM admin_units u JOIN boundary_sets bs ON bs.id = u.boundary_set_id
        LEFT JOIN admin_units d ON d.boundary_set_id = u.boundary_set_id AND d.pcode = u.parent_pcode
        WHERE u.level = 2 AND (CAST(:c AS text) IS NULL OR bs.country = :c)
          AND (u.pcode = :pcode OR u.name_key = :key)
        ORDER BY u.pcode = :pcode DESC, bs.is_default DESC, u.pcode
    """),
        {"c": country, "pcode": raw.upper(), "key": name_key(raw)},
    ).all()
    where = f" in {country}" if country else ""
    if not rows:
        raise InvalidParameter(
            f"Unknown municipio '{raw}'{where}: give its P-code (e.g. GT0101) or its name "
            "(list them at /v1/municipalities)."
        )
    if rows[0].pcode == raw.upper():
        return str(rows[0].boundary_set_id), str(rows[0].pcode)
    if len(rows) > 1:
        options = ", ".join(f"{r.pcode} ({r.name}, {r.dep_name})" for r in rows[:10])
        raise InvalidParameter(f"Municipio name '{raw}' is ambiguous{where}; give a P-code: {options}.")
    return str(rows[0].boundary_set_id), str(rows[0].pcode)


def parse_filter(
    conn: Connection,
    *,
    country: str | None = None,
    municipio: str | None = None,
    event_type: str | None = None,
    hydromet: bool | None = None,
    year_from: int | None = None,
    year_to: int | None = None,
) -> EventFilter:
    """Validate raw query values against what is stored; raise InvalidParameter saying what to fix."""
    iso3 = None
    if country and country.strip():
        iso3 = country.strip().upper()
        if iso3 not in COUNTRIES:
            raise InvalidParameter(f"country must be one of {', '.join(COUNTRIES)} (ISO3), got '{country}'.")
    set_id = pcode = None
    if municipio and municipio.strip():
        set_id, pcode = _municipio(conn, iso3, municipio)
    kind = None
    if event_type and event_type.strip():
        kind = event_type.strip().upper()
        valid = event_types(conn)
        if kind not in valid:
            listed = (
                ", ".join(valid)
                if valid
                else "none: no disaster events are loaded (raices load gtm-desinventar)"
            )
            raise InvalidParameter(f"Unknown event type '{event_type}'; valid types: {listed}.")
    if year_from is not None and year_to is not None and year_from > year_to:
        raise InvalidParameter(f"year_from ({year_from}) is after year_to ({year_to}).")
    return EventFilter(iso3, set_id, pcode, kind, hydromet, year_from, year_to)


def _where(f: EventFilter) -> tuple[str, dict[str, Any]]:
    clauses = ["true"]
    params: dict[str, Any] = {}
    if f.country:
        clauses.append("e.country = :country")
        params["country"] = f.country
    if f.pcode:
        clauses.append("e.boundary_set_id = :set AND e.pcode = :pcode")
        params.update({"set": f.boundary_set_id, "pcode": f.pcode})
    if f.event_type:
        clauses.append("e.event_type = :type")
        params["type"] = f.event_type
    if f.hydromet is not None:
        clauses.append("e.hydromet = :hydromet")
        params["hydromet"] = f.hydromet
    if f.year_from is not None:
        clauses.append("e.year >= :y0")
        params["y0"] = f.year_from
    if f.year_to is not None:
        clauses.append("e.year <= :y1")
        params["y1"] = f.year_to
    return " AND ".join(clauses), params


def _num(v: float | None) -> float | int | None:
    return None if v is None else (int(v) if float(v).is_integer() else float(v))


def _item(r: Any) -> dict[str, Any]:
    return {
        "serial": r.serial,
        "event_type": r.event_type,
        "hydromet": r.hydromet,
        "date": r.date.isoformat() if r.date else None,
        "year": r.year,
        "department_name": r.department_name,
        "municipio_name": r.municipio_name,
        "boundary_set": r.boundary_set_id,
        "pcode": r.pcode,
        "unit_name": r.unit_name,
        "place": r.place,
        "deaths": _num(r.deaths),
        "injured": _num(r.injured),
        "missing": _num(r.missing),
        "houses_destroyed": _num(r.houses_destroyed),
        "houses_affected": _num(r.houses_affected),
        "victims": _num(r.victims),
        "affected": _num(r.affected),
        "glide": r.glide or None,
        "source": r.source_id,
    }


def _sources(conn: Connection, ids: list[str]) -> list[dict[str, Any]]:
    """Provenance of the sources behind the events: citation, licence, files with sha256, load time."""
    if not ids:
        return []
    rows = conn.execute(
        text("""
        SELECT s.id, s.title, s.publisher, s.homepage, s.licence, s.citation, s.loaded_at,
               coalesce(json_agg(json_build_object('name', f.name, 'sha256', f.sha256, 'url', f.url)
                                 ORDER BY f.name) FILTER (WHERE f.name IS NOT NULL), '[]') AS files
        FROM sources s LEFT JOIN source_files f ON f.source_id = s.id
        WHERE s.id = ANY(:ids) GROUP BY s.id ORDER BY s.id
    """),
        {"ids": ids},
    ).all()
    return [
        {
            "id": r.id,
            "title": r.title,
            "publisher": r.publisher,
            "homepage": r.homepage,
            "licence": r.licence,
            "citation": r.citation,
            "loaded_at": r.loaded_at.isoformat() if r.loaded_at else None,
            "files": r.files,
        }
        for r in rows
    ]


def list_events(conn: Connection, f: EventFilter, *, limit: int, offset: int) -> dict[str, Any]:
    """Events matching the filter, oldest first, with the total, a summary per type and provenance."""
    where, params = _where(f)
    summary = conn.execute(
        text(f"""
        SELECT e.event_type, bool_or(e.hydromet) AS hydromet, count(*) AS events,
               sum(e.deaths) AS deaths, sum(e.victims) AS victims, sum(e.affected) AS affected,
               min(e.year) AS first_year, max(e.year) AS last_year, array_agg(DISTINCT e.source_id) AS src
        FROM hazard_events e WHERE {where} GROUP BY e.event_type ORDER BY count(*) DESC, e.event_type
    """),
        params,
    ).all()
    rows = conn.execute(
        text(
            f"SELECT {_ITEM_COLUMNS} {_FROM} WHERE {where} "
            "ORDER BY e.year NULLS LAST, e.date NULLS LAST, e.source_id, e.serial LIMIT :limit OFFSET :offset"
        ),
        {**params, "limit": limit, "offset": offset},
    ).all()
    sources = sorted({s for r in summary for s in r.src})
    return {
        "total": sum(int(r.events) for r in summary),
        "limit": limit,
        "offset": offset,
        "filters": {
            "country": f.country,
            "boundary_set": f.boundary_set_id,
            "pcode": f.pcode,
            "type": f.event_type,
            "hydromet": f.hydromet,
            "year_from": f.year_from,
            "year_to": f.year_to,
        },
        "by_type": [
            {
                "event_type": r.event_type,
                "hydromet": r.hydromet,
                "records": int(r.events),
                "deaths": _num(r.deaths) or 0,
                "victims": _num(r.victims) or 0,
                "affected": _num(r.affected) or 0,
                "first_year": r.first_year,
                "last_year": r.last_year,
            }
            for r in summary
        ],
        "sources": _sources(conn, sources),
        "items": [_item(r) for r in rows],
    }
