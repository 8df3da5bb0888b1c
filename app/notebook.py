"""A small façade for analysts' notebooks: the project's own reads, as (Geo)DataFrames, on one engine.

Every function goes through the service's code (score runs, the priority read, the indicator values with
the SLV crosswalk, the hazard loader), so a notebook sees what the API serves::

    from app import notebook as nb
    gdf = nb.priorities(country="GTM")
    gdf.plot(column="score")

The database is the one the service uses: DATABASE_URL when set, else the local cluster (`make run`).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
from sqlalchemy import Engine, text

from app import indicators
from app.db import make_engine
from app.errors import InvalidParameter
from app.hazards.hurdat import read_dplyr_storms
from app.ingest.hazards import eta_iota_raster
from app.scoring import data as scoring_data
from app.scoring.profile import Profile
from app.scoring.read import PriorityFilter, priorities_frame
from app.scoring.service import DEFAULT_PROFILE, ensure_run, profile_by_id, run_sensitivity
from app.settings import get_settings
from app.sources import Resolver, load_manifest

__all__ = [
    "DEFAULT_PROFILE",
    "crosswalk",
    "default_sets",
    "engine",
    "indicator",
    "load_profile",
    "municipalities",
    "priorities",
    "run_id",
    "sensitivity",
    "storms",
    "wind_raster",
]

HURRICANE_SOURCE = "hurdat2-dplyr"

_UNITS_SQL = """
    SELECT boundary_set_id, pcode, national_code, name, country, level, parent_pcode, area_km2,
           {geom} AS geom
    FROM admin_units
    WHERE level = ANY(:levels)
      AND boundary_set_id = ANY(coalesce(CAST(:sets AS text[]),
                                         ARRAY(SELECT id FROM boundary_sets WHERE is_default)))
    ORDER BY boundary_set_id, level, pcode
"""

_STORMS_SQL = """
    SELECT s.storm_id, s.name, s.year, s.start_time, s.end_time, s.max_wind_kt, s.min_pressure_mb,
           (SELECT count(*) FROM storm_fixes f WHERE f.storm_id = s.storm_id) AS fixes, s.track
    FROM storms s
    WHERE CAST(:names AS text[]) IS NULL
       OR (lower(s.name), s.year) IN (SELECT lower(n), y FROM unnest(CAST(:names AS text[]),
                                                                      CAST(:years AS int[])) AS w(n, y))
    ORDER BY s.start_time, s.storm_id
"""


@lru_cache(maxsize=1)
def engine() -> Engine:
    """The one engine of this process, from the settings: DATABASE_URL, else the local cluster."""
    return make_engine(get_settings())


def load_profile(spec: str | Profile = DEFAULT_PROFILE) -> Profile:
    """A bundled profile by id, or the given Profile as it is."""
    return spec if isinstance(spec, Profile) else profile_by_id(spec)


def run_id(spec: str | Profile = DEFAULT_PROFILE, set_id: str | None = None) -> int:
    """The stored score run of a profile on the current data (computed once when missing)."""
    return ensure_run(engine(), load_profile(spec), [set_id] if set_id else None)


def priorities(
    profile: str | Profile = DEFAULT_PROFILE,
    country: str | None = None,
    set_id: str | None = None,
    *,
    full_geometry: bool = False,
    include_unranked: bool = False,
) -> gpd.GeoDataFrame:
    """Ranked municipios of a profile as a GeoDataFrame (EPSG:4326): score, rank and interval, tier, pillars.
    With `include_unranked`, also those with too little data (ranked = False, `not_ranked_reason`, no score).

    `set_id` scores one boundary set (e.g. "slv-2021-distritos") instead of each country's default;
    geometry is the simplified copy (≈50 m) unless `full_geometry`.
    """
    f = PriorityFilter.parse(country, None, None, None, None, include_unranked=include_unranked)
    run = run_id(profile, set_id)
    with engine().connect() as conn:
        frame: gpd.GeoDataFrame = priorities_frame(conn, run, f, full_geometry=full_geometry)
    return frame


def _units(set_id: str | None, levels: tuple[int, ...], full_geometry: bool) -> gpd.GeoDataFrame:
    sql = _UNITS_SQL.format(geom="geom" if full_geometry else "geom_simple")
    with engine().connect() as conn:
        known = set(conn.execute(text("SELECT id FROM boundary_sets")).scalars())
        if set_id is not None and set_id not in known:
            raise InvalidParameter(
                f"Unknown boundary set '{set_id}'; known sets: {', '.join(sorted(known))}."
            )
        frame = gpd.read_postgis(
            text(sql),
            conn,
            geom_col="geom",
            params={"sets": [set_id] if set_id else None, "levels": list(levels)},
        )
    return frame.rename_geometry("geometry")


def municipalities(set_id: str | None = None, *, full_geometry: bool = False) -> gpd.GeoDataFrame:
    """The municipios (level 2) of a boundary set, or of each country's default set, with their geometry."""
    return _units(set_id, (2,), full_geometry)


