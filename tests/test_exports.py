"""Exports of the priority frame: a styled GeoPackage, FlatGeobuf (streamed), CSV and GeoJSON."""

from __future__ import annotations

import io
import itertools
import sqlite3
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import orjson
import pandas as pd
import pyogrio
import pytest
import shapely
from sqlalchemy import Engine

from app.exports import (
    EXPORT_FORMATS,
    PILLAR_NAMES,
    PILLAR_STYLE,
    SCORE_STYLE,
    iter_fgb,
    to_csv,
    to_fgb,
    to_geojson,
    to_gpkg,
)
from app.scoring.profile import PILLARS
from app.scoring.read import FLAT_COLUMNS, PriorityFilter, priorities_frame
from app.scoring.service import DEFAULT_PROFILE, ensure_run, profile_by_id

SLD = "{http://www.opengis.net/sld}"
SE = "{http://www.opengis.net/se}"


def synthetic(n: int = 12) -> gpd.GeoDataFrame:
    """Rows shaped like priorities_frame's: object columns with None, accents, one unranked municipio."""
    rows: list[dict[str, Any]] = []
    for k in range(n):
        ranked = k < n - 1
        row: dict[str, Any] = dict.fromkeys(FLAT_COLUMNS)
        row.update(
            pcode=f"SV{k:04d}",
            name="Cabañas" if k == 0 else f"Municipio {k}",
            country="SLV",
            department_name="Santa Ana" if k % 2 else "Ahuachapán",
            score=round(90 - 7.3 * k, 2) if ranked else None,
            rank=k + 1 if ranked else None,
            robust=(k % 3 == 0) if ranked else None,
            tier=1 + k // 5 if ranked else None,
            pillar=PILLARS[k % 5] if ranked else None,
            hotspot="hot" if k < 3 else "ns",
            hotspot_confidence=95 if k < 3 else None,
            coverage=0.8,
            vintage="2021,2024",
        )
        rows.append(row)
    geoms = [shapely.box(-90 + k / 10, 13.5, -90 + (k + 1) / 10, 13.6) for k in range(n)]
    geoms[1] = shapely.MultiPolygon(
        [shapely.box(-89.9, 13.5, -89.85, 13.6), shapely.box(-89.84, 13.5, -89.8, 13.6)]
    )
    return gpd.GeoDataFrame(rows, columns=FLAT_COLUMNS, geometry=geoms, crs=4326)


@pytest.fixture(scope="module")
def frame(engine: Engine) -> gpd.GeoDataFrame:
    """Every municipio of the default profile's run, ranked or not."""
    run = ensure_run(engine, profile_by_id(DEFAULT_PROFILE))
    with engine.connect() as conn:
        return priorities_frame(conn, run, PriorityFilter(ranked_only=False))


def styles(path: Path) -> dict[str, sqlite3.Row]:
    with sqlite3.connect(path) as con:
        con.row_factory = sqlite3.Row
        return {r["styleName"]: r for r in con.execute("SELECT * FROM layer_styles")}


def colour_of(symbol: ET.Element) -> str | None:
    option = symbol.find("layer/Option/Option[@name='color']")
    return None if option is None else option.get("value")


def test_formats_table() -> None:
    assert set(EXPORT_FORMATS) == {"gpkg", "fgb", "geojson", "csv"}
    assert EXPORT_FORMATS["gpkg"] == ("application/geopackage+sqlite3", ".gpkg")


def test_gpkg_layer_and_types(tmp_path: Path) -> None:
    f = synthetic()
    path = to_gpkg(f, tmp_path / "p.gpkg", title="Priorités: Cabañas")
    layers = dict(pyogrio.list_layers(path))
    assert layers["priorities"] == "MultiPolygon"
    assert "layer_styles" in layers
    info = pyogrio.read_info(path, layer="priorities")
    types = dict(zip(info["fields"], info["ogr_types"], strict=True))
    subtypes = dict(zip(info["fields"], info["ogr_subtypes"], strict=True))
    assert info["features"] == len(f)
    assert info["geometry_name"] == "geom"
    assert types["score"] == "OFTReal"
    assert types["rank"] in ("OFTInteger", "OFTInteger64") and subtypes["rank"] == "OFSTNone"
    assert types["hotspot_confidence"] in ("OFTInteger", "OFTInteger64")
    assert types["robust"] == "OFTInteger" and subtypes["robust"] == "OFSTBoolean"
    assert types["pillar"] == "OFTString" and types["name"] == "OFTString"
    back = pyogrio.read_dataframe(path, layer="priorities")
    assert list(back["pcode"]) == list(f["pcode"])
    assert back.loc[0, "name"] == "Cabañas"
    assert back["score"].isna().sum() == 1
    assert back["rank"].dropna().tolist() == list(range(1, len(f)))
    with sqlite3.connect(path) as con:
        identifier = con.execute(
            "SELECT identifier FROM gpkg_contents WHERE table_name = 'priorities'"
        ).fetchone()[0]
        kind = con.execute("SELECT data_type FROM gpkg_contents WHERE table_name = 'layer_styles'").fetchone()
    assert identifier == "Priorités: Cabañas"
    assert kind == ("attributes",)


