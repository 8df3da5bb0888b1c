"""The indicator matrix a profile is scored on, read from the database, and the data version it reflects."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from sqlalchemy import Connection, text

from app import __version__, indicators
from app.cache import data_epoch, epoch_scope
from app.errors import InvalidParameter, InvalidProfile
from app.ingest.layers import OUT_OF_RANGE, SMALL_SAMPLE
from app.scoring import METHOD_VERSION
from app.scoring.engine import Matrix, WeightFree
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
    epoch = data_epoch(conn)
    return f"e{epoch}/{METHOD_VERSION}/{__version__}"[:32]  # epoch / method / app (score_runs: 32 chars)


def load(conn: Connection, profile: Profile, set_ids: list[str]) -> ScoringData:
    """Values of the profile's indicators on the given sets (direct, through the crosswalk, or a department's
    value for its municipios); values flagged out of range are left out.

    Which value a unit gets when an indicator has several periods (``latest_values``): the latest period
    that has a value (periods sort as text, "2023" after "2018-2019" after "2018"); when that value is
    flagged out of range the unit has none (an older period does not stand in). A department's value stands
    for each of its municipios that has no value of its own (the municipio's own wins; the cell is then still
    marked as a department fallback, as it always was). The indicator values are read once per data epoch,
    engine, boundary sets and indicator and cached in the process (``epoch_cached``); the matrix is rebuilt from them."""
    version = data_version(conn)
    known = epoch_cached(conn, version, ("catalogue",), lambda: _catalogue(conn))
    missing = [i.code for i in profile.indicators() if i.code not in known]
    if missing:
        raise InvalidProfile(f"Unknown indicators {missing}; the catalogue is at /v1/indicators.")
    units = epoch_cached(conn, version, ("units", *set_ids), lambda: _units(conn, set_ids)).copy()
    if units.empty:
        raise InvalidParameter(f"No municipios stored for {set_ids}: load the boundaries first.")
    codes = list(dict.fromkeys(i.code for i in profile.indicators()))
    store = epoch_cached(conn, version, ("columns", *set_ids), dict)
    absent = [c for c in codes if c not in store]
    if absent:
        found = latest_values(conn, absent, set_ids)
        rows = pd.concat([found[(c, s)] for c in absent for s in set_ids], ignore_index=True)
        built = _columns(rows, units, absent)
        store.update({c: {kind: built[kind][c].to_numpy() for kind in built} for c in absent})
    columns = {
        kind: pd.DataFrame(
            {c: store[c][kind] for c in codes}, index=units.index, columns=pd.Index(codes), dtype=dtype
        )
        for kind, dtype in COLUMN_KINDS.items()
    }
    parent_key = units["boundary_set_id"] + "/" + units["parent_pcode"]
    directions = {code: int(row.direction) for code, row in known.items()}
    matrix = Matrix(
        columns["value"],
        units["country"],
        directions,
        columns["fallback"],
        sample_size=columns["sample_size"],
        small=columns["small"],
        department=parent_key,
        scales={i.code: proportion_scale(known[i.code].unit) for i in profile.indicators()},
        # normalised matrices and the like, shared by the scenarios of this epoch and these sets
        memo=epoch_cached(conn, version, ("weight-free", *set_ids), WeightFree),
    )
    return ScoringData(matrix, columns["period"], units)


COLUMN_KINDS = {
    "value": "float64",
    "period": "object",
    "fallback": "bool",
    "sample_size": "float64",
    "small": "bool",
}
VALUE_COLUMNS = ["code", "boundary_set", "pcode", "level", "value", "period", "flags", "sample_size"]


def latest_values(
    conn: Connection, codes: list[str], set_ids: list[str]
) -> dict[tuple[str, str], pd.DataFrame]:
    """Per (indicator, set), its stored values on that set's units: per unit the latest period with a value
    (NULL values, which a source marks as missing, are skipped, so an older period with a value stands in;
    periods sort as text), all levels, flags kept. One query for every direct value; an (indicator, set)
    with none is carried through the crosswalk by ``indicators.values`` (which reads it the same way)."""
    found = pd.DataFrame(
        conn.execute(
            text("""
        SELECT DISTINCT ON (o.indicator_code, o.boundary_set_id, o.pcode)
               o.indicator_code AS code, o.boundary_set_id AS boundary_set, o.pcode, u.level, o.value,
               o.period, o.flags, o.sample_size
        FROM observations o
        LEFT JOIN admin_units u ON u.boundary_set_id = o.boundary_set_id AND u.pcode = o.pcode
        WHERE o.indicator_code = ANY(:codes) AND o.boundary_set_id = ANY(:sets) AND o.value IS NOT NULL
        ORDER BY o.indicator_code, o.boundary_set_id, o.pcode, o.period DESC"""),
            {"codes": codes, "sets": set_ids},
        ).all(),
        columns=VALUE_COLUMNS,
    )
    out: dict[tuple[str, str], pd.DataFrame] = {}
    groups = dict(list(found.groupby(["code", "boundary_set"], sort=False))) if len(found) else {}
    for code in codes:
        for set_id in set_ids:
            direct = groups.get((code, set_id))
            if (
                direct is not None
            ):  # units outside the set's boundaries are dropped, as indicators.values does
                out[(code, set_id)] = direct[direct["level"].notna()].reset_index(drop=True)
            else:
                derived = indicators.values(conn, code, set_id=set_id)
                out[(code, set_id)] = pd.DataFrame(
                    [{**item, "code": code} for item in derived], columns=VALUE_COLUMNS
                )
    return out


def _catalogue(conn: Connection) -> dict[str, Any]:
    """The indicator catalogue's direction and unit, by code."""
    return {r.code: r for r in conn.execute(text("SELECT code, direction, unit FROM indicators"))}


