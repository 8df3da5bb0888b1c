"""Vector tiles: `/tiles/{collection}/{z}/{x}/{y}.mvt` (WebMercatorQuad) and TileJSON 3.0.0 for each collection.

An empty tile is a 200 with an empty body rather than a 204: MapLibre and QGIS both take it as a tile with no
features, and caches store it like any other tile. Tiles carry `Cache-Control: public, max-age=3600` and a
strong ETag derived from the data version (and score run) and z/x/y, so `If-None-Match` answers 304 without
rendering.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import unquote

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import Response
from sqlalchemy import Engine

from app import tiles
from app.api import schemas
from app.api.deps import ConnDep, get_engine
from app.api.responses import COMMON_ERRORS, ORJSONResponse, media
from app.cache import Memo
from app.scoring.service import default_run

_tiles = Memo(1024)  # rendered tiles by ETag, least recently used first out

router = APIRouter(tags=["vector tiles"], responses=COMMON_ERRORS)

MVT_MEDIA_TYPE = "application/vnd.mapbox-vector-tile"
TILE_CACHE_CONTROL = "public, max-age=3600"
TILEJSON_CACHE_CONTROL = "public, max-age=300"
TILEJSON_MAXZOOM = 14
CENTER_ZOOM = 6


def _matches(if_none_match: str | None, tag: str) -> bool:
    if not if_none_match:
        return False
    # If-None-Match compares weakly (RFC 9110 §13.1.2): a W/ prefix still matches
    candidates = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return "*" in candidates or tag in candidates


@router.get(
    "/tiles/{collection}.json",
    name="tilejson",
    responses=media("application/json", model=schemas.TileJSON),
    summary="TileJSON 3.0.0 for a vector tile collection (municipalities, priorities)",
)
def tilejson(request: Request, conn: ConnDep, collection: str) -> ORJSONResponse:
    """Tile URL template, zoom range, bounds, center, layer fields and attribution of a collection."""
    c = tiles.collection(collection)
    template = unquote(str(request.url_for("tile", collection=c.id, z="{z}", x="{x}", y="{y}")))
    west, south, east, north = tiles.bounds(conn) or (-180.0, -85.0511, 180.0, 85.0511)
    body: dict[str, Any] = {
        "tilejson": "3.0.0",
        "name": c.title,
        "description": c.description,
        "attribution": tiles.attribution(conn, c),
        "scheme": "xyz",
        "tiles": [template],
        "minzoom": tiles.MIN_ZOOM,
        "maxzoom": TILEJSON_MAXZOOM,
        "bounds": [west, south, east, north],
        "center": [round((west + east) / 2, 4), round((south + north) / 2, 4), CENTER_ZOOM],
        "vector_layers": [
            {
                "id": c.id,
                "description": c.description,
                "fields": c.fields,
                "minzoom": tiles.MIN_ZOOM,
                "maxzoom": TILEJSON_MAXZOOM,
            }
        ],
    }
    return ORJSONResponse(body, headers={"Cache-Control": TILEJSON_CACHE_CONTROL})


@router.get(
    "/tiles/{collection}/{z}/{x}/{y}.mvt",
    name="tile",
    summary="A Mapbox vector tile (WebMercatorQuad); one layer named after the collection",
    response_class=Response,
    responses={
        200: {
            "content": {MVT_MEDIA_TYPE: {}},
            "description": "The tile; an empty body when it has no features",
        },
        304: {"description": "Not modified (If-None-Match)"},
    },
)
def tile(
    conn: ConnDep,
    engine: Annotated[Engine, Depends(get_engine)],
    collection: str,
    z: int,
    x: int,
    y: int,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """Municipios of the default boundary sets, with their priority scores for `priorities`."""
    c = tiles.collection(collection)
    tiles.check_tile(z, x, y)
    run = default_run(engine) if c.scored else None
    version = tiles.boundary_version(conn)
    if c.id == "priority-changes":  # the tile compares with the newest baseline: a new one is a new tile
        version += f"|baseline:{tiles.newest_baseline(conn)}"
    tag = tiles.etag(c.id, version, z, x, y, run)
    headers = {"ETag": tag, "Cache-Control": TILE_CACHE_CONTROL}
    if _matches(if_none_match, tag):
        return Response(status_code=304, headers=headers)
    # the ETag names everything a tile depends on (data, run, baseline), so the bytes are remembered under it
    body = _tiles.get(conn, (tag,), lambda: tiles.tile(conn, c.id, z, x, y, run))
    return Response(body, media_type=MVT_MEDIA_TYPE, headers=headers)
