"""Guatemala's DesInventar disaster records, 1988-2015 (`gtm-desinventar`): the event table and two
pillar-I climate-shock indicators per municipio.

The file (`Datos-Historicos_v1.csv`, 7,545 records, 24 columns) is a DesInventar export: one record
("ficha") per event, municipio and often locality (`Lugar`). Cleaning choices:

- Headers and values are padded with spaces: every cell is stripped. Every line must have as many fields
  as the header; a shorter one means a truncated or damaged file (DataError, nothing stored).
- `Fecha` is dd/mm/yyyy. Two records have an impossible date written yyyy/mm/dd ("2009/06/31" for serial
  2009-00088, "1992/12/40" for serial 330): their date is stored NULL and listed in the notes.
- `year` comes from the date. Where the date is unparsable it comes from the Serial when that starts with
  "yyyy-" (the 4,600 serials of that form agree with the year of their date in every one of the 4,599
  records that have a date, and the loader re-checks this agreement on every load); other serials ("330",
  "1483m": a running number) carry no year, so serial 330 has year NULL.
- Numbers: blank = not reported (NULL in the event table, 0 in sums); text or a negative number is a DataError.
- Repeated serials (5 in the file): a record that repeats an earlier record of the same serial in every
  stored field (1573, 288, 726, and 451, which differs only in one letter of Observaciones) is a double
  entry and is dropped, so 7,541 events are stored; a repeated serial on a different record (1909: a
  flood in Nueva Concepción and another in Petapa) is kept and suffixed "#2".

Matching (Departamento, Municipio) to INE codes (`gtm-municipios`): accent- and case-insensitive names
(`app.text.name_key`) within the department, after expanding the file's abbreviations (ABBREVIATIONS:
"STA." = Santa, "SAC." = Sacatepéquez, …), then the pinned ALIASES for spelling variants and short or old
names, each pinned to its INE code and checked against the stored name. Records with no Municipio
(204: department-level records) cannot be placed and stay unmatched (pcode NULL in the event table);
every unmatched pair is listed in the notes with its record count, and the share of records matched is
reported (7,337 of the 7,541 stored records, 97.3 %; the 22 unmatched pairs are all "(no municipio)"). Municipios created late in the period (Sipacate 2015, La Blanca 2014, Las Cruces 2011,
…) carry only the records filed under their own name; earlier events there are counted in the parent.

Indicators (theme I, period "1988-2015", 28 years):

- `hydromet_events_per_year`: hydro-meteorological events per year. Event types HYDROMET_TYPES, spelled
  as in the file's Evento column: FLOOD, LANDSLIDE, RAIN, SPATE, STORM, DROUGHT (other weather types,
  e.g. STRONGWIND, HAILSTORM, ELECTRICSTORM, FROST, HURRICANE, are not counted: the pillar-I brief names
  these six, and hurricanes have their own indicators from HURDAT2). An event is a distinct (municipio,
  type, date): DesInventar files one record per locality, and from 2014 the agencies filed many per
  event (the 20/10/2015 flood in Iztapa has 9 records), so counting records would inflate the recent
  years; the 4,534 matched hydro-met records are 3,899 events. A record with no date counts as its own
  event. The count is divided by 28.
- `disaster_affected_per_1000`: people affected (Afectados + Damnificados) by hydro-met records over the
  whole period, per 1,000 inhabitants of the 2018 census (`population_2018`, gtm-mvi-unhcr). Both are
  summed because DesInventar defines them as distinct groups (damnificados: people whose home or
  property suffered severe damage; afectados: people suffering secondary effects), and because most
  older records fill only Damnificados (hydro-met 1990-1997: 369,543 damnificados, 24,268 afectados), so
  "Afectados only" would erase the early years. Known overlap: in 2014-2015 Damnificados often equals
  Viviendas Afectadas (a count of homes, with Afectados about six persons per home: 502 records, 19,108
  damnificados); summing over-counts at most by the smaller of the two where both are given (835
  records), 236,640 of 8.55 million hydro-met people (2.8 %). The 2018
  denominator is larger than the population of the earlier years, so it understates rates of the past.
  Every record counts its own people (localities do not overlap). Some records put a regional figure on
  one municipio (2013-00185, a spate in Santa Rosa de Lima: 250,000 affected "in five municipios";
  2005-00122, Sacapulas: 300,000), so a few values exceed 1,000 per 1,000 (Santa Rosa de Lima 12,812):
  kept as recorded, since splitting them would invent a distribution; valid range 0-28,000 (everyone
  affected every year).

A municipio with no hydro-met record gets 0 for both, flagged ABSENT_ASSUMED_ZERO: DesInventar lists
events, so no record means no recorded event (not a measured zero: small events went unreported).
A municipio without a stored population gets NULL affected-per-1,000, flagged NO_POPULATION_DENOMINATOR.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Connection, text

from app.errors import DataError
from app.ingest.common import Progress, Validation
from app.ingest.layers import (
    ABSENT_ASSUMED_ZERO,
    NO_POPULATION_DENOMINATOR,
    Indicator,
    Layer,
    observations_frame,
    stored_population,
)
from app.ingest.matching import units_frame
from app.ingest.series import GTM_EVENTS_YEAR
from app.settings import Settings
from app.sources import Resolver, Source
from app.text import name_key

SOURCE_ID = "gtm-desinventar"
SET_ID = "gtm-municipios"
COUNTRY = "GTM"
POPULATION_CODE = "population_2018"
POPULATION_SOURCE = "gtm-mvi-unhcr"
FIRST_YEAR, LAST_YEAR = 1988, 2015
YEARS = LAST_YEAR - FIRST_YEAR + 1  # 28
HYDROMET_TYPES = ("FLOOD", "LANDSLIDE", "RAIN", "SPATE", "STORM", "DROUGHT")
EVENTS_CODE = "hydromet_events_per_year"
AFFECTED_CODE = "disaster_affected_per_1000"

# file header (stripped) -> hazard_events column
TEXT_COLUMNS = {
    "Serial": "serial",
    "Evento": "event_type",
    "Departamento": "department_name",
    "Municipio": "municipio_name",
    "Fecha": "fecha",
    "Lugar": "place",
    "Número GLIDE": "glide",
}
NUMBER_COLUMNS = {
    "Muertos": "deaths",
    "Heridos": "injured",
    "Desaparecidos": "missing",
    "Viviendas Destruídas": "houses_destroyed",
    "Viviendas Afectadas": "houses_affected",
    "Damnificados": "victims",
    "Afectados": "affected",
}
EVENT_COLUMNS = [
    "serial",
    "event_type",
    "hydromet",
    "date",
    "year",
    "department_name",
    "municipio_name",
    "pcode",
    "place",
    *NUMBER_COLUMNS.values(),
    "glide",
]

# Abbreviations of the file, expanded word by word before matching.
ABBREVIATIONS = {
    "STA.": "SANTA",
    "STO.": "SANTO",
    "SN.": "SAN",
    "SAC.": "SACATEPEQUEZ",
    "COTZ.": "COTZUMALGUAPA",
    "HUEHUE.": "HUEHUETENANGO",
}
# (department, municipio as in the file) -> (INE code, INE name): spelling variants and short names.
ALIASES: dict[tuple[str, str], tuple[str, str]] = {
    ("ALTA VERAPAZ", "LA TINTA"): ("1616", "Santa Catalina La Tinta"),
    ("CHIQUIMULA", "QUETZALTEPEQUE"): ("2009", "Quezaltepeque"),
    ("CHIQUIMULA", "SAN JUAN LA ERMITA"): ("2003", "San Juan Ermita"),
    ("EL PROGRESO", "SAN CRISTOBAL ACASAGUATLAN"): ("0204", "San Cristóbal Acasaguastlán"),
    ("HUEHUETENANGO", "CONCEPCION"): ("1322", "Concepción Huista"),
    ("HUEHUETENANGO", "IXTAHUACAN"): ("1309", "San Ildefonso Ixtahuacán"),
    ("JUTIAPA", "QUEZADA"): ("2217", "Quesada"),
    ("QUETZALTENANGO", "OSTUNCALCO"): ("0909", "San Juan Ostuncalco"),
    ("SAN MARCOS", "TAJAMULCO"): ("1209", "Tajumulco"),
    ("TOTONICAPAN", "SAN BARTOLO"): ("0808", "San Bartolo Aguas Calientes"),
}
_DATE = re.compile(r"^(\d{2})/(\d{2})/(\d{4})$")
_SERIAL_YEAR = re.compile(r"^(\d{4})-\d+")


def _fail(path: Path, message: str) -> DataError:
    return DataError(f"Source '{SOURCE_ID}', file '{path.name}': {message}")


def read_records(path: Path) -> pd.DataFrame:
    """Every record of the file as strings, stripped; a damaged file is a clear DataError."""
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            lines = list(csv.reader(handle))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise _fail(path, f"is not a readable UTF-8 CSV ({exc}).") from exc
    if len(lines) < 2:
        raise _fail(path, "has no records (empty or truncated file).")
    header = [h.strip() for h in lines[0]]
    missing = [c for c in [*TEXT_COLUMNS, *NUMBER_COLUMNS] if c not in header]
    if missing:
        raise _fail(path, f"missing columns {missing} (header: {', '.join(header)}).")
    short = [(n, len(r)) for n, r in enumerate(lines[1:], start=2) if len(r) != len(header)]
    if short:
        n, got = short[0]
        raise _fail(
            path,
            f"line {n} has {got} fields, the header {len(header)} ({len(short)} such lines): the file is "
            "truncated or damaged; fetch it again.",
        )
    frame = pd.DataFrame([[c.strip() for c in r] for r in lines[1:]], columns=header, dtype=str)
    frame.index = pd.RangeIndex(2, len(frame) + 2)  # file line numbers
    return frame


def parse_events(records: pd.DataFrame, path: Path) -> tuple[pd.DataFrame, list[str]]:
    """Typed events (EVENT_COLUMNS but pcode) from the raw records, and notes on what was cleaned."""
    notes: list[str] = []
    out = pd.DataFrame(index=records.index)
    for column, name in TEXT_COLUMNS.items():
        out[name] = records[column]
    blank = out.index[(out["serial"] == "") | (out["event_type"] == "") | (out["department_name"] == "")]
    if len(blank):
        raise _fail(path, f"records without Serial, Evento or Departamento on lines {list(blank[:5])}.")
    for column, name in NUMBER_COLUMNS.items():
        raw = records[column]
        values = pd.to_numeric(raw.where(raw != ""), errors="coerce")
        bad = out.index[(values.isna() & (raw != "")) | (values < 0)]
        if len(bad):
            raise _fail(
                path,
                f"column '{column}' has text or negative numbers where counts belong "
                f"(lines {list(bad[:5])}: {list(raw[bad[:5]])}).",
            )
        out[name] = values.astype("float64")
    dates: list[date | None] = []
    for serial, value in zip(out["serial"], out["fecha"], strict=True):
        m = _DATE.match(value)
        try:
            dates.append(date(int(m[3]), int(m[2]), int(m[1])) if m else None)
        except ValueError:
            dates.append(None)
        if dates[-1] is None:
            notes.append(f"serial {serial}: date '{value}' is not a valid dd/mm/yyyy date; stored NULL")
    out["date"] = pd.Series(dates, index=out.index, dtype="object")
    serial_year = out["serial"].str.extract(_SERIAL_YEAR, expand=False).astype("float64")
    date_year = pd.Series([d.year if d else None for d in dates], index=out.index, dtype="float64")
    both = serial_year.notna() & date_year.notna()
    disagree = out.index[both & (serial_year != date_year)]
    if len(disagree):
        raise _fail(
            path,
            f"the year of the Serial and of Fecha disagree on lines {list(disagree[:5])}: the Serial can no "
            "longer stand in for an unparsable date; review the cleaning in app/ingest/desinventar.py.",
        )
    out["year"] = date_year.fillna(serial_year)
    out["hydromet"] = out["event_type"].isin(HYDROMET_TYPES)
    return _deduplicate(out, notes), notes


def _deduplicate(events: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """Drop repeated records of one serial; suffix a serial shared by different records ('1909#2')."""
    stored = [c for c in events.columns if c != "date"] + ["date"]
    keep: list[bool] = []
    seen: dict[str, list[tuple[Any, ...]]] = {}
    serials: list[str] = []
    for row in events[stored].itertuples(index=False):
        key = tuple("" if pd.isna(v) else v for v in row)
        serial = str(row[0])
        earlier = seen.setdefault(serial, [])
        if key in earlier:
            keep.append(False)
            notes.append(f"serial {serial}: a second, identical record (double entry) is dropped")
        else:
            keep.append(True)
            earlier.append(key)
            if len(earlier) > 1:
                notes.append(
                    f"serial {serial}: shared by {len(earlier)} different records; stored as {serial}#{len(earlier)}"
                )
                serial = f"{serial}#{len(earlier)}"
        serials.append(serial)
    out = events.assign(serial=serials)
    return out[keep]


def _expand(name: str) -> str:
    return " ".join(ABBREVIATIONS.get(word, word) for word in name.upper().split())


@dataclass
class NameMatch:
    """P-code of each (department, municipio) pair (None when unmatched), the unmatched pairs with their
    record counts, the pairs matched only through ABBREVIATIONS or ALIASES, and errors in the aliases."""

    found: dict[tuple[str, str], str | None]
    unmatched: list[tuple[str, str, int]]
    renamed: list[str]
    errors: list[str]


def match_municipios(records: pd.DataFrame, units: pd.DataFrame) -> NameMatch:
    """Match the records' (department_name, municipio_name) pairs to the units of gtm-municipios."""
    units = units.assign(dep_key=units["dep_name"].map(lambda n: name_key(str(n))))
    by_name = {
        (d, k): str(p) for d, k, p in zip(units["dep_key"], units["name_key"], units["pcode"], strict=True)
    }
    by_code = dict(
        zip(
            units["national_code"],
            zip(units["pcode"], units["name"], units["dep_key"], strict=True),
            strict=True,
        )
    )
    errors: list[str] = []
    aliases: dict[tuple[str, str], str] = {}
    for (dep, mun), (code, name) in ALIASES.items():
        unit = by_code.get(code)
        if unit is None or name_key(unit[1]) != name_key(name) or unit[2] != name_key(dep):
            errors.append(
                f"alias {dep}/{mun} -> {code} {name}: the boundaries have "
                f"{'no such code' if unit is None else repr(unit[1])}; fix ALIASES"
            )
            continue
        aliases[(name_key(dep), name_key(mun))] = unit[0]
    counts = records.groupby(["department_name", "municipio_name"]).size()
    names = dict(zip(units["pcode"], units["name"], strict=True))
    found: dict[tuple[str, str], str | None] = {}
    renamed: list[str] = []
    for dep, mun in counts.index:
        dk, mk = name_key(dep), name_key(mun)
        pcode = by_name.get((dk, mk)) if mk else None
        if mk and pcode is None:
            pcode = by_name.get((dk, name_key(_expand(mun)))) or aliases.get((dk, mk))
            if pcode is not None:
                how = "alias" if (dk, mk) in aliases else "abbreviation"
                renamed.append(
                    f"{dep} / {mun} = {pcode} {names[pcode]} ({how}, {int(counts[(dep, mun)])} records)"
                )
        found[(dep, mun)] = pcode
    unmatched = [(d, m, int(counts[(d, m)])) for (d, m), p in sorted(found.items()) if p is None]
    return NameMatch(found, unmatched, renamed, errors)


