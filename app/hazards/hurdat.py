"""Atlantic storm tracks: parsers for NOAA's raw HURDAT2 text and the dplyr `storms.csv`, one fix table.

Both readers return the same canonical DataFrame, one row per fix (FIX_COLUMNS):

- `storm_id`: the HURDAT2 identifier ("AL282020") for raw HURDAT2. The dplyr build dropped it, so
  there the id is `"{NAME}-{year}"` (e.g. "ETA-2020"); names are reused across years and unnamed
  systems carry their HURDAT2 id as name ("AL031987" → "AL031987-1987"). Should one (name, year) ever
  occur as two separate blocks of rows, the later blocks get "-2", "-3", … so ids stay unique per storm.
- `time` is a UTC timestamp; dplyr has no minutes, so off-synoptic fixes (landfalls at hh:30…) are
  rounded down to the hour there and can share a time with the synoptic fix before them.
- `lat` is +N, `lon` +E (west negative). `wind_kt` is the 1-min maximum sustained surface wind;
  `pressure_mb`, wind radii and RMW are NaN where the source has -999/-99 or nothing.
- `r34_kt_nmi` / `r64_nmi`: the largest of the four quadrant radii of 34-kt / 64-kt winds (nmi), or half
  the dplyr diameter. All-zero radii mean "no winds that strong" when the fix's wind is below the
  threshold (→ 0.0) but "not analysed" when it is not (→ NaN); before 2004 they are NaN.
- `rmw_nmi`: radius of maximum wind, only in the 21-field HURDAT2 layout (2021 on); else NaN.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
from shapely.geometry import LineString

from app.errors import DataError

FIX_COLUMNS = [
    "storm_id",
    "name",
    "year",
    "time",
    "record",
    "status",
    "status_text",
    "lat",
    "lon",
    "wind_kt",
    "pressure_mb",
    "r34_kt_nmi",
    "r64_nmi",
    "rmw_nmi",
]

# HURDAT2 status codes (NHC, "HURDAT2 format" description, 2022) and the words dplyr uses for them.
STATUS_TEXT = {
    "TD": "tropical depression",
    "TS": "tropical storm",
    "HU": "hurricane",
    "EX": "extratropical",
    "SD": "subtropical depression",
    "SS": "subtropical storm",
    "LO": "other low",
    "WV": "tropical wave",
    "DB": "disturbance",
}
STATUS_CODE = {text: code for code, text in STATUS_TEXT.items()}

DPLYR_COLUMNS = [
    "name",
    "year",
    "month",
    "day",
    "hour",
    "lat",
    "long",
    "status",
    "wind",
    "pressure",
    "tropicalstorm_force_diameter",
    "hurricane_force_diameter",
]

_HEADER_ID = re.compile(r"^[A-Z]{2}\d{2}(\d{4})$")
_LAT = re.compile(r"^(\d{1,2}(?:\.\d+)?)([NS])$")
_LON = re.compile(r"^(\d{1,3}(?:\.\d+)?)([EW])$")
_INT = re.compile(r"^-?\d+$")
_MISSING = -999
_MISSING_WIND = -99


class HurdatFormatError(DataError, ValueError):
    """Storm-track input that cannot be read; the message names the line and what is wrong."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(f"line {line}: {message}" if line is not None else message)
        self.line = line


def parse_hurdat2(source: str | Path) -> pd.DataFrame:
    """Parse NOAA HURDAT2 text (a path, or the text itself) into the canonical fix table."""
    lines = _read_text(source).splitlines()
    rows: list[dict[str, Any]] = []
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        storm_id, name, count = _parse_header(lines[i], i + 1)
        for k in range(count):
            j = i + 1 + k
            if j >= len(lines):
                raise HurdatFormatError(
                    f"storm {storm_id} announces {count} data lines but the input ends after {k} "
                    "(truncated file?)",
                    i + 1,
                )
            if _looks_like_header(lines[j]):
                raise HurdatFormatError(
                    f"storm {storm_id} announces {count} data lines but only {k} follow before the next "
                    f"header at line {j + 1}",
                    i + 1,
                )
            rows.append(_parse_data_line(lines[j], j + 1, storm_id, name))
        i += 1 + count
    if not rows:
        raise HurdatFormatError("no storms found in the HURDAT2 input")
    return _frame(rows)


