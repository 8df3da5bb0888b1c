"""Priorities under /v1: ranked, pillar-tagged, explained municipios for a scoring profile."""

from __future__ import annotations

import json
import tempfile
import threading
from collections import OrderedDict
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import Response, StreamingResponse
from sqlalchemy import Engine

from app import cache, exports, jobs
from app.api import schemas
from app.api.deps import ConnDep, LimitDep
from app.api.responses import COMMON_ERRORS, GeoJSONResponse, ORJSONResponse, errors, media
from app.api.security import check_key
from app.errors import InvalidParameter, NotFound
from app.scoring import read, service
from app.scoring.profile import Profile

router = APIRouter(prefix="/v1", tags=["priorities"], responses=COMMON_ERRORS)


class Format(StrEnum):
    json = "json"
    geojson = "geojson"
    csv = "csv"
    gpkg = "gpkg"
    fgb = "fgb"


def _engine(request: Request) -> Any:
    return request.app.state.engine


def _sets(set_id: str | None) -> list[str] | None:
    return [set_id.strip()] if set_id else None


# the run of a bundled profile on the data epoch (service.ensure_run keeps the same per epoch, but takes a
# connection to learn the epoch): looked up with no connection while the epoch is known in memory
_runs: OrderedDict[tuple[str, int, str, tuple[str, ...] | None], int] = OrderedDict()
_runs_lock = threading.Lock()


def _run(request: Request, profile: Profile, sets: list[str] | None) -> int:
    engine: Engine = request.app.state.engine
    w = cache.watched(engine)
    epoch, generation = w.current() if w is not None else (None, 0)
    bundled = service.bundled_profiles().get(profile.id)
    digest = profile.hash()
    if w is None or epoch is None or bundled is None or bundled.hash() != digest:
        return service.ensure_run(engine, profile, sets)  # a scenario's runs may be pruned: looked up
    key = (cache.database_key(engine), epoch, digest, tuple(sets) if sets else None)
    with _runs_lock:
        run = _runs.get(key)
    if run is None:
        run = service.ensure_run(engine, profile, sets)
        with w.lock:
            moved = w.generation != generation
        if not moved:
            with _runs_lock:
                _runs[key] = run
                while len(_runs) > 64:
                    _runs.popitem(last=False)
    return run


def _download(
    conn: ConnDep, profile: Profile, run: int, f: read.PriorityFilter, fmt: Format, wkt: bool
) -> Response:
    """The whole filtered result as a file: CSV (optional WKT), a styled GeoPackage, or streamed FlatGeobuf."""
    frame = read.priorities_frame(conn, run, f)
    media, suffix = exports.EXPORT_FORMATS[fmt.value]
    name = f"priorities-{profile.id}{suffix}"
    headers = {"Content-Disposition": f'attachment; filename="{name}"', "X-Profile-Hash": profile.hash()}
    if fmt is Format.csv:
        return Response(exports.to_csv(frame, wkt=wkt), media_type=media, headers=headers)
    if fmt is Format.fgb:
        return StreamingResponse(exports.iter_fgb(frame), media_type=media, headers=headers)
    with tempfile.TemporaryDirectory(prefix="raices-gpkg-") as tmp:
        path = exports.to_gpkg(frame, Path(tmp) / name, title=f"Raíces priorities ({profile.id})")
        return Response(path.read_bytes(), media_type=media, headers=headers)


def _respond(
    request: Request,
    conn: ConnDep,
    profile: Profile,
    run: int,
    f: read.PriorityFilter,
    limit: int,
    offset: int,
    fmt: Format,
    wkt: bool = False,
) -> Response:
    if fmt in (Format.csv, Format.gpkg, Format.fgb):
        return _download(conn, profile, run, f, fmt, wkt)
    geometry = fmt is Format.geojson
    total, items, geoms = read.priorities(conn, run, f, limit=limit, offset=offset, geometry=geometry)
    meta = {"id": profile.id, "hash": profile.hash(), "title": profile.title}
    if geometry:
        return GeoJSONResponse(
            {
                "type": "FeatureCollection",
                "profile": meta,
                "numberMatched": total,
                "numberReturned": len(items),
                "features": [
                    {
                        "type": "Feature",
                        "id": i["pcode"],
                        "properties": i,
                        "geometry": orjson.loads(g) if g else None,
                    }
                    for i, g in zip(items, geoms, strict=True)
                ],
            }
        )
    return ORJSONResponse({"profile": meta, "total": total, "limit": limit, "offset": offset, "items": items})


