"""Scoring speed: one scoring run and a 1,000-draw rank-uncertainty run on the real data (from the database
in use) and on a synthetic 50,000-municipio matrix, side by side; prints times and how they scale.

Then the targets of issue 14, printed side by side as ratios (measured / target, ≤ 1 meets it):
- the whole compute of a new scenario on a synthetic grid of `--units` square municipios (three countries,
  departments of 10 × 10 cells): `service.compute_on` with the map's 100 draws (scoring, survey treatment,
  rank uncertainty, Gi* hot spots with 9,999 permutations, zones and the rows to store), median of
  `--repeat`, against 3 s; the grid's contiguity and areas (built once per data epoch) are timed apart, and
  so is the epoch's first scenario: as `app.scoring.data.load` does, the synthetic matrix carries a
  per-epoch `WeightFree` memo (the normalised and filled matrices of each normaliser and missing treatment,
  the department-constant cells, the survey treatment), which the first scenario of a treatment fills and
  the next ones (the map's slider moves: new weights) reuse;
- with `--requests N`, the whole request path as the map uses it: POST /v1/scores (through `create_app`, on
  the database in use) with a profile never scored before (a new hash: data read, scoring, the map's 100
  draws, hot spots, zones and inserts) and the same request again (cached), medians of N against 0.3 s and
  0.05 s. The first new scenario of the process (cold: the values, boundaries and contiguity of the data
  epoch are read and built then) is printed apart.

Run: .venv/bin/python benchmarks/scoring.py [--draws 1000] [--units 50000] [--repeat 3] [--requests 5]
Needs a loaded database (`make run` once, or DATABASE_URL) for the real-data rows; without one it says so
and runs the synthetic rows only.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from app.scoring.data import ScoringData
from app.scoring.engine import Matrix, WeightFree, score
from app.scoring.profile import Profile
from app.scoring.service import (
    DEFAULT_PROFILE,
    SCORE_COLUMNS,
    compute_on,
    geography_of,
    profile_by_id,
)
from app.scoring.uncertainty import rank_uncertainty

TARGET_NEW_S, TARGET_CACHED_S, TARGET_SYNTHETIC_S = 0.3, 0.05, 3.0
MAP_DRAWS = 100  # what the map posts


def best_of(repeat: int, run: Callable[[], object]) -> float:
    """The best wall time of `repeat` runs, in seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def real_matrix(profile: Profile) -> Matrix | None:
    """The default profile's matrix from the database in use, or None when there is none."""
    try:
        from app.db import make_engine
        from app.scoring import data
        from app.settings import get_settings

        engine = make_engine(get_settings())
        with engine.connect() as conn:
            matrix = data.load(conn, profile, data.default_sets(conn)).matrix
        engine.dispose()
        matrix.memo = None  # each timed run normalises anew (no per-epoch memo), as in the earlier figures
        return matrix
    except Exception as exc:  # no database: say so and go on with the synthetic rows
        print(f"(no real data: {type(exc).__name__}: {str(exc).splitlines()[0][:100]})")
        return None


def synthetic_matrix(profile: Profile, units: int, seed: int = 7) -> Matrix:
    """A random matrix with the profile's indicators, 10 % missing, three countries."""
    rng = np.random.default_rng(seed)
    codes = [i.code for i in profile.indicators()]
    values = rng.lognormal(size=(units, len(codes)))
    values[rng.random(values.shape) < 0.1] = np.nan
    index = pd.Index([f"u{i}" for i in range(units)])
    country = pd.Series(rng.choice(["GTM", "SLV", "HND"], size=units), index=index)
    return Matrix(pd.DataFrame(values, index=index, columns=codes), country, dict.fromkeys(codes, 1))


