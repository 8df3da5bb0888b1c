"""One read model: every output of priorities reads the `priority_items` view, with one rule for municipios
that are not ranked; storms are read from the `storm_tracks` view by the API and the OGC collection alike."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, inspect, text

from app.ingest.provenance import bump_epoch
from app.main import create_app
from app.models import views
from tests.test_tiles import by_pcode, tile_xy

# what derives from a composite score: null (absent from a tile) when a municipio is not ranked
SCORE_DERIVED = ("score", "rank", "tier", "pillar", "pillar_secondary", "hotspot", "zone")


def test_views_have_the_declared_columns(engine: Engine) -> None:
    with engine.connect() as conn:
        for view in views.tables.values():
            stored = [c["name"] for c in inspect(conn).get_columns(view.name)]
            assert stored == [c.name for c in view.columns], view.name


@pytest.fixture
def one_unranked(fresh: Any) -> tuple[TestClient, str, tuple[float, float]]:
    """A copy of the loaded data where one Guatemalan municipio has lost its municipal values (the epoch is
    bumped as a load would), so the default profile cannot rank it."""
    engine, settings = fresh
    pcode = "GT0108"  # Mixco, beside the capital
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM observations WHERE pcode = :p"), {"p": pcode})
        bump_epoch(conn, "test: drop one municipio's values")
        lon, lat = conn.execute(
            text(
                "SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(geom) AS p FROM admin_units "
                "WHERE pcode = :p AND level = 2) t"
            ),
            {"p": pcode},
        ).one()
    client = TestClient(create_app(settings, engine))
    return client, pcode, (lon, lat)


def test_an_unranked_municipio_reads_the_same_everywhere(
    one_unranked: tuple[TestClient, str, tuple[float, float]],
) -> None:
    client, pcode, (lon, lat) = one_unranked
    with client:
        ranked = client.get("/v1/priorities", params={"country": "GTM", "limit": 1000}).json()["items"]
        assert pcode not in {i["pcode"] for i in ranked}  # the planner list is of ranked municipios
        listed = client.get(
            "/v1/priorities", params={"country": "GTM", "limit": 1000, "include_unranked": "true"}
        ).json()["items"]
        item = next(i for i in listed if i["pcode"] == pcode)
        assert item["ranked"] is False and "coverage" in item["not_ranked_reason"]
        assert all(item[k] is None for k in SCORE_DERIVED)
        assert item["rank_interval"] is None and item["top_indicators"] == []
        assert len(listed) == len(ranked) + 1

        ogc = client.get(
            "/collections/priorities/items", params={"filter": f"pcode = '{pcode}'", "f": "json"}
        ).json()
        (feature,) = ogc["features"]
        props = feature["properties"]
        assert props["ranked"] is False and props["not_ranked_reason"] == item["not_ranked_reason"]
        assert all(props[k] is None for k in SCORE_DERIVED)
        unranked_ogc = client.get(
            "/collections/priorities/items", params={"filter": "ranked = false", "f": "json"}
        ).json()
        assert [f["properties"]["pcode"] for f in unranked_ogc["features"]] == [pcode]

        x, y = tile_xy(lon, lat, 8)
        tile = client.get(f"/tiles/priorities/8/{x}/{y}.mvt")
        tprops = by_pcode(tile.content, "priorities")[pcode]["properties"]
        assert tprops["ranked"] is False and tprops["not_ranked_reason"] == item["not_ranked_reason"]
        assert not set(SCORE_DERIVED) & set(tprops)  # MVT has no null: absent

        body = client.get(
            "/v1/priorities",
            params={"country": "GTM", "format": "csv", "include_unranked": "true", "limit": 1000},
        ).text
        rows = {r["pcode"]: r for r in csv.DictReader(io.StringIO(body))}
        assert rows[pcode]["ranked"] in ("false", "False") and rows[pcode]["score"] == ""
        assert rows[pcode]["not_ranked_reason"] == item["not_ranked_reason"]
        assert len(rows) == len(listed)


def test_storms_read_the_same_through_the_api_and_ogc(client: TestClient) -> None:
    api = client.get("/v1/hazards/storms", params={"name": "Mitch", "year": 1998}).json()["items"]
    (mitch,) = api
    ogc = client.get("/collections/hurricane-tracks/items/MITCH-1998", params={"f": "json"}).json()
    assert ogc["properties"]["max_wind_kt"] == mitch["max_wind_kt"]
    assert ogc["properties"]["fixes"] == mitch["fixes"] > 0
    one = client.get("/v1/hazards/storms/mitch-1998").json()
    assert one["fixes"] == len(one["fix_list"]) == mitch["fixes"]


def test_remembered_answers_follow_the_data(fresh: Any) -> None:
    """Planner answers are remembered per run or data epoch (app.cache): a load that writes moves the epoch,
    and the next answer is the new one."""
    engine, settings = fresh
    with TestClient(create_app(settings, engine)) as client:
        top = client.get("/v1/priorities", params={"country": "GTM", "top": 1}).json()["items"][0]
        found = client.get("/v1/municipalities", params={"q": "chinautla"}).json()["items"]
        assert [u["name"] for u in found] == ["Chinautla"]
        assert client.get("/v1/priorities", params={"country": "GTM", "top": 1}).json()["items"][0] == top
        with engine.begin() as conn:  # as a load does: values and names change with the epoch
            conn.execute(text("DELETE FROM observations WHERE pcode = :p"), {"p": top["pcode"]})
            conn.execute(text("UPDATE admin_units SET name = 'Chinautla (renamed)' WHERE pcode = 'GT0106'"))
            bump_epoch(conn, "test: a load")
        after = client.get("/v1/priorities", params={"country": "GTM", "top": 1}).json()["items"][0]
        assert after["pcode"] != top["pcode"]
        found = client.get("/v1/municipalities", params={"q": "chinautla"}).json()["items"]
        assert [u["name"] for u in found] == ["Chinautla (renamed)"]
        explained = client.get(f"/v1/municipalities/{top['pcode']}/score").json()
        assert explained["ranked"] is False and explained["score"] is None
