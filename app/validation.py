"""Validation: how far a profile's stored ranking agrees with a reference table published by someone else.

A reference is a table of values keyed by P-code, by municipio name with its department, or by department
only (one level per table), with what it measures, its source and its period. It is compared with the
profile's stored run (the scores `/v1/priorities` serves), country by country: scores are ranked within
each country and are not comparable across countries. References are for reporting agreement, never for
tuning weights. Nothing is stored: the reference is read, compared and forgotten (the profile's run is
computed and cached when missing, as for `/v1/priorities`).

Statistical choices (stated once here, repeated in every answer under `method`):

- Spearman's rho (average ranks for ties) between the reference value (times `direction`) and the score, over
  the matched, ranked units. Its 95 % interval is a percentile bootstrap: `bootstrap` resamples of the
  matched pairs drawn with replacement from a seeded generator (numpy PCG64, `seed`); resamples in which
  either side is constant have no rho and are dropped (counted in `dropped`). Fewer than
  MIN_PAIRS pairs: no rho.
- Top-k overlap: among the n matched ranked units, the k with the highest reference values (ties broken by
  P-code) against the k the profile ranks highest. Were the reference unrelated to the ranking, the overlap
  would be hypergeometric (n units, k marked, k drawn): expectation k²/n; `p_value` = P(X ≥ overlap).
  When k ≥ n the overlap is k by construction and is not reported.
- Tier-1 hit rate: of the reference's top k units, the share in the profile's tier 1 of their country. By
  chance the k would be a draw without replacement from the country's N ranked units, N1 of them in tier 1:
  expected hits k·N1/N (rate N1/N); `p_value` = P(X ≥ hits), hypergeometric.
- Largest disagreements: units ranked by reference value and by score within the matched set (1 = highest,
  average ties); `rank_difference` = reference rank − profile rank, so a positive difference means the
  profile puts the unit higher than the reference does. Largest absolute differences first.
- Departments: a department's score is the population-weighted mean of the scores of its ranked municipios;
  for a reference by municipio only the matched municipios count, on both sides, and the reference is
  aggregated the same way (counts compared per capita: summed, then divided by the summed population). A
  country where some of those municipios have no stored population uses unweighted means (`weighting`).
- Per capita (`per_capita`): values are counts, divided by the stored municipal population and shown per
  1,000 residents (the first of POPULATION_CODES stored on the country's set; a department: the sum over
  its municipios, which must all have one). Units without a population are listed and left out.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import Connection, Engine, text

from app import indicators
from app.errors import DataError, InvalidParameter
from app.queries import COUNTRIES
from app.scoring import service
from app.text import name_key

MIN_PAIRS = 5  # below this a rank correlation says nothing
MAX_ROWS = 5000  # the three countries have 682 municipios and 54 departments: more rows are a wrong file
MAX_SUGGESTIONS = 3
SUGGESTION_CUTOFF = 0.6  # difflib ratio on accent-free lower-case names
PER_CAPITA_SCALE = 1000.0
CHUNK = 500  # bootstrap resamples computed at once (bounds memory)

# accepted column names (compared as name_key) → the canonical column
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "pcode": ("pcode", "p code", "admin2pcode", "adm2 pcode", "admin2 pcode", "adm2pcode"),
    "municipio": ("municipio", "municipality", "name", "nombre", "municipio name", "admin2name"),
    "department": ("department", "departamento", "department pcode", "admin1pcode", "admin1name", "dept"),
    "country": ("country", "pais", "iso3", "country iso3"),
    "value": ("value", "valor"),
}
KEY_COLUMNS = ("pcode", "municipio", "department")
COUNTRY_NAMES = {name_key(v): k for k, v in COUNTRIES.items()}

METHOD = {
    "spearman": "Spearman's rho (average ranks) of reference value × direction against score over matched "
    "ranked units; 95 % percentile bootstrap of the pairs, seeded; resamples with a constant side dropped",
    "top_k_overlap": "reference top k vs profile top k among the n matched units; chance: hypergeometric, "
    "expected k²/n; p_value = P(X ≥ overlap)",
    "tier1_hit_rate": "share of the reference's top k in the profile's tier 1; chance: hypergeometric draw "
    "of k from the country's N ranked units with N1 in tier 1, expected k·N1/N; p_value = P(X ≥ hits)",
    "disagreements": "reference rank − profile rank within the matched units (1 = highest); positive: the "
    "profile ranks the unit higher than the reference",
    "departments": "department score = population-weighted mean of its ranked municipios' scores (matched "
    "ones only for a reference by municipio; unweighted where population is missing)",
    "per_capita": "count / stored municipal population × 1,000 (department: summed population)",
}


class Spec(BaseModel):
    """What the reference is and how to compare it: metadata (required) and options (defaults)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    measures: str = Field(min_length=1, max_length=300, description="What the values measure")
    source: str = Field(min_length=1, max_length=300, description="Publisher / source of the values")
    period: str = Field(min_length=1, max_length=60, description="The period the values describe")
    url: str | None = Field(None, max_length=500, description="Where the reference is published")
    direction: int = Field(
        1, description="1: a higher value should mean higher priority; -1: a lower value should"
    )
    country: str | None = Field(None, description="ISO3 for rows without a country column")
    profile: str = Field(service.DEFAULT_PROFILE, description="A bundled profile id")
    per_capita: bool = Field(False, description="The values are counts: compare them per 1,000 residents")
    top_k: int = Field(20, ge=1, le=500, description="k of the top-k overlap and the tier-1 hit rate")
    bootstrap: int = Field(2000, ge=100, le=5000, description="Bootstrap resamples of the interval")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Seed of the bootstrap")
    disagreements: int = Field(10, ge=1, le=50, description="How many disagreements to list")

    @field_validator("direction")
    @classmethod
    def _direction(cls, value: int) -> int:
        if value not in (1, -1):
            raise ValueError("must be 1 or -1")
        return value


