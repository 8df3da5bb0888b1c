"""Downloads of a priority frame: a GeoPackage that opens styled in QGIS, FlatGeobuf, GeoJSON and CSV.

Every writer takes the flat frame of `app.scoring.read.priorities_frame` (FLAT_COLUMNS + geometry) and
casts it to the column types of the scores table first, so a rank is an integer and `robust` a boolean in
every format, nulls included.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import geopandas as gpd
import numpy as np
import orjson
import pandas as pd
import pyogrio
import shapely

from app.scoring.profile import PILLARS

EXPORT_FORMATS: dict[str, tuple[str, str]] = {
    "gpkg": ("application/geopackage+sqlite3", ".gpkg"),
    "fgb": ("application/flatgeobuf", ".fgb"),
    "geojson": ("application/geo+json", ".geojson"),
    "csv": ("text/csv; charset=utf-8", ".csv"),
}

PILLAR_NAMES: dict[str, str] = {
    "I": "Economic insecurity & climate",
    "II": "Governance & rule of law",
    "III": "Human rights",
    "IV": "Violence & crime",
    "V": "Gender-based violence",
}

GEOMETRY_COLUMN = "geom"
SCORE_STYLE = "Priority score"
PILLAR_STYLE = "Lead pillar"

_INTEGER = (
    "rank",
    "rank_region",
    "rank_lo",
    "rank_hi",
    "tier",
    "hotspot_confidence",
    *(f"pillar_rank_{p}" for p in PILLARS),
)
_BOOLEAN = ("robust", "ranked")
_FLOAT = ("score", "p_top", *(f"pillar_{p}" for p in PILLARS), "migration", "coverage")

RGB = tuple[int, int, int]
# ColorBrewer YlOrRd, 5 classes: sequential, readable in greyscale.
_SCORE_RAMP: tuple[RGB, ...] = ((255, 255, 178), (254, 204, 92), (253, 141, 60), (240, 59, 32), (189, 0, 38))
# Okabe–Ito: distinct under the common colour-vision deficiencies.
_PILLAR_COLOURS: dict[str, RGB] = {
    "I": (230, 159, 0),
    "II": (0, 114, 178),
    "III": (0, 158, 115),
    "IV": (213, 94, 0),
    "V": (204, 121, 167),
}
_NO_DATA: RGB = (189, 189, 189)
_OUTLINE: RGB = (110, 110, 110)
# Scores run 0–100, so -1 can stand for "no score" in the graduated renderer.
_NO_SCORE = -1.0

_QGIS_VERSION = "3.28.0-Firenze"
_SLD_NS = "http://www.opengis.net/sld"
_SE_NS = "http://www.opengis.net/se"
_OGC_NS = "http://www.opengis.net/ogc"


def typed(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """The frame with the scores table's column types: nullable integers and booleans, float scores."""
    out = frame.copy()
    for columns, dtype in ((_INTEGER, "Int64"), (_BOOLEAN, "boolean"), (_FLOAT, "float64")):
        for c in columns:
            if c in out.columns:
                out[c] = out[c].astype(dtype)
    return out


# --- GeoPackage -------------------------------------------------------------------------------------------


def to_gpkg(
    frame: gpd.GeoDataFrame, path: Path, *, layer: str = "priorities", title: str = "Raíces priorities"
) -> Path:
    """Write the frame as a GeoPackage layer with two QGIS styles (score, lead pillar) in `layer_styles`."""
    pyogrio.write_dataframe(
        typed(frame),
        path,
        layer=layer,
        driver="GPKG",
        promote_to_multi=True,
        # an empty frame has no geometry to infer the type from; QGIS handles "Unknown" layers poorly
        geometry_type=None if len(frame) else "MultiPolygon",
        GEOMETRY_NAME=GEOMETRY_COLUMN,
        IDENTIFIER=title,
    )
    scores = frame["score"] if "score" in frame.columns else pd.Series([], dtype=float)
    score_classes, pillar_classes = _score_classes(pd.to_numeric(scores, errors="coerce")), _pillar_classes()
    styles = [
        _Style(
            SCORE_STYLE,
            _graduated_qml(score_classes),
            _sld(layer, SCORE_STYLE, "score", score_classes),
            True,
            "Priority score (0–100) in five quantile classes, YlOrRd; unranked municipios in grey.",
        ),
        _Style(
            PILLAR_STYLE,
            _categorised_qml(pillar_classes),
            _sld(layer, PILLAR_STYLE, "pillar", pillar_classes),
            False,
            "Lead pillar (the strongest driver of the score), one colour per pillar; no data in grey.",
        ),
    ]
    _write_styles(path, layer, styles)
    return path


