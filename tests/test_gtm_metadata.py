"""The A2SIT Guatemala template dated and attributed by UNHCR Guatemala's MVI metadata (gtm-mvi-unhcr), and its
values checked against the MVI Master sheet."""

from __future__ import annotations

import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import openpyxl
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from app.errors import DataError
from app.ingest.a2sit import (
    GTM_METADATA_LINKS,
    UNCHECKED,
    GtmMetadata,
    check_against_master,
    numeric_values,
    prepare_a2sit,
    read_gtm_metadata,
    read_template,
)
from app.ingest.common import no_progress
from app.ingest.layers import ABSENT_ASSUMED_ZERO, PERIOD_UNSTATED, LayerReport, load_catalogue
from app.ingest.run import load_source
from app.settings import Settings
from app.sources import Resolver, Source, load_manifest
from app.text import name_key
from tests.test_ingest_failures import _private as private_mirror

Fresh = tuple[Engine, Settings]
META = "Master_indicators_clean.xlsx"


def _source(settings: Settings, source_id: str) -> tuple[Source, dict[str, Path]]:
    source = load_manifest(settings.manifest)[source_id]
    return source, Resolver(settings).resolve(source)


def _metadata(settings: Settings) -> GtmMetadata:
    return read_gtm_metadata(*_source(settings, "gtm-mvi-unhcr"))


def _template_values(settings: Settings) -> tuple[pd.DataFrame, dict[str, pd.Series]]:
    source, paths = _source(settings, "gtm-a2sit")
    template = read_template(paths[source.first("xlsx").name], source_id=source.id)
    values = {}
    for code in template.columns["code"]:
        series, bad = numeric_values(template.data, code)
        assert not bad
        if series.notna().any():  # the loader skips the 13 empty columns
            values[code] = pd.Series(series.to_numpy(), index=template.data["pcode"].to_numpy())
    return template.data, values


def _stored(engine: Engine) -> dict[str, Any]:
    """What the A2SIT layer stored: its indicators, observations and the files recorded."""
    with engine.connect() as conn:
        return {
            "indicators": conn.execute(
                text(
                    "SELECT code, period, publisher FROM indicators WHERE source_id = 'gtm-a2sit' ORDER BY 1"
                )
            ).all(),
            "obs": conn.execute(
                text(
                    "SELECT indicator_code, pcode, period, value, flags FROM observations "
                    "WHERE source_id = 'gtm-a2sit' ORDER BY 1, 2, 3"
                )
            ).all(),
            "files": conn.execute(
                text("SELECT source_id, name, sha256 FROM source_files ORDER BY 1, 2")
            ).all(),
        }


def _private(
    settings: Settings, tmp_path: Path, mutate: dict[str, bytes]
) -> tuple[Settings, dict[str, Source]]:
    """Settings whose mirror holds every source, with files of gtm-mvi-unhcr replaced (sha256 re-pinned)."""
    return private_mirror(settings, tmp_path, "gtm-mvi-unhcr", dict(mutate))


# --- the pinned mapping ---------------------------------------------------------------------------------


def test_every_template_column_is_linked_to_its_metadata_row(settings: Settings) -> None:
    meta = _metadata(settings)
    data, _ = _template_values(settings)
    links = {link.column: link for link in GTM_METADATA_LINKS}
    assert set(links) == set(data.columns) - {"pcode", "name"}  # all 54 columns, the 13 empty ones too
    assert len({link.code for link in GTM_METADATA_LINKS}) == 54  # one metadata row each
    for link in GTM_METADATA_LINKS:
        assert name_key(meta.rows.at[link.code, "indicator"]) == name_key(link.indicator), link
    # the Master sheet's code row is wrong for four columns: they are found by name
    assert meta.master_codes[name_key("Tasa de Pobreza (% Población)")] == "S.E.3"
    assert meta.master_codes[name_key("Tasa de inversión pública")] == "C.I.7"


def test_metadata_known_answers(settings: Settings) -> None:
    rows = _metadata(settings).rows
    assert len(rows) == 60
    assert (rows.at["A.M.2", "year"], rows.at["A.V.1", "year"], rows.at["A.V.2", "year"]) == (
        "2021",
        "2020",
        "2021",
    )
    assert rows.at["A.M.2", "source"].startswith("IGM. En FUNDESA. Índice de Competitividad Local 2022")
    assert rows.at["A.V.1", "source"].startswith("Policía Nacional Civil")
    assert "Observatorio de la Mujer (MP)" in rows.at["A.V.2", "source"]
    assert (rows.at["A.D.1", "year"], rows.at["A.M.4", "year"]) == ("2017", "2018")