def test_gpkg_style_rows(tmp_path: Path) -> None:
    path = to_gpkg(synthetic(), tmp_path / "p.gpkg", layer="prioridades")
    rows = styles(path)
    assert set(rows) == {SCORE_STYLE, PILLAR_STYLE}
    assert [r["styleName"] for r in rows.values() if r["useAsDefault"]] == [SCORE_STYLE]
    for r in rows.values():
        assert (r["f_table_catalog"], r["f_table_schema"]) == ("", "")
        assert (r["f_table_name"], r["f_geometry_column"]) == ("prioridades", "geom")
        assert r["update_time"]
        assert r["styleQML"].startswith("<!DOCTYPE qgis")
        ET.fromstring(r["styleSLD"])
    # GDAL (and so QGIS) sees the table, with QGIS's column types
    gdal = pyogrio.read_dataframe(path, layer="layer_styles")
    assert sorted(gdal["styleName"]) == sorted([SCORE_STYLE, PILLAR_STYLE])
    assert gdal["useAsDefault"].dtype == bool
    assert pd.api.types.is_datetime64_any_dtype(gdal["update_time"])


def test_graduated_style_covers_the_scores(tmp_path: Path) -> None:
    f = synthetic()
    qml = ET.fromstring(styles(to_gpkg(f, tmp_path / "p.gpkg"))[SCORE_STYLE]["styleQML"])
    assert qml.tag == "qgis" and qml.get("version", "").startswith("3.28")
    assert qml.get("styleCategories") == "AllStyleCategories"
    renderer = qml.find("renderer-v2")
    assert renderer is not None
    assert renderer.get("type") == "graduatedSymbol"
    assert '"score"' in (renderer.get("attr") or "")
    ranges = renderer.findall("ranges/range")
    scored = [r for r in ranges if "Unranked" not in (r.get("label") or "")]
    assert len(scored) == 5
    bounds = [(float(r.get("lower", "nan")), float(r.get("upper", "nan"))) for r in scored]
    assert bounds[0][0] == f["score"].min() and bounds[-1][1] == f["score"].max()
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    assert all(lo <= hi for lo, hi in bounds)
    # every score falls in a range, and the null one in the grey sentinel range
    for s in f["score"].dropna():
        assert any(lo <= s <= hi for lo, hi in bounds)
    (unranked,) = [r for r in ranges if r not in scored]
    assert float(unranked.get("lower", "nan")) == -1 and "coalesce" in (renderer.get("attr") or "")
    symbols = {s.get("name"): s for s in renderer.findall("symbols/symbol")}
    colours = set()
    for r in ranges:
        symbol = symbols[r.get("symbol")]
        assert symbol.get("type") == "fill"
        layer = symbol.find("layer")
        assert layer is not None and layer.get("class") == "SimpleFill"
        colours.add(colour_of(symbol))
    assert len(colours) == 6
    assert renderer.find("colorramp") is not None


def test_categorised_style_names_the_pillars(tmp_path: Path) -> None:
    rows = styles(to_gpkg(synthetic(), tmp_path / "p.gpkg"))
    qml = ET.fromstring(rows[PILLAR_STYLE]["styleQML"])
    renderer = qml.find("renderer-v2")
    assert renderer is not None
    assert (renderer.get("type"), renderer.get("attr")) == ("categorizedSymbol", "pillar")
    categories = renderer.findall("categories/category")
    values = [c.get("value") for c in categories]
    assert values == [*PILLARS, ""]
    labels = {c.get("value"): c.get("label") or "" for c in categories}
    for p in PILLARS:
        assert PILLAR_NAMES[p] in labels[p] and labels[p].startswith(p)
    assert "Economic insecurity & climate" in labels["I"]
    assert "no data" in labels[""].lower()
    symbols = renderer.findall("symbols/symbol")
    colours = {colour_of(s) for s in symbols}
    assert len(symbols) == len(colours) == 6
    sld = ET.fromstring(rows[PILLAR_STYLE]["styleSLD"])
    assert sld.tag == f"{SLD}StyledLayerDescriptor"
    assert len(sld.findall(f".//{SE}Rule")) == 6
    assert sld.find(f".//{SE}ElseFilter") is not None


def test_gpkg_rewrite_keeps_one_default(tmp_path: Path) -> None:
    path = tmp_path / "p.gpkg"
    to_gpkg(synthetic(), path)
    to_gpkg(synthetic(5), path)
    with sqlite3.connect(path) as con:
        assert con.execute("SELECT count(*), sum(useAsDefault) FROM layer_styles").fetchone() == (2, 1)
    assert pyogrio.read_info(path, layer="priorities")["features"] == 5


def test_gpkg_without_scores(tmp_path: Path) -> None:
    f = synthetic(3).iloc[0:0]
    path = to_gpkg(f, tmp_path / "empty.gpkg")
    assert pyogrio.read_info(path, layer="priorities")["features"] == 0
    assert len(styles(path)) == 2


