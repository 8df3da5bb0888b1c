"""Pieces shared by the loaders: reading vector files and workbooks, geometry repair, validation results."""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
import pyogrio
import shapely
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from app.errors import DataError

Progress = Callable[[str], None]

# A generous box around the three countries: anything outside is a CRS or axis-order mistake.
REGION_BBOX = (-93.0, 12.0, -82.0, 19.0)

UNIT_COLUMNS = ["level", "pcode", "national_code", "name", "parent_pcode", "geometry"]


def no_progress(_: str) -> None:
    """A progress callback that says nothing."""


@dataclass
class Validation:
    """The outcome of validating data before it is stored: never raises, lists every problem."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def extend(self, other: Validation) -> None:
        """Add another validation's findings to this one."""
        self.errors.extend(other.errors)
        self.warnings.extend(other.warnings)


def read_vector(
    path: Path,
    *,
    source_id: str,
    layer: str | None = None,
    encoding: str | None = None,
    assume_crs: str | None = None,
) -> gpd.GeoDataFrame:
    """Read a vector file; unreadable files and files with no CRS are clear DataErrors."""
    try:
        frame = pyogrio.read_dataframe(path, layer=layer, encoding=encoding)
    except Exception as exc:  # pyogrio raises several types for broken files
        raise DataError(
            f"Source '{source_id}', file '{path.name}' cannot be read as a vector layer: "
            f"{str(exc).splitlines()[0][:200]}"
        ) from exc
    if not isinstance(frame, gpd.GeoDataFrame) or "geometry" not in frame:
        raise DataError(f"Source '{source_id}', file '{path.name}' has no geometry column.")
    if frame.crs is None:
        if assume_crs is None:
            raise DataError(
                f"Source '{source_id}', file '{path.name}' has no coordinate reference system "
                "(for a shapefile: is its .prj missing?). Add one; Raíces does not guess CRSs."
            )
        frame = frame.set_crs(assume_crs)
    return frame


def polygonal(geom: BaseGeometry | None) -> MultiPolygon | None:
    """Repair a geometry with make_valid and keep its polygonal part as a MultiPolygon."""
    if geom is None or geom.is_empty:
        return None
    if not geom.is_valid:
        # make_valid keeps parts that buffer(0) drops (Livingston's 590 km² stored as a hole)
        geom = shapely.make_valid(geom)
    parts: list[Polygon] = []
    for g in getattr(geom, "geoms", [geom]):
        if isinstance(g, Polygon):
            parts.append(g)
        elif isinstance(g, MultiPolygon):
            parts.extend(g.geoms)
        elif hasattr(g, "geoms"):
            sub = polygonal(g)
            if sub is not None:
                parts.extend(sub.geoms)
    return MultiPolygon(parts) if parts else None


