"""Baselines under /v1: freeze a named score run (API key), list, read and delete them, and what changed in the
priorities since one (`/v1/priorities/changes`)."""

from __future__ import annotations

import csv
import io
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from app import baselines
from app.api import schemas
from app.api.deps import LimitDep
from app.api.responses import COMMON_ERRORS, ORJSONResponse, errors, media
from app.api.security import ApiKey
from app.scoring.profile import Profile
from app.scoring.service import Retention

router = APIRouter(prefix="/v1", tags=["baselines"], responses=COMMON_ERRORS)


class NewBaseline(BaseModel):
    """A baseline to freeze: a name, and the profile (a bundled id, or a profile spec as in /v1/scores)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="1-64 letters, digits, '.', '_' or '-', e.g. 'fy2026-start'")
    profile: str | Profile | None = Field(
        None, description="A profile id from /v1/profiles (default root-causes-2021) or a profile spec"
    )
    sets: list[str] | None = Field(None, description="Boundary sets; default: each country's current set")
    description: str = Field("", max_length=2000)


def _retention(request: Request) -> Retention:
    return Retention.from_settings(request.app.state.settings)


@router.post(
    "/baselines",
    status_code=201,
    responses={
        **media("application/json", model=schemas.BaselineCreated, status=201),
        **errors(401, 403, 409),
    },
    summary="Freeze a named baseline: the profile's run on the current data (API key needed)",
)
def create_baseline(request: Request, _: ApiKey, body: NewBaseline) -> ORJSONResponse:
    """Stores the profile's hash, the data version and epoch and the run (computed when missing; it is never
    pruned while the baseline exists), with the indicator values each municipio was scored on. 409 when
    the name is taken."""
    b = baselines.create(
        request.app.state.engine,
        body.name,
        body.profile,
        body.sets,
        body.description,
        retention=_retention(request),
    )
    url = str(request.url_for("get_baseline", name=b.name))
    return ORJSONResponse({**b.summary(), "location": url}, status_code=201, headers={"Location": url})


@router.get(
    "/baselines",
    responses=media("application/json", model=schemas.Baselines),
    summary="The stored baselines, newest first",
)
def list_baselines(request: Request) -> ORJSONResponse:
    """Each baseline's name, profile (id, hash), data version and epoch, run, boundary sets, creation time."""
    with request.app.state.engine.connect() as conn:
        items = [b.summary() for b in baselines.all_baselines(conn)]
    return ORJSONResponse({"total": len(items), "limit": len(items), "offset": 0, "items": items})


Name = Annotated[str, PathParam(max_length=64, description="The baseline's name")]


@router.get(
    "/baselines/{name}", responses=media("application/json", model=schemas.Baseline), summary="One baseline"
)
def get_baseline(request: Request, name: Name) -> ORJSONResponse:
    """A baseline; 404 naming the ones there are."""
    with request.app.state.engine.connect() as conn:
        return ORJSONResponse(baselines.get(conn, name).summary())


@router.delete(
    "/baselines/{name}",
    responses={**media("application/json", model=schemas.BaselineDeleted), **errors(401, 403)},
    summary="Delete a baseline (API key needed)",
)
def delete_baseline(request: Request, _: ApiKey, name: Name) -> ORJSONResponse:
    """Removes the baseline and its frozen values; its run becomes subject to the usual retention again."""
    b = baselines.delete(request.app.state.engine, name)
    return ORJSONResponse({"deleted": b.summary()})


class ChangesFormat(StrEnum):
    json = "json"
    csv = "csv"


@router.get(
    "/priorities/changes",
    responses=media("application/json", "text/csv", model=schemas.PriorityChanges),
    summary="What changed in the priorities since a baseline: score, rank, tier, lead pillar, indicators",
)
def priority_changes(
    request: Request,
    limit: LimitDep,
    baseline: Annotated[str, Query(max_length=64, description="A baseline's name (GET /v1/baselines)")],
    country: Annotated[str | None, Query(description="ISO3: GTM, SLV or HND")] = None,
    profile: Annotated[
        str | None,
        Query(
            description="Compare with this bundled profile now (default: the baseline's profile as it is today)"
        ),
    ] = None,
    changed: Annotated[
        bool, Query(description="Only municipios whose score, rank, tier or pillar changed")
    ] = False,
    offset: Annotated[int, Query(ge=0)] = 0,
    format: ChangesFormat = ChangesFormat.json,
) -> Response:
    """Per municipio: score, rank, tier and lead pillar at the baseline (`then`) and now, their changes
    (positive = more priority: score now − then, rank then − now, tier then − now; `pillar` true when the lead
    pillar changed) and up to three `indicators_moved` (value and period then and now, contribution to the
    score then and now, largest change first). Ordered by country and rank now. 404 for an unknown baseline
    (naming the existing ones); `format=csv` gives every row."""
    found = baselines.changes(
        request.app.state.engine,
        baseline,
        country=country,
        profile=profile,
        changed_only=changed,
        limit=None if format is ChangesFormat.csv else limit,
        offset=0 if format is ChangesFormat.csv else offset,
        retention=_retention(request),
    )
    if format is ChangesFormat.csv:
        return Response(
            _csv(found.items),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="changes-{found.baseline.name}.csv"'},
        )
    return ORJSONResponse(
        {
            "baseline": found.baseline.summary(),
            "now": {
                "profile": {"id": found.profile.id, "hash": found.profile.hash()},
                "data_version": found.data_version,
                "run": found.run,
            },
            "counts": found.counts,
            "total": found.total,
            "limit": limit,
            "offset": offset,
            "items": found.items,
        }
    )


def _csv(items: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf, fieldnames=[*baselines.CHANGE_COLUMNS, "indicators_moved"], lineterminator="\n"
    )
    writer.writeheader()
    for item in items:
        writer.writerow(baselines.flat(item))
    return buf.getvalue()
