"""Series (issue 15, points 1 and 4): loaders store their time dimension under their own indicator codes;
`/v1/municipalities/{pcode}/series`, `/v1/indicators/{code}/values?period=`, `raices series`."""

from __future__ import annotations

import csv
import io
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from app.ingest.layers import ABSENT_ASSUMED_ZERO, DERIVED_CROSSWALK
from app.ingest.run import catalogue_changed, load_all
from app.ingest.series import PARTIAL_YEAR, SERIES_INDICATORS
from app.settings import Settings
from app.sources import Resolver, load_manifest

SLV_YEARS = [str(y) for y in range(2014, 2025)]


def _detail(settings: Settings) -> pd.DataFrame:
    """The census emigration detail as mirrored, read here independently of the loader."""
    source = load_manifest(settings.manifest)["slv-censo2024"]
    path = Resolver(settings).resolve(source)[source.file("emigration").name]
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame["emigrants"] = pd.to_numeric(frame["emigrants"])
    return frame


# --- stored series ----------------------------------------------------------------------------------------


def test_slv_departures_by_year_match_the_file(engine: Engine, settings: Settings) -> None:
    detail = _detail(settings)
    by_year = detail.groupby("year_departure")["emigrants"].sum()
    with engine.connect() as conn:
        stored = dict(
            conn.execute(
                text("""
            SELECT period, sum(value) FROM observations WHERE indicator_code = 'slv_emigrants_year'
            GROUP BY period""")
            ).all()
        )
        n = conn.execute(
            text("SELECT count(DISTINCT pcode) FROM observations WHERE indicator_code = 'slv_emigrants_year'")
        ).scalar()
    assert n == 44 and sorted(stored) == SLV_YEARS
    for year in SLV_YEARS:  # every emigrant of the detail is in one municipio and one year
        assert stored[year] == by_year[year]
    assert sum(stored.values()) == 226_808  # = the summary's total_emigrants_household
    assert (stored["2023"], stored["2024"]) == (34_168, 12_529)  # the census year is incomplete


def test_series_leave_existing_indicators_alone(engine: Engine) -> None:
    with engine.connect() as conn:
        periods = dict(
            conn.execute(
                text("""
            SELECT indicator_code, string_agg(DISTINCT period, ',') FROM observations
            WHERE indicator_code IN ('emigrants_per_1000', 'hydromet_events_per_year', 'hurricanes_within_100km')
            GROUP BY 1""")
            ).all()
        )
    assert periods == {
        "emigrants_per_1000": "2024",
        "hydromet_events_per_year": "1988-2015",
        "hurricanes_within_100km": "1975-2024",
    }


def test_hurricane_seasons_sum_to_the_total(engine: Engine) -> None:
    with engine.connect() as conn:
        rows = conn.execute(
            text("""
            SELECT t.boundary_set_id, t.pcode, t.value AS total, sum(s.value) AS seasons, count(*) AS n,
                   min(s.period) AS first, max(s.period) AS last
            FROM observations t JOIN observations s ON s.boundary_set_id = t.boundary_set_id
              AND s.pcode = t.pcode AND s.indicator_code = 'hurricanes_within_100km_season'
            WHERE t.indicator_code = 'hurricanes_within_100km' GROUP BY 1, 2, 3""")
        ).all()
        mitch = conn.execute(
            text("""
            SELECT count(*) FILTER (WHERE value > 0), count(*) FROM observations
            WHERE indicator_code = 'hurricanes_within_100km_season' AND period = '1998'
              AND boundary_set_id = 'hnd-municipios'""")
        ).one()
    assert len(rows) == 944
    assert all(r.total == r.seasons and r.n == 50 and (r.first, r.last) == ("1975", "2024") for r in rows)
    assert sum(r.total for r in rows) > 0
    # 1998 (Mitch) touched part of Honduras; the other municipios have a measured 0 for that season
    assert mitch[1] == 298 and 0 < mitch[0] < 298


