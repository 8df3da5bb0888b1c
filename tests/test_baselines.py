"""Baselines and what changed since one (issue 15, points 3 and 4): through create_app, the CLI and app.baselines,
on a private copy of the loaded database where one unit's data changes the way a load changes data."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

import mapbox_vector_tile
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from app import baselines, cli
from app.db import make_engine, transaction
from app.ingest.provenance import bump_epoch
from app.main import create_app
from app.scoring.profile import Profile
from app.scoring.service import Retention, bundled_profiles, prune_scenarios
from app.settings import Settings
from tests.conftest import PG, make_settings

KEY = {"X-API-Key": "test-key-1"}
CODE = "emigrants_per_1000"  # El Salvador: one municipal value per unit, min-max normalised, no outlier treatment


@dataclass
class World:
    """One database copy with a baseline of the default profile and, after it, one unit's value changed."""

    engine: Engine
    settings: Settings
    client: TestClient
    unit: str
    old: float
    new: float
    ranks_then: dict[str, int]


def _slv_ranks(engine: Engine, run: int) -> dict[str, int]:
    with engine.connect() as conn:
        return dict(
            conn.execute(
                text(
                    "SELECT pcode, rank FROM priority_items WHERE run_id = :r AND country = 'SLV' AND ranked"
                ),
                {"r": run},
            ).all()
        )


@pytest.fixture(scope="module")
def world(pg: PG, loaded_template: str, cache_dir: Any) -> Iterator[World]:
    name = f"b_{uuid4().hex[:10]}"
    url = pg.create(name, template=loaded_template)
    settings = make_settings(url, cache_dir, inprocess_worker=False)
    engine = make_engine(settings, url)
    b = baselines.create(engine, "start", None, description="before the change")
    ranks = _slv_ranks(engine, b.run_id)
    with engine.connect() as conn:
        values = dict(
            conn.execute(
                text(
                    "SELECT pcode, value FROM observations WHERE indicator_code = :c "
                    "AND boundary_set_id = 'slv-2024-municipios'"
                ),
                {"c": CODE},
            ).all()
        )
    lo, hi = min(values.values()), max(values.values())
    # a unit in the lower half of the ranking, neither the indicator's minimum nor its maximum: raising its
    # value halfway to the maximum leaves every other unit's normalised value (min-max) as it was
    unit = next(
        p
        for p, r in sorted(ranks.items(), key=lambda t: -t[1])
        if lo < values[p] < hi and r > len(ranks) // 2
    )
    old = values[unit]
    new = old + (hi - old) * 0.9
    with transaction(engine) as conn:  # as a load does: the values and the epoch in one transaction
        conn.execute(
            text(
                "UPDATE observations SET value = :v WHERE indicator_code = :c "
                "AND boundary_set_id = 'slv-2024-municipios' AND pcode = :p"
            ),
            {"v": new, "c": CODE, "p": unit},
        )
        bump_epoch(conn, "test: one unit's value changed")
    with TestClient(create_app(settings, engine)) as client:
        yield World(engine, settings, client, unit, old, new, ranks)
    engine.dispose()
    pg.drop(name)


def _changes(world: World, **params: Any) -> dict[str, Any]:
    r = world.client.get("/v1/priorities/changes", params={"baseline": "start", "limit": 1000, **params})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_only_the_changed_unit_and_those_it_displaced_move(world: World) -> None:
    body = _changes(world)
    items = {i["pcode"]: i for i in body["items"]}
    assert body["total"] == len(items) == 340 + 44 + 298
    assert body["baseline"]["name"] == "start" and body["baseline"]["epoch"] < int(
        body["now"]["data_version"].split("/")[0][1:]
    )
    mine = items[world.unit]
    old_rank, new_rank = mine["then"]["rank"], mine["now"]["rank"]
    assert old_rank == world.ranks_then[world.unit]
    assert new_rank < old_rank and mine["change"]["rank"] == old_rank - new_rank
    assert mine["change"]["score"] > 0
    moved = mine["indicators_moved"]
    assert moved[0]["code"] == CODE
    assert moved[0]["value_then"] == pytest.approx(world.old) and moved[0]["value_now"] == pytest.approx(
        world.new
    )
    assert moved[0]["contribution_change"] > 0
    assert [m["code"] for m in moved] == [CODE]  # nothing else of its data changed
    displaced = {p for p, r in world.ranks_then.items() if new_rank <= r < old_rank}
    assert displaced  # the test means something only if someone was overtaken
    for pcode, i in items.items():
        if pcode == world.unit:
            continue
        assert i["change"]["score"] in (0, None), pcode
        assert i["indicators_moved"] == [], pcode
        assert i["change"]["pillar"] is False, pcode
        if pcode in displaced:
            assert i["change"]["rank"] == -1, pcode
        else:
            assert i["change"]["rank"] in (0, None), pcode
            assert i["change"]["tier"] in (0, None), pcode
    assert body["counts"]["rank_changed"] == len(displaced) + 1
    assert body["counts"]["pillar_changed"] == 0