Country = Annotated[str | None, Query(description="ISO3: GTM, SLV or HND")]
Department = Annotated[str | None, Query(description="Department P-code")]
PillarQ = Annotated[str | None, Query(description="Lead pillar: I, II, III, IV or V")]
Unranked = Annotated[
    bool,
    Query(
        description="Also list the municipios that are not ranked (too little data), with `not_ranked_reason`"
    ),
]
RankBy = Annotated[
    str | None,
    Query(
        description="Order by the composite rank (`score`, the default) or by one pillar's rank in its country "
        "(I…V: only municipios with data for that pillar; `top` then applies to that rank)"
    ),
]
Tier = Annotated[int | None, Query(ge=1, le=10, description="1 = highest priority")]
Top = Annotated[int | None, Query(ge=1, le=10000, description="Only ranks 1…top in each country")]
SetQ = Annotated[str | None, Query(description="Boundary set; default: each country's current set")]
Offset = Annotated[int, Query(ge=0)]


async def priority_filter(
    country: Country = None,
    department: Department = None,
    pillar: PillarQ = None,
    tier: Tier = None,
    top: Top = None,
    rank_by: RankBy = None,
    include_unranked: Unranked = False,
) -> read.PriorityFilter:
    """The priority list's filters, shared by /v1/priorities and the scenario routes, validated (a 400 that
    says what to fix). Async: it only checks values, so it runs on the event loop, not in a thread."""
    return read.PriorityFilter.parse(country, department, pillar, tier, top, rank_by, include_unranked)


PriorityFilterDep = Annotated[read.PriorityFilter, Depends(priority_filter)]


# the formats of a priority list (`format=`), shared by /v1/priorities and the scenario routes
_PRIORITY_MEDIA = media(
    "application/json",
    "application/geo+json",
    "text/csv",
    "application/geopackage+sqlite3",
    "application/flatgeobuf",
    model=schemas.Priorities,
)


@router.get(
    "/priorities",
    responses=_PRIORITY_MEDIA,
    summary="Ranked, pillar-tagged priority municipios with reasons and rank uncertainty",
)
def priorities(
    request: Request,
    conn: ConnDep,
    limit: LimitDep,
    f: PriorityFilterDep,
    profile: Annotated[str, Query(description="A profile id from /v1/profiles")] = service.DEFAULT_PROFILE,
    set: SetQ = None,
    offset: Offset = 0,
    format: Format = Format.json,
    wkt: Annotated[bool, Query(description="format=csv: add a WKT geometry column")] = False,
) -> Response:
    """Each municipio: score 0–100, rank in its country and the 5–95 % rank interval, probability of the top k,
    tier, lead and secondary pillar, pillar sub-scores (null: no data), top indicators, hotspot, zone, coverage."""
    p = service.profile_by_id(profile)
    run = _run(request, p, _sets(set))
    return _respond(request, conn, p, run, f, limit, offset, format, wkt)


@router.post(
    "/scores",
    responses={
        **_PRIORITY_MEDIA,
        **media("application/json", model=schemas.ScoreJob, status=202, description="Being computed: poll"),
        **errors(401, 403, 413),
    },
    summary="Score a custom profile (cached by its hash)",
)
def post_scores(
    request: Request,
    conn: ConnDep,
    limit: LimitDep,
    spec: Profile,
    f: PriorityFilterDep,
    set: SetQ = None,
    offset: Offset = 0,
    format: Format = Format.json,
) -> Response:
    """The same result as /v1/priorities for the posted profile, with its hash; unknown indicators, negative
    weights or empty pillars are refused with a 422 that says which."""
    if spec.draws > request.app.state.settings.public_max_draws:
        check_key(request)  # Monte Carlo runs above the public bound need an API key
    return _scenario(request, conn, spec, f, set, limit, offset, format)