def test_values_agree_with_the_master_sheet_but_one(settings: Settings) -> None:
    """39 indicators recomputed from the Master sheet (and the 2018 population) for every municipio, on the
    template's own P-codes: 13,171 values agree to 1e-6 but one (the template caps a dependency ratio at 1)."""
    meta = _metadata(settings)
    _, values = _template_values(settings)
    check = check_against_master(values, meta)
    s = check.summary.set_index("column")
    assert len(s) == 39
    assert set(s.index) == {
        link.column for link in GTM_METADATA_LINKS if link.compare != UNCHECKED and link.column in values
    }
    assert int(s["compared"].sum()) == 13171
    assert check.disagreements[["column", "pcode"]].to_dict("records") == [
        {"column": "Dependencia", "pcode": "GT1313"}
    ]
    worst = check.disagreements.iloc[0]
    assert (worst["template"], round(worst["master"], 4)) == (1.0, 1.0165)
    # zeros the template put where the publisher's table is blank
    assert check.template_only["Delitos"] == ["GT0708", "GT1208", "GT1331", "GT1407"]
    assert len(check.template_only["IntraFamViolencia"]) == 6
    assert all(values["Delitos"][p] == 0 for p in check.template_only["Delitos"])
    # the displacement-risk inputs are not counts: the template's per-100,000 rate divides a rate again
    assert check.not_counts == ["RisDespl"]


def test_a_wrong_link_is_refuted(settings: Settings) -> None:
    """A link to the wrong Master column disagrees almost everywhere: it would be refuted, not applied."""
    meta = _metadata(settings)
    _, values = _template_values(settings)
    wrong = (replace(GTM_METADATA_LINKS[3], column="Delitos"),)  # deportee rate (A.M.2) against crimes
    check = check_against_master(values, meta, wrong)
    assert check.summary.iloc[0]["disagree"] > 0.9 * check.summary.iloc[0]["compared"]


# --- the loaded layer -----------------------------------------------------------------------------------


def test_periods_and_publishers_visible_in_the_api(client: TestClient) -> None:
    items = {i["code"]: i for i in client.get("/v1/indicators").json()["items"]}
    expected = {
        "deportee_rate": ("2021", "IGM. En FUNDESA"),
        "crime_rate": ("2020", "Policía Nacional Civil"),
        "violence_against_women_rate": ("2021", "Observatorio de la Mujer (MP)"),
        "domestic_violence_rate": ("2021", "INE. Base de datos VIF 2021"),
        "disaster_exposure_index": ("2017", "INFORM 2017"),
        "displacement_risk_rate": ("2018", "INE. Censo de Población y Vivienda"),
        "poverty_rate": ("2014", "INE. En FUNDESA"),
        "municipal_admin_management": ("2021", "SEGEPLAN - Ránking de Gestión"),
        "gdp_per_capita": ("2021", "FUNDESA. Índice de Competitividad Local 2022"),
    }
    for code, (period, publisher) in expected.items():
        assert items[code]["period"] == period, code
        assert items[code]["publisher"].startswith(publisher), (code, items[code]["publisher"])
    # the metadata gives public investment a year but no source
    assert (
        items["public_investment_per_capita"]["period"],
        items["public_investment_per_capita"]["publisher"],
    ) == (
        "2021",
        None,
    )


def test_every_value_carries_its_vintage(engine: Engine) -> None:
    with engine.connect() as conn:
        periods = conn.execute(
            text(
                "SELECT i.code, i.period, array_agg(DISTINCT o.period) FROM indicators i "
                "JOIN observations o ON o.indicator_code = i.code WHERE i.source_id = 'gtm-a2sit' GROUP BY 1, 2"
            )
        ).all()
        unstated = conn.execute(
            text("SELECT count(*) FROM observations WHERE source_id = 'gtm-a2sit' AND :f = ANY(flags)"),
            {"f": PERIOD_UNSTATED},
        ).scalar()
    assert len(periods) == 41
    assert all(obs == [period] and period != "unstated" for _, period, obs in periods)
    assert unstated == 0


def test_sansare_and_sanarate_values_follow_the_ine_code(engine: Engine, settings: Settings) -> None:
    """The template labels GT0206 'Sanarate' (OCHA's name) but its GT0206 row holds Sansare's data: its crime
    rate × Sansare's 2018 population (13,154) is a whole number of crimes, 12 = the MVI Master's GT0206."""
    _, values = _template_values(settings)
    with engine.connect() as conn:
        crime: dict[str, float] = dict(
            conn.execute(
                text("SELECT pcode, value FROM observations WHERE indicator_code = 'crime_rate'")
            ).all()
        )
    assert crime["GT0206"] == pytest.approx(values["Delitos"]["GT0206"])
    assert crime["GT0206"] * 13154 / 100_000 == pytest.approx(12)
    assert crime["GT0207"] * 39444 / 100_000 == pytest.approx(94)  # Sanarate: 94 crimes in 2020