def test_fgb_round_trip(tmp_path: Path) -> None:
    f = synthetic()
    path = to_fgb(f, tmp_path / "p.fgb")
    back = pyogrio.read_dataframe(path).sort_values("pcode").reset_index(drop=True)
    assert len(back) == len(f)
    assert list(back["pcode"]) == list(f["pcode"])
    assert back.loc[0, "name"] == "Cabañas"
    assert shapely.get_num_geometries(np.asarray(back.geometry.values)).sum() == len(f) + 1
    assert np.allclose(
        shapely.area(np.asarray(back.geometry.values)), shapely.area(np.asarray(f.geometry.values))
    )
    types = dict(zip(*(pyogrio.read_info(path)[k] for k in ("fields", "dtypes")), strict=True))
    assert types["rank"].startswith("int") and types["robust"] == "bool" and types["score"] == "float64"


def test_iter_fgb_streams_the_file(tmp_path: Path) -> None:
    f = synthetic()
    whole = to_fgb(f, tmp_path / "p.fgb").read_bytes()
    chunks = list(iter_fgb(f, chunk_size=1000))
    assert len(chunks) > 1 and all(len(c) <= 1000 for c in chunks)
    assert b"".join(chunks) == whole
    assert whole[:3] == b"fgb"


def test_csv(tmp_path: Path) -> None:
    f = synthetic()
    plain = to_csv(f)
    table = pd.read_csv(io.StringIO(plain))
    assert list(table.columns) == FLAT_COLUMNS
    assert len(table) == len(f)
    assert table.loc[0, "name"] == "Cabañas"
    assert plain.splitlines()[1].split(",")[7] == "1"  # rank written as an integer, not 1.0
    with_wkt = pd.read_csv(io.StringIO(to_csv(f, wkt=True)))
    assert list(with_wkt.columns) == [*FLAT_COLUMNS, "wkt"]
    geoms = shapely.from_wkt(with_wkt["wkt"].to_numpy())
    assert np.allclose(shapely.area(geoms), shapely.area(np.asarray(f.geometry.values)))


def test_geojson() -> None:
    f = synthetic()
    doc = orjson.loads(to_geojson(f))
    assert doc["type"] == "FeatureCollection"
    assert [x["id"] for x in doc["features"]] == list(f["pcode"])
    first, last = doc["features"][0], doc["features"][-1]
    assert first["properties"]["name"] == "Cabañas"
    assert first["properties"]["rank"] == 1 and first["properties"]["robust"] is True
    assert last["properties"]["score"] is None and last["properties"]["rank"] is None
    assert doc["features"][1]["geometry"]["type"] == "MultiPolygon"
    assert shapely.geometry.shape(first["geometry"]).equals(f.geometry.iloc[0])


def test_geojson_is_in_wgs84() -> None:
    f = synthetic(2)
    doc = orjson.loads(to_geojson(f.to_crs(32616)))
    x, y = doc["features"][0]["geometry"]["coordinates"][0][0]
    assert x == pytest.approx(-89.9) and y == pytest.approx(13.5)


def test_real_priorities(frame: gpd.GeoDataFrame, tmp_path: Path) -> None:
    """The default profile's run, every format, the same rows."""
    assert len(frame) > 100
    path = to_gpkg(frame, tmp_path / "p.gpkg")
    back = pyogrio.read_dataframe(path, layer="priorities")
    assert len(back) == len(frame)
    assert set(back["pcode"]) == set(frame["pcode"])
    assert back["score"].dtype == float
    info = pyogrio.read_info(path, layer="priorities")
    assert dict(zip(info["fields"], info["ogr_subtypes"], strict=True))["robust"] == "OFSTBoolean"
    rows = styles(path)
    graduated = ET.fromstring(rows[SCORE_STYLE]["styleQML"])
    scored = [r for r in graduated.findall("renderer-v2/ranges/range") if float(r.get("lower", "nan")) >= 0]
    assert len(scored) == 5
    assert float(scored[0].get("lower", "nan")) == frame["score"].min()
    assert float(scored[-1].get("upper", "nan")) == frame["score"].max()
    categorised = ET.fromstring(rows[PILLAR_STYLE]["styleQML"])
    values = {c.get("value") for c in categorised.findall("renderer-v2/categories/category")}
    assert set(frame["pillar"].dropna()) <= values
    fgb = pyogrio.read_dataframe(to_fgb(frame, tmp_path / "p.fgb"))
    assert sorted(fgb["pcode"]) == sorted(frame["pcode"])
    parts = shapely.get_num_geometries(np.asarray(frame.geometry.values)).sum()
    assert shapely.get_num_geometries(np.asarray(fgb.geometry.values)).sum() == parts
    assert b"".join(iter_fgb(frame)) == (tmp_path / "p.fgb").read_bytes()
    doc = orjson.loads(to_geojson(frame))
    assert [x["id"] for x in doc["features"]] == list(frame["pcode"])
    assert len(pd.read_csv(io.StringIO(to_csv(frame, wkt=True)))) == len(frame)
