"""The data epoch: bumped inside every load transaction that writes, never by one that changes nothing or
fails; runs are keyed by it, so a change of the indicator catalogue re-scores."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from app.errors import DataError
from app.ingest.layers import store_layer
from app.ingest.run import catalogue_changed, load_all, load_source
from app.ingest.userdata import TableSpec, prepare_table, user_indicator
from app.scoring.service import DEFAULT_PROFILE, ensure_run, profile_by_id


def epoch(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT epoch FROM data_epoch")).scalar_one())


def test_only_a_load_that_writes_bumps_the_epoch(fresh: Any) -> None:
    engine, settings = fresh
    before = epoch(engine)
    assert load_source(engine, settings, "hnd-iudpas-2014").status == "unchanged"
    assert epoch(engine) == before
    assert load_source(engine, settings, "hnd-iudpas-2014", force=True).status == "loaded"
    assert epoch(engine) == before + 1
    assert load_source(engine, settings, "hnd-a2sit", force=True).status == "loaded"  # boundaries too
    assert epoch(engine) == before + 2


def test_a_failed_load_leaves_the_epoch(fresh: Any, tmp_path: Path) -> None:
    engine, _ = fresh
    f = tmp_path / "x.csv"
    f.write_text("pcode,value\nHN0101,1\n")
    with engine.connect() as conn:
        layer = prepare_table(conn, f, user_indicator("x_user"), TableSpec())
    obs = layer.observations.assign(pcode="HN9999")  # a unit that does not exist: validation fails
    before = epoch(engine)
    with pytest.raises(DataError):
        store_layer(engine, dataclasses.replace(layer, observations=obs))
    assert epoch(engine) == before


def test_changing_the_catalogue_rescores(fresh: Any, tmp_path: Path) -> None:
    engine, settings = fresh
    profile = profile_by_id(DEFAULT_PROFILE).model_copy(update={"draws": 10})
    first = ensure_run(engine, profile)
    assert catalogue_changed(engine, settings) == set()
    rows = list(csv.DictReader(settings.indicator_catalogue.open(encoding="utf-8")))
    for r in rows:
        if r["code"] == "homicide_rate_2014":
            r["direction"] = "-1"  # a catalogue edit: higher homicide rates now count as less severe
    flipped = tmp_path / "indicators.csv"
    with flipped.open("w", encoding="utf-8", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    changed = settings.model_copy(update={"indicator_catalogue": flipped})
    assert catalogue_changed(engine, changed) == {"hnd-iudpas-2014"}
    before = epoch(engine)
    reports = load_all(engine, changed, missing_only=True)  # what `make run` does
    assert [r.source_id for r in reports] == ["hnd-iudpas-2014"] and epoch(engine) == before + 1
    second = ensure_run(engine, profile)
    assert second != first
    with engine.connect() as conn:
        worst = conn.execute(
            text("""
            SELECT run_id, pillar_ranks ->> 'IV' FROM scores WHERE run_id = ANY(:r) AND pcode = 'HN0501'"""),
            {"r": [first, second]},
        ).all()
    ranks = dict(worst)
    assert ranks[first] != ranks[second]  # San Pedro Sula's violence rank moved with the direction


def test_cli_load_all_missing_loads_a_catalogue_change(
    fresh: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`raices load all --missing` (what `make db` runs; `serve --prepare` does it once /health answers)
    loads a source whose catalogue rows changed, and only that one."""
    from typer.testing import CliRunner

    from app import cli
    from app.settings import get_settings

    engine, settings = fresh
    rows = list(csv.DictReader(settings.indicator_catalogue.open(encoding="utf-8")))
    for r in rows:
        if r["code"] == "homicide_rate_2014":
            r["direction"] = "-1"
    flipped = tmp_path / "indicators.csv"
    with flipped.open("w", encoding="utf-8", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    monkeypatch.setenv("DATABASE_URL", str(settings.database_url))
    monkeypatch.setenv("RAICES_INDICATOR_CATALOGUE", str(flipped))
    monkeypatch.setenv("RAICES_DATA_CACHE", str(settings.data_cache))
    monkeypatch.setenv("RAICES_RASTER_DIR", str(settings.raster_dir))
    monkeypatch.setenv("RAICES_ALLOW_DOWNLOAD", "false")
    get_settings.cache_clear()
    before = epoch(engine)
    try:
        result = CliRunner().invoke(cli.app, ["load", "all", "--missing"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "hnd-iudpas-2014" in result.output and "gtm-a2sit" not in result.output
    assert epoch(engine) == before + 1
    with engine.connect() as conn:
        direction = conn.execute(text("SELECT direction FROM indicators WHERE code = 'homicide_rate_2014'"))
        assert direction.scalar_one() == -1