@dataclass(frozen=True)
class Reference:
    """A reference table (canonical text columns) with a label per row for messages, and its spec."""

    table: pd.DataFrame  # columns: pcode, municipio, department, country, value (text, '' when absent)
    labels: list[str]
    spec: Spec


# --- reading ------------------------------------------------------------------------------------------


def _spec(fields: Mapping[str, Any]) -> Spec:
    """Validate the metadata and options; a clear InvalidParameter naming each bad field."""
    cleaned = {k: v for k, v in fields.items() if v is not None and v != ""}
    try:
        return Spec.model_validate(cleaned)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()]
        raise InvalidParameter(
            "The reference's metadata or options are not valid: " + "; ".join(problems)
        ) from None


def _cell(value: Any, where: str) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise DataError(f"{where}: must be text or a number, not {type(value).__name__}.")
    return value.strip() if isinstance(value, str) else repr(value)


def _canonical(columns: list[str]) -> dict[str, str]:
    """Given column → canonical column; unknown columns are ignored, two columns for one role refused."""
    out: dict[str, str] = {}
    for col in columns:
        key = name_key(col)
        role = next((r for r, names in COLUMN_ALIASES.items() if key in names), None)
        if role is None:
            continue
        if role in out.values():
            raise DataError(f"Columns '{col}' and another both read as '{role}': keep one.")
        out[col] = role
    if "value" not in out.values():
        raise DataError(f"The reference has no 'value' column; columns are {columns[:20]}.")
    if not set(KEY_COLUMNS) & set(out.values()):
        raise DataError(
            f"The reference has no key column: give 'pcode', or 'municipio' with 'department', or "
            f"'department'; columns are {columns[:20]}."
        )
    return out


def _frame(records: list[dict[str, str]], columns: list[str]) -> pd.DataFrame:
    roles = _canonical(columns)
    frame = pd.DataFrame(records, columns=columns).fillna("").rename(columns=roles)
    frame = frame[[c for c in frame.columns if c in COLUMN_ALIASES]]
    for col in COLUMN_ALIASES:
        if col not in frame.columns:
            frame[col] = ""
    return frame[list(COLUMN_ALIASES)].astype(str)


def table_from_rows(rows: Any) -> tuple[pd.DataFrame, list[str]]:
    """JSON rows (a list of objects) as the canonical table, labelled 'row N' (N from 1)."""
    if not isinstance(rows, list) or not rows:
        raise DataError("'rows' must be a non-empty list of objects, one per reference row.")
    if len(rows) > MAX_ROWS:
        raise DataError(f"The reference has {len(rows):,} rows; at most {MAX_ROWS:,} are accepted.")
    records: list[dict[str, str]] = []
    columns: list[str] = []
    for i, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise DataError(f'row {i}: must be an object such as {{"pcode": "GT0101", "value": 1.5}}.')
        records.append({str(k): _cell(v, f"row {i}, field '{k}'") for k, v in row.items()})
        columns.extend(str(k) for k in row if str(k) not in columns)
    return _frame(records, columns), [f"row {i}" for i in range(1, len(rows) + 1)]