@dataclass(frozen=True)
class _Class:
    """One legend entry: a closed score range or a category value ('' is every other value)."""

    label: str
    colour: RGB
    bounds: tuple[float, float] | None = None
    value: str | None = None


@dataclass(frozen=True)
class _Style:
    name: str
    qml: str
    sld: str
    default: bool
    description: str


# The layer_styles table as QGIS creates it through OGR (QgsOgrProviderMetadata::saveStyle), in GDAL's DDL.
_LAYER_STYLES_DDL = """
CREATE TABLE IF NOT EXISTS layer_styles (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    f_table_catalog TEXT(256),
    f_table_schema TEXT(256),
    f_table_name TEXT(256),
    f_geometry_column TEXT(256),
    styleName TEXT(30),
    styleQML TEXT,
    styleSLD TEXT,
    useAsDefault BOOLEAN,
    description TEXT,
    owner TEXT(30),
    ui TEXT(30),
    update_time DATETIME DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
)"""


def _write_styles(path: Path, layer: str, styles: list[_Style]) -> None:
    with contextlib.closing(sqlite3.connect(path)) as con, con:
        con.execute(_LAYER_STYLES_DDL)
        # registered as an attributes table, or GDAL and QGIS do not list it
        con.execute(
            "INSERT OR IGNORE INTO gpkg_contents (table_name, data_type, identifier, description, last_change) "
            "VALUES ('layer_styles', 'attributes', 'layer_styles', 'QGIS layer styles', "
            "strftime('%Y-%m-%dT%H:%M:%fZ','now'))"
        )
        # the layer was just rewritten: styles left from an earlier export of it would compete as defaults
        con.execute("DELETE FROM layer_styles WHERE f_table_name = ?", (layer,))
        con.executemany(
            "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, f_geometry_column, "
            "styleName, styleQML, styleSLD, useAsDefault, description, owner, ui) "
            "VALUES ('', '', ?, ?, ?, ?, ?, ?, ?, '', '')",
            [(layer, GEOMETRY_COLUMN, s.name, s.qml, s.sld, int(s.default), s.description) for s in styles],
        )


def _score_classes(scores: pd.Series, classes: int = 5) -> list[_Class]:
    """Quantile classes of the scores (equal intervals when ties merge quantiles), then 'no score'."""
    s = scores.dropna()
    lo, hi = (float(s.min()), float(s.max())) if len(s) else (0.0, 100.0)
    breaks = [float(b) for b in s.quantile(np.linspace(0, 1, classes + 1))] if len(s) else []
    if len(set(breaks)) != classes + 1:
        breaks = [float(b) for b in np.linspace(lo, hi, classes + 1)]
    breaks[0], breaks[-1] = lo, hi
    out = [
        _Class(f"{a:.1f} – {b:.1f}", colour, bounds=(a, b))
        for a, b, colour in zip(breaks[:-1], breaks[1:], _SCORE_RAMP, strict=True)
    ]
    return [*out, _Class("Unranked (no score)", _NO_DATA, bounds=(_NO_SCORE, _NO_SCORE))]


def _pillar_classes() -> list[_Class]:
    """One class per pillar, then every other value (null included)."""
    out = [_Class(f"{p} – {PILLAR_NAMES[p]}", _PILLAR_COLOURS[p], value=p) for p in PILLARS]
    return [*out, _Class("No data", _NO_DATA, value="")]


