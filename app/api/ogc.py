"""OGC API Features (Parts 1–3) at the root: landing page, conformance, OpenAPI 3.0, collections, items,
queryables. JSON by default, HTML with `f=html` or a browser's Accept header."""

from __future__ import annotations

import html
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from sqlalchemy import Connection, Engine

from app import baselines
from app.api.deps import ConnDep
from app.api.responses import ORJSONResponse
from app.errors import InvalidParameter
from app.ogc import collections as coll
from app.ogc import crs as crs_mod
from app.ogc import features
from app.ogc import schemas as ogc_schemas
from app.scoring.service import default_run

router = APIRouter(tags=["OGC API Features"])

OAS30 = "application/vnd.oai.openapi+json;version=3.0"
CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/html",
    "http://www.opengis.net/spec/ogcapi-features-2/1.0/conf/crs",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/filter",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/features-filter",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/queryables",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/queryables-query-parameters",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-cql2",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-text",
    "http://www.opengis.net/spec/cql2/1.0/conf/advanced-comparison-operators",
    "http://www.opengis.net/spec/cql2/1.0/conf/case-insensitive-comparison",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-spatial-functions",
]


def _only(request: Request, *allowed: str, properties: Iterable[str] = ()) -> None:
    """400 for a query parameter the endpoint does not take (`f` always allowed), before any work."""
    features.check_known(request.query_params.keys(), {"f", *allowed}, properties)


def _wants_html(request: Request) -> bool:
    f = request.query_params.get("f")
    if f is not None:
        if f not in ("json", "html", "geojson"):
            raise InvalidParameter("f must be json or html.")
        return f == "html"
    accept = request.headers.get("accept", "")
    return "text/html" in accept and "json" not in accept


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)} · Raíces</title>"
        "<style>body{font:15px/1.4 system-ui,sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}</style></head><body>"
        f"<p><a href='/'>Raíces</a> · <a href='/collections?f=html'>collections</a></p><h1>{html.escape(title)}</h1>"
        f"{body}</body></html>"
    )


def _links_html(links: list[dict[str, Any]]) -> str:
    return (
        "<ul>"
        + "".join(
            f"<li><a href='{html.escape(link['href'])}'>{html.escape(link.get('title') or link['rel'])}"
            f"</a> ({html.escape(link['rel'])})</li>"
            for link in links
        )
        + "</ul>"
    )


def _extra(c: coll.Collection) -> tuple[str, ...]:
    """Query parameters a collection takes beyond the standard ones: `baseline` for `priority-changes`."""
    return ("baseline",) if c.id == "priority-changes" else ()


def _context(request: Request, conn: Connection, c: coll.Collection) -> coll.Context:
    set_id = c.set_id or request.query_params.get("set") or None
    if set_id and set_id not in {x.set_id for x in coll.registry(conn).values() if x.set_id}:
        raise InvalidParameter(f"Unknown boundary set '{set_id[:40]}'.")
    run = None
    if c.needs_run:
        engine: Engine = request.app.state.engine
        run = default_run(engine)
    baseline = request.query_params.get("baseline") if c.id == "priority-changes" else None
    if baseline:
        baselines.get(conn, baseline)  # NotFound naming the baselines there are
    return coll.Context(set_id=set_id, run_id=run, baseline=baseline or None)


