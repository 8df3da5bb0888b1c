"""UNHCR A2SIT input templates (XLSX): five header rows (weight, direction, group, name, code), then one
row per admin-2 P-code. Generic for any country's template; the catalogue maps known columns."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Connection

from app.errors import DataError
from app.ingest.common import Progress, Validation
from app.ingest.layers import PERIOD_UNSTATED, Indicator, Layer, observations_frame
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
    import openpyxl
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (zipfile.BadZipFile, InvalidFileException, OSError, KeyError, EOFError) as exc:
        raise DataError(
            f"Source '{source_id}', file '{path.name}' is not a readable XLSX workbook "
            f"(truncated or corrupt?): {type(exc).__name__}"
        ) from exc
    try:
        if sheet not in wb.sheetnames:
            raise DataError(
                f"Source '{source_id}', file '{path.name}' has no sheet '{sheet}' "
                f"(sheets: {', '.join(wb.sheetnames)})."
            )
        rows = [list(r) for r in wb[sheet].iter_rows(values_only=True)]
    except zipfile.BadZipFile as exc:
        raise DataError(f"Source '{source_id}', file '{path.name}' is truncated or corrupt.") from exc
    finally:
        wb.close()
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


def prepare_a2sit(
    conn: Connection, source: Source, resolver: Resolver, catalogue: dict[str, Indicator], progress: Progress
) -> Layer:
    """Read, clean and check an A2SIT template into a layer of observations."""
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
    progress("reconciling P-codes")
    pcodes, notes, warnings = reconcile_pcodes(template.data, units)
    validation = Validation(warnings=warnings)
    rows: list[dict[str, Any]] = []
    indicators: list[Indicator] = []
    sha = {f.name: f.sha256 for f in source.files}[xlsx.name]
    for _, column in template.columns.iterrows():
        values, bad = numeric_values(template.data, column["code"])
        validation.errors.extend(bad)
        if values.notna().sum() == 0:
            notes.append(f"{column['code']}: empty in the file, skipped")
            continue
        ind = _indicator_for(column, source.id, catalogue)
        if str(column["direction"]) in ("1", "-1") and int(column["direction"]) != ind.direction:
            validation.warnings.append(
                f"{column['code']}: the template's direction {column['direction']} "
                f"differs from the catalogue's {ind.direction}; the catalogue wins"
            )
        indicators.append(ind)
        flags = [PERIOD_UNSTATED] if ind.period == "unstated" else []
        rows += [
            {
                "indicator_code": ind.code,
                "boundary_set_id": set_id,
                "pcode": p,
                "period": ind.period,
                "value": v,
                "flags": flags,
                "file_sha256": sha,
            }
            for p, v in zip(pcodes, values, strict=True)
            if pd.notna(v)
        ]
    return Layer(source, [(source, paths)], indicators, observations_frame(rows), validation, notes)
