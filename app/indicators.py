"""Read side of the layers: sources, the indicator catalogue with coverage, values per boundary set
(carried through the SLV crosswalk when published on the other geography), and a unit's values."""

from __future__ import annotations

import csv
import io
from typing import Any

import pandas as pd
from sqlalchemy import Connection, text

from app.errors import InvalidParameter, NotFound
from app.ingest.layers import DERIVED_CROSSWALK, OUT_OF_RANGE, POPULATION_CODES
from app.queries import COUNTRIES, boundary_set_ids
from app.settings import Settings
from app.sources import load_manifest

AREA_WEIGHTED = (
    "area_weighted"  # a rate aggregated upward with area weights (no population on that geography)
)


def sources(conn: Connection, settings: Settings) -> list[dict[str, Any]]:
    """Every source of the manifest (and users' uploads) with licence, citation, files and load time."""
    loaded = {r.id: r for r in conn.execute(text("SELECT id, loaded_at FROM sources"))}
    files: dict[str, dict[str, Any]] = {}
    for r in conn.execute(text("SELECT source_id, name, sha256, loaded_at FROM source_files")):
        files.setdefault(r.source_id, {})[r.name] = r
    out = []
    for s in load_manifest(settings.manifest).values():
        row = loaded.get(s.id)
        out.append(
            {
                "id": s.id,
                "kind": s.kind,
                "title": s.title,
                "publisher": s.publisher,
                "homepage": s.homepage,
                "licence": s.licence,
                "citation": s.citation,
                "notes": s.notes,
                "loaded_at": row.loaded_at.isoformat() if row and row.loaded_at else None,
                "files": [
                    {
                        "name": f.name,
                        "sha256": f.sha256,
                        "url": f.url or None,
                        "format": f.format,
                        "loaded": f.name in files.get(s.id, {}),
                    }
                    for f in s.files
                ],
            }
        )
    for u in conn.execute(text("SELECT * FROM sources WHERE kind = 'user' ORDER BY id")).mappings():
        out.append(
            {
                **{k: u[k] for k in ("id", "kind", "title", "publisher", "homepage", "licence", "citation")},
                "notes": "",
                "loaded_at": u["loaded_at"].isoformat() if u["loaded_at"] else None,
                "files": [
                    {"name": f.name, "sha256": f.sha256, "url": None, "format": "", "loaded": True}
                    for f in files.get(u["id"], {}).values()
                ],
            }
        )
    return out


def catalogue(conn: Connection, theme: str | None = None) -> list[dict[str, Any]]:
    """Indicators with theme, direction, unit, source and coverage per country (values / units in the set)."""
    params: dict[str, Any] = {}
    where = ""
    if theme:
        where = "WHERE i.theme = :theme"
        params["theme"] = theme
    rows = (
        conn.execute(
            text(f"""
        SELECT i.*, s.title AS source_title FROM indicators i JOIN sources s ON s.id = i.source_id
        {where} ORDER BY i.theme, i.code"""),
            params,
        )
        .mappings()
        .all()
    )
    cover = (
        conn.execute(
            text("""
        SELECT o.indicator_code, u.country, o.boundary_set_id, u.level, count(*) AS n,
               count(*) FILTER (WHERE :oor = ANY(o.flags)) AS out_of_range,
               (SELECT count(*) FROM admin_units x WHERE x.boundary_set_id = o.boundary_set_id
                  AND x.level = u.level) AS units
        FROM observations o JOIN admin_units u ON u.boundary_set_id = o.boundary_set_id AND u.pcode = o.pcode
        GROUP BY 1, 2, 3, 4"""),
            {"oor": OUT_OF_RANGE},
        )
        .mappings()
        .all()
    )
    by_code: dict[str, dict[str, Any]] = {}
    for c in cover:
        entry = by_code.setdefault(c["indicator_code"], {}).setdefault(c["country"], [])
        entry.append(
            {
                "set": c["boundary_set_id"],
                "level": c["level"],
                "values": c["n"],
                "units": c["units"],
                "share": round(c["n"] / c["units"], 4) if c["units"] else 0.0,
                "out_of_range": c["out_of_range"],
            }
        )
    return [
        {
            "code": r["code"],
            "name_en": r["name_en"],
            "name_es": r["name_es"],
            "theme": r["theme"],
            "direction": r["direction"],
            "measure": r["measure"],
            "unit": r["unit"],
            "period": r["period"],
            "publisher": r["publisher"],
            "valid_range": [r["valid_min"], r["valid_max"]],
            "description": r["description"],
            "source": {"id": r["source_id"], "title": r["source_title"]},
            "coverage": {iso: by_code.get(r["code"], {}).get(iso, []) for iso in COUNTRIES},
        }
        for r in rows
    ]