def test_load_report_notes_and_flags(fresh: Fresh) -> None:
    engine, settings = fresh
    report = load_source(engine, settings, "gtm-a2sit", force=True)
    assert isinstance(report, LayerReport)
    notes = "\n".join(report.notes)
    assert "41 indicators given their year and publisher" not in notes  # PIB was already dated 2021
    assert "40 indicators given their year and publisher" in notes
    assert "13171 values compared, 1 disagree" in notes
    assert "Dependencia (S.T.4): 1 of 340 disagree, e.g. GT1313 template 1 vs Master 1.0165" in notes
    assert "GT0206 'Sanarate' kept on GT0206, not re-keyed to GT0207" in notes
    assert "A.M.3 '# de NNA no acompañados deportados'" in notes
    assert report.flagged["crime_rate"][ABSENT_ASSUMED_ZERO] == 4
    assert report.flagged["domestic_violence_rate"][ABSENT_ASSUMED_ZERO] == 6
    assert not report.warnings


def test_without_the_metadata_behaviour_is_as_before(fresh: Fresh) -> None:
    engine, settings = fresh
    source, _ = _source(settings, "gtm-a2sit")
    catalogue = load_catalogue(settings.indicator_catalogue)
    with engine.connect() as conn:
        layer = prepare_a2sit(conn, source, Resolver(settings), catalogue, no_progress)
    assert [s.id for s, _ in layer.used] == ["gtm-a2sit"]
    periods = {i.code: i.period for i in layer.indicators}
    assert periods["deportee_rate"] == "unstated" and periods["gdp_per_capita"] == "2021"
    obs = layer.observations
    assert all(PERIOD_UNSTATED in f for f in obs.loc[obs["indicator_code"] == "deportee_rate", "flags"])
    assert any("GT0206 'Sanarate' re-keyed to GT0207" in n for n in layer.notes)


def test_idempotent_and_a_changed_metadata_file_reloads(fresh: Fresh, tmp_path: Path) -> None:
    engine, settings = fresh
    assert load_source(engine, settings, "gtm-a2sit").status == "unchanged"
    before = _stored(engine)
    # the same workbook with one more (ignored) zip member: another sha256, the same content
    assert settings.data_mirror is not None
    original = settings.data_mirror / "indicators" / "gtm-mvi-unhcr" / META
    copy = tmp_path / META
    with zipfile.ZipFile(original) as src, zipfile.ZipFile(copy, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            dst.writestr(item, src.read(item.filename))
        dst.writestr("customXml/raices-test.txt", "touched")
    private, sources = _private(settings, tmp_path, {META: copy.read_bytes()})
    report = load_source(engine, private, "gtm-a2sit", sources=sources)
    assert report.status == "loaded"
    after = _stored(engine)
    assert after["indicators"] == before["indicators"] and after["obs"] == before["obs"]
    assert after["files"] != before["files"]  # the new metadata file is recorded


def test_damaged_metadata_is_a_clear_error_and_changes_nothing(fresh: Fresh, tmp_path: Path) -> None:
    engine, settings = fresh
    before = _stored(engine)
    assert settings.data_mirror is not None
    raw = (settings.data_mirror / "indicators" / "gtm-mvi-unhcr" / META).read_bytes()
    private, sources = _private(settings, tmp_path, {META: raw[: len(raw) // 2]})
    with pytest.raises(DataError, match=rf"Source 'gtm-mvi-unhcr', file '{META}' is not a readable XLSX"):
        load_source(engine, private, "gtm-a2sit", sources=sources, force=True)
    assert _stored(engine) == before


def test_metadata_without_a_year_column_is_refused(settings: Settings, tmp_path: Path) -> None:
    source, paths = _source(settings, "gtm-mvi-unhcr")
    wb = openpyxl.load_workbook(paths[META])
    ws = wb["Metadata"]
    for cell in ws[1]:
        if cell.value == "Year":
            cell.value = "Año"
    damaged = tmp_path / META
    wb.save(damaged)
    with pytest.raises(DataError, match=r"sheet 'Metadata': missing columns \['Year'\] in row 1"):
        read_gtm_metadata(source, {**paths, META: damaged})
