"""A parametric hurricane wind field and its rasterisation: the lifetime maximum wind of one storm per cell.

Method (all wind speeds are 1-min sustained surface winds; rasters are in knots, like HURDAT2):

1. Each fix gets a radius of maximum wind Rmax: the record's RMW when given (HURDAT2 2021+), else
   Willoughby, Darling & Rahn (2006, Mon. Wea. Rev. 134, 1102-1120):
   Rmax = 46.4 exp(-0.0155 Vmax + 0.0169 |lat|) km, Vmax in m/s.
2. The symmetric profile is the Holland (1980, Mon. Wea. Rev. 108, 1212-1218) gradient wind
   V(r) = sqrt(B Δp/ρ (Rmax/r)^B exp(-(Rmax/r)^B) + (r f/2)^2) - r f/2, with
   B = 1.881 - 0.00557 Rmax[km] - 0.01295 |lat| (Vickery & Wadhera 2008, J. Appl. Meteor. Climatol.
   47, 2497-2517), clipped to Holland's range [1, 2.5]; Δp = 1010 hPa - central pressure when known,
   else from the Atkinson & Holliday (1977, Mon. Wea. Rev. 105, 421-427) wind-pressure relation
   Vmax[kt] = 6.7 Δp^0.644. Only the shape is used: the profile is divided by its own peak and scaled
   to the record's wind, so a constant gradient-to-surface reduction factor (≈0.8 over sea) cancels
   and none is applied; no extra land-roughness reduction either (the record's wind already decays
   inland).
3. Forward-motion asymmetry: the translation velocity Vt (central differences of consecutive fixes) is
   added as a vector to the cyclonic flow, tapered as Vt·Rmax·r/(Rmax²+r²) (Jelesnianski 1965, Mon.
   Wea. Rev. 93, 343-358), i.e. 0.5·Vt at the RMW, vanishing at the centre and far away, strongest
   right of track (left in the southern hemisphere). The record's wind already includes motion, so
   the symmetric peak is Vmax - 0.5·Vt: the modelled maximum equals the record's wind (up to grid sampling)
   (Vt is capped at Vmax so the symmetric part keeps at least half of it).
4. Between 6-hourly fixes the track is interpolated linearly in time, lat, lon, wind, Rmax, Δp and
   Vt, at least hourly and finer when the centre would otherwise move more than Rmax/4 between
   steps; each cell keeps the maximum over the storm's life. Positions more than CUTOFF_KM from the
   grid are skipped (their modelled wind at the grid is a few knots at most).

Distances use a local equirectangular approximation about each centre, good to well under 1% within the
few hundred km that matter.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
import rasterio
from affine import Affine
from rasterio.crs import CRS

FloatArray = npt.NDArray[np.float64]
Float32Array = npt.NDArray[np.float32]

MS_PER_KT = 1852.0 / 3600.0
KM_PER_NMI = 1.852
EARTH_RADIUS_KM = 6371.0
OMEGA = 7.2921e-5  # Earth's rotation, rad/s
AIR_DENSITY = 1.15  # kg/m³, near-surface air in a hurricane (Holland 1980)
AMBIENT_PRESSURE_HPA = 1010.0
CUTOFF_KM = 1000.0
NODATA = -9999.0
WIND_UNITS = "kt"
METHOD = (
    "Holland (1980) gradient profile scaled to the HURDAT2 1-min surface wind; B after Vickery & Wadhera "
    "(2008); Rmax from the record or Willoughby, Darling & Rahn (2006); Δp from pressure or Atkinson & "
    "Holliday (1977); motion asymmetry Vt·Rr/(R²+r²) (Jelesnianski 1965); track interpolated ≤1 h and "
    "≤Rmax/4; lifetime maximum per cell"
)

STATE_COLUMNS = [
    "time",
    "lat",
    "lon",
    "wind_ms",
    "rmw_km",
    "dp_hpa",
    "holland_b",
    "vt_east_ms",
    "vt_north_ms",
]


@dataclass(frozen=True)
class Grid:
    """A north-up lon/lat raster grid (EPSG:4326): bounds in degrees and a square cell size."""

    west: float
    south: float
    east: float
    north: float
    resolution: float

    def __post_init__(self) -> None:
        if not (self.west < self.east and self.south < self.north and self.resolution > 0):
            raise ValueError(f"invalid grid {self}: need west < east, south < north, resolution > 0")
        for span in (self.east - self.west, self.north - self.south):
            cells = span / self.resolution
            if abs(cells - round(cells)) > 1e-6:
                raise ValueError(f"grid span {span} is not a whole number of {self.resolution}° cells")

    @property
    def width(self) -> int:
        """Number of columns."""
        return round((self.east - self.west) / self.resolution)

    @property
    def height(self) -> int:
        """Number of rows."""
        return round((self.north - self.south) / self.resolution)

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns), as numpy and rasterio expect."""
        return self.height, self.width

    @property
    def transform(self) -> Affine:
        """The affine transform from (col, row) to (lon, lat) of the upper-left corner."""
        return Affine(self.resolution, 0.0, self.west, 0.0, -self.resolution, self.north)

    def lons(self) -> FloatArray:
        """Longitudes of the cell centres, west to east."""
        return self.west + (np.arange(self.width, dtype=np.float64) + 0.5) * self.resolution

    def lats(self) -> FloatArray:
        """Latitudes of the cell centres, north to south (row order)."""
        return self.north - (np.arange(self.height, dtype=np.float64) + 0.5) * self.resolution


