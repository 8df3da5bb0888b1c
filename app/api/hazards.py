"""Hurricane tracks and disaster events (DesInventar) under /v1/hazards."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query
from sqlalchemy import func, select, text
from sqlalchemy.sql.elements import ColumnElement

from app import models
from app.api import schemas
from app.api.deps import ConnDep, LimitDep
from app.api.responses import COMMON_ERRORS, GeoJSONResponse, ORJSONResponse, media
from app.errors import NotFound
from app.hazards.events import list_events, parse_filter
from app.queries import parse_bbox

router = APIRouter(prefix="/v1/hazards", tags=["hazards"], responses=COMMON_ERRORS)


class Format(StrEnum):
    json = "json"
    geojson = "geojson"


# Storms are read from the `storm_tracks` view (migration 0009), as the OGC `hurricane-tracks` collection is.
_STORMS = select(*models.storm_tracks.c, func.ST_AsGeoJSON(models.storm_tracks.c.track, 4).label("g"))


def _item(r: Any) -> dict[str, Any]:
    return {
        "storm_id": r.storm_id,
        "name": r.name,
        "year": r.year,
        "start_time": r.start_time.isoformat(),
        "end_time": r.end_time.isoformat(),
        "max_wind_kt": r.max_wind_kt,
        "min_pressure_mb": r.min_pressure_mb,
        "fixes": r.fixes,
        "source": r.source_id,
    }


@router.get(
    "/storms",
    responses=media("application/json", "application/geo+json", model=schemas.Storms),
    summary="Atlantic storm tracks since 1975 (HURDAT2), filtered",
)
def list_storms(
    conn: ConnDep,
    limit: LimitDep,
    year: Annotated[int | None, Query(ge=1800, le=2100)] = None,
    name: Annotated[str | None, Query(max_length=40, description="Storm name, case-insensitive")] = None,
    min_wind_kt: Annotated[float | None, Query(ge=0, le=250)] = None,
    bbox: Annotated[str | None, Query(description="minLon,minLat,maxLon,maxLat: tracks crossing it")] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    format: Format = Format.json,
) -> ORJSONResponse:
    """Storms with their peak wind and time span; `format=geojson` gives the tracks as LineStrings."""
    t = models.storm_tracks.c
    where: list[ColumnElement[bool]] = []
    if year is not None:
        where.append(t.year == year)
    if name:
        where.append(func.upper(t.name) == name.strip().upper())
    if min_wind_kt is not None:
        where.append(t.max_wind_kt >= min_wind_kt)
    if bbox:
        x0, y0, x1, y1 = parse_bbox(bbox)
        where.append(func.ST_Intersects(t.track, func.ST_MakeEnvelope(x0, y0, x1, y1, 4326)))
    total = conn.execute(select(func.count()).select_from(models.storm_tracks).where(*where)).scalar_one()
    rows = conn.execute(
        _STORMS.where(*where).order_by(t.start_time, t.storm_id).limit(limit).offset(offset)
    ).all()
    if format is Format.geojson:
        return GeoJSONResponse(
            {
                "type": "FeatureCollection",
                "numberMatched": total,
                "numberReturned": len(rows),
                "features": [
                    {
                        "type": "Feature",
                        "id": r.storm_id,
                        "properties": _item(r),
                        "geometry": orjson.loads(r.g),
                    }
                    for r in rows
                ],
            }
        )
    return ORJSONResponse(
        {"total": total, "limit": limit, "offset": offset, "items": [_item(r) for r in rows]}
    )


@router.get(
    "/storms/{storm_id}",
    responses=media("application/json", model=schemas.StormDetail),
    summary="One storm with its six-hourly fixes",
)
def get_storm(conn: ConnDep, storm_id: str) -> ORJSONResponse:
    """A storm, its track and every fix (time, position, status, wind, pressure, wind radii)."""
    row = conn.execute(_STORMS.where(models.storm_tracks.c.storm_id == storm_id.strip().upper())).first()
    if row is None:
        raise NotFound(f"No storm '{storm_id}'. Ids look like ETA-2020; list them at /v1/hazards/storms.")
    fixes = (
        conn.execute(
            text("""
        SELECT time, record, status, wind_kt, pressure_mb, r34_nmi, r64_nmi, rmw_nmi, ST_X(geom) AS lon,
               ST_Y(geom) AS lat FROM storm_fixes WHERE storm_id = :id ORDER BY time"""),
            {"id": row.storm_id},
        )
        .mappings()
        .all()
    )
    return ORJSONResponse(
        {
            **_item(row),
            "track": orjson.loads(row.g),
            "fix_list": [{**f, "time": f["time"].isoformat()} for f in fixes],
        }
    )


@router.get(
    "/events",
    responses=media("application/json", model=schemas.Events),
    summary="Disaster records by municipio (DesInventar, Guatemala 1988-2015), filtered",
)
def list_hazard_events(
    conn: ConnDep,
    limit: LimitDep,
    country: Annotated[str | None, Query(max_length=3, description="ISO3: GTM, HND or SLV")] = None,
    municipio: Annotated[
        str | None, Query(max_length=80, description="P-code (GT0101) or name, accent-insensitive")
    ] = None,
    type: Annotated[
        str | None, Query(max_length=30, description="Event type as in DesInventar: FLOOD, LANDSLIDE, …")
    ] = None,
    hydromet: Annotated[
        bool | None,
        Query(description="Only hydro-meteorological events (FLOOD, LANDSLIDE, RAIN, SPATE, STORM, DROUGHT)"),
    ] = None,
    year_from: Annotated[int | None, Query(ge=1800, le=2100)] = None,
    year_to: Annotated[int | None, Query(ge=1800, le=2100)] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> ORJSONResponse:
    """Events oldest first with their toll (deaths, victims, affected…), the municipio they were matched to
    (pcode null when the record names none), the total, a summary per type, and the sources' provenance."""
    f = parse_filter(
        conn,
        country=country,
        municipio=municipio,
        event_type=type,
        hydromet=hydromet,
        year_from=year_from,
        year_to=year_to,
    )
    return ORJSONResponse(list_events(conn, f, limit=limit, offset=offset))
