"""One map from exceptions to HTTP statuses, registered once; bodies never leak internals."""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DataError, DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.responses import ORJSONResponse
from app.errors import DataError as RaicesDataError
from app.errors import RaicesError

log = logging.getLogger("app.api")


def _body(code: str, description: str, **extra: object) -> dict[str, object]:
    return {"code": code, "description": description, **extra}


async def _domain(_: Request, exc: Exception) -> ORJSONResponse:
    assert isinstance(exc, RaicesError)
    extra = {"errors": exc.errors} if isinstance(exc, RaicesDataError) and exc.errors else {}
    return ORJSONResponse(_body(exc.code, exc.message, **extra), status_code=exc.status_code)


async def _validation(_: Request, exc: Exception) -> ORJSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "path", "body"))
        problems.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
    return ORJSONResponse(_body("InvalidParameter", "; ".join(problems)), status_code=422)


async def _http(_: Request, exc: Exception) -> ORJSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HTTPError")
    return ORJSONResponse(
        _body(code, str(exc.detail)), status_code=exc.status_code, headers=getattr(exc, "headers", None)
    )


async def _database(_: Request, exc: Exception) -> ORJSONResponse:
    log.warning("database unavailable: %s", exc.__class__.__name__)
    return ORJSONResponse(
        _body("ServiceUnavailable", "The database is unavailable; try again shortly."),
        status_code=503,
        headers={"Retry-After": "5"},
    )


async def _unexpected(_: Request, exc: Exception) -> ORJSONResponse:
    ref = uuid.uuid4().hex[:12]
    log.exception("unhandled error %s", ref, exc_info=exc)
    return ORJSONResponse(
        _body("InternalError", f"Internal error (reference {ref}); it has been logged."), status_code=500
    )


def add_exception_handlers(app: FastAPI) -> None:
    """Register the handlers: domain errors, validation, HTTP, database, anything else."""
    app.add_exception_handler(RaicesError, _domain)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(OperationalError, _database)
    app.add_exception_handler(SQLAlchemyTimeout, _database)  # pool exhausted: busy, not broken
    app.add_exception_handler(DBAPIError, _database_or_internal)
    app.add_exception_handler(Exception, _unexpected)


async def _database_or_internal(request: Request, exc: Exception) -> ORJSONResponse:
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return await _database(request, exc)
    if isinstance(
        exc, DataError
    ):  # the database refused a value (out of range, malformed): the client's input
        return ORJSONResponse(
            _body("InvalidParameter", "A value in the request is not valid (out of range or malformed)."),
            status_code=400,
        )
    return await _unexpected(request, exc)