PILLAR_THEMES = ("migration", "I", "II", "III", "IV", "V")


def theme_coverage(conn: Connection) -> dict[str, dict[str, dict[str, Any]]]:
    """Per country (its current boundary set) and theme (migration and pillars I–V): which indicators have
    municipal values there (direct, or through the SLV crosswalk), how many municipios have at least one
    usable value (not missing, not out of range), and which indicators exist only per department.
    A theme with no municipal and no department value is `"status": "no data"`: scoring leaves that pillar
    null for the country, never zero."""
    rows = conn.execute(
        text("""
        WITH d AS (SELECT id AS set_id, country FROM boundary_sets WHERE is_default),
        usable AS (
          SELECT o.indicator_code, o.boundary_set_id, o.pcode FROM observations o
          WHERE o.value IS NOT NULL AND NOT (:oor = ANY(o.flags))),
        hits AS (
          SELECT d.country, u.level, x.indicator_code, x.pcode
          FROM usable x JOIN d ON d.set_id = x.boundary_set_id
          JOIN admin_units u ON u.boundary_set_id = x.boundary_set_id AND u.pcode = x.pcode
          UNION
          SELECT d.country, 2, x.indicator_code, c.to_pcode
          FROM usable x JOIN crosswalk c ON c.from_set = x.boundary_set_id AND c.from_pcode = x.pcode
          JOIN d ON d.set_id = c.to_set)
        SELECT h.country, i.theme, h.level, i.code, count(DISTINCT h.pcode) AS n, GROUPING(i.code) AS whole_theme
        FROM hits h JOIN indicators i ON i.code = h.indicator_code
        WHERE i.theme = ANY(:themes)
        GROUP BY GROUPING SETS ((h.country, i.theme, h.level, i.code), (h.country, i.theme, h.level))"""),
        {"oor": OUT_OF_RANGE, "themes": list(PILLAR_THEMES)},
    ).all()
    # per theme, the municipios with at least one usable value of any of its indicators
    units_with_data = {(r.country, r.theme): r.n for r in rows if r.whole_theme and r.level == 2}
    rows = [r for r in rows if not r.whole_theme]
    totals: dict[str, int] = dict(
        conn.execute(
            text("""
        SELECT b.country, count(*) FROM admin_units u JOIN boundary_sets b ON b.id = u.boundary_set_id
        WHERE b.is_default AND u.level = 2 GROUP BY 1""")
        ).all()
    )
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for iso in COUNTRIES:
        out[iso] = {}
        for theme in PILLAR_THEMES:
            municipal = sorted(
                {r.code for r in rows if r.country == iso and r.theme == theme and r.level == 2}
            )
            department = sorted(
                {r.code for r in rows if r.country == iso and r.theme == theme and r.level == 1}
                - set(municipal)
            )
            n = int(units_with_data.get((iso, theme), 0))
            total = int(totals.get(iso, 0))
            out[iso][theme] = {
                "status": "data" if municipal else ("department only" if department else "no data"),
                "municipal_indicators": municipal,
                "department_indicators": department,
                "units_with_data": n,
                "units": total,
                "share": round(n / total, 4) if total else 0.0,
            }
    return out


def indicator(conn: Connection, code: str) -> dict[str, Any]:
    """One indicator's definition, or NotFound."""
    row = conn.execute(text("SELECT * FROM indicators WHERE code = :c"), {"c": code}).mappings().first()
    if row is None:
        raise NotFound(f"No indicator '{code}'. The catalogue is at /v1/indicators.")
    return dict(row)


