"""A user's own layers: a table (CSV or XLSX) keyed by P-code, national code or name, or a GeoTIFF summarised
per municipio. Both become indicator layers through the same validation and atomic store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
from sqlalchemy import Connection, Engine, text

from app.errors import DataError, InvalidParameter, NotFound
from app.ingest.common import Validation
from app.ingest.layers import PARTIAL_COVERAGE, Indicator, Layer, observations_frame
from app.ingest.matching import default_set, match_rows, units_frame
from app.sources import Source, SourceFile, sha256_of

# P-code prefix → boundary set, longest prefix first
SET_BY_PCODE_PREFIX = (
    ("SVM", "slv-2024-municipios"),
    ("SV", "slv-2021-distritos"),
    ("GT", "gtm-municipios"),
    ("HN", "hnd-municipios"),
)


def user_source(path: Path, indicator: Indicator, fmt: str) -> Source:
    """A provenance record for a user's file: its name and sha256."""
    sha = sha256_of(path)
    return Source(
        id=indicator.source_id,
        kind="user",
        title=f"{indicator.name_en}: {path.name}",
        publisher="user upload",
        licence="as supplied by the user",
        citation=f"User file {path.name} (sha256 {sha[:12]}…)",
        mirror_dir="",
        files=(SourceFile(name=path.name, sha256=sha, format=fmt),),
    )


def user_indicator(
    code: str,
    *,
    name: str | None = None,
    theme: str = "context",
    direction: int = 1,
    unit: str = "as supplied",
    measure: str = "rate",
    period: str = "unstated",
    valid_min: float | None = None,
    valid_max: float | None = None,
) -> Indicator:
    """An indicator defined by a user for their own layer; checked like the catalogue's."""
    ind = Indicator(
        code=code,
        name_en=name or code,
        name_es=name or code,
        unit=unit,
        theme=theme,
        direction=direction,
        measure=measure,
        source_id=f"user-{code}",
        period=period,
        valid_min=valid_min,
        valid_max=valid_max,
        reason="user layer",
    )
    problems = ind.check()
    if problems:
        raise InvalidParameter("; ".join(problems))
    return ind


@dataclass(frozen=True)
class TableSpec:
    """How to read a user's table: which column keys the units and which holds the values."""

    key: str = "pcode"  # pcode | national_code | name
    key_column: str = "pcode"
    value_column: str = "value"
    department_column: str | None = None  # for key=name: the department (P-code, national code or name)
    country: str | None = None
    set_id: str | None = None
    sheet: str | None = None
    accept_partial: bool = False


VECTOR_TABLES = (".geojson", ".json", ".gpkg")


def check_code_free(conn: Connection, code: str) -> None:
    """A user layer may replace its own earlier upload, never an indicator of a bundled source."""
    owner = conn.execute(text("SELECT source_id FROM indicators WHERE code = :c"), {"c": code}).scalar()
    if owner is not None and owner != f"user-{code}":
        raise InvalidParameter(f"Indicator code '{code}' belongs to source '{owner}'; choose another code.")


def read_table(path: Path, sheet: str | None = None) -> pd.DataFrame:
    """A CSV, XLSX, GeoJSON or GeoPackage file's attributes as text columns (geometry is not used: rows are
    matched to municipios by key); unreadable files are clear DataErrors."""
    suffix = path.suffix.lower()
    try:
        if suffix in VECTOR_TABLES:
            import pyogrio

            frame = pd.DataFrame(pyogrio.read_dataframe(path, layer=sheet, read_geometry=False)).astype(str)
            frame = frame.replace({"None": "", "nan": ""})
        elif suffix in (".xlsx", ".xlsm"):
            frame = pd.read_excel(path, sheet_name=sheet or 0, dtype=str, engine="openpyxl")
        elif suffix in (".csv", ".txt"):
            frame = pd.read_csv(
                path, dtype=str, keep_default_na=False, encoding="utf-8-sig", sep=None, engine="python"
            )
        else:
            raise DataError(
                f"File '{path.name}': tables must be CSV, XLSX, GeoJSON or GeoPackage, not "
                f"'{suffix or 'no extension'}'."
            )
    except DataError:
        raise
    except Exception as exc:  # readers raise many types for broken files: all mean the same to the user
        raise DataError(
            f"File '{path.name}' cannot be read as a table (truncated or not "
            f"{suffix.lstrip('.').upper()}?): {str(exc).splitlines()[0][:160]}"
        ) from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame.fillna("")


