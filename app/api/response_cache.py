"""Whole answers of the planner reads remembered per data epoch, served without entering the app.

What is kept: a 200 answer (status, headers, body) to a GET of one of `CACHED` below, whose answer is a
function of the data epoch and the request (path, query, the headers that are not in `IGNORED`, scheme, host,
root path): the priority list and a municipio's score explanation (the run of a bundled profile on the data
epoch, which is never replaced within the epoch), the municipio list and name search, the tiles and OGC items
of `municipalities` and `priorities`. Not kept: conditional or range requests (the route answers them, e.g.
304 for a matching If-None-Match), errors, downloads (CSV, GeoPackage, FlatGeobuf: only JSON, GeoJSON, MVT
and HTML answers are kept), answers larger than `max_body`, anything while the epoch is not
known in memory (app.cache.EpochWatch not running).

The tiles and items of `priorities` take the default profile's run as `service.default_run` gives it, which
may be the previous epoch's for up to RUN_TTL_S after a load; an answer kept in that time after the epoch
moved is dropped when it ends, so nothing is served stale for longer than before. An OGC items page says when
it was generated (`timeStamp`): the kept page gets the time it is served, as the route would write it.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import cache
from app.scoring.service import RUN_TTL_S

# path → whether its answer may take the default run through service.default_run (see the docstring)
CACHED: list[tuple[re.Pattern[str], bool]] = [
    (re.compile(r"/v1/priorities"), False),
    (re.compile(r"/v1/municipalities"), False),
    (re.compile(r"/v1/municipalities/[^/]+/score"), False),
    (re.compile(r"/tiles/municipalities/\d+/\d+/\d+\.mvt"), False),
    (re.compile(r"/tiles/priorities/\d+/\d+/\d+\.mvt"), True),
    (re.compile(r"/collections/municipalities/items"), True),
    (re.compile(r"/collections/priorities/items"), True),
]
# request headers that no cached route reads (CORS, which reads Origin, runs outside this middleware)
IGNORED = frozenset(
    {
        b"user-agent",
        b"x-request-id",
        b"connection",
        b"keep-alive",
        b"accept-encoding",
        b"te",
        b"referer",
        b"origin",
        b"cache-control",
        b"pragma",
    }
)
# requests the route must answer itself
CONDITIONAL = frozenset(
    {b"if-none-match", b"if-modified-since", b"if-match", b"if-unmodified-since", b"range"}
)
KEPT_TYPES = (
    b"application/json",
    b"application/geo+json",
    b"application/vnd.mapbox-vector-tile",
    b"text/html",
)
STAMP = b'"timeStamp":"'
STAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True)
class Entry:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    stamp_at: int  # offset of an OGC items page's timeStamp value in the body, or -1
    expires: float  # monotonic
    route: object  # the route that answered, set in the scope again for the access log and metrics


class ResponseCache:
    """ASGI middleware (innermost, inside the rate limit and CORS): answers a kept GET at once, else lets the
    app answer and keeps the answer. At most `size` answers and `max_bytes` of bodies per process, least
    recently used first out."""

    def __init__(
        self,
        app: ASGIApp,
        engine: Engine,
        size: int = 4096,
        max_bytes: int = 128 * 2**20,
        max_body: int = 4 * 2**20,
    ) -> None:
        self.app = app
        self.engine = engine
        self.size = size
        self.max_bytes = max_bytes
        self.max_body = max_body
        self.entries: OrderedDict[tuple[object, ...], Entry] = OrderedDict()
        self.bytes = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        by_run = _kind(path)
        w = cache.watched(self.engine) if by_run is not None else None
        epoch, generation = w.current() if w is not None else (None, 0)
        if w is None or epoch is None:
            await self.app(scope, receive, send)
            return
        headers = []
        for name, value in scope["headers"]:
            if name in CONDITIONAL:
                await self.app(scope, receive, send)
                return
            if name not in IGNORED:
                headers.append((bytes(name), bytes(value)))
        key = (
            epoch,
            path,
            scope["query_string"],
            scope.get("scheme"),
            scope.get("root_path", ""),
            tuple(scope.get("server") or ()),
            tuple(sorted(headers)),
        )
        entry = self.entries.get(key)
        if entry is not None:
            if entry.expires > time.monotonic():
                self.entries.move_to_end(key)
                if entry.route is not None:
                    scope["route"] = entry.route
                await _replay(entry, send)
                return
            self._drop(key)
        await self._fill(scope, receive, send, key, w, generation, bool(by_run))

    async def _fill(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        key: tuple[object, ...],
        w: cache.EpochWatch,
        generation: int,
        by_run: bool,
    ) -> None:
        start: Message | None = None
        chunks: list[bytes] = []
        size = 0
        keep = True

        async def capture(message: Message) -> None:
            nonlocal start, size, keep
            if message["type"] == "http.response.start":
                # a copy: the middlewares outside add their headers (request id, ...) to this message
                start = {**message, "headers": list(message.get("headers", []))}
                keep = message["status"] == 200
            elif message["type"] == "http.response.body" and keep:
                body = message.get("body", b"")
                size += len(body)
                if size > self.max_body:
                    keep = False
                    chunks.clear()
                else:
                    chunks.append(body)
                if not message.get("more_body", False) and keep and start is not None:
                    self._keep(key, start, b"".join(chunks), w, generation, by_run, scope.get("route"))
            await send(message)

        await self.app(scope, receive, capture)

    def _keep(
        self,
        key: tuple[object, ...],
        start: Message,
        body: bytes,
        w: cache.EpochWatch,
        generation: int,
        by_run: bool,
        route: object,
    ) -> None:
        headers = [(bytes(k), bytes(v)) for k, v in start.get("headers", [])]
        if any(k.lower() == b"set-cookie" for k, _ in headers):
            return
        content_type = next((v for k, v in headers if k.lower() == b"content-type"), b"")
        if not content_type.startswith(KEPT_TYPES):  # downloads (a GeoPackage records when it was written)
            return
        with w.lock:  # the epoch moved while the app answered: the answer may be of either epoch
            if w.generation != generation:
                return
            changed_at = w.changed_at
        expires = float("inf")
        if by_run and time.monotonic() < changed_at + RUN_TTL_S:
            expires = changed_at + RUN_TTL_S
        stamp_at = -1
        if any(k.lower() == b"content-type" and v.startswith(b"application/geo+json") for k, v in headers):
            found = body.rfind(STAMP)
            if found >= 0 and body[found + len(STAMP) + 20 : found + len(STAMP) + 21] == b'"':
                stamp_at = found + len(STAMP)
        self._drop(key)
        self.entries[key] = Entry(start["status"], headers, body, stamp_at, expires, route)
        self.bytes += len(body)
        while self.entries and (len(self.entries) > self.size or self.bytes > self.max_bytes):
            _, old = self.entries.popitem(last=False)
            self.bytes -= len(old.body)

    def _drop(self, key: tuple[object, ...]) -> None:
        old = self.entries.pop(key, None)
        if old is not None:
            self.bytes -= len(old.body)


def _kind(path: str) -> bool | None:
    """None when the path's answers are not kept, else whether they may take the default run."""
    for pattern, by_run in CACHED:
        if pattern.fullmatch(path):
            return by_run
    return None


async def _replay(entry: Entry, send: Send) -> None:
    body = entry.body
    if entry.stamp_at >= 0:
        now = datetime.now(UTC).strftime(STAMP_FORMAT).encode()
        body = body[: entry.stamp_at] + now + body[entry.stamp_at + len(now) :]
    await send({"type": "http.response.start", "status": entry.status, "headers": list(entry.headers)})
    await send({"type": "http.response.body", "body": body})
