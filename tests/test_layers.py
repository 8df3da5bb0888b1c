"""Indicator layers from the real mirror files: counts, spot values against the raw files, flags."""

from __future__ import annotations

from pathlib import Path

import openpyxl
import pandas as pd
import pytest
from sqlalchemy import Engine, text

from app.ingest.a2sit import read_template
from app.ingest.census import census_codes
from app.ingest.layers import load_catalogue
from app.settings import Settings
from app.sources import Resolver, load_manifest


def _mirror(settings: Settings, source_id: str, role: str) -> Path:
    source = load_manifest(settings.manifest)[source_id]
    return Resolver(settings).resolve(source)[source.file(role).name]


def _values(engine: Engine, code: str, set_id: str | None = None) -> dict[str, float]:
    sql = "SELECT pcode, value FROM observations WHERE indicator_code = :c"
    params: dict[str, str] = {"c": code}
    if set_id:
        sql += " AND boundary_set_id = :s"
        params["s"] = set_id
    with engine.connect() as conn:
        return dict(conn.execute(text(sql), params).all())


def _flags(engine: Engine, code: str) -> dict[str, list[str]]:
    with engine.connect() as conn:
        return dict(
            conn.execute(
                text("SELECT pcode, flags FROM observations WHERE indicator_code = :c"), {"c": code}
            ).all()
        )


def test_catalogue_maps_every_a2sit_column_with_a_reason(settings: Settings) -> None:
    catalogue = load_catalogue(settings.indicator_catalogue)
    template = read_template(_mirror(settings, "gtm-a2sit", "indicators"), source_id="gtm-a2sit")
    mapped = {i.column for i in catalogue.values() if i.source_id == "gtm-a2sit"}
    assert set(template.columns["code"]) == mapped
    assert all(i.reason for i in catalogue.values())
    assert {i.theme for i in catalogue.values()} == {"migration", "I", "II", "III", "IV", "V", "context"}


def test_a2sit_gtm_counts_and_spot_values(engine: Engine, settings: Settings) -> None:
    raw = pd.read_excel(_mirror(settings, "gtm-a2sit", "indicators"), sheet_name="Data", header=4)
    raw = raw.set_index("admin2Pcode")
    deportees = _values(engine, "deportee_rate")
    assert len(deportees) == 340
    assert deportees["GT0101"] == pytest.approx(raw.loc["GT0101", "Deportadas"])
    assert _values(engine, "crime_rate")["GT1802"] == pytest.approx(raw.loc["GT1802", "Delitos"])
    assert len(_values(engine, "violence_against_women_rate")) == 339  # one blank cell: no value, not zero
    with engine.connect() as conn:
        n_ind = conn.execute(text("SELECT count(*) FROM indicators WHERE source_id = 'gtm-a2sit'")).scalar()
    assert n_ind == 54 - 13  # 13 columns are empty in the template


def test_a2sit_values_stay_on_their_ine_codes(engine: Engine, settings: Settings) -> None:
    """The template labels GT0206 'Sanarate' (OCHA's name) but its values are Sansare's (INE 0206): its crime
    rate × Sansare's 2018 population is a whole number of crimes (12), the Master sheet of UNHCR's MVI agrees
    on every comparable indicator. Values stay on their P-code; only the label is OCHA's."""
    raw = pd.read_excel(_mirror(settings, "gtm-a2sit", "indicators"), sheet_name="Data", header=4)
    raw = raw.set_index("admin2Pcode")
    assert raw.loc["GT0206", "Name"] == "Sanarate"
    crime = _values(engine, "crime_rate")
    pop = _values(engine, "population_2018")
    assert crime["GT0206"] == pytest.approx(raw.loc["GT0206", "Delitos"])
    assert crime["GT0207"] == pytest.approx(raw.loc["GT0207", "Delitos"])
    assert crime["GT0206"] * pop["GT0206"] / 1e5 == pytest.approx(12, abs=1e-6)  # Sansare, 13,154 people
    assert crime["GT0207"] * pop["GT0207"] / 1e5 == pytest.approx(94, abs=1e-6)  # Sanarate, 39,444 people


def test_out_of_range_values_are_flagged_not_dropped(engine: Engine) -> None:
    gini = _values(engine, "gini")
    flags = _flags(engine, "gini")
    bad = {p for p, v in gini.items() if v > 1}
    assert bad and max(gini.values()) == pytest.approx(1.0519, abs=1e-3)
    assert all("out_of_range" in flags[p] for p in bad)
    assert all("out_of_range" not in flags[p] for p in gini if p not in bad)
    risk = _values(engine, "displacement_risk_rate")
    assert "out_of_range" in _flags(engine, "displacement_risk_rate")[max(risk, key=risk.get)]
    assert all("period_unstated" not in f for f in flags.values())  # dated 2014 by UNHCR's MVI metadata


