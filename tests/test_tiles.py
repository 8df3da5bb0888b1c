"""Vector tiles and TileJSON: decoded features, empty tiles, validation, caching headers, clipping."""

from __future__ import annotations

import math
from typing import Any

import mapbox_vector_tile
import pytest
from fastapi.testclient import TestClient

MVT = "application/vnd.mapbox-vector-tile"
GUATEMALA_CITY = (-90.5, 14.6)


def tile_xy(lon: float, lat: float, z: int) -> tuple[int, int]:
    """The slippy-map tile holding a point."""
    n = 2**z
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return x, y


def features(content: bytes, layer: str) -> list[dict[str, Any]]:
    decoded = mapbox_vector_tile.decode(content)
    return list(decoded[layer]["features"]) if layer in decoded else []


def by_pcode(content: bytes, layer: str) -> dict[str, dict[str, Any]]:
    return {f["properties"]["pcode"]: f for f in features(content, layer)}


def points(geometry: dict[str, Any]) -> list[tuple[float, float]]:
    coords = geometry["coordinates"]
    polygons = coords if geometry["type"] == "MultiPolygon" else [coords]
    return [(p[0], p[1]) for polygon in polygons for ring in polygon for p in ring]


def test_slippy_map_formula() -> None:
    assert tile_xy(*GUATEMALA_CITY, 6) == (15, 29)
    assert tile_xy(0.0, 0.0, 1) == (1, 1)


def test_municipalities_tile_over_guatemala_city(client: TestClient) -> None:
    x, y = tile_xy(*GUATEMALA_CITY, 6)
    r = client.get(f"/tiles/municipalities/6/{x}/{y}.mvt")
    assert r.status_code == 200
    assert r.headers["content-type"] == MVT
    units = by_pcode(r.content, "municipalities")
    assert units["GT0101"]["properties"] == {
        "pcode": "GT0101",
        "name": "Guatemala",
        "country": "GTM",
        "department": "GT01",
        "boundary_set": "gtm-municipios",
    }
    assert units["GT0101"]["geometry"]["type"] in ("Polygon", "MultiPolygon")
    assert isinstance(units["GT0101"]["id"], int)
    # only level-2 units of the default sets: no departments, no pre-2024 SLV distritos
    assert all(len(p) > 4 for p in units)
    assert {f["properties"]["boundary_set"] for f in units.values()} <= {
        "gtm-municipios",
        "slv-2024-municipios",
        "hnd-municipios",
    }


def test_tile_bytes_are_stable(client: TestClient) -> None:
    a = client.get("/tiles/municipalities/10/254/470.mvt")
    b = client.get("/tiles/municipalities/10/254/470.mvt")
    assert a.status_code == b.status_code == 200
    assert a.content == b.content and a.headers["etag"] == b.headers["etag"]


def test_priorities_tile_carries_scores(client: TestClient) -> None:
    x, y = tile_xy(*GUATEMALA_CITY, 6)
    r = client.get(f"/tiles/priorities/6/{x}/{y}.mvt")
    assert r.status_code == 200
    props = by_pcode(r.content, "priorities")["GT0101"]["properties"]
    listed = client.get("/v1/priorities", params={"country": "GTM", "limit": 1000}).json()["items"]
    expected = next(i for i in listed if i["pcode"] == "GT0101")
    assert props["ranked"] is True
    assert isinstance(props["score"], float) and 0 <= props["score"] <= 100
    assert props["score"] == pytest.approx(expected["score"], abs=0.01)
    for key in ("rank", "tier", "pillar", "pillar_secondary", "hotspot"):
        assert props[key] == expected[key], key
    assert props["coverage"] == pytest.approx(expected["coverage"], abs=0.001)
    assert props.get("zone") == expected["zone"]  # MVT has no null: a missing zone is an absent key


def test_tile_over_the_pacific_is_empty(client: TestClient) -> None:
    x, y = tile_xy(-120.0, 5.0, 6)
    for collection in ("municipalities", "priorities"):
        r = client.get(f"/tiles/{collection}/6/{x}/{y}.mvt")
        assert r.status_code == 200
        assert r.headers["content-type"] == MVT
        assert r.content == b""
        assert mapbox_vector_tile.decode(r.content) == {}
        assert r.headers["etag"]