def repair(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Every geometry repaired and as a MultiPolygon, in EPSG:4326."""
    out = frame.to_crs(4326) if frame.crs.to_epsg() != 4326 else frame.copy()
    out["geometry"] = gpd.GeoSeries([polygonal(g) for g in out.geometry], index=out.index, crs=4326)
    return out


def validate_units(
    units: gpd.GeoDataFrame,
    *,
    label: str,
    expected_per_parent: Mapping[str, int] | None = None,
    expected_departments: int | None = None,
) -> Validation:
    """Check a unit frame: columns, unique codes, geometries, CRS, counts per department."""
    v = Validation()
    missing = [c for c in UNIT_COLUMNS if c not in units.columns]
    if missing:
        v.errors.append(f"{label}: missing columns {missing}")
        return v
    if units.crs is None or units.crs.to_epsg() != 4326:
        v.errors.append(f"{label}: CRS must be EPSG:4326, found {units.crs}")
    for column in ("pcode", "national_code", "name"):
        blank = units[column].isna() | (units[column].astype(str).str.strip() == "")
        if blank.any():
            v.errors.append(f"{label}: {int(blank.sum())} units have no {column}")
    dup = units["pcode"][units["pcode"].duplicated()]
    if not dup.empty:
        v.errors.append(f"{label}: duplicate P-codes {sorted(set(dup))[:10]}")
    geoms = units.geometry
    bad = geoms.isna() | geoms.is_empty | ~geoms.is_valid
    if bad.any():
        v.errors.append(f"{label}: invalid or empty geometries for {sorted(units.loc[bad, 'pcode'])[:10]}")
    not_poly = ~geoms.geom_type.isin(["MultiPolygon"]) & ~bad
    if not_poly.any():
        v.errors.append(f"{label}: non-polygonal geometries for {sorted(units.loc[not_poly, 'pcode'])[:10]}")
    if not geoms.isna().all():
        minx, miny, maxx, maxy = geoms.total_bounds
        rx0, ry0, rx1, ry1 = REGION_BBOX
        if minx < rx0 or miny < ry0 or maxx > rx1 or maxy > ry1:
            v.errors.append(
                f"{label}: extent ({minx:.2f}, {miny:.2f}, {maxx:.2f}, {maxy:.2f}) lies outside Central "
                "America: wrong CRS or swapped axes?"
            )
    departments = units[units["level"] == 1]
    municipios = units[units["level"] == 2]
    if expected_departments is not None and len(departments) != expected_departments:
        v.errors.append(f"{label}: {len(departments)} departments, expected {expected_departments}")
    orphans = set(municipios["parent_pcode"]) - set(departments["pcode"])
    if orphans:
        v.errors.append(f"{label}: municipios whose department is missing: {sorted(orphans)[:10]}")
    if expected_per_parent is not None:
        found = municipios.groupby("parent_pcode").size().to_dict()
        for parent in sorted(set(found) | set(expected_per_parent)):
            want, got = expected_per_parent.get(parent, 0), found.get(parent, 0)
            if want != got:
                v.errors.append(
                    f"{label}: department {parent} has {got} municipios, the reference lists {want}"
                )
    return v


def unit_frame(rows: pd.DataFrame, geometry: gpd.GeoSeries | list[BaseGeometry]) -> gpd.GeoDataFrame:
    """A unit frame with the canonical columns, from attribute rows and geometries."""
    frame = gpd.GeoDataFrame(rows.reset_index(drop=True), geometry=list(geometry), crs=4326)
    return frame[UNIT_COLUMNS]


def workbook_rows(path: Path, *, source_id: str, sheet: str) -> list[list[Any]]:
    """Every row of one sheet as cell values; an unreadable, truncated or sheet-less workbook is a clear
    DataError naming the source and file."""
    import openpyxl
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (zipfile.BadZipFile, InvalidFileException, OSError, KeyError, EOFError, ValueError) as exc:
        raise DataError(
            f"Source '{source_id}', file '{path.name}' is not a readable XLSX workbook "
            f"(truncated or corrupt?): {type(exc).__name__}"
        ) from exc
    try:
        if sheet not in wb.sheetnames:
            raise DataError(
                f"Source '{source_id}', file '{path.name}' has no sheet '{sheet}' "
                f"(sheets: {', '.join(wb.sheetnames)})."
            )
        return [list(r) for r in wb[sheet].iter_rows(values_only=True)]
    except (zipfile.BadZipFile, EOFError, KeyError, ValueError, SyntaxError, OSError) as exc:
        raise DataError(f"Source '{source_id}', file '{path.name}' is truncated or corrupt.") from exc
    finally:
        wb.close()


def read_xlsx_sheet(path: Path, *, source_id: str, sheet: str, header_row: int = 1) -> pd.DataFrame:
    """One sheet of a workbook as a frame, header on `header_row` (1-based); unreadable, truncated or
    sheet-less files are clear DataErrors (`workbook_rows`)."""
    rows = workbook_rows(path, source_id=source_id, sheet=sheet)
    if len(rows) < header_row:
        raise DataError(f"Source '{source_id}', file '{path.name}', sheet '{sheet}' is empty.")
    header = [str(c).strip() if c is not None else "" for c in rows[header_row - 1]]
    body = [r + [None] * (len(header) - len(r)) for r in rows[header_row:] if any(c is not None for c in r)]
    return pd.DataFrame([r[: len(header)] for r in body], columns=header)
