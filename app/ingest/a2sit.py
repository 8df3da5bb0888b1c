"""UNHCR A2SIT input templates (XLSX): five header rows (weight, direction, group, name, code), then one
row per admin-2 P-code. Generic for any country's template; the catalogue maps known columns.

The Guatemala template states no per-indicator year or publisher. UNHCR Guatemala's MVI workbook
(`gtm-mvi-unhcr`, `Master_indicators_clean.xlsx`) does: its `Metadata` sheet gives each indicator's Year and
Source, and its `Master` sheet repeats the indicators' inputs by municipio. When that workbook is given
(only for a template keyed on Guatemala's municipios), each A2SIT column is linked to its metadata row by
the pinned table `GTM_METADATA_LINKS`, its vintage and publisher replace "unstated", and every value is
recomputed from the Master sheet and compared (disagreements are reported in the layer notes)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Connection

from app.errors import DataError
from app.ingest.common import Progress, Validation, read_xlsx_sheet, workbook_rows
from app.ingest.layers import ABSENT_ASSUMED_ZERO, PERIOD_UNSTATED, Indicator, Layer, observations_frame
from app.ingest.matching import units_frame
from app.sources import Resolver, Source
from app.text import name_key

# The P-code prefix of a template names its country's boundary set (OCHA admin-2 P-codes).
SET_BY_PREFIX = {"GT": "gtm-municipios", "HN": "hnd-municipios", "SV": "slv-2021-distritos"}
HEADER_ROWS = ("weight", "direction", "group", "name", "code")


@dataclass
class Template:
    """The parsed template: per-column metadata and the data rows (pcode, name, values)."""

    columns: pd.DataFrame  # code, name, direction, group, weight
    data: pd.DataFrame  # pcode, name, then one column per indicator code (raw cell values)


def read_template(path: Path, *, source_id: str, sheet: str = "Data") -> Template:
    """Parse the Data sheet; a file that is not an A2SIT template is a clear DataError."""
    rows = workbook_rows(path, source_id=source_id, sheet=sheet)
    if len(rows) < 6 or str(rows[4][0] or "").strip().lower() != "admin2pcode":
        raise DataError(
            f"Source '{source_id}', file '{path.name}' is not an A2SIT input template: expected five header "
            "rows (weight, direction, group, indicator name, code) with 'admin2Pcode' in cell A5."
        )
    width = max(len(r) for r in rows)
    rows = [r + [None] * (width - len(r)) for r in rows]
    codes = [str(c).strip() if c is not None else "" for c in rows[4][2:]]
    columns = pd.DataFrame(
        {
            "code": codes,
            "weight": rows[0][2:],
            "direction": rows[1][2:],
            "group": rows[2][2:],
            "name": rows[3][2:],
        }
    )
    columns = columns[columns["code"] != ""]
    data_rows = [r for r in rows[5:] if r[0] not in (None, "")]
    data = pd.DataFrame([[r[0], r[1], *r[2:]] for r in data_rows], columns=["pcode", "name", *codes])
    data["pcode"] = data["pcode"].astype(str).str.strip().str.upper()
    return Template(columns.reset_index(drop=True), data)


def numeric_values(data: pd.DataFrame, column: str) -> tuple[pd.Series, list[str]]:
    """The column as floats (None for blanks) and the cells that are text, not numbers."""
    out: list[float | None] = []
    bad: list[str] = []
    for row_number, value in zip(range(6, 6 + len(data)), data[column], strict=True):
        if value is None or (isinstance(value, str) and not value.strip()):
            out.append(None)
        elif isinstance(value, bool):
            bad.append(f"{column} row {row_number}: {value!r}")
            out.append(None)
        elif isinstance(value, (int, float)):
            out.append(float(value))
        else:
            try:
                out.append(float(str(value).strip()))
            except ValueError:
                bad.append(f"{column} row {row_number}: {str(value)[:30]!r} is not a number")
                out.append(None)
    return pd.Series(out, index=data.index, dtype="float64"), bad


def reconcile_pcodes(data: pd.DataFrame, units: pd.DataFrame) -> tuple[pd.Series, list[str], list[str]]:
    """Check each row's name against the stored unit; re-key a row whose name belongs to another unit
    of the same department (the A2SIT GTM template follows OCHA, where GT0206 is Sanarate; Raíces
    follows INE, where GT0206 is Sansare)."""
    by_pcode = dict(zip(units["pcode"], units["name_key"], strict=True))
    names = dict(zip(units["pcode"], units["name"], strict=True))
    notes: list[str] = []
    warnings: list[str] = []
    out = []
    for pcode, name in zip(data["pcode"], data["name"], strict=True):
        key = name_key(str(name or ""))
        if pcode in by_pcode and (not key or _same_place(by_pcode[pcode], key)):
            out.append(pcode)
            continue
        same_dep = units[(units["parent_pcode"] == pcode[:4]) & (units["name_key"] == key)]
        if len(same_dep) == 1:
            target = str(same_dep["pcode"].iloc[0])
            notes.append(f"{pcode} '{name}' re-keyed to {target}: the file's P-code names another unit")
            out.append(target)
        else:
            if pcode in by_pcode:
                warnings.append(f"{pcode}: the file names it '{name}', the boundaries '{names[pcode]}'")
            out.append(pcode)
    return pd.Series(out, index=data.index), notes, warnings


def _same_place(a: str, b: str) -> bool:
    """Name keys of one place: equal, or one the other's ending ('petapa' and 'san miguel petapa')."""
    return (
        a == b
        or f" {a}".endswith(f" {b}")
        or f" {b}".endswith(f" {a}")
        or f"{a} ".startswith(f"{b} ")
        or f"{b} ".startswith(f"{a} ")
    )


