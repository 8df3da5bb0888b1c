"""Score runs: compute a profile on the current data once, persist it, and read it back with plain SQL."""

from __future__ import annotations

import json
import time
import warnings
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, text

from app.db import transaction
from app.errors import InvalidParameter, NotFound
from app.scoring import data as scoring_data
from app.scoring import empirical
from app.scoring.engine import score
from app.scoring.profile import PILLARS, Profile
from app.scoring.spatial import contiguity, hotspots, zones
from app.scoring.uncertainty import rank_uncertainty, rank_variance_shares, sensitivity
from app.settings import Settings

DEFAULT_PROFILE = "root-causes-2021"
RUN_LOCK = 7_242_025
RUN_TTL_S = 60.0  # how long readers of the default run (tiles, OGC items) trust a looked-up run id
_runs: weakref.WeakKeyDictionary[Engine, tuple[float, int]] = weakref.WeakKeyDictionary()


def bundled_profiles() -> dict[str, Profile]:
    """The profiles shipped with the service, by id."""
    out = {}
    for entry in resources.files("app.scoring").joinpath("profiles").iterdir():
        if entry.name.endswith(".json"):
            p = Profile.model_validate(json.loads(entry.read_text(encoding="utf-8")))
            out[p.id] = p
    return out


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


def compute(conn: Connection, profile: Profile, set_ids: list[str]) -> dict[str, Any]:
    """Score, rank uncertainty, hotspots and zones for a profile: rows ready to store."""
    d = scoring_data.load(conn, profile, set_ids)
    fit: dict[str, Any] | None = None
    if profile.empirical is not None:
        fitted = empirical.run(d.matrix, profile)
        nominal, unc = fitted.nominal, fitted.uncertainty
        fit = {"countries": fitted.fits, "vintage": _vintage(d, profile)}
    else:
        nominal = score(d.matrix, profile)
        unc = rank_uncertainty(d.matrix, profile, nominal)
    geo = (
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
    geo = geo.loc[nominal.index]
    geo["score"] = nominal["score"].where(nominal["ranked"])
    # hot spots read the local score: what varies within departments (engine.department_constant)
    geo["local_score"] = nominal["local_score"].where(nominal["ranked"])
    geo["country"] = d.units["country"]
    geo["pillar"] = nominal["pillar"]
    group = "country" if profile.scope == "country" else None
    with warnings.catch_warnings():  # islands (Guanaja, Utila, Amapala) are expected, not news
        warnings.filterwarnings("ignore", message="The weights matrix is not fully connected")
        w = contiguity(geo, id_column="key")
        hot = hotspots(
            geo, "local_score", group_column=group, id_column="key", seed=profile.seed, permutations=9999
        )
    members = (nominal["tier"] == 1).fillna(False) | (hot["label"] == "hot")
    geo["group"] = geo["country"] if group else "ALL"
    zone_of, zone_table = zones(geo, members.astype(bool), w, group_column="group", id_column="key")
    rows = []
    for key in nominal.index:
        n, u = nominal.loc[key], unc.loc[key] if key in unc.index else None
        used = [c for c in d.matrix.values.columns if pd.notna(d.matrix.values.at[key, c])]
        rows.append(
            {
                "boundary_set_id": d.units.at[key, "boundary_set_id"],
                "pcode": d.units.at[key, "pcode"],
                "country": d.units.at[key, "country"],
                "score": _none(n["score"]),
                "ranked": bool(n["ranked"]),
                "rank": _none(n["rank"]),
                "rank_region": _none(n["rank_region"]),
                "tier": _none(n["tier"]),
                "pillar": _none(n["pillar"]),
                "pillar_secondary": _none(n["pillar_secondary"]),
                "pillar_scores": json.dumps({p: _none(n[f"pillar_{p}"]) for p in PILLARS}),
                "pillar_ranks": json.dumps({p: _none(n[f"pillar_rank_{p}"]) for p in PILLARS}),
                "migration": _none(n["migration"]),
                "coverage": float(n["coverage"]),
                "driver_coverage": float(n["driver_coverage"]),
                "not_ranked_reason": _none(n["not_ranked_reason"]),
                "top_indicators": json.dumps(
                    [{k: _none(v) for k, v in t.items()} for t in n["top_indicators"]]
                ),
                "vintage": sorted({str(d.periods.at[key, c]) for c in used}),
                "rank_median": _none(u["rank_median"]) if u is not None else None,
                "rank_lo": _none(u["rank_lo"]) if u is not None else None,
                "rank_hi": _none(u["rank_hi"]) if u is not None else None,
                "p_top": _none(u["p_top"]) if u is not None else None,
                "tier_stability": _none(u["tier_stability"]) if u is not None else None,
                "robust": _none(u["robust"]) if u is not None else None,
                "hotspot": str(hot.at[key, "label"]),
                "hotspot_confidence": _none(hot.at[key, "confidence"]),
                "gi_z": _none(hot.at[key, "gi_z"]),
                "zone": _none(zone_of.get(key)),
            }
        )
    zone_rows = [
        {
            "zone": z["zone"],
            "country": str(geo.at[z["members"][0], "country"]),
            "units": int(z["units"]),
            "members": [str(m).split("/", 1)[1] for m in z["members"]],
            "mean_score": _none(z["mean_score"]),
            "max_score": _none(z["max_score"]),
            "area_km2": float(z["area_km2"]),
            "pillar": _none(z.get("pillar")),
            "keys": list(z["members"]),
        }
        for z in zone_table.to_dict("records")
    ]
    return {"scores": rows, "zones": zone_rows, "fit": fit}


def _vintage(d: scoring_data.ScoringData, profile: Profile) -> dict[str, list[str]]:
    """Per indicator of the profile, the periods of the values it was scored on."""
    return {
        i.code: sorted({str(v) for v in d.periods[i.code].dropna().unique()})
        for i in profile.indicators()
        if i.code in d.periods.columns
    }


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
    `max_age_hours` (their scores and zones go with them), never the run `keep`; the number deleted. Runs of
    bundled profiles are kept, one per data epoch and set of boundaries."""
    bundled = [p.hash() for p in bundled_profiles().values()]
    return int(
        conn.execute(
            text("""
        WITH scenario AS (
            SELECT id, computed_at, row_number() OVER (ORDER BY computed_at DESC, id DESC) AS n
            FROM score_runs WHERE NOT (profile_hash = ANY(:bundled)))
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
        sets = sorted(set_ids or scoring_data.default_sets(conn))
        known = set(conn.execute(text("SELECT id FROM boundary_sets")).scalars())
        unknown = [s for s in sets if s not in known]
        if unknown:
            raise InvalidParameter(f"Unknown boundary sets {unknown}; known: {', '.join(sorted(known))}.")
        version = scoring_data.data_version(conn)
        run = _find(conn, profile, version, sets)
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
        conn.execute(
            text("""
            INSERT INTO scores (run_id, boundary_set_id, pcode, country, score, ranked, rank, rank_region, tier,
                pillar, pillar_secondary, pillar_scores, pillar_ranks, migration, coverage, driver_coverage,
                not_ranked_reason, top_indicators, vintage,
                rank_median, rank_lo, rank_hi, p_top, tier_stability, robust, hotspot, hotspot_confidence, gi_z,
                zone)
            VALUES (:run, :boundary_set_id, :pcode, :country, :score, :ranked, :rank, :rank_region, :tier,
                :pillar, :pillar_secondary, CAST(:pillar_scores AS jsonb), CAST(:pillar_ranks AS jsonb),
                :migration, :coverage, :driver_coverage, :not_ranked_reason,
                CAST(:top_indicators AS jsonb), :vintage, :rank_median, :rank_lo, :rank_hi, :p_top,
                :tier_stability, :robust, :hotspot, :hotspot_confidence, :gi_z, :zone)"""),
            [{**r, "run": run} for r in result["scores"]],
        )
        for z in result["zones"]:
            conn.execute(
                text("""
                INSERT INTO score_zones (run_id, zone, country, units, members, mean_score, max_score, area_km2,
                                         pillar, geom)
                SELECT :run, :zone, :country, :units, :members, :mean_score, :max_score, :area_km2, :pillar,
                       ST_Multi(ST_CollectionExtract(ST_Union(geom), 3))
                FROM admin_units WHERE boundary_set_id || '/' || pcode = ANY(:keys)"""),
                {**z, "run": run},
            )
        if retention is not None:
            prune_scenarios(conn, retention, keep=run)
    return run


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
