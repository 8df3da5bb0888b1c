"""Honduras homicides 2014 (IUDPAS) and Guatemala's 2018 population (UNHCR MVI): known answers, the
absent-municipio choice visible in the API, atomic and idempotent loads."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from app.errors import DataError
from app.ingest.layers import ABSENT_ASSUMED_ZERO
from app.ingest.run import load_source
from app.settings import Settings
from tests.conftest import stored_observations, values_with_flags
from tests.test_ingest_failures import _private

Fresh = tuple[Engine, Settings]


def test_iudpas_known_answers(engine: Engine) -> None:
    homicides = values_with_flags(engine, "homicides_2014")
    rates = values_with_flags(engine, "homicide_rate_2014")
    pop = values_with_flags(engine, "population_2014")
    assert len(homicides) == len(rates) == 298  # every municipio of Honduras
    assert len(pop) == 265  # only the listed ones have a population
    listed = {p for p, (_, flags, _) in homicides.items() if not flags}
    absent = {p for p, (_, flags, _) in homicides.items() if flags == [ABSENT_ASSUMED_ZERO]}
    assert len(listed) == 265 and len(absent) == 33
    assert all(homicides[p][0] == 0 and rates[p][0] == 0 for p in absent)
    assert sum(v for v, _, _ in homicides.values()) == 5936  # IUDPAS national total 2014
    assert sum(v for v, _, _ in pop.values()) == 8_529_767
    assert {per for _, _, per in homicides.values()} == {"2014"}
    # San Pedro Sula (INE 501), Distrito Central (801), El Progreso (1804), Choloma (502), La Ceiba (101)
    for pcode, count, rate in [
        ("HN0501", 1084, 142.0),
        ("HN0801", 987, 81.0),
        ("HN1804", 241, 105.0),
        ("HN0502", 209, 62.4),
        ("HN0101", 197, 95.1),
    ]:
        assert homicides[pcode][0] == count
        assert rates[pcode][0] == pytest.approx(rate, abs=0.05)


def test_absent_municipios_say_so_in_the_api(client: TestClient, engine: Engine) -> None:
    absent = sorted(
        p
        for p, (_, flags, _) in values_with_flags(engine, "homicide_rate_2014").items()
        if ABSENT_ASSUMED_ZERO in flags
    )
    r = client.get("/v1/indicators/homicide_rate_2014/values", params={"country": "HND"})
    assert r.status_code == 200
    items = (
        {i["pcode"]: i for i in r.json()["items"]}
        if "items" in r.json()
        else {i["pcode"]: i for i in r.json()["values"]}
    )
    assert items[absent[0]]["value"] == 0
    assert ABSENT_ASSUMED_ZERO in items[absent[0]]["flags"]
    assert items["HN0501"]["flags"] == [] and items["HN0501"]["period"] == "2014"


def test_gtm_population_2018(engine: Engine) -> None:
    pop = values_with_flags(engine, "population_2018")
    assert len(pop) == 340
    assert sum(v for v, _, _ in pop.values()) == 14_901_286  # INE Censo 2018
    assert pop["GT0101"][0] == 923_392  # Guatemala
    assert pop["GT0108"][0] == 465_773  # Mixco
    assert pop["GT0115"][0] == 433_734  # Villa Nueva
    assert {per for _, _, per in pop.values()} == {"2018"}


def test_iudpas_reload_is_unchanged_then_damaged_copies_change_nothing(fresh: Fresh, tmp_path: Path) -> None:
    engine, settings = fresh
    assert load_source(engine, settings, "hnd-iudpas-2014").status == "unchanged"
    before = stored_observations(engine)
    assert settings.data_mirror is not None
    real = (settings.data_mirror / "indicators/hnd-iudpas-2014/iudpas_honduras_crime2.csv").read_bytes()
    truncated = real[: len(real) // 2]
    s, sources = _private(
        settings, tmp_path / "a", "hnd-iudpas-2014", {"iudpas_honduras_crime2.csv": truncated}
    )
    with pytest.raises(DataError, match=r"Source 'hnd-iudpas-2014'.*(not a number|truncated)"):
        load_source(engine, s, "hnd-iudpas-2014", sources=sources, force=True)
    no_rate = real.replace(b"homicideRate", b"rate")
    s, sources = _private(
        settings, tmp_path / "b", "hnd-iudpas-2014", {"iudpas_honduras_crime2.csv": no_rate}
    )
    with pytest.raises(DataError, match=r"missing columns \['homicideRate'\]"):
        load_source(engine, s, "hnd-iudpas-2014", sources=sources, force=True)
    assert stored_observations(engine) == before


def test_gtm_population_damaged_copy_changes_nothing(fresh: Fresh, tmp_path: Path) -> None:
    engine, settings = fresh
    before = stored_observations(engine)
    assert settings.data_mirror is not None
    real = (settings.data_mirror / "indicators/gtm-mvi-unhcr/Population table.xlsx").read_bytes()
    s, sources = _private(settings, tmp_path, "gtm-mvi-unhcr", {"Population table.xlsx": real[:20000]})
    with pytest.raises(DataError, match=r"Source 'gtm-mvi-unhcr', file 'Population table\.xlsx'"):
        load_source(engine, s, "gtm-mvi-unhcr", sources=sources, force=True)
    assert stored_observations(engine) == before


def test_department_populations_checked_against_municipal_sums(engine: Engine) -> None:
    with engine.connect() as conn:
        rows = {
            (r.country, r.national_code): (r.value, list(r.flags))
            for r in conn.execute(
                text("""
                SELECT DISTINCT ON (u.country, u.national_code, o.indicator_code) u.country, u.national_code,
                       o.indicator_code, o.value, o.flags
                FROM observations o JOIN admin_units u
                  ON u.boundary_set_id = o.boundary_set_id AND u.pcode = o.pcode
                WHERE o.indicator_code = 'dept_population'""")
            )
        }
        rates = {
            (r.country, r.national_code): (r.value, list(r.flags))
            for r in conn.execute(
                text("""
                SELECT DISTINCT ON (u.country, u.national_code) u.country, u.national_code, o.value, o.flags
                FROM observations o JOIN admin_units u
                  ON u.boundary_set_id = o.boundary_set_id AND u.pcode = o.pcode
                WHERE o.indicator_code = 'dept_emigrants_per_1000'""")
            )
        }
        hnd_pop = {
            r.dep: r.pop
            for r in conn.execute(
                text("""
                SELECT substr(pcode, 3, 2) AS dep, sum(value) AS pop FROM observations
                WHERE indicator_code = 'population_2014' GROUP BY 1""")
            )
        }
    flagged = sorted(k for k, (_, flags) in rows.items() if "inconsistent_population" in flags)
    # Gracias a Dios (09) and Islas de la Bahía (11): about 6× their municipal sums in the file
    assert flagged == [("HND", "09"), ("HND", "11")]
    for dep in ("09", "11"):
        pop, _ = rows[("HND", dep)]
        assert pop / hnd_pop[dep] > 4
        rate, flags = rates[("HND", dep)]
        assert "denominator_municipal_population_sum" in flags
        assert rate < 1000
    # a consistent department keeps its own population as denominator
    assert "denominator_municipal_population_sum" not in rates[("HND", "05")][1]
    assert not [k for k in rows if k[0] in ("GTM", "SLV") and "inconsistent_population" in rows[k][1]]


def test_indicator_catalogue_reports_coverage_per_country_and_pillar(client: TestClient) -> None:
    body = client.get("/v1/indicators").json()
    cov = body["coverage"]
    assert set(cov) == {"GTM", "HND", "SLV"}
    hnd_iv = cov["HND"]["IV"]
    assert "homicide_rate_2014" in hnd_iv["municipal_indicators"]
    assert hnd_iv["units_with_data"] == hnd_iv["units"] == 298 and hnd_iv["status"] == "data"
    # no violence-against-women data below country level in Honduras or El Salvador: said, not zero
    for iso in ("HND", "SLV"):
        assert cov[iso]["V"] == {
            "status": "no data",
            "municipal_indicators": [],
            "department_indicators": [],
            "units_with_data": 0,
            "units": cov[iso]["V"]["units"],
            "share": 0.0,
        }
    assert cov["GTM"]["V"]["status"] == "data"
    assert "dept_emigrants_per_1000" in cov["HND"]["migration"]["department_indicators"]
    assert "dept_emigrants_per_1000" not in cov["HND"]["migration"]["municipal_indicators"]
    pop = {i["code"]: i for i in body["items"]}["population_2014"]
    assert pop["period"] == "2014" and pop["publisher"].startswith("INE Honduras")