def _indicator_for(column: pd.Series, source_id: str, catalogue: dict[str, Indicator]) -> Indicator:
    for ind in catalogue.values():
        if ind.source_id == source_id and ind.column == column["code"]:
            return ind
    direction = int(column["direction"]) if column["direction"] in (1, -1, "1", "-1") else 1
    name = str(column["name"] or column["code"])
    return Indicator(
        code="a2sit_" + name_key(str(column["code"])).replace(" ", "_"),
        name_en=name,
        name_es=name,
        unit="as in the template",
        theme="context",
        direction=direction,
        measure="rate",
        source_id=source_id,
        period="unstated",
        column=str(column["code"]),
        reason="Column not in geodata/indicators.csv: stored as context, not scored, until mapped",
    )


# --- Guatemala: vintages and publishers from UNHCR Guatemala's MVI metadata (gtm-mvi-unhcr) -------------

METADATA_SOURCE_ID = "gtm-mvi-unhcr"
METADATA_SET = "gtm-municipios"  # the metadata describes the Guatemala template only

# How a value of the MVI `Master` sheet becomes the A2SIT template's value. Established by recomputing all
# 340 municipios (e.g. the template's crime rate is the Master's count of crimes / 2018 population × 100,000;
# the template's disability share is the Master's count / 2018 population).
SAME = "same"  # the template repeats the Master's value
PER_100K = "per_100k"  # Master count / Pop_Total (Censo 2018) × 100,000
PER_PERSON = "per_person"  # Master count or total / Pop_Total (a share, or a per-capita amount)
PER_CHILD = "per_child"  # Master count / Pop_NNA (children and adolescents, Censo 2018)
PERCENT = "percent"  # Master percentage / 100
PER_100K_TO_SHARE = "per_100k_to_share"  # Master rate per 100,000 / 100,000
UNCHECKED = "unchecked"  # the denominator the template used is in neither file: not comparable

# Relative tolerance of the value check: the template was computed from the same numbers, so anything
# beyond floating-point noise is a disagreement.
REL_TOL = 1e-6
# A link whose compared values disagree for more than this share of municipios is refuted: the metadata
# row evidently describes another indicator, so its year and publisher are not applied.
REFUTED_SHARE = 0.5


@dataclass(frozen=True)
class MetadataLink:
    """One A2SIT template column ↔ one row of the MVI Metadata sheet (its Code and Indicator name)."""

    column: str  # the A2SIT template's column code
    code: str  # Code in the Metadata sheet
    indicator: str  # the Metadata sheet's Indicator name for that Code (checked at load)
    compare: str  # how the Master sheet's value maps to the template's (SAME, PER_100K, ...)


