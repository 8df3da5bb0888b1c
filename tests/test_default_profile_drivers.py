"""The default profile on the new real drivers: each country's pillars use them, explanations name them with
their vintage, and pillars without data stay null. A changed catalogue row reloads a layer."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from app.ingest.run import load_source
from app.scoring.service import DEFAULT_PROFILE, bundled_profiles
from app.settings import Settings

Fresh = tuple[Engine, Settings]


def _latest_run(engine: Engine) -> list[Any]:
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


def test_default_profile_lists_the_new_drivers_and_no_count() -> None:
    profile = bundled_profiles()[DEFAULT_PROFILE]
    where = profile.component_of()
    assert where["homicide_rate_2014"] == "IV"
    for code in (
        "hydromet_events_per_year",
        "disaster_affected_per_1000",
        "dry_corridor_area_share",
        "no_drinking_water_pct_2007",
        "dirt_floor_pct_2007",
        "infant_mortality_2007",
    ):
        assert where[code] == "I", code
    assert where["public_information_compliance"] == "II"
    assert where["emigrants_emr_per_1000"] == "migration"
    assert "emigrants_emr" not in where  # a weighted count is never scored next to rates
    # SEGEPLAN's 2013-2018 ranking is kept for series; its 2020-21 edition (A2SIT) is what is scored
    assert "municipal_management_ranking" not in where


def test_pillars_use_the_new_data_in_each_country(client: TestClient, engine: Engine) -> None:
    client.get("/v1/priorities", params={"top": 1})  # make sure the default run exists
    rows = _latest_run(engine)
    by_country: dict[str, list[Any]] = {}
    for r in rows:
        by_country.setdefault(r.country, []).append(r)
    # Honduras: every municipio now has a pillar IV score (homicides 2014, absent ones as flagged zeros)
    assert all(r.pillar_scores["IV"] is not None for r in by_country["HND"])
    # El Salvador: pillar I no longer hurricanes alone; governance and gender violence still "no data"
    assert all(r.pillar_scores["I"] is not None for r in by_country["SLV"])
    assert all(r.pillar_scores["II"] is None and r.pillar_scores["V"] is None for r in by_country["SLV"])
    assert all(r.pillar_scores["III"] is None for r in by_country["HND"])

    sv = client.get("/v1/municipalities/SVM0113/score").json()  # Ahuachapán Norte
    blob = str(sv)
    assert (
        "dry_corridor_area_share" in blob
        or "dirt_floor_pct_2007" in blob
        or "no_electricity_pct_2007" in blob
    )


def test_slv_2007_values_reach_the_2024_municipios_with_their_age(client: TestClient) -> None:
    body = client.get("/v1/indicators/dirt_floor_pct_2007/values", params={"country": "SLV"}).json()
    assert body["total"] == 44
    assert {i["period"] for i in body["items"]} == {"2007"}
    assert all("derived_through_crosswalk" in i["flags"] for i in body["items"])


def test_a_changed_catalogue_row_reloads_the_layer(fresh: Fresh, tmp_path: Path) -> None:
    engine, settings = fresh
    assert load_source(engine, settings, "hnd-iudpas-2014").status == "unchanged"
    catalogue = tmp_path / "indicators.csv"
    shutil.copyfile(settings.indicator_catalogue, catalogue)
    rows = catalogue.read_text(encoding="utf-8").splitlines()
    rows = [
        r.replace(
            "homicides per 100000 inhabitants (2014 population)", "homicides per 100 000 inhabitants (2014)"
        )
        if r.startswith("homicide_rate_2014,")
        else r
        for r in rows
    ]
    catalogue.write_text("\n".join(rows) + "\n", encoding="utf-8")
    changed = settings.model_copy(update={"indicator_catalogue": catalogue})
    assert load_source(engine, changed, "hnd-iudpas-2014").status == "loaded"
    with engine.connect() as conn:
        unit = conn.execute(text("SELECT unit FROM indicators WHERE code = 'homicide_rate_2014'")).scalar()
    assert unit == "homicides per 100 000 inhabitants (2014)"
    assert load_source(engine, changed, "hnd-iudpas-2014").status == "unchanged"


def test_no_outcome_among_the_drivers_of_any_bundled_profile(settings: Settings) -> None:
    """Emigrants by cause are a breakdown of the outcome: context in the catalogue, never a pillar driver."""
    from app.ingest.layers import load_catalogue

    catalogue = load_catalogue(settings.indicator_catalogue)
    for code in (
        "emigrants_insecurity_share",
        "emigrants_insecurity_per_1000",
        "emigrants_insecurity_share_emr",
    ):
        assert catalogue[code].theme == "context"
    for pid, profile in bundled_profiles().items():
        for component, items in profile.pillars.items():
            for i in items:
                assert catalogue[i.code].theme == component, (pid, i.code)
                assert catalogue[i.code].measure == "rate", (pid, i.code)
        for i in profile.migration:
            assert catalogue[i.code].theme == "migration" and catalogue[i.code].measure == "rate", (
                pid,
                i.code,
            )
