"""Honduras homicides and population by municipio, 2014 (IUDPAS-UNAH Observatorio de la Violencia).

Cleaning choices, each pinned by tests:
- The file is TAB-separated with a trailing TAB and CRLF on data lines; headers and values carry a leading
  space. It is read with `sep="\\t", index_col=False` and every header and cell stripped.
- `geometry` is a Python repr, not GeoJSON: ignored (boundaries come from hnd-a2sit).
- `geoId` is the INE code without padding (501 = San Pedro Sula) → P-code HN + 4 digits.
- `homicide_rate` is recomputed as totalHomicides / popTotal × 100,000 and checked against the file's
  `homicideRate` (rounded to 0.1 there): a row that disagrees by more than 0.1 is refused.
- Absent municipios: 265 of 298 appear, every one with at least one homicide, so the file lists
  municipios with homicides. The 33 absent ones are stored as 0 homicides (count and rate) with the flag
  `absent_from_source_assumed_zero`: an inference, not a figure of the source, visible in every API
  answer. Their 2014 population is unknown and stays missing (no `population_2014` row).
- Vintage 2014 travels with every value (period "2014"); 2014 predates the 2021 strategy.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Connection

from app.errors import DataError
from app.ingest.common import Progress, Validation
from app.ingest.layers import ABSENT_ASSUMED_ZERO, Indicator, Layer, observations_frame
from app.ingest.matching import units_frame
from app.settings import Settings
from app.sources import Resolver, Source
from app.text import name_key

COLUMNS = ("geoId", "Municipal", "Department", "popTotal", "totalHomicides", "homicideRate")
SET_ID = "hnd-municipios"


def read_iudpas(path: Path, source_id: str) -> pd.DataFrame:
    """The table with stripped headers and cells and numeric columns; a clear DataError when unreadable."""
    try:
        with warnings.catch_warnings():
            # data lines end with a TAB the header lacks: index_col=False drops that empty field, as intended
            warnings.simplefilter("ignore", pd.errors.ParserWarning)
            frame = pd.read_csv(path, sep="\t", index_col=False, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataError(
            f"Source '{source_id}', file '{path.name}' is not a readable TAB table: {exc}"
        ) from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(
            f"Source '{source_id}', file '{path.name}': missing columns {missing} "
            "(expected a TAB-separated IUDPAS table with geoId, popTotal, totalHomicides, homicideRate)."
        )
    frame = frame[list(COLUMNS)].apply(lambda c: c.str.strip())
    for c in ("geoId", "popTotal", "totalHomicides", "homicideRate"):
        parsed = pd.to_numeric(frame[c], errors="coerce")
        bad = frame.index[parsed.isna()]
        if len(bad):
            raise DataError(
                f"Source '{source_id}', file '{path.name}': column {c} is not a number on lines "
                f"{[int(i) + 2 for i in bad[:5]]} (truncated or damaged file?)."
            )
        frame[c] = parsed
    return frame


def prepare_iudpas(
    conn: Connection,
    settings: Settings,
    sources: dict[str, Source],
    resolver: Resolver,
    catalogue: dict[str, Indicator],
    progress: Progress,
) -> Layer:
    """`homicides_2014`, `homicide_rate_2014` for all 298 municipios (absent ones 0, flagged) and
    `population_2014` for the 265 the file lists."""
    source = sources["hnd-iudpas-2014"]
    paths = resolver.resolve(source)
    f = source.file("homicides")
    progress("reading the IUDPAS homicide table")
    frame = read_iudpas(paths[f.name], source.id)
    frame["pcode"] = "HN" + frame["geoId"].astype(int).astype(str).str.zfill(4)
    validation = Validation()
    notes: list[str] = []
    dup = sorted(set(frame.loc[frame["pcode"].duplicated(), "pcode"]))
    if dup:
        validation.errors.append(f"municipios listed twice: {dup[:10]}")
    units = units_frame(conn, SET_ID)
    known = dict(zip(units["pcode"], units["name_key"], strict=True))
    unknown = sorted(set(frame["pcode"]) - set(known))
    if unknown:
        validation.errors.append(f"codes that are not Honduran municipios: {unknown[:10]}")
    other_names = [
        f"{p} '{n}'"
        for p, n in zip(frame["pcode"], frame["Municipal"], strict=True)
        if p in known and name_key(n) != known[p]
    ]
    if other_names:
        notes.append(
            f"{len(other_names)} names spelt otherwise than the boundaries (codes win): {other_names[:5]}"
        )
    rate = frame["totalHomicides"] / frame["popTotal"] * 1e5
    off = frame.index[(rate - frame["homicideRate"]).abs() > 0.1]
    if len(off):
        validation.errors.append(
            f"homicideRate disagrees with totalHomicides / popTotal × 100,000 on lines "
            f"{[int(i) + 2 for i in off[:5]]}"
        )
    absent = sorted(set(known) - set(frame["pcode"]))
    notes.append(
        f"{len(frame)} municipios listed ({int(frame['totalHomicides'].sum()):,} homicides, population "
        f"{int(frame['popTotal'].sum()):,}); {len(absent)} absent, stored as 0 homicides with the flag "
        f"{ABSENT_ASSUMED_ZERO}"
    )
    ind = {c: catalogue[c] for c in ("homicides_2014", "homicide_rate_2014", "population_2014")}
    rows: list[dict[str, Any]] = []

    def add(code: str, pcode: str, value: float, flags: list[str]) -> None:
        rows.append(
            {
                "indicator_code": code,
                "boundary_set_id": SET_ID,
                "pcode": pcode,
                "period": ind[code].period,
                "value": value,
                "flags": flags,
                "file_sha256": f.sha256,
            }
        )

    for p, n, pop, r in zip(frame["pcode"], frame["totalHomicides"], frame["popTotal"], rate, strict=True):
        add("homicides_2014", p, float(n), [])
        add("homicide_rate_2014", p, float(r), [])
        add("population_2014", p, float(pop), [])
    for p in absent:
        add("homicides_2014", p, 0.0, [ABSENT_ASSUMED_ZERO])
        add("homicide_rate_2014", p, 0.0, [ABSENT_ASSUMED_ZERO])
    return Layer(source, [(source, paths)], list(ind.values()), observations_frame(rows), validation, notes)
