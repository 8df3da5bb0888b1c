"""CQL2-text → SQLAlchemy on the loaded PostGIS, checked against the same filter done in pandas/shapely."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest
import shapely
from fastapi.testclient import TestClient
from packaging.specifiers import SpecifierSet
from pyproj import Transformer
from sqlalchemy import Engine, Float, Integer, Text, column, select, table, text

from app.errors import InvalidParameter
from app.main import create_app
from app.ogc import cql2
from app.ogc.cql2 import GrammarFixError, Queryable, to_sqlalchemy
from app.settings import Settings
from tests.conftest import snapshot

UNITS = table(
    "admin_units",
    column("id", Integer),
    column("geom"),
    *(column(name, Text) for name in ("pcode", "national_code", "name", "country", "boundary_set_id")),
    column("parent_pcode", Text),
    column("level", Integer),
    column("area_km2", Float),
)
TYPES = {"level": "integer", "area_km2": "number"}
QUERYABLES = {
    c.name: Queryable(c.name, c, TYPES.get(c.name, "string"))
    for c in UNITS.columns
    if c.name not in ("id", "geom")
} | {"large": Queryable("large", UNITS.c.area_km2 > 1000, "boolean")}  # an expression, not a column
GUATEMALA_CITY = (-90.5133, 14.6349)  # Parque Central, in municipio Guatemala (GT0101)

Predicate = Callable[[pd.DataFrame], "pd.Series[bool]"]


@pytest.fixture(scope="module")
def units(engine: Engine) -> gpd.GeoDataFrame:
    with engine.connect() as conn:
        return gpd.read_postgis(text("SELECT * FROM admin_units"), conn, geom_col="geom")


def _db(engine: Engine, cql: str, level: int | None = 2, **kw: object) -> set[int]:
    """Ids the filter selects in PostGIS (at `level`)."""
    where = [to_sqlalchemy(cql, QUERYABLES, UNITS.c.geom, **kw)]  # type: ignore[arg-type]
    if level is not None:
        where.append(UNITS.c.level == level)
    with engine.connect() as conn:
        return set(conn.scalars(select(UNITS.c.id).where(*where)))


def _pandas(units: pd.DataFrame, predicate: Predicate, level: int | None = 2) -> set[int]:
    rows = units[predicate(units) & ((units["level"] == level) if level is not None else True)]
    return set(rows["id"])


CASES: list[tuple[str, Predicate]] = [
    ("area_km2 > 500", lambda d: d["area_km2"] > 500),
    ("500 < area_km2", lambda d: d["area_km2"] > 500),
    ("area_km2 <= 50.5", lambda d: d["area_km2"] <= 50.5),
    ("country = 'SLV'", lambda d: d["country"] == "SLV"),
    ("national_code <> '0101'", lambda d: d["national_code"] != "0101"),
    ("name >= 'San'", lambda d: d["name"] >= "San"),
    ("name LIKE 'San %'", lambda d: d["name"].str.startswith("San ")),
    ("name LIKE '%Norte'", lambda d: d["name"].str.endswith("Norte")),
    ("name LIKE 'Sa_ta%'", lambda d: d["name"].str.match(r"Sa.ta")),
    ("name NOT LIKE 'San%'", lambda d: ~d["name"].str.startswith("San")),
    ("country IN ('SLV', 'HND')", lambda d: d["country"].isin(["SLV", "HND"])),
    ("pcode NOT IN ('GT0101', 'GT0102')", lambda d: ~d["pcode"].isin(["GT0101", "GT0102"])),
    ("area_km2 BETWEEN 100 AND 200", lambda d: d["area_km2"].between(100, 200)),
    ("area_km2 NOT BETWEEN 10 AND 1000", lambda d: ~d["area_km2"].between(10, 1000)),
    ("CASEI(name) = CASEI('LIVINGSTON')", lambda d: d["name"].str.lower() == "livingston"),
    ("CASEI(name) = CASEI('AHUACHAPÁN NORTE')", lambda d: d["name"].str.lower() == "ahuachapán norte"),
    ("CASEI(name) LIKE CASEI('SAN %')", lambda d: d["name"].str.lower().str.startswith("san ")),
    (
        "CASEI(name) IN (CASEI('GUATEMALA'), 'santa ana')",
        lambda d: d["name"].str.lower().isin(["guatemala", "santa ana"]),
    ),
    ("parent_pcode IS NOT NULL", lambda d: d["parent_pcode"].notna()),
    ("NOT area_km2 > 100", lambda d: ~(d["area_km2"] > 100)),
    ("large = TRUE", lambda d: d["area_km2"] > 1000),
    ("large <> false AND country = 'HND'", lambda d: (d["area_km2"] > 1000) & (d["country"] == "HND")),
    ("country = 'GTM'\n  AND area_km2 > 500", lambda d: (d["country"] == "GTM") & (d["area_km2"] > 500)),
    # AND binds tighter than OR (pygeofilter 0.4 alone read this as (HND OR SLV) AND area > 300)
    (
        "country = 'HND' OR country = 'SLV' AND area_km2 > 300",
        lambda d: (d["country"] == "HND") | ((d["country"] == "SLV") & (d["area_km2"] > 300)),
    ),
    (
        "NOT (country = 'GTM' OR area_km2 < 50) AND (name LIKE 'San%' OR (name LIKE '%a' AND level = 2))",
        lambda d: (
            ~((d["country"] == "GTM") | (d["area_km2"] < 50))
            & (d["name"].str.startswith("San") | d["name"].str.endswith("a"))
        ),
    ),
    ("name = 'Ciudad O''Brien'", lambda d: d["name"] == "Ciudad O'Brien"),
    ("name = 'x''; DROP TABLE admin_units; --'", lambda d: d["name"] == "x'; DROP TABLE admin_units; --"),
]


@pytest.mark.parametrize(("cql", "predicate"), CASES, ids=[c for c, _ in CASES])
def test_filter_matches_pandas(
    engine: Engine, units: gpd.GeoDataFrame, cql: str, predicate: Predicate
) -> None:
    assert _db(engine, cql) == _pandas(units, predicate)


def test_cases_are_not_trivial(units: gpd.GeoDataFrame) -> None:
    sizes = {cql: len(_pandas(units, predicate)) for cql, predicate in CASES}
    level2 = int((units["level"] == 2).sum())
    quoted = {c for c in sizes if "''" in c}
    assert all(0 < n < level2 for c, n in sizes.items() if c not in quoted | {"parent_pcode IS NOT NULL"}), (
        sizes
    )
    assert sizes["CASEI(name) = CASEI('AHUACHAPÁN NORTE')"] == 1  # needs a Unicode-aware lower()
    assert all(sizes[c] == 0 for c in quoted)


def test_is_null_at_every_level(engine: Engine, units: gpd.GeoDataFrame) -> None:
    expected = _pandas(units, lambda d: d["parent_pcode"].isna(), level=None)
    assert expected and _db(engine, "parent_pcode IS NULL", level=None) == expected


def test_values_are_bound_parameters() -> None:
    expr = to_sqlalchemy("name = 'Ciudad O''Brien' AND area_km2 > 5", QUERYABLES, UNITS.c.geom)
    compiled = expr.compile()
    assert "Brien" not in str(compiled) and "5" not in str(compiled)
    assert sorted(map(str, compiled.params.values())) == ["5", "Ciudad O'Brien"]


def _spatial(units: gpd.GeoDataFrame, geom: shapely.Geometry) -> Predicate:
    return lambda d: pd.Series(units.geometry.intersects(geom), index=d.index)


def test_s_intersects_point_in_guatemala_city(engine: Engine, units: gpd.GeoDataFrame) -> None:
    x, y = GUATEMALA_CITY
    cql = f"S_INTERSECTS(geometry, POINT({x} {y})) AND boundary_set_id = 'gtm-municipios'"
    ids = _db(engine, cql)
    assert set(units.loc[units["id"].isin(ids), "pcode"]) == {"GT0101"}
    # the literal in UTM 15N, in lat/lon order as EPSG:4326 defines it, and with the "geom" alias
    e, n = Transformer.from_crs(4326, 32615, always_xy=True).transform(x, y)
    assert _db(engine, f"S_INTERSECTS(geom, POINT({e} {n}))", filter_crs=32615) == _db(
        engine, cql.split(" AND")[0]
    )
    assert _db(engine, f"S_INTERSECTS(POINT({y} {x}), geometry)", swap_axes=True) == _db(
        engine, cql.split(" AND")[0]
    )


@pytest.mark.parametrize(
    ("literal", "geom"),
    [
        ("BBOX(-89.5, 13.5, -88.5, 14.2)", shapely.box(-89.5, 13.5, -88.5, 14.2)),
        (
            "POLYGON((-90.6 14.5, -90.4 14.5, -90.5 14.7, -90.6 14.5))",
            shapely.Polygon([(-90.6, 14.5), (-90.4, 14.5), (-90.5, 14.7)]),
        ),
        ("LINESTRING(-88 13.5, -87 15)", shapely.LineString([(-88, 13.5), (-87, 15)])),
    ],
)
def test_s_intersects_matches_shapely(
    engine: Engine, units: gpd.GeoDataFrame, literal: str, geom: shapely.Geometry
) -> None:
    expected = _pandas(units, _spatial(units, geom))
    assert len(expected) > 1
    assert _db(engine, f"S_INTERSECTS(geometry, {literal})") == expected
    combined = _pandas(units, lambda d: _spatial(units, geom)(d) & (d["area_km2"] > 100))
    assert _db(engine, f"area_km2 > 100 AND S_INTERSECTS(geometry, {literal})") == combined


REJECTED = [
    ("name = 'x'; DROP TABLE admin_units; --", "syntax error at line 1, column 11"),
    ('"name; DROP TABLE x" = 1', "unknown property 'name; DROP TABLE x'; queryables are: area_km2,"),
    ("population > 5", "unknown property 'population'"),
    ("1=1) OR (1=1", "syntax error"),
    ("level = 2 AND", "syntax error"),
    ("", "syntax error"),
    ("name = '" + "x" * 100_000 + "'", "too long"),
    ("(" * 500 + "level = 2" + ")" * 500, "nested 500 deep"),
    ("(level = 2 AND " * 500 + "level = 2" + ")" * 500, "nested 500 deep"),
    ("area_km2 = 'abc'", "'abc' is a string but area_km2 is a number"),
    ("name = 5", "5 is a number but name is a string"),
    ("name IN ('a', TRUE)", "True is a boolean"),
    ("large = 1", "1 is a number but large is a boolean"),
    ("name LIKE 5", "LIKE needs a string"),
    ("CASEI(area_km2) = 'x'", "CASEI needs a string"),
    ("UPPER(name) = 'X'", "UPPER() is not supported"),
    ("ACCENTI(name) = ACCENTI('x')", "ACCENTI() is not supported"),
    ("area_km2 + 1 > 5", "arithmetic is not supported"),
    ("-area_km2 > 5", "arithmetic is not supported"),
    ("name = -TRUE", "arithmetic is not supported"),
    ("level = 2 AND", "syntax error at line 1, column 11: the filter ends too early, after 'AND'"),
    ("level = 2 div 3", "syntax error at line 1, column 11: unexpected 'div'"),
    ("name = TIMESTAMP('2020-01-01T25:00:00Z')", "invalid datetime literal: 2020-01-01T25:00:00Z"),
    ("name = DATE('2021-02-30')", "invalid date literal: day is out of range for month"),
    ("level = DATE('2020-01-01')", "date value is not supported"),
    ("T_BEFORE(updated, TIMESTAMP('2020-01-01T00:00:00Z'))", "syntax error"),
    ("INCLUDE", "not supported"),
    ("S_WITHIN(geometry, POINT(1 2))", "S_WITHIN is not supported"),
    ("S_INTERSECTS(name, POINT(1 2))", "S_INTERSECTS needs the property 'geometry'"),
    ("S_INTERSECTS(geometry, name)", "needs a geometry literal"),
    (
        "S_INTERSECTS(geometry, POLYGON((0 0, 1 1, 1 0, 0 1, 0 0)))",
        "invalid geometry literal (Self-intersection",
    ),
    ("S_INTERSECTS(geometry, SRID=3857;POINT(1 2))", "filter-crs"),
    ("geometry = 'POINT(1 2)'", "geometry can only be used in S_INTERSECTS"),
    ("name = 'a\x00b'", "NUL"),
]


@pytest.mark.parametrize(("cql", "message"), REJECTED, ids=[c[:40] for c, _ in REJECTED])
def test_rejected_with_a_message(cql: str, message: str) -> None:
    with pytest.raises(InvalidParameter) as info:
        to_sqlalchemy(cql, QUERYABLES, UNITS.c.geom)
    assert message in info.value.message and info.value.status_code == 400


@pytest.mark.parametrize(
    ("cql", "crs", "message"),
    [
        ("S_INTERSECTS(geometry, POINT(1e20 1e20))", 32616, "outside EPSG:32616"),
        ("S_INTERSECTS(geometry, POINT(1 2))", 999999, "unknown filter CRS"),
    ],
)
def test_rejected_literal_in_filter_crs(cql: str, crs: int, message: str) -> None:
    with pytest.raises(InvalidParameter, match=message):
        to_sqlalchemy(cql, QUERYABLES, UNITS.c.geom, filter_crs=crs)


def test_parser_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    to_sqlalchemy("S_INTERSECTS(geometry, MULTIPOINT((-90 14), (-89 14)))", QUERYABLES, UNITS.c.geom)
    with pytest.raises(InvalidParameter):
        to_sqlalchemy("S_INTERSECTS(geometry, SRID=4326;POINT(1 2)) OR -name = 1", QUERYABLES, UNITS.c.geom)
    assert capsys.readouterr() == ("", "")


def test_no_geometry_column_means_no_spatial_filter() -> None:
    with pytest.raises(InvalidParameter, match="unknown property 'geometry'"):
        to_sqlalchemy("S_INTERSECTS(geometry, POINT(1 2))", QUERYABLES, None)


def test_hostile_filters_leave_the_database_unchanged(engine: Engine) -> None:
    before = snapshot(engine)
    for cql, _ in REJECTED:
        with pytest.raises(InvalidParameter):
            _db(engine, cql)
    assert _db(engine, "name = 'x''); DROP TABLE admin_units; --'") == set()
    assert snapshot(engine) == before


# The parser is built once, at start-up, from pygeofilter's grammar and the fixes; it fails loudly when a fix
# no longer applies, and only pygeofilter's own parse errors reach the client as 400.


@pytest.fixture
def rebuilt_parser() -> Iterator[None]:
    """Each test builds the parser afresh (the cached one is dropped before and after)."""
    cql2.parser.cache_clear()
    yield
    cql2.parser.cache_clear()


@pytest.mark.parametrize("fix", range(len(cql2._GRAMMAR_FIXES)))
def test_a_fix_that_no_longer_applies_stops_the_start(
    monkeypatch: pytest.MonkeyPatch, rebuilt_parser: None, settings: Settings, engine: Engine, fix: int
) -> None:
    what, pattern, _ = cql2._GRAMMAR_FIXES[fix]
    changed = re.sub(pattern, "", cql2.pygeofilter_grammar(), count=1, flags=re.S)  # as if upstream had
    monkeypatch.setattr(cql2, "pygeofilter_grammar", lambda: changed)
    with pytest.raises(GrammarFixError, match=rf"pygeofilter {version('pygeofilter')}: .*{re.escape(what)}"):
        create_app(settings, engine)


def test_a_fix_that_applies_but_no_longer_works_stops_the_start(
    monkeypatch: pytest.MonkeyPatch, rebuilt_parser: None, settings: Settings, engine: Engine
) -> None:
    # the precedence fix found its rule but (as if upstream had changed around it) changed nothing
    monkeypatch.setattr(cql2, "_GRAMMAR_FIXES", cql2._GRAMMAR_FIXES[1:])
    with pytest.raises(GrammarFixError, match="'aa = 1 OR bb = 2 AND cc = 3' reads as And"):
        create_app(settings, engine)


def test_the_parser_is_built_once_at_start_up(
    monkeypatch: pytest.MonkeyPatch, rebuilt_parser: None, settings: Settings, engine: Engine
) -> None:
    builds: list[int] = []
    build = cql2.build_parser
    monkeypatch.setattr(cql2, "build_parser", lambda: builds.append(1) or build())
    with TestClient(create_app(settings, engine)) as c:
        assert builds == [1]  # before any request
        for cql in ("country = 'SLV'", "level = 2 AND", "area_km2 > 100"):
            c.get("/collections/municipalities/items", params={"filter": cql, "limit": 1})
    assert builds == [1]


def test_pygeofilter_is_pinned_to_the_tested_range() -> None:
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    pins = [d for d in pyproject["project"]["dependencies"] if d.startswith("pygeofilter")]
    assert pins == [f"pygeofilter{cql2.PYGEOFILTER_TESTED}"]
    assert version("pygeofilter") in SpecifierSet(cql2.PYGEOFILTER_TESTED)


def test_filters_over_http(client: TestClient) -> None:
    ok = client.get("/collections/municipalities/items", params={"filter": "country = 'SLV'", "limit": 100})
    assert ok.status_code == 200 and ok.json()["numberMatched"] == 44
    assert {f["properties"]["country"] for f in ok.json()["features"]} == {"SLV"}
    bad = client.get("/collections/municipalities/items", params={"filter": "country = 'SLV' AND"})
    assert bad.status_code == 400
    assert bad.json() == {
        "code": "InvalidParameter",
        "description": "filter: CQL2-text syntax error at line 1, column 17: the filter ends too early, after 'AND'",
    }
    date = client.get("/collections/municipalities/items", params={"filter": "name = DATE('2021-02-30')"})
    assert date.status_code == 400 and "invalid date literal" in date.json()["description"]


def test_other_failures_are_server_errors_not_client_errors(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, engine: Engine
) -> None:
    def broken(self: object, *args: object) -> object:
        raise KeyError("a bug in reading a property name")

    app = create_app(settings, engine)  # the parser is built (and checked) before the bug is planted
    monkeypatch.setattr(cql2._Transformer, "attribute", broken)
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get("/collections/municipalities/items", params={"filter": "country = 'SLV'"})
    assert r.status_code == 500 and r.json()["code"] == "InternalError"
    assert "bug" not in r.text  # the detail goes to the log, not to the client
