"""The parametric wind field: peak consistency, shape, asymmetry, GeoTIFF output, a real track (Eta 2020)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
from hypothesis import given, settings
from hypothesis import strategies as st

from app.hazards.hurdat import read_dplyr_storms
from app.hazards.wind import (
    CENTRAL_AMERICA,
    METHOD,
    NODATA,
    Grid,
    holland_b,
    interpolate_track,
    storm_max_wind_kt,
    willoughby_rmw_km,
    wind_field_kt,
    write_geotiff,
)
from app.settings import Settings

TRACK_LAT = 15.5


def synthetic_storm(
    wind_kt: float = 100.0,
    pressure_mb: float = 960.0,
    lat: float = TRACK_LAT,
    lon0: float = -84.0,
    dlat: float = 0.0,
    dlon: float = -0.9,
    n: int = 9,
    rmw_nmi: float = math.nan,
) -> pd.DataFrame:
    """Six-hourly fixes of a steady storm; by default moving west at about 4.5 m/s along 15.5°N."""
    return pd.DataFrame(
        {
            "storm_id": "SYN-2020",
            "name": "SYN",
            "year": 2020,
            "time": pd.date_range("2020-11-01", periods=n, freq="6h", tz="UTC"),
            "record": "",
            "status": "HU",
            "lat": lat + dlat * np.arange(n),
            "lon": lon0 + dlon * np.arange(n),
            "wind_kt": wind_kt,
            "pressure_mb": pressure_mb,
            "r34_kt_nmi": math.nan,
            "r64_nmi": math.nan,
            "rmw_nmi": rmw_nmi,
        }
    )


def _distance_km(grid: Grid, lat: float, lon: float) -> np.ndarray:
    dx = 6371.0 * np.cos(np.radians(grid.lats()))[:, None] * np.radians(grid.lons() - lon)[None, :]
    dy = 6371.0 * np.radians(grid.lats() - lat)[:, None]
    return np.asarray(np.hypot(dx, dy))


@pytest.fixture(scope="module")
def swath() -> np.ndarray:
    return storm_max_wind_kt(synthetic_storm(), CENTRAL_AMERICA)


def test_grid() -> None:
    assert CENTRAL_AMERICA.shape == (300, 475)
    assert CENTRAL_AMERICA.lons()[0] == pytest.approx(-92.49)
    assert CENTRAL_AMERICA.lats()[0] == pytest.approx(18.49)
    with pytest.raises(ValueError, match="whole number"):
        Grid(-92.5, 12.5, -83.0, 18.5, 0.03)
    with pytest.raises(ValueError, match="west < east"):
        Grid(-83.0, 12.5, -92.5, 18.5, 0.02)


def test_empirical_relations() -> None:
    # Willoughby et al. (2006): 46.4 km at 0 m/s and the equator, shrinking with intensity.
    assert float(willoughby_rmw_km(0.0, 0.0)) == pytest.approx(46.4)
    assert float(willoughby_rmw_km(60.0, 15.0)) < float(willoughby_rmw_km(30.0, 15.0))
    assert float(holland_b(20.0, 15.0)) == pytest.approx(1.881 - 0.1114 - 0.19425)
    assert float(holland_b(500.0, 60.0)) == 1.0


def test_interpolation_is_fine_and_keeps_the_fixes() -> None:
    fixes = synthetic_storm()
    states = interpolate_track(fixes)
    steps = states["time"].diff().dropna()
    assert steps.max() <= pd.Timedelta("1h")
    assert set(fixes["time"]) <= set(states["time"])
    assert states["vt_east_ms"].iloc[0] == pytest.approx(
        -0.9 * 111.19 * math.cos(math.radians(15.5)) / 21.6, rel=1e-3
    )
    duplicated = pd.concat([fixes, fixes.iloc[[3]]])
    assert len(interpolate_track(duplicated)) == len(states)
    with pytest.raises(ValueError, match="one storm"):
        interpolate_track(pd.concat([fixes, fixes.assign(storm_id="OTHER")]))


def test_peak_matches_the_record(swath: np.ndarray) -> None:
    assert 97.0 <= swath.max() <= 100.0 + 1e-3
    assert swath.dtype == np.float32


def test_decays_outward_beyond_the_rmw(swath: np.ndarray) -> None:
    col = int(np.argmin(np.abs(CENTRAL_AMERICA.lons() + 87.5)))
    lats = CENTRAL_AMERICA.lats()
    rmw_deg = float(interpolate_track(synthetic_storm())["rmw_km"].iloc[0]) / 111.2
    # Rows run north to south: reverse the northern part so both run outward from the track.
    north = swath[lats > TRACK_LAT + rmw_deg + 0.05, col][::-1]
    south = swath[lats < TRACK_LAT - rmw_deg - 0.05, col]
    assert np.all(np.diff(north) <= 1e-4)
    assert np.all(np.diff(south) <= 1e-4)
    assert north[0] > 50.0 and north[-1] < 30.0


def test_right_of_track_is_stronger(swath: np.ndarray) -> None:
    col = int(np.argmin(np.abs(CENTRAL_AMERICA.lons() + 87.5)))
    row = int(np.argmin(np.abs(CENTRAL_AMERICA.lats() - TRACK_LAT)))
    for offset in (10, 20, 40, 80):  # cells of 0.02°: north of a westward track is its right
        assert swath[row - offset, col] > swath[row + offset, col] + 1.0


def test_far_away_is_calm() -> None:
    grid = Grid(-110.0, 0.0, -60.0, 35.0, 0.1)
    state = interpolate_track(synthetic_storm()).iloc[40]
    field = wind_field_kt(state.to_dict(), grid)
    distance = _distance_km(grid, float(state["lat"]), float(state["lon"]))
    assert field[distance > 800.0].max() < 5.0
    assert field.max() == pytest.approx(100.0, rel=0.02)


def test_geotiff_round_trip(tmp_path: Path, swath: np.ndarray) -> None:
    data = swath.copy()
    data[0, 0] = np.nan
    path = write_geotiff(data, CENTRAL_AMERICA, tmp_path / "syn.tif", storm_id="SYN-2020", name="SYN")
    with rasterio.open(path) as src:
        assert src.crs.to_epsg() == 4326
        assert src.transform == CENTRAL_AMERICA.transform
        assert (src.height, src.width, src.count) == (300, 475, 1)
        assert src.dtypes == ("float32",)
        assert src.nodata == NODATA
        assert src.compression is not None and src.compression.value.lower() == "deflate"
        tags = src.tags()
        assert (tags["storm_id"], tags["name"], tags["units"], tags["method"]) == (
            "SYN-2020",
            "SYN",
            "kt",
            METHOD,
        )
        band = src.read(1, masked=True)
    assert band.mask[0, 0] and band.mask.sum() == 1
    np.testing.assert_array_equal(band.filled(np.nan)[1:], swath[1:])
    assert src.xy(0, 0) == pytest.approx((-92.49, 18.49))
    with pytest.raises(ValueError, match="does not match"):
        write_geotiff(swath[1:], CENTRAL_AMERICA, tmp_path / "bad.tif")


def test_eta_2020_over_honduras() -> None:
    mirror = Settings().data_mirror
    if mirror is None:
        pytest.skip("the shared geodata mirror is not available")
    fixes = read_dplyr_storms(mirror / "hazards" / "hurdat2-dplyr" / "storms.csv")
    eta = fixes[fixes["storm_id"] == "ETA-2020"]
    swath = storm_max_wind_kt(eta, CENTRAL_AMERICA)
    lats, lons = CENTRAL_AMERICA.lats()[:, None], CENTRAL_AMERICA.lons()[None, :]
    honduras = (lats >= 13.0) & (lats <= 16.5) & (lons >= -89.5) & (lons <= -83.1)
    peak = float(swath[honduras].max())
    assert 0.0 < peak <= float(eta["wind_kt"].max()) + 1e-3
    # Eta's 130-kt peak came ashore near 13.8N 83.5W: the box's east edge feels hurricane winds.
    assert peak >= 64.0
    # Tegucigalpa, 230 km inland from the Mosquitia coast, well below the landfall wind.
    teguc = swath[int(np.argmin(np.abs(lats[:, 0] - 14.07))), int(np.argmin(np.abs(lons[0] + 87.19)))]
    assert 0.0 < teguc < 64.0


SMALL = Grid(-1.5, 13.5, 1.5, 16.5, 0.01)


@settings(max_examples=25, deadline=None)
@given(
    wind=st.floats(20.0, 165.0),
    speed_deg=st.floats(0.0, 1.5),
    heading=st.floats(0.0, 2 * math.pi),
    lat=st.floats(-25.0, 25.0).filter(lambda v: abs(v) > 5.0),
    pressure=st.one_of(st.just(math.nan), st.floats(880.0, 1012.0)),
)
def test_peak_never_exceeds_the_record(
    wind: float, speed_deg: float, heading: float, lat: float, pressure: float
) -> None:
    grid = Grid(-1.5, lat - 1.5, 1.5, lat + 1.5, 0.01)
    fixes = synthetic_storm(
        wind,
        pressure,
        lat=lat,
        lon0=0.0,
        dlat=speed_deg * math.cos(heading),
        dlon=speed_deg * math.sin(heading),
        n=2,
    )
    state = interpolate_track(fixes).iloc[0].to_dict()
    field = wind_field_kt(state, grid)
    assert field.max() <= wind * (1 + 1e-5)
    assert field.max() >= 0.95 * wind


@settings(max_examples=25, deadline=None)
@given(wind=st.floats(20.0, 150.0), factor=st.floats(0.2, 3.0))
def test_stationary_field_scales_with_the_wind(wind: float, factor: float) -> None:
    # Fixed RMW and pressure fix the profile's shape; without motion the field is then linear in Vmax.
    def field(w: float) -> np.ndarray:
        fixes = synthetic_storm(w, 960.0, lat=15.0, lon0=0.0, dlon=0.0, n=2, rmw_nmi=15.0)
        return wind_field_kt(interpolate_track(fixes).iloc[0].to_dict(), SMALL)

    np.testing.assert_allclose(field(wind * factor), factor * field(wind), rtol=1e-4, atol=1e-3)
