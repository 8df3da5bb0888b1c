"""Guatemala's municipal governance over time (`gtm-segeplan-pdh`, pillar II): SEGEPLAN's Ranking de la Gestión
Municipal (2013, 2016, 2018) and the PDH's supervision of the public-information law (2015, 2017, 2019).

Each edition is one period of the same indicator: `municipal_management_ranking` (index 0–1) and
`public_information_compliance` (score 0–100), both higher = better (direction -1). Scoring reads the latest
period; the earlier ones make the series. Choices:

- Keys: `id_municipal` is the INE code → P-code GT + 4 digits (INE convention: GT0206 = Sansare). Each row's
  `id_dep` must be its code's department and its name the stored unit's (accent-insensitive; a short form such
  as 'Nebaj' for 'Santa María Nebaj', or a near-identical spelling, ratio ≥ NAME_SIMILARITY, is accepted and
  noted): a file keyed otherwise is refused, not loaded onto the wrong municipios.
- A blank cell is no observation (six municipios created after 2013 have no 2013 ranking; 152 municipios are
  absent from the 2015 AIP table). In the AIP table a 0 means "not evaluated / no report" (PDH), never a score:
  it is stored as missing (NULL) with the flag `not_evaluated`. The ranking has no zeros; a 0 there would be
  loaded as a value (out of the ranking's practice, but not documented as a code).
- The carriers' averages `Promediosegeplan` and `aipPromedio` are derived (and `aipPromedio` averages the
  zeros as scores): not loaded.
- `aip2015insitu` is not loaded: it is a separate 2015 on-site evaluation, not an edition of the series (its
  correlation with `aip2015` is about 0.2 over the 188 municipios of 2015), a single year with nothing to
  follow over time, and a second transparency score for one year would double-count pillar II.
- Link with A2SIT: the A2SIT template's municipal management indices (GestAdmin, GestEstr, GestFin, ServPub,
  and ParticipComm; MVI metadata: "SEGEPLAN – Ránking de Gestión … Resultados finales 2020-2021") are the
  components of the 2020–21 edition of the same ranking. The loader reports the correlation of the 2018
  ranking with their mean when they are loaded.
"""

from __future__ import annotations

from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Connection, text

from app.errors import DataError
from app.ingest.a2sit import _same_place
from app.ingest.common import Progress, Validation, workbook_rows
from app.ingest.layers import NOT_EVALUATED, Indicator, Layer, observations_frame
from app.ingest.matching import units_frame
from app.settings import Settings
from app.sources import Resolver, Source
from app.text import name_key

SOURCE_ID = "gtm-segeplan-pdh"
SET_ID = "gtm-municipios"
RANKING = "municipal_management_ranking"
AIP = "public_information_compliance"
# indicator code → (file role, {period: column})
SERIES: dict[str, tuple[str, dict[str, str]]] = {
    RANKING: ("segeplan", {"2013": "segeplan2013", "2016": "segeplan2016", "2018": "segeplan2018"}),
    AIP: ("aip", {"2015": "aip2015", "2017": "aip2017", "2019": "aip2019"}),
}
# indicators whose 0 is the publisher's "not evaluated", not a score
ZERO_IS_NOT_EVALUATED = {AIP}
# the A2SIT indices of the 2020–21 edition of SEGEPLAN's ranking (its components)
A2SIT_2021_COMPONENTS = (
    "municipal_admin_management",
    "municipal_strategic_management",
    "municipal_financial_management",
    "municipal_public_services",
)
# two spellings of one name (e.g. 'Cotzulmalguapa' for 'Cotzumalguapa') are at least this similar
NAME_SIMILARITY = 0.9
KEY_COLUMNS = ("id_municipal", "municipio", "id_dep")