def table_from_csv(data: bytes, name: str = "reference.csv") -> tuple[pd.DataFrame, list[str]]:
    """A CSV (UTF-8, comma, semicolon or tab) as the canonical table, labelled 'row N (line L)'."""
    try:
        content = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"File '{name}' is not UTF-8 text (byte {exc.start}): save it as UTF-8 CSV."
        ) from None
    lines = content.splitlines()
    if not lines or not lines[0].strip():
        raise DataError(f"File '{name}' is empty or has no header line.")
    try:
        dialect: Any = csv.Sniffer().sniff(lines[0], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(content), dialect)
    header = [h.strip() for h in next(reader)]
    records: list[dict[str, str]] = []
    labels: list[str] = []
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        line = reader.line_num
        label = f"row {len(records) + 1} (line {line})"
        if len(row) > len(header):
            raise DataError(f"File '{name}', {label}: {len(row)} fields but the header has {len(header)}.")
        records.append({h: c.strip() for h, c in zip(header, row, strict=False)})
        labels.append(label)
        if len(records) > MAX_ROWS:
            raise DataError(f"File '{name}' has more than {MAX_ROWS:,} rows.")
    if not records:
        raise DataError(f"File '{name}' has a header but no rows.")
    return _frame(records, header), labels


def reference_from_request(fields: Mapping[str, Any], file: tuple[str, bytes] | None = None) -> Reference:
    """The one entry point of the API and the CLI: `fields` are the metadata and options (a JSON body or form
    fields), with the rows under 'rows' unless a file is given. A JSON file may carry 'rows' and metadata
    itself; `fields` then fill in or override its metadata."""
    given = dict(fields)
    if file is not None:
        name, data = file
        suffix = PurePath(name).suffix.lower()
        if suffix in (".csv", ".txt", ".tsv"):
            table, labels = table_from_csv(data, name)
        elif suffix == ".json":
            try:
                doc = json.loads(data.decode("utf-8-sig"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise DataError(f"File '{name}' is not valid UTF-8 JSON: {exc}.") from None
            if isinstance(doc, dict):
                rows = doc.pop("rows", None)
                given = {**doc, **{k: v for k, v in given.items() if v not in (None, "")}}
            else:
                rows = doc
            table, labels = table_from_rows(rows)
        else:
            raise InvalidParameter(f"Send the reference as .csv or .json, not '{suffix or name}'.")
        given.pop("rows", None)
    else:
        table, labels = table_from_rows(given.pop("rows", None))
    return Reference(table, labels, _spec(given))


# --- the run and its units -----------------------------------------------------------------------------


@dataclass
class Units:
    """The run's municipios (with score, rank, tier, population) and departments, for matching."""

    units: (
        pd.DataFrame
    )  # index pcode; name, key, country, set, parent, dep_name, score, rank, tier, ranked, pop
    deps: pd.DataFrame  # index pcode; name, key, national_code, country, set, pop (None: incomplete)
    population_source: dict[str, str | None]  # country → population indicator
    predecessors: pd.DataFrame  # index pcode (of another set); set, key, dep_key, country, successor


def _units(conn: Connection, run: int) -> Units:
    rows = conn.execute(
        text("""
        SELECT s.pcode, u.name, u.name_key AS key, s.country, s.boundary_set_id AS set, u.parent_pcode AS parent,
               d.name AS dep_name, s.score, s.rank, s.tier, s.ranked
        FROM scores s
        JOIN admin_units u ON u.boundary_set_id = s.boundary_set_id AND u.pcode = s.pcode
        LEFT JOIN admin_units d ON d.boundary_set_id = u.boundary_set_id AND d.pcode = u.parent_pcode
        WHERE s.run_id = :run"""),
        {"run": run},
    ).mappings()
    units = pd.DataFrame([dict(r) for r in rows]).set_index("pcode")
    sets = sorted(set(units["set"]))
    deps = pd.DataFrame(
        [
            dict(r)
            for r in conn.execute(
                text("""
                SELECT pcode, name, name_key AS key, national_code, country, boundary_set_id AS set
                FROM admin_units WHERE level = 1 AND boundary_set_id = ANY(:sets)"""),
                {"sets": sets},
            ).mappings()
        ]
    ).set_index("pcode")
    pop = pd.Series(np.nan, index=units.index, dtype="float64")
    source: dict[str, str | None] = {}
    for set_id in sets:
        code, values = indicators.population(conn, set_id)
        mine = units.index[units["set"] == set_id]
        pop.loc[mine] = values.reindex(mine).to_numpy()
        source[str(units.loc[mine, "country"].iloc[0])] = code
    units["pop"] = pop
    sums = units.groupby("parent")["pop"].agg(lambda p: p.sum() if p.notna().all() else np.nan)
    deps["pop"] = sums.reindex(deps.index)
    return Units(units, deps, source, _predecessors(conn, sets))


def _predecessors(conn: Connection, sets: list[str]) -> pd.DataFrame:
    """Units of other sets linked by the crosswalk to a unit of the run (SLV distritos → 2024 municipios),
    each with the run's unit holding most of it: a reference on the old geography gets a pointer to it."""
    rows = conn.execute(
        text("""
        SELECT DISTINCT ON (c.from_pcode) c.from_pcode AS pcode, c.from_set AS set, u.name_key AS key,
               d.name_key AS dep_key, u.country, c.to_pcode AS successor
        FROM crosswalk c
        JOIN admin_units u ON u.boundary_set_id = c.from_set AND u.pcode = c.from_pcode AND u.level = 2
        LEFT JOIN admin_units d ON d.boundary_set_id = u.boundary_set_id AND d.pcode = u.parent_pcode
        WHERE c.to_set = ANY(:sets) AND NOT c.from_set = ANY(:sets)
        ORDER BY c.from_pcode, c.share_of_from DESC"""),
        {"sets": sets},
    ).mappings()
    columns = ["pcode", "set", "key", "dep_key", "country", "successor"]
    return pd.DataFrame([dict(r) for r in rows], columns=columns).set_index("pcode")


# --- matching ------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One usable reference row: its label, value and key cells."""

    label: str
    value: float
    pcode: str
    municipio: str
    department: str
    country: str | None


def _country(raw: str, default: str | None, label: str) -> str | None:
    if not raw:
        return default
    iso = raw.strip().upper()
    if iso in COUNTRIES:
        return iso
    iso = COUNTRY_NAMES.get(name_key(raw), "")
    if iso:
        return iso
    raise DataError(f"{label}: country '{raw}' is not GTM, SLV or HND.")


def _rows(ref: Reference) -> list[Row]:
    """Every row checked: a finite number as value, at least one key; all problems reported at once."""
    default = ref.spec.country.strip().upper() if ref.spec.country else None
    if default and default not in COUNTRIES:
        raise InvalidParameter(f"country must be one of {', '.join(COUNTRIES)} (ISO3), got '{default}'.")
    out: list[Row] = []
    problems: list[str] = []
    for label, r in zip(ref.labels, ref.table.itertuples(index=False), strict=True):
        try:
            country = _country(r.country, default, label)
        except DataError as exc:
            problems.append(exc.message)
            continue
        if not (r.pcode or r.municipio or r.department):
            problems.append(f"{label}: no pcode, municipio or department: the row keys nothing.")
            continue
        if not r.value:
            problems.append(f"{label}: no value (leave the row out rather than blank).")
            continue
        try:
            value = float(r.value)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            problems.append(
                f"{label}: value '{r.value[:40]}' is not a finite number (a dot for decimals, no thousands "
                "separators)."
            )
            continue
        out.append(Row(label, value, r.pcode.upper(), r.municipio, r.department, country))
    if problems:
        raise DataError(
            f"{len(problems)} row(s) of the reference cannot be used; nothing was compared. {problems[0]}",
            problems[:50],
        )
    return out


def _suggest(key: str, pool: pd.DataFrame, units: Units) -> list[dict[str, Any]]:
    """Up to MAX_SUGGESTIONS units of the pool whose accent-free name is closest to `key` (difflib ratio)."""
    if pool.empty or not key:
        return []
    by_key: dict[str, list[str]] = {}
    for pcode, k in zip(pool.index, pool["key"], strict=True):
        by_key.setdefault(str(k), []).append(str(pcode))
    close = difflib.get_close_matches(key, list(by_key), n=MAX_SUGGESTIONS, cutoff=SUGGESTION_CUTOFF)
    out = []
    for k in close:
        for pcode in by_key[k]:
            out.append(_describe(pcode, units))
    return out[:MAX_SUGGESTIONS]


def _describe(pcode: str, units: Units) -> dict[str, Any]:
    if pcode in units.units.index:
        u = units.units.loc[pcode]
        return {"pcode": pcode, "name": u["name"], "department": u["dep_name"], "country": u["country"]}
    d = units.deps.loc[pcode]
    return {"pcode": pcode, "name": d["name"], "department": None, "country": d["country"]}


@dataclass
class Miss:
    """Why a row matched nothing, and the closest candidates."""

    reason: str
    suggestions: list[dict[str, Any]]


def _department(raw: str, country: str | None, units: Units) -> str | Miss:
    """A department given as P-code, national code or name → its P-code, or why not."""
    deps = units.deps if country is None else units.deps[units.deps["country"] == country]
    value = raw.strip()
    for hit in (
        deps.index[deps.index == value.upper()],
        deps.index[deps["national_code"] == value.zfill(2)] if value.isdigit() else deps.index[:0],
        deps.index[deps["key"] == name_key(value)],
    ):
        if len(hit) == 1:
            return str(hit[0])
        if len(hit) > 1:
            where = sorted(set(deps.loc[hit, "country"]))
            return Miss(
                f"department '{raw}' exists in {' and '.join(where)}: add a country column or give country",
                [_describe(str(p), units) for p in hit],
            )
    return Miss(f"no department '{raw}'", _suggest(name_key(value), deps, units))


def _match(row: Row, units: Units) -> tuple[str, str] | Miss:
    """(level, P-code) of the unit a row keys, or why it matches none."""
    u = units.units if row.country is None else units.units[units.units["country"] == row.country]
    if row.pcode:
        if row.pcode in u.index:
            return "unit", row.pcode
        deps = units.deps if row.country is None else units.deps[units.deps["country"] == row.country]
        if row.pcode in deps.index:
            return "department", row.pcode
        if row.pcode in units.predecessors.index:
            return _successor(row.pcode, units)
        pool = pd.concat([u[["key"]].assign(key=u.index), deps[["key"]].assign(key=deps.index)])
        padded = [_describe(c, units) for c in _padded(row.pcode) if c in u.index or c in deps.index]
        return Miss(
            f"no municipio or department with P-code '{row.pcode}' in the ranking",
            (padded + _suggest(row.pcode, pool, units))[:MAX_SUGGESTIONS],
        )
    dep: str | None = None
    if row.department:
        found = _department(row.department, row.country, units)
        if isinstance(found, Miss):
            return found
        dep = found
        if not row.municipio:
            return "department", dep
    key = name_key(row.municipio)
    pool = u if dep is None else u[u["parent"] == dep]
    hit = pool.index[pool["key"] == key]
    if len(hit) == 1:
        return "unit", str(hit[0])
    if len(hit) > 1:
        return Miss(
            f"{len(hit)} municipios are called '{row.municipio}': add their department",
            [_describe(str(p), units) for p in hit],
        )
    old = units.predecessors[units.predecessors["key"] == key]
    if row.country is not None:
        old = old[old["country"] == row.country]
    if dep is not None:
        old = old[old["dep_key"] == units.deps.loc[dep, "key"]]
    if len(old) == 1:
        return _successor(str(old.index[0]), units)
    where = f" in department '{units.deps.loc[dep, 'name']}'" if dep else ""
    suggestions = _suggest(key, pool, units) or _suggest(key, u, units)
    return Miss(f"no municipio '{row.municipio}'{where}", suggestions)


def _padded(pcode: str) -> list[str]:
    """'GT101' → ['GT0101', 'GT101']: P-codes written without their leading zeros."""
    letters = pcode.rstrip("0123456789")
    digits = pcode[len(letters) :]
    return [letters + digits.zfill(w) for w in (4, 2) if digits and len(digits) < w]


def _successor(pcode: str, units: Units) -> Miss:
    """A unit of another geography: point to the unit of the run that holds most of it (not matched, since
    merging several old units into one new one would need to know whether the values add up)."""
    old = units.predecessors.loc[pcode]
    new = _describe(str(old["successor"]), units)
    return Miss(
        f"'{pcode}' is a unit of {old['set']}; the ranking is on the current geography, where it lies in "
        f"{new['name']} ({new['pcode']}): aggregate the reference to it",
        [new],
    )


@dataclass
class Matched:
    """The matched rows (one per unit) and the unmatched with suggestions."""

    level: str  # 'unit' or 'department'
    frame: pd.DataFrame  # label, pcode, value
    unmatched: list[dict[str, Any]]


def _given(row: Row) -> str:
    parts = [p for p in (row.pcode, row.municipio, row.department, row.country or "") if p]
    return ", ".join(parts)


def match(ref: Reference, units: Units) -> Matched:
    """Match every row; one level per table and one row per unit, else a DataError naming the rows."""
    hits: list[tuple[str, str, str, float]] = []
    unmatched: list[dict[str, Any]] = []
    for row in _rows(ref):
        found = _match(row, units)
        if isinstance(found, Miss):
            unmatched.append(
                {
                    "row": row.label,
                    "given": _given(row),
                    "reason": found.reason,
                    "suggestions": found.suggestions,
                }
            )
        else:
            hits.append((row.label, found[0], found[1], row.value))
    if not hits:
        raise DataError(
            f"No row of the reference matches a ranked municipio or department ({len(unmatched)} rows tried).",
            [_unmatched_line(m) for m in unmatched[:50]],
        )
    frame = pd.DataFrame(hits, columns=["label", "level", "pcode", "value"])
    levels = frame["level"].value_counts()
    if len(levels) > 1:
        minority = str(levels.index[-1])
        first = frame[frame["level"] == minority].iloc[0]
        raise DataError(
            f"{first['label']} keys a {minority} ({first['pcode']}) but {int(levels.iloc[0])} rows key a "
            f"{levels.index[0]}: a reference is at one level; split it into two tables."
        )
    dup = frame[frame["pcode"].duplicated(keep=False)]
    if not dup.empty:
        pcode = dup["pcode"].iloc[0]
        rows = " and ".join(dup[dup["pcode"] == pcode]["label"])
        raise DataError(
            f"{rows} both match {pcode}: one row per unit.",
            [f"{', '.join(g['label'])} → {p}" for p, g in dup.groupby("pcode", sort=False)][:50],
        )
    return Matched(str(levels.index[0]), frame.drop(columns="level"), unmatched)


def _unmatched_line(m: dict[str, Any]) -> str:
    hint = ", ".join(f"{s['name']} ({s['pcode']})" for s in m["suggestions"])
    return f"{m['row']}: {m['reason']}" + (f"; did you mean {hint}?" if hint else "")


# --- statistics ----------------------------------------------------------------------------------------


def _r(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


def _p(value: float) -> float:
    """A p-value to three significant digits (small ones stay visible)."""
    return float(f"{value:.3g}")


def spearman_interval(x: np.ndarray, y: np.ndarray, *, resamples: int, seed: int) -> dict[str, Any]:
    """Spearman's rho of x and y with its 95 % percentile bootstrap interval (pairs resampled, seeded)."""
    from scipy import stats  # here: the API starts without scipy.stats

    n = len(x)
    out: dict[str, Any] = {"rho": None, "ci95": None, "n": n, "resamples": resamples, "seed": seed}
    if n < MIN_PAIRS:
        return {**out, "note": f"fewer than {MIN_PAIRS} pairs: no correlation"}
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return {**out, "note": "one side is constant: no correlation"}
    rho = float(stats.spearmanr(x, y).statistic)
    rng = np.random.default_rng(seed)
    draws: list[np.ndarray] = []
    for start in range(0, resamples, CHUNK):
        idx = rng.integers(0, n, size=(min(CHUNK, resamples - start), n))
        rx = stats.rankdata(x[idx], axis=1)
        ry = stats.rankdata(y[idx], axis=1)
        rx -= rx.mean(axis=1, keepdims=True)
        ry -= ry.mean(axis=1, keepdims=True)
        den = np.sqrt((rx**2).sum(axis=1) * (ry**2).sum(axis=1))
        ok = den > 0
        draws.append((rx[ok] * ry[ok]).sum(axis=1) / den[ok])
    boot = np.concatenate(draws)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {**out, "rho": _r(rho), "ci95": [_r(lo), _r(hi)], "dropped": resamples - len(boot)}


def top_k_overlap(ref_order: list[str], profile_order: list[str], k: int) -> dict[str, Any]:
    """How many of the reference's top k are among the profile's top k, against the hypergeometric chance."""
    from scipy import stats  # here: the API starts without scipy.stats

    n = len(ref_order)
    k = min(k, n)
    if k >= n:
        return {
            "k": k,
            "n": n,
            "overlap": None,
            "note": "k covers every matched unit: overlap is k by construction",
        }
    overlap = len(set(ref_order[:k]) & set(profile_order[:k]))
    return {
        "k": k,
        "n": n,
        "overlap": overlap,
        "share": _r(overlap / k),
        "expected_by_chance": _r(k * k / n, 2),
        "p_value": _p(float(stats.hypergeom.sf(overlap - 1, n, k, k))),
    }


def tier1_hit_rate(ref_top: list[str], tiers: pd.Series, ranked: int, tier1: int) -> dict[str, Any]:
    """Share of the reference's top units in tier 1, against a hypergeometric draw from the country."""
    from scipy import stats  # here: the API starts without scipy.stats

    k = len(ref_top)
    hits = int((tiers.reindex(ref_top) == 1).sum())
    return {
        "k": k,
        "hits": hits,
        "hit_rate": _r(hits / k) if k else None,
        "chance_rate": _r(tier1 / ranked) if ranked else None,
        "expected_by_chance": _r(k * tier1 / ranked, 2) if ranked else None,
        "tier1_units": tier1,
        "ranked_units": ranked,
        "p_value": _p(float(stats.hypergeom.sf(hits - 1, ranked, tier1, k))) if ranked else None,
    }


def _disagreements(frame: pd.DataFrame, x: np.ndarray, y: np.ndarray, m: int) -> list[dict[str, Any]]:
    from scipy import stats  # here: the API starts without scipy.stats

    ref_rank = stats.rankdata(-x)
    prof_rank = stats.rankdata(-y)
    diff = ref_rank - prof_rank
    order = np.lexsort((frame.index.to_numpy(), -np.abs(diff)))[:m]
    return [
        {
            "pcode": str(frame.index[i]),
            "name": frame["name"].iloc[i],
            "value": _r(float(frame["value"].iloc[i])),
            "score": _r(float(y[i]), 2),
            "reference_rank": float(ref_rank[i]),
            "profile_rank": float(prof_rank[i]),
            "rank_difference": float(diff[i]),
        }
        for i in order
        if diff[i] != 0
    ]


# --- the comparison ------------------------------------------------------------------------------------


def _per_capita(frame: pd.DataFrame, on: bool) -> tuple[pd.DataFrame, list[str]]:
    """Values per 1,000 residents when asked; the units without a population are left out (and listed)."""
    if not on:
        return frame, []
    missing = frame.index[frame["pop"].isna() | (frame["pop"] <= 0)]
    kept = frame.drop(index=missing)
    kept = kept.assign(count=kept["value"], value=kept["value"] / kept["pop"] * PER_CAPITA_SCALE)
    return kept, [str(p) for p in missing]


def _weighted(group: pd.DataFrame, column: str, weighted: bool) -> float:
    if weighted:
        return float(np.average(group[column], weights=group["pop"]))
    return float(group[column].mean())


def _unit_level(frame: pd.DataFrame, units: pd.DataFrame, spec: Spec) -> dict[str, Any]:
    """Spearman, top-k overlap, tier-1 hit rate and disagreements over one country's matched ranked units."""
    x = frame["value"].to_numpy(dtype="float64") * spec.direction
    y = frame["score"].to_numpy(dtype="float64")
    ref_order = [str(p) for _, p in sorted(zip(-x, frame.index, strict=True))]  # ties: by P-code
    profile_order = list(frame.sort_values("rank").index)
    country = units[units["ranked"]]
    k = min(spec.top_k, len(frame))
    return {
        "n": len(frame),
        "spearman": spearman_interval(x, y, resamples=spec.bootstrap, seed=spec.seed),
        "top_k": top_k_overlap(ref_order, profile_order, spec.top_k),
        "tier1": tier1_hit_rate(
            ref_order[:k], frame["tier"], len(country), int((country["tier"] == 1).sum())
        ),
        "disagreements": _disagreements(frame, x, y, spec.disagreements),
    }


def _department_level(
    frame: pd.DataFrame, level: str, units: Units, country: str, spec: Spec
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Spearman and disagreements over one country's departments (scores aggregated; see module doc), and the
    departments' values and aggregated scores."""
    ranked = units.units[(units.units["country"] == country) & units.units["ranked"]]
    if level == "unit":
        members = frame
        weighted = bool(members["pop"].notna().all() and (members["pop"] > 0).all())
        rows = []
        for dep, g in members.groupby("parent"):
            if spec.per_capita:
                value = float(g["count"].sum() / g["pop"].sum() * PER_CAPITA_SCALE)
            else:
                value = _weighted(g, "value", weighted)
            rows.append(
                {"pcode": dep, "value": value, "score": _weighted(g, "score", weighted), "units": len(g)}
            )
    else:
        weighted = bool(ranked["pop"].notna().all() and (ranked["pop"] > 0).all())
        rows = []
        for dep, v in zip(frame.index, frame["value"], strict=True):
            g = ranked[ranked["parent"] == dep]
            if g.empty:
                continue
            rows.append(
                {"pcode": dep, "value": float(v), "score": _weighted(g, "score", weighted), "units": len(g)}
            )
    deps = pd.DataFrame(rows, columns=["pcode", "value", "score", "units"]).set_index("pcode")
    deps["name"] = units.deps["name"].reindex(deps.index)
    x = deps["value"].to_numpy(dtype="float64") * spec.direction
    y = deps["score"].to_numpy(dtype="float64")
    return {
        "n": len(deps),
        "weighting": "population" if weighted else "mean (some municipios have no stored population)",
        "spearman": spearman_interval(x, y, resamples=spec.bootstrap, seed=spec.seed),
        "disagreements": _disagreements(deps, x, y, min(spec.disagreements, 5)),
    }, deps


def _country_figures(
    matched: Matched, units: Units, country: str, spec: Spec
) -> tuple[dict[str, Any], list[str], list[str]]:
    """One country's figures, and its matched units that are not ranked or have no population."""
    table = units.units if matched.level == "unit" else units.deps
    frame = matched.frame.set_index("pcode").join(table, how="inner")
    frame = frame[frame["country"] == country]
    not_ranked: list[str] = []
    if matched.level == "unit":
        not_ranked = [str(p) for p in frame.index[~frame["ranked"].astype(bool)]]
        frame = frame[frame["ranked"].astype(bool)]
    frame, no_pop = _per_capita(frame, spec.per_capita)
    out: dict[str, Any] = {"matched": len(frame) + len(not_ranked) + len(no_pop)}
    if matched.level == "unit":
        out["units"] = _unit_level(frame, units.units[units.units["country"] == country], spec)
    else:
        out["units"] = None
    out["departments"], deps = _department_level(frame, matched.level, units, country, spec)
    if matched.level != "unit":  # a reference by department is plotted against the departments' scores
        frame = frame.assign(score=deps["score"].reindex(frame.index))
    out["pairs"] = [
        {
            "pcode": str(p),
            "name": r["name"],
            "value": _r(float(r["value"])),
            "score": _r(float(r["score"]), 2) if "score" in r and pd.notna(r["score"]) else None,
            "rank": int(r["rank"]) if "rank" in r and pd.notna(r["rank"]) else None,
            "tier": int(r["tier"]) if "tier" in r and pd.notna(r["tier"]) else None,
        }
        for p, r in frame.iterrows()
    ]
    return out, not_ranked, no_pop


def compare(engine: Engine, ref: Reference) -> dict[str, Any]:
    """Match the reference to the profile's stored run and report the agreement figures per country."""
    spec = ref.spec
    profile = service.profile_by_id(spec.profile)
    run = service.ensure_run(engine, profile)
    with engine.connect() as conn:
        units = _units(conn, run)
    matched = match(ref, units)
    table = units.units if matched.level == "unit" else units.deps
    countries = sorted(set(table.loc[matched.frame["pcode"], "country"]))
    figures: dict[str, Any] = {}
    not_ranked: list[str] = []
    no_pop: list[str] = []
    for iso in countries:
        figures[iso], nr, np_ = _country_figures(matched, units, iso, spec)
        not_ranked += nr
        no_pop += np_
    return {
        "reference": {
            "measures": spec.measures,
            "source": spec.source,
            "period": spec.period,
            "url": spec.url,
            "direction": spec.direction,
            "level": "municipio" if matched.level == "unit" else "department",
            "rows": len(ref.labels),
        },
        "profile": {"id": profile.id, "hash": profile.hash(), "run": run},
        "options": {
            "per_capita": spec.per_capita,
            "per_capita_scale": PER_CAPITA_SCALE if spec.per_capita else None,
            "population": {c: units.population_source.get(c) for c in countries} if spec.per_capita else None,
            "top_k": spec.top_k,
            "bootstrap": spec.bootstrap,
            "seed": spec.seed,
        },
        "matched": len(matched.frame),
        "unmatched": matched.unmatched,
        "not_ranked": not_ranked,
        "no_population": no_pop,
        "countries": figures,
        "method": METHOD,
        "stored": False,
    }


def validate(
    engine: Engine, fields: Mapping[str, Any], file: tuple[str, bytes] | None = None
) -> dict[str, Any]:
    """Read a reference (rows in `fields`, or a CSV/JSON file) and compare it: the API's and CLI's one call."""
    return compare(engine, reference_from_request(fields, file))
