"""El Salvador's Dry Corridor (Corredor Seco): the 104 distritos the Ministerio de Agricultura y Ganadería (MAG,
Oficina de Planeación Estratégica y Seguimiento) lists, as carried by eliaspreza/ZonasAgroProductivas in two
R-serialised sf objects (gzip XDR RDS), read in Python with the `rdata` package (no R).

- `corredor_seco.rds`: the 104 corridor distritos; attribute columns COD_MUN4 (DIGESTYC 4-digit code of the
  former municipio = the stored distrito's national code), MPIO (name), COD_DEP, DEPTO, mpio (its 2024
  municipio). The geometry is not used: the codes identify the distritos.
- `distritos.rds`: all 262 distritos with the same columns; used to check the corridor list (every corridor
  code is a distrito, with the same name and 2024 municipio) and to compare the carrier's 2024 municipio
  (`mpio`) with Raíces' crosswalk (disagreements are reported; the crosswalk governs).

Indicators (pillar I, climate and food insecurity):
- `dry_corridor` on `slv-2021-distritos`: 1 for the 104 corridor distritos, 0 for the other 158 (the list is
  exhaustive for El Salvador, so absence means outside the corridor, not unknown).
- `dry_corridor_area_share` on `slv-2024-municipios`: the share (0–1) of the municipio's area that lies in
  corridor distritos, Σ area_km2 × share_of_from over its corridor distritos / the same over all its distritos
  (COD-AB areas, crosswalk shares). A distrito is in or out as a whole: the share is of whole distritos.

Period: neither file, the carrier's app nor its repository (no README) dates the delineation; the app only
credits "MAG - Oficina de Planeación Estratégica y Seguimiento OPES". The list is keyed to the 2024 municipios,
so the compilation is from 2024 or later, but the corridor definition itself is undated: period
"MAG (undated)" and every value carries the flag `period_unstated`.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Connection, text

from app.errors import DataError
from app.ingest.common import Progress, Validation
from app.ingest.layers import PERIOD_UNSTATED, Indicator, Layer, observations_frame
from app.settings import Settings
from app.sources import Resolver, Source
from app.text import name_key

SOURCE_ID = "slv-dry-corridor-mag"
DISTRITOS_SET = "slv-2021-distritos"
MUNICIPIOS_SET = "slv-2024-municipios"
PERIOD = "MAG (undated)"
FLAG_CODE = "dry_corridor"
SHARE_CODE = "dry_corridor_area_share"
N_CORRIDOR = 104
N_DISTRITOS = 262
REQUIRED_COLUMNS = ("COD_MUN4", "MPIO", "COD_DEP", "DEPTO", "mpio")

# DIGESTYC code → COD-AB name key, for the eight distritos whose name in the MAG files differs from the stored
# one (besides spacing: 'SAN BUENA VENTURA' is San Buenaventura; names are compared without spaces)
DRY_CORRIDOR_ALIASES = {
    "0314": "santo domingo",  # SANTO DOMINGO DE GUZMAN
    "0427": "san jose cancasque",  # CANCASQUE
    "0428": "san jose las flores",  # LAS FLORES
    "0511": "nueva san salvador",  # SANTA TECLA
    "0515": "opico",  # SAN JUAN OPICO
    "0619": "delgado",  # CIUDAD DELGADO
    "1218": "san rafael",  # SAN RAFAEL ORIENTE
    "1315": "osicala",  # OSCICALA (a misspelling in the MAG files)
}


def read_rds_table(
    path: Path, *, source_id: str = SOURCE_ID, columns: tuple[str, ...] = REQUIRED_COLUMNS
) -> pd.DataFrame:
    """The attribute table of an R-serialised sf object (geometry dropped), with `columns` as stripped text;
    an unreadable, truncated or unexpected file is a clear DataError."""
    import rdata

    try:
        with warnings.catch_warnings():
            # rdata has no constructors for sf's classes (sf, sfc, sfg, crs, bbox) and warns about each;
            # the geometry is dropped below, the attribute columns convert as a plain data.frame
            warnings.simplefilter("ignore")
            obj = rdata.read_rds(path)
    except Exception as exc:  # rdata raises EOFError, BadGzipFile, IndexError, NotImplementedError, …
        raise DataError(
            f"Source '{source_id}', file '{path.name}' cannot be read as an R data file (RDS): "
            f"{type(exc).__name__}: {str(exc)[:120]}. The file is truncated or corrupt; restore it from the "
            "mirror or upstream."
        ) from exc
    if not isinstance(obj, pd.DataFrame):
        raise DataError(
            f"Source '{source_id}', file '{path.name}' holds an R {type(obj).__name__}, not the sf data frame "
            "expected."
        )
    missing = [c for c in columns if c not in obj.columns]
    if missing:
        raise DataError(
            f"Source '{source_id}', file '{path.name}': missing columns {missing} "
            f"(found {[c for c in obj.columns if c != 'geometry']})."
        )
    out = obj[list(columns)].copy()
    for c in columns:
        out[c] = out[c].map(
            lambda v: "" if v is None or (isinstance(v, float) and v != v) else str(v).strip()
        )
    return out.reset_index(drop=True)


def _codes_ok(frame: pd.DataFrame, file: str, source_id: str) -> None:
    bad = frame.loc[~frame["COD_MUN4"].map(lambda c: bool(re.fullmatch(r"\d{4}", c))), "COD_MUN4"]
    if not bad.empty:
        raise DataError(
            f"Source '{source_id}', file '{file}': COD_MUN4 must be 4-digit DIGESTYC codes, found {bad.tolist()[:5]}."
        )
    dup = frame.loc[frame["COD_MUN4"].duplicated(), "COD_MUN4"]
    if not dup.empty:
        raise DataError(f"Source '{source_id}', file '{file}': COD_MUN4 repeated: {sorted(set(dup))[:10]}.")


def _distritos(conn: Connection) -> pd.DataFrame:
    rows = conn.execute(
        text("""
            SELECT u.pcode, u.national_code, u.name, u.name_key, u.area_km2,
                   d.national_code AS dep_code, d.name AS dep_name,
                   x.to_pcode AS muni_pcode, x.share_of_from, m.name AS muni_name
            FROM admin_units u
            JOIN admin_units d ON d.boundary_set_id = u.boundary_set_id AND d.pcode = u.parent_pcode
            LEFT JOIN crosswalk x ON x.from_set = u.boundary_set_id AND x.from_pcode = u.pcode
                                 AND x.to_set = :m
            LEFT JOIN admin_units m ON m.boundary_set_id = x.to_set AND m.pcode = x.to_pcode
            WHERE u.boundary_set_id = :s AND u.level = 2
        """),
        {"s": DISTRITOS_SET, "m": MUNICIPIOS_SET},
    ).mappings()
    frame = pd.DataFrame([dict(r) for r in rows])
    if frame.empty:
        raise DataError(
            f"Source '{SOURCE_ID}' is stored on '{DISTRITOS_SET}', which has no units: load slv-codab-2021 first."
        )
    if frame["muni_pcode"].isna().any():
        raise DataError(
            f"Source '{SOURCE_ID}': {int(frame['muni_pcode'].isna().sum())} distritos have no row in the "
            f"crosswalk to {MUNICIPIOS_SET}: load slv-codab-2021 (with the 2024 reform) first."
        )
    return frame


def check_against_distritos(
    corridor: pd.DataFrame, distritos: pd.DataFrame, units: pd.DataFrame
) -> tuple[list[str], list[str]]:
    """Errors (codes that name other places, corridor rows not among the distritos, units not covered) and
    notes (the carrier's 2024 municipio where it disagrees with the crosswalk)."""
    errors: list[str] = []
    notes: list[str] = []
    by_code = units.drop_duplicates("pcode").set_index("national_code")
    listed = distritos.set_index("COD_MUN4")
    unknown = sorted(set(distritos["COD_MUN4"]) - set(by_code.index))
    if unknown:
        errors.append(f"distritos.rds codes that are no stored distrito's DIGESTYC code: {unknown[:10]}")
    uncovered = sorted(set(by_code.index) - set(distritos["COD_MUN4"]))
    if uncovered:
        errors.append(f"stored distritos missing from distritos.rds: {uncovered[:10]}")
    renamed = []
    for code, name, dep in zip(distritos["COD_MUN4"], distritos["MPIO"], distritos["COD_DEP"], strict=True):
        if code not in by_code.index:
            continue
        unit = by_code.loc[code]
        expected = DRY_CORRIDOR_ALIASES.get(code, name_key(name))
        if expected.replace(" ", "") != str(unit["name_key"]).replace(" ", ""):
            renamed.append(f"{code} '{name}' is '{unit['name']}' in the boundaries")
        if dep.zfill(2) != unit["dep_code"] or code[:2] != unit["dep_code"]:
            errors.append(f"{code} '{name}': department {dep}, the stored distrito is in {unit['dep_code']}")
    if renamed:
        errors.append(
            f"{len(renamed)} codes name another place than the stored distrito (shifted codes?): {renamed[:10]}"
        )
    stray = sorted(set(corridor["COD_MUN4"]) - set(listed.index))
    if stray:
        errors.append(f"corridor codes missing from distritos.rds: {stray}")
    for code, name, mpio in zip(corridor["COD_MUN4"], corridor["MPIO"], corridor["mpio"], strict=True):
        if code in listed.index and (
            name_key(name) != name_key(listed.loc[code, "MPIO"]) or mpio != listed.loc[code, "mpio"]
        ):
            errors.append(f"corridor row {code} '{name}' ({mpio}) differs from distritos.rds")
    disagree = [
        f"{code} {unit_name}: the MAG files say '{mpio}', the crosswalk '{muni}'"
        for code, mpio in zip(distritos["COD_MUN4"], distritos["mpio"], strict=True)
        if code in by_code.index
        for unit_name, muni in [(by_code.loc[code, "name"], by_code.loc[code, "muni_name"])]
        if name_key(mpio) != name_key(str(muni))
    ]
    if disagree:
        notes.append(
            f"{len(disagree)} distritos are given another 2024 municipio in the MAG files than in the crosswalk "
            f"(the crosswalk, from the reform table, is used): {disagree}"
        )
    return errors, notes


def area_shares(units: pd.DataFrame, in_corridor: set[str]) -> pd.Series:
    """Per 2024 municipio: Σ area × share_of_from over its corridor distritos / the same over all its distritos."""
    part = units["area_km2"] * units["share_of_from"]
    inside = part.where(units["pcode"].isin(in_corridor), 0.0)
    return (inside.groupby(units["muni_pcode"]).sum() / part.groupby(units["muni_pcode"]).sum()).sort_index()


def prepare_dry_corridor(
    conn: Connection,
    settings: Settings,
    sources: dict[str, Source],
    resolver: Resolver,
    catalogue: dict[str, Indicator],
    progress: Progress,
) -> Layer:
    """The Dry Corridor flag per distrito and each 2024 municipio's area share in the corridor."""
    source = sources[SOURCE_ID]
    paths = resolver.resolve(source)
    corridor_file, distritos_file = source.file("corridor"), source.file("distritos")
    progress("reading the Dry Corridor (RDS)")
    corridor = read_rds_table(paths[corridor_file.name], source_id=source.id)
    distritos = read_rds_table(paths[distritos_file.name], source_id=source.id)
    _codes_ok(corridor, corridor_file.name, source.id)
    _codes_ok(distritos, distritos_file.name, source.id)
    validation = Validation()
    if len(corridor) != N_CORRIDOR:
        validation.errors.append(
            f"{corridor_file.name}: {len(corridor)} distritos, MAG's Dry Corridor has {N_CORRIDOR}"
        )
    if len(distritos) != N_DISTRITOS:
        validation.errors.append(f"{distritos_file.name}: {len(distritos)} distritos, expected {N_DISTRITOS}")
    units = _distritos(conn)
    errors, notes = check_against_distritos(corridor, distritos, units)
    validation.errors.extend(errors)

    for code in (FLAG_CODE, SHARE_CODE):
        if code not in catalogue:
            raise DataError(
                f"Source '{source.id}': indicator '{code}' is missing from the catalogue (geodata/indicators.csv)."
            )
    pcode_of = units.drop_duplicates("pcode").set_index("national_code")["pcode"]
    in_corridor = {pcode_of[c] for c in corridor["COD_MUN4"] if c in pcode_of.index}
    flags = [PERIOD_UNSTATED]
    rows: list[dict[str, Any]] = [
        {
            "indicator_code": FLAG_CODE,
            "boundary_set_id": DISTRITOS_SET,
            "pcode": p,
            "period": PERIOD,
            "value": 1.0 if p in in_corridor else 0.0,
            "flags": flags,
            "file_sha256": corridor_file.sha256,
        }
        for p in sorted(units["pcode"].unique())
    ]
    shares = area_shares(units, in_corridor)
    rows += [
        {
            "indicator_code": SHARE_CODE,
            "boundary_set_id": MUNICIPIOS_SET,
            "pcode": p,
            "period": PERIOD,
            "value": float(v),
            "flags": flags,
            "file_sha256": corridor_file.sha256,
        }
        for p, v in shares.items()
    ]
    by_dep = corridor["DEPTO"].value_counts().to_dict()
    touched = int((shares > 0).sum())
    notes = [
        f"{len(in_corridor)} of {units['pcode'].nunique()} distritos in the Dry Corridor, by department {by_dep}",
        f"{touched} of {len(shares)} municipios of 2024 have part of their area in the corridor "
        f"({int((shares >= 1 - 1e-9).sum())} entirely)",
        "period: the delineation is undated in the files and the carrier repository (MAG-OPES credited); "
        f"stored as '{PERIOD}' with the flag {PERIOD_UNSTATED}",
        *notes,
    ]
    return Layer(
        source,
        [(source, paths)],
        [catalogue[FLAG_CODE], catalogue[SHARE_CODE]],
        observations_frame(rows),
        validation,
        notes,
    )
