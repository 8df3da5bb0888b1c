"""Boundary ingest for the three countries: read → clean → validate, each step a small function.

Each `prepare_*` function returns a `Prepared` bundle: the boundary sets with their units, the
crosswalk rows between sets, and the sources used. `app.ingest.store` writes a bundle atomically.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
import shapely

from app.errors import DataError
from app.ingest.common import Progress, Validation, read_vector, repair, unit_frame, validate_units
from app.sources import Resolver, Source
from app.text import name_key


@dataclass(frozen=True)
class BoundarySetSpec:
    """What a boundary set is: its id, country, and how its P-codes are made."""

    id: str
    country: str
    title: str
    description: str
    pcode_convention: str
    is_default: bool


@dataclass
class PreparedSet:
    """A boundary set ready to store: its spec and its units (level 1 and 2)."""

    spec: BoundarySetSpec
    units: gpd.GeoDataFrame
    source_id: str


@dataclass
class Prepared:
    """Everything one source load will write, validated."""

    source: Source
    sets: list[PreparedSet]
    used: list[tuple[Source, dict[str, Path]]]
    crosswalk: pd.DataFrame | None = None
    validation: Validation = field(default_factory=Validation)


GTM_SET = BoundarySetSpec(
    id="gtm-municipios",
    country="GTM",
    title="Guatemala: 22 departamentos and 340 municipios (MINFIN)",
    description="MINFIN TopoJSON boundaries; lakes and Belice dropped, Livingston repaired with make_valid, "
    "the swapped polygons of 0206 Sansare and 0207 Sanarate put back.",
    pcode_convention="GT + 4-digit INE code (INE convention: GT0206 = Sansare; OCHA COD-AB gives GT0206 to "
    "Sanarate and GT0207 to Sansare). national_code = INE code.",
    is_default=True,
)
SLV_2021_SET = BoundarySetSpec(
    id="slv-2021-distritos",
    country="SLV",
    title="El Salvador: 14 departamentos and 262 distritos (the municipios before 2024, OCHA COD-AB 2021)",
    description="OCHA COD-AB adm1/adm2 of 2021-02-04; the 4 water bodies dropped. Since 1 May 2024 these 262 "
    "units are the distritos of the 44 municipios.",
    pcode_convention="OCHA P-codes (SV + alphabetical department + unit); national_code = DIGESTYC code "
    "(department order 01 Ahuachapán … 14 La Unión).",
    is_default=False,
)
SLV_2024_SET = BoundarySetSpec(
    id="slv-2024-municipios",
    country="SLV",
    title="El Salvador: 14 departamentos and the 44 municipios of 2024",
    description="Dissolved from the 262 COD-AB distritos by the 2023 territorial reorganisation table "
    "(Decreto 762, in force 1 May 2024). No official polygon layer of the 44 is published.",
    pcode_convention="SVM + DIGESTYC department code + the reform table's municipio code (e.g. SVM0113 = "
    "Ahuachapán Norte); the SVM prefix cannot collide with OCHA's SV P-codes. Departments keep OCHA P-codes.",
    is_default=True,
)
HND_SET = BoundarySetSpec(
    id="hnd-municipios",
    country="HND",
    title="Honduras: 18 departamentos and 298 municipios (UNHCR A2SIT, simplified)",
    description="Heavily simplified municipios (about 4,200 vertices in all) from UNHCR's A2SIT tool; "
    "departments dissolved from them. Fine for maps and joins, coarse for raster statistics.",
    pcode_convention="HN + DDMM (OCHA P-code = HN + INE code); national_code = INE DDMM.",
    is_default=True,
)
BOUNDARY_SETS = {s.id: s for s in (GTM_SET, SLV_2021_SET, SLV_2024_SET, HND_SET)}

# Pinned defects (see ../shared/geodata/README.md); each has a test.
GTM_NOT_MUNICIPIOS = {0: "lakes Amatitlán and Atitlán", 4000: "Belice"}
GTM_SWAPPED = (206, 207)  # Sansare is ≈144 km², Sanarate ≈275 km²; the file has their polygons swapped
SLV_WATER_BODIES = {"SV0399", "SV1099", "SV1298", "SV1299"}
# COD-AB name → reform-table name, keyed by the COD-AB department (7 names that do not match as written)
SLV_REFORM_ALIASES = {
    ("la libertad", "nueva san salvador"): "santa tecla",
    ("la libertad", "opico"): "san juan opico",
    ("la union", "san jose"): "san jose la fuente",
    ("san miguel", "san antonio"): "san antonio del mosco",
    ("san miguel", "san rafael"): "san rafael oriente",
    ("san salvador", "delgado"): "ciudad delgado",
    ("sonsonate", "santo domingo"): "santo domingo de guzman",
}


def _csv(paths: dict[str, Path], name: str, **kw: object) -> pd.DataFrame:
    return pd.read_csv(paths[name], dtype=str, keep_default_na=False, **kw)


# --- Guatemala -----------------------------------------------------------------------------------


def read_gtm(source: Source, paths: dict[str, Path]) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """The MINFIN municipio and department layers (TopoJSON has no CRS member: it is lon/lat WGS84)."""
    munis_file, deptos_file = source.file("municipios"), source.file("departamentos")
    munis = read_vector(
        paths[munis_file.name], source_id=source.id, layer=munis_file.layer, assume_crs="EPSG:4326"
    )
    deptos = read_vector(
        paths[deptos_file.name], source_id=source.id, layer=deptos_file.layer, assume_crs="EPSG:4326"
    )
    for frame, needed, name in (
        (munis, {"id", "Municipio", "id_depto"}, munis_file.name),
        (deptos, {"id", "Departamento"}, deptos_file.name),
    ):
        if not needed <= set(frame.columns):
            raise DataError(f"Source '{source.id}', file '{name}': expected columns {sorted(needed)}.")
    return munis, deptos


def fix_gtm_swap(munis: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Put the polygons of 0206 Sansare and 0207 Sanarate back: Sanarate is the larger one."""
    a, b = GTM_SWAPPED
    ia, ib = munis.index[munis["id"] == a], munis.index[munis["id"] == b]
    if len(ia) != 1 or len(ib) != 1:
        return munis
    area = munis.geometry.to_crs(6933).area
    if area[ia[0]] > area[ib[0]]:  # only while the defect is there: a corrected upstream file passes through
        out = munis.copy()
        out.loc[ia[0], "geometry"], out.loc[ib[0], "geometry"] = munis.geometry[ib[0]], munis.geometry[ia[0]]
        return out
    return munis