def _direct(
    conn: Connection,
    code: str,
    set_id: str,
    *,
    include_missing: bool = False,
    period: str | None = None,
) -> pd.DataFrame:
    """The stored values of `code` on one set: per unit, its latest period (periods are years or year ranges
    and sort as text), or the given `period`. A value the source marks as missing (NULL, with a flag) is
    left out unless asked for."""
    missing = "" if include_missing else "AND o.value IS NOT NULL"
    only = "" if period is None else "AND o.period = :period"
    return pd.DataFrame(
        [
            dict(r)
            for r in conn.execute(
                text(f"""
        SELECT DISTINCT ON (o.pcode) o.pcode, o.value, o.period, o.flags, o.sample_size FROM observations o
        WHERE o.indicator_code = :code AND o.boundary_set_id = :set {missing} {only}
        ORDER BY o.pcode, o.period DESC"""),
                {"code": code, "set": set_id, "period": period},
            ).mappings()
        ],
        columns=["pcode", "value", "period", "flags", "sample_size"],
    )


def _population(conn: Connection, set_id: str) -> pd.Series:
    """The municipal population stored on a set (the first of POPULATION_CODES that has values there)."""
    return population(conn, set_id)[1]


def population(conn: Connection, set_id: str) -> tuple[str | None, pd.Series]:
    """The municipal population stored on a set, by P-code, and the indicator it comes from (the first of
    POPULATION_CODES with values there; (None, empty) when none is stored)."""
    for code in POPULATION_CODES:
        pop = _direct(conn, code, set_id)
        if not pop.empty:
            return code, pop.set_index("pcode")["value"].astype("float64")
    return None, pd.Series(dtype="float64")


def _union(flags: pd.Series) -> list[str]:
    """Every flag of every part: a derived value keeps the flags of all the values it was made from."""
    return sorted({f for fl in flags for f in fl})


def _links(conn: Connection, set_id: str) -> list[tuple[str, str, str]]:
    """(other set, direction, …) pairs linked to set_id by the crosswalk: 'down' when set_id is the finer one."""
    rows = conn.execute(
        text("""
        SELECT DISTINCT to_set AS other, 'down' AS way FROM crosswalk WHERE from_set = :s
        UNION SELECT DISTINCT from_set, 'up' FROM crosswalk WHERE to_set = :s"""),
        {"s": set_id},
    ).all()
    return [(r.other, r.way, set_id) for r in rows]


