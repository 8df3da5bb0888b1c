"""El Salvador's Dry Corridor (MAG): the RDS files read without R, the 104 distritos, the municipio shares,
the carrier's 2024 municipios against the crosswalk, failures and idempotence."""

from __future__ import annotations

import gzip
from dataclasses import replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from app.errors import DataError
from app.ingest.dry_corridor import (
    FLAG_CODE,
    PERIOD,
    SHARE_CODE,
    SOURCE_ID,
    _distritos,
    check_against_distritos,
    read_rds_table,
)
from app.ingest.run import load_source
from app.settings import Settings
from app.sources import Source, load_manifest, sha256_of
from app.text import name_key
from tests.conftest import snapshot, stored_observations
from tests.test_layers import _values

Fresh = tuple[Engine, Settings]
CODES = [FLAG_CODE, SHARE_CODE]
BY_DEPARTMENT = {
    "usulutan": 23,
    "san miguel": 19,
    "la union": 16,
    "morazan": 15,
    "ahuachapan": 9,
    "santa ana": 8,
    "cabanas": 5,
    "san vicente": 5,
    "la paz": 2,
    "sonsonate": 1,
    "chalatenango": 1,
}


def _mirror(settings: Settings, name: str) -> Path:
    assert settings.data_mirror is not None
    return settings.data_mirror / "hazards" / SOURCE_ID / name


def _damaged(
    settings: Settings, tmp_path: Path, name: str, content: bytes
) -> tuple[Settings, dict[str, Source]]:
    """Settings whose mirror holds this source with one file replaced, the manifest's sha256 patched."""
    folder = tmp_path / "mirror" / "hazards" / SOURCE_ID
    folder.mkdir(parents=True)
    sources = load_manifest(settings.manifest)
    src = sources[SOURCE_ID]
    files = []
    for f in src.files:
        dest = folder / f.name
        dest.write_bytes(content if f.name == name else _mirror(settings, f.name).read_bytes())
        files.append(replace(f, sha256=sha256_of(dest), url=""))
    sources[SOURCE_ID] = replace(src, files=tuple(files))
    private = settings.model_copy(
        update={"data_mirror": tmp_path / "mirror", "data_cache": tmp_path / "cache"}
    )
    return private, sources


# --- known answers -------------------------------------------------------------------------------


def test_rds_files_read_without_r(settings: Settings) -> None:
    corridor = read_rds_table(_mirror(settings, "corredor_seco.rds"))
    distritos = read_rds_table(_mirror(settings, "distritos.rds"))
    assert len(corridor) == 104 and len(distritos) == 262
    assert corridor["COD_MUN4"].is_unique and set(corridor["COD_MUN4"]) <= set(distritos["COD_MUN4"])
    first = corridor.iloc[0]
    assert (first["COD_MUN4"], first["MPIO"], first["mpio"]) == ("0101", "AHUACHAPAN", "Ahuachapán Centro")
    assert corridor["mpio"].nunique() == 21


def test_104_distritos_by_department(engine: Engine) -> None:
    flag = _values(engine, FLAG_CODE)
    assert len(flag) == 262 and set(flag.values()) == {0.0, 1.0}
    assert sum(flag.values()) == 104
    with engine.connect() as conn:
        rows = conn.execute(
            text("""
            SELECT d.name, count(*) AS n FROM observations o
            JOIN admin_units u ON u.boundary_set_id = o.boundary_set_id AND u.pcode = o.pcode
            JOIN admin_units d ON d.boundary_set_id = u.boundary_set_id AND d.pcode = u.parent_pcode
            WHERE o.indicator_code = :c AND o.value = 1 GROUP BY d.name
        """),
            {"c": FLAG_CODE},
        ).all()
        periods = conn.execute(
            text("SELECT DISTINCT period, flags FROM observations WHERE indicator_code = ANY(:c)"),
            {"c": CODES},
        ).all()
    assert {name_key(r.name): r.n for r in rows} == BY_DEPARTMENT
    assert [(p.period, p.flags) for p in periods] == [(PERIOD, ["period_unstated"])]
    # Guaymango (0106) is in the corridor, Apaneca (0102) is not
    assert flag["SV0106"] == 1 and flag["SV0102"] == 0


