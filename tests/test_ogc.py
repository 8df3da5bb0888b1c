"""OGC API Features (Parts 1–3) as QGIS and GDAL use it."""

from __future__ import annotations

from typing import Any

import pyogrio
import pytest
from fastapi.testclient import TestClient
from pyproj import Transformer
from sqlalchemy import Engine, event

from app.ingest.provenance import bump_epoch
from app.main import create_app
from tests.conftest import snapshot

CRS = "http://www.opengis.net/def/crs/EPSG/0/"


def _get(client: TestClient, path: str, status: int = 200, **params: Any) -> Any:
    r = client.get(path, params=params)
    assert r.status_code == status, r.text
    return r


def test_landing_and_conformance(client: TestClient) -> None:
    landing = _get(client, "/").json()
    rels = {link["rel"]: link for link in landing["links"]}
    assert {"service-desc", "service-doc", "conformance", "data"} <= set(rels)
    assert rels["service-desc"]["type"] == "application/vnd.oai.openapi+json;version=3.0"
    assert _get(client, "/", f="html").headers["content-type"].startswith("text/html")
    conf = set(_get(client, "/conformance").json()["conformsTo"])
    for needed in (
        "ogcapi-features-1/1.0/conf/core",
        "ogcapi-features-2/1.0/conf/crs",
        "ogcapi-features-3/1.0/conf/filter",
        "ogcapi-features-3/1.0/conf/features-filter",
        "cql2/1.0/conf/basic-cql2",
        "cql2/1.0/conf/cql2-text",
        "cql2/1.0/conf/advanced-comparison-operators",
        "cql2/1.0/conf/case-insensitive-comparison",
        "cql2/1.0/conf/basic-spatial-functions",
        "ogcapi-features-3/1.0/conf/queryables",
    ):
        assert f"http://www.opengis.net/spec/{needed}" in conf


def test_openapi_defines_limit_once(client: TestClient) -> None:
    r = _get(client, "/api")
    assert r.headers["content-type"].startswith("application/vnd.oai.openapi+json;version=3.0")
    doc = r.json()
    assert doc["openapi"].startswith("3.0")
    limit = doc["components"]["parameters"]["limit"]
    assert limit["schema"]["default"] == 100 and limit["schema"]["maximum"] == 10000
    for path, item in doc["paths"].items():
        if path.endswith("/items"):
            assert {"$ref": "#/components/parameters/limit"} in item["get"]["parameters"]
            assert not any(p.get("name") == "limit" for p in item["get"]["parameters"])


def test_collections(client: TestClient) -> None:
    cols = {c["id"]: c for c in _get(client, "/collections").json()["collections"]}
    assert {
        "municipalities",
        "priorities",
        "hurricane-tracks",
        "zones",
        "municipalities-slv-2021-distritos",
    } <= set(cols)
    m = _get(client, "/collections/municipalities").json()
    assert m["storageCrs"].endswith("CRS84") and f"{CRS}32616" in m["crs"] and f"{CRS}3857" in m["crs"]
    x0, y0, x1, y1 = m["extent"]["spatial"]["bbox"][0]
    assert -93 < x0 < x1 < -83 and 12 < y0 < y1 < 18.5
    assert _get(client, "/collections/nope", 404).json()["code"] == "NotFound"


def test_paging_to_the_end(client: TestClient) -> None:
    seen: list[str] = []
    url: str | None = "/collections/municipalities/items?limit=250"
    matched = None
    while url:
        page = client.get(url).json()
        matched = page["numberMatched"]
        assert page["numberReturned"] == len(page["features"])
        seen += [f["id"] for f in page["features"]]
        url = next((link["href"] for link in page["links"] if link["rel"] == "next"), None)
    assert matched == 682 and len(seen) == 682 == len(set(seen))


def test_crs_of_a_known_point(client: TestClient) -> None:
    """Livingston's polygon has a vertex; the same vertex comes back transformed in every CRS."""
    base = _get(client, "/collections/municipalities/items/GT1802").json()
    lon, lat = base["geometry"]["coordinates"][0][0][0]
    flipped = _get(client, "/collections/municipalities/items/GT1802", crs=f"{CRS}4326")
    assert flipped.headers["content-crs"] == f"<{CRS}4326>"
    assert flipped.json()["geometry"]["coordinates"][0][0][0] == pytest.approx([lat, lon], abs=1e-6)
    for epsg in (3857, 32615, 32616):
        r = _get(client, "/collections/municipalities/items/GT1802", crs=f"{CRS}{epsg}")
        x, y = Transformer.from_crs(4326, epsg, always_xy=True).transform(lon, lat)
        assert r.json()["geometry"]["coordinates"][0][0][0] == pytest.approx([x, y], abs=0.5)
        assert "crs" not in r.json()["geometry"]