def _derive(
    conn: Connection,
    code: str,
    measure: str,
    set_id: str,
    other: str,
    way: str,
    period: str | None = None,
) -> pd.DataFrame:
    """Values of `code` published on `other`, expressed on `set_id` through the crosswalk.

    Down (onto the finer units): counts split by area share, rates carried down. Up (onto the coarser units):
    counts summed by area share; rates weighted by population when a population is stored on the finer
    units, else by area (flagged). A coarse unit is derived only when all its parts have values."""
    src = _direct(conn, code, other, period=period)
    if src.empty:
        return src
    if way == "down":
        xw = pd.DataFrame(
            conn.execute(
                text(
                    "SELECT from_pcode AS pcode, to_pcode AS src, share_of_from, share_of_to FROM crosswalk "
                    "WHERE from_set = :t AND to_set = :o"
                ),
                {"t": set_id, "o": other},
            ).all(),
            columns=["pcode", "src", "share_of_from", "share_of_to"],
        )
        m = xw.merge(src.rename(columns={"pcode": "src"}), on="src")
        if measure == "count":
            m["part"] = m["value"] * m["share_of_to"]
            g = m.groupby("pcode").agg(
                value=("part", "sum"), period=("period", "first"), flags=("flags", _union)
            )
        else:
            m["w"] = m["value"] * m["share_of_from"]
            g = m.groupby("pcode").agg(
                w=("w", "sum"),
                s=("share_of_from", "sum"),
                period=("period", "first"),
                flags=("flags", _union),
            )
            g["value"] = g["w"] / g["s"]
        extra = [DERIVED_CROSSWALK]
    else:
        xw = pd.DataFrame(
            conn.execute(
                text(
                    "SELECT to_pcode AS pcode, from_pcode AS src, share_of_from, share_of_to FROM crosswalk "
                    "WHERE to_set = :t AND from_set = :o"
                ),
                {"t": set_id, "o": other},
            ).all(),
            columns=["pcode", "src", "share_of_from", "share_of_to"],
        )
        m = xw.merge(src.rename(columns={"pcode": "src"}), on="src", how="left")
        complete = m.groupby("pcode")["value"].apply(lambda v: v.notna().all())
        m = m[m["pcode"].isin(complete[complete].index)]
        if measure == "count":
            m["part"] = m["value"] * m["share_of_from"]
            g = m.groupby("pcode").agg(
                value=("part", "sum"), period=("period", "first"), flags=("flags", _union)
            )
            extra = [DERIVED_CROSSWALK]
        else:
            pop = _population(conn, other)
            weights = m["src"].map(pop) if not pop.empty and m["src"].isin(pop.index).all() else None
            m["wt"] = weights * m["share_of_from"] if weights is not None else m["share_of_to"]
            m["w"] = m["value"] * m["wt"]
            g = m.groupby("pcode").agg(
                w=("w", "sum"), s=("wt", "sum"), period=("period", "first"), flags=("flags", _union)
            )
            g["value"] = g["w"] / g["s"]
            extra = [DERIVED_CROSSWALK] + ([] if weights is not None else [AREA_WEIGHTED])
    g = g.reset_index()
    g["flags"] = g["flags"].map(lambda f: sorted({*f, *extra}))
    g["sample_size"] = None
    return g[["pcode", "value", "period", "flags", "sample_size"]]


def values(
    conn: Connection,
    code: str,
    *,
    country: str | None = None,
    set_id: str | None = None,
    include_missing: bool = False,
    period: str | None = None,
) -> list[dict[str, Any]]:
    """Values of an indicator on the requested (or each country's default) boundary set, with flags; per unit
    the latest period, or the given `period` (InvalidParameter listing the stored periods when it has none).
    With `include_missing`, values the source marks as missing come as None with their flag."""
    ind = indicator(conn, code)
    if period is not None:
        known = periods(conn, code)
        if period not in known:
            raise InvalidParameter(
                f"Indicator '{code}' has no values for period '{period}'; its periods are: "
                f"{', '.join(known) or 'none (nothing loaded)'}. Leave period out for each unit's latest."
            )
    if set_id and set_id not in boundary_set_ids(conn):
        raise InvalidParameter(
            f"Unknown boundary set '{set_id}'; known sets: {', '.join(boundary_set_ids(conn))}."
        )
    params: dict[str, Any] = {}
    where = "bs.id = :set" if set_id else "bs.is_default"
    if set_id:
        params["set"] = set_id
    if country:
        where += " AND bs.country = :country"
        params["country"] = country
    sets = list(
        conn.execute(
            text(f"SELECT bs.id FROM boundary_sets bs WHERE {where} ORDER BY bs.country"), params
        ).scalars()
    )
    out: list[dict[str, Any]] = []
    for s in sets:
        frame = _direct(conn, code, s, include_missing=include_missing, period=period)
        if frame.empty:
            for other, way, _ in _links(conn, s):
                frame = _derive(conn, code, ind["measure"], s, other, way, period)
                if not frame.empty:
                    break
        if frame.empty:
            continue
        units = pd.DataFrame(
            [
                dict(r)
                for r in conn.execute(
                    text("SELECT pcode, name, country, level FROM admin_units WHERE boundary_set_id = :s"),
                    {"s": s},
                ).mappings()
            ]
        )
        merged = frame.merge(units, on="pcode").sort_values("pcode")
        out += [
            {
                "pcode": r.pcode,
                "name": r.name,
                "country": r.country,
                "level": int(r.level),
                "boundary_set": s,
                "value": None if pd.isna(r.value) else float(r.value),
                "period": r.period,
                "flags": list(r.flags),
                "sample_size": None if pd.isna(r.sample_size) else float(r.sample_size),
            }
            for r in merged.itertuples(index=False)
        ]
    return out


