"""Guatemala's municipal governance over time (gtm-segeplan-pdh): SEGEPLAN's ranking 2013/2016/2018 and the
PDH's public-information compliance 2015/2017/2019, one period per edition."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import openpyxl
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from app.errors import DataError
from app.ingest.layers import NOT_EVALUATED, LayerReport
from app.ingest.matching import units_frame
from app.ingest.run import load_source
from app.ingest.segeplan import AIP, RANKING, key_rows, read_final_sheet
from app.settings import Settings
from app.sources import Source, load_manifest, sha256_of

Fresh = tuple[Engine, Settings]
AIP_FILE = "acceso_informacion_publica_aip.xlsx"
RANKING_FILE = "ranking_municipal_segeplan.xlsx"


def _obs(engine: Engine, code: str) -> pd.DataFrame:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT pcode, period, value, flags FROM observations WHERE indicator_code = :c "
                "AND boundary_set_id = 'gtm-municipios'"
            ),
            {"c": code},
        ).all()
    return pd.DataFrame(rows, columns=["pcode", "period", "value", "flags"])


def _stored(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        return {
            "indicators": conn.execute(
                text("SELECT code, period, publisher FROM indicators WHERE source_id = 'gtm-segeplan-pdh'")
            ).all(),
            "obs": conn.execute(
                text(
                    "SELECT indicator_code, pcode, period, value, flags FROM observations "
                    "WHERE source_id = 'gtm-segeplan-pdh' ORDER BY 1, 2, 3"
                )
            ).all(),
            "files": conn.execute(
                text("SELECT source_id, name, sha256 FROM source_files ORDER BY 1, 2")
            ).all(),
        }


def test_ranking_known_answers(engine: Engine) -> None:
    obs = _obs(engine, RANKING)
    by_period = obs.groupby("period")["value"]
    assert by_period.size().to_dict() == {"2013": 334, "2016": 340, "2018": 340}
    # the README's means are over the values present (six municipios created after 2013 have no 2013 value)
    assert by_period.mean().round(3).to_dict() == {"2013": 0.325, "2016": 0.291, "2018": 0.379}
    city = obs[obs["pcode"] == "GT0101"].set_index("period")["value"].to_dict()
    assert city == {"2013": 0.5181, "2016": 0.579, "2018": 0.5936}
    assert set(obs.loc[obs["period"] == "2018", "pcode"]) == set(
        obs["pcode"]
    )  # all 340 in the latest edition
    assert "GT0514" not in set(obs.loc[obs["period"] == "2013", "pcode"])  # Sipacate, created in 2015
    assert all(f == [] for f in obs["flags"])


def test_compliance_zeros_are_not_evaluated(engine: Engine) -> None:
    obs = _obs(engine, AIP)
    missing = obs["value"].isna()
    assert all(f == [NOT_EVALUATED] for f in obs.loc[missing, "flags"])
    assert all(f == [] for f in obs.loc[~missing, "flags"])
    per = (
        obs.assign(missing=missing).groupby("period").agg(rows=("pcode", "size"), missing=("missing", "sum"))
    )
    assert per.to_dict("index") == {
        "2015": {"rows": 188, "missing": 137},
        "2017": {"rows": 340, "missing": 172},
        "2019": {"rows": 340, "missing": 40},
    }
    y2019 = obs[obs["period"] == "2019"]["value"]
    # the README's mean 40.5 counts the 40 zeros as scores (sum over all 340); stored, they are missing
    assert y2019.fillna(0).sum() / 340 == pytest.approx(40.486, abs=1e-3)
    assert y2019.mean() == pytest.approx(45.884, abs=1e-3)
    assert obs[obs["period"] == "2017"]["value"].fillna(0).sum() / 340 == pytest.approx(18.177, abs=1e-3)
    city = obs[obs["pcode"] == "GT0101"].set_index("period")["value"].to_dict()
    assert city == {"2015": 95.72, "2017": 83.33, "2019": 67.94}


def test_only_the_two_series_are_loaded(engine: Engine) -> None:
    """No carriers' averages (Promediosegeplan, aipPromedio) and no aip2015insitu."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT code, theme, direction, period, publisher FROM indicators "
                "WHERE source_id = 'gtm-segeplan-pdh' ORDER BY code"
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        ("municipal_management_ranking", "II", -1, "2013/2016/2018", "SEGEPLAN (Secretaría de Planificación y "
         "Programación de la Presidencia)"),
        ("public_information_compliance", "II", -1, "2015/2017/2019", "Procurador de los Derechos Humanos (PDH)"),
    ]  # fmt: skip