def test_municipio_area_shares(engine: Engine) -> None:
    share = _values(engine, SHARE_CODE)
    assert len(share) == 44 and all(0 <= v <= 1 for v in share.values())
    assert sum(v > 0 for v in share.values()) == 21
    assert sum(v == pytest.approx(1) for v in share.values()) == 11
    assert share["SVM0113"] == pytest.approx(1)  # Ahuachapán Norte: all its distritos
    assert share["SVM0623"] == 0  # San Salvador Centro: none
    with engine.connect() as conn:
        parts = conn.execute(
            text("""
            SELECT u.area_km2 * x.share_of_from AS a, o.value AS inside
            FROM crosswalk x
            JOIN admin_units u ON u.boundary_set_id = x.from_set AND u.pcode = x.from_pcode
            JOIN observations o ON o.pcode = u.pcode AND o.indicator_code = :c
            WHERE x.to_pcode = 'SVM0825'
        """),
            {"c": FLAG_CODE},
        ).all()
    # La Paz Este: Zacatecoluca (in) with San Juan Nonualco and San Rafael Obrajuelo (out)
    assert len(parts) == 3 and sum(p.inside for p in parts) == 1
    expected = sum(p.a * p.inside for p in parts) / sum(p.a for p in parts)
    assert share["SVM0825"] == pytest.approx(expected)
    assert 0.7 < share["SVM0825"] < 0.8


def test_carrier_municipios_against_the_crosswalk(engine: Engine, settings: Settings) -> None:
    corridor = read_rds_table(_mirror(settings, "corredor_seco.rds"))
    distritos = read_rds_table(_mirror(settings, "distritos.rds"))
    with engine.connect() as conn:
        units = _distritos(conn)
    errors, notes = check_against_distritos(corridor, distritos, units)
    assert errors == []
    # two distritos of La Paz are in La Paz Centro for the MAG files, in La Paz Este for the reform table
    assert len(notes) == 1 and notes[0].startswith("2 distritos")
    assert "0810 San Juan Nonualco" in notes[0] and "0817 San Rafael Obrajuelo" in notes[0]


def test_shifted_codes_are_refused(engine: Engine, settings: Settings) -> None:
    distritos = read_rds_table(_mirror(settings, "distritos.rds"))
    shifted = distritos.copy()
    shifted.loc[shifted["COD_MUN4"] == "0102", "MPIO"] = "ATIQUIZAYA"
    with engine.connect() as conn:
        units = _distritos(conn)
    errors, _ = check_against_distritos(distritos.iloc[:0], shifted, units)
    assert any("0102 'ATIQUIZAYA' is 'Apaneca'" in e for e in errors)


def test_derived_onto_the_2024_municipios(client: TestClient) -> None:
    body = client.get(f"/v1/indicators/{FLAG_CODE}/values", params={"country": "SLV"}).json()
    items = {i["pcode"]: i for i in body["items"]}
    assert len(items) == 44
    norte = items["SVM0113"]
    assert norte["value"] == pytest.approx(1) and norte["period"] == PERIOD
    assert {"derived_through_crosswalk", "period_unstated"} <= set(norte["flags"])
    direct = client.get(f"/v1/indicators/{SHARE_CODE}/values", params={"country": "SLV"}).json()["items"]
    assert len(direct) == 44 and all("derived_through_crosswalk" not in i["flags"] for i in direct)


# --- failures and idempotence ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "damage", "message"),
    [
        (
            "corredor_seco.rds",
            "truncated",
            r"'corredor_seco\.rds' cannot be read as an R data file \(RDS\): EOFError",
        ),
        ("distritos.rds", "truncated", r"'distritos\.rds' cannot be read as an R data file"),
        ("corredor_seco.rds", "csv", r"cannot be read as an R data file.*Unknown file format"),
        ("corredor_seco.rds", "short_stream", r"cannot be read as an R data file .*truncated or corrupt"),
    ],
)
def test_damaged_rds_stores_nothing(
    fresh: Fresh, tmp_path: Path, name: str, damage: str, message: str
) -> None:
    engine, settings = fresh
    raw = _mirror(settings, name).read_bytes()
    if damage == "truncated":
        content = raw[: len(raw) // 2]
    elif damage == "csv":
        content = b"COD_MUN4,MPIO\n0101,AHUACHAPAN\n"
    else:  # a complete gzip stream around a truncated R serialisation
        inner = gzip.decompress(raw)
        content = gzip.compress(inner[: len(inner) // 3])
    before, stored = snapshot(engine), stored_observations(engine, CODES)
    private, sources = _damaged(settings, tmp_path, name, content)
    with pytest.raises(DataError, match=message) as err:
        load_source(engine, private, SOURCE_ID, sources=sources, force=True)
    assert SOURCE_ID in str(err.value)
    assert snapshot(engine) == before and stored_observations(engine, CODES) == stored


def test_reload_is_unchanged(fresh: Fresh) -> None:
    engine, settings = fresh
    stored = stored_observations(engine, CODES)
    assert load_source(engine, settings, SOURCE_ID).status == "unchanged"
    forced = load_source(engine, settings, SOURCE_ID, force=True)
    assert forced.status == "loaded" and forced.values == {FLAG_CODE: 262, SHARE_CODE: 44}
    assert stored_observations(engine, CODES) == stored
