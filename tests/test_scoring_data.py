"""The indicator matrix of a run (app.scoring.data): which period a unit's value comes from, one query for
every direct value, and the per-epoch cache."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pandas as pd
from sqlalchemy import Connection, Engine, event, text

from app.ingest.layers import OUT_OF_RANGE
from app.ingest.provenance import bump_epoch
from app.scoring import data
from app.scoring.service import DEFAULT_PROFILE, profile_by_id
from app.settings import Settings

SET = "gtm-municipios"


def _three_units(conn: Connection) -> tuple[str, list[str]]:
    """An indicator of the default profile with municipal values on SET, and three units that have one."""
    codes = [i.code for i in profile_by_id(DEFAULT_PROFILE).indicators()]
    row = conn.execute(
        text("""
        SELECT o.indicator_code, array_agg(o.pcode ORDER BY o.pcode) AS pcodes FROM observations o
        JOIN admin_units u ON u.boundary_set_id = o.boundary_set_id AND u.pcode = o.pcode AND u.level = 2
        WHERE o.boundary_set_id = :s AND o.indicator_code = ANY(:codes) AND o.value IS NOT NULL
          AND NOT (:oor = ANY(o.flags))
        GROUP BY 1 HAVING count(*) >= 3 ORDER BY 1 LIMIT 1"""),
        {"s": SET, "codes": codes, "oor": OUT_OF_RANGE},
    ).one()
    return row.indicator_code, list(row.pcodes[:3])


def _add_period(
    conn: Connection, code: str, pcode: str, period: str, value: float | None, flags: list[str]
) -> None:
    """Another period for a stored value (same source and file), as a time series load would add."""
    conn.execute(
        text("""
        INSERT INTO observations (indicator_code, boundary_set_id, pcode, period, value, source_id, file_sha256,
                                  flags, loaded_at)
        SELECT indicator_code, boundary_set_id, pcode, :period, :value, source_id, file_sha256, :flags, loaded_at
        FROM observations WHERE indicator_code = :c AND boundary_set_id = :s AND pcode = :p
        ORDER BY period DESC LIMIT 1"""),
        {"c": code, "s": SET, "p": pcode, "period": period, "value": value, "flags": flags},
    )


def _cell(frame: pd.DataFrame, pcode: str, code: str) -> object:
    """One cell of a units × indicators frame of SET."""
    return frame.at[f"{SET}/{pcode}", code]


def test_a_unit_takes_its_latest_period_with_a_value(fresh: tuple[Engine, Settings]) -> None:
    engine, _ = fresh
    profile = profile_by_id(DEFAULT_PROFILE)
    with engine.begin() as conn:
        code, (newer, missing, flagged) = _three_units(conn)
        before = data.load(conn, profile, [SET])
        _add_period(conn, code, newer, "9999", 12345.0, [])  # a later period: it wins
        _add_period(conn, code, missing, "9999", None, ["missing_in_source"])  # later but missing: skipped
        _add_period(conn, code, flagged, "9999", 7.0, [OUT_OF_RANGE])  # later and out of range: no value
        bump_epoch(conn, "test: a second period")
    with engine.connect() as conn:
        after = data.load(conn, profile, [SET])
    v = after.matrix.values
    assert _cell(v, newer, code) == 12345.0
    assert _cell(after.periods, newer, code) == "9999"
    assert _cell(v, missing, code) == _cell(before.matrix.values, missing, code)  # older stands
    assert _cell(after.periods, missing, code) == _cell(before.periods, missing, code)
    assert pd.isna(_cell(v, flagged, code))  # an older period does not stand in for it
    others = [k for k in v.index if k.split("/", 1)[1] not in (newer, missing, flagged)]
    pd.testing.assert_frame_equal(v.loc[others], before.matrix.values.loc[others])


@contextmanager
def _statements(engine: Engine) -> Iterator[list[str]]:
    """The SQL statements the engine runs inside the block."""
    seen: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_values_are_read_in_one_query_and_once_per_epoch(fresh: tuple[Engine, Settings]) -> None:
    engine, _ = fresh
    profile = profile_by_id(DEFAULT_PROFILE)
    sets = ["gtm-municipios", "hnd-municipios"]
    codes = sorted({i.code for i in profile.indicators()})
    with engine.connect() as conn:
        direct = {
            (r.indicator_code, r.boundary_set_id)
            for r in conn.execute(
                text(
                    "SELECT DISTINCT indicator_code, boundary_set_id FROM observations "
                    "WHERE indicator_code = ANY(:c) AND boundary_set_id = ANY(:s) AND value IS NOT NULL"
                ),
                {"c": codes, "s": sets},
            )
        }
        without = [(c, s) for c in codes for s in sets if (c, s) not in direct]
        with _statements(engine) as first:
            cold = data.load(conn, profile, sets)
        with _statements(engine) as second:
            warm = data.load(conn, profile, sets)
    # one query for every direct value; a pair with none is tried through the crosswalk, one read each
    reads = [s for s in first if "FROM observations o" in s and "o.pcode" in s]
    assert len(reads) == 1 + len(without)
    assert not [s for s in second if "observations" in s]  # the same epoch: nothing read again
    for name in ("values", "fallback", "sample_size", "small"):
        pd.testing.assert_frame_equal(getattr(warm.matrix, name), getattr(cold.matrix, name))
    assert warm.matrix.values is not cold.matrix.values  # rebuilt, so a caller may not spoil the cache
    with engine.begin() as conn:
        bump_epoch(conn, "test: new epoch")
    with engine.connect() as conn, _statements(engine) as third:
        data.load(conn, profile, sets)
    assert [s for s in third if "FROM observations o" in s]  # a new epoch reads again
