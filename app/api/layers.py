"""Sources, the indicator catalogue and indicator values under /v1."""

from __future__ import annotations

import csv
import io
from enum import StrEnum
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query
from fastapi.responses import Response
from sqlalchemy import text

from app import indicators as ind
from app.api import schemas
from app.api.deps import ConnDep, SettingsDep
from app.api.responses import COMMON_ERRORS, GeoJSONResponse, ORJSONResponse, media
from app.queries import UnitFilter

router = APIRouter(prefix="/v1", tags=["layers"], responses=COMMON_ERRORS)


class Theme(StrEnum):
    migration = "migration"
    I = "I"  # noqa: E741
    II = "II"
    III = "III"
    IV = "IV"
    V = "V"
    context = "context"


class ValuesFormat(StrEnum):
    json = "json"
    csv = "csv"
    geojson = "geojson"


class SeriesFormat(StrEnum):
    json = "json"
    csv = "csv"


def _page(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"total": len(items), "limit": len(items), "offset": 0, "items": items}


@router.get(
    "/sources",
    responses=media("application/json", model=schemas.Sources),
    summary="Every data source: publisher, licence, citation, files (sha256), load time",
)
def list_sources(conn: ConnDep, settings: SettingsDep) -> ORJSONResponse:
    """The manifest's sources and users' uploads, with what has been loaded."""
    return ORJSONResponse(_page(ind.sources(conn, settings)))


@router.get(
    "/indicators",
    responses=media("application/json", model=schemas.Indicators),
    summary="The indicator catalogue with theme, direction, unit, source, coverage",
)
def list_indicators(conn: ConnDep, theme: Theme | None = None) -> ORJSONResponse:
    """Indicators (theme `migration`, pillars I–V, or `context`) and their coverage per country; `coverage`
    sums it up per country and pillar (`"status": "no data"` where a pillar has no value in a country)."""
    return ORJSONResponse(
        {**_page(ind.catalogue(conn, theme.value if theme else None)), "coverage": ind.theme_coverage(conn)}
    )


@router.get(
    "/indicators/{code}/values",
    responses=media("application/json", "text/csv", "application/geo+json", model=schemas.IndicatorValues),
    summary="Values of one indicator per municipio, with period and flags",
)
def indicator_values(
    conn: ConnDep,
    code: str,
    country: Annotated[str | None, Query(description="ISO3: GTM, SLV or HND")] = None,
    set: Annotated[str | None, Query(description="Boundary set; default: each country's current set")] = None,
    period: Annotated[
        str | None,
        Query(description="One period of the indicator ('2019'); default: each unit's latest period"),
    ] = None,
    format: ValuesFormat = ValuesFormat.json,
) -> Response:
    """Values on a boundary set; SLV values published on the other geography come through the crosswalk,
    flagged `derived_through_crosswalk`. Flagged `out_of_range` values are shown and excluded from scoring; a value
    the source marks as missing comes as null with the flag that says why (e.g. `not_evaluated`). Per unit, the
    latest period, or the `period` asked for (400 listing the periods that exist when it has no values)."""
    f = UnitFilter.parse(country, None, None, None, set)
    items = ind.values(conn, code, country=f.country, set_id=f.set, include_missing=True, period=period)
    if format is ValuesFormat.csv:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["pcode", "name", "country", "boundary_set", "value", "period", "flags"])
        for i in items:
            writer.writerow(
                [
                    i["pcode"],
                    i["name"],
                    i["country"],
                    i["boundary_set"],
                    "" if i["value"] is None else repr(i["value"]),
                    i["period"],
                    ";".join(i["flags"]),
                ]
            )
        return Response(
            buf.getvalue(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{code}.csv"'},
        )
    if format is ValuesFormat.geojson:
        geoms = {
            (r.boundary_set_id, r.pcode): r.g
            for r in conn.execute(
                text(
                    "SELECT boundary_set_id, pcode, ST_AsGeoJSON(geom_simple, 6) AS g FROM admin_units "
                    "WHERE boundary_set_id = ANY(:s)"
                ),
                {"s": sorted({i["boundary_set"] for i in items})},
            )
        }
        features = [
            {
                "type": "Feature",
                "id": i["pcode"],
                "properties": i,
                "geometry": orjson.loads(geoms[(i["boundary_set"], i["pcode"])]),
            }
            for i in items
        ]
        return GeoJSONResponse(
            {
                "type": "FeatureCollection",
                "numberMatched": len(items),
                "numberReturned": len(items),
                "features": features,
            }
        )
    definition = ind.indicator(conn, code)
    return ORJSONResponse(
        {
            "indicator": {
                k: definition[k]
                for k in (
                    "code",
                    "name_en",
                    "name_es",
                    "theme",
                    "direction",
                    "unit",
                    "measure",
                    "period",
                    "publisher",
                    "source_id",
                )
            },
            "period": period or "latest",
            "periods": ind.periods(conn, code),
            **_page(items),
        }
    )


@router.get(
    "/municipalities/{pcode}/series",
    responses=media("application/json", "text/csv", model=schemas.Series),
    summary="Every period of one indicator for one municipio, with provenance and flags",
)
def municipality_series(
    conn: ConnDep,
    pcode: str,
    indicator: Annotated[str, Query(description="An indicator code from /v1/indicators")],
    format: SeriesFormat = SeriesFormat.json,
) -> Response:
    """The indicator's values for this unit, oldest period first (period text sorts chronologically: 'YYYY',
    or 'YYYY-YYYY' for a span), each with its flags (e.g. `partial_year`), file and load time, and the
    indicator's vintage, publisher and source. 404 naming what to fix for an unknown P-code or indicator, or
    an indicator with no values for this unit."""
    body = ind.unit_series(conn, pcode, indicator)
    if format is SeriesFormat.csv:
        return Response(
            ind.series_csv(body),
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="{body["unit"]["pcode"]}-{indicator}.csv"'
            },
        )
    return ORJSONResponse(body)