def read_dplyr_storms(path: str | Path) -> pd.DataFrame:
    """Read the tidyverse dplyr `storms.csv` (HURDAT2 since 1975, no ids) into the canonical fix table."""
    raw = pd.read_csv(path, na_values=["NA", ""], keep_default_na=False)
    missing = [c for c in DPLYR_COLUMNS if c not in raw.columns]
    if missing:
        raise HurdatFormatError(f"{path}: missing columns {', '.join(missing)}")
    for col in ("year", "month", "day", "hour", "lat", "long", "wind"):
        values = pd.to_numeric(raw[col], errors="coerce")
        bad = values.isna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            # +2: the header is line 1 and rows count from 0.
            raise HurdatFormatError(
                f"{path}: column {col!r} has a non-numeric value {raw[col].iloc[row]!r}", row + 2
            )
        raw[col] = values
    unknown = sorted(set(raw["status"].astype(str)) - set(STATUS_CODE))
    if unknown:
        raise HurdatFormatError(f"{path}: unknown status values {unknown}; expected {sorted(STATUS_CODE)}")
    try:
        time = pd.to_datetime(raw[["year", "month", "day", "hour"]].astype(int), utc=True)
    except (ValueError, OverflowError) as exc:
        raise HurdatFormatError(f"{path}: invalid date in year/month/day/hour: {exc}") from exc
    wind = raw["wind"].astype(float)
    fixes = pd.DataFrame(
        {
            "storm_id": _dplyr_ids(raw["name"].astype(str), raw["year"].astype(int)),
            "name": raw["name"].astype(str),
            "year": raw["year"].astype(int),
            "time": time,
            "record": "",
            "status": raw["status"].map(STATUS_CODE),
            "status_text": raw["status"].astype(str),
            "lat": raw["lat"].astype(float),
            "lon": raw["long"].astype(float),
            "wind_kt": wind,
            "pressure_mb": pd.to_numeric(raw["pressure"], errors="coerce").astype(float),
            "r34_kt_nmi": _radius_from_diameter(raw["tropicalstorm_force_diameter"], wind, 34.0),
            "r64_nmi": _radius_from_diameter(raw["hurricane_force_diameter"], wind, 64.0),
            "rmw_nmi": np.nan,
        }
    )
    return fixes[FIX_COLUMNS].reset_index(drop=True)


def tracks(fixes: pd.DataFrame) -> gpd.GeoDataFrame:
    """One LineString per storm (EPSG:4326, time order) with its id, name, year, time span and peak."""
    records: list[dict[str, Any]] = []
    for storm_id, group in fixes.groupby("storm_id", sort=False):
        group = group.sort_values("time", kind="stable")
        coords = list(zip(group["lon"].to_numpy(float), group["lat"].to_numpy(float), strict=True))
        if len(coords) == 1:
            coords = coords * 2  # a one-fix storm still gets a (degenerate) line, so every storm has a row
        records.append(
            {
                "storm_id": storm_id,
                "name": group["name"].iloc[0],
                "year": int(group["year"].iloc[0]),
                "start_time": group["time"].iloc[0],
                "end_time": group["time"].iloc[-1],
                "n_fixes": len(group),
                "max_wind_kt": float(group["wind_kt"].max()),
                "min_pressure_mb": float(group["pressure_mb"].min()),
                "geometry": LineString(coords),
            }
        )
    columns = [
        "storm_id",
        "name",
        "year",
        "start_time",
        "end_time",
        "n_fixes",
        "max_wind_kt",
        "min_pressure_mb",
        "geometry",
    ]
    return gpd.GeoDataFrame(pd.DataFrame(records, columns=columns), geometry="geometry", crs="EPSG:4326")


def fixes_in_box(fixes: pd.DataFrame, bbox: tuple[float, float, float, float]) -> pd.DataFrame:
    """The fixes inside (west, south, east, north) in degrees, edges included."""
    west, south, east, north = bbox
    if not (west <= east and south <= north):
        raise ValueError(
            f"bbox must be (west, south, east, north) with west <= east and south <= north: {bbox}"
        )
    inside = fixes["lon"].between(west, east) & fixes["lat"].between(south, north)
    return fixes.loc[inside]


def _read_text(source: str | Path) -> str:
    if isinstance(source, Path) or ("\n" not in source and "," not in source):
        return Path(source).read_text(encoding="utf-8")
    return source


def _fields(line: str) -> list[str]:
    fields = [f.strip() for f in line.split(",")]
    if fields and fields[-1] == "":
        fields.pop()  # every HURDAT2 line ends with a comma
    return fields


def _looks_like_header(line: str) -> bool:
    fields = _fields(line)
    return len(fields) == 3 and bool(_HEADER_ID.match(fields[0]))


def _parse_header(line: str, lineno: int) -> tuple[str, str, int]:
    fields = _fields(line)
    if len(fields) != 3 or not _HEADER_ID.match(fields[0]):
        hint = " (more data lines than the previous header announced?)" if len(fields) >= 20 else ""
        raise HurdatFormatError(
            f"expected a storm header like 'AL092020, ETA, 58,' but got {line.strip()[:60]!r}{hint}", lineno
        )
    storm_id, name, count = fields
    if not _INT.match(count) or int(count) < 1:
        raise HurdatFormatError(
            f"storm {storm_id}: data-line count {count!r} is not a positive integer", lineno
        )
    return storm_id, name, int(count)