# The pinned correspondence, established from the names and checked on the values (see `check_against_master`).
# The Master sheet's code row is not trusted: it labels the poverty column S.E.3 (Metadata: S.E.4) and shifts
# C.I.5–C.I.7 (it puts C.I.7 over public investment); Master columns are found by Indicator name instead.
GTM_METADATA_LINKS: tuple[MetadataLink, ...] = (
    MetadataLink("Conflict", "A.A.1", "Presencia de conflictos territoriales", SAME),
    MetadataLink("DesastresNat", "A.D.1", "Índice de exposición a desastres naturales", SAME),
    MetadataLink("Refugiados", "A.M.1", "# de personas refugiadas y solicitantes de asilo", PER_100K),
    MetadataLink("Deportadas", "A.M.2", "Tasa de personas deportadas", SAME),
    MetadataLink("RisDespl", "A.M.4", "Tasa de personas en riesgo de desplazamiento", PER_100K),
    MetadataLink("IDP", "A.M.5", "Tasa de personas desplazadas internamente", SAME),
    MetadataLink("Transitando", "A.M.6", "# de personas en movilidad transitando mensualmente", SAME),
    MetadataLink("Delitos", "A.V.1", "# de delitos por municipio", PER_100K),
    MetadataLink("ViolenciaMujer", "A.V.2", "Tasa de violencia contra las mujeres", SAME),
    MetadataLink("IntraFamViolencia", "A.V.3", "# de casos de violencia intrafamiliar", PER_100K),
    MetadataLink("GrupCrim", "A.V.5", "Presencia de grupos criminales", SAME),
    MetadataLink(
        "InsegAlim", "S.A.1", "Índice de vulnerabilidad a la inseguridad alimentaria y nutricional", SAME
    ),
    MetadataLink("Dormitoria", "S.A.3", "Promedio de personas por dormitorio (hacinamiento)", SAME),
    MetadataLink(
        "VivCollectCalle", "S.A.4", "# de personas en viviendas colectivas y sitaución de calle", PER_100K
    ),
    MetadataLink("Gini", "S.E.1", "Coeficiente de Gini", SAME),
    MetadataLink("PIB", "S.E.2", "PIB per cápita 2021 (US$ al año)", SAME),
    MetadataLink("Pobreza", "S.E.4", "Tasa de Pobreza (% Población)", SAME),
    MetadataLink("Discapacidad", "S.G.1", "% de personas con discapacidad", PER_PERSON),
    MetadataLink("Rural", "S.G.2", "% de población rural", PER_100K_TO_SHARE),
    MetadataLink("Maya", "S.G.3", "% de población maya", PER_PERSON),
    MetadataLink("Extranjera", "S.G.4", "% de población extranjera", PER_PERSON),
    MetadataLink("Afrodesc", "S.G.5", "% de población afrodescendiente", PER_PERSON),
    MetadataLink("Xinca", "S.G.6", "% de población xinca", PER_PERSON),
    MetadataLink("Garifu", "S.G.7", "% de población garífuna", PER_PERSON),
    MetadataLink("Mest", "S.G.8", "% de población ladina/mestiza", PER_PERSON),
    MetadataLink("Desemp", "S.T.1", "% de desempleados (+18)", SAME),
    MetadataLink("Trabinfant", "S.T.2", "% de NNA que realizan trabajo infantil", SAME),
    MetadataLink("EmpleoForm", "S.T.3", "Tasa de empleo formal", SAME),
    MetadataLink("Dependencia", "S.T.4", "Tasa de dependencia general", SAME),
    MetadataLink("ParticipComm", "C.C.1", "Índice Participación Comunitaria", SAME),
    MetadataLink("InstComm", "C.C.2", "Instalaciones comunitarias /  juveniles…", SAME),
    MetadataLink(
        "ExclComm", "C.C.3", "Dinámicas de inclusión/exclusión en la comunidad (discriminación)", SAME
    ),
    MetadataLink("CapAlbergues", "C.C.4", "Tasa de capacidad de albergues", SAME),
    MetadataLink("Matriculation", "C.E.4", "Tasa de matriculación", PER_CHILD),
    MetadataLink("EducBasic", "C.E.5", "# de personas con educación básica concluida", UNCHECKED),
    MetadataLink("EducUniv", "C.E.6", "# de personas con estudios universitarios concluidos", UNCHECKED),
    MetadataLink("Analfabetas", "C.E.8", "% de personas analfabetas mayores de 15 años", PERCENT),
    MetadataLink("EducGastos", "C.E.9", "Gasto público en educación per cápita (en quetzales)", SAME),
    MetadataLink("Alumnos", "C.E.10", "# de alumnos por docente en todos los niveles", SAME),
    MetadataLink("Graduand", "C.E.11", "% de logro graduandos (matemáticas y lenguaje)", SAME),
    MetadataLink("GestAdmin", "C.I.1", "Índice de gestión administrativa", SAME),
    MetadataLink("GestEstr", "C.I.2", "Índice de gestión estratégica", SAME),
    MetadataLink("GestFin", "C.I.3", "Índice de gestión financiera", SAME),
    MetadataLink("ServPub", "C.I.4", "Índice de servicios públicos", SAME),
    MetadataLink("InversPubl", "C.I.5", "Tasa de inversión pública", PER_PERSON),
    MetadataLink("AccElectr", "C.I.6", "% de hogares que residen en zonas con acceso a electricidad", SAME),
    MetadataLink(
        "CubiertaAgua", "C.I.7", "% de la población cubierta con servicios de agua y saneamiento", SAME
    ),
    MetadataLink("FunctJusticia", "C.J.1", "Tasa de funcionarios públicos de justicia", SAME),
    MetadataLink("Estabjusticia", "C.J.2", "Número de establecimientos de justicia", SAME),
    MetadataLink("Resolucion", "C.J.3", "Tasa de resolución de casos", SAME),
    MetadataLink("EstSalud", "C.S.1", "Tasa de establecimientos de salud", SAME),
    MetadataLink("Medicaos", "C.S.2", "Tasa de médicos", SAME),
    MetadataLink("CondEstSalud", "C.S.3", "Condiciones de los establecimientos de salud", SAME),
    MetadataLink("SaludGastos", "C.S.4", "Gasto público en salud per cápita (en quetzales)", SAME),
)