def clean_gtm(munis: gpd.GeoDataFrame, deptos: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Canonical GTM units: lakes and Belice dropped, geometries repaired, the 206/207 swap undone."""
    munis = munis[~munis["id"].astype(int).isin(GTM_NOT_MUNICIPIOS)].copy()
    munis["id"] = munis["id"].astype(int)
    munis = fix_gtm_swap(repair(munis))
    deptos = repair(deptos)
    dep_codes = (deptos["id"].astype(int) // 100).map("{:02d}".format)
    level1 = unit_frame(
        pd.DataFrame(
            {
                "level": 1,
                "pcode": "GT" + dep_codes,
                "national_code": dep_codes,
                "name": deptos["Departamento"].str.strip(),
                "parent_pcode": None,
            }
        ),
        deptos.geometry,
    )
    codes = munis["id"].map("{:04d}".format)
    level2 = unit_frame(
        pd.DataFrame(
            {
                "level": 2,
                "pcode": "GT" + codes,
                "national_code": codes,
                "name": munis["Municipio"].str.strip(),
                "parent_pcode": "GT" + (munis["id_depto"].astype(int) // 100).map("{:02d}".format),
            }
        ),
        munis.geometry,
    )
    return pd.concat([level1, level2], ignore_index=True)


def validate_gtm(units: gpd.GeoDataFrame, ine: pd.DataFrame) -> Validation:
    """GTM against the INE catalogue: the same 340 codes, the same count in every department."""
    expected = ("GT" + ine["codigo_depto"].str.zfill(2)).value_counts().to_dict()
    v = validate_units(units, label=GTM_SET.id, expected_per_parent=expected, expected_departments=22)
    have = set(units.loc[units["level"] == 2, "national_code"])
    want = set(ine["codigo_muni"].str.zfill(4))
    if have != want:
        v.errors.append(
            f"{GTM_SET.id}: codes differ from the INE catalogue: missing {sorted(want - have)[:10]}, "
            f"unexpected {sorted(have - want)[:10]}"
        )
    return v


def prepare_gtm(sources: dict[str, Source], resolver: Resolver, progress: Progress) -> Prepared:
    """Guatemala's 340 municipios and 22 departamentos from MINFIN, checked against INE."""
    source, ref = sources["gtm-minfin"], sources["ref-gtm-ine"]
    paths, ref_paths = resolver.resolve(source), resolver.resolve(ref)
    progress("reading MINFIN TopoJSON")
    munis, deptos = read_gtm(source, paths)
    progress("cleaning")
    units = clean_gtm(munis, deptos)
    progress("validating against the INE catalogue")
    validation = validate_gtm(units, _csv(ref_paths, ref.first("csv").name))
    return Prepared(
        source,
        [PreparedSet(GTM_SET, units, source.id)],
        [(source, paths), (ref, ref_paths)],
        validation=validation,
    )


# --- El Salvador ---------------------------------------------------------------------------------


def read_slv(source: Source, paths: dict[str, Path]) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """COD-AB adm2 and adm1 layers; the .dbf has no .cpg, so names are read as UTF-8."""
    adm2, adm1 = source.file("adm2"), source.file("adm1")
    units = read_vector(paths[adm2.name], source_id=source.id, encoding=adm2.encoding or "utf-8")
    deps = read_vector(paths[adm1.name], source_id=source.id, encoding=adm1.encoding or "utf-8")
    for frame, needed, name in (
        (units, {"ADM2_PCODE", "ADM2_ES", "ADM1_PCODE", "ADM1_ES"}, adm2.name),
        (deps, {"ADM1_PCODE", "ADM1_ES"}, adm1.name),
    ):
        if not needed <= set(frame.columns):
            raise DataError(f"Source '{source.id}', file '{name}': expected columns {sorted(needed)}.")
    return units, deps


def clean_slv_2021(units: gpd.GeoDataFrame, deps: gpd.GeoDataFrame, xwalk: pd.DataFrame) -> gpd.GeoDataFrame:
    """The 262 distritos and 14 departments: water dropped, DIGESTYC codes from the crosswalk table."""
    units = repair(units[~units["ADM2_PCODE"].isin(SLV_WATER_BODIES)])
    digestyc = dict(zip(xwalk["ADM2_PCODE"], xwalk["digestyc_code"], strict=True))
    dep_digestyc = {p[:4]: d[:2] for p, d in digestyc.items()}
    deps = repair(deps)
    level1 = unit_frame(
        pd.DataFrame(
            {
                "level": 1,
                "pcode": deps["ADM1_PCODE"],
                "national_code": deps["ADM1_PCODE"].map(dep_digestyc),
                "name": deps["ADM1_ES"].str.strip(),
                "parent_pcode": None,
            }
        ),
        deps.geometry,
    )
    level2 = unit_frame(
        pd.DataFrame(
            {
                "level": 2,
                "pcode": units["ADM2_PCODE"],
                "national_code": units["ADM2_PCODE"].map(digestyc),
                "name": units["ADM2_ES"].str.strip(),
                "parent_pcode": units["ADM1_PCODE"],
            }
        ),
        units.geometry,
    )
    return pd.concat([level1, level2], ignore_index=True)


def reform_table(localization: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per distrito of the reform table: department code and name, municipio code and name."""
    rows = []
    for dep in localization:
        if dep["code"] == "00":  # "Otro (Para extranjeros)" is not a department
            continue
        for mun in dep["municipios"]:
            for dis in mun.get("distritos", []):
                rows.append(
                    {
                        "dep_code": dep["code"],
                        "dep_name": dep["nombre"],
                        "mun_code": mun["code"],
                        "mun_name": mun["nombre"],
                        "distrito": dis["nombre"],
                    }
                )
    return pd.DataFrame(rows)


def match_reform(distritos: pd.DataFrame, reform: pd.DataFrame) -> pd.DataFrame:
    """Attach each COD-AB distrito (pcode, name, department name) to its 2024 municipio.

    Matches by accent-insensitive name within the department, with the pinned aliases; rows
    that do not match keep NaN in dep_code/mun_code for the validator to report.
    """
    left = distritos.assign(
        dep_key=distritos["dep_name"].map(name_key),
        dis_key=[
            SLV_REFORM_ALIASES.get((name_key(d), name_key(n)), name_key(n))
            for d, n in zip(distritos["dep_name"], distritos["name"], strict=True)
        ],
    )
    right = reform.assign(dep_key=reform["dep_name"].map(name_key), dis_key=reform["distrito"].map(name_key))
    merged = left.merge(
        right[["dep_key", "dis_key", "dep_code", "mun_code", "mun_name"]],
        on=["dep_key", "dis_key"],
        how="left",
        validate="one_to_one",
    )
    return merged


def dissolve_slv_2024(units_2021: gpd.GeoDataFrame, matched: pd.DataFrame) -> gpd.GeoDataFrame:
    """The 44 municipios as unions of their distritos; departments carried over from 2021."""
    municipios = units_2021[units_2021["level"] == 2].merge(
        matched[["pcode", "dep_code", "mun_code", "mun_name", "dep_name"]], on="pcode", how="left"
    )
    rows, geoms = [], []
    for (dep_code, mun_code, mun_name), group in municipios.groupby(["dep_code", "mun_code", "mun_name"]):
        parents = sorted(set(group["parent_pcode"]))
        rows.append(
            {
                "level": 2,
                "pcode": f"SVM{dep_code}{mun_code}",
                "national_code": f"{dep_code}{mun_code}",
                "name": restore_department_accent(str(mun_name), group["dep_name"].iloc[0]),
                "parent_pcode": parents[0] if len(parents) == 1 else ",".join(parents),
            }
        )
        geoms.append(shapely.union_all(group.geometry.values))
    level2 = repair(gpd.GeoDataFrame(pd.DataFrame(rows), geometry=geoms, crs=4326))
    level1 = units_2021[units_2021["level"] == 1]
    return pd.concat([level1, level2[level1.columns]], ignore_index=True)


def restore_department_accent(municipio: str, department: str) -> str:
    """'Ahuachapan Norte' in Ahuachapán → 'Ahuachapán Norte': the table drops accents the department has."""
    dep_words = department.split()
    words = municipio.split()
    if len(words) > len(dep_words) and name_key(" ".join(words[: len(dep_words)])) == name_key(department):
        return " ".join([*dep_words, *words[len(dep_words) :]])
    return municipio


def validate_slv(
    units_2021: gpd.GeoDataFrame,
    units_2024: gpd.GeoDataFrame,
    matched: pd.DataFrame,
    ocha: pd.DataFrame,
    xwalk: pd.DataFrame,
    reform: pd.DataFrame,
) -> Validation:
    """Both SLV sets against the OCHA list, the reform table and the derived crosswalk table."""
    ref = ocha[
        (ocha["Location"] == "SLV") & (ocha["Admin Level"] == "2") & ~ocha["P-Code"].isin(SLV_WATER_BODIES)
    ]
    v = validate_units(
        units_2021,
        label=SLV_2021_SET.id,
        expected_departments=14,
        expected_per_parent=ref["Parent P-Code"].value_counts().to_dict(),
    )
    unmatched = matched[matched["mun_code"].isna()]
    if not unmatched.empty:
        v.errors.append(
            f"{SLV_2024_SET.id}: distritos not found in the reform table: {list(unmatched['name'])[:10]}"
        )
    expected_2024 = reform.groupby(["dep_code", "mun_code"]).ngroups
    v.extend(validate_units(units_2024, label=SLV_2024_SET.id, expected_departments=14))
    n2024 = int((units_2024["level"] == 2).sum())
    if n2024 != expected_2024:
        v.errors.append(f"{SLV_2024_SET.id}: {n2024} municipios, the reform table lists {expected_2024}")
    if units_2024["parent_pcode"].astype(str).str.contains(",").any():
        v.errors.append(f"{SLV_2024_SET.id}: a municipio spans two departments")
    check = matched.merge(
        xwalk[["ADM2_PCODE", "dep_code", "mun2024_code"]],
        left_on="pcode",
        right_on="ADM2_PCODE",
        how="left",
        suffixes=("", "_ref"),
    )
    differ = check[
        (check["dep_code"] != check["dep_code_ref"]) | (check["mun_code"] != check["mun2024_code"])
    ]
    if not differ.empty:
        v.errors.append(
            f"{SLV_2024_SET.id}: name matching disagrees with the crosswalk table for "
            f"{list(differ['pcode'])[:10]}"
        )
    return v


def prepare_slv(sources: dict[str, Source], resolver: Resolver, progress: Progress) -> Prepared:
    """El Salvador's 262 distritos (COD-AB 2021) and the 44 municipios of 2024 dissolved from them."""
    codab, reform_src = sources["slv-codab-2021"], sources["slv-2024-reform"]
    xw_src, ocha_src = sources["ref-slv-crosswalk"], sources["ref-ocha-pcodes"]
    paths = {s.id: resolver.resolve(s) for s in (codab, reform_src, xw_src, ocha_src)}
    progress("reading COD-AB shapefiles")
    raw_units, raw_deps = read_slv(codab, paths[codab.id])
    xwalk = _csv(paths[xw_src.id], xw_src.first("csv").name)
    ocha = _csv(paths[ocha_src.id], ocha_src.first("csv").name)
    try:
        localization = json.loads(
            paths[reform_src.id][reform_src.first("json").name].read_text(encoding="utf-8")
        )
    except json.JSONDecodeError as exc:
        raise DataError(f"Source '{reform_src.id}': the reform table is not valid JSON ({exc.msg}).") from exc
    progress("cleaning the 262 distritos")
    units_2021 = clean_slv_2021(raw_units, raw_deps, xwalk)
    progress("matching distritos to the 2024 municipios")
    reform = reform_table(localization)
    distritos = units_2021[units_2021["level"] == 2][["pcode", "name", "parent_pcode"]].merge(
        units_2021[units_2021["level"] == 1][["pcode", "name"]].rename(
            columns={"pcode": "parent_pcode", "name": "dep_name"}
        ),
        on="parent_pcode",
    )
    matched = match_reform(distritos, reform)
    progress("dissolving the 44 municipios")
    units_2024 = dissolve_slv_2024(units_2021, matched)
    validation = validate_slv(units_2021, units_2024, matched, ocha, xwalk, reform)
    cross = pd.DataFrame(
        {
            "from_set": SLV_2021_SET.id,
            "from_pcode": matched["pcode"],
            "to_set": SLV_2024_SET.id,
            "to_pcode": "SVM" + matched["dep_code"].fillna("") + matched["mun_code"].fillna(""),
        }
    )
    used = [(s, paths[s.id]) for s in (codab, reform_src, xw_src, ocha_src)]
    return Prepared(
        codab,
        [
            PreparedSet(SLV_2021_SET, units_2021, codab.id),
            PreparedSet(SLV_2024_SET, units_2024, reform_src.id),
        ],
        used,
        crosswalk=cross,
        validation=validation,
    )


# --- Honduras ------------------------------------------------------------------------------------


def read_hnd(source: Source, paths: dict[str, Path]) -> gpd.GeoDataFrame:
    """The municipio layer: the A2SIT GeoJSON, or an OCHA COD-AB adm2 layer (ADM2_PCODE, ADM2_ES)."""
    f = source.file("adm2")
    frame = read_vector(paths[f.name], source_id=source.id, layer=f.layer)
    if {"ADM2_PCODE", "ADM2_ES"} <= set(frame.columns):
        codes = frame["ADM2_PCODE"].astype(str).str.removeprefix("HN")
        names = frame["ADM2_ES"]
    elif {"adm2_source_code", "gis_name"} <= set(frame.columns):
        parts = frame["adm2_source_code"].astype(str).str.extract(r"^hn_(\d{2})_(\d{2})$")
        codes = parts[0] + parts[1]
        names = frame["gis_name"]
    else:
        raise DataError(
            f"Source '{source.id}', file '{f.name}': expected columns adm2_source_code and gis_name "
            "(A2SIT) or ADM2_PCODE and ADM2_ES (OCHA COD-AB)."
        )
    return gpd.GeoDataFrame({"code": codes, "name": names}, geometry=frame.geometry, crs=frame.crs)


def clean_hnd(raw: gpd.GeoDataFrame, department_names: dict[str, str]) -> gpd.GeoDataFrame:
    """298 municipios and 18 departments dissolved from them (names from the OCHA P-code list)."""
    munis = repair(raw)
    level2 = unit_frame(
        pd.DataFrame(
            {
                "level": 2,
                "pcode": "HN" + munis["code"],
                "national_code": munis["code"],
                "name": munis["name"].str.strip(),
                "parent_pcode": "HN" + munis["code"].str[:2],
            }
        ),
        munis.geometry,
    )
    level2 = level2[level2["national_code"].notna()]
    deps = level2.dissolve(by="parent_pcode").reset_index()
    level1 = unit_frame(
        pd.DataFrame(
            {
                "level": 1,
                "pcode": deps["parent_pcode"],
                "national_code": deps["parent_pcode"].str[2:],
                "name": deps["parent_pcode"].map(department_names),
                "parent_pcode": None,
            }
        ),
        deps.geometry,
    )
    return repair(pd.concat([level1, level2], ignore_index=True))


def prepare_hnd(sources: dict[str, Source], resolver: Resolver, progress: Progress) -> Prepared:
    """Honduras's 298 municipios (A2SIT) and 18 departamentos, checked against the OCHA P-code list."""
    source, ocha_src = sources["hnd-a2sit"], sources["ref-ocha-pcodes"]
    paths, ocha_paths = resolver.resolve(source), resolver.resolve(ocha_src)
    progress("reading municipios")
    raw = read_hnd(source, paths)
    ocha = _csv(ocha_paths, ocha_src.first("csv").name)
    hnd = ocha[ocha["Location"] == "HND"]
    names = dict(
        zip(
            hnd.loc[hnd["Admin Level"] == "1", "P-Code"],
            hnd.loc[hnd["Admin Level"] == "1", "Name"],
            strict=True,
        )
    )
    progress("cleaning and dissolving departments")
    if raw["code"].isna().any():
        bad = int(raw["code"].isna().sum())
        raise DataError(f"Source '{source.id}': {bad} features have no recognisable municipio code.")
    units = clean_hnd(raw, names)
    ref2 = hnd[hnd["Admin Level"] == "2"]
    validation = validate_units(
        units,
        label=HND_SET.id,
        expected_departments=18,
        expected_per_parent=ref2["Parent P-Code"].value_counts().to_dict(),
    )
    missing = set(ref2["P-Code"]) - set(units["pcode"])
    if missing:
        validation.errors.append(f"{HND_SET.id}: P-codes of the OCHA list missing: {sorted(missing)[:10]}")
    return Prepared(
        source,
        [PreparedSet(HND_SET, units, source.id)],
        [(source, paths), (ocha_src, ocha_paths)],
        validation=validation,
    )


Preparer = Callable[[dict[str, Source], Resolver, Progress], Prepared]

# source id → how to prepare it; `raices load all` walks this in order
BOUNDARY_LOADERS: dict[str, Preparer] = {
    "gtm-minfin": prepare_gtm,
    "slv-codab-2021": prepare_slv,
    "hnd-a2sit": prepare_hnd,
}
# sources that are loaded as part of another one
LOADED_WITH = {"slv-2024-reform": "slv-codab-2021"}
