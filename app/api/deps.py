"""Request dependencies: a database connection per request, the settings, the page size of list endpoints."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy import Connection, Engine

from app.settings import Settings


def get_engine(request: Request) -> Engine:
    """The app's engine."""
    engine: Engine = request.app.state.engine
    return engine


def get_connection(engine: Annotated[Engine, Depends(get_engine)]) -> Iterator[Connection]:
    """A connection for the request, returned to the pool afterwards."""
    with engine.connect() as conn:
        yield conn


def get_app_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    settings: Settings = request.app.state.settings
    return settings


ConnDep = Annotated[Connection, Depends(get_connection)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]


def get_limit(
    request: Request,
    limit: Annotated[
        int | None,
        Query(ge=1, description="Items per page (default RAICES_DEFAULT_LIMIT, at most RAICES_MAX_LIMIT)"),
    ] = None,
) -> int:
    """The page size of a list: `limit`, else the app's `default_limit`; above its `max_limit` a 422 like any
    other out-of-range parameter."""
    settings: Settings = request.app.state.settings
    if limit is None:
        return settings.default_limit
    if limit > settings.max_limit:
        raise RequestValidationError(
            [
                {
                    "type": "less_than_equal",
                    "loc": ("query", "limit"),
                    "msg": f"Input should be less than or equal to {settings.max_limit}",
                    "input": limit,
                    "ctx": {"le": settings.max_limit},
                }
            ]
        )
    return limit


LimitDep = Annotated[int, Depends(get_limit)]


def document_limits(schema: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Write the app's default and maximum page size into every `limit` query parameter of an OpenAPI
    document (the route declares neither, since both come from the settings)."""
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            for param in operation.get("parameters", []) if isinstance(operation, dict) else []:
                if param.get("name") == "limit" and param.get("in") == "query":
                    param["schema"] = {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": settings.max_limit,
                        "default": settings.default_limit,
                        "title": "Limit",
                    }
    return schema