def test_linked_to_the_a2sit_2021_edition(engine: Engine) -> None:
    """A2SIT's management indices are the components of the 2020–21 edition: the 2018 ranking correlates with
    their mean about as the earlier editions do with it (2016: 0.60, 2013: 0.31)."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT indicator_code, period, pcode, value FROM observations WHERE indicator_code IN "
                "('municipal_management_ranking', 'municipal_admin_management', 'municipal_strategic_management',"
                " 'municipal_financial_management', 'municipal_public_services')"
            )
        ).all()
        reason = str(
            conn.execute(text("SELECT description FROM indicators WHERE code = :c"), {"c": RANKING}).scalar()
        )
    frame = pd.DataFrame(rows, columns=["code", "period", "pcode", "value"])
    ranking = frame[frame["code"] == RANKING].pivot(index="pcode", columns="period", values="value")
    mean4 = frame[frame["code"] != RANKING].groupby("pcode")["value"].mean()
    assert ranking["2018"].corr(mean4) == pytest.approx(0.439, abs=0.002)
    assert ranking["2018"].corr(ranking["2016"]) == pytest.approx(0.599, abs=0.002)
    assert ranking["2018"].corr(ranking["2013"]) == pytest.approx(0.306, abs=0.002)
    assert "GestAdmin, GestEstr, GestFin, ServPub" in reason and "2020-21 edition" in reason


def test_api_catalogue_and_latest_period(client: TestClient) -> None:
    items = {i["code"]: i for i in client.get("/v1/indicators", params={"theme": "II"}).json()["items"]}
    assert items[RANKING]["publisher"].startswith("SEGEPLAN")
    assert items[AIP]["coverage"]["GTM"][0]["units"] == 340
    values = client.get(f"/v1/indicators/{RANKING}/values", params={"country": "GTM"}).json()["items"]
    city = next(v for v in values if v["pcode"] == "GT0101")
    assert (city["period"], city["value"]) == ("2018", 0.5936)


def test_rows_are_checked_against_the_units(engine: Engine, settings: Settings) -> None:
    source = load_manifest(settings.manifest)["gtm-segeplan-pdh"]
    assert settings.data_mirror is not None
    path = settings.data_mirror / source.mirror_dir / RANKING_FILE
    frame = read_final_sheet(path, source_id=source.id, sheet="final", columns=["segeplan2018"])
    with engine.connect() as conn:
        units = units_frame(conn, "gtm-municipios")
    pcodes, variants = key_rows(frame, units, where="t")
    assert len(set(pcodes)) == 340
    assert len(variants) == 13  # short forms and two misspellings, e.g. Cotzulmalguapa
    assert "GT0502 'Santa Lucía Cotzulmalguapa' = 'Santa Lucía Cotzumalguapa'" in variants
    # keyed the OCHA way (Sanarate on 0206), the file would be refused, not loaded onto the wrong unit
    swapped = frame.copy()
    swapped.loc[swapped["id_municipal"] == 206, "municipio"] = "Sanarate"
    with pytest.raises(DataError, match=r"GT0206 is 'Sansare' \(INE\), the file names it 'Sanarate'"):
        key_rows(swapped, units, where="t")
    wrong_dep = frame.copy()
    wrong_dep.loc[wrong_dep["id_municipal"] == 101, "id_dep"] = 2
    with pytest.raises(DataError, match="id_dep 2 is not the department of 101"):
        key_rows(wrong_dep, units, where="t")


def test_text_in_a_number_column_is_refused(tmp_path: Path) -> None:
    wb = openpyxl.Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = "final"
    ws.append(["id_municipal", "municipio", "id_dep", "aip2019"])
    ws.append([101, "Guatemala", 1, "n/a"])
    path = tmp_path / AIP_FILE
    wb.save(path)
    with pytest.raises(DataError, match=r"row 2: column aip2019 holds 'n/a', not a number"):
        read_final_sheet(path, source_id="gtm-segeplan-pdh", sheet="final", columns=["aip2019"])
    with pytest.raises(DataError, match=r"missing columns \['aip2017'\]"):
        read_final_sheet(path, source_id="gtm-segeplan-pdh", sheet="final", columns=["aip2017"])


def _private(
    settings: Settings, tmp_path: Path, name: str, content: bytes
) -> tuple[Settings, dict[str, Source]]:
    assert settings.data_mirror is not None
    sources = load_manifest(settings.manifest)
    mirror = tmp_path / "mirror"
    for sid, source in sources.items():
        folder = mirror / source.mirror_dir
        folder.mkdir(parents=True, exist_ok=True)
        files = []
        for f in source.files:
            dest = folder / f.name
            if sid == "gtm-segeplan-pdh" and f.name == name:
                dest.write_bytes(content)
                f = replace(f, sha256=sha256_of(dest), url="")
            else:
                shutil.copyfile(settings.data_mirror / source.mirror_dir / f.name, dest)
            files.append(f)
        sources[sid] = replace(source, files=tuple(files))
    return settings.model_copy(update={"data_mirror": mirror, "data_cache": tmp_path / "cache"}), sources


def test_truncated_file_is_a_clear_error_and_changes_nothing(fresh: Fresh, tmp_path: Path) -> None:
    engine, settings = fresh
    before = _stored(engine)
    assert settings.data_mirror is not None
    raw = (settings.data_mirror / "indicators" / "gtm-segeplan-pdh" / AIP_FILE).read_bytes()
    private, sources = _private(settings, tmp_path, AIP_FILE, raw[: len(raw) // 3])
    with pytest.raises(
        DataError, match=rf"Source 'gtm-segeplan-pdh', file '{AIP_FILE}' is not a readable XLSX"
    ):
        load_source(engine, private, "gtm-segeplan-pdh", sources=sources, force=True)
    assert _stored(engine) == before


def test_idempotent(fresh: Fresh) -> None:
    engine, settings = fresh
    before = _stored(engine)
    assert load_source(engine, settings, "gtm-segeplan-pdh").status == "unchanged"
    report = load_source(engine, settings, "gtm-segeplan-pdh", force=True)
    assert isinstance(report, LayerReport)
    assert report.status == "loaded"
    assert report.values == {RANKING: 1014, AIP: 868}
    assert report.flagged == {AIP: {NOT_EVALUATED: 349}}
    assert any("2018 ranking correlates r = 0.439" in n for n in report.notes)
    assert _stored(engine) == before
