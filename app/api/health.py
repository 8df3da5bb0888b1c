"""Liveness and database state."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from app import __version__, queries
from app.api import schemas
from app.api.responses import ORJSONResponse, media

router = APIRouter(tags=["health"])
log = logging.getLogger("app.api")


@router.get(
    "/health",
    responses={
        **media("application/json", model=schemas.Health),
        **media("application/json", model=schemas.Health, status=503, description="Database unreachable"),
    },
    summary="Service and database state (503 when the database is unreachable)",
)
def health(request: Request) -> ORJSONResponse:
    """200 with the database's state, 503 when it cannot be reached."""
    engine: Engine = request.app.state.engine
    try:
        with engine.connect() as conn:
            db = queries.health(conn)
    except SQLAlchemyError as exc:
        log.warning("health: database unreachable (%s)", exc.__class__.__name__)
        return ORJSONResponse(
            {"status": "unavailable", "version": __version__, "database": {"reachable": False}},
            status_code=503,
        )
    return ORJSONResponse({"status": "ok", "version": __version__, "database": db})


@router.get(
    "/ready",
    responses={
        **media("application/json", model=schemas.Ready),
        **media("application/json", model=schemas.Ready, status=503, description="Not ready: see problems"),
    },
    summary="Readiness: database reachable, migrated to head, boundaries and scores loadable",
)
def ready(request: Request) -> ORJSONResponse:
    """200 when the service can answer planners (database up, schema current, boundaries loaded); else 503."""
    from app.db import head_revision

    engine: Engine = request.app.state.engine
    try:
        with engine.connect() as conn:
            db = queries.health(conn)
    except SQLAlchemyError:
        return ORJSONResponse({"ready": False, "reason": "database unreachable"}, status_code=503)
    problems = []
    if db["revision"] != head_revision():
        problems.append(
            f"migrations at {db['revision']}, code expects {head_revision()} (run raices db upgrade)"
        )
    if not db["units"]:
        problems.append("no boundaries loaded (run raices load all)")
    body = {"ready": not problems, "database": db, "problems": problems}
    return ORJSONResponse(body, status_code=200 if not problems else 503)


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    """Request counts and latencies per route, in the Prometheus text format."""
    from prometheus_client import CONTENT_TYPE_LATEST

    from app.api.security import collect

    return Response(collect(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)