def read_final_sheet(path: Path, *, source_id: str, sheet: str, columns: list[str]) -> pd.DataFrame:
    """The sheet as a frame (header on row 1), with the required columns present and numeric where they
    must be; blank rows dropped. Missing columns or text in a number column are DataErrors naming the row."""
    rows = workbook_rows(path, source_id=source_id, sheet=sheet)
    where = f"Source '{source_id}', file '{path.name}', sheet '{sheet}'"
    if not rows:
        raise DataError(f"{where} is empty.")
    header = [str(c).strip() if c is not None else "" for c in rows[0]]
    missing = [c for c in [*KEY_COLUMNS, *columns] if c not in header]
    if missing:
        raise DataError(f"{where}: missing columns {missing} in row 1.")
    records = []
    for number, r in enumerate(rows[1:], start=2):
        if all(c is None or (isinstance(c, str) and not c.strip()) for c in r):
            continue
        r = r + [None] * (len(header) - len(r))
        rec: dict[str, Any] = {"row": number}
        for c in [*KEY_COLUMNS, *columns]:
            value = r[header.index(c)]
            if c == "municipio":
                rec[c] = str(value or "").strip()
                continue
            if value is None or (isinstance(value, str) and not value.strip()):
                rec[c] = None
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                rec[c] = float(value)
            else:
                try:
                    rec[c] = float(str(value).strip().replace(",", "."))
                except ValueError as exc:
                    raise DataError(
                        f"{where}, row {number}: column {c} holds {str(value)[:30]!r}, not a number."
                    ) from exc
        records.append(rec)
    frame = pd.DataFrame(records)
    if frame.empty:
        raise DataError(f"{where} has no data rows.")
    return frame


def _same_name(a: str, b: str) -> bool:
    ka, kb = name_key(a), name_key(b)
    return _same_place(ka, kb) or SequenceMatcher(None, ka, kb).ratio() >= NAME_SIMILARITY


def key_rows(frame: pd.DataFrame, units: pd.DataFrame, *, where: str) -> tuple[pd.Series, list[str]]:
    """P-codes of the rows (INE code → GT + 4 digits), checked against the stored units.

    Errors: a code that is not a whole number, a duplicate, a code absent from the boundaries, an `id_dep`
    that is not the code's department, a name that is not the unit's. Notes: the accepted name variants."""
    names = dict(zip(units["pcode"], units["name"], strict=True))
    problems: list[str] = []
    notes: list[str] = []
    out: list[str] = []
    for r in frame.to_dict("records"):
        code, row = r["id_municipal"], r["row"]
        if code is None or not float(code).is_integer():
            problems.append(f"row {row}: id_municipal {code!r} is not an INE code")
            out.append("")
            continue
        pcode = f"GT{int(code):04d}"
        out.append(pcode)
        if pcode not in names:
            problems.append(f"row {row}: {pcode} ({r['municipio']}) is not a municipio of {SET_ID}")
        elif r["id_dep"] is None or int(code) // 100 != int(r["id_dep"]):
            dep = "blank" if r["id_dep"] is None else f"{r['id_dep']:g}"
            problems.append(f"row {row}: id_dep {dep} is not the department of {int(code)}")
        elif name_key(r["municipio"]) != name_key(names[pcode]):
            if _same_name(r["municipio"], names[pcode]):
                notes.append(f"{pcode} '{r['municipio']}' = '{names[pcode]}'")
            else:
                problems.append(
                    f"row {row}: {pcode} is '{names[pcode]}' (INE), the file names it '{r['municipio']}'"
                )
    pcodes = pd.Series(out, index=frame.index)
    dup = pcodes[pcodes.duplicated() & (pcodes != "")]
    if not dup.empty:
        problems.append(f"municipios listed twice: {sorted(set(dup))[:10]}")
    if problems:
        raise DataError(
            f"{where}: the rows do not key onto Guatemala's municipios: " + "; ".join(problems[:8])
        )
    return pcodes, notes


def _catalogue_entry(catalogue: dict[str, Indicator], code: str) -> Indicator:
    ind = catalogue.get(code)
    if ind is None or ind.source_id != SOURCE_ID:
        raise DataError(f"Indicator '{code}' of source '{SOURCE_ID}' is missing from geodata/indicators.csv.")
    return ind


def _corr(a: dict[str, float], b: dict[str, float]) -> tuple[float, int]:
    both = sorted(set(a) & set(b))
    if len(both) < 3:
        return float("nan"), len(both)
    return float(pd.Series([a[p] for p in both]).corr(pd.Series([b[p] for p in both]))), len(both)