def _scenario(
    request: Request,
    conn: ConnDep,
    spec: Profile,
    f: read.PriorityFilter,
    set_id: str | None,
    limit: int,
    offset: int,
    fmt: Format,
) -> Response:
    """A scenario's result when its run is stored or computed within RAICES_SCENARIO_WAIT_SECONDS, else 202
    with the job to poll (its URL carries this request's query, which the result's URL keeps)."""
    scenarios: jobs.Scenarios = request.app.state.scenarios
    wait = request.app.state.settings.scenario_wait_seconds
    found = scenarios.run_or_job(spec, _sets(set_id), wait)
    if isinstance(found, jobs.JobState):
        return _job_response(request, found, status_code=202)
    return _respond(request, conn, spec, found, f, limit, offset, fmt)


def _job_url(request: Request, job_id: int) -> str:
    url = request.url_for("get_score_job", job_id=job_id)
    return str(url.include_query_params(**request.query_params)) if request.query_params else str(url)


def _job_response(request: Request, job: jobs.JobState, status_code: int = 200) -> Response:
    """A job's state with its URL in `location` (and the Location header on a 202); poll again after a second."""
    url = _job_url(request, job.id)
    headers = {"Retry-After": "1"} if not job.finished else {}
    if status_code == 202:
        headers["Location"] = url
    return ORJSONResponse({**job.body(), "location": url}, status_code=status_code, headers=headers)


@router.get(
    "/scores/jobs/{job_id}",
    responses={
        **media("application/json", model=schemas.ScoreJob),
        303: {"description": "Done: See Other, the scenario's result"},
        **errors(404),
    },
    summary="A scenario being computed: its state, and the result when done",
)
def get_score_job(request: Request, job_id: Annotated[int, PathParam(ge=1)]) -> Response:
    """While queued or running, 200 with `status` (`queued`, `running`) and `Retry-After`; when done, 303 See
    Other to the result (/v1/scores/{hash} with this URL's query); when it failed, 200 with `status`
    `failed` and `error` {code, description}."""
    scenarios: jobs.Scenarios = request.app.state.scenarios
    job = scenarios.state(job_id)
    if job is None:
        raise NotFound(f"No scenario job {job_id}: post the profile to /v1/scores to compute it.")
    if job.status == "succeeded":
        url = request.url_for("get_scenario", profile_hash=job.profile_hash)
        target = url.include_query_params(**request.query_params) if request.query_params else url
        return Response(status_code=303, headers={"Location": str(target)})
    return _job_response(request, job)


@router.get(
    "/scores/{profile_hash}",
    responses={
        **_PRIORITY_MEDIA,
        **media("application/json", model=schemas.ScoreJob, status=202, description="Being computed: poll"),
        **errors(404),
    },
    summary="A scenario posted before, by its hash (where a scenario job's result is)",
)
def get_scenario(
    request: Request,
    conn: ConnDep,
    limit: LimitDep,
    profile_hash: Annotated[
        str, PathParam(pattern="^[0-9a-f]{16}$", description="The hash POST /v1/scores gave")
    ],
    f: PriorityFilterDep,
    set: SetQ = None,
    offset: Offset = 0,
    format: Format = Format.json,
) -> Response:
    """The same as POST /v1/scores with the profile posted under this hash (the same filters and formats);
    404 when no run of it is stored (never posted, or removed by the retention of scenario runs)."""
    spec = jobs.profile_of(_engine(request), profile_hash)
    if spec is None:
        raise NotFound(
            f"No scenario with hash {profile_hash} is stored (scenario runs are kept for a limited time): "
            "post its profile to /v1/scores."
        )
    return _scenario(request, conn, spec, f, set, limit, offset, format)


@router.get(
    "/profiles",
    responses=media("application/json", model=schemas.Profiles),
    summary="The bundled scoring profiles",
)
def list_profiles() -> ORJSONResponse:
    """Each profile's id, hash and spec (what POST /v1/scores accepts)."""
    items = [
        {"id": p.id, "hash": p.hash(), "spec": json.loads(p.model_dump_json())}
        for p in service.bundled_profiles().values()
    ]
    return ORJSONResponse({"total": len(items), "limit": len(items), "offset": 0, "items": items})


