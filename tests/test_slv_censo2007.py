"""El Salvador census 2007 (DIGESTYC): parsing, matching the 262 distritos, known answers, failures, and the
derivation of the 2007 values onto the 44 municipios of 2024."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from app.errors import DataError
from app.ingest.run import load_source
from app.ingest.slv_censo2007 import (
    INDICATOR_COLUMNS,
    NATIONAL_POPULATION_2007,
    POPULATION_CODE,
    SOURCE_ID,
    _distritos,
    match_distritos,
    read_census_table,
)
from app.settings import Settings
from app.sources import Source, load_manifest, sha256_of
from tests.conftest import snapshot, stored_observations
from tests.test_layers import _values

Fresh = tuple[Engine, Settings]
FILE = "07_Indicadores_Sociodemograficos.xlsx"
CODES = [*INDICATOR_COLUMNS, POPULATION_CODE]


def _mirror_file(settings: Settings) -> Path:
    assert settings.data_mirror is not None
    return settings.data_mirror / "indicators" / SOURCE_ID / FILE


def _damaged(settings: Settings, tmp_path: Path, content: bytes) -> tuple[Settings, dict[str, Source]]:
    """Settings whose mirror holds a damaged copy of the workbook, with the manifest's sha256 patched."""
    folder = tmp_path / "mirror" / "indicators" / SOURCE_ID
    folder.mkdir(parents=True)
    (folder / FILE).write_bytes(content)
    sources = load_manifest(settings.manifest)
    src = sources[SOURCE_ID]
    sources[SOURCE_ID] = replace(
        src, files=tuple(replace(f, sha256=sha256_of(folder / FILE), url="") for f in src.files)
    )
    private = settings.model_copy(
        update={"data_mirror": tmp_path / "mirror", "data_cache": tmp_path / "cache"}
    )
    return private, sources


def _edited_workbook(settings: Settings, tmp_path: Path, edit: str) -> bytes:
    """A copy of the real workbook with one change made through openpyxl."""
    import openpyxl

    wb = openpyxl.load_workbook(_mirror_file(settings))
    ws = wb["Municipios"]
    if edit == "header":
        ws["K1"] = "Electricidad"  # two columns swapped in the header
        ws["L1"] = "Agua Potable"
    elif edit == "truncated":
        ws.delete_rows(200, ws.max_row)  # the table cut short: no footnote, municipios missing
    elif edit == "unmatched":
        ws["A10"] = "Guaymangox"  # Guaymango renamed: matches no distrito
    elif edit == "text":
        ws["L10"] = "n.d."
    out = tmp_path / f"{edit}.xlsx"
    wb.save(out)
    return out.read_bytes()


# --- known answers -------------------------------------------------------------------------------


def test_national_row_is_parsed_and_pinned(settings: Settings) -> None:
    table = read_census_table(_mirror_file(settings))
    nat = table.national
    assert nat["drinking_water"] == pytest.approx(77.6, abs=0.05)
    assert nat["electricity"] == pytest.approx(88.4, abs=0.05)
    assert nat["no_sanitation"] == pytest.approx(5.7, abs=0.05)
    assert nat["dirt_floor"] == pytest.approx(18.9, abs=0.05)
    assert nat["illiteracy"] == pytest.approx(16.0, abs=0.05)
    assert nat["infant_mortality"] == pytest.approx(24.8)
    assert nat["density"] == 273
    assert [c for c, _ in table.departments] == [f"{i:02d}" for i in range(1, 15)]
    assert table.departments[0] == ("01", "AHUACHAPÁN") and table.departments[-1] == ("14", "LA UNIÓN")
    assert len(table.municipios) == 262
    guaymango = table.municipios.set_index("name").loc["Guaymango"]
    assert guaymango["dep_code"] == "01"
    assert guaymango["electricity"] == pytest.approx(42.7, abs=0.05)


def test_national_row_is_not_stored(engine: Engine) -> None:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT indicator_code, boundary_set_id, count(*) AS n, min(period) AS p0, max(period) AS p1 "
                "FROM observations WHERE indicator_code = ANY(:c) GROUP BY 1, 2"
            ),
            {"c": CODES},
        ).all()
    assert {r.indicator_code for r in rows} == set(CODES)
    # one value per distrito, nothing else (no national or department row), vintage 2007 on every value
    assert all(r.boundary_set_id == "slv-2021-distritos" and r.n == 262 for r in rows)
    assert all(r.p0 == r.p1 == "2007" for r in rows)
    # the national drinking-water deprivation (22.4 %) is no stored value
    assert not any(
        v == pytest.approx(100 - 77.59606394664715)
        for v in _values(engine, "no_drinking_water_pct_2007").values()
    )


def test_all_262_matched_with_pinned_aliases(engine: Engine, settings: Settings) -> None:
    table = read_census_table(_mirror_file(settings))
    with engine.connect() as conn:
        units = _distritos(conn)
    pcodes, errors, aliased = match_distritos(table.municipios, units)
    assert errors == []
    assert pcodes.notna().sum() == 262 and pcodes.nunique() == 262
    assert len(aliased) == 6
    by_name = dict(zip(table.municipios["name"], pcodes, strict=True))
    # 2007 names that differ from COD-AB: Santa Tecla is Nueva San Salvador, San Juan Opico is Opico
    assert by_name["Santa Tecla"] == "SV0510" and by_name["San Juán Opico"] == "SV0512"
    # Chalchuapa comes before Coatepeque in the table (alphabetical) but is DIGESTYC 0203: matched by name
    assert by_name["Chalchuapa"] == "SV1202" and by_name["Coatepeque"] == "SV1203"