_MASTER_KEYS = ["cod dep", "departamento", "cod mun", "municipio"]
_METADATA_COLUMNS = {"Code", "Indicator", "Direction", "Year", "Source"}


@dataclass
class GtmMetadata:
    """The MVI workbook, parsed: metadata rows by Code, Master values by municipio, populations."""

    rows: pd.DataFrame  # code, indicator, direction, year, source (one row per Code)
    master: pd.DataFrame  # index pcode; one column per name_key(Indicator name) of the Master sheet
    master_codes: dict[str, str]  # name_key(Indicator name) → the code the Master's code row gives it
    population: pd.DataFrame | None  # index pcode; Pop_Total, Pop_NNA (None: no population file)


def _text(value: Any) -> str:
    return " ".join(str(value).split()) if value is not None else ""


def _year(value: Any) -> str:
    """A Year cell as a period ('2021'); blank → ''."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return _text(value)


def _ine_pcode(value: Any, *, where: str) -> str:
    """An INE municipio code (101…2217) → the gtm-municipios P-code (GT + 4 digits)."""
    try:
        number = float(str(value).strip())
    except ValueError:
        number = float("nan")
    if not number.is_integer() or not 101 <= number <= 2299:
        raise DataError(f"{where}: {value!r} is not an INE municipio code (101…2217).")
    return f"GT{int(number):04d}"


def read_gtm_metadata(source: Source, paths: dict[str, Path]) -> GtmMetadata:
    """Read the MVI workbook's Metadata and Master sheets (and the population table, for the rates).

    Metadata: header on row 1; rows without a Code are skipped. Master: indicator names on row 3 (cell D3
    'Indicador'), codes and the keys `Cód_dep, Departamento, Cód_mun, Municipio` on row 6, then one row per
    municipio keyed by its INE code. A workbook laid out otherwise is a DataError naming file and row."""
    f = source.file("metadata")
    path = paths[f.name]
    where = f"Source '{source.id}', file '{f.name}'"
    meta_rows = workbook_rows(path, source_id=source.id, sheet=f.layer or "Metadata")
    if not meta_rows:
        raise DataError(f"{where}, sheet 'Metadata' is empty.")
    header = [_text(c) for c in meta_rows[0]]
    missing = _METADATA_COLUMNS - set(header)
    if missing:
        raise DataError(f"{where}, sheet 'Metadata': missing columns {sorted(missing)} in row 1.")
    pos = {name: header.index(name) for name in _METADATA_COLUMNS}
    records = []
    for r in meta_rows[1:]:
        r = r + [None] * (len(header) - len(r))
        if not _text(r[pos["Code"]]):
            continue
        records.append(
            {
                "code": _text(r[pos["Code"]]),
                "indicator": _text(r[pos["Indicator"]]),
                "direction": _text(r[pos["Direction"]]),
                "year": _year(r[pos["Year"]]),
                "source": _text(r[pos["Source"]]),
            }
        )
    rows = pd.DataFrame(records, columns=["code", "indicator", "direction", "year", "source"])
    dup = rows["code"][rows["code"].duplicated()]
    if not dup.empty:
        raise DataError(f"{where}, sheet 'Metadata': duplicate codes {sorted(set(dup))}.")

    master_rows = workbook_rows(path, source_id=source.id, sheet="Master")
    if len(master_rows) < 7 or [name_key(_text(c)) for c in master_rows[5][:4]] != _MASTER_KEYS:
        raise DataError(
            f"{where}, sheet 'Master': expected the header on row 6 starting "
            "'Cód_dep, Departamento, Cód_mun, Municipio'."
        )
    if name_key(_text(master_rows[2][3])) != "indicador":
        raise DataError(
            f"{where}, sheet 'Master': expected the indicator names on row 3 (cell D3 'Indicador')."
        )
    width = max(len(r) for r in master_rows)
    master_rows = [r + [None] * (width - len(r)) for r in master_rows]
    names = [name_key(_text(c)) for c in master_rows[2]]
    codes = [_text(c) for c in master_rows[5]]
    columns = {i: names[i] for i in range(4, width) if names[i]}
    data: dict[str, dict[str, Any]] = {}
    for number, r in enumerate(master_rows[6:], start=7):
        if r[2] is None or (isinstance(r[2], str) and not r[2].strip()):
            continue
        pcode = _ine_pcode(r[2], where=f"{where}, sheet 'Master', row {number}")
        if pcode in data:
            raise DataError(f"{where}, sheet 'Master', row {number}: municipio {pcode} appears twice.")
        data[pcode] = {key: r[i] for i, key in columns.items()}
    master = pd.DataFrame.from_dict(data, orient="index")
    for key in master.columns:
        master[key] = pd.to_numeric(master[key], errors="coerce")
    master_codes = {key: codes[i] for i, key in columns.items()}

    population = None
    pop_file = next((x for x in source.files if x.role == "population"), None)
    if pop_file is not None:
        table = read_xlsx_sheet(paths[pop_file.name], source_id=source.id, sheet=pop_file.layer or "Sheet1")
        need = {"Cód_mun", "Pop_Total", "Pop_NNA"}
        if need - set(table.columns):
            raise DataError(
                f"Source '{source.id}', file '{pop_file.name}': missing columns {sorted(need - set(table.columns))}."
            )
        table = table[table["Cód_mun"].notna()]
        table.index = [
            _ine_pcode(code, where=f"Source '{source.id}', file '{pop_file.name}', row {number + 2}")
            for number, code in zip(table.index, table["Cód_mun"], strict=True)
        ]
        population = table[["Pop_Total", "Pop_NNA"]].apply(pd.to_numeric, errors="coerce")
    return GtmMetadata(rows.set_index("code", drop=False), master, master_codes, population)


def expected_from_master(meta: GtmMetadata, link: MetadataLink) -> pd.Series | None:
    """The template's value as recomputed from the Master sheet, by P-code (None: not comparable)."""
    key = name_key(link.indicator)
    if link.compare == UNCHECKED or key not in meta.master.columns:
        return None
    raw = meta.master[key].astype("float64")
    if link.compare == SAME:
        return raw
    if link.compare == PERCENT:
        return raw / 100
    if link.compare == PER_100K_TO_SHARE:
        return raw / 100_000
    if meta.population is None:
        return None
    pop = meta.population.reindex(raw.index)
    if link.compare == PER_100K:
        return raw / pop["Pop_Total"] * 100_000
    if link.compare == PER_PERSON:
        return raw / pop["Pop_Total"]
    if link.compare == PER_CHILD:
        return raw / pop["Pop_NNA"]
    raise ValueError(f"unknown comparison '{link.compare}'")