def _units(conn: Connection, set_ids: list[str]) -> pd.DataFrame:
    """The municipios of the sets, indexed by "set/pcode"."""
    units = pd.DataFrame(
        [
            dict(r)
            for r in conn.execute(
                text("""
        SELECT boundary_set_id, pcode, name, country, parent_pcode FROM admin_units
        WHERE level = 2 AND boundary_set_id = ANY(:sets)"""),
                {"sets": set_ids},
            ).mappings()
        ],
        columns=["boundary_set_id", "pcode", "name", "country", "parent_pcode"],
    )
    units.index = units["boundary_set_id"] + "/" + units["pcode"]
    return units


def _columns(rows: pd.DataFrame, units: pd.DataFrame, codes: list[str]) -> dict[str, pd.DataFrame]:
    """The units × indicators frames of value, period, department fallback, sample size and small sample.

    A municipio's own value and its department's (for every municipio of it) are written in P-code order and
    the last one wins, as the row-by-row reading did: a department's code is a prefix of its municipios', so
    the municipio's own value wins. Fallback is set wherever a department value was written."""
    rows = rows[~rows["flags"].map(lambda flags: OUT_OF_RANGE in flags)]
    parent_key = pd.Series(units["boundary_set_id"] + "/" + units["parent_pcode"], index=units.index)
    own = rows[rows["level"] == 2].assign(key=lambda r: r["boundary_set"] + "/" + r["pcode"], dept=False)
    own = own[own["key"].isin(units.index)]
    dept = rows[rows["level"] == 1].assign(parent=lambda r: r["boundary_set"] + "/" + r["pcode"], dept=True)
    children = pd.DataFrame({"key": units.index, "parent": parent_key.to_numpy()})
    dept = dept.merge(children, on="parent").drop(columns="parent")
    cells = pd.concat([own, dept], ignore_index=True).sort_values(["code", "key", "pcode"], kind="stable")
    last = cells.drop_duplicates(["code", "key"], keep="last")
    fallback = cells[cells["dept"]].drop_duplicates(["code", "key"])
    sampled = own[own["sample_size"].notna()]
    small = sampled[sampled["flags"].map(lambda flags: SMALL_SAMPLE in flags)]

    def frame(part: pd.DataFrame, column: str | None, dtype: str) -> pd.DataFrame:
        """part's column (True for a flag) as units × codes; NaN, None or False where part has no row."""
        data = part[column].to_numpy() if column is not None else [True] * len(part)
        wide = (
            pd.Series(data, index=pd.MultiIndex.from_arrays([part["key"], part["code"]]), dtype=object)
            .unstack("code")
            .reindex(index=units.index, columns=pd.Index(codes))
            if len(part)
            else pd.DataFrame(None, index=units.index, columns=pd.Index(codes), dtype=object)
        )
        if dtype == "bool":
            return wide.notna()
        if dtype == "object":
            return wide.astype(object).where(wide.notna(), np.nan)
        return wide.astype("float64")

    return {
        "value": frame(last, "value", "float64"),
        "period": frame(last, "period", "object"),
        "fallback": frame(fallback, None, "bool"),
        "sample_size": frame(sampled, "sample_size", "float64"),
        "small": frame(small, None, "bool"),
    }


_EPOCH_LOCK = threading.Lock()
T = TypeVar("T")


def epoch_cached(conn: Connection, version: str, key: tuple[str, ...], build: Callable[[], T]) -> T:
    """`build()` once per engine, data version (``data_version``) and key, kept in this process: what only
    changes when the data changes (values, boundaries, contiguity) is not rebuilt per scenario. A new data
    version drops everything cached for the previous one. Callers must not modify what they get back."""
    held = epoch_scope(conn.engine, "scoring.data", version)
    with _EPOCH_LOCK:
        if key in held:
            return held[key]  # type: ignore[no-any-return]
    value = build()  # outside the lock: two requests may both build; the values are equal
    with _EPOCH_LOCK:
        # a dict a newer version has replaced meanwhile is no longer read: keeping the value there is harmless
        return held.setdefault(key, value)  # type: ignore[no-any-return]