def pcodes_of(frame: pd.DataFrame, found: dict[tuple[str, str], str | None]) -> pd.Series:
    """The matched P-code of each row (None when unmatched)."""
    pairs = zip(frame["department_name"], frame["municipio_name"], strict=True)
    return pd.Series([found[p] for p in pairs], index=frame.index, dtype="object")


def _population(conn: Connection) -> dict[str, float]:
    population = stored_population(conn, POPULATION_CODE, SET_ID)
    if population.empty:
        raise DataError(
            f"Source '{SOURCE_ID}' needs indicator '{POPULATION_CODE}' on {SET_ID} as its denominator, and it "
            f"is not stored: load {POPULATION_SOURCE} first (raices load {POPULATION_SOURCE})."
        )
    return {str(p): float(v) for p, v in population.items()}


def indicator_rows(
    events: pd.DataFrame, pcodes: list[str], population: dict[str, float], sha: str, period: dict[str, str]
) -> list[dict[str, Any]]:
    """Both indicators for every municipio of the set, from the matched events."""
    hydro = events[events["hydromet"] & events["pcode"].notna()]
    # one event = one (municipio, type, date); an undated record is its own event
    day = hydro["date"].map(lambda d: d.isoformat() if d else None).fillna("serial " + hydro["serial"])
    n_events = pd.DataFrame({"pcode": hydro["pcode"], "type": hydro["event_type"], "day": day})
    n_events = n_events.drop_duplicates().groupby("pcode").size()
    people = (hydro["affected"].fillna(0) + hydro["victims"].fillna(0)).groupby(hydro["pcode"]).sum()
    rows: list[dict[str, Any]] = []
    for pcode in pcodes:
        base = {"boundary_set_id": SET_ID, "pcode": pcode, "file_sha256": sha}
        absent = pcode not in n_events.index
        flags = [ABSENT_ASSUMED_ZERO] if absent else []
        count = 0.0 if absent else float(n_events[pcode])
        rows.append(
            {
                **base,
                "indicator_code": EVENTS_CODE,
                "period": period[EVENTS_CODE],
                "value": count / YEARS,
                "flags": flags,
            }
        )
        pop = population.get(pcode)
        if pop is None or pop <= 0:
            value, aflags = None, [*flags, NO_POPULATION_DENOMINATOR]
        else:
            value, aflags = (0.0 if absent else float(people[pcode])) * 1000.0 / pop, flags
        rows.append(
            {
                **base,
                "indicator_code": AFFECTED_CODE,
                "period": period[AFFECTED_CODE],
                "value": value,
                "flags": aflags,
            }
        )
    return rows