def _target_set(conn: Connection, spec: TableSpec, keys: pd.Series) -> str:
    if spec.set_id:
        return spec.set_id
    if spec.key == "pcode":
        prefixes = {
            next((s for p, s in SET_BY_PCODE_PREFIX if str(k).upper().startswith(p)), None) for k in keys
        }
        if len(prefixes) == 1 and None not in prefixes:
            return str(prefixes.pop())
        raise InvalidParameter("P-codes span several boundary sets or none: give set= (e.g. gtm-municipios).")
    if not spec.country:
        raise InvalidParameter(f"Keying by {spec.key} needs country= (GTM, SLV or HND) or set=.")
    return default_set(conn, spec.country)


def prepare_table(conn: Connection, path: Path, indicator: Indicator, spec: TableSpec) -> Layer:
    """Match a user's table to units and build a layer; refuses a partial match unless accepted."""
    frame = read_table(path, spec.sheet)
    needed = [spec.key_column, spec.value_column] + (
        [spec.department_column] if spec.department_column else []
    )
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise DataError(f"File '{path.name}': no column {missing}; columns are {list(frame.columns)[:20]}.")
    frame = frame[frame[spec.key_column].str.strip() != ""]
    if frame.empty:
        raise DataError(f"File '{path.name}' has no rows with a {spec.key_column}.")
    cells = frame[spec.value_column].str.strip()
    values = pd.to_numeric(cells.replace("", None), errors="coerce")
    # 'nan' and 'inf' parse as numbers but are not values: refuse them like any other text
    text_cells = (values.isna() & (cells != "")) | cells.str.lower().isin(
        ["nan", "inf", "-inf", "+inf", "infinity", "-infinity"]
    )
    if text_cells.any():
        lines = [int(i) + 2 for i in frame.index[text_cells][:10]]
        raise DataError(
            f"File '{path.name}': column {spec.value_column} has text where numbers belong (lines {lines})."
        )
    set_id = _target_set(conn, spec, frame[spec.key_column])
    units = units_frame(conn, set_id)
    deps = frame[spec.department_column] if spec.department_column else None
    match = match_rows(frame[spec.key_column], units, by=spec.key, departments=deps)
    if (match.unmatched or match.ambiguous) and not spec.accept_partial:
        raise DataError(
            f"File '{path.name}': {len(match.unmatched)} rows match no unit and {len(match.ambiguous)} match "
            f"several, in {set_id}; nothing was stored. Fix them or accept a partial load.",
            [f"unmatched: {u}" for u in match.unmatched[:50]]
            + [f"ambiguous: {a}" for a in match.ambiguous[:50]],
        )
    frame = frame.assign(_pcode=match.pcodes, _value=values)
    kept = frame[frame["_pcode"].notna()]
    dup = kept[kept["_pcode"].duplicated(keep=False)]
    if not dup.empty:
        raise DataError(
            f"File '{path.name}': several rows for the same unit: "
            f"{sorted(set(dup['_pcode']))[:10]}; nothing was stored."
        )
    source = user_source(path, indicator, path.suffix.lstrip(".").lower())
    rows: list[dict[str, Any]] = [
        {
            "indicator_code": indicator.code,
            "boundary_set_id": set_id,
            "pcode": p,
            "period": indicator.period,
            "value": float(v),
            "flags": [],
            "file_sha256": source.files[0].sha256,
        }
        for p, v in zip(kept["_pcode"], kept["_value"], strict=True)
        if pd.notna(v)
    ]
    notes = [f"{len(rows)} values matched in {set_id} by {spec.key}"]
    if match.unmatched:
        notes.append(f"unmatched rows (not stored): {match.unmatched[:20]}")
    if match.ambiguous:
        notes.append(f"ambiguous rows (not stored): {match.ambiguous[:20]}")
    blanks = int(kept["_value"].isna().sum())
    if blanks:
        notes.append(f"{blanks} rows have no value: no data, not zero")
    return Layer(
        source, [(source, {path.name: path})], [indicator], observations_frame(rows), Validation(), notes
    )


RASTER_STATS = ("mean", "min", "max", "sum", "share_above", "share_below")


def zones(conn: Connection, set_ids: list[str]) -> gpd.GeoDataFrame:
    """Level-2 units of the given sets with full geometry, for zonal statistics."""
    frame = gpd.read_postgis(
        text(
            "SELECT boundary_set_id, pcode, geom FROM admin_units WHERE level = 2 AND boundary_set_id = ANY(:s)"
        ),
        conn,
        geom_col="geom",
        params={"s": set_ids},
    )
    if frame.empty:
        raise InvalidParameter("No municipios stored for those sets: load the boundaries first.")
    return frame


