"""A user's own layers: the name matcher, the table loader and the raster loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
from rasterio.transform import from_origin
from sqlalchemy import Engine, text

from app.errors import DataError, InvalidParameter
from app.ingest.layers import store_layer
from app.ingest.matching import match_rows, units_frame
from app.ingest.userdata import TableSpec, prepare_raster, prepare_table, user_indicator
from app.settings import Settings

Fresh = tuple[Engine, Settings]


@pytest.fixture(scope="module")
def gtm_units(engine: Engine) -> pd.DataFrame:
    with engine.connect() as conn:
        return units_frame(conn, "gtm-municipios")


def test_matcher_accents_case_and_departments(gtm_units: pd.DataFrame) -> None:
    keys = pd.Series(["SAN JOSE PINULA", "san josé pinula", "Mixco", "Nowhere"])
    m = match_rows(keys, gtm_units, by="name")
    assert m.pcodes == ["GT0103", "GT0103", "GT0108", None]
    assert m.unmatched == ["Nowhere"]


def test_matcher_ambiguous_names_need_a_department(gtm_units: pd.DataFrame) -> None:
    # 'San José' names municipios in several departments
    m = match_rows(pd.Series(["San José"]), gtm_units, by="name")
    assert m.pcodes == [None] and m.ambiguous and "GT1702" in m.ambiguous[0]
    for dep in ("Petén", "peten", "GT17", "17"):
        assert match_rows(
            pd.Series(["San José"]), gtm_units, by="name", departments=pd.Series([dep])
        ).pcodes == ["GT1702"]
    m = match_rows(pd.Series(["San José"]), gtm_units, by="name", departments=pd.Series(["Atlantis"]))
    assert m.pcodes == [None] and "department 'Atlantis' not found" in m.unmatched[0]


def test_matcher_national_code_and_pcode(gtm_units: pd.DataFrame) -> None:
    assert match_rows(pd.Series(["101", "0206"]), gtm_units, by="national_code").pcodes == [
        "GT0101",
        "GT0206",
    ]
    assert match_rows(pd.Series(["gt1802"]), gtm_units, by="pcode").pcodes == ["GT1802"]


def _count(engine: Engine) -> tuple[int, float | None]:
    with engine.connect() as conn:
        return tuple(conn.execute(text("SELECT count(*), sum(value) FROM observations")).one())  # type: ignore[return-value]


def test_table_by_name_csv(fresh: Fresh, tmp_path: Path) -> None:
    engine, _ = fresh
    f = tmp_path / "homicides.csv"
    f.write_text(
        "municipio;departamento;tasa\nSan José;Petén;12,5\nSAN JOSE PINULA;Guatemala;7\n".replace(",", "."),
        encoding="utf-8",
    )
    ind = user_indicator("homicide_rate_user", theme="IV", unit="per 100000", period="2023")
    with engine.connect() as conn:
        layer = prepare_table(
            conn,
            f,
            ind,
            TableSpec(
                key="name",
                key_column="municipio",
                value_column="tasa",
                department_column="departamento",
                country="GTM",
            ),
        )
    report = store_layer(engine, layer)
    assert report.values == {"homicide_rate_user": 2}
    with engine.connect() as conn:
        got = dict(
            conn.execute(
                text("SELECT pcode, value FROM observations WHERE indicator_code = 'homicide_rate_user'")
            ).all()
        )
        src = conn.execute(text("SELECT kind, title FROM sources WHERE id = 'user-homicide_rate_user'")).one()
    assert got == {"GT1702": 12.5, "GT0103": 7.0}
    assert src.kind == "user" and "homicides.csv" in src.title


def test_table_xlsx_by_pcode(fresh: Fresh, tmp_path: Path) -> None:
    engine, _ = fresh
    f = tmp_path / "layer.xlsx"
    pd.DataFrame({"pcode": ["HN0101", "HN0102"], "value": [1.5, 2.5]}).to_excel(f, index=False)
    with engine.connect() as conn:
        layer = prepare_table(conn, f, user_indicator("x_user"), TableSpec())
    assert set(layer.observations["boundary_set_id"]) == {"hnd-municipios"}
    assert store_layer(engine, layer).values == {"x_user": 2}


@pytest.mark.parametrize(
    ("content", "phrase"),
    [
        ("pcode,value\nGT0101,1\nGT9999,2\n", "1 rows match no unit"),
        ("pcode,value\nGT0101,1\ngt0101,2\n", "several rows for the same unit"),
        ("pcode,value\nGT0101,1\nGT0102,lots\n", "text where numbers belong (lines [3])"),
        ("code,value\nGT0101,1\n", "no column ['pcode']"),
    ],
)
def test_table_bad_inputs_store_nothing(fresh: Fresh, tmp_path: Path, content: str, phrase: str) -> None:
    engine, _ = fresh
    before = _count(engine)
    f = tmp_path / "bad.csv"
    f.write_text(content)
    with pytest.raises(DataError) as err, engine.connect() as conn:
        layer = prepare_table(conn, f, user_indicator("bad_user"), TableSpec())
        store_layer(engine, layer)
    assert phrase in err.value.message or any(phrase in e for e in err.value.errors)
    assert _count(engine) == before


def test_table_partial_load_when_accepted(fresh: Fresh, tmp_path: Path) -> None:
    engine, _ = fresh
    f = tmp_path / "partial.csv"
    f.write_text("pcode,value\nGT0101,1\nGT9999,2\n")
    with engine.connect() as conn:
        layer = prepare_table(conn, f, user_indicator("partial_user"), TableSpec(accept_partial=True))
    report = store_layer(engine, layer)
    assert report.values == {"partial_user": 1}
    assert any("GT9999" in n for n in report.notes)


def test_truncated_xlsx_table(fresh: Fresh, tmp_path: Path) -> None:
    engine, _ = fresh
    good = tmp_path / "good.xlsx"
    pd.DataFrame({"pcode": ["HN0101"], "value": [1.0]}).to_excel(good, index=False)
    bad = tmp_path / "bad.xlsx"
    bad.write_bytes(good.read_bytes()[:200])
    with pytest.raises(DataError, match="cannot be read as a table"), engine.connect() as conn:
        prepare_table(conn, bad, user_indicator("t_user"), TableSpec())


def test_user_indicator_is_checked() -> None:
    with pytest.raises(InvalidParameter, match="theme must be one of"):
        user_indicator("x", theme="VI")
    with pytest.raises(InvalidParameter, match="direction must be 1"):
        user_indicator("x", direction=0)
    with pytest.raises(InvalidParameter, match="lower-case"):
        user_indicator("X; DROP TABLE")


def _raster(path: Path, crs: str | None, value: float = 5.0) -> Path:
    data = np.full((100, 100), value, dtype="float32")
    data[:, :50] = -9999  # western half nodata
    profile = {
        "driver": "GTiff",
        "height": 100,
        "width": 100,
        "count": 1,
        "dtype": "float32",
        "transform": from_origin(-90.0, 15.0, 0.01, 0.01),
        "nodata": -9999,
    }
    if crs:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
    return path


def test_raster_loader(fresh: Fresh, tmp_path: Path) -> None:
    engine, _ = fresh
    tif = _raster(tmp_path / "field.tif", "EPSG:4326")
    with engine.connect() as conn:
        layer = prepare_raster(conn, tif, user_indicator("field_user"), set_ids=["gtm-municipios"])
    store_layer(engine, layer)
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT pcode, value, flags FROM observations WHERE indicator_code = 'field_user'")
        ).all()
    assert rows and all(r.value == pytest.approx(5.0) for r in rows)
    assert len(rows) < 340  # the raster covers only a part of Guatemala: others get no value


def test_raster_without_crs_is_refused(fresh: Fresh, tmp_path: Path) -> None:
    engine, _ = fresh
    before = _count(engine)
    tif = _raster(tmp_path / "nocrs.tif", None)
    with pytest.raises(DataError, match="no coordinate reference system"), engine.connect() as conn:
        prepare_raster(conn, tif, user_indicator("nocrs_user"))
    assert _count(engine) == before


def test_cli_load_table_and_raster(fresh: Fresh, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from app import cli
    from app.settings import get_settings

    engine, _ = fresh
    monkeypatch.setenv("DATABASE_URL", engine.url.render_as_string(hide_password=False))
    get_settings.cache_clear()
    f = tmp_path / "t.csv"
    f.write_text("municipio,departamento,tasa\nMixco,Guatemala,4.5\n")
    tif = _raster(tmp_path / "r.tif", "EPSG:4326")
    try:
        ok = CliRunner().invoke(
            cli.app,
            [
                "load",
                "table",
                str(f),
                "--indicator",
                "cli_user",
                "--key",
                "name",
                "--key-column",
                "municipio",
                "--department-column",
                "departamento",
                "--value-column",
                "tasa",
                "--country",
                "GTM",
                "--theme",
                "IV",
            ],
        )
        assert ok.exit_code == 0, ok.output
        assert "1 values matched in gtm-municipios by name" in ok.output
        taken = CliRunner().invoke(cli.app, ["load", "table", str(f), "--indicator", "gini"])
        assert taken.exit_code == 2 and "belongs to source 'gtm-a2sit'" in taken.output
        ras = CliRunner().invoke(
            cli.app, ["load", "raster", str(tif), "--indicator", "ras_user", "--set", "gtm-municipios"]
        )
        assert ras.exit_code == 0, ras.output
    finally:
        get_settings.cache_clear()
    with engine.connect() as conn:
        assert (
            conn.execute(text("SELECT value FROM observations WHERE indicator_code = 'cli_user'")).scalar()
            == 4.5
        )
        assert (
            conn.execute(text("SELECT count(*) FROM observations WHERE indicator_code = 'ras_user'")).scalar()
            > 0
        )
