"""Access and limits: API keys, request ids with structured logs, metrics, body size, rate limits, security
headers. Middlewares are plain ASGI so streaming responses pass through untouched."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Annotated, Any

import anyio
from fastapi import Depends, Request
from prometheus_client import CollectorRegistry, Counter, Histogram
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from app.errors import RaicesError
from app.settings import Settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("app.access")


class Unauthorized(RaicesError):
    """No API key was given."""

    status_code = 401
    code = "Unauthorized"


class Forbidden(RaicesError):
    """The API key is not one of the service's."""

    status_code = 403
    code = "Forbidden"


def key_hashes(settings: Settings) -> list[bytes]:
    """SHA-256 digests of the configured keys (the keys themselves are not kept)."""
    raw = settings.api_keys.get_secret_value()
    return [hashlib.sha256(k.strip().encode()).digest() for k in raw.split(",") if k.strip()]


def check_key(request: Request) -> None:
    """401 without an X-API-Key header, 403 when it matches none of the configured keys (constant time)."""
    given = request.headers.get("x-api-key")
    if not given:
        raise Unauthorized("This operation needs an API key in the X-API-Key header.")
    digest = hashlib.sha256(given.encode()).digest()
    hashes: list[bytes] = request.app.state.key_hashes
    matched = False
    for h in hashes:  # compare with every key, so timing says nothing about which one matched
        matched |= hmac.compare_digest(digest, h)
    if not matched:
        raise Forbidden("The API key is not valid for this service.")


ApiKey = Annotated[None, Depends(check_key)]