def test_guaymango_known_answers(engine: Engine) -> None:
    # Guaymango (DIGESTYC 0106, SV0106): electricity 42.7 %, dirt floor 65.6 %, illiteracy 33.7 %
    assert _values(engine, "no_electricity_pct_2007")["SV0106"] == pytest.approx(100 - 42.7, abs=0.05)
    assert _values(engine, "dirt_floor_pct_2007")["SV0106"] == pytest.approx(65.6, abs=0.05)
    assert _values(engine, "illiteracy_pct_2007")["SV0106"] == pytest.approx(33.7, abs=0.05)
    assert _values(engine, "infant_mortality_2007")["SV0106"] == 33
    # coverage columns are turned into deprivations, deprivation columns are kept as published
    assert _values(engine, "no_drinking_water_pct_2007")["SV0106"] == pytest.approx(100 - 64.57, abs=0.01)
    assert _values(engine, "no_sanitation_pct_2007")["SV0106"] == pytest.approx(18.02, abs=0.01)
    assert _values(engine, "school_attendance_pct_2007")["SV0106"] == pytest.approx(88.0, abs=0.01)


def test_population_2007_reconstruction(engine: Engine) -> None:
    """population_2007 = density × COD-AB area. The COD-AB land area (≈20,149 km²) is 4.2 % below DIGESTYC's
    21,041 km², and distrito boundaries differ both ways, so the national sum cannot be expected closer to the
    census total than a few per cent: 5 % is the tolerance (a wrong column or unit would be off by far more).
    The measured sum, 5,888,070 (+2.5 %), is pinned to catch a silent change of areas or matching."""
    pop = _values(engine, POPULATION_CODE)
    total = sum(pop.values())
    assert abs(total / NATIONAL_POPULATION_2007 - 1) < 0.05
    assert total == pytest.approx(5_888_070, abs=2_000)
    with engine.connect() as conn:
        area = conn.execute(
            text(
                "SELECT area_km2 FROM admin_units WHERE boundary_set_id = 'slv-2021-distritos' AND pcode = 'SV0106'"
            )
        ).scalar_one()
    assert pop["SV0106"] == pytest.approx(316.0717250539598 * area)
    assert all(v > 0 for v in pop.values())


# --- the 44 municipios of 2024 through the crosswalk ----------------------------------------------


def test_2007_value_reaches_a_2024_municipio(client: TestClient, engine: Engine) -> None:
    body = client.get("/v1/indicators/no_electricity_pct_2007/values", params={"country": "SLV"}).json()
    items = {i["pcode"]: i for i in body["items"]}
    assert len(items) == 44 and all(i["boundary_set"] == "slv-2024-municipios" for i in items.values())
    sur = items["SVM0115"]  # Ahuachapán Sur: Guaymango, Jujutla, San Francisco Menéndez, San Pedro Puxtla
    assert sur["period"] == "2007"
    assert "derived_through_crosswalk" in sur["flags"]
    # weighted by population_2007 on the distritos, not by area
    assert "area_weighted" not in sur["flags"]
    with engine.connect() as conn:
        parts = pd.DataFrame(
            conn.execute(
                text("""
                SELECT x.from_pcode, x.share_of_from, v.value, p.value AS pop
                FROM crosswalk x
                JOIN observations v ON v.pcode = x.from_pcode AND v.indicator_code = 'no_electricity_pct_2007'
                JOIN observations p ON p.pcode = x.from_pcode AND p.indicator_code = 'population_2007'
                WHERE x.from_set = 'slv-2021-distritos' AND x.to_pcode = 'SVM0115'
            """)
            ).all()
        )
    assert set(parts["from_pcode"]) == {"SV0106", "SV0107", "SV0108", "SV0110"}
    w = parts["pop"] * parts["share_of_from"]
    assert sur["value"] == pytest.approx(float((parts["value"] * w).sum() / w.sum()))
    assert sur["value"] != pytest.approx(float(parts["value"].mean()), abs=0.01)


# --- failures: a clear error and nothing changed --------------------------------------------------


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncated_bytes", r"not a readable XLSX workbook \(truncated or corrupt\?\)"),
        ("header", r"not the expected layout.*should be the header"),
        ("truncated", r"not the source footnote .* truncated"),
        ("text", r"row 10 \('Guaymango'\), column 'Electricidad': expected a number, found 'n\.d\.'"),
        ("unmatched", r"failed validation.*1 of 262 municipios match no distrito.*row 10 'Guaymangox'"),
    ],
)
def test_damaged_workbook_stores_nothing(fresh: Fresh, tmp_path: Path, damage: str, message: str) -> None:
    engine, settings = fresh
    if damage == "truncated_bytes":
        raw = _mirror_file(settings).read_bytes()
        content = raw[: len(raw) // 2]
    else:
        content = _edited_workbook(settings, tmp_path, damage)
    before, stored = snapshot(engine), stored_observations(engine, CODES)
    private, sources = _damaged(settings, tmp_path, content)
    with pytest.raises(DataError, match=message) as err:
        load_source(engine, private, SOURCE_ID, sources=sources, force=True)
    assert SOURCE_ID in str(err.value)
    assert snapshot(engine) == before and stored_observations(engine, CODES) == stored


def test_reload_is_unchanged(fresh: Fresh) -> None:
    engine, settings = fresh
    stored = stored_observations(engine, CODES)
    report = load_source(engine, settings, SOURCE_ID)
    assert report.status == "unchanged"
    forced = load_source(engine, settings, SOURCE_ID, force=True)
    assert forced.status == "loaded" and forced.values == {c: 262 for c in CODES}
    assert stored_observations(engine, CODES) == stored
    assert any("national sum 5,888,070" in n for n in forced.notes)