# --- QML ---------------------------------------------------------------------------------------------------


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrib: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrib)
    if text is not None:
        el.text = text
    return el


def _options(parent: ET.Element, values: dict[str, str]) -> ET.Element:
    """A QGIS `<Option type="Map">` of strings."""
    m = _sub(parent, "Option", type="Map")
    for k, v in values.items():
        _sub(m, "Option", type="QString", name=k, value=v)
    return m


def _no_data_defined(parent: ET.Element) -> None:
    dd = _sub(parent, "data_defined_properties")
    m = _sub(dd, "Option", type="Map")
    _sub(m, "Option", type="QString", name="name", value="")
    _sub(m, "Option", name="properties")
    _sub(m, "Option", type="QString", name="type", value="collection")


def _rgba(c: RGB) -> str:
    return f"{c[0]},{c[1]},{c[2]},255"


def _fill_symbol(parent: ET.Element, name: str, colour: RGB) -> ET.Element:
    """A QGIS fill symbol with one SimpleFill layer."""
    sym = _sub(
        parent,
        "symbol",
        type="fill",
        name=name,
        alpha="1",
        clip_to_extent="1",
        force_rhr="0",
        frame_rate="10",
        is_animated="0",
    )
    _no_data_defined(sym)
    layer = _sub(sym, "layer", **{"class": "SimpleFill", "enabled": "1", "locked": "0", "pass": "0"})
    _options(
        layer,
        {
            "border_width_map_unit_scale": "3x:0,0,0,0,0,0",
            "color": _rgba(colour),
            "joinstyle": "bevel",
            "offset": "0,0",
            "offset_map_unit_scale": "3x:0,0,0,0,0,0",
            "offset_unit": "MM",
            "outline_color": _rgba(_OUTLINE),
            "outline_style": "solid",
            "outline_width": "0.1",
            "outline_width_unit": "MM",
            "style": "solid",
        },
    )
    _no_data_defined(layer)
    return sym


def _qml_document(renderer: ET.Element) -> str:
    """A whole QML style document around a renderer."""
    root = ET.Element(
        "qgis",
        {
            "version": _QGIS_VERSION,
            "styleCategories": "AllStyleCategories",
            "hasScaleBasedVisibilityFlag": "0",
            "minScale": "100000000",
            "maxScale": "0",
            "readOnly": "0",
            "simplifyDrawingHints": "1",
            "simplifyDrawingTol": "1",
            "simplifyAlgorithm": "0",
            "simplifyLocal": "1",
            "simplifyMaxScale": "1",
            "labelsEnabled": "0",
            "symbologyReferenceScale": "-1",
        },
    )
    flags = _sub(root, "flags")
    for flag, on in (("Identifiable", "1"), ("Removable", "1"), ("Searchable", "1"), ("Private", "0")):
        _sub(flags, flag, on)
    root.append(renderer)
    _sub(root, "blendMode", "0")
    _sub(root, "featureBlendMode", "0")
    _sub(root, "layerOpacity", "1")
    _sub(root, "previewExpression", '"name"')
    _sub(root, "layerGeometryType", "2")
    body = ET.tostring(root, encoding="unicode")
    return f"<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n{body}\n"


def _renderer(kind: str, attr: str) -> ET.Element:
    return ET.Element(
        "renderer-v2",
        {
            "type": kind,
            "attr": attr,
            "symbollevels": "0",
            "forceraster": "0",
            "enableorderby": "0",
            "referencescale": "-1",
        },
    )


