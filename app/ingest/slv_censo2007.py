"""El Salvador, VI Censo de Población y V de Vivienda 2007 (DIGESTYC): living conditions of the 262 municipios
of 2007, which are the 262 distritos since the 2024 reform.

The table `07_Indicadores_Sociodemograficos.xlsx`, sheet `Municipios`, has a header row, a national row (no
name), then per department a subtotal row "NN-DEPARTAMENTO" (DIGESTYC numbering 01 Ahuachapán … 14 La Unión)
followed by its municipios by name, and the source footnote "FUENTE: DIGESTYC …" last. Values are stored on
`slv-2021-distritos` with period "2007"; the 44 municipios of 2024 get them at read time through the crosswalk
(`app.indicators`), population-weighted by `population_2007`.

Cleaning and statistical choices:
- Municipio rows are matched to the stored distritos by department (the DIGESTYC code of the subtotal row =
  the stored department's national code, whose name must agree) and accent-insensitive name, with six pinned
  aliases where the 2007 name differs from the COD-AB name (`SLV_2007_ALIASES`). All 262 must match one
  distrito each; otherwise nothing is stored and the error lists the unmatched rows.
- The table gives drinking water and electricity as coverage (% of households with the service); Raíces
  scores deprivations, so `no_drinking_water_pct_2007` = 100 − 'Agua Potable' and `no_electricity_pct_2007`
  = 100 − 'Electricidad'. 'Sin Servicio Sanitario' (% of households), 'Con Piso de Tierra' (% of dwellings),
  'Tasa - Analfabetismo' (%) and 'TMI' (infant deaths per 1,000 live births) are deprivations as published.
  'Asistencia Escolar' (%) is coverage, kept as context with direction −1. The households/dwellings bases
  are those of the workbook's `Departamentos` sheet header ("Hogares - Servicios Básicos", "Viviendas").
- The national row is parsed and checked but not stored (it is no unit); the 14 subtotal rows neither.
- `population_2007` = density ('densidad', persons per km² as DIGESTYC computed it on its own areas) × the
  distrito's `area_km2` from the stored COD-AB boundaries. It reconstructs the 2007 population only as well
  as the COD-AB area matches DIGESTYC's: nationally COD-AB measures ≈20,149 km² of land against DIGESTYC's
  21,041 km² (5,744,113 / 273 per km²), and distrito boundaries differ in both directions, so single distritos
  can be far off while the national sum lands within a few per cent (the load notes give the difference).
  It is a weight for aggregating 2007 rates, not a population figure to publish.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Connection, text

from app.errors import DataError
from app.ingest.common import Progress, Validation, workbook_rows
from app.ingest.layers import Indicator, Layer, observations_frame
from app.settings import Settings
from app.sources import Resolver, Source
from app.text import name_key

SOURCE_ID = "slv-censo2007"
DISTRITOS_SET = "slv-2021-distritos"
PERIOD = "2007"
SHEET = "Municipios"
# 2007 census total (DIGESTYC): the national row's density 273 per km² × DIGESTYC's 21,040.79 km²
NATIONAL_POPULATION_2007 = 5_744_113
N_MUNICIPIOS = 262
N_DEPARTMENTS = 14

# the sheet's header as published, and the short names used here
HEADER = (
    ("municipio", "name"),
    ("densidad", "density"),
    ("% urbano", "urban_pct"),
    ("Masculinidad", "masculinity"),
    ("Relación Dependencia", "dependency_ratio"),
    ("60 Años y Más", "aged_60_pct"),
    ("TGF", "fertility"),
    ("TMI", "infant_mortality"),
    ("Tasa - Analfabetismo", "illiteracy"),
    ("Asistencia Escolar", "school_attendance"),
    ("Agua Potable", "drinking_water"),
    ("Electricidad", "electricity"),
    ("Sin Servicio Sanitario", "no_sanitation"),
    ("Con Piso de Tierra", "dirt_floor"),
)
VALUE_COLUMNS = [short for _, short in HEADER[1:]]

# (DIGESTYC department code, name key in the 2007 table) → name key of the stored COD-AB distrito
SLV_2007_ALIASES = {
    ("03", "santo domingo de guzman"): "santo domingo",
    ("04", "cancasque"): "san jose cancasque",
    ("04", "las flores"): "san jose las flores",
    ("05", "san juan opico"): "opico",
    ("05", "santa tecla"): "nueva san salvador",
    ("12", "san rafael oriente"): "san rafael",
}

# indicator code → how its value follows from the table's columns
INDICATOR_COLUMNS: dict[str, tuple[str, bool]] = {
    # code: (column, published as coverage: stored as 100 − value)
    "no_drinking_water_pct_2007": ("drinking_water", True),
    "no_electricity_pct_2007": ("electricity", True),
    "no_sanitation_pct_2007": ("no_sanitation", False),
    "dirt_floor_pct_2007": ("dirt_floor", False),
    "illiteracy_pct_2007": ("illiteracy", False),
    "infant_mortality_2007": ("infant_mortality", False),
    "school_attendance_pct_2007": ("school_attendance", False),
}
POPULATION_CODE = "population_2007"
_DEPARTMENT_ROW = re.compile(r"(\d{2})\s*-\s*(.+)")


@dataclass
class CensusTable:
    """The parsed sheet: the national row (not a unit) and one row per municipio with its department."""

    national: dict[str, float]
    departments: list[tuple[str, str]]  # (DIGESTYC code, name as written), in file order
    municipios: pd.DataFrame  # dep_code, dep_name, name, row (Excel row number), then VALUE_COLUMNS


def _number(value: Any, where: str, source_id: str, file: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataError(
            f"Source '{source_id}', file '{file}', sheet '{SHEET}', {where}: expected a number, "
            f"found {value!r}. Restore the original DIGESTYC table."
        )
    return float(value)


def read_census_table(path: Path, *, source_id: str = SOURCE_ID) -> CensusTable:
    """Parse sheet `Municipios`; an unreadable, truncated or re-arranged workbook is a clear DataError."""
    file = path.name
    numbered = [
        (i, list(r))
        for i, r in enumerate(workbook_rows(path, source_id=source_id, sheet=SHEET), start=1)
        if any(c is not None and str(c).strip() != "" for c in r)
    ]

    layout = (
        f"Source '{source_id}', file '{file}', sheet '{SHEET}' is not the expected layout "
        "(header row, national row, 14 department subtotal rows 'NN-DEPARTAMENTO' each followed by its "
        "municipios, footnote 'FUENTE: DIGESTYC …' last)"
    )
    if len(numbered) < 3:
        raise DataError(f"{layout}: only {len(numbered)} non-empty rows.")
    width = len(HEADER)
    numbered = [(i, (r + [None] * width)[:width] if len(r) < width else r) for i, r in numbered]
    header = [name_key(str(c or "")) for c in numbered[0][1][:width]]
    expected = [name_key(h) for h, _ in HEADER]
    if header != expected:
        raise DataError(
            f"{layout}: row {numbered[0][0]} should be the header {[h for h, _ in HEADER]}, "
            f"found {numbered[0][1][:width]}."
        )
    last_row, last = numbered[-1]
    if not str(last[0] or "").strip().upper().startswith("FUENTE"):
        raise DataError(
            f"{layout}: the last row ({last_row}) is not the source footnote 'FUENTE: DIGESTYC …' "
            "— the table looks truncated."
        )
    nat_row, nat = numbered[1]
    if nat[0] not in (None, ""):
        raise DataError(f"{layout}: row {nat_row} should be the national row (no name), found {nat[0]!r}.")
    national = {
        col: _number(v, f"national row {nat_row}, column '{h}'", source_id, file)
        for (h, col), v in zip(HEADER[1:], nat[1:width], strict=True)
    }

    departments: list[tuple[str, str]] = []
    records: list[dict[str, Any]] = []
    dep: tuple[str, str] | None = None
    for row_number, r in numbered[2:-1]:
        label = str(r[0] or "").strip()
        if not label:
            raise DataError(f"{layout}: row {row_number} has values but no name.")
        m = _DEPARTMENT_ROW.fullmatch(label)
        if m:
            dep = (m.group(1), m.group(2).strip())
            departments.append(dep)
            continue
        if dep is None:
            raise DataError(f"{layout}: municipio '{label}' in row {row_number} precedes any department row.")
        rec: dict[str, Any] = {"dep_code": dep[0], "dep_name": dep[1], "name": label, "row": row_number}
        for (h, col), v in zip(HEADER[1:], r[1:width], strict=True):
            rec[col] = _number(v, f"row {row_number} ('{label}'), column '{h}'", source_id, file)
        records.append(rec)
    codes = [c for c, _ in departments]
    if codes != [f"{i:02d}" for i in range(1, N_DEPARTMENTS + 1)]:
        raise DataError(
            f"{layout}: department subtotal rows should be numbered 01…14 in DIGESTYC order, found {codes}."
        )
    frame = pd.DataFrame(records, columns=["dep_code", "dep_name", "name", "row", *VALUE_COLUMNS])
    if len(frame) != N_MUNICIPIOS:
        raise DataError(f"{layout}: {len(frame)} municipio rows, DIGESTYC's 2007 table has {N_MUNICIPIOS}.")
    return CensusTable(national, departments, frame)


def _distritos(conn: Connection) -> pd.DataFrame:
    rows = conn.execute(
        text("""
            SELECT u.pcode, u.national_code, u.name, u.name_key, u.area_km2,
                   d.national_code AS dep_code, d.name AS dep_name
            FROM admin_units u
            JOIN admin_units d ON d.boundary_set_id = u.boundary_set_id AND d.pcode = u.parent_pcode
            WHERE u.boundary_set_id = :s AND u.level = 2
        """),
        {"s": DISTRITOS_SET},
    ).mappings()
    frame = pd.DataFrame([dict(r) for r in rows])
    if frame.empty:
        raise DataError(
            f"Source '{SOURCE_ID}' is stored on '{DISTRITOS_SET}', which has no units: "
            "load slv-codab-2021 first."
        )
    return frame


def match_distritos(table: pd.DataFrame, units: pd.DataFrame) -> tuple[pd.Series, list[str], list[str]]:
    """The distrito P-code of each municipio row (None when unmatched), the errors and the aliases used.

    A row matches the one distrito of its department (DIGESTYC code) whose accent-free name equals the row's,
    after the pinned `SLV_2007_ALIASES`; every distrito must be matched by exactly one row."""
    errors: list[str] = []
    aliased: list[str] = []
    deps = units.drop_duplicates("dep_code").set_index("dep_code")["dep_name"].to_dict()
    for code, name in table[["dep_code", "dep_name"]].drop_duplicates().itertuples(index=False):
        if code not in deps:
            errors.append(f"department {code}-{name}: no stored department has DIGESTYC code {code}")
        elif name_key(str(name)) != name_key(str(deps[code])):
            errors.append(f"department {code}-{name}: the stored department {code} is '{deps[code]}'")
    index = {(d, k): p for d, k, p in zip(units["dep_code"], units["name_key"], units["pcode"], strict=True)}
    pcodes: list[str | None] = []
    unmatched: list[str] = []
    for dep, name, row in zip(table["dep_code"], table["name"], table["row"], strict=True):
        key = name_key(str(name))
        target = SLV_2007_ALIASES.get((dep, key), key)
        pcode = index.get((dep, target))
        if pcode is None:
            unmatched.append(f"row {row} '{name}' (department {dep})")
        elif target != key:
            aliased.append(f"{name} → {units.loc[units['pcode'] == pcode, 'name'].iloc[0]}")
        pcodes.append(pcode)
    if unmatched:
        errors.append(
            f"{len(unmatched)} of {len(table)} municipios match no distrito of slv-2021-distritos "
            f"(add an alias to SLV_2007_ALIASES if the place is the same): {unmatched}"
        )
    out = pd.Series(pcodes, index=table.index, dtype="object")
    twice = out[out.notna() & out.duplicated(keep=False)]
    if not twice.empty:
        errors.append(f"distritos matched by more than one row: {sorted(set(twice))}")
    missing = sorted(set(units["pcode"]) - set(out.dropna()))
    if missing and not unmatched:
        errors.append(f"{len(missing)} distritos have no row in the 2007 table: {missing}")
    return out, errors, aliased


def prepare_slv_censo2007(
    conn: Connection,
    settings: Settings,
    sources: dict[str, Source],
    resolver: Resolver,
    catalogue: dict[str, Indicator],
    progress: Progress,
) -> Layer:
    """2007 living-conditions indicators and a reconstructed 2007 population on the 262 distritos."""
    source = sources[SOURCE_ID]
    paths = resolver.resolve(source)
    f = source.first("xlsx")
    progress("reading the 2007 census indicators")
    table = read_census_table(paths[f.name], source_id=source.id)
    units = _distritos(conn)
    pcodes, errors, aliased = match_distritos(table.municipios, units)
    validation = Validation(errors=list(errors))
    frame = table.municipios.assign(pcode=pcodes)
    frame = frame[frame["pcode"].notna()].merge(units[["pcode", "area_km2"]], on="pcode", how="left")

    missing_codes = [c for c in [*INDICATOR_COLUMNS, POPULATION_CODE] if c not in catalogue]
    if missing_codes:
        raise DataError(
            f"Source '{source.id}': indicators {missing_codes} are missing from the catalogue "
            "(geodata/indicators.csv)."
        )
    values: dict[str, pd.Series] = {}
    for code, (column, coverage) in INDICATOR_COLUMNS.items():
        values[code] = 100.0 - frame[column] if coverage else frame[column]
    population = frame["density"] * frame["area_km2"]
    values[POPULATION_CODE] = population

    rows: list[dict[str, Any]] = []
    for code, series in values.items():
        rows += [
            {
                "indicator_code": code,
                "boundary_set_id": DISTRITOS_SET,
                "pcode": p,
                "period": PERIOD,
                "value": float(v),
                "flags": [],
                "file_sha256": f.sha256,
            }
            for p, v in zip(frame["pcode"], series, strict=True)
        ]

    total = float(population.sum())
    nat = table.national
    notes = [
        f"{len(frame)} of {N_MUNICIPIOS} municipios of 2007 matched to distritos"
        + (f"; through pinned aliases: {aliased}" if aliased else ""),
        "national row (parsed, not stored): drinking water {:.1f} %, electricity {:.1f} %, no sanitation "
        "{:.1f} %, dirt floor {:.1f} %, illiteracy {:.1f} %, infant mortality {:.1f} per 1,000".format(
            nat["drinking_water"],
            nat["electricity"],
            nat["no_sanitation"],
            nat["dirt_floor"],
            nat["illiteracy"],
            nat["infant_mortality"],
        ),
        "drinking water and electricity are published as coverage: stored as deprivations (100 − coverage)",
        f"population_2007 = density × COD-AB area: national sum {total:,.0f} against the census total "
        f"{NATIONAL_POPULATION_2007:,} ({total - NATIONAL_POPULATION_2007:+,.0f}, "
        f"{(total / NATIONAL_POPULATION_2007 - 1) * 100:+.2f} %); single distritos can be further off where "
        "the COD-AB and DIGESTYC areas differ",
    ]
    notes += _compare_with_2024(conn, frame.assign(population_2007=population))
    return Layer(
        source,
        [(source, paths)],
        [catalogue[c] for c in values],
        observations_frame(rows),
        validation,
        notes,
    )


def _compare_with_2024(conn: Connection, frame: pd.DataFrame) -> list[str]:
    """A plausibility note: the 2024 census population over the reconstructed 2007 population, per municipio
    of 2024 (national growth 2007–2024 was a few per cent; ratios far from 1 point at area mismatches)."""
    pop24: dict[str, float] = dict(
        conn.execute(
            text(
                "SELECT o.pcode, o.value FROM observations o WHERE o.indicator_code = 'population' "
                "AND o.boundary_set_id = 'slv-2024-municipios'"
            )
        ).all()
    )
    xw = pd.DataFrame(
        conn.execute(
            text(
                "SELECT from_pcode AS pcode, to_pcode, share_of_from FROM crosswalk "
                "WHERE from_set = :f AND to_set = 'slv-2024-municipios'"
            ),
            {"f": DISTRITOS_SET},
        ).all(),
        columns=["pcode", "to_pcode", "share_of_from"],
    )
    if not pop24 or xw.empty:
        return []
    m = xw.merge(frame[["pcode", "population_2007"]], on="pcode")
    m["part"] = m["population_2007"] * m["share_of_from"]
    by_muni = m.groupby("to_pcode")["part"].sum()
    later = pd.Series([pop24.get(p, float("nan")) for p in by_muni.index], index=by_muni.index)
    ratio = (later / by_muni).dropna()
    if ratio.empty:
        return []
    return [
        f"2024 census population / reconstructed 2007 population per 2024 municipio: median "
        f"{ratio.median():.2f}, range {ratio.min():.2f} ({ratio.idxmin()}) to {ratio.max():.2f} "
        f"({ratio.idxmax()}); extremes reflect COD-AB vs DIGESTYC area differences as much as growth"
    ]