def yearly_rows(events: pd.DataFrame, pcodes: list[str], sha: str) -> list[dict[str, Any]]:
    """The series `hydromet_events_year`: hydro-meteorological events per municipio and year FIRST_YEAR to
    LAST_YEAR, counted as in `indicator_rows` (a distinct municipio, type and date); a year without a record
    is 0 flagged ABSENT_ASSUMED_ZERO, and records without a year are left out."""
    hydro = events[events["hydromet"] & events["pcode"].notna() & events["year"].notna()]
    day = hydro["date"].map(lambda d: d.isoformat() if d else None).fillna("serial " + hydro["serial"])
    keyed = pd.DataFrame(
        {"pcode": hydro["pcode"], "year": hydro["year"].astype(int), "type": hydro["event_type"], "day": day}
    )
    counts = keyed.drop_duplicates().groupby(["pcode", "year"]).size()
    rows: list[dict[str, Any]] = []
    for pcode in pcodes:
        for year in range(FIRST_YEAR, LAST_YEAR + 1):
            n = int(counts.get((pcode, year), 0))
            rows.append(
                {
                    "indicator_code": GTM_EVENTS_YEAR.code,
                    "boundary_set_id": SET_ID,
                    "pcode": pcode,
                    "period": str(year),
                    "value": float(n),
                    "flags": [] if n else [ABSENT_ASSUMED_ZERO],
                    "file_sha256": sha,
                }
            )
    return rows