@router.get(
    "/profiles/{profile_id}",
    responses=media("application/json", model=schemas.ProfileDetail),
    summary="One scoring profile (and, for a fitted one, its fit)",
)
def get_profile(request: Request, profile_id: str) -> ORJSONResponse:
    """A profile's id, hash and spec. For an empirical profile also `fit`: per country its status, units and
    departments with an outcome, out-of-sample Spearman and R² (nested leave-one-department-out), chosen
    penalty, coefficients per standardised driver, the drivers left out, and the vintage of every indicator;
    computed on the current data (and stored with the run) on first request."""
    p = service.profile_by_id(profile_id)
    body: dict[str, Any] = {"id": p.id, "hash": p.hash(), "spec": json.loads(p.model_dump_json())}
    if p.empirical is not None:
        run = service.ensure_run(_engine(request), p)
        body["fit"] = service.run_fit(_engine(request), run)
    return ORJSONResponse(body)


@router.get(
    "/municipalities/{pcode}/score",
    responses=media("application/json", model=schemas.Explanation),
    summary="Why a municipio ranks where it does",
)
def municipality_score(
    request: Request,
    conn: ConnDep,
    pcode: str,
    profile: Annotated[str, Query()] = service.DEFAULT_PROFILE,
    set: SetQ = None,
) -> ORJSONResponse:
    """Pillar sub-scores, contributions, rank interval, hotspot, zone and the five most similar municipios."""
    p = service.profile_by_id(profile)
    sets = _sets(set)
    if (
        sets is None
        and pcode.strip().upper().startswith("SV")
        and not pcode.strip().upper().startswith("SVM")
    ):
        sets = ["slv-2021-distritos"]  # a distrito P-code: score on the 262
    run = _run(request, p, sets)
    return ORJSONResponse({"profile": {"id": p.id, "hash": p.hash()}, **read.explain(conn, run, pcode)})


@router.get(
    "/zones",
    responses=media("application/json", "application/geo+json", model=schemas.Zones),
    summary="Contiguous programme zones of top-tier or hot-spot municipios",
)
def list_zones(
    request: Request,
    conn: ConnDep,
    country: Country = None,
    profile: Annotated[str, Query()] = service.DEFAULT_PROFILE,
    set: SetQ = None,
    format: Annotated[str, Query(pattern="^(json|geojson)$")] = "json",
) -> ORJSONResponse:
    """Zones with their members, mean and maximum score, area and most frequent lead pillar."""
    p = service.profile_by_id(profile)
    f = read.PriorityFilter.parse(country, None, None, None, None)
    run = service.ensure_run(_engine(request), p, _sets(set))
    items = read.zones(conn, run, f.country)
    if format == "geojson":
        return GeoJSONResponse(
            {
                "type": "FeatureCollection",
                "numberMatched": len(items),
                "numberReturned": len(items),
                "features": [
                    {
                        "type": "Feature",
                        "id": z["zone"],
                        "geometry": orjson.loads(z.pop("geometry")) if z["geometry"] else None,
                        "properties": z,
                    }
                    for z in items
                ],
            }
        )
    for z in items:
        z.pop("geometry")
    return ORJSONResponse(
        {
            "profile": {"id": p.id, "hash": p.hash()},
            "total": len(items),
            "limit": len(items),
            "offset": 0,
            "items": items,
        }
    )


@router.get(
    "/sensitivity",
    responses=media("application/json", model=schemas.Sensitivity),
    summary="How much each weight moves the ranking (Sobol' or one-at-a-time), and the share of rank variance "
    "due to each source of uncertainty",
)
def get_sensitivity(
    request: Request,
    conn: ConnDep,
    profile: Annotated[str, Query()] = service.DEFAULT_PROFILE,
    method: Annotated[str, Query(pattern="^(sobol|oat)$")] = "sobol",
    set: SetQ = None,
) -> ORJSONResponse:
    """Per weight (migration and each pillar), its influence on the ranking; and `variance_shares`: the share
    of rank variance due to each source of uncertainty the Monte Carlo draws (weights, normaliser,
    aggregation, missing-data treatment, one indicator left out, survey sampling error). Stored with the run."""
    p = service.profile_by_id(profile)
    run = service.ensure_run(_engine(request), p, _sets(set))
    if method not in ("sobol", "oat"):
        raise InvalidParameter("method must be 'sobol' or 'oat'.")
    return ORJSONResponse(
        {
            "profile": {"id": p.id, "hash": p.hash()},
            **service.run_sensitivity(_engine(request), p, run, method),
        }
    )
