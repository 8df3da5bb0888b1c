"""Liveness and database state."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from app import __version__, queries
from app.api.responses import ORJSONResponse

router = APIRouter(tags=["health"])
log = logging.getLogger("app.api")


@router.get("/health", summary="Service and database state (503 when the database is unreachable)")
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