@router.get("/", summary="Landing page", include_in_schema=False)
def landing(request: Request) -> Response:
    """Links to the API definition, its documentation, conformance and the collections."""
    _only(request)
    b = _base(request)
    links = [
        {"rel": "self", "type": "application/json", "href": f"{b}/", "title": "This document"},
        {"rel": "alternate", "type": "text/html", "href": f"{b}/?f=html", "title": "This document as HTML"},
        {
            "rel": "service-desc",
            "type": OAS30,
            "href": f"{b}/api",
            "title": "The API definition (OpenAPI 3.0)",
        },
        {"rel": "service-doc", "type": "text/html", "href": f"{b}/docs", "title": "The API documentation"},
        {
            "rel": "conformance",
            "type": "application/json",
            "href": f"{b}/conformance",
            "title": "Conformance classes",
        },
        {
            "rel": "data",
            "type": "application/json",
            "href": f"{b}/collections",
            "title": "Feature collections",
        },
    ]
    doc = {
        "title": "Raíces",
        "description": "Priority municipios for the root causes of migration in El Salvador, "
        "Guatemala and Honduras: boundaries, indicators, scores, hotspots, zones and hurricane tracks.",
        "links": links,
    }
    if _wants_html(request):
        return _page("Raíces", f"<p>{html.escape(str(doc['description']))}</p>{_links_html(links)}")
    return ORJSONResponse(doc)


@router.get("/conformance", summary="Conformance classes", include_in_schema=False)
def conformance(request: Request) -> Response:
    """The conformance classes the service implements."""
    _only(request)
    if _wants_html(request):
        return _page(
            "Conformance", "<ul>" + "".join(f"<li>{html.escape(c)}</li>" for c in CONFORMANCE) + "</ul>"
        )
    return ORJSONResponse({"conformsTo": CONFORMANCE})


def _collection_doc(request: Request, conn: Connection, c: coll.Collection) -> dict[str, Any]:
    b = _base(request)
    ctx = _context(request, conn, c)
    return {
        "id": c.id,
        "title": c.title,
        "description": c.description,
        "itemType": "feature",
        "extent": {"spatial": {"bbox": [coll.extent(conn, c, ctx)], "crs": crs_mod.CRS84}},
        "crs": list(crs_mod.SUPPORTED),
        "storageCrs": crs_mod.CRS84,
        "links": [
            {"rel": "self", "type": "application/json", "href": f"{b}/collections/{c.id}", "title": c.title},
            {
                "rel": "items",
                "type": "application/geo+json",
                "href": f"{b}/collections/{c.id}/items",
                "title": "Features",
            },
            {
                "rel": "items",
                "type": "text/html",
                "href": f"{b}/collections/{c.id}/items?f=html",
                "title": "Features as HTML",
            },
            {
                "rel": "http://www.opengis.net/def/rel/ogc/1.0/queryables",
                "type": "application/schema+json",
                "href": f"{b}/collections/{c.id}/queryables",
                "title": "Queryables",
            },
        ],
    }


@router.get("/collections", summary="Feature collections", include_in_schema=False)
def list_collections(request: Request, conn: ConnDep) -> Response:
    """Every collection with its extent, CRS list and links."""
    _only(request, "set")
    b = _base(request)
    docs = [_collection_doc(request, conn, c) for c in coll.registry(conn).values()]
    links = [
        {"rel": "self", "type": "application/json", "href": f"{b}/collections"},
        {"rel": "alternate", "type": "text/html", "href": f"{b}/collections?f=html"},
    ]
    if _wants_html(request):
        rows = "".join(
            f"<tr><td><a href='/collections/{html.escape(d['id'])}?f=html'>{html.escape(d['id'])}</a></td>"
            f"<td>{html.escape(d['title'])}</td><td>{html.escape(d['description'])}</td></tr>"
            for d in docs
        )
        return _page(
            "Collections", f"<table><tr><th>id</th><th>title</th><th>description</th></tr>{rows}</table>"
        )
    return ORJSONResponse({"links": links, "collections": docs, "crs": list(crs_mod.SUPPORTED)})


@router.get("/collections/{collection_id}", summary="One collection", include_in_schema=False)
def get_collection(request: Request, conn: ConnDep, collection_id: str) -> Response:
    """A collection's metadata."""
    c = coll.get(conn, collection_id)
    _only(request, "set", *_extra(c))
    doc = _collection_doc(request, conn, c)
    if _wants_html(request):
        return _page(
            doc["title"],
            f"<p>{html.escape(doc['description'])}</p>"
            f"<p>Extent: {doc['extent']['spatial']['bbox'][0]}</p>{_links_html(doc['links'])}",
        )
    return ORJSONResponse(doc)