CENTRAL_AMERICA = Grid(-92.5, 12.5, -83.0, 18.5, 0.02)


def willoughby_rmw_km(wind_ms: FloatArray | float, lat: FloatArray | float) -> FloatArray:
    """Radius of maximum wind (km) from Willoughby, Darling & Rahn (2006): 46.4 exp(-0.0155 V + 0.0169 |φ|)."""
    return np.asarray(46.4 * np.exp(-0.0155 * np.asarray(wind_ms) + 0.0169 * np.abs(lat)), dtype=np.float64)


def holland_b(rmw_km: FloatArray | float, lat: FloatArray | float) -> FloatArray:
    """Holland B from Vickery & Wadhera (2008): 1.881 - 0.00557 Rmax[km] - 0.01295 |φ|, clipped to [1, 2.5]."""
    b = 1.881 - 0.00557 * np.asarray(rmw_km) - 0.01295 * np.abs(lat)
    return np.asarray(np.clip(b, 1.0, 2.5), dtype=np.float64)


def pressure_deficit_hpa(wind_kt: FloatArray | float) -> FloatArray:
    """Central pressure deficit (hPa) from the Atkinson & Holliday (1977) relation V[kt] = 6.7 Δp^0.644."""
    return np.asarray((np.asarray(wind_kt) / 6.7) ** (1.0 / 0.644), dtype=np.float64)


def holland_gradient_wind_ms(
    r_km: FloatArray, rmw_km: float, b: float, dp_hpa: float, lat: float
) -> FloatArray:
    """Holland (1980) gradient wind (m/s) at distances r_km from the centre."""
    r_m = np.maximum(np.asarray(r_km, dtype=np.float64), 1e-3) * 1000.0
    x = (rmw_km * 1000.0 / r_m) ** b
    half_rf = r_m * abs(2.0 * OMEGA * math.sin(math.radians(lat))) / 2.0
    cyclostrophic = b * dp_hpa * 100.0 / AIR_DENSITY * x * np.exp(-x)
    return np.asarray(np.sqrt(cyclostrophic + half_rf**2) - half_rf, dtype=np.float64)


def interpolate_track(fixes: pd.DataFrame, max_step_hours: float = 1.0) -> pd.DataFrame:
    """The storm state (STATE_COLUMNS) at fixes and interpolated steps: ≤ max_step_hours and ≤ Rmax/4 apart."""
    f = _clean_fixes(fixes)
    n = len(f)
    seconds = (f["time"] - f["time"].iloc[0]).dt.total_seconds().to_numpy(np.float64)
    lat = f["lat"].to_numpy(np.float64)
    lon = f["lon"].to_numpy(np.float64)
    wind_kt = f["wind_kt"].to_numpy(np.float64)
    wind_ms = wind_kt * MS_PER_KT
    rmw_record = f["rmw_nmi"].to_numpy(np.float64) * KM_PER_NMI
    rmw_km = np.where(np.isfinite(rmw_record) & (rmw_record > 0), rmw_record, willoughby_rmw_km(wind_ms, lat))
    dp_record = AMBIENT_PRESSURE_HPA - f["pressure_mb"].to_numpy(np.float64)
    # Weak systems can report pressure at or above ambient: the wind-pressure relation is the better guess.
    dp_hpa = np.where(np.isfinite(dp_record) & (dp_record >= 2.0), dp_record, pressure_deficit_hpa(wind_kt))
    vt_east, vt_north = _translation_ms(seconds, lat, lon)

    index = np.arange(n, dtype=np.float64)
    if n > 1:
        seg_hours = np.diff(seconds) / 3600.0
        seg_km = _distance_km(lat[:-1], lon[:-1], lat[1:], lon[1:])
        steps = np.maximum.reduce(
            [
                np.ones(n - 1),
                np.ceil(seg_hours / max_step_hours),
                np.ceil(seg_km / (0.25 * np.minimum(rmw_km[:-1], rmw_km[1:]))),
            ]
        ).astype(int)
        index = np.concatenate([i + np.arange(k) / k for i, k in enumerate(steps)] + [np.array([n - 1.0])])

    def at(values: FloatArray) -> FloatArray:
        return np.interp(index, np.arange(n, dtype=np.float64), values)

    s_lat = at(lat)
    s_rmw = at(rmw_km)
    states = pd.DataFrame(
        {
            "time": f["time"].iloc[0] + pd.to_timedelta(at(seconds), unit="s"),
            "lat": s_lat,
            "lon": at(lon),
            "wind_ms": at(wind_ms),
            "rmw_km": s_rmw,
            "dp_hpa": at(dp_hpa),
            "holland_b": holland_b(s_rmw, s_lat),
            "vt_east_ms": at(vt_east),
            "vt_north_ms": at(vt_north),
        }
    )
    return states[STATE_COLUMNS]