def main() -> None:
    """Time scoring and uncertainty on real and synthetic data and print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--units", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--requests", type=int, default=0, help="time N new and N cached POST /v1/scores")
    args = parser.parse_args()
    profile = profile_by_id(DEFAULT_PROFILE).model_copy(update={"draws": args.draws})
    rows = []
    inputs = [("real", real_matrix(profile)), ("synthetic", synthetic_matrix(profile, args.units))]
    for label, matrix in inputs:
        if matrix is None:
            continue
        n, k = matrix.values.shape
        nominal = score(matrix, profile)
        t_score = best_of(args.repeat, lambda m=matrix: score(m, profile))
        t_mc = best_of(args.repeat, lambda m=matrix, nom=nominal: rank_uncertainty(m, profile, nom))
        rows.append((label, n, k, t_score, t_mc))
    print(
        f"profile {profile.id} ({len(profile.indicators())} indicators), {args.draws} draws, best of "
        f"{args.repeat}\n"
    )
    print(f"{'data':<10}{'units':>8}{'indic.':>8}{'score (s)':>11}{'MC (s)':>9}{'µs/unit/draw':>14}")
    for label, n, k, ts, tm in rows:
        print(f"{label:<10}{n:>8}{k:>8}{ts:>11.3f}{tm:>9.3f}{1e6 * tm / (n * max(args.draws, 1)):>14.3f}")
    if len(rows) == 2:
        (_, n0, _, s0, m0), (_, n1, _, s1, m1) = rows
        print(
            f"\nscaling, synthetic over real: units ×{n1 / n0:.1f}, score time ×{s1 / s0:.1f}, "
            f"Monte Carlo time ×{m1 / m0:.1f} (linear would be ×{n1 / n0:.1f})"
        )
    load = os.getloadavg()[0]
    targets = [synthetic_compute(args.units, args.repeat)]
    if args.requests:
        targets += request_path(args.requests)
    print(
        f"\nissue 14 targets (ratio = measured / target; ≤ 1 meets it), {os.cpu_count()} cores, load average "
        f"{load:.1f} at the start and {os.getloadavg()[0]:.1f} at the end:"
    )
    print(f"{'':<44}{'measured (s)':>14}{'target (s)':>12}{'ratio':>8}")
    for label, measured, target in targets:
        print(f"{label:<44}{measured:>14.3f}{target:>12.2f}{measured / target:>8.2f}")


def synthetic_grid(units: int, seed: int = 7) -> tuple[ScoringData, gpd.GeoDataFrame]:
    """A grid of about `units` 0.02° squares: three countries in column bands, departments of 10 × 10 cells,
    the default profile's indicators (lognormal, 10 % missing, one period), keys "syn/u<i>"."""
    cols = max(3, round((units * 1.25) ** 0.5))
    rows = -(-units // cols)
    r, c = np.divmod(np.arange(units), cols)
    keys = pd.Index([f"syn/u{i}" for i in range(units)])
    country = np.array(["GTM", "HND", "SLV"])[np.minimum(3 * c // cols, 2)]
    parent = [f"D{a}-{b}" for a, b in zip(r // 10, c // 10, strict=True)]
    frame = gpd.GeoDataFrame(
        {"key": keys},
        geometry=shapely.box(-92 + 0.02 * c, 13 + 0.02 * r, -92 + 0.02 * (c + 1), 13 + 0.02 * (r + 1)),
        crs="EPSG:4326",
    ).set_index("key", drop=False)
    profile = profile_by_id(DEFAULT_PROFILE)
    matrix = synthetic_matrix(profile, units, seed)
    matrix.values.index = matrix.country.index = keys
    matrix.country[:] = country
    matrix.department = pd.Series(parent, index=keys)
    matrix.memo = WeightFree()  # per data epoch, as app.scoring.data.load gives it
    table = pd.DataFrame(
        {
            "boundary_set_id": "syn",
            "pcode": [k.split("/", 1)[1] for k in keys],
            "name": "",
            "country": country,
            "parent_pcode": parent,
        },
        index=keys,
    )
    periods = pd.DataFrame("2020", index=keys, columns=matrix.values.columns, dtype=object)
    assert rows * cols >= units
    return ScoringData(matrix, periods, table), frame


def synthetic_compute(units: int, repeat: int) -> tuple[str, float, float]:
    """Median time of the whole compute of a new scenario (100 draws) on the synthetic grid."""
    import statistics

    data, frame = synthetic_grid(units)
    start = time.perf_counter()
    geo = geography_of(frame)
    built = time.perf_counter() - start
    times = []
    for k in range(-1, max(repeat, 1)):  # k = -1: the epoch's first scenario, which fills the memo
        profile = profile_by_id(DEFAULT_PROFILE).model_copy(
            update={"draws": MAP_DRAWS, "migration_weight": 0.3 + k * 1e-6}
        )
        start = time.perf_counter()
        result = compute_on(data, profile, geo)
        times.append(time.perf_counter() - start)
    first = times.pop(0)
    median = statistics.median(times)
    at = SCORE_COLUMNS.index("hotspot")
    hot = sum(r[at] == "hot" for r in result["scores"])
    print(
        f"\nsynthetic grid, {units:,} units: contiguity and areas (once per data epoch) {built:.1f} s; the "
        f"epoch's first scenario (fills the weight-free memo) {first:.2f} s; whole compute of a new scenario "
        f"({MAP_DRAWS} draws, 9,999 permutations) median {median:.2f} s of {len(times)} ({hot} hot spots, "
        f"{len(result['zones'])} zones)"
    )
    return (f"whole compute, {units:,} synthetic units", median, TARGET_SYNTHETIC_S)


def request_path(n: int) -> list[tuple[str, float, float]]:
    """Median wall time of POST /v1/scores with a new profile (new hash) and with the same one again."""
    import statistics

    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import get_settings

    settings = get_settings().model_copy(update={"rate_limit_per_minute": 0})
    spec = profile_by_id(DEFAULT_PROFILE).model_dump(mode="json")
    new, cached = [], []
    with TestClient(create_app(settings)) as client:
        for k in range(n + 1):  # the first is the process's cold one
            body = {
                **spec,
                "id": "bench-scenario",
                "draws": MAP_DRAWS,
                "migration_weight": 0.3 + k * 1e-6 + time.time() % 1e-3,
            }
            for times in (new, cached):  # interleaved: new, then the same again
                start = time.perf_counter()
                r = client.post("/v1/scores", json=body, params={"limit": 20})
                times.append(time.perf_counter() - start)
                assert r.status_code == 200, r.text
    cold = new.pop(0)
    cached.pop(0)
    m_new, m_cached = statistics.median(new), statistics.median(cached)
    print(f"\nPOST /v1/scores, {n} scenarios of the default profile with {MAP_DRAWS} draws (the map's):")
    print(f"  first new scenario of the process (cold, reads the data epoch): {cold:.3f} s")
    print(f"  new hash: median {m_new:.3f} s (min {min(new):.3f}, max {max(new):.3f})")
    print(f"  cached:   median {m_cached:.3f} s (min {min(cached):.3f}, max {max(cached):.3f})")
    return [
        ("POST /v1/scores, new scenario (median)", m_new, TARGET_NEW_S),
        ("POST /v1/scores, cached (median)", m_cached, TARGET_CACHED_S),
    ]


if __name__ == "__main__":
    main()
