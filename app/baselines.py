"""Baselines: a named, frozen score run to compare later priorities with, and what changed since.

A baseline is a profile (its id, hash and spec), the data version and epoch it was scored on, and the id of
that stored run; the run is never pruned while a baseline points at it (migration 0011: ON DELETE RESTRICT,
and `prune_scenarios` leaves it alone). A reload may replace the observations themselves, so the profile's
indicator values each unit was scored on are frozen with the baseline (`baseline_values`): per unit and
indicator its raw value, period, normalised value and contribution to the 0–100 score.

What changed (`changes`) reads both sides from the `priority_items` view (the one read model; `CHANGES_SQL`,
shared by the API, the OGC collection `priority-changes` and its tile layer). Signs: every change is
positive when the municipio gained priority: `score_change` = score now − then, `rank_change` = rank then −
rank now (moved up the list), `tier_change` = tier then − tier now (a higher-priority tier). Which
indicators moved most: the indicators whose contribution to the score changed most in absolute points
(for arithmetic aggregation the contributions sum to the score, so these explain the score change; for a
fitted, empirical profile, which has no contributions, the largest change of the normalised value).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import IntegrityError

from app.cache import data_epoch
from app.errors import InvalidParameter, NotFound, RaicesError
from app.queries import COUNTRIES
from app.scoring import data as scoring_data
from app.scoring import engine as scoring_engine
from app.scoring.profile import Profile
from app.scoring.service import DEFAULT_PROFILE, Retention, bundled_profiles, ensure_run, profile_by_id

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MOVED = 3  # indicators listed per municipio under `indicators_moved`
EPS = 1e-9


class Conflict(RaicesError):
    """The resource exists already."""

    status_code = 409
    code = "Conflict"


@dataclass(frozen=True)
class Baseline:
    """A stored baseline."""

    id: int
    name: str
    description: str
    profile_id: str
    profile_hash: str
    profile: dict[str, Any]
    data_version: str
    epoch: int
    run_id: int
    sets: list[str]
    created_at: datetime

    def summary(self) -> dict[str, Any]:
        """What the API and the CLI show of a baseline."""
        return {
            "name": self.name,
            "description": self.description,
            "profile": {"id": self.profile_id, "hash": self.profile_hash},
            "data_version": self.data_version,
            "epoch": self.epoch,
            "run": self.run_id,
            "sets": self.sets,
            "created_at": self.created_at.isoformat(),
        }

    def profile_now(self) -> Profile:
        """The profile to compare with today: the bundled profile of the same id as it is now, else the
        baseline's own spec (a scenario)."""
        bundled = bundled_profiles()
        if self.profile_id in bundled:
            return bundled[self.profile_id]
        return Profile.model_validate(self.profile)


# --- one read of both sides ------------------------------------------------------------------------------


def changes_sql(now: str = ":now", then: str = ":then") -> str:
    """Per municipio of either run, its priority then and now from `priority_items`, with the changes.
    `now` and `then` are SQL expressions for the two run ids (bound parameters or a fixed subquery)."""
    return f"""
    SELECT coalesce(n.pcode, t.pcode) AS pcode, coalesce(n.name, t.name) AS name,
           coalesce(n.country, t.country) AS country,
           coalesce(n.department_pcode, t.department_pcode) AS department_pcode,
           coalesce(n.department_name, t.department_name) AS department_name,
           coalesce(n.boundary_set, t.boundary_set) AS boundary_set, coalesce(n.unit_id, t.unit_id) AS unit_id,
           t.ranked AS ranked_then, n.ranked AS ranked_now,
           t.score AS score_then, n.score AS score_now,
           round((n.score - t.score)::numeric, 2)::float8 AS score_change,
           t.rank AS rank_then, n.rank AS rank_now, t.rank - n.rank AS rank_change,
           t.tier AS tier_then, n.tier AS tier_now, t.tier - n.tier AS tier_change,
           t.pillar AS pillar_then, n.pillar AS pillar_now,
           (t.pillar IS DISTINCT FROM n.pillar) AS pillar_changed,
           coalesce(n.geom, t.geom) AS geom, coalesce(n.geom_simple, t.geom_simple) AS geom_simple
    FROM (SELECT * FROM priority_items WHERE run_id = {now}) n
    FULL JOIN (SELECT * FROM priority_items WHERE run_id = {then}) t
      ON t.boundary_set = n.boundary_set AND t.pcode = n.pcode"""