def unit_values(conn: Connection, set_id: str, pcode: str) -> list[dict[str, Any]]:
    """All indicator values of one unit, direct or through the crosswalk, with their sources."""
    rows = (
        conn.execute(
            text("""
        SELECT * FROM (
          SELECT DISTINCT ON (i.code) i.code, i.name_en, i.name_es, i.theme, i.direction, i.unit, i.measure,
                 o.value, o.period, o.flags, o.sample_size, i.publisher, s.id AS source_id,
                 s.title AS source_title
          FROM observations o JOIN indicators i ON i.code = o.indicator_code
          JOIN sources s ON s.id = o.source_id
          WHERE o.boundary_set_id = :set AND o.pcode = :pcode ORDER BY i.code, o.period DESC) latest
        ORDER BY theme, code"""),
            {"set": set_id, "pcode": pcode},
        )
        .mappings()
        .all()
    )
    out = [_unit_value(dict(r)) for r in rows]
    have = {r["code"] for r in out}
    for other, way, _ in _links(conn, set_id):
        linked = (
            conn.execute(
                text("""
            SELECT DISTINCT i.code, i.name_en, i.name_es, i.theme, i.direction, i.unit, i.measure,
                   i.publisher, s.id AS source_id, s.title AS source_title
            FROM observations o JOIN indicators i ON i.code = o.indicator_code JOIN sources s ON s.id = i.source_id
            WHERE o.boundary_set_id = :o"""),
                {"o": other},
            )
            .mappings()
            .all()
        )
        for ind in linked:
            if ind["code"] in have:
                continue
            derived = _derive(conn, ind["code"], ind["measure"], set_id, other, way)
            hit = derived[derived["pcode"] == pcode]
            if not hit.empty:
                r = hit.iloc[0]
                out.append(
                    _unit_value(
                        {
                            **dict(ind),
                            "value": r["value"],
                            "period": r["period"],
                            "flags": r["flags"],
                            "sample_size": None,
                        }
                    )
                )
                have.add(ind["code"])
    return out


def _unit_value(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "code": r["code"],
        "name_en": r["name_en"],
        "name_es": r["name_es"],
        "theme": r["theme"],
        "direction": r["direction"],
        "unit": r["unit"],
        "value": None if r["value"] is None or pd.isna(r["value"]) else float(r["value"]),
        "period": r["period"],
        "flags": list(r["flags"]),
        "sample_size": r.get("sample_size"),
        "publisher": r.get("publisher"),
        "source": {"id": r["source_id"], "title": r["source_title"]},
    }


def periods(conn: Connection, code: str) -> list[str]:
    """The periods an indicator has values for (on any set), in order (period text sorts chronologically)."""
    return list(
        conn.execute(
            text("SELECT DISTINCT period FROM observations WHERE indicator_code = :c ORDER BY period"),
            {"c": code},
        ).scalars()
    )


def _unit(conn: Connection, pcode: str) -> dict[str, Any]:
    """A municipio (or distrito) by P-code, or NotFound saying where to find them."""
    row = (
        conn.execute(
            text(
                "SELECT boundary_set_id, pcode, name, country FROM admin_units WHERE level = 2 AND pcode = :p"
            ),
            {"p": pcode.strip().upper()},
        )
        .mappings()
        .first()
    )
    if row is None:
        raise NotFound(f"No municipio with P-code '{pcode}'. List them at /v1/municipalities.")
    return dict(row)


def _stored_series(conn: Connection, code: str, set_id: str, pcode: str) -> list[dict[str, Any]]:
    """Every stored period of one unit's indicator, oldest first, with the file and load time behind it."""
    return [
        {
            "period": r.period,
            "value": None if r.value is None else float(r.value),
            "flags": list(r.flags),
            "sample_size": r.sample_size,
            "file_sha256": r.file_sha256,
            "loaded_at": r.loaded_at.isoformat(),
        }
        for r in conn.execute(
            text("""
            SELECT period, value, flags, sample_size, file_sha256, loaded_at FROM observations
            WHERE indicator_code = :c AND boundary_set_id = :s AND pcode = :p ORDER BY period"""),
            {"c": code, "s": set_id, "p": pcode},
        )
    ]