def _agree(a: float, b: float) -> bool:
    return abs(a - b) <= REL_TOL * max(abs(a), abs(b)) + 1e-12


@dataclass
class MasterCheck:
    """The outcome of comparing the template's values with the Master sheet's."""

    summary: pd.DataFrame  # column, code, compare, compared, disagree, template_only, master_only
    disagreements: pd.DataFrame  # column, code, pcode, template, master, rel_diff (worst first)
    template_only: dict[str, list[str]]  # column → P-codes with a template value and no Master value
    not_counts: list[str]  # PER_100K columns whose Master values are not whole numbers (not counts)


def check_against_master(
    values: dict[str, pd.Series], meta: GtmMetadata, links: tuple[MetadataLink, ...] = GTM_METADATA_LINKS
) -> MasterCheck:
    """Compare each linked column's values (by P-code) with the value recomputed from the Master sheet.

    Only municipios with a value in both files are compared (a value in one file only is counted apart);
    two values agree within REL_TOL relative difference."""
    summary = []
    bad = []
    template_only: dict[str, list[str]] = {}
    not_counts: list[str] = []
    for link in links:
        if link.column not in values:
            continue
        expected = expected_from_master(meta, link)
        if expected is None:
            continue
        mine = values[link.column].dropna()
        theirs = expected.replace([float("inf"), float("-inf")], float("nan")).dropna()
        both = mine.index.intersection(theirs.index)
        template_only[link.column] = sorted(mine.index.difference(theirs.index))
        raw = meta.master[name_key(link.indicator)].dropna()
        if link.compare == PER_100K and len(raw) and not (raw % 1 == 0).any():
            not_counts.append(link.column)
        disagree = 0
        for pcode in both:
            t, m = float(mine[pcode]), float(theirs[pcode])
            if not _agree(t, m):
                disagree += 1
                rel = abs(t - m) / max(abs(t), abs(m))
                bad.append(
                    {
                        "column": link.column,
                        "code": link.code,
                        "pcode": pcode,
                        "template": t,
                        "master": m,
                        "rel_diff": rel,
                    }
                )
        summary.append(
            {
                "column": link.column,
                "code": link.code,
                "compare": link.compare,
                "compared": len(both),
                "disagree": disagree,
                "template_only": len(mine.index.difference(theirs.index)),
                "master_only": len(theirs.index.difference(mine.index)),
            }
        )
    disagreements = pd.DataFrame(bad, columns=["column", "code", "pcode", "template", "master", "rel_diff"])
    disagreements = disagreements.sort_values(["rel_diff", "column", "pcode"], ascending=[False, True, True])
    return MasterCheck(pd.DataFrame(summary), disagreements.reset_index(drop=True), template_only, not_counts)


