"""Census and survey tables: El Salvador's 2024 census (44 municipios), Honduras's EMR 2023 survey,
and department-level census figures for the three countries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Connection, text

from app.errors import DataError
from app.ingest.boundaries import SLV_2024_SET, reform_table
from app.ingest.common import Progress, Validation
from app.ingest.layers import (
    DENOMINATOR_MUNICIPAL_SUM,
    INCONSISTENT_POPULATION,
    NO_POPULATION_DENOMINATOR,
    SMALL_SAMPLE,
    SMALL_SAMPLE_MIN,
    SURVEY_ESTIMATE,
    SURVEY_NOT_REPRESENTATIVE,
    Indicator,
    Layer,
    observations_frame,
    stored_population,
)
from app.ingest.series import (
    PARTIAL_YEAR,
    SLV_EMIGRANTS_PER_1000_TREND,
    SLV_EMIGRANTS_PER_1000_TREND_P,
    SLV_EMIGRANTS_PER_1000_YEAR,
    SLV_EMIGRANTS_YEAR,
    SLV_FIRST_YEAR,
    SLV_LAST_YEAR,
    SLV_TREND_WINDOW,
    trend_rows,
)
from app.settings import Settings
from app.sources import Resolver, Source
from app.text import name_key
from app.trends import ALPHA, NOT_SIGNIFICANT


def _csv(path: Path, source_id: str, required: set[str]) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"Source '{source_id}', file '{path.name}' is not a readable CSV: {exc}") from exc
    missing = required - set(frame.columns)
    if missing:
        raise DataError(f"Source '{source_id}', file '{path.name}': missing columns {sorted(missing)}.")
    return frame


def _numbers(frame: pd.DataFrame, columns: list[str], source_id: str, file: str) -> pd.DataFrame:
    out = frame.copy()
    for c in columns:
        parsed = pd.to_numeric(out[c].replace({"NA": None, "": None}), errors="coerce")
        text_cells = parsed.isna() & ~out[c].isin(["NA", ""])
        if text_cells.any():
            rows = [int(i) + 2 for i in out.index[text_cells][:5]]
            raise DataError(
                f"Source '{source_id}', file '{file}': column {c} has text where numbers belong "
                f"(lines {rows})."
            )
        out[c] = parsed
    return out


def _catalogue_for(catalogue: dict[str, Indicator], source_id: str) -> dict[str, Indicator]:
    return {code: ind for code, ind in catalogue.items() if ind.source_id == source_id}


# --- El Salvador, census 2024 --------------------------------------------------------------------


def census_codes(reform: pd.DataFrame) -> pd.DataFrame:
    """The census numbers the 2024 municipios 01…NN within each department in alphabetical order; the reform
    table has other codes (Ahuachapán Norte is 0102 in the census, 13 in the table). One row per municipio:
    census code, department, reform code, name."""
    munis = reform[["dep_code", "mun_code", "mun_name"]].drop_duplicates()
    munis = munis.assign(key=munis["mun_name"].map(name_key)).sort_values(["dep_code", "key"])
    munis["rank"] = munis.groupby("dep_code").cumcount() + 1
    munis["census_code"] = munis["dep_code"] + munis["rank"].map("{:02d}".format)
    return munis[["census_code", "dep_code", "mun_code", "mun_name", "key"]].reset_index(drop=True)


def prepare_slv_census(
    conn: Connection,
    settings: Settings,
    sources: dict[str, Source],
    resolver: Resolver,
    catalogue: dict[str, Indicator],
    progress: Progress,
) -> Layer:
    """Emigration indicators for the 44 municipios from the 2024 census summary and emigration detail."""
    source, reform_src = sources["slv-censo2024"], sources["slv-2024-reform"]
    paths, reform_paths = resolver.resolve(source), resolver.resolve(reform_src)
    summary_file = source.file("municipios").name
    detail_file = source.file("emigration").name
    progress("reading the census summary")
    summary = _csv(
        paths[summary_file],
        source.id,
        {
            "municdesc.x",
            "poblacion_total",
            "total_emigrants_household",
            "pct_households_with_emigrants",
            "pct_households_receiving_remittances",
            "munic_name",
        },
    )
    summary = _numbers(
        summary,
        [
            "poblacion_total",
            "total_emigrants_household",
            "pct_households_with_emigrants",
            "pct_households_receiving_remittances",
        ],
        source.id,
        summary_file,
    )
    progress("reading the emigration detail")
    detail = _csv(paths[detail_file], source.id, {"municdesc", "cause", "emigrants", "year_departure"})
    detail = _numbers(detail, ["emigrants"], source.id, detail_file)
    reform = reform_table(json.loads(reform_paths[reform_src.first("json").name].read_text(encoding="utf-8")))
    codes = census_codes(reform)
    validation = Validation()
    notes: list[str] = []

    summary["code"] = summary["municdesc.x"].str.zfill(4)
    not_municipio = summary[~summary["code"].isin(codes["census_code"])]
    for code in not_municipio["code"]:
        notes.append(f"row {code} skipped: not a municipio of the 2024 scheme")
    summary = summary[summary["code"].isin(codes["census_code"])].merge(
        codes, left_on="code", right_on="census_code", how="left"
    )
    per_dep_file = summary.groupby("dep_code").size().to_dict()
    per_dep_table = codes.groupby("dep_code").size().to_dict()
    if per_dep_file != per_dep_table:
        validation.errors.append(
            f"municipios per department differ from the reform table: {per_dep_file} vs "
            f"{per_dep_table}; the census numbering cannot be trusted"
        )
    # the file's own labels are wrong for departments 06–14 (shifted by one department) and missing for
    # five rows: names come from the reform table, the labels are only reported
    relabelled = [
        f"{c} labelled '{lab}' is {name}"
        for c, lab, name in zip(summary["code"], summary["munic_name"], summary["mun_name"], strict=True)
        if lab not in ("", "NA") and name_key(lab) != name_key(name)
    ]
    missing_names = [
        c for c, lab in zip(summary["code"], summary["munic_name"], strict=True) if lab in ("", "NA")
    ]
    if relabelled:
        notes.append(
            f"{len(relabelled)} rows carry another municipio's name in the file; named from the "
            f"reform table instead, e.g. {relabelled[:3]}"
        )
    if missing_names:
        notes.append(
            f"{len(missing_names)} rows have no name in the file; named from the reform table: "
            f"{missing_names}"
        )
    summary["pcode"] = "SVM" + summary["dep_code"] + summary["mun_code"]

    detail["code"] = detail["municdesc"].str.zfill(4)
    detail = detail[detail["code"].isin(codes["census_code"])]
    total = detail.groupby("code")["emigrants"].sum()
    insecure = detail[detail["cause"] == "insecurity_violence"].groupby("code")["emigrants"].sum()
    summary["detail_total"] = summary["code"].map(total).fillna(0.0)
    summary["insecure"] = summary["code"].map(insecure).fillna(0.0)

    ind = _catalogue_for(catalogue, source.id)
    pop = summary["poblacion_total"]
    values = {
        "population": pop,
        "emigrants": summary["total_emigrants_household"],
        "emigrants_per_1000": summary["total_emigrants_household"] / pop * 1000,
        "households_with_emigrants_pct": summary["pct_households_with_emigrants"],
        "remittance_households_pct": summary["pct_households_receiving_remittances"],
        "emigrants_insecurity_share": (summary["insecure"] / summary["detail_total"] * 100).where(
            summary["detail_total"] > 0
        ),
        "emigrants_insecurity_per_1000": summary["insecure"] / pop * 1000,
    }
    shas = {f.name: f.sha256 for f in source.files}
    rows: list[dict[str, Any]] = []
    for code, series in values.items():
        sha = shas[detail_file] if "insecurity" in code else shas[summary_file]
        rows += [
            {
                "indicator_code": code,
                "boundary_set_id": SLV_2024_SET.id,
                "pcode": p,
                "period": ind[code].period,
                "value": float(v),
                "flags": [],
                "file_sha256": sha,
            }
            for p, v in zip(summary["pcode"], series, strict=True)
            if pd.notna(v)
        ]
    progress("emigrants by year of departure and their trend")
    series = slv_departure_series(detail, summary, shas[detail_file], validation)
    window = f"{SLV_TREND_WINDOW[0]}-{SLV_TREND_WINDOW[1]}"
    rate = series[series["indicator_code"] == SLV_EMIGRANTS_PER_1000_YEAR.code]
    trends = trend_rows(
        rate,
        SLV_TREND_WINDOW,
        SLV_EMIGRANTS_PER_1000_TREND,
        SLV_EMIGRANTS_PER_1000_TREND_P,
        shas[detail_file],
    )
    significant = sum(
        1
        for r in trends
        if r["indicator_code"] == SLV_EMIGRANTS_PER_1000_TREND.code
        and r["value"] is not None
        and not pd.isna(r["value"])
        and NOT_SIGNIFICANT not in r["flags"]
    )
    notes.append(
        f"emigrants by year of departure {SLV_FIRST_YEAR}-{SLV_LAST_YEAR} for {summary['pcode'].nunique()} "
        f"municipios ({SLV_LAST_YEAR} flagged {PARTIAL_YEAR}: the census was taken during that year); trend "
        f"{window}: {significant} municipios with a significant Mann-Kendall trend (p < {ALPHA})"
    )
    return Layer(
        source,
        [(source, paths), (reform_src, reform_paths)],
        [ind[c] for c in values]
        + [
            SLV_EMIGRANTS_YEAR,
            SLV_EMIGRANTS_PER_1000_YEAR,
            SLV_EMIGRANTS_PER_1000_TREND,
            SLV_EMIGRANTS_PER_1000_TREND_P,
        ],
        observations_frame([*rows, *series.to_dict("records"), *trends]),
        validation,
        notes,
    )


def slv_departure_series(
    detail: pd.DataFrame, summary: pd.DataFrame, sha: str, validation: Validation
) -> pd.DataFrame:
    """Emigrants by year of departure per municipio (count, and per 1,000 residents of the 2024 census),
    one row per municipio and year 2014-2024; a year with no emigrant in the detail is a 0 (the detail
    aggregates every census record, so an absent combination is no emigrant). 2024 is flagged partial."""
    years = [str(y) for y in range(SLV_FIRST_YEAR, SLV_LAST_YEAR + 1)]
    stray = sorted(set(detail["year_departure"]) - set(years))
    if stray:
        validation.errors.append(
            f"year_departure outside {SLV_FIRST_YEAR}-{SLV_LAST_YEAR} in the emigration detail: {stray[:5]}"
        )
    counts = detail.groupby(["code", "year_departure"])["emigrants"].sum()
    index = pd.MultiIndex.from_product([summary["code"], years], names=["code", "year_departure"])
    counts = counts.reindex(index, fill_value=0.0).reset_index()
    units = summary.set_index("code")
    counts["pcode"] = counts["code"].map(units["pcode"])
    counts["rate"] = counts["emigrants"] / counts["code"].map(units["poblacion_total"]) * 1000
    rows: list[dict[str, Any]] = []
    for code, column in ((SLV_EMIGRANTS_YEAR.code, "emigrants"), (SLV_EMIGRANTS_PER_1000_YEAR.code, "rate")):
        rows += [
            {
                "indicator_code": code,
                "boundary_set_id": SLV_2024_SET.id,
                "pcode": p,
                "period": y,
                "value": float(v),
                "flags": [PARTIAL_YEAR] if y == str(SLV_LAST_YEAR) else [],
                "file_sha256": sha,
            }
            for p, y, v in zip(counts["pcode"], counts["year_departure"], counts[column], strict=True)
            if pd.notna(v)
        ]
    return pd.DataFrame(rows)


# --- Honduras, Encuesta de Migración y Remesas 2023 ----------------------------------------------

# causes (multi-answer, "; "-separated) that count as insecurity or violence (pillar IV)
HND_INSECURITY_CAUSES = {
    "por inseguridad en la comunidad",
    "es victima de violencia",
    "sufre amenazas o extorsion",
}


def kish_effective_n(weights: pd.Series) -> float:
    """Kish's effective sample size of weighted records, (Σw)² / Σw²: the number of equally weighted
    respondents that would give the same precision. Each row of the EMR summary is one weighted record."""
    w = weights.astype("float64")
    return float(w.sum() ** 2 / (w**2).sum()) if (w**2).sum() > 0 else 0.0


def prepare_hnd_emr(
    conn: Connection,
    settings: Settings,
    sources: dict[str, Source],
    resolver: Resolver,
    catalogue: dict[str, Indicator],
    progress: Progress,
) -> Layer:
    """Weighted emigrants per municipio (a survey estimate, not representative by municipio).

    - `emigrants_emr` is a weighted count: kept as context for the migration breakdown, never scored next to
      rates. `emigrants_emr_per_1000` is the scored form: weighted emigrants per 1,000 residents, the
      denominator being the best municipal population available for Honduras, the INE 2014 projection
      published by IUDPAS (`population_2014`, 265 of 298 municipios). The vintages differ (2023 survey over a
      2014 population): the unit says so. A municipio without a 2014 population gets no per-capita value.
    - `emigrants_insecurity_share_emr` carries its effective sample (Kish, (Σw)²/Σw² over the records of the
      municipio) in `sample_size`, and the flag `small_sample` below SMALL_SAMPLE_MIN effective records.
    """
    source = sources["hnd-emr2023"]
    paths = resolver.resolve(source)
    f = source.first("csv").name
    progress("reading the survey table")
    frame = _numbers(_csv(paths[f], source.id, {"munic", "cause", "emigrants"}), ["emigrants"], source.id, f)
    unknown = frame["munic"].isin(["NA", ""])
    notes = (
        [
            f"{int(unknown.sum())} rows ({frame.loc[unknown, 'emigrants'].sum():,.0f} weighted emigrants) have no "
            "municipio in the file and count in no municipio"
        ]
        if unknown.any()
        else []
    )
    frame = frame[~unknown]
    if not frame["munic"].str.fullmatch(r"\d{3,4}").all():
        bad = frame.loc[~frame["munic"].str.fullmatch(r"\d{3,4}"), "munic"].head(5).tolist()
        raise DataError(
            f"Source '{source.id}', file '{f}': municipio codes must be INE numbers, found {bad}."
        )
    population = stored_population(conn, "population_2014", "hnd-municipios")
    if population.empty:
        raise DataError(
            f"Source '{source.id}': the per-capita rate needs Honduras' municipal population "
            "(population_2014): load hnd-iudpas-2014 first."
        )
    frame["pcode"] = "HN" + frame["munic"].str.zfill(4)
    causes = frame["cause"].map(lambda c: {name_key(x) for x in str(c).split(";")})
    frame["insecure"] = causes.map(lambda cs: bool(cs & HND_INSECURITY_CAUSES))
    total = frame.groupby("pcode")["emigrants"].sum()
    insecure = frame[frame["insecure"]].groupby("pcode")["emigrants"].sum().reindex(total.index, fill_value=0)
    n_eff = frame.groupby("pcode")["emigrants"].apply(kish_effective_n)
    ind = _catalogue_for(catalogue, source.id)
    sha = source.first("csv").sha256
    base = {"boundary_set_id": "hnd-municipios", "file_sha256": sha}
    rows = [
        {
            **base,
            "indicator_code": "emigrants_emr",
            "pcode": p,
            "period": ind["emigrants_emr"].period,
            "value": float(v),
            "flags": [SURVEY_NOT_REPRESENTATIVE, NO_POPULATION_DENOMINATOR],
            "sample_size": n_eff[p],
        }
        for p, v in total.items()
    ]
    rows += [
        {
            **base,
            "indicator_code": "emigrants_emr_per_1000",
            "pcode": p,
            "period": ind["emigrants_emr_per_1000"].period,
            "value": float(v / population[p] * 1000),
            "flags": [SURVEY_NOT_REPRESENTATIVE],
            "sample_size": n_eff[p],
        }
        for p, v in total.items()
        if p in population.index and population[p] > 0
    ]
    rows += [
        {
            **base,
            "indicator_code": "emigrants_insecurity_share_emr",
            "pcode": p,
            "period": ind["emigrants_insecurity_share_emr"].period,
            "value": float(insecure[p] / v * 100),
            "flags": [SURVEY_NOT_REPRESENTATIVE] + ([SMALL_SAMPLE] if n_eff[p] < SMALL_SAMPLE_MIN else []),
            "sample_size": n_eff[p],
        }
        for p, v in total.items()
        if v > 0
    ]
    no_pop = sorted(set(total.index) - set(population.index))
    notes.append(f"{len(total)} of 298 municipios appear in the survey; the others have no value (not zero)")
    notes.append(
        f"{len(no_pop)} surveyed municipios have no 2014 population and so no per-capita value: {no_pop[:10]}"
    )
    small = int((n_eff < SMALL_SAMPLE_MIN).sum())
    notes.append(
        f"{small} of {len(total)} municipal shares rest on fewer than {SMALL_SAMPLE_MIN:.0f} effective records "
        f"(flag {SMALL_SAMPLE})"
    )
    return Layer(
        source,
        [(source, paths)],
        [ind["emigrants_emr"], ind["emigrants_emr_per_1000"], ind["emigrants_insecurity_share_emr"]],
        observations_frame(rows),
        Validation(),
        notes,
    )


# --- Department level, three countries -----------------------------------------------------------

DEPT_PERIODS = {"GTM": "2018", "HND": "2023-2024", "SLV": "2024"}
# the municipal population each country's department figures are checked against (its best vintage)
MUNICIPAL_POPULATION = {
    "GTM": ("population_2018", "gtm-municipios"),
    "HND": ("population_2014", "hnd-municipios"),
    "SLV": ("population", "slv-2024-municipios"),
}
# a department population further than this from the sum of its municipios is not used as a denominator
POPULATION_TOLERANCE = 0.5


def municipal_population_sums(conn: Connection) -> pd.DataFrame:
    """Per country and department (national code): the sum of the stored municipal populations, how many
    municipios it covers, and the indicator and period it comes from."""
    out = []
    for iso, (code, set_id) in MUNICIPAL_POPULATION.items():
        for r in conn.execute(
            text("""
            SELECT d.national_code, sum(o.value) AS pop, count(*) AS n, min(o.period) AS period,
                   (SELECT count(*) FROM admin_units x WHERE x.boundary_set_id = :s AND x.level = 2
                      AND x.parent_pcode = d.pcode) AS units
            FROM observations o
            JOIN admin_units u ON u.boundary_set_id = o.boundary_set_id AND u.pcode = o.pcode
            JOIN admin_units d ON d.boundary_set_id = u.boundary_set_id AND d.pcode = u.parent_pcode
            WHERE o.indicator_code = :c AND o.boundary_set_id = :s AND o.value IS NOT NULL
            GROUP BY d.national_code, d.pcode"""),
            {"c": code, "s": set_id},
        ):
            out.append(
                {
                    "ISO3": iso,
                    "national_code": r.national_code,
                    "municipal_pop": float(r.pop),
                    "municipios": int(r.n),
                    "units": int(r.units),
                    "pop_code": code,
                    "pop_period": r.period,
                }
            )
    return pd.DataFrame(
        out,
        columns=["ISO3", "national_code", "municipal_pop", "municipios", "units", "pop_code", "pop_period"],
    )


def prepare_department_census(
    conn: Connection,
    settings: Settings,
    sources: dict[str, Source],
    resolver: Resolver,
    catalogue: dict[str, Indicator],
    progress: Progress,
) -> Layer:
    """Department-level emigration and remittance figures as level-1 observations in every set of a country.

    Each department's population is checked against the sum of its municipios' populations (the country's
    best municipal vintage, `MUNICIPAL_POPULATION`). One off by more than 50 % is flagged
    `inconsistent_population` and is not used as a denominator: its emigrants per 1,000 are computed on the
    municipal sum instead, flagged `denominator_municipal_population_sum` (in Honduras, Gracias a Dios and
    Islas de la Bahía come out about 6× their municipal sums in the file)."""
    source = sources["department-census"]
    paths = resolver.resolve(source)
    f = source.file("department_data.csv")
    progress("reading department figures")
    cols = [
        "poblacion_total",
        "total_emigrants_household",
        "pct_households_with_emigrants",
        "pct_households_receiving_remittances",
    ]
    frame = _numbers(_csv(paths[f.name], source.id, {"depto", "ISO3", *cols}), cols, source.id, f.name)
    deps = pd.DataFrame(
        [
            dict(r)
            for r in conn.execute(
                text("SELECT boundary_set_id, country, pcode, national_code FROM admin_units WHERE level = 1")
            ).mappings()
        ]
    )
    if deps.empty:
        raise DataError("Load the boundaries before the department census (no departments stored).")
    frame["national_code"] = frame["depto"].str.zfill(2)
    sums = municipal_population_sums(conn)
    frame = frame.merge(sums, on=["ISO3", "national_code"], how="left")
    ratio = frame["poblacion_total"] / frame["municipal_pop"]
    frame["inconsistent"] = (ratio - 1).abs() > POPULATION_TOLERANCE
    notes: list[str] = []
    for r in frame[frame["inconsistent"]].itertuples(index=False):
        notes.append(
            f"{r.ISO3} department {r.national_code}: population {r.poblacion_total:,.0f} is "
            f"{r.poblacion_total / r.municipal_pop:.1f}× the sum of its municipios ({r.municipal_pop:,.0f}, "
            f"{r.pop_code}, {r.municipios} of {r.units} municipios): flagged {INCONSISTENT_POPULATION}; "
            "its rates use the municipal sum"
        )
    unchecked = frame[frame["municipal_pop"].isna()]
    if not unchecked.empty:
        notes.append(
            f"{len(unchecked)} departments could not be checked (no municipal population stored): "
            f"{unchecked[['ISO3', 'depto']].values.tolist()[:5]}"
        )
    denominator = frame["poblacion_total"].where(~frame["inconsistent"], frame["municipal_pop"])
    merged = frame.assign(denominator=denominator).merge(
        deps, left_on=["ISO3", "national_code"], right_on=["country", "national_code"], how="left"
    )
    unmatched = merged[merged["pcode"].isna()]
    validation = Validation()
    if not unmatched.empty:
        validation.errors.append(f"departments not found: {unmatched[['ISO3', 'depto']].values.tolist()[:5]}")
    merged = merged[merged["pcode"].notna()]
    values = {
        "dept_population": merged["poblacion_total"],
        "dept_emigrants_per_1000": merged["total_emigrants_household"] / merged["denominator"] * 1000,
        "dept_households_with_emigrants_pct": merged["pct_households_with_emigrants"],
        "dept_remittance_households_pct": merged["pct_households_receiving_remittances"],
    }
    ind = _catalogue_for(catalogue, source.id)
    rows: list[dict[str, Any]] = []
    for code, series in values.items():
        for (_, r), v in zip(merged.iterrows(), series, strict=True):
            if pd.notna(v):
                flags = [SURVEY_ESTIMATE] if r["ISO3"] == "HND" else []
                if r["inconsistent"] and code == "dept_population":
                    flags.append(INCONSISTENT_POPULATION)
                if r["inconsistent"] and code == "dept_emigrants_per_1000":
                    flags.append(DENOMINATOR_MUNICIPAL_SUM)
                rows.append(
                    {
                        "indicator_code": code,
                        "boundary_set_id": r["boundary_set_id"],
                        "pcode": r["pcode"],
                        "period": DEPT_PERIODS.get(r["ISO3"], "unstated"),
                        "value": float(v),
                        "flags": flags,
                        "file_sha256": f.sha256,
                    }
                )
    return Layer(
        source,
        [(source, paths)],
        [ind[c] for c in values],
        observations_frame(rows),
        validation,
        ["Honduras figures are survey estimates (EPHPM 2024, EMR 2023); flagged as such", *notes],
    )