def test_changed_filter_country_and_csv(world: World) -> None:
    changed = _changes(world, changed="true", country="SLV")
    ranks = {i["pcode"] for i in changed["items"]}
    assert world.unit in ranks and {i["country"] for i in changed["items"]} == {"SLV"}
    assert changed["total"] == changed["counts"]["rank_changed"]
    assert _changes(world, country="GTM", changed="true")["total"] == 0
    r = world.client.get(
        "/v1/priorities/changes", params={"baseline": "start", "format": "csv", "country": "SLV"}
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == 44
    row = next(x for x in rows if x["pcode"] == world.unit)
    assert int(row["rank_change"]) > 0 and row["indicators_moved"].startswith(f"{CODE}:")


def test_bad_input_is_4xx_saying_what_to_fix(world: World) -> None:
    c = world.client
    r = c.get("/v1/priorities/changes", params={"baseline": "nope"})
    assert (
        r.status_code == 404
        and "start" in r.json()["description"]
        and "POST /v1/baselines" in r.json()["description"]
    )
    assert c.get("/v1/baselines/nope").status_code == 404
    r = c.get("/v1/priorities/changes", params={"baseline": "start", "country": "MEX"})
    assert r.status_code == 400 and "GTM" in r.json()["description"]
    r = c.get("/v1/priorities/changes", params={"baseline": "start", "profile": "nope"})
    assert r.status_code == 404 and "root-causes-2021" in r.json()["description"]
    assert c.get("/v1/priorities/changes").status_code == 422  # baseline is required
    assert c.post("/v1/baselines", json={"name": "x"}).status_code == 401
    assert c.post("/v1/baselines", json={"name": "x"}, headers={"X-API-Key": "wrong"}).status_code == 403
    r = c.post("/v1/baselines", json={"name": "start"}, headers=KEY)
    assert r.status_code == 409 and "start" in r.json()["description"]
    r = c.post("/v1/baselines", json={"name": "two words"}, headers=KEY)
    assert r.status_code == 400 and "letters" in r.json()["description"]
    r = c.post("/v1/baselines", json={"name": "x", "profile": "nope"}, headers=KEY)
    assert r.status_code == 404 and "root-causes-2021" in r.json()["description"]
    r = c.post("/v1/baselines", json={"name": "x", "sets": ["nope"]}, headers=KEY)
    assert r.status_code == 400 and "nope" in r.json()["description"]
    assert c.delete("/v1/baselines/start").status_code == 401


def _scenario() -> Profile:
    spec = bundled_profiles()["root-causes-2021"].model_dump()
    return Profile.model_validate({**spec, "id": "monitoring-test", "draws": 20, "migration_weight": 0.6})


def test_a_baseline_run_survives_scenario_pruning(world: World) -> None:
    c = world.client
    r = c.post(
        "/v1/baselines",
        json={"name": "scenario-1", "profile": _scenario().model_dump(), "sets": ["slv-2024-municipios"]},
        headers=KEY,
    )
    assert r.status_code == 201, r.text
    assert r.headers["Location"].endswith("/v1/baselines/scenario-1")
    run = r.json()["run"]
    assert r.json()["profile"]["id"] == "monitoring-test" and r.json()["sets"] == ["slv-2024-municipios"]
    with transaction(world.engine) as conn:
        prune_scenarios(conn, Retention(max_runs=0, max_age_hours=0.0))
    with world.engine.connect() as conn:
        assert (
            conn.execute(text("SELECT count(*) FROM score_runs WHERE id = :r"), {"r": run}).scalar_one() == 1
        )
    # the diff recomputes the scenario on today's data and compares it with its frozen run
    body = _changes(world, baseline="scenario-1")
    assert body["now"]["profile"]["id"] == "monitoring-test" and body["total"] == 44
    assert body["items"][0]["then"]["score"] is not None
    listed = [b["name"] for b in c.get("/v1/baselines").json()["items"]]
    assert listed[:2] == ["scenario-1", "start"]
    assert c.delete("/v1/baselines/scenario-1", headers=KEY).status_code == 200
    with transaction(world.engine) as conn:
        prune_scenarios(conn, Retention(max_runs=0, max_age_hours=0.0))
    with world.engine.connect() as conn:
        assert (
            conn.execute(text("SELECT count(*) FROM score_runs WHERE id = :r"), {"r": run}).scalar_one() == 0
        )
    assert c.get("/v1/baselines/scenario-1").status_code == 404


def test_frozen_values_outlive_the_data(world: World) -> None:
    """The baseline keeps the value the unit was scored on, though the observation now holds another."""
    with world.engine.connect() as conn:
        b = baselines.get(conn, "start")
        frozen = conn.execute(
            text(
                "SELECT indicators -> :c ->> 'value' FROM baseline_values WHERE baseline_id = :b "
                "AND boundary_set_id = 'slv-2024-municipios' AND pcode = :p"
            ),
            {"c": CODE, "b": b.id, "p": world.unit},
        ).scalar_one()
    assert float(frozen) == pytest.approx(world.old)


def test_ogc_collection_priority_changes(world: World) -> None:
    c = world.client
    assert "priority-changes" in [x["id"] for x in c.get("/collections").json()["collections"]]
    r = c.get("/collections/priority-changes/items", params={"country": "SLV", "limit": 100})
    assert r.status_code == 200, r.text
    features = {f["id"]: f["properties"] for f in r.json()["features"]}
    assert len(features) == 44
    mine = features[world.unit]
    assert mine["rank_change"] > 0 and mine["score_change"] > 0 and mine["pillar_changed"] is False
    r = c.get("/collections/priority-changes/items", params={"filter": "rank_change < 0", "limit": 1000})
    assert r.status_code == 200
    api = {i["pcode"] for i in _changes(world)["items"] if (i["change"]["rank"] or 0) < 0}
    assert {f["id"] for f in r.json()["features"]} == api


def test_tile_layer_priority_changes(world: World) -> None:
    c = world.client
    assert (
        c.get("/tiles/priority-changes.json").json()["vector_layers"][0]["fields"]["rank_change"] == "Number"
    )
    r = c.get("/tiles/priority-changes/5/8/14.mvt")  # El Salvador and its neighbours
    assert r.status_code == 200
    layer = mapbox_vector_tile.decode(r.content)["priority-changes"]
    props = {f["properties"]["pcode"]: f["properties"] for f in layer["features"]}
    assert props[world.unit]["rank_change"] > 0
    assert props[world.unit]["rank_then"] == world.ranks_then[world.unit]


def test_cli_create_list_diff(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.settings import get_settings

    monkeypatch.setenv("DATABASE_URL", str(world.settings.database_url))
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        made = runner.invoke(cli.app, ["baseline", "create", "cli-1", "--description", "from the CLI"])
        assert made.exit_code == 0, made.output
        assert "baseline cli-1: profile root-causes-2021" in made.output
        listed = runner.invoke(cli.app, ["baseline", "list"])
        assert listed.exit_code == 0 and "cli-1" in listed.output and "start" in listed.output
        diff = runner.invoke(cli.app, ["baseline", "diff", "start", "--country", "SLV"])
        assert diff.exit_code == 0, diff.output
        assert world.unit in diff.output and " rank changes" in diff.output, diff.output
        as_csv = runner.invoke(cli.app, ["baseline", "diff", "start", "--country", "SLV", "--csv"])
        rows = list(csv.DictReader(io.StringIO(as_csv.output)))
        assert len(rows) == 44 and rows[0]["pcode"].startswith("SVM")
        same = runner.invoke(cli.app, ["baseline", "diff", "cli-1", "--csv"])
        assert all(r["rank_change"] in ("0", "") for r in csv.DictReader(io.StringIO(same.output)))
        unknown = runner.invoke(cli.app, ["baseline", "diff", "nope"])
        assert unknown.exit_code == 2 and "cli-1" in unknown.output
        gone = runner.invoke(cli.app, ["baseline", "delete", "cli-1"])
        assert gone.exit_code == 0
    finally:
        get_settings.cache_clear()


def test_ogc_names_a_baseline_and_tiles_follow_the_newest(world: World) -> None:
    c = world.client
    r = c.get("/collections/priority-changes/items", params={"baseline": "nope"})
    assert r.status_code == 404 and "start" in r.json()["description"]
    assert c.get("/collections/municipalities/items", params={"baseline": "start"}).status_code == 400

    def unit_change(**params: Any) -> Any:
        r = c.get("/collections/priority-changes/items", params={"country": "SLV", "limit": 100, **params})
        assert r.status_code == 200, r.text
        return {f["id"]: f["properties"] for f in r.json()["features"]}[world.unit]["rank_change"]

    assert unit_change(baseline="start") > 0
    tile = "/tiles/priority-changes/5/8/14.mvt"
    tag = c.get(tile).headers["ETag"]
    baselines.create(world.engine, "after-the-change", None, description="newest")
    try:
        assert unit_change() == 0  # the newest baseline already has the change
        assert unit_change(baseline="start") > 0  # a named one still compares with it
        r = c.get(tile, headers={"If-None-Match": tag})
        assert r.status_code == 200 and r.headers["ETag"] != tag  # a new baseline is a new tile
        layer = mapbox_vector_tile.decode(r.content)["priority-changes"]
        props = {f["properties"]["pcode"]: f["properties"] for f in layer["features"]}
        assert props[world.unit].get("rank_change", 0) == 0
    finally:
        baselines.delete(world.engine, "after-the-change")