def _graduated_qml(classes: list[_Class]) -> str:
    """QML of a graduated renderer on the score, with its null class as the sentinel range."""
    # QGIS never draws a null with a graduated renderer; the expression maps it to the grey sentinel range.
    r = _renderer("graduatedSymbol", f'coalesce("score", {_NO_SCORE:g})')
    r.set("graduatedMethod", "GraduatedColor")
    ranges, symbols = _sub(r, "ranges"), _sub(r, "symbols")
    for i, c in enumerate(classes):
        assert c.bounds is not None
        _sub(
            ranges,
            "range",
            lower=repr(c.bounds[0]),
            upper=repr(c.bounds[1]),
            symbol=str(i),
            label=c.label,
            render="true",
        )
        _fill_symbol(symbols, str(i), c.colour)
    _fill_symbol(_sub(r, "source-symbol"), "0", _SCORE_RAMP[0])
    ramp = _sub(r, "colorramp", type="gradient", name="[source]")
    inner = _SCORE_RAMP[1:-1]
    _options(
        ramp,
        {
            "color1": _rgba(_SCORE_RAMP[0]),
            "color2": _rgba(_SCORE_RAMP[-1]),
            "direction": "ccw",
            "discrete": "0",
            "rampType": "gradient",
            "spec": "rgb",
            "stops": ":".join(
                f"{(k + 1) / (len(inner) + 1):g};{_rgba(c)};rgb;ccw" for k, c in enumerate(inner)
            ),
        },
    )
    method = _sub(r, "classificationMethod", id="Quantile")
    _sub(method, "symmetricMode", enabled="0", symmetrypoint="0", astride="0")
    _sub(method, "labelFormat", format="%1 – %2", trimtrailingzeroes="0", labelprecision="1")
    _sub(_sub(method, "parameters"), "Option")
    _sub(method, "extraInformation")
    _sub(r, "rotation")
    _sub(r, "sizescale")
    return _qml_document(r)


def _categorised_qml(classes: list[_Class]) -> str:
    """QML of a categorised renderer on the lead pillar."""
    r = _renderer("categorizedSymbol", "pillar")
    categories, symbols = _sub(r, "categories"), _sub(r, "symbols")
    for i, c in enumerate(classes):
        assert c.value is not None
        _sub(
            categories, "category", value=c.value, symbol=str(i), label=c.label, render="true", type="string"
        )
        _fill_symbol(symbols, str(i), c.colour)
    _fill_symbol(_sub(r, "source-symbol"), "0", _NO_DATA)
    _sub(r, "rotation")
    _sub(r, "sizescale")
    return _qml_document(r)


# --- SLD (for clients other than QGIS) ---------------------------------------------------------------------


def _hex(c: RGB) -> str:
    return "#{:02x}{:02x}{:02x}".format(*c)


def _comparison(parent: ET.Element, op: str, attr: str, value: str) -> None:
    el = _sub(parent, f"ogc:{op}")
    _sub(el, "ogc:PropertyName", attr)
    _sub(el, "ogc:Literal", value)


def _sld(layer: str, style: str, attr: str, classes: list[_Class]) -> str:
    """An SLD 1.1 equivalent of a style: one rule per class, filters that do not overlap."""
    root = ET.Element(
        "StyledLayerDescriptor",
        {
            "xmlns": _SLD_NS,
            "xmlns:se": _SE_NS,
            "xmlns:ogc": _OGC_NS,
            "version": "1.1.0",
        },
    )
    named = _sub(root, "NamedLayer")
    _sub(named, "se:Name", layer)
    user = _sub(named, "UserStyle")
    _sub(user, "se:Name", style)
    fts = _sub(user, "se:FeatureTypeStyle")
    graduated = [c for c in classes if c.bounds is not None and c.bounds[0] != _NO_SCORE]
    for c in classes:
        rule = _sub(fts, "se:Rule")
        _sub(rule, "se:Name", c.label)
        _sub(_sub(rule, "se:Description"), "se:Title", c.label)
        if c.value == "":
            _sub(rule, "se:ElseFilter")
        else:
            f = _sub(rule, "ogc:Filter")
            if c.value is not None:
                _comparison(f, "PropertyIsEqualTo", attr, c.value)
            elif c.bounds is not None and c.bounds[0] == _NO_SCORE:
                _sub(_sub(f, "ogc:PropertyIsNull"), "ogc:PropertyName", attr)
            elif c.bounds is not None:
                both = _sub(f, "ogc:And")
                _comparison(both, "PropertyIsGreaterThanOrEqualTo", attr, repr(c.bounds[0]))
                # SLD draws every rule that matches: only the last class includes its upper bound
                last = c is graduated[-1]
                _comparison(
                    both,
                    "PropertyIsLessThanOrEqualTo" if last else "PropertyIsLessThan",
                    attr,
                    repr(c.bounds[1]),
                )
        fill = _sub(rule, "se:PolygonSymbolizer")
        _sub(_sub(fill, "se:Fill"), "se:SvgParameter", _hex(c.colour), name="fill")
        stroke = _sub(fill, "se:Stroke")
        _sub(stroke, "se:SvgParameter", _hex(_OUTLINE), name="stroke")
        _sub(stroke, "se:SvgParameter", "0.5", name="stroke-width")
    return ET.tostring(root, encoding="unicode", xml_declaration=False)