def _writer(events: pd.DataFrame, source: Source) -> Callable[[Connection, datetime], None]:
    """Replace this source's events inside the layer's transaction."""

    def num(v: Any) -> float | None:
        return None if pd.isna(v) else float(v)

    params = [
        {
            "source_id": source.id,
            "country": COUNTRY,
            "serial": r.serial,
            "event_type": r.event_type,
            "hydromet": bool(r.hydromet),
            "date": r.date,
            "year": None if pd.isna(r.year) else int(r.year),
            "department_name": r.department_name,
            "municipio_name": r.municipio_name,
            "boundary_set_id": SET_ID if r.pcode else None,
            "pcode": r.pcode,
            "place": r.place,
            "deaths": num(r.deaths),
            "injured": num(r.injured),
            "missing": num(r.missing),
            "houses_destroyed": num(r.houses_destroyed),
            "houses_affected": num(r.houses_affected),
            "victims": num(r.victims),
            "affected": num(r.affected),
            "glide": r.glide,
        }
        for r in events.itertuples(index=False)
    ]

    def write(conn: Connection, _now: datetime) -> None:
        conn.execute(text("DELETE FROM hazard_events WHERE source_id = :s"), {"s": source.id})
        conn.execute(
            text("""
            INSERT INTO hazard_events (source_id, serial, country, event_type, hydromet, date, year,
                department_name, municipio_name, boundary_set_id, pcode, place, deaths, injured, missing,
                houses_destroyed, houses_affected, victims, affected, glide)
            VALUES (:source_id, :serial, :country, :event_type, :hydromet, :date, :year, :department_name,
                :municipio_name, :boundary_set_id, :pcode, :place, :deaths, :injured, :missing,
                :houses_destroyed, :houses_affected, :victims, :affected, :glide)"""),
            params,
        )

    return write


