"""Score runs: compute a profile on the current data once, persist it, and read it back with plain SQL."""

from __future__ import annotations

import functools
import gc
import json
import time
import warnings
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pandas as pd
import psycopg
from sqlalchemy import Connection, Engine, text

from app.cache import epoch_scope
from app.db import transaction
from app.errors import InvalidParameter, NotFound
from app.scoring import data as scoring_data
from app.scoring.engine import score, survey_memo
from app.scoring.profile import PILLARS, Profile
from app.scoring.uncertainty import rank_uncertainty, rank_variance_shares, sensitivity
from app.settings import Settings

if TYPE_CHECKING:
    import geopandas as gpd
    import libpysal

# geopandas, libpysal (scikit-learn through libpysal.graph) and scikit-learn for empirical weights are
# imported by the functions that compute a run: the API, the CLI and the job worker import this module for
# profiles and stored runs, and start without them

DEFAULT_PROFILE = "root-causes-2021"
RUN_LOCK = 7_242_025
RUN_TTL_S = 60.0  # how long readers of the default run (tiles, OGC items) trust a looked-up run id
_runs: weakref.WeakKeyDictionary[Engine, tuple[float, int]] = weakref.WeakKeyDictionary()


def bundled_profiles() -> dict[str, Profile]:
    """The profiles shipped with the service, by id (read from the package once per process)."""
    return dict(_bundled())


@functools.cache
def _bundled() -> dict[str, Profile]:
    out = {}
    for entry in resources.files("app.scoring").joinpath("profiles").iterdir():
        if entry.name.endswith(".json"):
            p = Profile.model_validate(json.loads(entry.read_text(encoding="utf-8")))
            out[p.id] = p
    return out


@functools.cache
def _bundled_hashes() -> frozenset[str]:
    return frozenset(p.hash() for p in _bundled().values())


def profile_by_id(profile_id: str) -> Profile:
    """A bundled profile, or NotFound naming the ones there are."""
    profiles = bundled_profiles()
    if profile_id not in profiles:
        raise NotFound(
            f"No profile '{profile_id}'; profiles: {', '.join(sorted(profiles))}. "
            "Post your own to /v1/scores."
        )
    return profiles[profile_id]


def _none(value: Any) -> Any:
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float | np.floating) and not np.isfinite(value):
        return None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


@dataclass(frozen=True)
class Geography:
    """What scoring needs of the units' boundaries and does not depend on the scores: their geometry (indexed
    by "set/pcode"), queen contiguity and equal-area areas in km². Built once per data epoch (``geography``)."""

    frame: gpd.GeoDataFrame
    w: libpysal.weights.W
    area_km2: pd.Series


def geography(conn: Connection, set_ids: list[str]) -> Geography:
    """The sets' Geography, cached per engine and data epoch (the boundaries only change with the epoch)."""
    version = scoring_data.data_version(conn)
    return scoring_data.epoch_cached(
        conn, version, ("geography", *set_ids), lambda: _geography(conn, set_ids)
    )


def _geography(conn: Connection, set_ids: list[str]) -> Geography:
    import geopandas as gpd

    frame = (
        gpd.read_postgis(
            text(
                "SELECT boundary_set_id || '/' || pcode AS key, geom FROM admin_units "
                "WHERE level = 2 AND boundary_set_id = ANY(:sets)"
            ),
            conn,
            geom_col="geom",
            params={"sets": set_ids},
        )
        .rename_geometry("geometry")
        .set_index("key", drop=False)
    )
    return geography_of(frame)


def geography_of(frame: gpd.GeoDataFrame) -> Geography:
    """Contiguity and areas of units with a unique "key" column (the index) and a geometry."""
    from app.scoring.spatial import contiguity, zone_areas_km2

    with warnings.catch_warnings():  # islands (Guanaja, Utila, Amapala) are expected, not news
        warnings.filterwarnings("ignore", message="The weights matrix is not fully connected")
        w = contiguity(frame, id_column="key")
    _ = w.sparse  # built now, once per epoch (libpysal keeps it), not in the first scenario's hot spots
    return Geography(frame, w, zone_areas_km2(frame, id_column="key"))