def wind_field_kt(state: Mapping[str, float], grid: Grid) -> Float32Array:
    """The surface wind (kt, float32) on the grid for one storm state (a row of `interpolate_track`)."""
    return _Field(grid).wind_kt(state).copy()


def storm_max_wind_kt(
    fixes: pd.DataFrame, grid: Grid = CENTRAL_AMERICA, max_step_hours: float = 1.0
) -> Float32Array:
    """Per cell, the maximum 1-min surface wind (kt, float32) over one storm's life; 0 where it never gets."""
    out = np.zeros(grid.shape, dtype=np.float32)
    states = interpolate_track(fixes, max_step_hours)
    near = _distance_to_grid_km(states["lat"].to_numpy(), states["lon"].to_numpy(), grid) <= CUTOFF_KM
    field = _Field(grid)
    for state in states.loc[near].to_dict("records"):
        np.maximum(out, field.wind_kt(state), out=out)
    return out


class _Field:
    """Evaluates the wind of one storm state on a grid into reused float32 buffers.

    Fresh half-megabyte temporaries per operation cost more in page faults than the arithmetic, and
    float32 makes pow/exp/sqrt several times faster; the raster is float32 anyway.
    """

    def __init__(self, grid: Grid) -> None:
        self.lats = grid.lats()
        self.lons = grid.lons()
        self.dx, self.r, self.x, self.g, self.h, self.t = (np.empty(grid.shape, np.float32) for _ in range(6))

    def wind_kt(self, state: Mapping[str, float]) -> Float32Array:
        """The wind (kt) for one state, in a buffer that the next call overwrites."""
        lat = float(state["lat"])
        rmw = float(state["rmw_km"])
        b = float(state["holland_b"])
        dp = float(state["dp_hpa"])
        wind = float(state["wind_ms"])
        vte = float(state["vt_east_ms"])
        vtn = float(state["vt_north_ms"])

        vt = math.hypot(vte, vtn)
        vt_capped = min(vt, wind)
        if vt > 0:
            vte, vtn = vte * vt_capped / vt, vtn * vt_capped / vt
        peak_sym = wind - 0.5 * vt_capped
        radii = rmw * np.linspace(0.3, 1.5, 1201)
        profile_peak = float(np.max(holland_gradient_wind_ms(radii, rmw, b, dp, lat)))

        dlon = (self.lons - float(state["lon"]) + 180.0) % 360.0 - 180.0
        x_scale = (EARTH_RADIUS_KM * np.cos(np.radians((self.lats + lat) / 2.0))).astype(np.float32)
        dy = (EARTH_RADIUS_KM * np.radians(self.lats - lat)).astype(np.float32)[:, None]
        dx, r, x, g, h, t = self.dx, self.r, self.x, self.g, self.h, self.t

        np.multiply(x_scale[:, None], np.radians(dlon).astype(np.float32)[None, :], out=dx)
        np.multiply(dx, dx, out=r)
        r += dy * dy
        np.sqrt(r, out=r)
        np.maximum(r, np.float32(1e-3), out=r)
        # Holland (1980) gradient wind: sqrt(B Δp/ρ x e^-x + (rf/2)²) - rf/2 with x = (Rmax/r)^B.
        np.divide(rmw, r, out=x)
        np.power(x, b, out=x)
        np.negative(x, out=g)
        np.exp(g, out=g)
        g *= x
        g *= b * dp * 100.0 / AIR_DENSITY
        np.multiply(r, 1000.0 * abs(OMEGA * math.sin(math.radians(lat))), out=h)
        np.multiply(h, h, out=t)
        g += t
        np.sqrt(g, out=g)
        g -= h
        # min(…) guards the sampled peak being a hair below the true one; g becomes V_sym / r.
        np.minimum(g, profile_peak, out=g)
        g *= peak_sym / profile_peak
        g /= r
        # Jelesnianski taper Rmax r / (Rmax² + r²)
        np.multiply(r, r, out=t)
        t += rmw * rmw
        np.divide(r, t, out=t)
        t *= rmw
        spin = 1.0 if lat >= 0 else -1.0  # cyclonic: counter-clockwise north of the equator
        u, v = x, r
        np.multiply(g, dy, out=u)
        u *= -spin
        np.multiply(t, vte, out=h)
        u += h
        np.multiply(g, dx, out=v)
        v *= spin
        np.multiply(t, vtn, out=h)
        v += h
        u *= u
        v *= v
        u += v
        np.sqrt(u, out=u)
        u *= 1.0 / MS_PER_KT
        return u


