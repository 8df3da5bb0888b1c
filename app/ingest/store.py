"""Atomic, idempotent writes of prepared boundary sets: staging table, then upsert, in one transaction."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, text

from app.db import transaction
from app.errors import DataError
from app.ingest.boundaries import Prepared, PreparedSet
from app.ingest.provenance import bump_epoch, record_source
from app.text import name_key

# about 50 m at these latitudes: light enough for serving lists and maps, still recognisable
SIMPLIFY_TOLERANCE_DEG = 0.0005
# equal-area projection for areas (WGS 84 / NSIDC EASE-Grid 2.0 Global, cylindrical equal-area)
EQUAL_AREA_SRID = 6933
LOAD_LOCK = 7_242_024  # pg_advisory_xact_lock key: one load at a time


@dataclass
class LoadReport:
    """What a load did: per boundary set the units at each level, and any warnings."""

    source_id: str
    status: str  # "loaded" or "unchanged"
    sets: dict[str, dict[str, int]] = field(default_factory=dict)
    crosswalk_rows: int = 0
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0  # set by the caller: resolve, read, clean, validate and store

    def summary(self) -> str:
        """One line: the sets and their unit counts."""
        return ", ".join(f"{k} ({v['departments']} + {v['municipalities']})" for k, v in self.sets.items())


def store(bind: Engine | Connection, prepared: Prepared, *, force: bool = False) -> LoadReport:
    """Write a validated bundle in one transaction; a failure leaves the previous data intact."""
    if not prepared.validation.ok:
        raise DataError(
            f"Source '{prepared.source.id}' failed validation; nothing was stored: "
            + "; ".join(prepared.validation.errors[:5]),
            prepared.validation.errors,
        )
    report = LoadReport(
        prepared.source.id,
        "loaded",
        sets={ps.spec.id: _counts(ps) for ps in prepared.sets},
        warnings=list(prepared.validation.warnings),
    )
    with transaction(bind) as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOAD_LOCK})
        if not force and _unchanged(conn, prepared):
            report.status = "unchanged"
        else:
            now = datetime.now(UTC)
            for source, _paths in prepared.used:
                record_source(conn, source, now)
            for ps in prepared.sets:
                _upsert_set(conn, ps, prepared, now)
                _stage_units(conn, ps)
                _merge_units(conn, ps)
            if prepared.crosswalk is not None:
                report.crosswalk_rows = _replace_crosswalk(conn, prepared)
            bump_epoch(conn, f"load {prepared.source.id}")
    return report


def _counts(ps: PreparedSet) -> dict[str, int]:
    levels = ps.units["level"].value_counts().to_dict()
    return {"departments": int(levels.get(1, 0)), "municipalities": int(levels.get(2, 0))}


def _unchanged(conn: Connection, prepared: Prepared) -> bool:
    """True when every file used has the hash already recorded and every set has its units."""
    for source, _ in prepared.used:
        stored: dict[str, str] = dict(
            conn.execute(
                text("SELECT name, sha256 FROM source_files WHERE source_id = :s"), {"s": source.id}
            ).all()
        )
        if stored != {f.name: f.sha256 for f in source.files}:
            return False
    for ps in prepared.sets:
        n = conn.execute(
            text("SELECT count(*) FROM admin_units WHERE boundary_set_id = :s"), {"s": ps.spec.id}
        ).scalar()
        if n != len(ps.units):
            return False
    return True


def _provenance(prepared: Prepared) -> list[dict[str, str]]:
    return [{"source": s.id, "file": f.name, "sha256": f.sha256} for s, _ in prepared.used for f in s.files]


def _upsert_set(conn: Connection, ps: PreparedSet, prepared: Prepared, now: datetime) -> None:
    spec = ps.spec
    if spec.is_default:
        conn.execute(
            text("UPDATE boundary_sets SET is_default = false WHERE country = :c AND id <> :id"),
            {"c": spec.country, "id": spec.id},
        )
    conn.execute(
        text("""
            INSERT INTO boundary_sets (id, country, title, description, pcode_convention, is_default,
                                       source_id, provenance, loaded_at)
            VALUES (:id, :country, :title, :description, :conv, :is_default, :source, CAST(:prov AS jsonb), :now)
            ON CONFLICT (id) DO UPDATE SET country = EXCLUDED.country, title = EXCLUDED.title,
              description = EXCLUDED.description, pcode_convention = EXCLUDED.pcode_convention,
              is_default = EXCLUDED.is_default, source_id = EXCLUDED.source_id,
              provenance = EXCLUDED.provenance, loaded_at = EXCLUDED.loaded_at
        """),
        {
            "id": spec.id,
            "country": spec.country,
            "title": spec.title,
            "description": spec.description,
            "conv": spec.pcode_convention,
            "is_default": spec.is_default,
            "source": ps.source_id,
            "prov": json.dumps(_provenance(prepared)),
            "now": now,
        },
    )


def _stage_units(conn: Connection, ps: PreparedSet) -> None:
    conn.execute(text("DROP TABLE IF EXISTS staging_units"))
    conn.execute(
        text("""
        CREATE TEMP TABLE staging_units (
            level smallint, pcode text, national_code text, name text, name_key text,
            parent_pcode text, wkb bytea) ON COMMIT DROP
    """)
    )
    rows: list[dict[str, Any]] = [
        {
            "level": int(r.level),
            "pcode": r.pcode,
            "national_code": r.national_code,
            "name": r.name,
            "name_key": name_key(r.name),
            "parent_pcode": r.parent_pcode,
            "wkb": r.geometry.wkb,
        }
        for r in ps.units.itertuples(index=False)
    ]
    conn.execute(
        text(
            "INSERT INTO staging_units VALUES (:level, :pcode, :national_code, :name, :name_key, "
            ":parent_pcode, :wkb)"
        ),
        rows,
    )


def _merge_units(conn: Connection, ps: PreparedSet) -> None:
    params = {
        "set": ps.spec.id,
        "country": ps.spec.country,
        "source": ps.source_id,
        "tol": SIMPLIFY_TOLERANCE_DEG,
        "ea": EQUAL_AREA_SRID,
    }
    conn.execute(
        text("""
            INSERT INTO admin_units AS u (boundary_set_id, level, pcode, national_code, name, name_key,
                                          country, parent_pcode, source_id, area_km2, geom, geom_simple)
            SELECT :set, s.level, s.pcode, s.national_code, s.name, s.name_key, :country, s.parent_pcode,
                   :source, ST_Area(ST_Transform(g.geom, :ea)) / 1e6, g.geom,
                   ST_Multi(ST_CollectionExtract(ST_MakeValid(ST_SimplifyPreserveTopology(g.geom, :tol)), 3))
            FROM staging_units s
            CROSS JOIN LATERAL (SELECT ST_Multi(ST_GeomFromWKB(s.wkb, 4326)) AS geom) g
            ON CONFLICT (boundary_set_id, pcode) DO UPDATE SET
              level = EXCLUDED.level, national_code = EXCLUDED.national_code, name = EXCLUDED.name,
              name_key = EXCLUDED.name_key, country = EXCLUDED.country, parent_pcode = EXCLUDED.parent_pcode,
              source_id = EXCLUDED.source_id, area_km2 = EXCLUDED.area_km2, geom = EXCLUDED.geom,
              geom_simple = EXCLUDED.geom_simple
            WHERE (u.level, u.national_code, u.name, u.parent_pcode, u.source_id, ST_AsBinary(u.geom))
              IS DISTINCT FROM (EXCLUDED.level, EXCLUDED.national_code, EXCLUDED.name, EXCLUDED.parent_pcode,
                                EXCLUDED.source_id, ST_AsBinary(EXCLUDED.geom))
        """),
        params,
    )
    conn.execute(
        text(
            "DELETE FROM admin_units WHERE boundary_set_id = :set "
            "AND pcode NOT IN (SELECT pcode FROM staging_units)"
        ),
        {"set": ps.spec.id},
    )


def _replace_crosswalk(conn: Connection, prepared: Prepared) -> int:
    """Rewrite the crosswalk between the sets named in the bundle, shares from the stored geometries."""
    cross = prepared.crosswalk
    assert cross is not None
    pairs = cross[["from_set", "to_set"]].drop_duplicates().itertuples(index=False)
    for from_set, to_set in pairs:
        conn.execute(
            text("DELETE FROM crosswalk WHERE from_set = :f AND to_set = :t"), {"f": from_set, "t": to_set}
        )
    conn.execute(text("DROP TABLE IF EXISTS staging_crosswalk"))
    conn.execute(
        text(
            "CREATE TEMP TABLE staging_crosswalk (from_set text, from_pcode text, to_set text, "
            "to_pcode text) ON COMMIT DROP"
        )
    )
    conn.execute(
        text("INSERT INTO staging_crosswalk VALUES (:from_set, :from_pcode, :to_set, :to_pcode)"),
        cross.to_dict("records"),
    )
    result = conn.execute(
        text("""
            INSERT INTO crosswalk (from_set, from_pcode, to_set, to_pcode, share_of_from, share_of_to)
            SELECT x.from_set, x.from_pcode, x.to_set, x.to_pcode,
                   LEAST(1.0, i.km2 / a.area_km2), LEAST(1.0, i.km2 / b.area_km2)
            FROM staging_crosswalk x
            JOIN admin_units a ON a.boundary_set_id = x.from_set AND a.pcode = x.from_pcode
            JOIN admin_units b ON b.boundary_set_id = x.to_set AND b.pcode = x.to_pcode
            CROSS JOIN LATERAL (
              SELECT ST_Area(ST_Transform(ST_Intersection(a.geom, b.geom), :ea)) / 1e6 AS km2) i
        """),
        {"ea": EQUAL_AREA_SRID},
    )
    if result.rowcount != len(cross):
        raise DataError(
            f"Source '{prepared.source.id}': {len(cross) - result.rowcount} crosswalk rows name units "
            "that were not stored; nothing was stored."
        )
    return int(result.rowcount)