def indicator(code: str, set_id: str | None = None, *, full_geometry: bool = False) -> gpd.GeoDataFrame:
    """One indicator's values (direct, or carried through the SLV crosswalk) joined to their units' geometry.

    Columns: pcode, name, country, level, boundary_set, value, period, flags, geometry. Department-level
    indicators come on level-1 units.
    """
    with engine().connect() as conn:
        rows = indicators.values(conn, code, set_id=set_id)
    values = pd.DataFrame(
        rows, columns=["pcode", "name", "country", "level", "boundary_set", "value", "period", "flags"]
    )
    geo = _units(set_id, (1, 2), full_geometry)[["boundary_set_id", "pcode", "geometry"]]
    merged = values.merge(
        geo.rename(columns={"boundary_set_id": "boundary_set"}), on=["boundary_set", "pcode"], how="left"
    )
    return gpd.GeoDataFrame(merged, geometry="geometry", crs=geo.crs)


def crosswalk(from_set: str = "slv-2021-distritos", to_set: str = "slv-2024-municipios") -> pd.DataFrame:
    """The crosswalk between two boundary sets: each (from_pcode, to_pcode) pair with the share of area each
    way (El Salvador: the 262 distritos of 2021 in the 44 municipios of 2024)."""
    with engine().connect() as conn:
        rows = conn.execute(
            text(
                "SELECT from_pcode, to_pcode, share_of_from, share_of_to FROM crosswalk "
                "WHERE from_set = :f AND to_set = :t ORDER BY from_pcode, to_pcode"
            ),
            {"f": from_set, "t": to_set},
        ).all()
    return pd.DataFrame(rows, columns=["from_pcode", "to_pcode", "share_of_from", "share_of_to"])


def storms(names_years: Iterable[tuple[str, int]] | None = None) -> gpd.GeoDataFrame:
    """Storm tracks (EPSG:4326) with their peak, time span and number of fixes; all storms, or the given
    (name, year) pairs, e.g. [("Eta", 2020), ("Iota", 2020)] (names case-insensitive)."""
    pairs = list(names_years) if names_years is not None else None
    params: dict[str, Any] = {
        "names": [n for n, _ in pairs] if pairs is not None else None,
        "years": [int(y) for _, y in pairs] if pairs is not None else None,
    }
    with engine().connect() as conn:
        frame = gpd.read_postgis(text(_STORMS_SQL), conn, geom_col="track", params=params)
    return frame.rename_geometry("geometry")


def wind_raster() -> Path:
    """The Eta/Iota maximum-wind GeoTIFF (kt) under the raster folder, modelled by the hazard loader when
    missing (from the pinned storm file: cache, mirror or upstream)."""
    settings = get_settings()
    source = load_manifest(settings.manifest)[HURRICANE_SOURCE]
    csv = source.first("csv")
    stored = settings.raster_dir / f"eta-iota-2020-max-wind-{csv.sha256[:12]}.tif"
    if stored.exists():
        return stored
    fixes = read_dplyr_storms(Resolver(settings).resolve(source)[csv.name])
    fixes = fixes[~fixes.duplicated(["storm_id", "time"])]  # as the loader does: first fix of an hour
    return eta_iota_raster(fixes, settings.raster_dir, csv.sha256)


def sensitivity(
    profile: str | Profile = DEFAULT_PROFILE, method: str = "sobol", set_id: str | None = None
) -> pd.DataFrame:
    """How much each weight moves the ranking, one row per factor (Sobol' indices or one-at-a-time rank
    changes), stored with the profile's run so a second call is a read."""
    p = load_profile(profile)
    run = run_id(p, set_id)
    result = run_sensitivity(engine(), p, run, method)
    return pd.DataFrame(result["factors"]).set_index("factor")


def default_sets() -> list[str]:
    """The current boundary set of each country."""
    with engine().connect() as conn:
        return scoring_data.default_sets(conn)
