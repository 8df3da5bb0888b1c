"""Zonal means over every municipio of GTM, SLV and HND: exactextract (app.zonal) against rasterstats.

Run: .venv/bin/python benchmarks/zonal.py [--raster PATH | --synthetic] [--repeat N]

Both methods run side by side in one process on the same raster and polygons; prints the best-of-N time
of each, their ratio, and how far the means differ (rasterstats counts whole cells whose centre falls
inside a polygon, exactextract weights every cell by the fraction covered). Without --raster the Eta
(November 2020) wind raster is built from the mirror's HURDAT2 fixes, as `raices load hurdat2-dplyr` does.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
from affine import Affine
from exactextract import exact_extract
from exactextract.raster import RasterioRasterSource
from rasterstats import zonal_stats as rs_zonal_stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.settings import Settings
from app.zonal import zonal_stats

GTM_NOT_MUNICIPIOS = {0, 4000}  # the lakes Amatitlán and Atitlán, and Belice
SLV_WATER_BODIES = {"SV0399", "SV1099", "SV1298", "SV1299"}


def load_municipios(mirror: Path) -> gpd.GeoDataFrame:
    """All municipios (GTM 340, SLV 262 distritos, HND 298) from the mirror, in EPSG:4326."""
    gtm = gpd.read_file(mirror / "boundaries/gtm-minfin/munis.json").set_crs("EPSG:4326")
    gtm = gtm[~gtm["id"].astype(int).isin(GTM_NOT_MUNICIPIOS)]
    slv = gpd.read_file(
        mirror / "boundaries/slv-codab-2021/slv_admbnda_adm2_gadm_20210204.shp", encoding="utf-8"
    )
    slv = slv[~slv["ADM2_PCODE"].isin(SLV_WATER_BODIES)]
    hnd = gpd.read_file(mirror / "boundaries/hnd-a2sit/HND.geojson")
    parts = [
        gpd.GeoDataFrame({"pcode": "GT" + gtm["id"].astype(int).map("{:04d}".format)}, geometry=gtm.geometry),
        gpd.GeoDataFrame({"pcode": slv["ADM2_PCODE"]}, geometry=slv.geometry.to_crs("EPSG:4326")),
        gpd.GeoDataFrame(
            {"pcode": "HN" + hnd["adm2_source_code"].str.replace(r"\D", "", regex=True)},
            geometry=hnd.geometry,
        ),
    ]
    munis = gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), crs="EPSG:4326")
    invalid = ~munis.is_valid
    munis.loc[invalid, "geometry"] = munis.geometry[invalid].buffer(0)
    return munis


def synthetic_wind(path: Path) -> Path:
    """A smooth radial field (m/s) centred on 15°N 86°W, 0.02° cells over 92.5–83°W, 12.5–18.5°N."""
    res, west, east, south, north = 0.02, -92.5, -83.0, 12.5, 18.5
    width, height = round((east - west) / res), round((north - south) / res)
    lon = west + res * (np.arange(width) + 0.5)
    lat = north - res * (np.arange(height) + 0.5)
    x, y = np.meshgrid(lon, lat)
    dist = np.hypot((x + 86.0) * np.cos(np.radians(15.0)), y - 15.0)
    # a vortex-like profile with a ripple so that zones see gradients, not plateaus
    wind = 8.0 + 50.0 * np.exp(-((dist / 1.5) ** 2)) + 3.0 * np.sin(3.0 * x) * np.cos(2.0 * y)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=width,
        height=height,
        count=1,
        dtype="float32",
        crs="EPSG:4326",
        transform=Affine(res, 0, west, 0, -res, north),
        nodata=-9999.0,
    ) as ds:
        ds.write(wind.astype("float32"), 1)
    return path


def eta_wind(mirror: Path, path: Path) -> Path:
    """Eta's lifetime maximum wind (kt) over the Central America grid, from the mirrored storms CSV."""
    from app.hazards.hurdat import read_dplyr_storms
    from app.hazards.wind import CENTRAL_AMERICA, storm_max_wind_kt, write_geotiff

    fixes = read_dplyr_storms(mirror / "hazards" / "hurdat2-dplyr" / "storms.csv")
    eta = fixes[fixes["storm_id"] == "ETA-2020"].drop_duplicates(["storm_id", "time"])
    return write_geotiff(storm_max_wind_kt(eta, CENTRAL_AMERICA), CENTRAL_AMERICA, path, storm="ETA-2020")


