"""The application factory: `create_app(settings)`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from sqlalchemy import Engine

from app import __version__, cache, jobs, logs
from app.api import (
    baselines,
    deps,
    hazards,
    health,
    layers,
    ogc,
    scoring,
    security,
    tiles,
    uploads,
    v1,
    validation,
    web,
)
from app.api.errors import add_exception_handlers
from app.api.response_cache import ResponseCache
from app.api.responses import ORJSONResponse
from app.db import make_engine
from app.ogc import cql2
from app.settings import Settings, get_settings

DESCRIPTION = """
Raíces scores the municipios of El Salvador, Guatemala and Honduras for the place-based approach of the
U.S. Strategy for Addressing the Root Causes of Migration in Central America (2021).
Every answer carries the provenance of its data.
"""


def _openapi_with_limits(app: FastAPI, settings: Settings) -> Callable[[], dict[str, Any]]:
    """FastAPI's OpenAPI document with the page size of this app's settings in every `limit`."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = deps.document_limits(generate(), settings)
        return app.openapi_schema

    return openapi


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    """Build the app; the engine is made from the settings unless one is given (tests, notebooks). Logging
    is set up for the process here (RAICES_LOG_LEVEL, RAICES_LOG_FORMAT), whichever server runs the app."""
    settings = settings or get_settings()
    logs.configure(settings)
    cql2.parser()  # built now: a pygeofilter whose grammar the CQL2 fixes no longer fit stops the start
    owned = engine is None
    engine = engine or make_engine(settings)

    scenarios = jobs.Scenarios(engine, settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # a job worker in this process (RAICES_INPROCESS_WORKER), so `make run` computes scenarios with
        # nothing else to start; any replica's worker may take any replica's job
        worker = jobs.InProcessWorker(engine, settings) if settings.inprocess_worker else None
        if worker is not None:
            worker.start()
        cache.watch(engine)  # the data epoch in memory while serving (app.cache.EpochWatch)
        try:
            yield
        finally:
            if worker is not None:
                await worker.stop()
            cache.unwatch(engine)
            scenarios.close()
            if owned:
                engine.dispose()

    app = FastAPI(
        title="Raíces",
        version=__version__,
        description=DESCRIPTION,
        default_response_class=ORJSONResponse,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.openapi = _openapi_with_limits(app, settings)  # type: ignore[method-assign]
    app.state.engine = engine
    app.state.scenarios = scenarios
    app.state.key_hashes = security.key_hashes(settings)
    app.state.metrics = security.Metrics()
    add_exception_handlers(app)
    # the last added is the outermost: request context sees everything, rate limit and body limit run early
    app.add_middleware(ResponseCache, engine=engine)  # innermost: kept answers skip the app, not the limits
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Content-Type", "X-API-Key", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Content-Crs", "ETag"],
        )
    app.add_middleware(security.InFlightLimit, limit=(settings.db_pool_size + settings.db_max_overflow) // 2)
    app.add_middleware(security.BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(security.RateLimit, per_minute=settings.rate_limit_per_minute, engine=engine)
    app.add_middleware(security.RequestContext, metrics=app.state.metrics)
    app.include_router(health.router)
    app.include_router(baselines.router)  # before scoring: /v1/priorities/changes
    app.include_router(scoring.router)
    app.include_router(v1.router)
    app.include_router(uploads.router)
    app.include_router(validation.router)
    app.include_router(layers.router)
    app.include_router(hazards.router)
    app.include_router(tiles.router)
    app.include_router(web.router)
    app.include_router(ogc.router)
    return app
