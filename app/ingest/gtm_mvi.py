"""Guatemala's 2018 census population by municipio, from UNHCR Guatemala's MVI tables (`gtm-mvi-unhcr`).

The population is the denominator of Guatemala's per-capita rates (disasters, counts) and the check of the
department figures. Its national sum must equal the INE Censo 2018 total, 14,901,286: a file that does not
is refused (a truncated or edited table would otherwise skew every rate silently).
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from sqlalchemy import Connection

from app.errors import DataError
from app.ingest.common import Progress, Validation, read_xlsx_sheet
from app.ingest.layers import Indicator, Layer, observations_frame
from app.ingest.matching import units_frame
from app.settings import Settings
from app.sources import Resolver, Source
from app.text import name_key

GTM_CENSUS_2018_TOTAL = 14_901_286  # INE Guatemala, XII Censo Nacional de Población 2018


def prepare_gtm_population(
    conn: Connection,
    settings: Settings,
    sources: dict[str, Source],
    resolver: Resolver,
    catalogue: dict[str, Indicator],
    progress: Progress,
) -> Layer:
    """`population_2018` for the 340 municipios (INE code `Cód_mun` → P-code GT + 4 digits, INE convention)."""
    source = sources["gtm-mvi-unhcr"]
    paths = resolver.resolve(source)
    f = source.file("population")
    progress("reading the 2018 population table")
    frame = read_xlsx_sheet(paths[f.name], source_id=source.id, sheet=f.layer or "Sheet1")
    missing = {"Cód_mun", "Municipio", "Pop_Total"} - set(frame.columns)
    if missing:
        raise DataError(f"Source '{source.id}', file '{f.name}': missing columns {sorted(missing)}.")
    codes = pd.to_numeric(frame["Cód_mun"], errors="coerce")
    pop = pd.to_numeric(frame["Pop_Total"], errors="coerce")
    bad = frame.index[codes.isna() | pop.isna() | (pop < 0)]
    if len(bad):
        raise DataError(
            f"Source '{source.id}', file '{f.name}': rows {[int(i) + 2 for i in bad[:5]]} lack a municipio "
            "code or a population that is a number ≥ 0."
        )
    frame = frame.assign(pcode="GT" + codes.astype(int).astype(str).str.zfill(4), pop=pop)
    validation = Validation()
    total = int(frame["pop"].sum())
    if total != GTM_CENSUS_2018_TOTAL:
        validation.errors.append(
            f"file '{f.name}': Pop_Total sums to {total:,}, not the INE Censo 2018 total "
            f"{GTM_CENSUS_2018_TOTAL:,} (truncated or altered table?)"
        )
    units = units_frame(conn, "gtm-municipios")
    names = dict(zip(units["pcode"], units["name_key"], strict=True))
    unknown = sorted(set(frame["pcode"]) - set(names))
    if unknown:
        validation.errors.append(f"codes that are not Guatemalan municipios: {unknown[:10]}")
    notes = [f"{len(frame)} municipios, national total {total:,}"]
    renamed = [
        f"{p} '{n}' (boundaries: '{names[p]}')"
        for p, n in zip(frame["pcode"], frame["Municipio"], strict=True)
        if p in names and name_key(str(n)) != names[p]
    ]
    if renamed:
        validation.warnings.append(f"{len(renamed)} names differ from the boundaries: {renamed[:5]}")
    ind = catalogue["population_2018"]
    rows: list[dict[str, Any]] = [
        {
            "indicator_code": ind.code,
            "boundary_set_id": "gtm-municipios",
            "pcode": p,
            "period": ind.period,
            "value": float(v),
            "flags": [],
            "file_sha256": f.sha256,
        }
        for p, v in zip(frame["pcode"], frame["pop"], strict=True)
    ]
    return Layer(source, [(source, paths)], [ind], observations_frame(rows), validation, notes)
