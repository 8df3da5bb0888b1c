"""Priorities on the real data: every municipio with enough coverage is scored, pillars only where there is
data, the API's shapes, filters, formats and errors, custom profiles cached by hash."""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from app.scoring.profile import PILLARS, Profile
from app.scoring.service import DEFAULT_PROFILE, bundled_profiles


@pytest.fixture(scope="module")
def ranked(client: TestClient) -> list[dict[str, Any]]:
    body = client.get("/v1/priorities", params={"limit": 1000}).json()
    assert body["total"] == len(body["items"])
    return body["items"]


def _run_rows(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        run = conn.execute(
            # the default profile's latest run on the default sets (not one on the distritos, say)
            text(
                "SELECT id FROM score_runs WHERE profile_id = :p "
                "AND sets = (SELECT array_agg(id ORDER BY id) FROM boundary_sets WHERE is_default) "
                "ORDER BY id DESC LIMIT 1"
            ),
            {"p": DEFAULT_PROFILE},
        ).scalar_one()
        return list(conn.execute(text("SELECT * FROM scores WHERE run_id = :r"), {"r": run}))


def test_every_municipio_with_enough_coverage_is_scored(ranked: list[dict[str, Any]], engine: Engine) -> None:
    rows = _run_rows(engine)
    assert len(rows) == 340 + 44 + 298
    profile = bundled_profiles()[DEFAULT_PROFILE]
    for r in rows:
        enough = r.coverage >= profile.min_coverage - 1e-9
        assert r.ranked == (enough and r.driver_coverage >= profile.min_driver_coverage - 1e-9), r.pcode
        assert (r.not_ranked_reason is None) == r.ranked, r.pcode
    per_country = {c: sum(1 for r in rows if r.ranked and r.country == c) for c in ("GTM", "SLV", "HND")}
    assert per_country == {"GTM": 340, "SLV": 44, "HND": 298}
    assert len(ranked) == sum(per_country.values())


def test_no_pillar_without_data(engine: Engine) -> None:
    for r in _run_rows(engine):
        for tag in (r.pillar, r.pillar_secondary):
            if tag is not None:
                assert r.pillar_scores[tag] is not None, (r.pcode, tag)
        # El Salvador and Honduras have no governance (II), rights (III) or gender-violence (V) data
        if r.country in ("SLV", "HND"):
            assert r.pillar_scores["II"] is None and r.pillar_scores["V"] is None
            assert r.pillar not in ("II", "III", "V")


def test_priority_item_shape(ranked: list[dict[str, Any]]) -> None:
    item = ranked[0]
    for key in (
        "pcode",
        "name",
        "country",
        "score",
        "rank",
        "rank_interval",
        "p_top",
        "robust",
        "tier",
        "pillar",
        "pillar_secondary",
        "pillar_scores",
        "migration",
        "top_indicators",
        "hotspot",
        "zone",
        "coverage",
    ):
        assert key in item
    assert set(item["pillar_scores"]) == set(PILLARS)
    gtm = [i for i in ranked if i["country"] == "GTM"]
    assert [i["rank"] for i in gtm][:3] == [1, 2, 3]
    assert all(0 <= i["score"] <= 100 for i in ranked)
    assert all(a["score"] >= b["score"] for a, b in itertools.pairwise(gtm))
    lo, hi = gtm[0]["rank_interval"]
    assert lo <= gtm[0]["rank_median"] <= hi
    top = gtm[0]["top_indicators"]
    assert top and {"code", "value", "contribution"} <= set(top[0])
    assert gtm[0]["tier"] == 1 and gtm[-1]["tier"] == 3


@pytest.mark.parametrize(
    ("params", "check"),
    [
        ({"country": "SLV"}, lambda i: i["country"] == "SLV"),
        ({"pillar": "I"}, lambda i: i["pillar"] == "I"),
        ({"tier": 1}, lambda i: i["tier"] == 1),
        ({"top": 3}, lambda i: i["rank"] <= 3),
        ({"department": "GT01"}, lambda i: i["department"]["pcode"] == "GT01"),
    ],
)
def test_filters(client: TestClient, params: dict[str, Any], check: Any) -> None:
    body = client.get("/v1/priorities", params={**params, "limit": 1000}).json()
    assert body["total"] > 0 and all(check(i) for i in body["items"])


def test_top_gives_three_per_country(client: TestClient) -> None:
    body = client.get("/v1/priorities", params={"top": 3}).json()
    assert body["total"] >= 9


def test_formats(client: TestClient) -> None:
    r = client.get("/v1/priorities", params={"country": "HND", "format": "csv", "limit": 1000})
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert r.headers["content-type"].startswith("text/csv") and len(rows) == 298
    assert rows[0]["rank"] == "1"
    g = client.get("/v1/priorities", params={"country": "SLV", "format": "geojson"}).json()
    assert g["numberMatched"] == 44 and g["features"][0]["geometry"]["type"] == "MultiPolygon"
    assert g["features"][0]["id"] == g["features"][0]["properties"]["pcode"]


def test_profiles(client: TestClient) -> None:
    items = client.get("/v1/profiles").json()["items"]
    default = next(p for p in items if p["id"] == DEFAULT_PROFILE)
    assert Profile.model_validate(default["spec"]).hash() == default["hash"]
    assert client.get(f"/v1/profiles/{DEFAULT_PROFILE}").json()["hash"] == default["hash"]
    r = client.get("/v1/profiles/nope")
    assert r.status_code == 404 and DEFAULT_PROFILE in r.json()["description"]


def _custom() -> dict[str, Any]:
    return {
        "id": "crime-first",
        "migration": [{"code": "deportee_rate"}],
        "pillars": {"IV": [{"code": "crime_rate"}]},
        "migration_weight": 0.2,
        "draws": 50,
    }


def test_post_scores_and_cache(client: TestClient, engine: Engine) -> None:
    r = client.post("/v1/scores", json=_custom(), params={"country": "GTM", "limit": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["profile"]["hash"] == Profile.model_validate(_custom()).hash()
    assert body["items"][0]["pillar"] == "IV"
    with engine.connect() as conn:
        n = conn.execute(text("SELECT count(*) FROM score_runs")).scalar()
    again = client.post("/v1/scores", json=_custom(), params={"country": "GTM", "limit": 5}).json()
    assert again["items"] == body["items"]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM score_runs")).scalar() == n  # served from the cache
    # SLV and HND have no deportee or crime data: nobody ranked there
    assert client.post("/v1/scores", json=_custom(), params={"country": "SLV"}).json()["total"] == 0


@pytest.mark.parametrize(
    ("change", "phrase"),
    [
        ({"pillars": {"IV": [{"code": "no_such_indicator"}]}}, "Unknown indicators ['no_such_indicator']"),
        ({"pillars": {"IV": [{"code": "crime_rate", "weight": -1}]}}, "greater than or equal to 0"),
        ({"pillars": {"IV": []}}, "pillar IV is empty"),
        ({"pillars": {"VI": [{"code": "crime_rate"}]}}, "pillars.VI"),
        ({"migration_weight": 2}, "migration_weight"),
        ({"tier_cutoffs": [0.5, 0.2]}, "tier_cutoffs must be increasing"),
    ],
)
def test_post_scores_refuses_bad_profiles(client: TestClient, change: dict[str, Any], phrase: str) -> None:
    r = client.post("/v1/scores", json={**_custom(), **change})
    assert r.status_code == 422, r.text
    assert phrase in r.json()["description"]


def test_post_scores_refuses_malformed_json(client: TestClient) -> None:
    r = client.post("/v1/scores", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_explanation(client: TestClient, ranked: list[dict[str, Any]]) -> None:
    first = next(i for i in ranked if i["country"] == "HND")
    m = client.get(f"/v1/municipalities/{first['pcode']}/score").json()
    assert m["rank"] == 1 and m["pcode"] == first["pcode"]
    assert len(m["similar"]) == 5 and all(s["pcode"] != first["pcode"] for s in m["similar"])
    assert m["pillar_scores"][m["pillar"]] is not None
    d = client.get("/v1/municipalities/SV0103/score").json()  # a distrito: scored on the 262
    assert d["boundary_set"] == "slv-2021-distritos"
    assert client.get("/v1/municipalities/GT9999/score").status_code == 404


def test_similar_municipios_are_the_nearest_of_their_country(
    client: TestClient, ranked: list[dict[str, Any]]
) -> None:
    """The five similar municipios: ranked ones of the same country, nearest in root-mean-square difference
    over the pillar sub-scores and migration score both have, ties by P-code (recomputed from the list)."""

    def profile(i: dict[str, Any]) -> dict[str, Any]:
        return {**i["pillar_scores"], "migration": i["migration"]}

    for country in ("GTM", "SLV", "HND"):
        mine = [i for i in ranked if i["country"] == country]
        for unit in (mine[0], mine[len(mine) // 2], mine[-1]):
            a = profile(unit)
            expected = []
            for o in mine:
                b = profile(o)
                common = [k for k in a if a[k] is not None and b.get(k) is not None]
                if o["pcode"] != unit["pcode"] and common:
                    d = math.sqrt(sum((a[k] - b[k]) ** 2 for k in common) / len(common))
                    expected.append((d, o["pcode"]))
            expected.sort()
            got = client.get(f"/v1/municipalities/{unit['pcode']}/score").json()["similar"]
            # the list's sub-scores are rounded to 2 decimals, the service compares unrounded ones: distances
            # agree within 0.02, and no municipio left out is nearer than the fifth by more than that
            recomputed = {p: d for d, p in expected}
            assert len(got) == 5
            for s in got:
                assert s["distance"] == pytest.approx(recomputed[s["pcode"]], abs=0.02), (unit["pcode"], s)
            assert [s["distance"] for s in got] == sorted(s["distance"] for s in got)
            fifth = got[-1]["distance"]
            chosen = {s["pcode"] for s in got}
            assert all(d > fifth - 0.02 for d, p in expected if p not in chosen), unit["pcode"]
            assert all(s["pcode"] != unit["pcode"] for s in got)


def test_zones(client: TestClient) -> None:
    body = client.get("/v1/zones", params={"country": "GTM"}).json()
    assert body["total"] >= 1
    z = body["items"][0]
    assert z["zone"].startswith("GTM-Z") and z["units"] == len(z["members"]) and z["area_km2"] > 0
    tier1 = client.get("/v1/priorities", params={"country": "GTM", "tier": 1, "limit": 1000}).json()["items"]
    assert all(i["zone"] is not None for i in tier1)  # every tier-1 municipio lies in a zone
    g = client.get("/v1/zones", params={"format": "geojson"}).json()
    assert g["features"][0]["geometry"]["type"] == "MultiPolygon"


def test_sensitivity(client: TestClient) -> None:
    body = client.get("/v1/sensitivity", params={"method": "oat"}).json()
    factors = {f["factor"] for f in body["factors"]}
    assert "migration_weight" in factors and len(factors) >= 3
    assert client.get("/v1/sensitivity", params={"method": "magic"}).status_code == 422
    shares = body["variance_shares"]
    by_source = {s["source"]: s for s in shares["sources"]}
    assert set(by_source) == {"weights", "normaliser", "aggregation", "missing", "exclusion", "sampling"}
    assert sum(s["share"] for s in shares["sources"]) == pytest.approx(1.0, abs=1e-3)
    # Honduras' survey estimates carry their effective sample, and municipios lack values: both sources act
    assert by_source["sampling"]["applies"] and by_source["missing"]["applies"]
    assert all(s["variance"] >= 0 for s in shares["sources"]) and shares["joint_variance"] > 0


def test_scores_recomputed_when_data_change(fresh: Any, tmp_path: Any) -> None:
    from app.ingest.layers import store_layer
    from app.ingest.userdata import TableSpec, prepare_table, user_indicator
    from app.scoring.service import ensure_run, profile_by_id

    engine, _ = fresh
    profile = profile_by_id(DEFAULT_PROFILE).model_copy(update={"draws": 20})
    first = ensure_run(engine, profile)
    assert ensure_run(engine, profile) == first
    f = tmp_path / "x.csv"
    f.write_text("pcode,value\nHN0101,1\n")
    with engine.connect() as conn:
        layer = prepare_table(conn, f, user_indicator("x_user"), TableSpec())
    store_layer(engine, layer)
    assert ensure_run(engine, profile) != first


def test_cli_score_prints_a_table(fresh: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    from typer.testing import CliRunner

    from app import cli
    from app.settings import get_settings

    engine, _ = fresh
    monkeypatch.setenv("DATABASE_URL", engine.url.render_as_string(hide_password=False))
    get_settings.cache_clear()
    spec = tmp_path / "p.json"
    spec.write_text(json.dumps({**_custom(), "draws": 10}))
    try:
        result = CliRunner().invoke(cli.app, ["score", "--profile", str(spec), "--top", "3"])
        assert result.exit_code == 0, result.output
        assert "GTM" in result.output and "crime-first" in result.output
        bundled = CliRunner().invoke(cli.app, ["score", "--profile", "northern-triangle-2021", "--top", "2"])
        assert bundled.exit_code == 0 and "northern-triangle-2021" in bundled.output, bundled.output
        fitted = tmp_path / "fitted.json"
        fitted.write_text(
            json.dumps(
                {
                    "id": "small-fit",
                    "migration": [{"code": "deportee_rate"}, {"code": "emigrants_per_1000"}],
                    "pillars": {"I": [{"code": "hurricanes_within_100km"}, {"code": "poverty_rate"}]},
                    "empirical": {},
                    "draws": 5,
                }
            )
        )
        result = CliRunner().invoke(cli.app, ["score", "--profile", str(fitted), "--top", "2"])
        assert result.exit_code == 0, result.output
        assert "out-of-sample" in result.output and "Association, not cause" in result.output
        assert "not fitted" in result.output  # Honduras has neither outcome of this profile
        bad = tmp_path / "bad.json"
        bad.write_text('{"pillars": {"IV": []}}')
        result = CliRunner().invoke(cli.app, ["score", "--profile", str(bad)])
        assert result.exit_code == 2 and "not a valid profile" in result.output
    finally:
        get_settings.cache_clear()


def test_pillar_ranks_and_rank_by(client: TestClient) -> None:
    body = client.get("/v1/priorities", params={"country": "HND", "limit": 1000}).json()
    items = body["items"]
    assert all(set(i["pillar_ranks"]) == set(PILLARS) for i in items)
    # Honduras has homicides for every municipio and no pillar III data
    assert all(i["pillar_ranks"]["IV"] is not None and i["pillar_ranks"]["III"] is None for i in items)
    worst_iv = max(items, key=lambda i: i["pillar_scores"]["IV"])
    assert worst_iv["pillar_ranks"]["IV"] == 1
    by_iv = client.get("/v1/priorities", params={"country": "HND", "rank_by": "IV", "top": 5}).json()["items"]
    ranks = [i["pillar_ranks"]["IV"] for i in by_iv]
    assert ranks == sorted(ranks) and ranks[0] == 1 and max(ranks) <= 5
    assert worst_iv["pcode"] in {i["pcode"] for i in by_iv}
    # a pillar with no data in the country lists nothing rather than everything unranked
    assert client.get("/v1/priorities", params={"country": "HND", "rank_by": "III"}).json()["total"] == 0
    r = client.get("/v1/priorities", params={"rank_by": "VI"})
    assert r.status_code == 400 and "rank_by must be" in r.json()["description"]
    # the lead pillar is where the unit stands highest in its country, never a pillar without data
    for i in items:
        if i["pillar"] is not None:
            assert i["pillar_ranks"][i["pillar"]] is not None


def test_northern_triangle_is_one_ranking_on_comparable_indicators(
    client: TestClient, engine: Engine
) -> None:
    nt = client.get("/v1/profiles/northern-triangle-2021").json()["spec"]
    assert nt["scope"] == "region" and set(nt["pillars"]) == {"I"}
    codes = [i["code"] for i in nt["migration"]] + [i["code"] for p in nt["pillars"].values() for i in p]
    with engine.connect() as conn:  # every indicator it uses has values in each of the three countries
        countries = dict(
            conn.execute(
                text("""
            SELECT o.indicator_code, array_agg(DISTINCT b.country ORDER BY b.country) FROM observations o
            JOIN boundary_sets b ON b.id = o.boundary_set_id WHERE o.indicator_code = ANY(:c) GROUP BY 1"""),
                {"c": codes},
            ).all()
        )
    assert {c: sorted(countries.get(c, [])) for c in codes} == {c: ["GTM", "HND", "SLV"] for c in codes}
    body = client.get("/v1/priorities", params={"profile": "northern-triangle-2021", "limit": 1000}).json()
    items = body["items"]
    ranks = [i["rank"] for i in items]
    assert ranks == sorted(ranks) and ranks[0] == 1  # one regional order, not one per country
    assert all(i["rank_region"] == i["rank"] for i in items)
    order = [i["country"] for i in items]
    assert order != sorted(order)  # countries interleave: the list is not grouped by country
    assert all(all(i["pillar_scores"][p] is None for p in ("II", "III", "IV", "V")) for i in items)
    assert len({i["country"] for i in items}) == 3
    # the country-scoped default has no regional rank: its scores are not comparable across countries
    default = client.get("/v1/priorities", params={"limit": 50}).json()["items"]
    assert all(i["rank_region"] is None for i in default)


def test_empirical_profile_reports_its_fit_per_country(client: TestClient) -> None:
    body = client.get("/v1/profiles/empirical-2021").json()
    assert "association, not cause" in body["spec"]["description"]
    fits = {f["country"]: f for f in body["fit"]["countries"]}
    assert set(fits) == {"GTM", "HND", "SLV"}
    for country, units in (("GTM", 340), ("SLV", 44)):  # every municipio has an outcome there
        f = fits[country]
        assert f["status"] == "fitted" and f["units_with_outcome"] == units, f
        assert -1 <= f["out_of_sample"]["spearman"] <= 1 and f["out_of_sample"]["r2"] <= 1
        assert f["coefficients"] and all(c["pillar"] in PILLARS for c in f["coefficients"])
    assert fits["HND"]["units_with_outcome"] >= 150  # the survey reaches about 60 % of municipios
    assert body["fit"]["vintage"]["deportee_rate"] and body["fit"]["vintage"]["emigrants_per_1000"]
    items = client.get("/v1/priorities", params={"profile": "empirical-2021", "limit": 1000}).json()["items"]
    assert {i["country"] for i in items} == {"GTM", "HND", "SLV"}
    for i in items:  # the tag is a pillar whose drivers the fit uses in that country
        if i["pillar"] is not None:
            used = {c["pillar"] for c in fits[i["country"]]["coefficients"] if c["coefficient"] != 0}
            assert i["pillar"] in used, i["pcode"]
    r = client.get("/v1/sensitivity", params={"profile": "empirical-2021", "method": "oat"})
    assert r.status_code == 400 and "fitted, not weighted" in r.json()["description"]


def test_scenario_runs_stay_bounded(fresh: Any) -> None:
    from app.main import create_app

    engine, settings = fresh
    bounded = settings.model_copy(update={"scenario_runs_max": 3, "scenario_runs_max_age_hours": 24.0})
    default = bundled_profiles()[DEFAULT_PROFILE].hash()
    with TestClient(create_app(bounded, engine)) as c:
        assert c.get("/v1/priorities", params={"limit": 1}).status_code == 200  # the bundled run
        for k in range(5):
            body = {**_custom(), "migration_weight": 0.1 + k / 10, "draws": 5}
            r = c.post("/v1/scores", json=body, params={"limit": 1})
            assert r.status_code == 200, r.text
        with engine.connect() as conn:
            runs = conn.execute(text("SELECT profile_hash, computed_at FROM score_runs ORDER BY id")).all()
        scenarios = [r for r in runs if r.profile_hash != default]
        assert len(scenarios) == 3 and any(r.profile_hash == default for r in runs)
        # the newest scenario is the one just served, and it is still there
        assert (
            c.post("/v1/scores", json={**_custom(), "migration_weight": 0.5, "draws": 5}).status_code == 200
        )
        with engine.begin() as conn:  # age every scenario run past the limit but one
            conn.execute(
                text("""UPDATE score_runs SET computed_at = now() - interval '2 days'
                        WHERE profile_hash <> :d"""),
                {"d": default},
            )
        r = c.post("/v1/scores", json={**_custom(), "migration_weight": 0.05, "draws": 5})
        assert r.status_code == 200
        with engine.connect() as conn:
            left = conn.execute(
                text("SELECT count(*) FROM score_runs WHERE profile_hash <> :d"), {"d": default}
            )
            assert left.scalar_one() == 1  # only the new one: the aged ones are gone
            orphans = conn.execute(
                text("SELECT count(*) FROM scores WHERE run_id NOT IN (SELECT id FROM score_runs)")
            ).scalar_one()
            assert orphans == 0
