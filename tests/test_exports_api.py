"""Exports over HTTP and from the command line: the same filtered, scored result in every format."""

from __future__ import annotations

import csv
import io
import sqlite3
from pathlib import Path
from typing import Any

import pyogrio
import pytest
from fastapi.testclient import TestClient


def test_gpkg_download_is_styled(client: TestClient, tmp_path: Path) -> None:
    r = client.get("/v1/priorities", params={"format": "gpkg", "country": "SLV"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/geopackage+sqlite3"
    assert 'filename="priorities-root-causes-2021.gpkg"' in r.headers["content-disposition"]
    path = tmp_path / "p.gpkg"
    path.write_bytes(r.content)
    frame = pyogrio.read_dataframe(path, layer="priorities")
    assert len(frame) == 44 and set(frame["country"]) == {"SLV"}
    with sqlite3.connect(path) as db:
        styles = db.execute(
            "SELECT styleName, useAsDefault FROM layer_styles WHERE f_table_name = 'priorities'"
        ).fetchall()
    assert sorted(styles) == [("Lead pillar", 0), ("Priority score", 1)]


def test_fgb_streams_the_filtered_rows(client: TestClient, tmp_path: Path) -> None:
    r = client.get("/v1/priorities", params={"format": "fgb", "tier": 1})
    assert r.status_code == 200 and r.headers["content-type"] == "application/flatgeobuf"
    path = tmp_path / "p.fgb"
    path.write_bytes(r.content)
    frame = pyogrio.read_dataframe(path)
    tier1 = client.get("/v1/priorities", params={"tier": 1, "limit": 1000}).json()
    assert len(frame) == tier1["total"] and set(frame["tier"]) == {1}


def test_csv_with_wkt(client: TestClient) -> None:
    plain = list(
        csv.DictReader(
            io.StringIO(client.get("/v1/priorities", params={"format": "csv", "country": "HND"}).text)
        )
    )
    assert len(plain) == 298 and "wkt" not in plain[0] and plain[0]["rank"] == "1"
    with_wkt = list(
        csv.DictReader(
            io.StringIO(
                client.get("/v1/priorities", params={"format": "csv", "country": "HND", "wkt": "true"}).text
            )
        )
    )
    assert with_wkt[0]["wkt"].startswith("MULTIPOLYGON")


@pytest.mark.parametrize("fmt", ["gpkg", "fgb", "geojson", "csv"])
def test_cli_export(fresh: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fmt: str) -> None:
    from typer.testing import CliRunner

    from app import cli
    from app.settings import get_settings

    engine, _ = fresh
    monkeypatch.setenv("DATABASE_URL", engine.url.render_as_string(hide_password=False))
    get_settings.cache_clear()
    out = tmp_path / f"out.{fmt}"
    try:
        result = CliRunner().invoke(cli.app, ["export", str(out), "--format", fmt, "--country", "SLV"])
        assert result.exit_code == 0, result.output
        assert "44 municipios written" in result.output
    finally:
        get_settings.cache_clear()
    if fmt == "csv":
        assert len(out.read_text().splitlines()) == 45
    else:
        assert len(pyogrio.read_dataframe(out)) == 44


def test_cli_export_refuses_unknown_format(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from app import cli

    result = CliRunner().invoke(cli.app, ["export", str(tmp_path / "x"), "--format", "shp"])
    assert result.exit_code == 2 and "--format must be one of" in result.output