# the run of the newest baseline of the default profile: what the OGC collection and the tiles compare with
NEWEST_DEFAULT_BASELINE_RUN = (
    f"(SELECT run_id FROM baselines WHERE profile_id = '{DEFAULT_PROFILE}' "
    "ORDER BY created_at DESC, id DESC LIMIT 1)"
)

CHANGE_COLUMNS = [
    "pcode",
    "name",
    "country",
    "department_pcode",
    "department_name",
    "boundary_set",
    "ranked_then",
    "ranked_now",
    "score_then",
    "score_now",
    "score_change",
    "rank_then",
    "rank_now",
    "rank_change",
    "tier_then",
    "tier_now",
    "tier_change",
    "pillar_then",
    "pillar_now",
    "pillar_changed",
]


# --- frozen values ---------------------------------------------------------------------------------------


def contributions(matrix: scoring_engine.Matrix, profile: Profile) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per unit and indicator of the profile: the normalised value (0–1, NaN: no value) and its contribution
    to the 0–100 score as the engine explains it (`_top_indicators`: effective final weight × normalised
    value × 100; NaN for a fitted profile, whose score is not a weighted sum). Duplicate codes are summed."""
    lay = scoring_engine.layout(profile)
    groups = scoring_engine.scope_groups(matrix, profile)
    raw = scoring_engine.normalise(matrix, profile, fill=False).to_numpy()
    x = scoring_engine.fill_missing(raw, groups, profile.missing)
    present = ~np.isnan(raw)
    if profile.empirical is not None or not lay.codes:
        contribution = np.full_like(raw, np.nan)
    else:
        agg = scoring_engine.aggregate(
            x, lay, within=profile.aggregation_within, across=profile.aggregation_across
        )
        comp_w = agg.weights[:, :, 0]
        weighted = ~np.isnan(x) * lay.indicator_weights
        within = np.zeros_like(x)
        for idx in lay.members:
            den = weighted[:, idx].sum(axis=1, keepdims=True)
            with np.errstate(divide="ignore", invalid="ignore"):
                within[:, idx] = np.where(den > 0, weighted[:, idx] / den, 0.0)
        effective = within * comp_w.T[:, lay.component_index]
        contribution = np.where(present, effective * np.nan_to_num(x) * 100.0, np.nan)
    index = matrix.values.index
    normalised = pd.DataFrame(raw, index=index, columns=list(lay.codes))
    contrib = pd.DataFrame(contribution, index=index, columns=list(lay.codes))
    return (
        normalised.T.groupby(level=0).max().T,
        contrib.T.groupby(level=0).sum(min_count=1).T,
    )


def unit_values(conn: Connection, profile: Profile, sets: list[str]) -> dict[tuple[str, str], dict[str, Any]]:
    """Per unit (set, pcode), the profile's indicators it has a value for: {code: {value, period, normalised,
    contribution}}, as scored on the current data."""
    d = scoring_data.load(conn, profile, sets)
    normalised, contrib = contributions(d.matrix, profile)
    codes = list(normalised.columns)
    values = d.matrix.values[codes].to_numpy(dtype=np.float64)
    periods = d.periods[codes].to_numpy(dtype=object).tolist()
    norm = normalised.to_numpy(dtype=np.float64)
    cont = contrib.reindex(columns=codes).to_numpy(dtype=np.float64)
    has = np.isfinite(values)
    keys = list(zip(d.units["boundary_set_id"].astype(str), d.units["pcode"].astype(str), strict=True))
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for i, key in enumerate(keys):
        out[key] = {
            codes[j]: {
                "value": float(values[i, j]),
                "period": None if periods[i][j] is None or pd.isna(periods[i][j]) else str(periods[i][j]),
                "normalised": float(norm[i, j]) if np.isfinite(norm[i, j]) else None,
                "contribution": float(cont[i, j]) if np.isfinite(cont[i, j]) else None,
            }
            for j in np.flatnonzero(has[i]).tolist()
        }
    return out


# --- create, list, get, delete ---------------------------------------------------------------------------


def check_name(name: str) -> str:
    """A baseline name: 1–64 letters, digits, '.', '_' or '-', starting with a letter or digit."""
    if not NAME.match(name or ""):
        raise InvalidParameter(
            f"Baseline name '{(name or '')[:80]}' is not valid: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (e.g. 'fy2026-start')."
        )
    return name


def resolve_profile(profile: str | Profile | None) -> Profile:
    """A bundled profile by id (default: the default profile) or a posted spec."""
    if profile is None:
        return profile_by_id(DEFAULT_PROFILE)
    if isinstance(profile, Profile):
        return profile
    return profile_by_id(profile)


_COLUMNS = (
    "id, name, description, profile_id, profile_hash, profile, data_version, epoch, run_id, sets, created_at"
)


def _baseline(r: Any) -> Baseline:
    return Baseline(
        id=r.id,
        name=r.name,
        description=r.description,
        profile_id=r.profile_id,
        profile_hash=r.profile_hash,
        profile=dict(r.profile),
        data_version=r.data_version,
        epoch=int(r.epoch),
        run_id=r.run_id,
        sets=list(r.sets),
        created_at=r.created_at,
    )


def all_baselines(conn: Connection) -> list[Baseline]:
    """Every baseline, newest first."""
    rows = conn.execute(text(f"SELECT {_COLUMNS} FROM baselines ORDER BY created_at DESC, id DESC"))
    return [_baseline(r) for r in rows]


def get(conn: Connection, name: str) -> Baseline:
    """A baseline by name, or NotFound naming the ones there are."""
    row = conn.execute(text(f"SELECT {_COLUMNS} FROM baselines WHERE name = :n"), {"n": name}).first()
    if row is None:
        names = [b.name for b in all_baselines(conn)]
        there = f"baselines: {', '.join(names)}" if names else "there are no baselines yet"
        raise NotFound(
            f"No baseline '{name[:80]}'; {there}. Create one with POST /v1/baselines or raices baseline create."
        )
    return _baseline(row)


def create(
    engine: Engine,
    name: str,
    profile: str | Profile | None = None,
    sets: list[str] | None = None,
    description: str = "",
    retention: Retention | None = None,
) -> Baseline:
    """Freeze the profile's run on the current data under `name` (computing the run when missing), with the
    indicator values each unit was scored on. 409 when the name is taken. The run and the frozen values are
    read in one REPEATABLE READ snapshot that checks the run is of the data version it sees; a load or a
    pruning in between makes it try again (at most three times)."""
    check_name(name)
    spec = resolve_profile(profile)
    with engine.connect() as conn:
        if conn.execute(text("SELECT 1 FROM baselines WHERE name = :n"), {"n": name}).first():
            raise Conflict(f"A baseline named '{name}' exists; choose another name or delete it first.")
    for _ in range(3):
        run = ensure_run(engine, spec, sets, retention=retention)
        stored = _freeze(engine, name, spec, run, description)
        if stored is not None:
            return stored
    raise Conflict("The data changed three times while the baseline was being stored; try again.")


def _freeze(engine: Engine, name: str, spec: Profile, run: int, description: str) -> Baseline | None:
    """Store the baseline of `run` when it is still the run of the data this snapshot sees, else None."""
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn, conn.begin():
        row = conn.execute(
            text("SELECT data_version, sets FROM score_runs WHERE id = :r"), {"r": run}
        ).first()
        if row is None or row.data_version != scoring_data.data_version(conn):
            return None
        epoch = data_epoch(conn)
        values = unit_values(conn, spec, list(row.sets))
        try:
            with conn.begin_nested():
                baseline_id = conn.execute(
                    text("""
                    INSERT INTO baselines (name, description, profile_id, profile_hash, profile, data_version,
                                           epoch, run_id, sets)
                    VALUES (:n, :d, :pid, :h, CAST(:p AS jsonb), :v, :e, :r, :s) RETURNING id"""),
                    {
                        "n": name,
                        "d": description,
                        "pid": spec.id,
                        "h": spec.hash(),
                        "p": spec.model_dump_json(),
                        "v": row.data_version,
                        "e": epoch,
                        "r": run,
                        "s": list(row.sets),
                    },
                ).scalar_one()
        except IntegrityError as exc:
            if "uq_baselines_name" in str(exc.orig):
                raise Conflict(f"A baseline named '{name}' exists; choose another name.") from None
            return None  # the run was pruned meanwhile
        conn.execute(
            text("""
            INSERT INTO baseline_values (baseline_id, boundary_set_id, pcode, indicators)
            SELECT :b, v.s, v.p, v.i FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS v(s text, p text, i jsonb)"""),
            {
                "b": baseline_id,
                "rows": json.dumps([{"s": s, "p": p, "i": i} for (s, p), i in values.items()]),
            },
        )
        return get(conn, name)


def delete(engine: Engine, name: str) -> Baseline:
    """Remove a baseline and its frozen values (its run becomes prunable again like any other)."""
    with engine.begin() as conn:
        found = get(conn, name)
        conn.execute(text("DELETE FROM baselines WHERE id = :i"), {"i": found.id})
    return found


# --- what changed ----------------------------------------------------------------------------------------


def _country(country: str | None) -> str | None:
    iso3 = country.strip().upper() if country else None
    if iso3 and iso3 not in COUNTRIES:
        raise InvalidParameter(f"country must be one of {', '.join(COUNTRIES)} (ISO3), got '{country}'.")
    return iso3


def _moved(then: dict[str, Any], now: dict[str, Any], limit: int = MOVED) -> list[dict[str, Any]]:
    """The indicators whose value, period or contribution differ between the two sides, largest absolute
    change of contribution first (of the normalised value when there are no contributions)."""
    out = []
    for code in sorted(set(then) | set(now)):
        a, b = then.get(code, {}), now.get(code, {})
        keys = ("value", "period", "contribution")
        if all(
            (a.get(k) == b.get(k))
            or (isinstance(a.get(k), float) and isinstance(b.get(k), float) and abs(a[k] - b[k]) < EPS)
            for k in keys
        ):
            continue
        ca, cb = a.get("contribution"), b.get("contribution")
        na, nb = a.get("normalised"), b.get("normalised")
        change = (cb or 0.0) - (ca or 0.0) if ca is not None or cb is not None else None
        norm_change = (nb or 0.0) - (na or 0.0) if na is not None or nb is not None else None
        out.append(
            {
                "code": code,
                "value_then": a.get("value"),
                "value_now": b.get("value"),
                "period_then": a.get("period"),
                "period_now": b.get("period"),
                "contribution_then": _r(ca),
                "contribution_now": _r(cb),
                "contribution_change": _r(change),
                "normalised_change": _r(norm_change, 4),
            }
        )
    out.sort(
        key=lambda m: (
            -abs(m["contribution_change"] or 0.0),
            -abs(m["normalised_change"] or 0.0),
            m["code"],
        )
    )
    return out[:limit]


def _r(v: float | None, n: int = 3) -> float | None:
    return round(v, n) if v is not None else None


def _frozen(conn: Connection, b: Baseline) -> dict[tuple[str, str], dict[str, Any]]:
    rows = conn.execute(
        text("SELECT boundary_set_id, pcode, indicators FROM baseline_values WHERE baseline_id = :b"),
        {"b": b.id},
    )
    return {(r.boundary_set_id, r.pcode): dict(r.indicators) for r in rows}


@dataclass(frozen=True)
class Changes:
    """What changed since a baseline: the baseline, the profile and run compared with, one page of items."""

    baseline: Baseline
    profile: Profile
    run: int
    data_version: str
    total: int
    items: list[dict[str, Any]]
    counts: dict[str, int]


def changes(
    engine: Engine,
    name: str,
    *,
    country: str | None = None,
    profile: str | None = None,
    changed_only: bool = False,
    limit: int | None = None,
    offset: int = 0,
    retention: Retention | None = None,
) -> Changes:
    """Per municipio, its score, rank, tier and lead pillar at the baseline and now (the baseline's profile as
    it is today, or another bundled `profile`), their changes and the indicators that moved most. Ordered by
    country and rank now; `changed_only` keeps the municipios whose score, rank, tier, pillar or ranking
    changed."""
    iso3 = _country(country)
    with engine.connect() as conn:
        b = get(conn, name)
    spec = profile_by_id(profile) if profile else b.profile_now()
    run = ensure_run(engine, spec, b.sets, retention=retention)
    where, params = _filters(iso3, changed_only)
    params.update({"now": run, "then": b.run_id})
    sql = f"SELECT * FROM ({changes_sql()}) c WHERE {where}"
    with engine.connect() as conn:
        version = scoring_data.data_version(conn)
        counts = dict(
            conn.execute(
                text(f"""
            SELECT count(*) AS total,
                   count(*) FILTER (WHERE coalesce(rank_change, 0) <> 0) AS rank_changed,
                   count(*) FILTER (WHERE coalesce(tier_change, 0) <> 0) AS tier_changed,
                   count(*) FILTER (WHERE pillar_changed) AS pillar_changed,
                   count(*) FILTER (WHERE ranked_then IS DISTINCT FROM ranked_now) AS ranked_changed
            FROM ({sql}) x"""),
                params,
            )
            .one()
            ._mapping
        )
        page = f" LIMIT {int(limit)}" if limit is not None else ""
        rows = conn.execute(
            text(f"{sql} ORDER BY country, rank_now NULLS LAST, pcode{page} OFFSET {int(offset)}"), params
        ).all()
        then_values = _frozen(conn, b)
        now_values = unit_values(conn, spec, b.sets)
    items = [_item(r, then_values, now_values) for r in rows]
    return Changes(
        b, spec, run, version, int(counts.pop("total")), items, {k: int(v) for k, v in counts.items()}
    )


def _filters(country: str | None, changed_only: bool) -> tuple[str, dict[str, Any]]:
    clauses = ["true"]
    params: dict[str, Any] = {}
    if country:
        clauses.append("country = :country")
        params["country"] = country
    if changed_only:
        clauses.append(
            "(coalesce(rank_change, 0) <> 0 OR coalesce(tier_change, 0) <> 0 OR pillar_changed "
            "OR coalesce(score_change, 0) <> 0 OR ranked_then IS DISTINCT FROM ranked_now)"
        )
    return " AND ".join(clauses), params


def _item(
    r: Any,
    then_values: dict[tuple[str, str], dict[str, Any]],
    now_values: dict[tuple[str, str], dict[str, Any]],
) -> dict[str, Any]:
    key = (r.boundary_set, r.pcode)
    return {
        "pcode": r.pcode,
        "name": r.name,
        "country": r.country,
        "department": {"pcode": r.department_pcode, "name": r.department_name},
        "boundary_set": r.boundary_set,
        "then": {
            "ranked": r.ranked_then,
            "score": r.score_then,
            "rank": r.rank_then,
            "tier": r.tier_then,
            "pillar": r.pillar_then,
        },
        "now": {
            "ranked": r.ranked_now,
            "score": r.score_now,
            "rank": r.rank_now,
            "tier": r.tier_now,
            "pillar": r.pillar_now,
        },
        "change": {
            "score": r.score_change,
            "rank": r.rank_change,
            "tier": r.tier_change,
            "pillar": r.pillar_changed,
        },
        "indicators_moved": _moved(then_values.get(key, {}), now_values.get(key, {})),
    }


def flat(item: dict[str, Any]) -> dict[str, Any]:
    """One change item as a flat CSV row (CHANGE_COLUMNS, then the moved indicators as code:change)."""
    row = {
        "pcode": item["pcode"],
        "name": item["name"],
        "country": item["country"],
        "department_pcode": item["department"]["pcode"],
        "department_name": item["department"]["name"],
        "boundary_set": item["boundary_set"],
    }
    for side in ("then", "now"):
        for k in ("ranked", "score", "rank", "tier", "pillar"):
            row[f"{k}_{side}"] = item[side][k]
    row["score_change"] = item["change"]["score"]
    row["rank_change"] = item["change"]["rank"]
    row["tier_change"] = item["change"]["tier"]
    row["pillar_changed"] = item["change"]["pillar"]
    row["indicators_moved"] = ";".join(
        f"{m['code']}:{m['contribution_change'] if m['contribution_change'] is not None else m['normalised_change']}"
        for m in item["indicators_moved"]
    )
    return {c: row[c] for c in (*CHANGE_COLUMNS, "indicators_moved")}