def compute(conn: Connection, profile: Profile, set_ids: list[str]) -> dict[str, Any]:
    """Score, rank uncertainty, hotspots and zones for a profile: rows ready to store ("scores": one tuple per
    unit in SCORE_COLUMNS order; "zones": one dict per zone; "fit")."""
    d = scoring_data.load(conn, profile, set_ids)
    fit_vintage = _vintage(d, profile) if profile.empirical is not None else None
    return compute_on(d, profile, geography(conn, set_ids), fit_vintage)


def compute_on(
    d: scoring_data.ScoringData,
    profile: Profile,
    geo_units: Geography,
    fit_vintage: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """Score, rank uncertainty, hotspots and zones of data already read, on its units' Geography (no database)."""
    with gc_paused():
        return _compute_on(d, profile, geo_units, fit_vintage)


@contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off for the block. A run allocates some 10⁵–10⁶ small acyclic objects (rows,
    dicts, JSON); with the collector on, their allocation keeps triggering full collections that walk the
    whole heap (geometries, cached data): on 5,000 synthetic units the compute took 2.5–3.9 s with it on
    and 0.9–2.5 s with it off. Reference counting still frees everything; the collector resumes after."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _compute_on(
    d: scoring_data.ScoringData,
    profile: Profile,
    geo_units: Geography,
    fit_vintage: dict[str, list[str]] | None,
) -> dict[str, Any]:
    from app.scoring import empirical
    from app.scoring.spatial import hotspots, zones

    fit: dict[str, Any] | None = None
    with survey_memo(d.matrix):
        if profile.empirical is not None:
            fitted = empirical.run(d.matrix, profile)
            nominal, unc = fitted.nominal, fitted.uncertainty
            fit = {"countries": fitted.fits, "vintage": fit_vintage}
        else:
            nominal = score(d.matrix, profile)
            unc = rank_uncertainty(d.matrix, profile, nominal)
    geo = geo_units.frame.loc[nominal.index]
    geo["score"] = nominal["score"].where(nominal["ranked"])
    # hot spots read the local score: what varies within departments (engine.department_constant)
    geo["local_score"] = nominal["local_score"].where(nominal["ranked"])
    geo["country"] = d.units["country"]
    geo["pillar"] = nominal["pillar"]
    group = "country" if profile.scope == "country" else None
    hot = hotspots(
        geo,
        "local_score",
        group_column=group,
        id_column="key",
        seed=profile.seed,
        permutations=HOTSPOT_PERMUTATIONS,
        w=geo_units.w,
    )
    members = (nominal["tier"] == 1).fillna(False) | (hot["label"] == "hot")
    geo["group"] = geo["country"] if group else "ALL"
    zone_of, zone_table = zones(
        geo,
        members.astype(bool),
        geo_units.w,
        group_column="group",
        id_column="key",
        area_km2=geo_units.area_km2,
    )
    rows = _score_rows(d, nominal, unc.reindex(nominal.index), hot, zone_of)
    records = zone_table.to_dict("records")
    # each zone's country: its first member's (one lookup for all zones, not one .at per zone)
    countries = geo["country"].reindex([z["members"][0] for z in records]).to_numpy(dtype=object).tolist()
    zone_rows = [
        {
            "zone": z["zone"],
            "country": str(country),
            "units": int(z["units"]),
            "members": [str(m).split("/", 1)[1] for m in z["members"]],
            "mean_score": _none(z["mean_score"]),
            "max_score": _none(z["max_score"]),
            "area_km2": float(z["area_km2"]),
            "pillar": _none(z.get("pillar")),
            "keys": list(z["members"]),
        }
        for z, country in zip(records, countries, strict=True)
    ]
    return {"scores": rows, "zones": zone_rows, "fit": fit}


HOTSPOT_PERMUTATIONS = 9999
SCORE_COLUMNS = (
    "boundary_set_id", "pcode", "country", "score", "ranked", "rank", "rank_region", "tier", "pillar",
    "pillar_secondary", "pillar_scores", "pillar_ranks", "migration", "coverage", "driver_coverage",
    "not_ranked_reason", "top_indicators", "vintage", "rank_median", "rank_lo", "rank_hi", "p_top",
    "tier_stability", "robust", "hotspot", "hotspot_confidence", "gi_z", "zone",
)  # fmt: skip