@router.get("/collections/{collection_id}/queryables", summary="Queryables", include_in_schema=False)
def queryables(request: Request, conn: ConnDep, collection_id: str) -> Response:
    """The properties a filter may name, as JSON Schema."""
    _only(request)
    c = coll.get(conn, collection_id)
    geometry_type = "LineString" if c.id == "hurricane-tracks" else "MultiPolygon"
    props: dict[str, Any] = {
        p.name: {"title": p.name, "type": p.type, **({"description": p.description} if p.description else {})}
        for p in c.props
    }
    props["geometry"] = {
        "title": "geometry",
        "format": f"geometry-{geometry_type.lower()}",
        "$ref": f"https://geojson.org/schema/{geometry_type}.json",
    }
    doc = {
        "$schema": "https://json-schema.org/draft/2019-09/schema",
        "$id": f"{_base(request)}/collections/{c.id}/queryables",
        "type": "object",
        "title": c.title,
        "properties": props,
        "additionalProperties": False,
    }
    if _wants_html(request):
        rows = "".join(
            f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v.get('type', 'geometry')))}</td></tr>"
            for k, v in props.items()
        )
        return _page(f"Queryables of {c.id}", f"<table><tr><th>name</th><th>type</th></tr>{rows}</table>")
    return ORJSONResponse(doc, media_type="application/schema+json")


def _items_links(request: Request, total: int, q: features.ItemsQuery) -> list[dict[str, Any]]:
    url = request.url
    links = [
        {"rel": "self", "type": "application/geo+json", "href": str(url)},
        {"rel": "alternate", "type": "text/html", "href": str(url.include_query_params(f="html"))},
        {"rel": "collection", "type": "application/json", "href": str(url).split("/items")[0].split("?")[0]},
    ]
    if q.offset + q.limit < total:
        links.append(
            {
                "rel": "next",
                "type": "application/geo+json",
                "href": str(url.include_query_params(offset=q.offset + q.limit, limit=q.limit)),
            }
        )
    if q.offset > 0:
        links.append(
            {
                "rel": "prev",
                "type": "application/geo+json",
                "href": str(url.include_query_params(offset=max(0, q.offset - q.limit), limit=q.limit)),
            }
        )
    return links


def _features_html(title: str, feats: list[dict[str, Any]], links: list[dict[str, Any]]) -> HTMLResponse:
    keys = list(feats[0]["properties"]) if feats else []
    head = "".join(f"<th>{html.escape(k)}</th>" for k in ["id", *keys])
    rows = "".join(
        "<tr>"
        + f"<td>{html.escape(str(f['id']))}</td>"
        + "".join(
            f"<td>{html.escape('' if f['properties'][k] is None else str(f['properties'][k]))}</td>"
            for k in keys
        )
        + "</tr>"
        for f in feats
    )
    nav = " ".join(
        f"<a href='{html.escape(link['href'].replace('f=html', '') + '&f=html')}'>{link['rel']}</a>"
        for link in links
        if link["rel"] in ("prev", "next")
    )
    return _page(title, f"<p>{nav}</p><table><tr>{head}</tr>{rows}</table>")