def test_desinventar_years_sum_to_the_average(engine: Engine) -> None:
    with engine.connect() as conn:
        rows = conn.execute(
            text("""
            SELECT t.pcode, t.value * 28 AS total, sum(s.value) AS years, count(*) AS n,
                   count(*) FILTER (WHERE :absent = ANY(s.flags)) AS zero_years,
                   count(*) FILTER (WHERE s.value = 0) AS zeros
            FROM observations t JOIN observations s ON s.pcode = t.pcode AND s.indicator_code = 'hydromet_events_year'
            WHERE t.indicator_code = 'hydromet_events_per_year' GROUP BY 1, 2"""),
            {"absent": ABSENT_ASSUMED_ZERO},
        ).all()
    assert len(rows) == 340 and all(r.n == 28 and r.zero_years == r.zeros for r in rows)
    # every event with a year is in its year; the one record without a date or a year is in neither series
    off = [r for r in rows if round(r.total) != round(r.years)]
    assert len(off) <= 1 and all(round(r.total) - round(r.years) == 1 for r in off)


def test_load_all_missing_picks_up_series_on_an_existing_database(fresh: Any) -> None:
    engine, settings = fresh
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM indicators WHERE code = ANY(:c)"), {"c": list(SERIES_INDICATORS)})
    assert catalogue_changed(engine, settings) == {"slv-censo2024", "gtm-desinventar", "hurdat2-dplyr"}
    reports = load_all(engine, settings, missing_only=True)
    assert sorted(r.source_id for r in reports) == ["gtm-desinventar", "hurdat2-dplyr", "slv-censo2024"]
    with engine.connect() as conn:
        stored = set(conn.execute(text("SELECT indicator_code FROM observations")).scalars())
    assert set(SERIES_INDICATORS) <= stored
    assert catalogue_changed(engine, settings) == set()
    assert load_all(engine, settings, missing_only=True) == []


# --- GET /v1/municipalities/{pcode}/series ----------------------------------------------------------------