@pytest.mark.parametrize(
    ("path", "word"),
    [
        ("23/0/0", "z must be between 0 and 22"),
        ("-1/0/0", "z must be between 0 and 22"),
        ("6/64/0", "x must be between 0 and 63"),
        ("6/0/64", "y must be between 0 and 63"),
        ("0/0/1", "y must be between 0 and 0"),
        ("3/-1/0", "x must be between 0 and 7"),
    ],
)
def test_out_of_range_tile_is_400(client: TestClient, path: str, word: str) -> None:
    r = client.get(f"/tiles/municipalities/{path}.mvt")
    assert r.status_code == 400
    body = r.json()
    assert body["code"] == "InvalidParameter"
    assert word in body["description"]


@pytest.mark.parametrize(
    "path",
    [
        "/tiles/roads/6/15/29.mvt",
        "/tiles/roads.json",
        "/tiles/municipalities';DROP TABLE admin_units;--/6/15/29.mvt",
    ],
)
def test_unknown_collection_is_404(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 404
    assert "municipalities, priorities" in r.json()["description"]
    assert client.get("/tiles/municipalities/6/15/29.mvt").status_code == 200


def test_etag_and_if_none_match(client: TestClient) -> None:
    url = "/tiles/priorities/8/63/117.mvt"
    r = client.get(url)
    tag = r.headers["etag"]
    assert tag.startswith('"') and tag.endswith('"') and not tag.startswith("W/")
    assert r.headers["cache-control"].startswith("public, max-age=")
    for header in (tag, f'"other", {tag}', f"W/{tag}", "*"):
        again = client.get(url, headers={"If-None-Match": header})
        assert again.status_code == 304, header
        assert again.content == b""
        assert again.headers["etag"] == tag
    assert client.get(url, headers={"If-None-Match": '"other"'}).status_code == 200
    assert client.get("/tiles/priorities/8/63/118.mvt").headers["etag"] != tag
    assert client.get("/tiles/municipalities/8/63/117.mvt").headers["etag"] != tag


@pytest.mark.parametrize("collection", ["municipalities", "priorities"])
def test_tilejson(client: TestClient, collection: str) -> None:
    r = client.get(f"/tiles/{collection}.json")
    assert r.status_code == 200
    tj = r.json()
    assert tj["tilejson"] == "3.0.0"
    assert tj["name"]
    assert tj["minzoom"] == 0 and tj["maxzoom"] == 14
    west, south, east, north = tj["bounds"]
    assert -93 < west < -91.5 and 12.5 < south < 13.5 and -84 < east < -82.5 and 17.5 < north < 18.5
    lon, lat, zoom = tj["center"]
    assert west < lon < east and south < lat < north and tj["minzoom"] <= zoom <= tj["maxzoom"]
    assert "MINFIN" in tj["attribution"]
    [layer] = tj["vector_layers"]
    assert layer["id"] == collection
    assert {"pcode": "String", "name": "String", "country": "String"}.items() <= layer["fields"].items()
    if collection == "priorities":
        assert layer["fields"]["score"] == "Number"
        assert "Indicators:" in tj["attribution"]
    [template] = tj["tiles"]
    assert template == f"http://testserver/tiles/{collection}/{{z}}/{{x}}/{{y}}.mvt"
    x, y = tile_xy(*GUATEMALA_CITY, 6)
    url = template.format(z=6, x=x, y=y).removeprefix("http://testserver")
    tile = client.get(url)
    assert tile.status_code == 200
    assert "GT0101" in by_pcode(tile.content, collection)
    # every field the TileJSON announces is one the tile can carry
    announced = set(layer["fields"])
    assert all(set(f["properties"]) <= announced for f in features(tile.content, collection))


def test_features_are_clipped_to_the_buffer(client: TestClient) -> None:
    x, y = tile_xy(*GUATEMALA_CITY, 10)
    r = client.get(f"/tiles/municipalities/10/{x}/{y}.mvt")
    fs = features(r.content, "municipalities")
    assert fs
    coords = [p for f in fs for p in points(f["geometry"])]
    assert all(-64 <= cx <= 4160 and -64 <= cy <= 4160 for cx, cy in coords)
    # some municipio crosses the tile edge, so the clip is exercised, not merely not needed
    assert any(cx in (-64, 4160) or cy in (-64, 4160) for cx, cy in coords)
