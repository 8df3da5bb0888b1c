"""HURDAT2 and dplyr storm-track parsers, against the mirrored files and malformed inputs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from shapely.geometry import LineString

from app.hazards.hurdat import (
    FIX_COLUMNS,
    STATUS_TEXT,
    HurdatFormatError,
    fixes_in_box,
    parse_hurdat2,
    read_dplyr_storms,
    tracks,
)
from app.settings import Settings

BOX = (-92.5, 12.5, -83.0, 18.5)


@pytest.fixture(scope="module")
def hazards_dir() -> Path:
    mirror = Settings().data_mirror
    if mirror is None or not (mirror / "hazards").is_dir():
        pytest.skip("the shared geodata mirror is not available")
    return mirror / "hazards"


@pytest.fixture(scope="module")
def raw2019(hazards_dir: Path) -> pd.DataFrame:
    return parse_hurdat2(hazards_dir / "hurdat2-raw-sample" / "hurdat2_2019.txt")


@pytest.fixture(scope="module")
def dplyr(hazards_dir: Path) -> pd.DataFrame:
    return read_dplyr_storms(hazards_dir / "hurdat2-dplyr" / "storms.csv")


def _at(fixes: pd.DataFrame, storm_id: str, when: str) -> pd.Series:
    rows = fixes[(fixes["storm_id"] == storm_id) & (fixes["time"] == pd.Timestamp(when, tz="UTC"))]
    assert len(rows) == 1
    return rows.iloc[0]


def test_raw_2019_shape(raw2019: pd.DataFrame) -> None:
    # The sample lacks AL012019 (Andrea): 19 storms, 486 data lines.
    assert list(raw2019.columns) == FIX_COLUMNS
    assert raw2019["storm_id"].nunique() == 19
    assert len(raw2019) == 486
    assert raw2019["storm_id"].iloc[0] == "AL022019"
    assert (raw2019["year"] == 2019).all()
    assert str(raw2019["time"].dt.tz) == "UTC"
    assert set(raw2019["status"]) <= set(STATUS_TEXT)
    assert raw2019["rmw_nmi"].isna().all()  # the 20-field layout has no RMW


def test_raw_2019_values(raw2019: pd.DataFrame) -> None:
    first = raw2019[raw2019["storm_id"] == "AL022019"].iloc[0]
    assert first["name"] == "BARRY"
    assert first["time"] == pd.Timestamp("2019-07-10 12:00", tz="UTC")
    assert (first["lat"], first["lon"], first["wind_kt"], first["pressure_mb"]) == (28.5, -86.5, 25.0, 1009.0)
    assert (first["status"], first["record"], first["r34_kt_nmi"]) == ("DB", "", 0.0)

    landfall = _at(raw2019, "AL022019", "2019-07-13 15:00")
    assert (landfall["record"], landfall["status"], landfall["lat"], landfall["lon"]) == (
        "L",
        "HU",
        29.6,
        -92.2,
    )
    assert landfall["r34_kt_nmi"] == 150.0
    assert landfall["r64_nmi"] == 40.0

    dorian = raw2019[raw2019["name"] == "DORIAN"]
    assert dorian["storm_id"].iloc[0] == "AL052019"
    assert len(dorian) == 70
    assert dorian["wind_kt"].max() == 160.0
    assert raw2019.groupby("storm_id")["wind_kt"].max()["AL132019"] == 140.0  # Lorenzo
    # Sebastien ends over the British Isles: west longitudes stay negative.
    assert raw2019.iloc[-1][["lat", "lon"]].tolist() == [51.3, -2.1]


def test_raw_path_and_text_agree(hazards_dir: Path, raw2019: pd.DataFrame) -> None:
    path = hazards_dir / "hurdat2-raw-sample" / "hurdat2_2019.txt"
    pd.testing.assert_frame_equal(parse_hurdat2(str(path)), raw2019)
    pd.testing.assert_frame_equal(parse_hurdat2(path.read_text()), raw2019)


LINE_20 = "20201103, 0000,  , HU, 14.3N,  82.5W, 130,  929,  140,  130,   90,  120,   70,   60,   50,   60,   35,   30,   25,   30,"
LINE_21 = (
    "20210829, 1655, L, HU, 29.1N,  90.2W, 130,  931,  130,  110,   80,  110,   70,   60,   40,   60,   45,"
    "   35,   20,   30,   10"
)


def test_21_field_layout_and_missing_values() -> None:
    text = "\r\n".join(
        [
            "AL092021,                IDA,      3,",
            LINE_21 + ",",
            LINE_21.replace("1655, L", "1800,  ").replace("931", "-999") + ",",
            "20210829, 1900,  , HU, 29.2S,  90.3E,  -99, -999, -999, -999, -999, -999, -999, -999, -999, -999,"
            " -999, -999, -999, -999, -999,",
            "",
        ]
    )
    fixes = parse_hurdat2(text)
    assert len(fixes) == 3
    first, second, third = (fixes.iloc[i] for i in range(3))
    assert (first["record"], first["time"]) == ("L", pd.Timestamp("2021-08-29 16:55", tz="UTC"))
    assert (first["rmw_nmi"], first["r34_kt_nmi"], first["r64_nmi"]) == (10.0, 130.0, 45.0)
    assert pd.isna(second["pressure_mb"])
    assert (third["lat"], third["lon"]) == (-29.2, 90.3)
    assert third[["wind_kt", "pressure_mb", "r34_kt_nmi", "r64_nmi", "rmw_nmi"]].isna().all()


def test_all_zero_radii_are_unknown_when_the_storm_is_strong_enough() -> None:
    strong = LINE_20.replace(" 140,  130,   90,  120,", "   0,    0,    0,    0,")
    weak = strong.replace(" 130,  929", "  30, 1005")
    fixes = parse_hurdat2(f"AL292020, ETA, 2,\n{strong}\n{weak}\n")
    assert pd.isna(fixes["r34_kt_nmi"].iloc[0])  # 130 kt with no 34-kt radii: not analysed
    assert fixes["r34_kt_nmi"].iloc[1] == 0.0  # 30 kt: truly no 34-kt winds
    assert fixes["r64_nmi"].iloc[0] == 35.0


HEADER = "AL292020,                ETA,      2,"
GOOD = f"{HEADER}\n{LINE_20}\n{LINE_20.replace('0000', '0600')}\n"


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        (GOOD.replace("2,", "3,", 1) + "AL302020, THETA, 1,\n" + LINE_20, 1, "only 2 follow"),
        (GOOD.replace("2,", "1,", 1), 3, "expected a storm header"),
        (GOOD.replace("2,", "3,", 1), 1, "truncated"),
        (GOOD[: GOOD.rindex("130,") - 8], 3, "expected 20 or 21"),
        (GOOD.replace("14.3N", "14.3X", 1), 2, "bad latitude '14.3X'"),
        (GOOD.replace("82.5W", "82.5N", 1), 2, "bad longitude '82.5N'"),
        (GOOD.replace(" 130,  929", " 13O,  929", 1), 2, "wind '13O' is not an integer"),
        (GOOD.replace("20201103", "20201133", 1), 2, "invalid date"),
        (LINE_20 + "\n", 1, "expected a storm header"),
        (GOOD.replace("2,", "two,", 1), 1, "not a positive integer"),
    ],
)
def test_malformed_hurdat2(text: str, line: int, fragment: str) -> None:
    with pytest.raises(HurdatFormatError) as info:
        parse_hurdat2(text)
    assert isinstance(info.value, ValueError)
    assert info.value.line == line
    assert str(info.value).startswith(f"line {line}: ")
    assert fragment in str(info.value)


def test_empty_input_is_an_error() -> None:
    with pytest.raises(HurdatFormatError, match="no storms"):
        parse_hurdat2("\n\n")


def test_dplyr_counts(dplyr: pd.DataFrame) -> None:
    assert list(dplyr.columns) == FIX_COLUMNS
    assert len(dplyr) == 20_778
    assert dplyr["storm_id"].nunique() == 693
    assert dplyr.groupby("storm_id")["year"].nunique().max() == 1
    assert (dplyr["storm_id"] == "ETA-2020").sum() == 58
    assert (dplyr["storm_id"] == "IOTA-2020").sum() == 26
    last_iota = dplyr[dplyr["storm_id"] == "IOTA-2020"].iloc[-1]
    assert (last_iota["lat"], last_iota["lon"]) == (13.7, -89.0)
    assert last_iota["time"] == pd.Timestamp("2020-11-18 12:00", tz="UTC")
    # Unnamed systems carry their HURDAT2 id as a name in dplyr.
    assert "AL031987-1987" in set(dplyr["storm_id"])
    assert dplyr["record"].eq("").all() and dplyr["rmw_nmi"].isna().all()


def test_dplyr_values(dplyr: pd.DataFrame) -> None:
    landfall = _at(dplyr, "ETA-2020", "2020-11-03 21:00")
    assert (landfall["name"], landfall["status"], landfall["status_text"]) == ("Eta", "HU", "hurricane")
    assert (landfall["lat"], landfall["lon"], landfall["wind_kt"], landfall["pressure_mb"]) == (
        13.8,
        -83.5,
        120.0,
        940.0,
    )
    assert (landfall["r34_kt_nmi"], landfall["r64_nmi"]) == (80.0, 20.0)
    assert dplyr[dplyr["storm_id"] == "ETA-2020"]["wind_kt"].max() == 130.0
    assert set(dplyr["status"]) == set(STATUS_TEXT)
    assert dplyr[dplyr["year"] < 2004]["r34_kt_nmi"].isna().all()


def test_dplyr_rounds_off_synoptic_times_to_the_hour(dplyr: pd.DataFrame) -> None:
    # dplyr dropped the minutes: 26 off-synoptic fixes now share the hour of a synoptic fix.
    assert dplyr.duplicated(["storm_id", "time"]).sum() == 26


def test_dplyr_box(dplyr: pd.DataFrame) -> None:
    inside = fixes_in_box(dplyr, BOX)
    assert len(inside) == 479
    assert inside["storm_id"].nunique() == 71
    assert {"MITCH-1998", "ETA-2020", "IOTA-2020"} <= set(inside["storm_id"])
    with pytest.raises(ValueError, match="west <= east"):
        fixes_in_box(dplyr, (-83.0, 12.5, -92.5, 18.5))


def test_dplyr_ids_stay_unique_for_repeated_blocks(tmp_path: Path) -> None:
    header = "name,year,month,day,hour,lat,long,status,category,wind,pressure,tropicalstorm_force_diameter,hurricane_force_diameter"
    rows = [
        "Ana,2000,6,1,0,20,-60,tropical storm,NA,40,1000,NA,NA",
        "Bob,2000,6,1,0,21,-61,tropical storm,NA,40,1000,NA,NA",
        "Ana,2000,9,1,0,22,-62,hurricane,1,70,980,100,20",
        "Ana,2001,6,1,0,20,-60,tropical depression,NA,30,1008,NA,NA",
    ]
    path = tmp_path / "storms.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    fixes = read_dplyr_storms(path)
    assert fixes["storm_id"].tolist() == ["ANA-2000", "BOB-2000", "ANA-2000-2", "ANA-2001"]
    assert fixes["status"].tolist() == ["TS", "TS", "HU", "TD"]


def test_dplyr_bad_inputs(tmp_path: Path) -> None:
    path = tmp_path / "storms.csv"
    path.write_text("name,year,lat\nAna,2000,20\n")
    with pytest.raises(HurdatFormatError, match="missing columns month, day, hour"):
        read_dplyr_storms(path)
    header = "name,year,month,day,hour,lat,long,status,category,wind,pressure,tropicalstorm_force_diameter,hurricane_force_diameter"
    path.write_text(f"{header}\nAna,2000,6,1,0,20,-60,typhoon,NA,40,1000,NA,NA\n")
    with pytest.raises(HurdatFormatError, match=r"unknown status values \['typhoon'\]"):
        read_dplyr_storms(path)
    path.write_text(f"{header}\nAna,2000,6,1,0,20,-60,hurricane,NA,strong,1000,NA,NA\n")
    with pytest.raises(HurdatFormatError, match=r"^line 2: .*'wind' has a non-numeric value 'strong'"):
        read_dplyr_storms(path)


def test_tracks(dplyr: pd.DataFrame, raw2019: pd.DataFrame) -> None:
    lines = tracks(dplyr)
    assert len(lines) == 693
    assert lines.crs.to_epsg() == 4326
    eta = lines.set_index("storm_id").loc["ETA-2020"]
    assert isinstance(eta.geometry, LineString)
    assert (eta["name"], eta["year"], eta["n_fixes"], eta["max_wind_kt"]) == ("Eta", 2020, 58, 130.0)
    assert eta["start_time"] == pd.Timestamp("2020-10-31 18:00", tz="UTC")
    assert eta["end_time"] == pd.Timestamp("2020-11-14 00:00", tz="UTC")
    assert eta.geometry.coords[0] == (-72.4, 14.9)
    raw_lines = tracks(raw2019)
    assert raw_lines["storm_id"].tolist()[:2] == ["AL022019", "AL032019"]
    assert raw_lines.set_index("name").loc["DORIAN", "max_wind_kt"] == 160.0
    single = tracks(raw2019.iloc[:1])
    assert single.geometry.iloc[0].length == 0.0