@router.get("/collections/{collection_id}/items", summary="Features", include_in_schema=False)
def get_items(request: Request, collection_id: str) -> Response:
    """A page of features: limit, offset, bbox, bbox-crs, crs, property filters, filter (CQL2 text), sortby,
    properties, geometry=simplified|full. GeoJSON is assembled by PostgreSQL (see `features.items_json`); a
    page that fits in one chunk is sent whole, a larger one streamed, the envelope's counts and links after
    the features. One connection serves the request, and a streamed response owns it until its end. It reads
    in autocommit: each statement sees the data as it was when it began, as in a read-committed transaction,
    without the BEGIN and ROLLBACK round trips."""
    engine: Engine = request.app.state.engine
    conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    streaming = False
    try:
        c = coll.get(conn, collection_id)
        _only(request, *features.RESERVED, *_extra(c), properties=[p.name for p in c.props])
        params = dict(request.query_params)
        ctx = _context(request, conn, c)
        if _wants_html(request):
            total, feats, q = features.items(conn, c, ctx, params)
            return _features_html(f"{c.title}: {total} features", feats, _items_links(request, total, q))
        page = features.items_json(conn, c, ctx, params)
        headers = {"Content-Crs": f"<{page.q.crs.uri}>"}
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

        def tail(returned: int) -> bytes:
            total = page.number_matched(returned)
            links = _items_links(request, total, page.q)
            meta = {"numberMatched": total, "numberReturned": returned, "timeStamp": stamp, "links": links}
            return b"]," + orjson.dumps(meta)[1:]

        head = b'{"type":"FeatureCollection","features":['
        n, first = page.first
        if page.complete:
            body = b"".join((head, first, tail(n)))  # one copy of the features
            return Response(body, media_type="application/geo+json", headers=headers)

        def chunks() -> Iterator[bytes]:
            returned = n
            try:
                yield head
                yield first
                for more, chunk in page.rest:  # each starts with its comma
                    yield chunk
                    returned += more
                yield tail(returned)
            finally:
                page.rest.close()
                conn.close()

        response = StreamingResponse(chunks(), media_type="application/geo+json", headers=headers)
        streaming = True
        return response
    finally:
        if not streaming:
            conn.close()


@router.get("/collections/{collection_id}/items/{feature_id}", summary="One feature", include_in_schema=False)
def get_item(request: Request, conn: ConnDep, collection_id: str, feature_id: str) -> Response:
    """One feature by id."""
    c = coll.get(conn, collection_id)
    _only(request, *features.ITEM_PARAMETERS, *_extra(c))
    ctx = _context(request, conn, c)
    if _wants_html(request):
        feat, _ = features.item(conn, c, ctx, feature_id, dict(request.query_params))
        return _features_html(f"{c.id} / {feature_id}", [feat], [])
    text_, q = features.item_json(conn, c, ctx, feature_id, dict(request.query_params))
    b = _base(request)
    links = [
        {"rel": "self", "type": "application/geo+json", "href": f"{b}/collections/{c.id}/items/{feature_id}"},
        {"rel": "collection", "type": "application/json", "href": f"{b}/collections/{c.id}"},
    ]
    body = text_[:-1] + b',"links":' + orjson.dumps(links) + b"}"
    return Response(body, media_type="application/geo+json", headers={"Content-Crs": f"<{q.crs.uri}>"})


def _param(
    name: str,
    schema: dict[str, Any],
    description: str,
    *,
    location: str = "query",
    required: bool = False,
    explode: bool | None = None,
) -> dict[str, Any]:
    p: dict[str, Any] = {
        "name": name,
        "in": location,
        "required": required,
        "description": description,
        "schema": schema,
    }
    if location == "query":
        p["style"] = "form"
        p["explode"] = False if explode is None else explode
    return p


_HTML = {"text/html": {"schema": {"type": "string"}}}
_OAS_DOCUMENT = {"type": "object", "required": ["openapi", "info", "paths"]}
_ERRORS = {
    "400": {"$ref": "#/components/responses/InvalidParameter"},
    "404": {"$ref": "#/components/responses/NotFound"},
}


def _ok(description: str, media_type: str, schema: str) -> dict[str, Any]:
    """A 200 response with the named component schema (and HTML), plus the error responses."""
    return {
        "200": {
            "description": description,
            "content": {media_type: {"schema": ogc_schemas.ref(schema)}, **_HTML},
        },
        **_ERRORS,
    }


