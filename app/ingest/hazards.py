"""Climate shock: Atlantic hurricanes 1975–2024 (HURDAT2 via dplyr) as tracks and fixes in PostGIS, wind-field
rasters for Eta and Iota (November 2020), and per-municipio exposure indicators."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
from shapely.geometry import LineString, MultiLineString, Point
from shapely.geometry.base import BaseGeometry
from sqlalchemy import Connection, text

from app.hazards.hurdat import read_dplyr_storms, tracks
from app.hazards.wind import CENTRAL_AMERICA, storm_max_wind_kt, write_geotiff
from app.ingest.common import Progress, Validation
from app.ingest.layers import Indicator, Layer, observations_frame
from app.ingest.series import HURRICANES_SEASON
from app.settings import Settings
from app.sources import Resolver, Source
from app.zonal import zonal_stats

ETA_IOTA = ("ETA-2020", "IOTA-2020")
TROPICAL_STORM_KT = 34.0
HURRICANE_KT = 64.0
PASS_DISTANCE_M = 100_000.0
# metric CRS for the 100 km test: UTM 16N spans the region with under 1 % scale error at its edges
METRIC_CRS = "EPSG:32616"


def hurricane_paths(fixes: pd.DataFrame) -> gpd.GeoDataFrame:
    """Per storm, the parts of its track at hurricane strength: segments between two consecutive fixes of
    at least 64 kt, and lone fixes of at least 64 kt."""
    rows: list[dict[str, Any]] = []
    for storm_id, g in fixes.sort_values(["storm_id", "time"]).groupby("storm_id", sort=False):
        strong = g["wind_kt"].to_numpy() >= HURRICANE_KT
        if not strong.any():
            continue
        pts = list(zip(g["lon"].to_numpy(float), g["lat"].to_numpy(float), strict=True))
        parts: list[BaseGeometry] = [
            LineString([pts[i], pts[i + 1]]) for i in range(len(pts) - 1) if strong[i] and strong[i + 1]
        ]
        parts += [Point(pts[i]) for i in range(len(pts)) if strong[i]]
        lines = [p for p in parts if isinstance(p, LineString)]
        points = [p for p in parts if isinstance(p, Point)]
        geom = (
            MultiLineString(lines).union(gpd.GeoSeries(points).union_all())
            if lines
            else gpd.GeoSeries(points).union_all()
        )
        rows.append({"storm_id": storm_id, "geometry": geom})
    return gpd.GeoDataFrame(rows, columns=["storm_id", "geometry"], geometry="geometry", crs=4326)


def hurricanes_within(
    units: gpd.GeoDataFrame,
    paths: gpd.GeoDataFrame,
    distance_m: float = PASS_DISTANCE_M,
) -> pd.Series:
    """Per unit, how many storms passed within `distance_m` of it at hurricane strength."""
    u = units.to_crs(METRIC_CRS)
    p = paths.to_crs(METRIC_CRS)
    joined = gpd.sjoin(
        u[["zone", "geometry"]], p[["storm_id", "geometry"]], predicate="dwithin", distance=distance_m
    )
    counts = joined.groupby("zone")["storm_id"].nunique()
    return counts.reindex(u["zone"], fill_value=0)


def hurricanes_by_season(
    units: gpd.GeoDataFrame,
    paths: gpd.GeoDataFrame,
    season_of: pd.Series,
    seasons: range,
    distance_m: float = PASS_DISTANCE_M,
) -> pd.DataFrame:
    """Per unit and season (the storm's year, `season_of` by storm id), how many storms passed within
    `distance_m` of it at hurricane strength: one row per unit and season, 0 when none did. Summed over the
    seasons it equals `hurricanes_within`."""
    u = units.to_crs(METRIC_CRS)
    p = paths.to_crs(METRIC_CRS)
    joined = gpd.sjoin(
        u[["zone", "geometry"]], p[["storm_id", "geometry"]], predicate="dwithin", distance=distance_m
    )
    joined["season"] = joined["storm_id"].map(season_of)
    counts = joined.groupby(["zone", "season"])["storm_id"].nunique()
    index = pd.MultiIndex.from_product([u["zone"], list(seasons)], names=["zone", "season"])
    return counts.reindex(index, fill_value=0).rename("storms").reset_index()


def _units(conn: Connection) -> gpd.GeoDataFrame:
    frame = gpd.read_postgis(
        text("SELECT boundary_set_id, pcode, geom FROM admin_units WHERE level = 2"), conn, geom_col="geom"
    )
    frame["zone"] = frame["boundary_set_id"] + "/" + frame["pcode"]
    return frame.rename_geometry("geometry")


def eta_iota_raster(fixes: pd.DataFrame, raster_dir: Path, sha: str) -> Path:
    """The maximum modelled wind of Eta and Iota per cell (kt), written once per source file version."""
    target = raster_dir / f"eta-iota-2020-max-wind-{sha[:12]}.tif"
    if target.exists():
        return target
    raster_dir.mkdir(parents=True, exist_ok=True)
    fields = [storm_max_wind_kt(fixes[fixes["storm_id"] == sid], CENTRAL_AMERICA) for sid in ETA_IOTA]
    partial = target.with_suffix(".part.tif")
    write_geotiff(
        np.maximum(*fields),
        CENTRAL_AMERICA,
        partial,
        storms="Eta 2020, Iota 2020",
        quantity="maximum 1-min sustained surface wind over both storms",
    )
    for sid, field in zip(ETA_IOTA, fields, strict=True):
        write_geotiff(
            field, CENTRAL_AMERICA, raster_dir / f"{sid.lower()}-max-wind-{sha[:12]}.tif", storm=sid
        )
    partial.replace(target)
    return target


def _store_storms(fixes: pd.DataFrame, source: Source) -> Any:
    """A writer for the storms and fixes tables, run inside the layer's transaction."""
    lines = tracks(fixes)

    def write(conn: Connection, now: datetime) -> None:
        conn.execute(text("DELETE FROM storms WHERE source_id = :s"), {"s": source.id})
        conn.execute(
            text("""
            INSERT INTO storms (storm_id, name, year, source_id, start_time, end_time, max_wind_kt,
                                min_pressure_mb, track)
            VALUES (:storm_id, :name, :year, :source, :start_time, :end_time, :max_wind_kt, :min_pressure_mb,
                    ST_GeomFromText(:wkt, 4326))"""),
            [
                {
                    "storm_id": r.storm_id,
                    "name": r.name,
                    "year": int(r.year),
                    "source": source.id,
                    "start_time": r.start_time.to_pydatetime(),
                    "end_time": r.end_time.to_pydatetime(),
                    "max_wind_kt": float(r.max_wind_kt),
                    "min_pressure_mb": None if pd.isna(r.min_pressure_mb) else float(r.min_pressure_mb),
                    "wkt": r.geometry.wkt,
                }
                for r in lines.itertuples(index=False)
            ],
        )
        conn.execute(
            text("""
            INSERT INTO storm_fixes (storm_id, time, record, status, wind_kt, pressure_mb, r34_nmi, r64_nmi,
                                     rmw_nmi, geom)
            VALUES (:storm_id, :time, :record, :status, :wind_kt, :pressure_mb, :r34, :r64, :rmw,
                    ST_SetSRID(ST_MakePoint(:lon, :lat), 4326))"""),
            [
                {
                    "storm_id": r["storm_id"],
                    "time": r["time"].to_pydatetime(),
                    "record": r["record"] or "",
                    "status": r["status"],
                    "wind_kt": float(r["wind_kt"]),
                    "pressure_mb": None if pd.isna(r["pressure_mb"]) else float(r["pressure_mb"]),
                    "r34": None if pd.isna(r["r34_kt_nmi"]) else float(r["r34_kt_nmi"]),
                    "r64": None if pd.isna(r["r64_nmi"]) else float(r["r64_nmi"]),
                    "rmw": None if pd.isna(r["rmw_nmi"]) else float(r["rmw_nmi"]),
                    "lon": float(r["lon"]),
                    "lat": float(r["lat"]),
                }
                for r in fixes.to_dict("records")
            ],
        )

    return write


def prepare_hurricanes(
    conn: Connection,
    settings: Settings,
    sources: dict[str, Source],
    resolver: Resolver,
    catalogue: dict[str, Indicator],
    progress: Progress,
) -> Layer:
    """Storm tracks, the Eta/Iota wind raster, and three exposure indicators per municipio of every set."""
    source = sources["hurdat2-dplyr"]
    paths = resolver.resolve(source)
    csv = source.first("csv")
    progress("reading storm fixes")
    fixes = read_dplyr_storms(paths[csv.name])
    duplicated = fixes.duplicated(["storm_id", "time"])
    notes = [
        f"{len(fixes)} fixes of {fixes['storm_id'].nunique()} storms, "
        f"{int(fixes['year'].min())}–{int(fixes['year'].max())}"
    ]
    if duplicated.any():
        notes.append(
            f"{int(duplicated.sum())} fixes share their hour with another fix of the same storm (the "
            "dplyr build drops minutes); the first of each pair is kept"
        )
        fixes = fixes[~duplicated]
    missing = [s for s in ETA_IOTA if s not in set(fixes["storm_id"])]
    if missing:
        return Layer(
            source,
            [(source, paths)],
            [],
            observations_frame([]),
            Validation(errors=[f"storms {missing} are not in {csv.name}"]),
        )
    progress("modelling the Eta and Iota wind field")
    raster = eta_iota_raster(fixes, settings.raster_dir, csv.sha256)
    units = _units(conn)
    progress("zonal statistics over every municipio")
    stats = zonal_stats(raster, units, ["max"], id_column="zone", threshold=TROPICAL_STORM_KT)
    progress("counting hurricanes within 100 km")
    paths_64kt = hurricane_paths(fixes)
    passes = hurricanes_within(units, paths_64kt)
    progress("counting them per season")
    season_of = fixes.groupby("storm_id")["year"].first().astype(int)
    seasons = range(int(fixes["year"].min()), int(fixes["year"].max()) + 1)
    by_season = hurricanes_by_season(units, paths_64kt, season_of, seasons)
    ind = {c: i for c, i in catalogue.items() if i.source_id == source.id}
    rows: list[dict[str, Any]] = []
    for zone, rec in stats.iterrows():
        set_id, pcode = str(zone).split("/", 1)
        base = {"boundary_set_id": set_id, "pcode": pcode, "flags": [], "file_sha256": csv.sha256}
        if pd.notna(rec["max"]):
            rows.append(
                {
                    **base,
                    "indicator_code": "eta_iota_max_wind_kt",
                    "value": float(rec["max"]),
                    "period": ind["eta_iota_max_wind_kt"].period,
                }
            )
            rows.append(
                {
                    **base,
                    "indicator_code": "eta_iota_ts_wind_share",
                    "value": float(rec["share_above"] * rec["coverage"]),
                    "period": ind["eta_iota_ts_wind_share"].period,
                }
            )
        rows.append(
            {
                **base,
                "indicator_code": "hurricanes_within_100km",
                "value": float(passes[zone]),
                "period": ind["hurricanes_within_100km"].period,
            }
        )
    for zone, season, storms in by_season.itertuples(index=False):
        set_id, pcode = str(zone).split("/", 1)
        rows.append(
            {
                "boundary_set_id": set_id,
                "pcode": pcode,
                "flags": [],
                "file_sha256": csv.sha256,
                "indicator_code": HURRICANES_SEASON.code,
                "value": float(storms),
                "period": str(season),
            }
        )
    notes.append(
        f"wind raster {raster.name} ({CENTRAL_AMERICA.width}×{CENTRAL_AMERICA.height} cells at "
        f"{CENTRAL_AMERICA.resolution}°)"
    )
    layer = Layer(
        source,
        [(source, paths)],
        [*ind.values(), HURRICANES_SEASON],
        observations_frame(rows),
        Validation(),
        notes,
    )
    layer.extra = _store_storms(fixes, source)
    return layer