def arbitrate_rekeys(
    data: pd.DataFrame,
    pcodes: pd.Series,
    numbers: dict[str, pd.Series],
    meta: GtmMetadata,
) -> tuple[pd.Series, list[str]]:
    """Let the values decide rows that `reconcile_pcodes` re-keyed by name.

    The Master sheet is keyed by INE code with INE names. A re-keyed row whose values equal the Master's
    row for the file's own P-code more often than the Master's row for the name's P-code carries the data of
    its P-code: only its name label is another unit's, and it is kept on its own P-code. (The GTM template
    labels INE GT0206 'Sanarate' and GT0207 'Sansare', OCHA's names, but its GT0206 values are Sansare's: its
    rates × Sansare's 2018 population give whole counts, the Master's GT0206 counts.)"""
    expected = {
        link.column: e
        for link in GTM_METADATA_LINKS
        if link.column in numbers and (e := expected_from_master(meta, link)) is not None
    }
    out = pcodes.copy()
    notes: list[str] = []
    for i in data.index[data["pcode"] != pcodes]:
        own, named = str(data.at[i, "pcode"]), str(pcodes[i])
        score = {own: 0, named: 0}
        compared = 0
        for column, e in expected.items():
            t = numbers[column][i]
            if pd.isna(t):
                continue
            compared += 1
            for p in score:
                m = e.get(p)
                if m is not None and pd.notna(m) and _agree(float(t), float(m)):
                    score[p] += 1
        if score[own] > score[named]:
            out[i] = own
            notes.append(
                f"{own} '{data.at[i, 'name']}' kept on {own}, not re-keyed to {named}: its values are those "
                f"of {own} (equal to the MVI Master's {own} row for {score[own]} of {compared} comparable "
                f"indicators, to its {named} row for {score[named]}); only the template's name label is "
                "another unit's"
            )
    return out, notes