def _filter_param(p: coll.Prop) -> dict[str, Any]:
    """A property filter (OGC API Features Part 3, queryables as query parameters): features whose property
    equals the value."""
    about = f" ({p.description})." if p.description else "."
    return _param(p.name, {"type": p.type}, f"Only features whose {p.name} equals this value{about}")


def _items_paths(ref: dict[str, dict[str, str]]) -> dict[str, Any]:
    """The items and feature paths: one typed pair per static collection, then the generic pair."""
    item_params = ("crs", "properties", "geometry", "f")
    baseline = _param(
        "baseline", {"type": "string"}, "A baseline's name (GET /v1/baselines); default: the newest one."
    )
    paths: dict[str, Any] = {}
    for cid, props in ogc_schemas.STATIC_COLLECTIONS.items():
        feature, page = ogc_schemas.feature_schema_names(cid)
        op = feature[0].lower() + feature[1:].removesuffix("Feature")
        extra = [baseline] if cid == "priority-changes" else []
        paths[f"/collections/{cid}/items"] = {
            "get": {
                "summary": f"Features of {cid}",
                "operationId": f"{op}GetFeatures",
                "parameters": [ref[k] for k in features.ITEMS_PARAMETERS]
                + [_filter_param(p) for p in props]
                + extra,
                "responses": _ok("Features", "application/geo+json", page),
            }
        }
        paths[f"/collections/{cid}/items/{{featureId}}"] = {
            "get": {
                "summary": f"One feature of {cid}",
                "operationId": f"{op}GetFeature",
                "parameters": [ref["featureId"], *(ref[k] for k in item_params), *extra],
                "responses": _ok("A feature", "application/geo+json", feature),
            }
        }
    paths["/collections/{collectionId}/items"] = {
        "get": {
            "summary": "Features (any collection, e.g. municipalities-<set>)",
            "operationId": "getFeatures",
            "parameters": [ref[k] for k in ("collectionId", *features.ITEMS_PARAMETERS)],
            "responses": _ok("Features", "application/geo+json", "FeatureCollection"),
        }
    }
    paths["/collections/{collectionId}/items/{featureId}"] = {
        "get": {
            "summary": "One feature (any collection)",
            "operationId": "getFeature",
            "parameters": [ref[k] for k in ("collectionId", "featureId", *item_params)],
            "responses": _ok("A feature", "application/geo+json", "Feature"),
        }
    }
    return paths