def management_link(conn: Connection, editions: dict[str, dict[str, float]]) -> str:
    """The correlation of the latest ranking with the mean of A2SIT's 2020–21 component indices, beside the
    correlations between the earlier editions (a note: the 2020–21 components should relate to the 2018
    ranking about as closely as the editions relate to each other)."""
    rows = conn.execute(
        text(
            "SELECT pcode, avg(value) AS v, count(*) AS n FROM observations WHERE indicator_code = ANY(:c) "
            "AND boundary_set_id = :s AND value IS NOT NULL GROUP BY pcode"
        ),
        {"c": list(A2SIT_2021_COMPONENTS), "s": SET_ID},
    ).all()
    mean4 = {p: float(v) for p, v, n in rows if n == len(A2SIT_2021_COMPONENTS)}
    years = sorted(editions)
    latest = editions[years[-1]]
    between = ", ".join(f"{a}–{years[-1]} r = {_corr(editions[a], latest)[0]:.3f}" for a in years[:-1])
    r, n = _corr(latest, mean4)
    if n < 3:
        return (
            "Link to A2SIT's 2020–21 edition (GestAdmin, GestEstr, GestFin, ServPub) not checked: "
            f"load gtm-a2sit first (between editions: {between})"
        )
    return (
        f"Link to the 2020–21 edition: the {years[-1]} ranking correlates r = {r:.3f} with the mean of A2SIT's "
        f"GestAdmin, GestEstr, GestFin and ServPub over {n} municipios (between editions: {between})"
    )


def prepare_segeplan_pdh(
    conn: Connection,
    settings: Settings,
    sources: dict[str, Source],
    resolver: Resolver,
    catalogue: dict[str, Indicator],
    progress: Progress,
) -> Layer:
    """Both series for the 340 municipios, one observation per municipio and edition (period = the year)."""
    source = sources[SOURCE_ID]
    paths = resolver.resolve(source)
    units = units_frame(conn, SET_ID)
    validation = Validation()
    notes: list[str] = []
    rows: list[dict[str, Any]] = []
    indicators = [_catalogue_entry(catalogue, code) for code in SERIES]
    editions: dict[str, dict[str, float]] = {}  # the ranking by period and P-code
    for ind in indicators:
        role, periods = SERIES[ind.code]
        f = source.file(role)
        progress(f"reading {f.name}")
        frame = read_final_sheet(
            paths[f.name], source_id=source.id, sheet=f.layer or "final", columns=list(periods.values())
        )
        where = f"Source '{source.id}', file '{f.name}'"
        pcodes, variants = key_rows(frame, units, where=where)
        if variants:
            notes.append(f"{f.name}: names accepted as the INE unit's: " + "; ".join(variants))
        for period, column in periods.items():
            n_values = n_missing = 0
            for pcode, value in zip(pcodes, frame[column], strict=True):
                if value is None or pd.isna(value):
                    continue  # not in this edition: no observation
                if value == 0 and ind.code in ZERO_IS_NOT_EVALUATED:
                    rows.append(_row(ind, pcode, period, None, [NOT_EVALUATED], f.sha256))
                    n_missing += 1
                    continue
                rows.append(_row(ind, pcode, period, float(value), [], f.sha256))
                n_values += 1
                if ind.code == RANKING:
                    editions.setdefault(period, {})[pcode] = float(value)
            values = [r["value"] for r in rows if r["indicator_code"] == ind.code and r["period"] == period]
            present = [v for v in values if v is not None]
            zeros_as_scores = (
                f"; {n_missing} zeros stored as missing ({NOT_EVALUATED}): counting them as scores of 0, as the "
                f"carrier's average does, the mean would be {sum(present) / len(values):.4g} over {len(values)}"
                if n_missing
                else ""
            )
            notes.append(
                f"{ind.code} {period} ({column}): {n_values} values, mean {sum(present) / len(present):.4g}"
                + zeros_as_scores
                if present
                else f"{ind.code} {period} ({column}): no values"
            )
    notes.append(management_link(conn, editions))
    return Layer(source, [(source, paths)], indicators, observations_frame(rows), validation, notes)


def _row(
    ind: Indicator, pcode: str, period: str, value: float | None, flags: list[str], sha: str
) -> dict[str, Any]:
    return {
        "indicator_code": ind.code,
        "boundary_set_id": SET_ID,
        "pcode": pcode,
        "period": period,
        "value": value,
        "flags": flags,
        "file_sha256": sha,
    }