def _parse_data_line(line: str, lineno: int, storm_id: str, name: str) -> dict[str, Any]:
    fields = _fields(line)
    if len(fields) not in (20, 21):
        raise HurdatFormatError(
            f"storm {storm_id}: expected 20 or 21 comma-separated fields (date, time, record, status, lat, "
            f"lon, wind, pressure, 12 wind radii[, RMW]) but got {len(fields)}",
            lineno,
        )
    date, hhmm, record, status, lat, lon, wind, pressure = fields[:8]
    if not re.fullmatch(r"\d{8}", date) or not re.fullmatch(r"\d{1,4}", hhmm):
        raise HurdatFormatError(
            f"storm {storm_id}: bad date/time {date!r} {hhmm!r}: expected YYYYMMDD, HHMM", lineno
        )
    hhmm = hhmm.zfill(4)
    try:
        time = datetime(
            int(date[:4]), int(date[4:6]), int(date[6:]), int(hhmm[:2]), int(hhmm[2:]), tzinfo=UTC
        )
    except ValueError as exc:
        raise HurdatFormatError(f"storm {storm_id}: invalid date/time {date} {hhmm}: {exc}", lineno) from exc
    if len(record) > 1 or not (record == "" or record.isalpha()):
        raise HurdatFormatError(
            f"storm {storm_id}: record identifier {record!r} is not a single letter", lineno
        )
    if len(status) != 2 or not status.isalpha():
        raise HurdatFormatError(f"storm {storm_id}: status {status!r} is not a two-letter code", lineno)
    wind_kt = _number(wind, "wind", lineno, storm_id)
    radii = [_number(v, "wind radius", lineno, storm_id) for v in fields[8:20]]
    rmw = _number(fields[20], "radius of maximum wind", lineno, storm_id) if len(fields) == 21 else np.nan
    return {
        "storm_id": storm_id,
        "name": name,
        "year": int(storm_id[-4:]),
        "time": time,
        "record": record,
        "status": status,
        "status_text": STATUS_TEXT.get(status, ""),
        "lat": _coordinate(lat, _LAT, "S", 90.0, "latitude", lineno, storm_id),
        "lon": _coordinate(lon, _LON, "W", 180.0, "longitude", lineno, storm_id),
        "wind_kt": np.nan if wind_kt == _MISSING_WIND else wind_kt,
        "pressure_mb": _missing_to_nan(_number(pressure, "pressure", lineno, storm_id)),
        "r34_kt_nmi": _radius_from_quadrants(radii[0:4], wind_kt, 34.0),
        "r64_nmi": _radius_from_quadrants(radii[8:12], wind_kt, 64.0),
        "rmw_nmi": np.nan if rmw <= 0 else rmw,
    }


def _number(text: str, what: str, lineno: int, storm_id: str) -> float:
    if not _INT.match(text):
        raise HurdatFormatError(f"storm {storm_id}: {what} {text!r} is not an integer", lineno)
    return float(text)


def _missing_to_nan(value: float) -> float:
    return np.nan if value == _MISSING else value


def _coordinate(
    text: str, pattern: re.Pattern[str], negative: str, limit: float, what: str, lineno: int, storm_id: str
) -> float:
    match = pattern.match(text)
    if not match:
        hemispheres = "N or S" if what == "latitude" else "E or W"
        raise HurdatFormatError(
            f"storm {storm_id}: bad {what} {text!r}: expected degrees followed by {hemispheres}", lineno
        )
    value = float(match.group(1))
    if value > limit:
        raise HurdatFormatError(f"storm {storm_id}: {what} {text!r} is out of range", lineno)
    return -value if match.group(2) == negative else value


def _radius_from_quadrants(quadrants: list[float], wind_kt: float, threshold_kt: float) -> float:
    known = [q for q in quadrants if q >= 0]
    if not known:
        return np.nan
    largest = max(known)
    if largest > 0:
        return largest
    # All zero: a true "no such winds" only when the storm is weaker than the threshold.
    return 0.0 if 0 <= wind_kt < threshold_kt else np.nan


def _radius_from_diameter(diameter: pd.Series, wind_kt: pd.Series, threshold_kt: float) -> pd.Series:
    radius = pd.to_numeric(diameter, errors="coerce").astype(float) / 2.0
    unknown_zero = (radius == 0) & (wind_kt >= threshold_kt)
    return radius.mask(unknown_zero | (radius < 0))


def _dplyr_ids(names: pd.Series, years: pd.Series) -> pd.Series:
    key = names.str.upper() + "-" + years.astype(str)
    block = (key != key.shift()).cumsum()
    blocks = pd.DataFrame({"key": key, "block": block}).drop_duplicates("block")
    repeat = blocks.groupby("key").cumcount()
    blocks["storm_id"] = np.where(repeat == 0, blocks["key"], blocks["key"] + "-" + (repeat + 1).astype(str))
    return block.map(blocks.set_index("block")["storm_id"])


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    fixes = pd.DataFrame(rows, columns=FIX_COLUMNS)
    fixes["time"] = pd.to_datetime(fixes["time"], utc=True)
    for col in ("lat", "lon", "wind_kt", "pressure_mb", "r34_kt_nmi", "r64_nmi", "rmw_nmi"):
        fixes[col] = fixes[col].astype(float)
    fixes["year"] = fixes["year"].astype(int)
    return fixes