def write_geotiff(
    array: npt.ArrayLike, grid: Grid, path: str | Path, nodata: float = NODATA, **tags: object
) -> Path:
    """Write a single-band float32 GeoTIFF (EPSG:4326, deflate) with units/method and the given tags."""
    data = np.asarray(array, dtype=np.float32)
    if data.shape != grid.shape:
        raise ValueError(f"array shape {data.shape} does not match the grid {grid.shape}")
    data = np.where(np.isfinite(data), data, np.float32(nodata))
    path = Path(path)
    profile = {
        "driver": "GTiff",
        "width": grid.width,
        "height": grid.height,
        "count": 1,
        "dtype": "float32",
        "crs": CRS.from_epsg(4326),
        "transform": grid.transform,
        "nodata": nodata,
        "compress": "deflate",
        "predictor": 3,
    }
    all_tags = {"units": WIND_UNITS, "method": METHOD} | {k: str(v) for k, v in tags.items()}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
        dst.update_tags(**all_tags)
        dst.set_band_description(1, f"maximum 1-min sustained surface wind ({WIND_UNITS})")
    return path


def _clean_fixes(fixes: pd.DataFrame) -> pd.DataFrame:
    if "storm_id" in fixes.columns and fixes["storm_id"].nunique() > 1:
        raise ValueError(f"expected the fixes of one storm, got {fixes['storm_id'].nunique()} storm ids")
    f = fixes.dropna(subset=["lat", "lon", "wind_kt", "time"]).sort_values("time", kind="stable")
    # dplyr rounds off-synoptic fixes down to the hour: keep the first fix at a repeated time.
    f = f.drop_duplicates("time", keep="first")
    if f.empty:
        raise ValueError("no fixes with position, time and wind")
    if "rmw_nmi" not in f.columns:
        f = f.assign(rmw_nmi=np.nan)
    if "pressure_mb" not in f.columns:
        f = f.assign(pressure_mb=np.nan)
    return f.reset_index(drop=True)


def _distance_km(lat1: FloatArray, lon1: FloatArray, lat2: FloatArray, lon2: FloatArray) -> FloatArray:
    dlon = (np.asarray(lon2) - lon1 + 180.0) % 360.0 - 180.0
    dx = np.radians(dlon) * np.cos(np.radians((np.asarray(lat1) + lat2) / 2.0))
    dy = np.radians(np.asarray(lat2) - lat1)
    return np.asarray(EARTH_RADIUS_KM * np.hypot(dx, dy), dtype=np.float64)


def _translation_ms(seconds: FloatArray, lat: FloatArray, lon: FloatArray) -> tuple[FloatArray, FloatArray]:
    n = len(seconds)
    if n < 2:
        return np.zeros(n), np.zeros(n)
    before = np.r_[0, np.arange(n - 1)]
    after = np.r_[np.arange(1, n), n - 1]
    dt = seconds[after] - seconds[before]
    dlon = (lon[after] - lon[before] + 180.0) % 360.0 - 180.0
    mid_lat = np.radians((lat[after] + lat[before]) / 2.0)
    east_m = EARTH_RADIUS_KM * 1000.0 * np.radians(dlon) * np.cos(mid_lat)
    north_m = EARTH_RADIUS_KM * 1000.0 * np.radians(lat[after] - lat[before])
    return east_m / dt, north_m / dt


def _distance_to_grid_km(lat: FloatArray, lon: FloatArray, grid: Grid) -> FloatArray:
    near_lat = np.clip(lat, grid.south, grid.north)
    near_lon = np.clip(lon, grid.west, grid.east)
    return _distance_km(lat, lon, near_lat, near_lon)
