"""The indicator matrix a profile is scored on, read from the database, and the data version it reflects."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from sqlalchemy import Connection, text

from app import __version__, indicators
from app.errors import InvalidParameter, InvalidProfile
from app.ingest.layers import OUT_OF_RANGE, SMALL_SAMPLE
from app.scoring import METHOD_VERSION
from app.scoring.engine import Matrix
from app.scoring.profile import Profile
from app.scoring.survey import proportion_scale


@dataclass
class ScoringData:
    """The matrix plus what the explanation needs: each value's period, and the units' names and sets."""

    matrix: Matrix
    periods: pd.DataFrame  # same shape as matrix.values: the period of each value
    units: pd.DataFrame  # index = key "set/pcode": boundary_set_id, pcode, name, country, parent_pcode


def default_sets(conn: Connection) -> list[str]:
    """The current boundary set of each country."""
    return list(
        conn.execute(text("SELECT id FROM boundary_sets WHERE is_default ORDER BY country")).scalars()
    )


def data_version(conn: Connection) -> str:
    """What a stored run is keyed by, besides its profile and sets: the data epoch (bumped inside every load
    transaction that writes values, boundaries or indicator definitions) and the scoring method's version."""
    epoch = conn.execute(text("SELECT epoch FROM data_epoch WHERE id = 1")).scalar_one()
    return f"e{epoch}/{METHOD_VERSION}/{__version__}"[:32]  # epoch / method / app (score_runs: 32 chars)


def load(conn: Connection, profile: Profile, set_ids: list[str]) -> ScoringData:
    """Values of the profile's indicators on the given sets (direct, through the crosswalk, or a department's
    value for its municipios); values flagged out of range are left out."""
    known = {r.code: r for r in conn.execute(text("SELECT code, direction, unit FROM indicators"))}
    missing = [i.code for i in profile.indicators() if i.code not in known]
    if missing:
        raise InvalidProfile(f"Unknown indicators {missing}; the catalogue is at /v1/indicators.")
    units = pd.DataFrame(
        [
            dict(r)
            for r in conn.execute(
                text("""
        SELECT boundary_set_id, pcode, name, country, parent_pcode FROM admin_units
        WHERE level = 2 AND boundary_set_id = ANY(:sets)"""),
                {"sets": set_ids},
            ).mappings()
        ]
    )
    if units.empty:
        raise InvalidParameter(f"No municipios stored for {set_ids}: load the boundaries first.")
    units.index = units["boundary_set_id"] + "/" + units["pcode"]
    parent_key = units["boundary_set_id"] + "/" + units["parent_pcode"]
    values = pd.DataFrame(index=units.index, dtype="float64")
    periods = pd.DataFrame(index=units.index, dtype="object")
    fallback = pd.DataFrame(index=units.index, dtype="bool")
    sample_size = pd.DataFrame(index=units.index, dtype="float64")
    small = pd.DataFrame(index=units.index, dtype="bool")
    for spec in profile.indicators():
        col = pd.Series(float("nan"), index=units.index)
        per = pd.Series(None, index=units.index, dtype="object")
        dep = pd.Series(False, index=units.index)
        n = pd.Series(float("nan"), index=units.index)
        tiny = pd.Series(False, index=units.index)
        for set_id in set_ids:
            for item in indicators.values(conn, spec.code, set_id=set_id):
                if OUT_OF_RANGE in item["flags"]:
                    continue
                key = f"{item['boundary_set']}/{item['pcode']}"
                if item["level"] == 2 and key in col.index:
                    col[key], per[key] = item["value"], item["period"]
                    if item["sample_size"] is not None:
                        n[key], tiny[key] = item["sample_size"], SMALL_SAMPLE in item["flags"]
                elif item["level"] == 1:  # a department's value stands for each of its municipios
                    hit = parent_key == key
                    col[hit], per[hit], dep[hit] = item["value"], item["period"], True
        values[spec.code] = col
        periods[spec.code] = per
        fallback[spec.code] = dep
        sample_size[spec.code] = n
        small[spec.code] = tiny
    directions = {code: int(row.direction) for code, row in known.items()}
    matrix = Matrix(
        values,
        units["country"],
        directions,
        fallback,
        sample_size=sample_size,
        small=small,
        department=parent_key,
        scales={i.code: proportion_scale(known[i.code].unit) for i in profile.indicators()},
    )
    return ScoringData(matrix, periods, units)
