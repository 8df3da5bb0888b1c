"""The planner API under /v1: countries and municipios."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from app import indicators, queries
from app.api import schemas
from app.api.deps import ConnDep, LimitDep
from app.api.responses import COMMON_ERRORS, GeoJSONResponse, ORJSONResponse, media

router = APIRouter(prefix="/v1", tags=["planner API"], responses=COMMON_ERRORS)


class ListFormat(StrEnum):
    json = "json"
    geojson = "geojson"


class DetailFormat(StrEnum):
    json = "json"
    geojson = "geojson"


@router.get(
    "/countries",
    responses=media("application/json", model=schemas.Countries),
    summary="The three countries with their boundary sets and unit counts",
)
def list_countries(conn: ConnDep) -> ORJSONResponse:
    """Countries, each with its boundary sets (default first) and their unit counts."""
    items = queries.countries(conn)
    return ORJSONResponse({"total": len(items), "limit": len(items), "offset": 0, "items": items})


def _links(request: Request, total: int, limit: int, offset: int) -> list[dict[str, str]]:
    links = [{"rel": "self", "type": "application/geo+json", "href": str(request.url)}]
    if offset + limit < total:
        links.append(
            {
                "rel": "next",
                "type": "application/geo+json",
                "href": str(request.url.include_query_params(offset=offset + limit)),
            }
        )
    if offset > 0:
        links.append(
            {
                "rel": "prev",
                "type": "application/geo+json",
                "href": str(request.url.include_query_params(offset=max(0, offset - limit))),
            }
        )
    return links


def _feature(item: dict[str, Any]) -> dict[str, Any]:
    """A GeoJSON feature of an item (not mutated: list answers are shared, see app.cache)."""
    properties = {k: v for k, v in item.items() if k != "geometry"}
    return {
        "type": "Feature",
        "id": item["pcode"],
        "geometry": item.get("geometry"),
        "properties": properties,
    }


@router.get(
    "/municipalities",
    responses=media("application/json", "application/geo+json", model=schemas.Municipalities),
    summary="Municipios, filtered and paged",
)
def list_municipalities(
    request: Request,
    conn: ConnDep,
    limit: LimitDep,
    country: Annotated[str | None, Query(description="ISO3: GTM, SLV or HND")] = None,
    department: Annotated[str | None, Query(description="Department P-code, e.g. GT01, SV12, HN08")] = None,
    q: Annotated[
        str | None, Query(description="Name search, case- and accent-insensitive", max_length=100)
    ] = None,
    bbox: Annotated[str | None, Query(description="minLon,minLat,maxLon,maxLat (EPSG:4326)")] = None,
    set: Annotated[
        str | None, Query(description="Boundary set id; default: the current set of each country")
    ] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    format: ListFormat = ListFormat.json,
) -> ORJSONResponse:
    """A page of municipios; `format=geojson` gives a FeatureCollection with simplified geometries."""
    f = queries.UnitFilter.parse(country, department, q, bbox, set)
    geometry = "geom_simple" if format is ListFormat.geojson else None
    total, items = queries.list_municipalities(conn, f, limit=limit, offset=offset, geometry=geometry)
    if format is ListFormat.geojson:
        return GeoJSONResponse(
            {
                "type": "FeatureCollection",
                "numberMatched": total,
                "numberReturned": len(items),
                "links": _links(request, total, limit, offset),
                "features": [_feature(i) for i in items],
            }
        )
    return ORJSONResponse({"total": total, "limit": limit, "offset": offset, "items": items})


@router.get(
    "/municipalities/{pcode}",
    responses=media("application/json", "application/geo+json", model=schemas.MunicipalityDetail),
    summary="One municipio with geometry, provenance and crosswalk",
)
def get_municipality(conn: ConnDep, pcode: str, format: DetailFormat = DetailFormat.json) -> ORJSONResponse:
    """The unit, its department, area, centroid, full geometry, provenance, (SLV) crosswalk partners, and
    its indicator values with source, period and flags."""
    item = queries.get_municipality(conn, pcode)
    item["indicators"] = indicators.unit_values(conn, item["boundary_set"]["id"], item["pcode"])
    if format is DetailFormat.geojson:
        return GeoJSONResponse(_feature(item))
    return ORJSONResponse(item)