def _score_rows(
    d: scoring_data.ScoringData, n: pd.DataFrame, u: pd.DataFrame, hot: pd.DataFrame, zone_of: pd.Series
) -> list[tuple[Any, ...]]:
    """One tuple per unit (SCORE_COLUMNS order), column by column: missing and non-finite values become None,
    numpy scalars Python ones, the pillar and indicator details JSON text."""
    units = d.units.loc[n.index]
    cols: dict[str, list[Any]] = {
        "boundary_set_id": _py(units["boundary_set_id"]),
        "pcode": _py(units["pcode"]),
        "country": _py(units["country"]),
        "ranked": [bool(v) for v in n["ranked"].to_numpy()],
        "coverage": [float(v) for v in n["coverage"].to_numpy()],
        "driver_coverage": [float(v) for v in n["driver_coverage"].to_numpy()],
        "hotspot": [str(v) for v in hot["label"].reindex(n.index).to_numpy()],
        "vintage": _vintages(d, n.index),
    }
    for name in ("score", "rank", "rank_region", "tier", "pillar", "pillar_secondary", "migration"):
        cols[name] = _py(n[name])
    cols["not_ranked_reason"] = _py(n["not_ranked_reason"])
    for name in ("rank_median", "rank_lo", "rank_hi", "p_top", "tier_stability", "robust"):
        cols[name] = _py(u[name]) if name in u.columns else [None] * len(n)
    hot = hot.reindex(n.index)
    cols["hotspot_confidence"] = _py(hot["confidence"])
    cols["gi_z"] = _py(hot["gi_z"])
    cols["zone"] = _py(zone_of.reindex(n.index))
    pillar_scores = [_py(n[f"pillar_{p}"]) for p in PILLARS]
    pillar_ranks = [_py(n[f"pillar_rank_{p}"]) for p in PILLARS]
    cols["pillar_scores"] = _json_each(
        [dict(zip(PILLARS, v, strict=True)) for v in zip(*pillar_scores, strict=True)], "{}"
    )
    cols["pillar_ranks"] = _json_each(
        [dict(zip(PILLARS, v, strict=True)) for v in zip(*pillar_ranks, strict=True)], "{}"
    )
    cols["top_indicators"] = _json_each(n["top_indicators"].tolist(), "[]")
    return list(zip(*(cols[c] for c in SCORE_COLUMNS), strict=True))


def _json(value: Any) -> str:
    """JSON text as ``json.dumps`` of ``_none``-cleaned values gives: NaN and ±inf (and pd.NA) become null."""
    return orjson.dumps(value, default=_none, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def _json_each(values: list[Any], brackets: str) -> list[str]:
    """``[_json(v) for v in values]`` from one serialisation of the whole list, split between its items: for
    items that are all objects ("{}") or all arrays ("[]") with no such bracket inside their own text (flat
    objects of numbers, null and plain strings; arrays of those). Any other split falls back to one
    serialisation per item."""
    if not values:
        return []
    opening, closing = brackets[0], brackets[1]
    body = _json(values)[1:-1]
    parts = body.split(f"{closing},{opening}")
    if len(parts) != len(values) or not (body.startswith(opening) and body.endswith(closing)):
        return [_json(v) for v in values]
    parts[0] = parts[0][1:]
    parts[-1] = parts[-1][:-1]
    return [f"{opening}{p}{closing}" for p in parts]


def _py(values: pd.Series) -> list[Any]:
    """A column as Python values: None for missing or non-finite numbers (as ``_none`` does, per cell)."""
    if values.dtype == np.float64:
        array = values.to_numpy()
        out = array.astype(object)  # Python floats
        out[~np.isfinite(array)] = None
        return list(out.tolist())
    if pd.api.types.is_integer_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype):
        return list(values.to_numpy(dtype=object, na_value=None).tolist())  # Python ints and bools
    if pd.api.types.is_string_dtype(values.dtype) and values.dtype != object:
        return list(values.to_numpy(dtype=object, na_value=None).tolist())  # Python str
    array = values.to_numpy(dtype=object, copy=True)  # a copy: the column itself is left as it is
    array[pd.isna(array)] = None
    if set(map(type, array)) <= {str, int, bool, type(None)}:  # nothing left for _none to change
        return list(array.tolist())
    return [_none(v) for v in array]