def prepare_raster(
    conn: Connection,
    path: Path,
    indicator: Indicator,
    *,
    stat: str = "mean",
    threshold: float | None = None,
    set_ids: list[str] | None = None,
    min_coverage: float = 0.5,
) -> Layer:
    """Summarise a GeoTIFF per municipio (coverage-exact) into a layer; municipios it misses get no value."""
    from app.zonal import zonal_stats

    if stat not in RASTER_STATS:
        raise InvalidParameter(f"stat must be one of {', '.join(RASTER_STATS)}, got '{stat}'.")
    if stat.startswith("share") and threshold is None:
        raise InvalidParameter(f"stat '{stat}' needs a threshold.")
    if set_ids is None:
        set_ids = list(
            conn.execute(text("SELECT id FROM boundary_sets WHERE is_default ORDER BY id")).scalars()
        )
    polygons = zones(conn, set_ids)
    polygons["zone"] = polygons["boundary_set_id"] + "/" + polygons["pcode"]
    base_stats = [stat] if stat in ("mean", "min", "max", "sum") else ["mean"]
    result = zonal_stats(path, polygons, base_stats, id_column="zone", threshold=threshold)
    source = user_source(path, indicator, "geotiff")
    rows: list[dict[str, Any]] = []
    uncovered = 0
    for zone, rec in result.iterrows():
        value, coverage = rec[stat], rec["coverage"]
        if pd.isna(value) or not coverage:
            uncovered += 1
            continue
        set_id, pcode = str(zone).split("/", 1)
        rows.append(
            {
                "indicator_code": indicator.code,
                "boundary_set_id": set_id,
                "pcode": pcode,
                "period": indicator.period,
                "value": float(value),
                "file_sha256": source.files[0].sha256,
                "flags": [PARTIAL_COVERAGE] if coverage < min_coverage else [],
            }
        )
    notes = [
        f"{len(rows)} municipios summarised by {stat}" + (f" (threshold {threshold})" if threshold else "")
    ]
    if uncovered:
        notes.append(f"{uncovered} municipios lie outside the raster or under nodata: no value")
    return Layer(
        source, [(source, {path.name: path})], [indicator], observations_frame(rows), Validation(), notes
    )


def prepare_user_layer(
    conn: Connection,
    path: Path,
    indicator: Indicator,
    spec: TableSpec,
    *,
    raster: bool,
    stat: str = "mean",
    threshold: float | None = None,
) -> Layer:
    """A user's table (matched by spec) or raster (summarised by stat) as a layer: the one entry point of the
    CLI and the upload endpoint."""
    if raster:
        return prepare_raster(
            conn,
            path,
            indicator,
            stat=stat,
            threshold=threshold,
            set_ids=[spec.set_id] if spec.set_id else None,
        )
    return prepare_table(conn, path, indicator, spec)


@dataclass
class DeletedLayer:
    """What `delete_user_layer` removed."""

    indicator: str
    source_id: str
    values: int
    epoch: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "indicator": self.indicator,
            "source_id": self.source_id,
            "values": self.values,
            "epoch": self.epoch,
        }


def delete_user_layer(engine: Engine, code: str) -> DeletedLayer:
    """Remove a user layer (its indicator, values and provenance record) in one transaction, and advance the
    data epoch so that every stored score run and remembered answer that used it is recomputed. Only a user
    upload can be deleted (source `user-{code}`): an indicator of a bundled source is refused, an unknown
    code is a 404. Frozen baseline values keep their copy of the layer's values."""
    from app.ingest.provenance import bump_epoch

    with engine.begin() as conn:
        owner = conn.execute(
            text("SELECT source_id FROM indicators WHERE code = :c FOR UPDATE"), {"c": code}
        ).scalar()
        if owner is None:
            raise NotFound(f"No user layer '{code}'; GET /v1/layers lists the indicators that exist.")
        if owner != f"user-{code}":
            raise InvalidParameter(
                f"Indicator '{code}' belongs to source '{owner}', not to a user upload: it cannot be deleted; "
                "reload or change its source instead."
            )
        values = int(
            conn.execute(text("DELETE FROM observations WHERE indicator_code = :c"), {"c": code}).rowcount
        )
        conn.execute(text("DELETE FROM indicators WHERE code = :c"), {"c": code})
        conn.execute(text("DELETE FROM sources WHERE id = :s"), {"s": owner})
        epoch = bump_epoch(conn, f"deleted user layer {code}")
    return DeletedLayer(code, owner, values, epoch)