def test_bbox_and_bbox_crs(client: TestClient) -> None:
    plain = _get(client, "/collections/municipalities/items", bbox="-90.55,14.6,-90.5,14.65").json()
    assert "GT0101" in {f["id"] for f in plain["features"]}
    t = Transformer.from_crs(4326, 32615, always_xy=True)
    x0, y0 = t.transform(-90.55, 14.6)
    x1, y1 = t.transform(-90.5, 14.65)
    projected = _get(
        client,
        "/collections/municipalities/items",
        bbox=f"{x0},{y0},{x1},{y1}",
        **{"bbox-crs": f"{CRS}32615"},
    ).json()
    assert "GT0101" in {f["id"] for f in projected["features"]}
    latlon = _get(
        client,
        "/collections/municipalities/items",
        bbox="14.6,-90.55,14.65,-90.5",
        **{"bbox-crs": f"{CRS}4326"},
    ).json()
    assert {f["id"] for f in latlon["features"]} == {f["id"] for f in plain["features"]}


def test_property_filters_sortby_properties(client: TestClient) -> None:
    body = _get(
        client,
        "/collections/priorities/items",
        country="SLV",
        sortby="-score",
        properties="name,score,pillar",
        limit=5,
    ).json()
    scores = [f["properties"]["score"] for f in body["features"]]
    assert scores == sorted(scores, reverse=True) and body["numberMatched"] == 44
    assert set(body["features"][0]["properties"]) == {"name", "score", "pillar"}
    tier = _get(client, "/collections/priorities/items", tier="1", limit=1000).json()
    assert tier["numberMatched"] > 0 and all(f["properties"]["tier"] == 1 for f in tier["features"])


def test_queryables(client: TestClient) -> None:
    q = _get(client, "/collections/priorities/queryables")
    assert q.headers["content-type"].startswith("application/schema+json")
    props = q.json()["properties"]
    assert props["score"]["type"] == "number" and props["tier"]["type"] == "integer"
    assert props["robust"]["type"] == "boolean" and "geometry" in props


def test_cql2_filter(client: TestClient) -> None:
    body = _get(
        client, "/collections/priorities/items", filter="pillar = 'IV' AND score > 50", limit=1000
    ).json()
    assert body["numberMatched"] > 0
    assert all(f["properties"]["pillar"] == "IV" and f["properties"]["score"] > 50 for f in body["features"])
    hits = _get(
        client, "/collections/municipalities/items", filter="S_INTERSECTS(geometry, POINT(-90.51 14.62))"
    ).json()
    assert [f["id"] for f in hits["features"]] == ["GT0101"]


@pytest.mark.parametrize(
    "params",
    [
        {"filter": "name = 'x'; DROP TABLE admin_units; --"},
        {"filter": "nope = 1"},
        {"filter": "score > "},
        {"filter-lang": "cql2-json", "filter": "{}"},
        {"sortby": "name; DROP TABLE admin_units"},
        {"properties": "name,(SELECT 1)"},
        {"crs": "EPSG:4269"},
        {"bbox": "1,2,3"},
        {"bbox": "1,2,3,4", "bbox-crs": "EPSG:1"},
        {"limit": "0"},
        {"limit": "abc"},
        {"offset": "-5"},
        {"area_km2": "big"},
        {"geometry": "exact"},
    ],
)
def test_bad_requests_are_400_and_change_nothing(
    client: TestClient, engine: Engine, params: dict[str, str]
) -> None:
    before = snapshot(engine)
    r = client.get("/collections/municipalities/items", params=params)
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["code"] == "InvalidParameter" and body["description"]
    assert snapshot(engine) == before


def test_injection_through_ids(client: TestClient, engine: Engine) -> None:
    before = snapshot(engine)
    r = client.get("/collections/municipalities/items/GT0101' OR '1'='1")
    assert r.status_code == 404
    r = client.get("/collections/x'; DROP TABLE scores; --/items")
    assert r.status_code == 404
    assert snapshot(engine) == before


def test_items_html(client: TestClient) -> None:
    r = _get(client, "/collections/zones/items", f="html")
    assert r.headers["content-type"].startswith("text/html") and "<table>" in r.text


@pytest.mark.parametrize(
    ("collection", "count"),
    [
        ("municipalities", 682),
        ("priorities", 682),
        ("hurricane-tracks", 693),
        ("municipalities-slv-2021-distritos", 262),
    ],
)
def test_gdal_oapif_driver_reads_every_feature(live_url: str, collection: str, count: int) -> None:
    frame = pyogrio.read_dataframe(
        f"OAPIF:{live_url}", layer=collection, PAGE_SIZE="250"
    )  # pages via next links
    assert len(frame) == count
    assert len(set(frame.get("id", frame.index))) == count
    assert frame.crs is not None and "WGS 84" in frame.crs.name
    assert frame.geometry.notna().all()