def _vintages(d: scoring_data.ScoringData, keys: pd.Index) -> list[list[str]]:
    """Per unit, the sorted distinct periods of the values it has (units with the same set share one list);
    kept in the matrix's weight-free memo when it has one (they depend on the data and the indicators)."""
    if d.matrix.memo is None:
        lists, which = _vintage_patterns(d, keys)
    else:
        key = ("vintages", tuple(d.matrix.values.columns), tuple(keys))
        lists, which = d.matrix.memo.get(key, lambda: _vintage_patterns(d, keys))
    return [list(lists[i]) for i in which.tolist()]


def _vintage_patterns(d: scoring_data.ScoringData, keys: pd.Index) -> tuple[list[list[str]], np.ndarray]:
    """The distinct lists of periods and, per unit, which one is its own."""
    has = d.matrix.values.loc[keys].notna().to_numpy()
    periods = d.periods.loc[keys].to_numpy(dtype=object)[has]
    codes, labels = pd.factorize(pd.Series(periods, dtype=object).astype(str), sort=True)
    present = np.zeros((len(keys), max(len(labels), 1)), dtype=bool)
    present[np.nonzero(has)[0], codes] = True
    patterns, which = np.unique(present, axis=0, return_inverse=True)
    lists = [[str(labels[j]) for j in np.flatnonzero(pattern)] for pattern in patterns]
    return lists, which.ravel()


def _vintage(d: scoring_data.ScoringData, profile: Profile) -> dict[str, list[str]]:
    """Per indicator of the profile, the periods of the values it was scored on."""
    return {
        i.code: sorted({str(v) for v in d.periods[i.code].dropna().unique()})
        for i in profile.indicators()
        if i.code in d.periods.columns
    }


def _lookups(engine: Engine, version: str) -> dict[str, Any]:
    """What a run lookup can reuse while the data version stands: the boundary sets and the ids of bundled
    profiles' runs. Every load that writes bumps the epoch in the version, which is read on every lookup (one
    primary-key read), so nothing here outlives the data it describes; a planner read costs that read and
    its own query."""
    lookups = epoch_scope(engine, "scoring.lookups", version)
    lookups.setdefault("runs", {})
    return lookups


def _find(conn: Connection, profile: Profile, version: str, set_ids: list[str]) -> int | None:
    found = conn.execute(
        text("SELECT id FROM score_runs WHERE profile_hash = :h AND data_version = :v AND sets = :s"),
        {"h": profile.hash(), "v": version, "s": sorted(set_ids)},
    ).scalar()
    return int(found) if found is not None else None


@dataclass(frozen=True)
class Retention:
    """How many stored runs of profiles that are not bundled (scenarios) to keep, and for how long."""

    max_runs: int
    max_age_hours: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Retention:
        return cls(settings.scenario_runs_max, settings.scenario_runs_max_age_hours)


def prune_scenarios(conn: Connection, retention: Retention, keep: int | None = None) -> int:
    """Delete the runs of profiles that are not bundled beyond the newest `max_runs` or older than
    `max_age_hours` (their scores and zones go with them), never the run `keep` nor a run a baseline points
    at (app/baselines.py); the number deleted. Runs of bundled profiles are kept, one per data epoch and set
    of boundaries."""
    bundled = [p.hash() for p in bundled_profiles().values()]
    return int(
        conn.execute(
            text("""
        WITH scenario AS (
            SELECT id, computed_at, row_number() OVER (ORDER BY computed_at DESC, id DESC) AS n
            FROM score_runs WHERE NOT (profile_hash = ANY(:bundled))
              AND id NOT IN (SELECT run_id FROM baselines))
        DELETE FROM score_runs WHERE id IN (
            SELECT id FROM scenario
            WHERE (n > :max_runs OR computed_at < now() - make_interval(secs => :age_s))
              AND id IS DISTINCT FROM :keep)"""),
            {
                "bundled": bundled,
                "max_runs": retention.max_runs,
                "age_s": retention.max_age_hours * 3600.0,
                "keep": keep,
            },
        ).rowcount
    )