def best_of(repeat: int, run: Callable[[], object]) -> tuple[float, object]:
    """The shortest wall time of `repeat` runs, and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    """Time both methods on the same inputs and print the comparison."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--raster", type=Path, help="a GeoTIFF; default: the Eta 2020 wind field from the mirror"
    )
    parser.add_argument("--synthetic", action="store_true", help="use a synthetic radial field instead")
    parser.add_argument("--repeat", type=int, default=5, help="runs per method; the best is kept")
    parser.add_argument("--mirror", type=Path, default=Settings().data_mirror, help="the geodata mirror")
    args = parser.parse_args()
    if args.mirror is None:
        parser.error("no geodata mirror: pass --mirror or set RAICES_DATA_MIRROR")

    munis = load_municipios(args.mirror)
    with tempfile.TemporaryDirectory(prefix="raices-bench-") as tmp:
        if args.raster:
            raster = args.raster
        elif args.synthetic:
            raster = synthetic_wind(Path(tmp) / "synthetic_wind.tif")
        else:
            raster = eta_wind(args.mirror, Path(tmp) / "eta_wind.tif")
        with rasterio.open(raster) as ds:
            shape, res, crs = (ds.height, ds.width), ds.res, ds.crs
            nodata = ds.nodata
        zones = munis if crs is None or munis.crs == crs else munis.to_crs(crs)

        t_ee, ee = best_of(args.repeat, lambda: zonal_stats(raster, munis, ("mean",)))
        t_rs, rs = best_of(
            args.repeat,
            lambda: rs_zonal_stats(
                zones.geometry, str(raster), stats=["mean"], all_touched=False, nodata=nodata
            ),
        )
        with rasterio.open(raster) as ds, warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            spherical = exact_extract(
                RasterioRasterSource(ds, 1),
                zones,
                ["mean(coverage_weight=area_spherical_m2)"],
                output="pandas",
            )["mean"].to_numpy()

    assert isinstance(ee, pd.DataFrame) and isinstance(rs, list)
    frame = pd.DataFrame(
        {
            "country": munis["pcode"].str[:2].to_numpy(),
            "exact": ee["mean"].to_numpy(),
            "rstats": np.array([r["mean"] if r["mean"] is not None else np.nan for r in rs], dtype=float),
            "spherical": spherical,
        },
        index=munis["pcode"],
    )
    both = frame.dropna(subset=["exact", "rstats"])
    both = both.assign(abs=(both["exact"] - both["rstats"]).abs())
    both = both.assign(rel=both["abs"] / both["exact"].abs())

    kind = (
        str(args.raster)
        if args.raster
        else "SYNTHETIC radial wind field"
        if args.synthetic
        else "Eta 2020 maximum wind (Holland model, app.hazards.wind) from the mirror's HURDAT2 fixes"
    )
    print(f"raster  : {kind}")
    print(f"          {shape[1]}×{shape[0]} cells of {res[0]:g}×{res[1]:g}, {crs}")
    print(f"zones   : {len(munis)} municipios ({frame['country'].value_counts().sort_index().to_dict()})")
    print(f"repeats : best of {args.repeat}\n")
    print(f"{'method':<34}{'best (s)':>10}{'ms/zone':>10}{'ratio':>8}")
    for name, seconds in (
        ("exactextract (app.zonal)", t_ee),
        ("rasterstats all_touched=False", t_rs),
    ):
        print(f"{name:<34}{seconds:>10.3f}{1000 * seconds / len(munis):>10.3f}{seconds / t_ee:>8.2f}")
    print(f"\nrasterstats / exactextract time ratio: {t_rs / t_ee:.2f}")

    print(f"\nmean, exactextract vs rasterstats ({len(both)} zones with a value from both)")
    print(f"{'country':<9}{'zones':>6}{'max |Δ|':>10}{'max rel':>10}{'median rel':>12}  worst")
    for country, group in [*both.groupby("country"), ("all", both)]:
        worst = group["rel"].idxmax()
        print(
            f"{country:<9}{len(group):>6}{group['abs'].max():>10.4f}{group['rel'].max():>10.2%}"
            f"{group['rel'].median():>12.3%}  {worst}"
        )
    missing = frame.index[frame["rstats"].isna() & frame["exact"].notna()]
    print(f"zones with no cell centre inside (rasterstats gives None): {len(missing)} {list(missing[:8])}")
    lat = (frame["spherical"] - frame["exact"]).abs() / frame["exact"].abs()
    print(f"latitude (cell-area) weighting would change exactextract's means by at most {lat.max():.3%}")


if __name__ == "__main__":
    main()