def _derived_series(conn: Connection, ind: dict[str, Any], set_id: str, pcode: str) -> list[dict[str, Any]]:
    """One unit's series of an indicator published on the crosswalked geography, period by period (the SLV
    municipios and distritos), flagged derived_through_crosswalk like every derived value."""
    for other, way, _ in _links(conn, set_id):
        out = []
        other_periods = conn.execute(
            text(
                "SELECT DISTINCT period FROM observations WHERE indicator_code = :c AND boundary_set_id = :o "
                "ORDER BY period"
            ),
            {"c": ind["code"], "o": other},
        ).scalars()
        for p in other_periods:
            frame = _derive(conn, ind["code"], ind["measure"], set_id, other, way, p)
            hit = frame[frame["pcode"] == pcode]
            if not hit.empty:
                r = hit.iloc[0]
                out.append(
                    {
                        "period": p,
                        "value": None if pd.isna(r["value"]) else float(r["value"]),
                        "flags": list(r["flags"]),
                        "sample_size": None,
                        "file_sha256": None,
                        "loaded_at": None,
                    }
                )
        if out:
            return out
    return []


def unit_series(conn: Connection, pcode: str, code: str) -> dict[str, Any]:
    """Every period of one indicator for one municipio, oldest first, with its definition, publisher and
    source; values published on the other SLV geography come through the crosswalk. NotFound names what to
    fix: an unknown P-code, an unknown indicator, or an indicator without values for this unit."""
    unit = _unit(conn, pcode)
    ind = indicator(conn, code)
    items = _stored_series(conn, code, unit["boundary_set_id"], unit["pcode"])
    if not items:
        items = _derived_series(conn, ind, unit["boundary_set_id"], unit["pcode"])
    if not items:
        where = conn.execute(
            text(
                "SELECT DISTINCT u.country FROM observations o JOIN admin_units u "
                "ON u.boundary_set_id = o.boundary_set_id AND u.pcode = o.pcode "
                "WHERE o.indicator_code = :c ORDER BY 1"
            ),
            {"c": code},
        ).scalars()
        raise NotFound(
            f"Indicator '{code}' has no values for {unit['pcode']} ({unit['name']}, {unit['country']}); it has "
            f"values in: {', '.join(where) or 'no country (not loaded)'}. The catalogue with each indicator's "
            "coverage is at /v1/indicators."
        )
    source = (
        conn.execute(
            text("SELECT id, title, publisher, citation, loaded_at FROM sources WHERE id = :s"),
            {"s": ind["source_id"]},
        )
        .mappings()
        .one()
    )
    return {
        "unit": {k: unit[k] for k in ("pcode", "name", "country")}
        | {"boundary_set": unit["boundary_set_id"]},
        "indicator": {
            k: ind[k]
            for k in ("code", "name_en", "name_es", "theme", "direction", "unit", "measure", "description")
        }
        | {"vintage": ind["period"], "publisher": ind["publisher"] or source["publisher"]},
        "source": {
            "id": source["id"],
            "title": source["title"],
            "publisher": source["publisher"],
            "citation": source["citation"],
            "loaded_at": source["loaded_at"].isoformat() if source["loaded_at"] else None,
        },
        "total": len(items),
        "items": items,
    }


SERIES_COLUMNS = ["pcode", "name", "country", "boundary_set", "indicator", "period", "value", "flags"]


def series_csv(body: dict[str, Any]) -> str:
    """A unit's series (as `unit_series` returns it) as CSV: one row per period, flags ';'-separated, an
    empty value where the source marks it missing."""
    unit, code = body["unit"], body["indicator"]["code"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(SERIES_COLUMNS)
    for i in body["items"]:
        writer.writerow(
            [
                unit["pcode"],
                unit["name"],
                unit["country"],
                unit["boundary_set"],
                code,
                i["period"],
                "" if i["value"] is None else repr(i["value"]),
                ";".join(i["flags"]),
            ]
        )
    return buf.getvalue()
