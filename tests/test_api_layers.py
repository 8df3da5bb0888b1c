"""The layer endpoints: sources, indicators, values (json, csv, geojson) and the municipio detail."""

from __future__ import annotations

import csv
import io

import pytest
from fastapi.testclient import TestClient


def test_sources_list_provenance_and_licences(client: TestClient) -> None:
    body = client.get("/v1/sources").json()
    by_id = {s["id"]: s for s in body["items"]}
    assert {"gtm-minfin", "gtm-a2sit", "slv-censo2024", "hnd-emr2023", "hurdat2-dplyr"} <= set(by_id)
    a2sit = by_id["gtm-a2sit"]
    assert a2sit["loaded_at"] and a2sit["licence"].startswith("MIT") and "UNHCR" in a2sit["citation"]
    xlsx = next(f for f in a2sit["files"] if f["name"].endswith(".xlsx"))
    assert xlsx["loaded"] and len(xlsx["sha256"]) == 64 and xlsx["url"].startswith("https://")


def test_indicator_catalogue(client: TestClient) -> None:
    items = {i["code"]: i for i in client.get("/v1/indicators").json()["items"]}
    deport = items["deportee_rate"]
    assert (deport["theme"], deport["direction"], deport["source"]["id"]) == ("migration", 1, "gtm-a2sit")
    assert deport["coverage"]["GTM"][0]["values"] == 340 and deport["coverage"]["SLV"] == []
    assert items["gdp_per_capita"]["direction"] == -1
    gini = items["gini"]["coverage"]["GTM"][0]
    assert gini["out_of_range"] >= 1
    v = client.get("/v1/indicators", params={"theme": "V"}).json()["items"]
    assert {i["code"] for i in v} == {"violence_against_women_rate", "domestic_violence_rate"}
    assert client.get("/v1/indicators", params={"theme": "VI"}).status_code == 422


def test_values_json(client: TestClient) -> None:
    body = client.get("/v1/indicators/emigrants_per_1000/values").json()
    assert body["indicator"]["theme"] == "migration"
    assert body["total"] == 44
    item = body["items"][0]
    assert set(item) == {
        "pcode",
        "name",
        "country",
        "level",
        "boundary_set",
        "value",
        "period",
        "flags",
        "sample_size",
    }
    assert all(i["boundary_set"] == "slv-2024-municipios" for i in body["items"])


def test_values_through_the_crosswalk(client: TestClient) -> None:
    on_44 = {i["pcode"]: i for i in client.get("/v1/indicators/emigrants/values").json()["items"]}
    on_262 = client.get("/v1/indicators/emigrants/values", params={"set": "slv-2021-distritos"}).json()[
        "items"
    ]
    assert len(on_262) == 262
    assert all("derived_through_crosswalk" in i["flags"] for i in on_262)
    # counts split by area share: the total is kept
    assert sum(i["value"] for i in on_262) == pytest.approx(sum(i["value"] for i in on_44.values()))
    # rates carry down unchanged: Atiquizaya (SV0103) lies in Ahuachapán Norte (SVM0113)
    rate_44 = client.get("/v1/indicators/emigrants_per_1000/values").json()["items"]
    rate_262 = client.get(
        "/v1/indicators/emigrants_per_1000/values", params={"set": "slv-2021-distritos"}
    ).json()["items"]
    assert next(i["value"] for i in rate_262 if i["pcode"] == "SV0103") == pytest.approx(
        next(i["value"] for i in rate_44 if i["pcode"] == "SVM0113")
    )


def test_values_csv_and_geojson(client: TestClient) -> None:
    r = client.get("/v1/indicators/crime_rate/values", params={"format": "csv", "country": "GTM"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == 340 and rows[0]["flags"] == "" and rows[0]["period"] == "2020"  # PNC 2020
    g = client.get("/v1/indicators/emigrants_emr/values", params={"format": "geojson"})
    assert g.headers["content-type"].startswith("application/geo+json")
    fc = g.json()
    assert fc["numberMatched"] == 189 and fc["features"][0]["geometry"]["type"] == "MultiPolygon"
    assert "survey_not_representative_by_municipio" in fc["features"][0]["properties"]["flags"]


def test_values_errors(client: TestClient) -> None:
    r = client.get("/v1/indicators/nope/values")
    assert r.status_code == 404 and "No indicator 'nope'" in r.json()["description"]
    assert client.get("/v1/indicators/gini/values", params={"set": "x"}).status_code == 400
    assert client.get("/v1/indicators/gini/values", params={"format": "xml"}).status_code == 422


def test_municipio_detail_lists_its_indicators(client: TestClient) -> None:
    m = client.get("/v1/municipalities/GT0101").json()
    by_code = {i["code"]: i for i in m["indicators"]}
    assert by_code["deportee_rate"]["source"]["id"] == "gtm-a2sit"
    assert by_code["deportee_rate"]["flags"] == [] and by_code["deportee_rate"]["period"] == "2021"
    assert by_code["deportee_rate"]["publisher"].startswith("IGM")
    assert by_code["gdp_per_capita"]["period"] == "2021"
    d = client.get("/v1/municipalities/SV0103").json()
    derived = {i["code"]: i for i in d["indicators"]}
    assert "derived_through_crosswalk" in derived["emigrants_per_1000"]["flags"]