def apply_gtm_metadata(
    indicators: list[Indicator], meta: GtmMetadata, check: MasterCheck
) -> tuple[list[Indicator], list[str], list[str]]:
    """Give each linked indicator the Metadata sheet's Year (as its period) and Source (as its publisher).

    A period or publisher the catalogue already states is kept (a different metadata value is a warning);
    a link whose Indicator name differs from the Metadata sheet's, or whose values mostly disagree with the
    Master sheet (more than REFUTED_SHARE of the compared municipios), is not applied and is a warning."""
    links = {link.column: link for link in GTM_METADATA_LINKS}
    refuted = {
        str(r["column"])
        for r in check.summary.to_dict("records")
        if r["compared"] and r["disagree"] / r["compared"] > REFUTED_SHARE
    }
    notes: list[str] = []
    warnings: list[str] = []
    out = []
    for ind in indicators:
        link = links.get(ind.column)
        if link is None or link.code not in meta.rows.index:
            if link is not None:
                warnings.append(f"{ind.column}: code {link.code} is not in the Metadata sheet")
            out.append(ind)
            continue
        row = meta.rows.loc[link.code]
        if name_key(str(row["indicator"])) != name_key(link.indicator):
            warnings.append(
                f"{ind.column}: Metadata code {link.code} is now '{row['indicator']}', not "
                f"'{link.indicator}': year and publisher not applied (check GTM_METADATA_LINKS)"
            )
            out.append(ind)
            continue
        if ind.column in refuted:
            warnings.append(
                f"{ind.column}: its values disagree with the Master's {link.code} for most municipios: "
                "the link is refuted, year and publisher not applied"
            )
            out.append(ind)
            continue
        year, publisher = str(row["year"]), str(row["source"])
        changes: dict[str, str] = {}
        if year and ind.period == "unstated":
            changes["period"] = year
        elif year and year != ind.period:
            warnings.append(
                f"{ind.code}: the catalogue's period {ind.period} differs from the metadata's {year}"
            )
        if publisher and not ind.publisher:
            changes["publisher"] = publisher
        direction = {"right": 1, "left": -1}.get(str(row["direction"]).lower())
        if direction is not None and direction != ind.direction:
            warnings.append(
                f"{ind.code}: the metadata's direction ({row['direction']}) differs from the catalogue's "
                f"{ind.direction}; the catalogue wins"
            )
        out.append(replace(ind, **changes) if changes else ind)  # type: ignore[arg-type]
    dated = sum(1 for a, b in zip(indicators, out, strict=True) if a.period == "unstated" != b.period)
    still = sorted(i.code for i in out if i.period == "unstated")
    notes.append(
        f"MVI metadata ({METADATA_SOURCE_ID}): {dated} indicators given their year and publisher"
        + (f"; still unstated: {', '.join(still)}" if still else "")
    )
    return out, notes, warnings


def _check_notes(check: MasterCheck, meta: GtmMetadata) -> list[str]:
    """The value check as notes: a summary, then each column with disagreements and its worst examples."""
    s = check.summary
    notes = [
        f"Values checked against the MVI Master sheet: {len(s)} indicators, {int(s['compared'].sum())} values "
        f"compared, {int(s['disagree'].sum())} disagree (relative tolerance {REL_TOL:g})"
    ]
    for r in s[s["disagree"] > 0].to_dict("records"):
        worst = check.disagreements[check.disagreements["column"] == r["column"]].head(3)
        examples = ", ".join(
            f"{w['pcode']} template {w['template']:.6g} vs Master {w['master']:.6g}"
            for w in worst.to_dict("records")
        )
        notes.append(
            f"{r['column']} ({r['code']}): {r['disagree']} of {r['compared']} disagree, e.g. {examples}"
        )
    for r in s[(s["template_only"] > 0) | (s["master_only"] > 0)].to_dict("records"):
        notes.append(
            f"{r['column']} ({r['code']}): {r['template_only']} values in the template only "
            f"({', '.join(check.template_only[r['column']][:8])}; a template 0 where the Master is blank is "
            f"flagged {ABSENT_ASSUMED_ZERO}), {r['master_only']} in the Master only"
        )
    for column in check.not_counts:
        link = next(x for x in GTM_METADATA_LINKS if x.column == column)
        raw = meta.master[name_key(link.indicator)].dropna()
        notes.append(
            f"{column} ({link.code}): the template divides the Master's values by the population × 100,000 as "
            f"if they were counts, but none of them is a whole number (range {raw.min():.6g}–{raw.max():.6g}): "
            "they look like rates already, and the template's values like a rate of a rate (unit doubtful)"
        )
    linked = {link.code for link in GTM_METADATA_LINKS}
    extra = [f"{c} '{meta.rows.at[c, 'indicator']}'" for c in meta.rows.index if c not in linked]
    if extra:
        notes.append("Metadata rows with no A2SIT column (not loaded here): " + "; ".join(extra))
    mislabelled = [
        f"'{link.indicator}' is {link.code} in the Metadata, {meta.master_codes[k]} in the Master's code row"
        for link in GTM_METADATA_LINKS
        if (k := name_key(link.indicator)) in meta.master_codes and meta.master_codes[k] != link.code
    ]
    if mislabelled:
        notes.append("Master code row mislabelled (columns found by name): " + "; ".join(mislabelled))
    return notes