def test_series_endpoint_json(client: TestClient, settings: Settings) -> None:
    r = client.get("/v1/municipalities/SVM0113/series", params={"indicator": "slv_emigrants_year"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["unit"]["pcode"] == "SVM0113" and body["unit"]["country"] == "SLV"
    assert [i["period"] for i in body["items"]] == SLV_YEARS and body["total"] == 11
    assert [i["flags"] for i in body["items"]] == [[]] * 10 + [[PARTIAL_YEAR]]
    assert body["indicator"]["vintage"] == "2014-2024" and body["indicator"]["publisher"]
    assert body["source"]["id"] == "slv-censo2024" and body["source"]["citation"]
    assert all(len(i["file_sha256"]) == 64 and i["loaded_at"] for i in body["items"])
    assert all(i["value"] >= 0 for i in body["items"])


def test_series_through_the_crosswalk(client: TestClient) -> None:
    r = client.get("/v1/municipalities/SV0101/series", params={"indicator": "slv_emigrants_per_1000_year"})
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert [i["period"] for i in items] == SLV_YEARS
    assert all(DERIVED_CROSSWALK in i["flags"] for i in items) and PARTIAL_YEAR in items[-1]["flags"]


def test_series_endpoint_csv(client: TestClient) -> None:
    r = client.get(
        "/v1/municipalities/GT0101/series", params={"indicator": "hydromet_events_year", "format": "csv"}
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [x["period"] for x in rows] == [str(y) for y in range(1988, 2016)]
    assert {x["pcode"] for x in rows} == {"GT0101"} and {x["indicator"] for x in rows} == {
        "hydromet_events_year"
    }
    assert sum(float(x["value"]) for x in rows) == pytest.approx(319, abs=1)  # Guatemala City, 319 events


@pytest.mark.parametrize(
    ("path", "params", "status", "phrase"),
    [
        ("/v1/municipalities/XX9999/series", {"indicator": "slv_emigrants_year"}, 404, "/v1/municipalities"),
        ("/v1/municipalities/SVM0113/series", {"indicator": "nope"}, 404, "/v1/indicators"),
        ("/v1/municipalities/GT0101/series", {"indicator": "slv_emigrants_year"}, 404, "values in: SLV"),
        ("/v1/municipalities/SVM0113/series", {}, 422, "indicator"),
        (
            "/v1/municipalities/SVM0113/series",
            {"indicator": "slv_emigrants_year", "format": "xml"},
            422,
            "csv",
        ),
    ],
)
def test_series_bad_input(
    client: TestClient, path: str, params: dict[str, str], status: int, phrase: str
) -> None:
    r = client.get(path, params=params)
    assert r.status_code == status, r.text
    assert phrase in r.text and "Traceback" not in r.text


# --- GET /v1/indicators/{code}/values?period= -------------------------------------------------------------


def test_values_by_period(client: TestClient) -> None:
    latest = client.get("/v1/indicators/slv_emigrants_year/values", params={"country": "SLV"}).json()
    assert latest["period"] == "latest" and latest["periods"] == SLV_YEARS
    assert latest["total"] == 44 and {i["period"] for i in latest["items"]} == {"2024"}
    y2019 = client.get(
        "/v1/indicators/slv_emigrants_year/values", params={"country": "SLV", "period": "2019"}
    ).json()
    assert y2019["period"] == "2019" and {i["period"] for i in y2019["items"]} == {"2019"}
    assert y2019["total"] == 44
    assert sum(i["value"] for i in y2019["items"]) > sum(i["value"] for i in latest["items"])
    distritos = client.get(
        "/v1/indicators/slv_emigrants_year/values", params={"set": "slv-2021-distritos", "period": "2019"}
    ).json()
    assert distritos["total"] == 262 and sum(i["value"] for i in distritos["items"]) == pytest.approx(
        sum(i["value"] for i in y2019["items"])
    )
    r = client.get(
        "/v1/indicators/hurricanes_within_100km_season/values",
        params={"period": "1998", "country": "HND", "format": "csv"},
    )
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert r.status_code == 200 and len(rows) == 298 and {x["period"] for x in rows} == {"1998"}


def test_values_period_not_in_the_data_is_400_listing_periods(client: TestClient) -> None:
    r = client.get("/v1/indicators/slv_emigrants_year/values", params={"period": "1999"})
    assert r.status_code == 400
    msg = r.json()["description"]
    assert "'1999'" in msg and "2014, 2015" in msg and "2024" in msg
    r = client.get("/v1/indicators/emigrants_per_1000/values", params={"period": "2014"})
    assert r.status_code == 400 and "its periods are: 2024" in r.json()["description"]
    r = client.get("/v1/indicators/nope/values", params={"period": "2014"})
    assert r.status_code == 404 and "/v1/indicators" in r.json()["description"]


# --- raices series ------------------------------------------------------------------------------------------


def test_cli_series(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from app import cli
    from app.settings import get_settings

    monkeypatch.setenv("DATABASE_URL", str(settings.database_url))
    get_settings.cache_clear()
    try:
        table = CliRunner().invoke(cli.app, ["series", "SVM0113", "--indicator", "slv_emigrants_year"])
        assert table.exit_code == 0, table.output
        assert "slv_emigrants_year" in table.output and "2014" in table.output
        assert PARTIAL_YEAR in table.output
        out = CliRunner().invoke(cli.app, ["series", "SVM0113", "--indicator", "slv_emigrants_year", "--csv"])
        assert out.exit_code == 0, out.output
        rows = list(csv.DictReader(io.StringIO(out.output)))
        assert [x["period"] for x in rows] == SLV_YEARS and rows[-1]["flags"] == PARTIAL_YEAR
        bad = CliRunner().invoke(cli.app, ["series", "SVM0113", "--indicator", "nope"])
        assert bad.exit_code == 2 and "No indicator 'nope'" in bad.output and "Traceback" not in bad.output
        unit = CliRunner().invoke(cli.app, ["series", "XX1", "--indicator", "slv_emigrants_year"])
        assert unit.exit_code == 2 and "No municipio with P-code 'XX1'" in unit.output
    finally:
        get_settings.cache_clear()