def openapi(base: str) -> dict[str, Any]:
    """The OpenAPI 3.0 definition of the OGC API part; `limit` is defined once, with default and maximum;
    response schemas from the pydantic models of app/ogc/schemas.py."""
    ref = {
        k: {"$ref": f"#/components/parameters/{k}"}
        for k in (*features.ITEMS_PARAMETERS, "collectionId", "featureId")
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Raíces: OGC API Features",
            "version": "1.0.0",
            "description": "Municipios, priorities, zones and hurricane tracks of El Salvador, Guatemala and "
            "Honduras. The planner API (/v1) is documented at /docs.",
        },
        "servers": [{"url": base}],
        "paths": {
            "/": {
                "get": {
                    "summary": "Landing page",
                    "operationId": "getLandingPage",
                    "parameters": [ref["f"]],
                    "responses": _ok("The landing page", "application/json", "LandingPage"),
                }
            },
            "/api": {
                "get": {
                    "summary": "This API definition",
                    "operationId": "getAPI",
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.0",
                            "content": {OAS30: {"schema": _OAS_DOCUMENT}},
                        },
                        "400": {"$ref": "#/components/responses/InvalidParameter"},
                    },
                }
            },
            "/conformance": {
                "get": {
                    "summary": "Conformance classes",
                    "operationId": "getConformance",
                    "parameters": [ref["f"]],
                    "responses": _ok("Conformance classes", "application/json", "Conformance"),
                }
            },
            "/collections": {
                "get": {
                    "summary": "Feature collections",
                    "operationId": "getCollections",
                    "parameters": [ref["f"]],
                    "responses": _ok("Feature collections", "application/json", "Collections"),
                }
            },
            "/collections/{collectionId}": {
                "get": {
                    "summary": "A feature collection",
                    "operationId": "describeCollection",
                    "parameters": [ref["collectionId"], ref["f"]],
                    "responses": _ok("A feature collection", "application/json", "Collection"),
                }
            },
            "/collections/{collectionId}/queryables": {
                "get": {
                    "summary": "Queryables (JSON Schema)",
                    "operationId": "getQueryables",
                    "parameters": [ref["collectionId"], ref["f"]],
                    "responses": _ok("JSON Schema", "application/schema+json", "Queryables"),
                }
            },
            **_items_paths(ref),
        },
        "components": {
            "parameters": {
                "limit": _param(
                    "limit",
                    {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": features.MAX_LIMIT,
                        "default": features.DEFAULT_LIMIT,
                    },
                    "The number of features per page.",
                ),
                "offset": _param(
                    "offset",
                    {"type": "integer", "minimum": 0, "default": 0},
                    "The number of features to skip.",
                ),
                "bbox": _param(
                    "bbox",
                    {"type": "array", "minItems": 4, "maxItems": 6, "items": {"type": "number"}},
                    "minx,miny,maxx,maxy in bbox-crs (default CRS84).",
                ),
                "bbox-crs": _param(
                    "bbox-crs",
                    {"type": "string", "format": "uri", "enum": list(crs_mod.SUPPORTED)},
                    "The CRS of bbox.",
                ),
                "crs": _param(
                    "crs",
                    {"type": "string", "format": "uri", "enum": list(crs_mod.SUPPORTED)},
                    "The CRS of the response geometries (default CRS84).",
                ),
                "filter": _param("filter", {"type": "string"}, "A CQL2-text filter."),
                "filter-lang": _param(
                    "filter-lang",
                    {"type": "string", "enum": ["cql2-text"], "default": "cql2-text"},
                    "The filter language.",
                ),
                "filter-crs": _param(
                    "filter-crs",
                    {"type": "string", "format": "uri"},
                    "The CRS of geometry literals in the filter (default CRS84).",
                ),
                "sortby": _param(
                    "sortby",
                    {"type": "array", "items": {"type": "string"}},
                    "Properties to sort by, each optionally prefixed by + or -.",
                ),
                "properties": _param(
                    "properties", {"type": "array", "items": {"type": "string"}}, "The properties to return."
                ),
                "geometry": _param(
                    "geometry",
                    {"type": "string", "enum": ["simplified", "full"], "default": "simplified"},
                    "Simplified (≈50 m) or full geometry.",
                ),
                "f": _param("f", {"type": "string", "enum": ["json", "html"]}, "The response format."),
                "collectionId": _param(
                    "collectionId", {"type": "string"}, "A collection id.", location="path", required=True
                ),
                "featureId": _param(
                    "featureId", {"type": "string"}, "A feature id.", location="path", required=True
                ),
            },
            "responses": {
                "InvalidParameter": {
                    "description": "A parameter is invalid",
                    "content": {"application/json": {"schema": ogc_schemas.ref("exception")}},
                },
                "NotFound": {
                    "description": "Not found",
                    "content": {"application/json": {"schema": ogc_schemas.ref("exception")}},
                },
            },
            "schemas": ogc_schemas.openapi_components(),
        },
    }


@router.get("/api", summary="OpenAPI 3.0 definition", include_in_schema=False)
def api(request: Request) -> Response:
    """The API definition (OpenAPI 3.0) of the OGC API Features part."""
    _only(request)
    return ORJSONResponse(openapi(_base(request)), media_type=OAS30)
