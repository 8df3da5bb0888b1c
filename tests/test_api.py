"""The /v1 API and /health against the loaded database."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine

from app.main import create_app
from app.settings import Settings
from tests.conftest import snapshot


def _get(client: TestClient, path: str, status: int = 200, **params: Any) -> Any:
    response = client.get(path, params=params)
    assert response.status_code == status, response.text
    return response.json()


def test_health(client: TestClient) -> None:
    body = _get(client, "/health")
    assert body["status"] == "ok"
    assert body["database"]["reachable"] is True
    assert body["database"]["units"] == 1012
    from app.db import head_revision

    assert body["database"]["revision"] == head_revision()


def test_health_503_when_database_unreachable(settings: Settings) -> None:
    engine = create_engine(
        "postgresql+psycopg://postgres@127.0.0.1:9/none", connect_args={"connect_timeout": 1}
    )
    with TestClient(create_app(settings, engine)) as c:
        r = c.get("/health")
        assert r.status_code == 503
        assert r.json()["database"]["reachable"] is False
        # other endpoints answer 503 with a message, not a stack trace
        r = c.get("/v1/municipalities")
        assert r.status_code == 503
        assert r.json()["code"] == "ServiceUnavailable"
        assert "Traceback" not in r.text and "psycopg" not in r.text


def test_countries(client: TestClient) -> None:
    body = _get(client, "/v1/countries")
    assert set(body) == {"total", "limit", "offset", "items"}
    by_iso = {c["iso3"]: c for c in body["items"]}
    assert set(by_iso) == {"GTM", "SLV", "HND"}
    slv = {s["id"]: s for s in by_iso["SLV"]["boundary_sets"]}
    assert slv["slv-2024-municipios"]["municipalities"] == 44 and slv["slv-2024-municipios"]["is_default"]
    assert slv["slv-2021-distritos"]["municipalities"] == 262
    assert by_iso["GTM"]["boundary_sets"][0]["municipalities"] == 340
    assert by_iso["HND"]["boundary_sets"][0]["departments"] == 18


@pytest.mark.parametrize(
    ("params", "total"),
    [
        ({}, 340 + 44 + 298),
        ({"country": "GTM"}, 340),
        ({"country": "slv"}, 44),
        ({"country": "HND"}, 298),
        ({"set": "slv-2021-distritos"}, 262),
        ({"department": "GT01"}, 17),
        ({"department": "SV01"}, 3),
        ({"country": "SLV", "set": "slv-2021-distritos", "department": "SV01"}, 12),
    ],
)
def test_municipality_filters(client: TestClient, params: dict[str, str], total: int) -> None:
    assert _get(client, "/v1/municipalities", **params)["total"] == total


def test_search_is_case_and_accent_insensitive(client: TestClient) -> None:
    names = {i["name"] for i in _get(client, "/v1/municipalities", q="SAN JOSE", limit=1000)["items"]}
    assert "San José Pinula" in names
    assert names == {i["name"] for i in _get(client, "/v1/municipalities", q="san josé", limit=1000)["items"]}
    peten = _get(client, "/v1/municipalities", q="petén")  # no municipio is named Petén
    assert peten["total"] == 0
    assert _get(client, "/v1/municipalities", q="ahuachapan norte")["items"][0]["pcode"] == "SVM0113"
    # LIKE wildcards are not patterns; a query of punctuation alone is refused
    assert _get(client, "/v1/municipalities", q="san_jose")["total"] > 0  # '_' is a separator like ' '
    assert client.get("/v1/municipalities", params={"q": "%"}).status_code == 400


def test_bbox_filter(client: TestClient) -> None:
    # a small box around San Salvador city
    body = _get(client, "/v1/municipalities", bbox="-89.22,13.68,-89.18,13.72", country="SLV")
    names = {i["name"] for i in body["items"]}
    assert any(n.startswith("San Salvador") for n in names)
    assert all(i["country"] == "SLV" for i in body["items"])


def test_paging_reaches_every_unit_once(client: TestClient) -> None:
    seen: list[str] = []
    offset = 0
    while True:
        page = _get(client, "/v1/municipalities", country="HND", limit=70, offset=offset)
        seen += [i["pcode"] for i in page["items"]]
        offset += 70
        if offset >= page["total"]:
            break
    assert len(seen) == 298 == len(set(seen))


def test_geojson_format(client: TestClient) -> None:
    r = client.get("/v1/municipalities", params={"country": "SLV", "format": "geojson", "limit": 10})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/geo+json")
    fc = r.json()
    assert fc["type"] == "FeatureCollection"
    assert (fc["numberMatched"], fc["numberReturned"]) == (44, 10)
    f = fc["features"][0]
    assert f["id"] == f["properties"]["pcode"]
    assert f["geometry"]["type"] == "MultiPolygon"
    assert any(link["rel"] == "next" for link in fc["links"])


def test_municipality_detail(client: TestClient) -> None:
    m = _get(client, "/v1/municipalities/GT1802")
    assert m["name"] == "Livingston" and m["national_code"] == "1802"
    assert m["department"] == {"pcode": "GT18", "name": "Izabal", "national_code": "18"}
    assert m["area_km2"] == pytest.approx(2353, abs=5)
    lon, lat = m["centroid"]
    assert -89.5 < lon < -88.2 and 15.4 < lat < 16.0
    assert m["geometry"]["type"] == "MultiPolygon" and len(m["geometry"]["coordinates"]) >= 2
    prov = m["provenance"]
    assert prov["source"]["id"] == "gtm-minfin" and "MINFIN" in prov["source"]["publisher"]
    assert {f["file"] for f in prov["files"] if f["source"] == "gtm-minfin"} == {"munis.json", "deptos.json"}
    assert m["crosswalk"] == []


def test_slv_crosswalk_partners(client: TestClient) -> None:
    municipio = _get(client, "/v1/municipalities/svm0113")  # case-insensitive P-code
    partners = {p["name"] for p in municipio["crosswalk"]}
    assert partners == {"Atiquizaya", "El Refugio", "San Lorenzo", "Turín"}
    # share_of_this: the fraction of this unit's area that the partner covers
    assert sum(p["share_of_this"] for p in municipio["crosswalk"]) == pytest.approx(1, abs=1e-5)
    assert all(p["share_of_other"] == pytest.approx(1, abs=1e-5) for p in municipio["crosswalk"])
    distrito = _get(client, "/v1/municipalities/SV0103")
    assert [p["pcode"] for p in distrito["crosswalk"]] == ["SVM0113"]
    assert distrito["crosswalk"][0]["share_of_this"] == pytest.approx(1, abs=1e-5)
    assert 0 < distrito["crosswalk"][0]["share_of_other"] < 1


def test_geojson_detail(client: TestClient) -> None:
    r = client.get("/v1/municipalities/HN0101", params={"format": "geojson"})
    assert r.status_code == 200 and r.json()["type"] == "Feature" and r.json()["id"] == "HN0101"


@pytest.mark.parametrize(
    ("path", "params", "status", "phrase"),
    [
        ("/v1/municipalities/GT9999", {}, 404, "No municipio with P-code 'GT9999'"),
        ("/v1/municipalities", {"bbox": "1,2,3"}, 400, "bbox must be four"),
        ("/v1/municipalities", {"bbox": "a,b,c,d"}, 400, "bbox must be four"),
        ("/v1/municipalities", {"bbox": "10,10,0,0"}, 400, "minimum must not exceed"),
        ("/v1/municipalities", {"bbox": "0,0,200,10"}, 400, "degrees"),
        ("/v1/municipalities", {"bbox": "nan,0,1,1"}, 400, "finite"),
        ("/v1/municipalities", {"limit": "0"}, 422, "limit"),
        ("/v1/municipalities", {"limit": "100000"}, 422, "limit"),
        ("/v1/municipalities", {"limit": "ten"}, 422, "limit"),
        ("/v1/municipalities", {"offset": "-1"}, 422, "offset"),
        ("/v1/municipalities", {"country": "MEX"}, 400, "country must be one of GTM, SLV, HND"),
        ("/v1/municipalities", {"set": "nope"}, 400, "Unknown boundary set 'nope'"),
        ("/v1/municipalities", {"format": "kml"}, 422, "format"),
        ("/nowhere", {}, 404, "Not Found"),
    ],
)
def test_bad_inputs(client: TestClient, path: str, params: dict[str, str], status: int, phrase: str) -> None:
    r = client.get(path, params=params)
    assert r.status_code == status, r.text
    assert phrase in r.json()["description"]


def test_sql_in_parameters_is_harmless(client: TestClient, engine: Any) -> None:
    before = snapshot(engine)
    evil = "x'; DROP TABLE admin_units; --"
    for params in ({"q": evil}, {"department": evil}, {"set": evil}, {"country": evil}):
        r = client.get("/v1/municipalities", params=params)
        assert r.status_code in (200, 400), r.text
    assert client.get(f"/v1/municipalities/{evil}").status_code == 404
    assert snapshot(engine) == before


def test_openapi_docs(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert {"/health", "/v1/countries", "/v1/municipalities", "/v1/municipalities/{pcode}"} <= set(
        spec["paths"]
    )