def prepare_desinventar(
    conn: Connection,
    settings: Settings,
    sources: dict[str, Source],
    resolver: Resolver,
    catalogue: dict[str, Indicator],
    progress: Progress,
) -> Layer:
    """Read, clean and match the DesInventar records; the events and two indicators per municipio."""
    source = sources[SOURCE_ID]
    paths = resolver.resolve(source)
    csv_file = source.file("events")
    path = paths[csv_file.name]
    progress("reading the DesInventar records")
    records = read_records(path)
    events, notes = parse_events(records, path)
    progress("matching municipio names to INE codes")
    units = units_frame(conn, SET_ID)
    match = match_municipios(events, units)
    events = events.assign(pcode=pcodes_of(events, match.found))[EVENT_COLUMNS]
    matched = int(events["pcode"].notna().sum())
    notes.insert(
        0,
        f"{len(records)} records ({len(events)} stored after dropping double entries); "
        f"{matched} of {len(events)} stored events matched to an INE municipio "
        f"({matched / len(events):.1%}), {len(events) - matched} unmatched (stored with pcode NULL), "
        f"{len(match.unmatched)} unmatched department/municipio pairs",
    )
    notes += [f"unmatched: {d} / {m or '(no municipio)'}: {n} records" for d, m, n in match.unmatched]
    notes += [f"matched: {r}" for r in match.renamed]
    validation = Validation(errors=match.errors)
    progress("reading the 2018 population")
    population = _population(conn)
    ind = {c: i for c, i in catalogue.items() if i.source_id == SOURCE_ID}
    missing = {EVENTS_CODE, AFFECTED_CODE} - set(ind)
    if missing:
        raise DataError(f"Source '{SOURCE_ID}': indicators {sorted(missing)} are not in the catalogue.")
    rows = indicator_rows(
        events, sorted(units["pcode"]), population, csv_file.sha256, {c: i.period for c, i in ind.items()}
    )
    rows += yearly_rows(events, sorted(units["pcode"]), csv_file.sha256)
    layer = Layer(
        source,
        [(source, paths)],
        [*ind.values(), GTM_EVENTS_YEAR],
        observations_frame(rows),
        validation,
        notes,
    )
    layer.extra = _writer(events, source)
    return layer
