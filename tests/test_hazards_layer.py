"""Hurricanes in PostGIS: tracks and fixes, the Eta/Iota wind raster, exposure indicators, the storms API."""

from __future__ import annotations

import rasterio
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from app.settings import Settings


def test_storms_and_fixes_stored(engine: Engine) -> None:
    with engine.connect() as conn:
        storms, fixes = conn.execute(
            text("SELECT (SELECT count(*) FROM storms), (SELECT count(*) FROM storm_fixes)")
        ).one()
        eta = conn.execute(
            text(
                "SELECT max_wind_kt, ST_NPoints(track) AS n, (SELECT count(*) FROM storm_fixes WHERE storm_id = "
                "'ETA-2020') AS fixes FROM storms WHERE storm_id = 'ETA-2020'"
            )
        ).one()
        iota_last = conn.execute(
            text(
                "SELECT ST_Y(geom), ST_X(geom) FROM storm_fixes WHERE storm_id = 'IOTA-2020' ORDER BY time DESC "
                "LIMIT 1"
            )
        ).one()
    assert storms == 693
    assert fixes == 20778 - 26  # fixes sharing an hour with another of the same storm are kept once
    assert (eta.max_wind_kt, eta.fixes) == (130.0, 58)
    assert tuple(round(v, 1) for v in iota_last) == (13.7, -89.0)


def test_wind_raster_written(settings: Settings) -> None:
    rasters = sorted(settings.raster_dir.glob("eta-iota-2020-max-wind-*.tif"))
    assert len(rasters) == 1
    with rasterio.open(rasters[0]) as ds:
        assert ds.crs.to_epsg() == 4326 and ds.res == (0.02, 0.02)
        data = ds.read(1)
    assert 120 <= data.max() <= 135  # Eta's and Iota's peaks, offshore


def _by_country(engine: Engine, code: str) -> dict[str, list[float]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT u.country, o.value FROM observations o JOIN admin_units u USING (boundary_set_id, pcode) "
                "JOIN boundary_sets b ON b.id = o.boundary_set_id WHERE b.is_default AND o.indicator_code = :c"
            ),
            {"c": code},
        ).all()
    out: dict[str, list[float]] = {}
    for country, value in rows:
        out.setdefault(country, []).append(value)
    return out


def test_eta_iota_exposure(engine: Engine) -> None:
    wind = _by_country(engine, "eta_iota_max_wind_kt")
    assert {k: len(v) for k, v in wind.items()} == {"GTM": 340, "SLV": 44, "HND": 298}
    assert all(0 <= v <= 135 for vs in wind.values() for v in vs)
    assert max(wind["HND"]) > 34  # tropical-storm-force winds reached Honduras
    share = _by_country(engine, "eta_iota_ts_wind_share")
    assert all(0 <= v <= 1 for vs in share.values() for v in vs)
    with engine.connect() as conn:
        top = conn.execute(
            text(
                "SELECT parent_pcode FROM admin_units u JOIN observations o USING (boundary_set_id, pcode) "
                "WHERE o.indicator_code = 'eta_iota_max_wind_kt' AND u.country = 'HND' ORDER BY o.value DESC "
                "LIMIT 1"
            )
        ).scalar()
        inconsistent = conn.execute(
            text(
                "SELECT count(*) FROM observations w JOIN observations s USING (boundary_set_id, pcode) "
                "WHERE w.indicator_code = 'eta_iota_max_wind_kt' AND s.indicator_code = 'eta_iota_ts_wind_share' "
                "AND w.value < 34 AND s.value > 0"
            )
        ).scalar()
    assert top in {"HN09", "HN15", "HN07"}  # Gracias a Dios, Olancho or El Paraíso: nearest Eta's landfall
    assert inconsistent == 0


def test_hurricane_passes_match_postgis(engine: Engine) -> None:
    """The 100 km count (computed in UTM 16N) agrees with PostGIS geodesic distances."""
    with engine.connect() as conn:
        ours = dict(
            conn.execute(
                text(
                    "SELECT pcode, value FROM observations WHERE indicator_code = 'hurricanes_within_100km' "
                    "AND boundary_set_id = 'hnd-municipios' AND pcode IN ('HN0901', 'HN0801', 'HN0101')"
                )
            ).all()
        )
        theirs = dict(
            conn.execute(
                text("""
            WITH seg AS (
              SELECT a.storm_id, ST_MakeLine(a.geom, b.geom) AS g FROM storm_fixes a
              JOIN LATERAL (SELECT geom, wind_kt FROM storm_fixes b WHERE b.storm_id = a.storm_id
                            AND b.time > a.time ORDER BY b.time LIMIT 1) b ON true
              WHERE a.wind_kt >= 64 AND b.wind_kt >= 64
              UNION ALL SELECT storm_id, geom FROM storm_fixes WHERE wind_kt >= 64)
            SELECT u.pcode, count(DISTINCT seg.storm_id) FROM admin_units u
            LEFT JOIN seg ON ST_DWithin(seg.g::geography, u.geom::geography, 100000)
            WHERE u.boundary_set_id = 'hnd-municipios' AND u.pcode IN ('HN0901', 'HN0801', 'HN0101')
            GROUP BY u.pcode""")
            ).all()
        )
    assert ours == {k: float(v) for k, v in theirs.items()}
    assert ours["HN0901"] > 0  # Puerto Lempira, on the Mosquito Coast


def test_storms_api(client: TestClient) -> None:
    body = client.get("/v1/hazards/storms", params={"year": 2020, "name": "iota"}).json()
    assert body["total"] == 1 and body["items"][0]["storm_id"] == "IOTA-2020"
    fc = client.get("/v1/hazards/storms", params={"year": 1998, "format": "geojson"}).json()
    assert any(f["id"] == "MITCH-1998" and f["geometry"]["type"] == "LineString" for f in fc["features"])
    near = client.get("/v1/hazards/storms", params={"bbox": "-89.5,13,-83.1,16.5", "min_wind_kt": 64}).json()
    assert near["total"] > 0 and all(i["max_wind_kt"] >= 64 for i in near["items"])
    detail = client.get("/v1/hazards/storms/eta-2020").json()
    assert len(detail["fix_list"]) == 58 and detail["fix_list"][0]["wind_kt"] > 0
    r = client.get("/v1/hazards/storms/NOPE-1900")
    assert r.status_code == 404 and "ETA-2020" in r.json()["description"]
    assert client.get("/v1/hazards/storms", params={"bbox": "x"}).status_code == 400