def ensure_run(
    engine: Engine, profile: Profile, set_ids: list[str] | None = None, *, retention: Retention | None = None
) -> int:
    """The id of the stored run for this profile on the current data, computing it when missing. With a
    `retention`, storing a new run of a profile that is not bundled prunes the older scenario runs."""
    with engine.connect() as conn:
        version = scoring_data.data_version(conn)
        known = _lookups(engine, version)
        if "sets" not in known:
            known["default"] = scoring_data.default_sets(conn)
            known["sets"] = set(conn.execute(text("SELECT id FROM boundary_sets")).scalars())
        sets = sorted(set_ids or known["default"])
        unknown = [s for s in sets if s not in known["sets"]]
        if unknown:
            raise InvalidParameter(
                f"Unknown boundary sets {unknown}; known: {', '.join(sorted(known['sets']))}."
            )
        key = (profile.hash(), tuple(sets))
        run: int | None = known["runs"].get(key)
        if run is None:
            run = _find(conn, profile, version, sets)
            if run is not None and profile.hash() in _bundled_hashes():
                known["runs"][key] = run  # bundled runs are never pruned within an epoch
    if run is not None:
        return run
    with transaction(engine) as conn:
        conn.execute(
            text("SELECT pg_advisory_xact_lock(:k, hashtext(:h))"), {"k": RUN_LOCK, "h": profile.hash()}
        )
        run = _find(conn, profile, version, sets)  # computed meanwhile by another request
        if run is not None:
            return run
        started = time.perf_counter()
        result = compute(conn, profile, sets)
        run = int(
            conn.execute(
                text("""
            INSERT INTO score_runs (profile_id, profile_hash, data_version, sets, profile, computed_at, seconds, fit)
            VALUES (:id, :h, :v, :s, CAST(:p AS jsonb), :now, :sec, CAST(:fit AS jsonb)) RETURNING id"""),
                {
                    "id": profile.id,
                    "h": profile.hash(),
                    "v": version,
                    "s": sets,
                    "p": profile.model_dump_json(),
                    "now": datetime.now(UTC),
                    "sec": time.perf_counter() - started,
                    "fit": json.dumps(result["fit"]) if result["fit"] is not None else None,
                },
            ).scalar_one()
        )
        _store(conn, run, result, version)
        if retention is not None:
            prune_scenarios(conn, retention, keep=run)
    return run


def _store(conn: Connection, run: int, result: dict[str, Any], version: str) -> None:
    """The run's scores and zones by COPY. A zone's geometry is the union of its members' boundaries: unions
    not seen in this data epoch (`version`) are computed in one statement and kept (hex EWKB, per member set),
    since a moved slider mostly leaves the zones as they were."""
    driver = conn.connection.driver_connection  # psycopg 3, inside the run's transaction
    assert isinstance(driver, psycopg.Connection)
    cursor = driver.cursor()
    columns = ", ".join(("run_id", *SCORE_COLUMNS))
    with gc_paused(), cursor.copy(f"COPY scores ({columns}) FROM STDIN") as copy:
        for row in result["scores"]:
            copy.write_row((run, *row))
    zones = result["zones"]
    if not zones:
        return
    shapes = _zone_shapes(conn, version, [tuple(sorted(z["keys"])) for z in zones])
    with cursor.copy(
        "COPY score_zones (run_id, zone, country, units, members, mean_score, max_score, area_km2, pillar, geom) "
        "FROM STDIN"
    ) as copy:
        for z, shape in zip(zones, shapes, strict=True):
            copy.write_row(
                (run, z["zone"], z["country"], z["units"], z["members"], z["mean_score"], z["max_score"],
                 z["area_km2"], z["pillar"], shape)
            )  # fmt: skip


ZONE_SHAPES_KEPT = 2000  # member sets whose union is kept per data epoch (then the store starts afresh)