def test_slv_census(engine: Engine, settings: Settings) -> None:
    raw = pd.read_csv(_mirror(settings, "slv-censo2024", "municipios"), dtype={"municdesc.x": str})
    pop = _values(engine, "population", "slv-2024-municipios")
    assert len(pop) == 44
    assert (
        sum(pop.values())
        == raw["poblacion_total"].sum() - raw.loc[raw["municdesc.x"] == "1501", "poblacion_total"].sum()
    )
    # census 0101 = Ahuachapán Centro (reform code 14), 0102 = Ahuachapán Norte (reform code 13)
    assert pop["SVM0114"] == 180913 and pop["SVM0113"] == 65290
    with engine.connect() as conn:
        centro = conn.execute(
            text("SELECT pcode FROM admin_units WHERE name = 'San Salvador Centro'")
        ).scalar()
    # the file labels its 0601 row 'Cuscatlán Norte': a shifted label; code 0601 is San Salvador Centro
    assert pop[centro] == 673319
    rate = _values(engine, "emigrants_per_1000")
    assert rate["SVM0114"] == pytest.approx(3340 / 180913 * 1000)
    share = _values(engine, "emigrants_insecurity_share")
    assert len(share) == 44 and all(0 <= v <= 100 for v in share.values())


def test_slv_census_codes_are_alphabetical_within_department() -> None:
    reform = pd.DataFrame(
        {
            "dep_code": ["01", "01", "01", "01"],
            "mun_code": ["13", "13", "14", "15"],
            "mun_name": ["Ahuachapan Norte", "Ahuachapan Norte", "Ahuachapan Centro", "Ahuachapán Sur"],
            "distrito": ["a", "b", "c", "d"],
            "dep_name": ["Ahuachapán"] * 4,
        }
    )
    codes = census_codes(reform).set_index("census_code")["mun_code"].to_dict()
    assert codes == {"0101": "14", "0102": "13", "0103": "15"}


def test_hnd_emr_survey(engine: Engine, settings: Settings) -> None:
    raw = pd.read_csv(_mirror(settings, "hnd-emr2023", "emigration"), dtype={"munic": str})
    raw = raw[raw["munic"].notna() & (raw["munic"] != "NA")]
    expected = raw.groupby(raw["munic"].str.zfill(4))["emigrants"].sum()
    values = _values(engine, "emigrants_emr")
    assert len(values) == 189 == len(expected)
    assert values["HN0101"] == pytest.approx(expected["0101"])
    flags = _flags(engine, "emigrants_emr")["HN0101"]
    assert set(flags) == {"survey_not_representative_by_municipio", "no_population_denominator"}


def test_department_census_level_one(engine: Engine) -> None:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT o.boundary_set_id, o.pcode, u.level, o.period FROM observations o JOIN admin_units u "
                "ON u.boundary_set_id = o.boundary_set_id AND u.pcode = o.pcode "
                "WHERE o.indicator_code = 'dept_emigrants_per_1000'"
            )
        ).all()
    assert {r.level for r in rows} == {1}
    per_set = pd.Series([r.boundary_set_id for r in rows]).value_counts().to_dict()
    assert per_set == {
        "gtm-municipios": 22,
        "hnd-municipios": 18,
        "slv-2021-distritos": 14,
        "slv-2024-municipios": 14,
    }
    assert {r.period for r in rows if r.pcode == "GT01"} == {"2018"}


def test_layer_reload_is_unchanged(fresh: tuple[Engine, Settings]) -> None:
    from app.ingest.run import load_source
    from tests.conftest import snapshot

    engine, settings = fresh
    with engine.connect() as conn:
        before = conn.execute(
            text("SELECT id, indicator_code, pcode, value FROM observations ORDER BY id")
        ).all()
    for sid in ("gtm-a2sit", "slv-censo2024", "hnd-emr2023", "department-census"):
        assert load_source(engine, settings, sid).status == "unchanged"
    with engine.connect() as conn:
        after = conn.execute(
            text("SELECT id, indicator_code, pcode, value FROM observations ORDER BY id")
        ).all()
    assert after == before
    assert snapshot(engine)["units"]


def test_truncated_xlsx_template(fresh: tuple[Engine, Settings], tmp_path: Path) -> None:
    from app.errors import DataError
    from app.ingest.run import load_source
    from tests.test_ingest_failures import _private

    engine, settings = fresh
    with engine.connect() as conn:
        before = conn.execute(text("SELECT count(*), sum(value) FROM observations")).one()
    original = _mirror(settings, "gtm-a2sit", "indicators").read_bytes()
    s, sources = _private(
        settings,
        tmp_path,
        "gtm-a2sit",
        {"A2SIT_data_input_template_GTM.xlsx": original[: len(original) // 2]},
    )
    with pytest.raises(DataError, match="not a readable XLSX workbook"):
        load_source(engine, s, "gtm-a2sit", sources=sources, force=True)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*), sum(value) FROM observations")).one() == before


def test_a2sit_text_in_numeric_column(fresh: tuple[Engine, Settings], tmp_path: Path) -> None:
    from app.errors import DataError
    from app.ingest.run import load_source
    from tests.test_ingest_failures import _private

    engine, settings = fresh
    wb = openpyxl.load_workbook(_mirror(settings, "gtm-a2sit", "indicators"))
    wb["Data"]["L6"] = "n/a"  # IntraFamViolencia of GT0101
    bad = tmp_path / "bad.xlsx"
    wb.save(bad)
    s, sources = _private(
        settings, tmp_path, "gtm-a2sit", {"A2SIT_data_input_template_GTM.xlsx": bad.read_bytes()}
    )
    with pytest.raises(DataError) as err:
        load_source(engine, s, "gtm-a2sit", sources=sources, force=True)
    assert any("IntraFamViolencia row 6: 'n/a' is not a number" in e for e in err.value.errors)
    assert _values(engine, "domestic_violence_rate")["GT0101"] != 0