# Unknown query parameters: 400 naming them and what is allowed (Part 1, /req/core/query-param-unknown).
UNKNOWN = [
    ("/", {"foo": "1"}, "'foo'"),
    ("/conformance", {"lang": "es"}, "'lang'"),
    ("/api", {"f": "json", "x": "1"}, "'x'"),
    ("/collections", {"limit": "5"}, "'limit'"),
    ("/collections/municipalities", {"bbox": "1,2,3,4"}, "'bbox'"),
    ("/collections/priorities/queryables", {"filter": "x"}, "'filter'"),
    ("/collections/municipalities/items", {"countyr": "SLV"}, "'countyr' (did you mean 'country'?)"),
    ("/collections/priorities/items", {"profile": "root-causes-2021"}, "'profile'"),
    ("/collections/municipalities/items/GT0101", {"limit": "5"}, "'limit'"),
]


@pytest.mark.parametrize(("path", "params", "named"), UNKNOWN, ids=[f"{p} {q}" for p, q, _ in UNKNOWN])
def test_unknown_query_parameters_are_400(
    client: TestClient, path: str, params: dict[str, str], named: str
) -> None:
    r = client.get(path, params=params)
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["code"] == "InvalidParameter"
    assert body["description"].startswith(f"Unknown query parameter {named}"), body
    allowed = body["description"].split(". Allowed: ")[1].split(";")[0].rstrip(".").split(", ")
    assert "f" in allowed and not (set(params) - {"f"}) & set(allowed)


def test_unknown_parameter_message_lists_what_is_allowed(client: TestClient) -> None:
    r = client.get("/collections/municipalities/items", params={"countyr": "SLV", "zz": "1"})
    text = r.json()["description"]
    assert text.startswith("Unknown query parameters 'countyr', 'zz' (did you mean 'country'?).")
    for allowed in ("bbox", "bbox-crs", "crs", "datetime", "f", "filter", "limit", "sortby", "set"):
        assert f" {allowed}," in text or f" {allowed};" in text
    assert text.endswith(
        "property filters: area_km2, boundary_set, country, department_name, "
        "department_pcode, name, national_code, pcode."
    )
    item = client.get("/collections/municipalities/items/GT0101", params={"bbox": "1,2,3,4"})
    assert item.json()["description"].endswith("Allowed: crs, f, geometry, properties, set.")


def test_every_documented_and_standard_parameter_is_still_taken(client: TestClient) -> None:
    every = {
        "limit": "2",
        "offset": "1",
        "bbox": "-90.6,14.5,-90.4,14.7",
        "bbox-crs": "http://www.opengis.net/def/crs/OGC/1.3/CRS84",
        "crs": f"{CRS}4326",
        "filter": "area_km2 > 1",
        "filter-lang": "cql2-text",
        "filter-crs": "http://www.opengis.net/def/crs/OGC/1.3/CRS84",
        "sortby": "-area_km2",
        "properties": "name,country",
        "geometry": "full",
        "datetime": "2020-01-01T00:00:00Z",
        "set": "gtm-municipios",
        "country": "GTM",  # a property filter
        "f": "json",
    }
    r = _get(client, "/collections/municipalities/items", **every).json()
    assert r["numberReturned"] == 2 and set(r["features"][0]["properties"]) == {"name", "country"}
    one = {
        "crs": f"{CRS}4326",
        "properties": "name",
        "geometry": "full",
        "set": "gtm-municipios",
        "f": "json",
    }
    assert _get(client, "/collections/municipalities/items/GT0101", **one).json()["id"] == "GT0101"
    for path in ("/", "/conformance", "/api", "/collections", "/collections/municipalities"):
        _get(client, path, f="json")
    _get(client, "/collections/priorities/queryables", f="json")
    _get(client, "/collections", set="slv-2021-distritos")


# --- speed without changing answers: the catalogue per data epoch, items streamed ----------------------------


def test_catalogue_and_extents_are_built_once_per_data_epoch(fresh: Any) -> None:
    engine, settings = fresh
    seen: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *a: seen.append(str(a[2])))
    with TestClient(create_app(settings, engine)) as c:
        first = c.get("/collections").json()
        built = [s for s in seen if "ST_Extent" in s]
        assert len(built) >= len(first["collections"])  # one extent per collection, the first time
        seen.clear()
        assert c.get("/collections").json() == first
        assert c.get("/collections/municipalities").status_code == 200
        assert not [s for s in seen if "ST_Extent" in s or "boundary_sets" in s]
        with engine.begin() as conn:
            bump_epoch(conn, "test: a load")
        seen.clear()
        assert c.get("/collections").json()["collections"] == first["collections"]
        assert [s for s in seen if "ST_Extent" in s]  # rebuilt after the epoch moved


def test_a_large_page_streams_every_feature_with_counts_after_them(client: TestClient) -> None:
    r = client.get("/collections/hurricane-tracks/items", params={"limit": 10000})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/geo+json")
    body = r.json()
    assert body["numberReturned"] == len(body["features"]) == body["numberMatched"] > 500
    assert r.content.index(b'"features"') < r.content.index(b'"numberMatched"')  # the envelope follows
    one = body["features"][0]
    single = client.get(f"/collections/hurricane-tracks/items/{one['id']}").json()
    assert single["properties"] == one["properties"] and single["geometry"] == one["geometry"]
    assert {link["rel"] for link in single["links"]} == {"self", "collection"}