def prepare_a2sit(
    conn: Connection,
    source: Source,
    resolver: Resolver,
    catalogue: dict[str, Indicator],
    progress: Progress,
    metadata: Source | None = None,
) -> Layer:
    """Read, clean and check an A2SIT template into a layer of observations.

    `metadata` (the `gtm-mvi-unhcr` source) applies to a template keyed on Guatemala's municipios only: it
    dates and attributes the indicators and cross-checks their values; its files join `Layer.used`, so a
    change of either file reloads the layer. For any other template it is ignored."""
    paths = resolver.resolve(source)
    xlsx = source.first("xlsx")
    progress("reading the template")
    template = read_template(paths[xlsx.name], source_id=source.id, sheet=xlsx.layer or "Data")
    prefixes = set(template.data["pcode"].str[:2])
    if len(prefixes) != 1 or next(iter(prefixes)) not in SET_BY_PREFIX:
        raise DataError(
            f"Source '{source.id}': P-codes must all start with one of "
            f"{', '.join(SET_BY_PREFIX)}; found {sorted(prefixes)[:5]}."
        )
    set_id = SET_BY_PREFIX[next(iter(prefixes))]
    units = units_frame(conn, set_id)
    validation = Validation()
    numbers: dict[str, pd.Series] = {}
    for code in template.columns["code"]:
        numbers[code], bad = numeric_values(template.data, code)
        validation.errors.extend(bad)
    progress("reconciling P-codes")
    pcodes, notes, warnings = reconcile_pcodes(template.data, units)
    validation.warnings.extend(warnings)
    used: list[tuple[Source, dict[str, Path]]] = [(source, paths)]
    meta: GtmMetadata | None = None
    if metadata is not None and set_id == METADATA_SET:
        progress("reading the MVI metadata")
        meta_paths = resolver.resolve(metadata)
        meta = read_gtm_metadata(metadata, meta_paths)
        used.append((metadata, meta_paths))
        pcodes, kept = arbitrate_rekeys(template.data, pcodes, numbers, meta)
        kept_codes = {n.split(" ", 1)[0] for n in kept}
        notes = [n for n in notes if n.split(" ", 1)[0] not in kept_codes] + kept
    indicators: list[Indicator] = []
    for _, column in template.columns.iterrows():
        if numbers[column["code"]].notna().sum() == 0:
            notes.append(f"{column['code']}: empty in the file, skipped")
            continue
        ind = _indicator_for(column, source.id, catalogue)
        if str(column["direction"]) in ("1", "-1") and int(column["direction"]) != ind.direction:
            validation.warnings.append(
                f"{column['code']}: the template's direction {column['direction']} "
                f"differs from the catalogue's {ind.direction}; the catalogue wins"
            )
        indicators.append(ind)
    check: MasterCheck | None = None
    if meta is not None:
        by_pcode = {
            ind.column: pd.Series(numbers[ind.column].to_numpy(), index=pcodes.to_numpy())
            for ind in indicators
        }
        check = check_against_master(by_pcode, meta)
        indicators, meta_notes, meta_warnings = apply_gtm_metadata(indicators, meta, check)
        notes += meta_notes + _check_notes(check, meta)
        validation.warnings.extend(meta_warnings)
    rows: list[dict[str, Any]] = []
    sha = {f.name: f.sha256 for f in source.files}[xlsx.name]
    for ind in indicators:
        flags = [PERIOD_UNSTATED] if ind.period == "unstated" else []
        # a 0 where the publisher's table (the Master sheet) has no value: the template filled a blank
        absent = set(check.template_only.get(ind.column, [])) if check is not None else set()
        rows += [
            {
                "indicator_code": ind.code,
                "boundary_set_id": set_id,
                "pcode": p,
                "period": ind.period,
                "value": v,
                "flags": [*flags, ABSENT_ASSUMED_ZERO] if v == 0 and p in absent else flags,
                "file_sha256": sha,
            }
            for p, v in zip(pcodes, numbers[ind.column], strict=True)
            if pd.notna(v)
        ]
    return Layer(source, used, indicators, observations_frame(rows), validation, notes)