# --- FlatGeobuf, CSV, GeoJSON ------------------------------------------------------------------------------


def to_fgb(frame: gpd.GeoDataFrame, path: Path, *, layer: str = "priorities") -> Path:
    """Write the frame as FlatGeobuf with a packed spatial index (features come out in Hilbert order)."""
    pyogrio.write_dataframe(
        typed(frame),
        path,
        layer=layer,  # the header names the layer: without this it would be the file's name
        driver="FlatGeobuf",
        promote_to_multi=True,
        geometry_type=None if len(frame) else "MultiPolygon",
        SPATIAL_INDEX="YES",
    )
    return path


def iter_fgb(
    frame: gpd.GeoDataFrame, chunk_size: int = 65536, *, layer: str = "priorities"
) -> Iterator[bytes]:
    """The frame as FlatGeobuf bytes in chunks, for a streaming response.

    FlatGeobuf's header holds the feature count and the spatial index precedes the features, so the file is
    written whole to a temporary file first (before this returns, so a write error is raised before a
    response starts), then streamed from it.
    """
    folder = Path(tempfile.mkdtemp(prefix="raices-fgb-"))
    path = folder / "export.fgb"
    try:
        to_fgb(frame, path, layer=layer)
        handle = path.open("rb")
    finally:
        # POSIX: the open handle keeps the bytes readable, and nothing is left behind even if the
        # stream is abandoned before its end
        path.unlink(missing_ok=True)
        os.rmdir(folder)
    return _chunks(handle, chunk_size)


def _chunks(handle: IO[bytes], chunk_size: int) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(chunk_size):
            yield chunk


def to_csv(frame: gpd.GeoDataFrame, *, wkt: bool = False) -> str:
    """The frame as CSV text (header, no index); its geometry as a last `wkt` column only when asked."""
    table = pd.DataFrame(typed(frame).drop(columns=frame.geometry.name))
    if wkt:
        table["wkt"] = shapely.to_wkt(np.asarray(frame.geometry.values), rounding_precision=6)
    return str(table.to_csv(index=False, lineterminator="\n"))


def to_geojson(frame: gpd.GeoDataFrame) -> bytes:
    """The frame as a GeoJSON FeatureCollection (RFC 7946, WGS 84), each feature's `id` its pcode."""
    if frame.crs is not None and frame.crs.to_epsg() != 4326:
        frame = frame.to_crs(4326)
    table = typed(frame).drop(columns=frame.geometry.name).astype(object)
    records = table.where(table.notna(), None).to_dict("records")
    geometries = shapely.to_geojson(np.asarray(frame.geometry.values))
    features = [
        {
            "type": "Feature",
            "id": props.get("pcode"),
            "properties": props,
            "geometry": orjson.Fragment(g) if g is not None else None,
        }
        for props, g in zip(records, geometries, strict=True)
    ]
    return orjson.dumps(
        {"type": "FeatureCollection", "features": features}, option=orjson.OPT_SERIALIZE_NUMPY
    )