class Metrics:
    """Prometheus metrics of one app (its own registry, so several apps can live in one process). With several
    workers (`raices serve --workers N` sets PROMETHEUS_MULTIPROC_DIR), prometheus_client writes every
    worker's values to files in that folder and `/metrics` sums them (`collect`), so any worker's scrape
    gives the totals."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "raices_http_requests_total",
            "HTTP requests",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "raices_http_request_seconds",
            "HTTP request latency",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )


def collect(metrics: Metrics) -> bytes:
    """The metrics in the Prometheus text format: every worker's when running multiprocess, else this app's."""
    from prometheus_client import generate_latest, multiprocess

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(metrics.registry)


def _route(scope: Scope) -> str:
    route = scope.get("route")
    return str(getattr(route, "path", "unmatched"))


class RequestContext:
    """Request id (from X-Request-ID or new), access log line, metrics, security headers."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        incoming = headers.get(b"x-request-id", b"").decode("latin-1")[:64]
        request_id = incoming if incoming and incoming.replace("-", "").isalnum() else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                hdrs = list(message.get("headers", []))
                names = {k.lower() for k, _ in hdrs}
                content_type = next((v for k, v in hdrs if k.lower() == b"content-type"), b"")
                extra = [
                    (b"x-request-id", request_id.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"),
                ]
                if b"content-security-policy" not in names:
                    csp = (
                        (
                            b"default-src 'self'; img-src 'self' data: blob:; worker-src 'self' blob:; child-src blob:; "
                            b"style-src 'self' 'unsafe-inline'; script-src 'self'; connect-src 'self'; "
                            b"frame-ancestors 'none'"
                        )
                        if content_type.startswith(b"text/html")
                        else b"default-src 'none'; frame-ancestors 'none'"
                    )
                    extra.append((b"content-security-policy", csp))
                message["headers"] = hdrs + [h for h in extra if h[0] not in names]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            seconds = time.perf_counter() - started
            route = _route(scope)
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
            self.metrics.latency.labels(scope["method"], route).observe(seconds)
            log.info(
                "%s %s %s %.1fms",
                scope["method"],
                scope["path"],
                status,
                seconds * 1000,
                extra={
                    "fields": {
                        "request_id": request_id,
                        "method": scope["method"],
                        "path": scope["path"],
                        "route": route,
                        "status": status,
                        "ms": round(seconds * 1000, 1),
                    }
                },
            )


def _reject(
    status: int, code: str, description: str, headers: list[tuple[bytes, bytes]] | None = None
) -> Any:
    body = json.dumps({"code": code, "description": description}).encode()

    async def respond(send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    *(headers or []),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return respond


class BodyLimit:
    """413 for a body over the limit, whether announced by Content-Length or streamed in chunks; 400 for a NUL
    character in the path or query string (PostgreSQL text cannot hold one)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if b"%00" in scope.get("query_string", b"") or "\x00" in scope.get("path", ""):
            await _reject(400, "InvalidParameter", "NUL characters are not allowed in URLs.")(send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        too_big = f"The request body is larger than {self.max_bytes:,} bytes."
        if declared is not None and declared.isdigit():
            if int(declared) > self.max_bytes:
                await _reject(413, "PayloadTooLarge", too_big)(send)
                return
            await self.app(scope, receive, send)
            return
        # no length announced: read the body up to the limit before the app sees it, then replay it
        messages: list[Message] = []
        seen = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                await _reject(413, "PayloadTooLarge", too_big)(send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


class RateLimit:
    """At most `per_minute` requests per client address over a sliding minute, counted in PostgreSQL so that
    every worker and replica shares one count (a per-process bucket would allow `per_minute` × workers);
    429 with Retry-After beyond.

    Sliding-window counter (the `limits` library's "sliding window" strategy, on the database): hits are
    counted per client and calendar minute in the unlogged table `rate_limits`; a request is allowed while
    hits(this minute) + hits(previous minute) × (share of the previous minute still inside the last 60 s)
    ≤ per_minute. Refused requests count too, so a client that keeps hammering stays refused. Rows older than
    the previous minute are deleted about once a minute per worker, so the table holds at most two rows per
    client active in the last two minutes. When the database cannot be reached the request is let through
    (it will meet the same database and answer 503)."""

    SQL = text("""
        WITH hit AS (
            INSERT INTO rate_limits (client, window_start, hits) VALUES (:c, :w, 1)
            ON CONFLICT (client, window_start) DO UPDATE SET hits = rate_limits.hits + 1
            RETURNING hits)
        SELECT (SELECT hits FROM hit),
               coalesce((SELECT hits FROM rate_limits WHERE client = :c AND window_start = :w - 1), 0)""")

    def __init__(self, app: ASGIApp, per_minute: int, engine: Engine) -> None:
        self.app = app
        self.per_minute = per_minute
        self.engine = engine
        self.swept = 0.0

    def _take(self, client: str) -> float:
        """Count the request; 0 when allowed, else the seconds to wait."""
        now = time.time()
        window, elapsed = divmod(now, 60.0)
        try:
            with self.engine.begin() as conn:
                current, previous = conn.execute(self.SQL, {"c": client, "w": int(window)}).one()
                if now - self.swept > 60:
                    self.swept = now
                    conn.execute(
                        text("DELETE FROM rate_limits WHERE window_start < :w - 1"), {"w": int(window)}
                    )
        except SQLAlchemyError:
            return 0.0
        estimate = current + previous * (1.0 - elapsed / 60.0)
        return 0.0 if estimate <= self.per_minute else 60.0 - elapsed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or self.per_minute <= 0
            or scope["path"] in ("/health", "/ready", "/metrics")
        ):
            await self.app(scope, receive, send)
            return
        client = (scope.get("client") or ("unknown", 0))[0]
        wait = await anyio.to_thread.run_sync(self._take, client)
        if wait > 0:
            await _reject(
                429,
                "TooManyRequests",
                "Too many requests from this address; slow down.",
                [(b"retry-after", str(max(1, round(wait))).encode())],
            )(send)
            return
        await self.app(scope, receive, send)


class InFlightLimit:
    """At most `limit` requests inside the app at once per worker; the rest wait their turn here, so a burst
    queues in front of the connection pool instead of timing out inside it (each request may hold two
    connections: its own and a scoring lookup)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.semaphore: asyncio.Semaphore | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.limit <= 0 or scope["path"] in ("/health", "/metrics"):
            await self.app(scope, receive, send)
            return
        if self.semaphore is None:
            self.semaphore = asyncio.Semaphore(self.limit)
        async with self.semaphore:
            await self.app(scope, receive, send)