def _zone_shapes(conn: Connection, version: str, member_sets: list[tuple[str, ...]]) -> list[str | None]:
    """Per member set ("set/pcode" keys), the hex EWKB of ST_Multi(ST_CollectionExtract(ST_Union(geom), 3))
    of its units, from the epoch's store or computed (all missing ones in one statement)."""
    store: dict[tuple[str, ...], str | None] = scoring_data.epoch_cached(
        conn, version, ("zone_shapes",), dict
    )
    todo = list(dict.fromkeys(m for m in member_sets if m not in store))
    if todo and len(store) + len(todo) > ZONE_SHAPES_KEPT:
        store.clear()
        todo = list(dict.fromkeys(member_sets))
    if todo:
        keys = [k for members in todo for k in members]
        which = [i for i, members in enumerate(todo) for _ in members]
        found: dict[int, str | None] = dict(
            conn.execute(
                text("""
            SELECT m.i, encode(ST_AsEWKB(ST_Multi(ST_CollectionExtract(ST_Union(a.geom), 3))), 'hex')
            FROM unnest(CAST(:keys AS text[]), CAST(:which AS int[])) AS m(key, i)
            JOIN admin_units a ON a.boundary_set_id || '/' || a.pcode = m.key
            GROUP BY m.i"""),
                {"keys": keys, "which": which},
            ).all()
        )
        store.update({members: found.get(i) for i, members in enumerate(todo)})
    return [store[m] for m in member_sets]


def default_run(engine: Engine) -> int:
    """The default profile's run on the current data, looked up at most once per RUN_TTL_S: checking the data
    version costs more than serving a tile. After a load, readers may see the previous run for that long."""
    now = time.monotonic()
    cached = _runs.get(engine)
    if cached is not None and now - cached[0] < RUN_TTL_S:
        return cached[1]
    run = ensure_run(engine, profile_by_id(DEFAULT_PROFILE))
    _runs[engine] = (now, run)
    return run


def run_fit(engine: Engine, run: int) -> dict[str, Any] | None:
    """The stored fit of an empirical profile's run (None for a weighted profile)."""
    with engine.connect() as conn:
        fit = conn.execute(text("SELECT fit FROM score_runs WHERE id = :r"), {"r": run}).scalar()
    return dict(fit) if fit else None


def run_sensitivity(engine: Engine, profile: Profile, run: int, method: str = "sobol") -> dict[str, Any]:
    """Sensitivity of the ranking to each weight, computed once per run and method and stored with it."""
    if profile.empirical is not None:
        raise InvalidParameter(
            f"Profile {profile.id} is fitted, not weighted: weight sensitivity does not apply. Its cross-validated "
            f"figures and coefficients are at /v1/profiles/{profile.id}."
        )
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT sensitivity FROM score_runs WHERE id = :r"), {"r": run}).scalar()
        if stored and method in stored:
            return dict(stored[method])
        sets = list(conn.execute(text("SELECT sets FROM score_runs WHERE id = :r"), {"r": run}).scalar_one())
        d = scoring_data.load(conn, profile, sets)
    frame = sensitivity(d.matrix, profile, method=method)
    shares = rank_variance_shares(d.matrix, profile)
    result = {
        "method": method,
        "factors": json.loads(frame.reset_index().to_json(orient="records")),
        "variance_shares": {
            "method": "first-order Monte Carlo: each source varied alone over the profile's draws (seeded); "
            "variance = mean over ranked municipios of the variance of their rank; share = that variance over "
            "the sum of the sources' variances; joint_variance with every source varying",
            "draws": profile.draws,
            "sources": [
                {
                    "source": str(src),
                    "variance": round(float(r["variance"]), 4),
                    "share": round(float(r["share"]), 4),
                    "applies": bool(r["applies"]),
                }
                for src, r in shares.drop(index="all").iterrows()
            ],
            "joint_variance": round(float(shares.at["all", "variance"]), 4),
            "first_order_sum_over_joint": round(float(shares.at["all", "share"]), 4),
        },
    }
    with transaction(engine) as conn:
        conn.execute(
            text("""
            UPDATE score_runs SET sensitivity = coalesce(sensitivity, '{}'::jsonb) || jsonb_build_object(CAST(:m AS text),
              CAST(:v AS jsonb)) WHERE id = :r"""),
            {"m": method, "v": json.dumps(result), "r": run},
        )
    return result
