"""OGC API Features items, tiles and the catalogue from Raíces against tipg and the database floor (issue 14).

Run: .venv/bin/python benchmarks/features.py [--requests 15] [--concurrency 4] [--seconds 3]

Both servers are started by this script on free loopback ports (one uvicorn process each, asyncio loop and
h11 on both so that only the applications differ) and stopped at the end, even on failure. Raíces runs
with its per-client rate limit off (tipg has none). tipg (developmentseed, PyPI `tipg`) runs from its own
virtual environment outside the repository, created on first use (default: <tmp>/tipg-venv, or
--tipg-python); when it cannot be installed or started the script says so and compares Raíces with the
database floor alone.

tipg serves a view created for the run and dropped at the end, `bench_municipalities`: the same 682 rows
and properties as the `municipalities` collection (level-2 units of the default boundary sets), with the
simplified geometry as `geom` (its default geometry column) and the full one as `geom_full` (asked for with
tipg's `geom-column`). The **database floor** is the same rows' GeoJSON produced by PostGIS and fetched by
psycopg on one open connection: `SELECT <the 8 properties>, ST_AsGeoJSON(<geometry>, <decimals>, 0)` from
the view, with the same geometry column, transform, precision (Raíces': 6 decimals in CRS84, 2 in metres),
filter, order and limit as the request; no HTTP and no count. The **HTTP floor** is Raíces' own response
body for the case served by a bare ASGI app (no application work) in the same uvicorn, in 64 kB chunks, read
by the same client: what moving those bytes over loopback HTTP costs. Raíces − DB floor − HTTP floor is
printed as `rest`, roughly the application's own time.

Measured, in this order:
  1. memory while streaming (before anything large has been asked, so the allocator is still small): the
     peak growth of each server process' resident set (psutil, sampled every millisecond) during a
     `limit=100` page and during the largest page Raíces has (`limit=10000` of `municipalities` with full
     geometry; no collection holds 10,000 features, so its 682 are the largest body);
  2. latency, one interleaved run: each round asks every case of every side once (Raíces, tipg, DB and HTTP floor),
     the order reversed every other round, after a warm-up; medians and p95 over `--requests` rounds:
     items `limit=1000` with simplified geometry, full geometry, a CQL2 filter
     (`country='GTM' AND area_km2 > 100`) and `crs=EPSG:32616` (tipg 1.x has no `crs` parameter: it
     answers in CRS84, so that case has no tipg ratio); the z6 tile over Guatemala/Honduras; `/collections`
     and `/collections/{id}`;
  3. throughput of the simplified items page and of the tile with `--concurrency` clients for `--seconds`.
Printed as Raíces/tipg (issue 14's targets: items ≤ 0.5, tiles ≤ 1) and Raíces/floor (items ≤ 2), with the
load average of the machine at the start and at the end. Responses are asked for uncompressed, each request
with a header of its own (`X-Bench-Request: <n>`, read by no server), so that Raíces' cache of whole answers
(app/api/response_cache.py, which keys on the request's headers) answers none of them: the figures are what
the route does for a request it has not seen. Needs a
loaded database (`make run` once, or DATABASE_URL).
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import httpx
import mapbox_vector_tile
import psutil
import psycopg
from _servers import free_port
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.db import database_url
from app.settings import get_settings

ROOT = Path(__file__).resolve().parents[1]
VIEW = "bench_municipalities"
TIPG_COLLECTION = f"public.{VIEW}"
EXPECTED_FEATURES = 682
ITEMS_LIMIT = 1000
TILE_ZOOM, TILE_LON, TILE_LAT = 6, -89.0, 15.0
MVT_BUFFER = 64  # Raíces' tile buffer (app.tiles.BUFFER); tipg's default is 256, set to match
WARMUP = 2
STARTUP_TIMEOUT_S = 60.0
PIP_TIMEOUT_S = 300
CLIENT_TIMEOUT_S = 60.0
MAX_REQUESTS_PER_CLIENT = 5000
HEADERS = {"Accept-Encoding": "identity"}
_REQUESTS = itertools.count()


def _fresh(request: httpx.Request) -> None:
    """Each request carries a header of its own that no server reads, so that a cache of whole answers keyed
    on the request's headers (Raíces' app.api.response_cache) cannot answer it: every side does the work."""
    request.headers["X-Bench-Request"] = str(next(_REQUESTS))


HOOKS = {"request": [_fresh]}
CQL2 = "country='GTM' AND area_km2 > 100"
UTM16 = "http://www.opengis.net/def/crs/EPSG/0/32616"
PROPS = "pcode, national_code, name, country, department_pcode, department_name, boundary_set, area_km2"
RSS_SAMPLE_S = 0.001
TARGET_ITEMS_TIPG, TARGET_ITEMS_FLOOR, TARGET_TILE_TIPG = 0.5, 2.0, 1.0

# The HTTP floor: a bare ASGI app that answers GET /<name> with the bytes of <dir>/<name>, read once, in
# the same uvicorn (asyncio loop, h11) and the same streamed form as Raíces (no Content-Length, one body
# message per chunk of about 64 kB): what serving those bytes costs with no application work.
STATIC_APP = """
import os
from pathlib import Path

ROOT = Path(os.environ["BENCH_STATIC_DIR"])
CHUNK = 1 << 16
BODIES = {}


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    name = scope["path"].strip("/")
    if name not in BODIES:
        path = ROOT / name
        BODIES[name] = path.read_bytes() if name and path.is_file() else None
    body = BODIES[name]
    if body is None:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/geo+json")]})
    for i in range(0, len(body), CHUNK):
        await send({"type": "http.response.body", "body": body[i : i + CHUNK], "more_body": True})
    await send({"type": "http.response.body", "body": b""})
"""

# The municipalities collection of app.ogc.collections, as a view; typed geometry columns so that tipg (and
# geometry_columns) see MultiPolygons in EPSG:4326.
VIEW_SQL = f"""
CREATE OR REPLACE VIEW {VIEW} AS
SELECT u.pcode, u.national_code, u.name, u.country, u.parent_pcode AS department_pcode,
       d.name AS department_name, u.boundary_set_id AS boundary_set,
       round(u.area_km2::numeric, 3)::float8 AS area_km2,
       u.geom_simple::geometry(MultiPolygon, 4326) AS geom,
       u.geom::geometry(MultiPolygon, 4326) AS geom_full
FROM admin_units u
JOIN boundary_sets bs ON bs.id = u.boundary_set_id AND bs.is_default
LEFT JOIN admin_units d ON d.boundary_set_id = u.boundary_set_id AND d.pcode = u.parent_pcode
WHERE u.level = 2
"""


def slippy_tile(lon: float, lat: float, z: int) -> tuple[int, int]:
    """The x, y of the WebMercatorQuad (XYZ) tile holding lon/lat at zoom z."""
    n = 1 << z
    x = int((lon + 180.0) / 360.0 * n)
    lat_r = math.radians(lat)
    y = int((1.0 - math.asinh(math.tan(lat_r)) / math.pi) / 2.0 * n)
    return x, y


# --- tipg's virtual environment ------------------------------------------------------------------------


def _tipg_version(python: Path) -> str | None:
    """tipg's version as `python` imports it (with uvicorn), or None."""
    probe = "import tipg, uvicorn; print(tipg.__version__)"
    try:
        out = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def ensure_tipg(python: Path | None, venv: Path) -> tuple[Path | None, str]:
    """The Python that runs tipg (installing tipg and uvicorn into `venv` when needed) and tipg's version,
    or None and why not."""
    if python is not None:
        version = _tipg_version(python)
        return (python, version) if version else (None, f"{python} cannot import tipg and uvicorn")
    py = venv / "bin" / "python"
    if py.exists() and (version := _tipg_version(py)):
        return py, version
    print(f"installing tipg and uvicorn into {venv} (once) …", flush=True)
    try:
        if not py.exists():
            subprocess.run(
                [sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120
            )
        subprocess.run(
            [str(py), "-m", "pip", "install", "--quiet", "tipg>=1,<2", "uvicorn"],
            check=True,
            capture_output=True,
            text=True,
            timeout=PIP_TIMEOUT_S,
        )
    except subprocess.CalledProcessError as exc:
        tail = (exc.stderr or exc.stdout or "").strip().splitlines()[-3:]
        return None, f"pip failed: {' / '.join(str(t) for t in tail)[:300]}"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    version = _tipg_version(py)
    return (py, version) if version else (None, f"tipg still not importable from {py}")


# --- servers -------------------------------------------------------------------------------------------


@dataclass
class Server:
    """A uvicorn process serving one application on the loopback interface."""

    name: str
    ready_path: str  # answers 200 once the server serves the bench collection
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    version: str = ""

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 15) -> str:
        with suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def start_server(
    name: str, python: Path, app: list[str], env: dict[str, str], cwd: Path, logdir: Path
) -> tuple[subprocess.Popen[bytes], int, Path]:
    """Start `python -m uvicorn <app>` on a free loopback port; the process, its port and its log file."""
    port = free_port()
    log = logdir / f"{name}.log"
    cmd = [str(python), "-m", "uvicorn", *app]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--loop", "asyncio", "--http", "h11"]
    cmd += ["--log-level", "warning", "--no-access-log"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return proc, port, log


def wait_ready(server: Server, path: str) -> None:
    """Poll `path` until it answers 200; RuntimeError with the server's log when it dies or times out."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    last = ""
    with httpx.Client(timeout=5.0) as client:
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                raise RuntimeError(f"{server.name} exited ({server.proc.returncode}):\n{server.log_tail()}")
            try:
                r = client.get(server.base + path)
                if r.status_code == 200:
                    return
                last = f"HTTP {r.status_code}: {r.text[:200]}"
            except httpx.TransportError as exc:
                last = type(exc).__name__
            time.sleep(0.25)
    raise RuntimeError(
        f"{server.name} not ready after {STARTUP_TIMEOUT_S:.0f} s ({last}):\n{server.log_tail()}"
    )


@contextmanager
def bench_view(url: str) -> Iterator[None]:
    """Create the view tipg serves; drop it at the end."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(VIEW_SQL))
        yield
    finally:
        try:
            with engine.begin() as conn:
                conn.execute(text(f"DROP VIEW IF EXISTS {VIEW}"))
        finally:
            engine.dispose()


# --- cases ---------------------------------------------------------------------------------------------


@dataclass
class Case:
    """One request asked of each side: Raíces' path, tipg's (None when tipg cannot answer it alike; `note`
    says why), the floor's SQL (None: no floor), and issue 14's targets for the ratios."""

    name: str
    raices: str
    tipg: str | None
    floor: str | None = None
    target_tipg: float | None = None
    target_floor: float | None = None
    note: str = ""


def slug(name: str) -> str:
    """A case's name as a file name."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def static_dir(static: Server) -> Path:
    """Where the HTTP floor's server reads its bodies: next to its log."""
    return static.log.parent / "static"


def floor_sql(geom: str = "geom", srid: int = 4326, decimals: int = 6, where: str = "true") -> str:
    """The rows' properties and GeoJSON geometry as PostGIS makes them, as a Raíces items page asks."""
    g = geom if srid == 4326 else f"ST_Transform({geom}, {srid})"
    return (
        f"SELECT {PROPS}, ST_AsGeoJSON({g}, {decimals}, 0) FROM {VIEW} "
        f"WHERE {where} ORDER BY pcode LIMIT {ITEMS_LIMIT}"
    )


def make_cases(xy: tuple[int, int]) -> list[Case]:
    """The items pages, the tile and the catalogue requests, side by side."""
    x, y = xy
    ours = f"/collections/municipalities/items?limit={ITEMS_LIMIT}"
    theirs = f"/collections/{TIPG_COLLECTION}/items?limit={ITEMS_LIMIT}"
    t, f = TARGET_ITEMS_TIPG, TARGET_ITEMS_FLOOR
    return [
        Case("items simplified", ours, theirs, floor_sql(), t, f),
        Case(
            "items full geometry",
            ours + "&geometry=full",
            theirs + "&geom-column=geom_full",
            floor_sql("geom_full"),
            t,
            f,
        ),
        Case(
            "items CQL2 filter",
            ours + "&" + urlencode({"filter": CQL2}),
            theirs + "&" + urlencode({"filter": CQL2, "filter-lang": "cql2-text"}),
            floor_sql(where=CQL2),
            t,
            f,
        ),
        Case(
            "items crs=EPSG:32616",
            ours + "&" + urlencode({"crs": UTM16}),
            theirs + "&" + urlencode({"crs": UTM16}),
            floor_sql(srid=32616, decimals=2),
            t,
            f,
        ),
        Case(
            f"tile z{TILE_ZOOM}",
            f"/tiles/municipalities/{TILE_ZOOM}/{x}/{y}.mvt",
            f"/collections/{TIPG_COLLECTION}/tiles/WebMercatorQuad/{TILE_ZOOM}/{x}/{y}",
            None,
            TARGET_TILE_TIPG,
        ),
        Case("/collections", "/collections", "/collections"),
        Case("/collections/{id}", "/collections/municipalities", f"/collections/{TIPG_COLLECTION}"),
    ]


# --- measures ------------------------------------------------------------------------------------------


@dataclass
class Probe:
    """What one response of a server holds."""

    status: int
    size: int
    features: int
    note: str = ""
    first_x: float | None = None  # the first coordinate's easting, to tell metres from degrees


def _first_x(coords: object) -> float | None:
    while isinstance(coords, list) and coords and isinstance(coords[0], list):
        coords = coords[0]
    return float(coords[0]) if isinstance(coords, list) and coords else None


def probe(r: httpx.Response) -> Probe:
    """Status, size and feature count of an items page, a tile or a catalogue document."""
    kind = r.headers.get("content-type", "")
    if "vnd.mapbox-vector-tile" in kind or "protobuf" in kind:
        layers = mapbox_vector_tile.decode(r.content) if r.content else {}
        n = sum(len(layer["features"]) for layer in layers.values())
        return Probe(r.status_code, len(r.content), n, f"layers {sorted(layers)}")
    body = r.json()
    feats = body.get("features")
    if feats is None:
        return Probe(r.status_code, len(r.content), len(body.get("collections", [])), "")
    first = feats[0].get("geometry") or {} if feats else {}
    note = f"numberMatched={body.get('numberMatched')}"
    return Probe(r.status_code, len(r.content), len(feats), note, _first_x(first.get("coordinates")))


@dataclass
class Stats:
    """Latencies (seconds) of the sequential requests, and a throughput run."""

    latencies: list[float] = field(default_factory=list)
    completed: int = 0
    errors: int = 0
    elapsed: float = 0.0

    def pct(self, q: float) -> float:
        xs = sorted(self.latencies)
        if not xs:
            return float("nan")
        k = (len(xs) - 1) * q
        lo, hi = math.floor(k), math.ceil(k)
        return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)

    @property
    def rps(self) -> float:
        return self.completed / self.elapsed if self.elapsed else float("nan")


Timer = Callable[[], float]


def http_timer(client: httpx.Client, url: str) -> Timer:
    """One GET of `url`, read whole; its seconds (RuntimeError on a status other than 200)."""

    def once() -> float:
        start = time.perf_counter()
        r = client.get(url)
        _ = r.content
        took = time.perf_counter() - start
        if r.status_code != 200:
            raise RuntimeError(f"{url}: HTTP {r.status_code} {r.text[:300]}")
        return took

    return once


def floor_timer(conn: psycopg.Connection[tuple[object, ...]], sql: str) -> Timer:
    """The floor query run and every row fetched on an open connection; its seconds."""

    def once() -> float:
        start = time.perf_counter()
        with conn.cursor() as cur:
            cur.execute(sql.encode())
            cur.fetchall()
        return time.perf_counter() - start

    return once


def interleaved(
    timers: dict[tuple[str, str], Timer], rounds: int, budget_s: float
) -> dict[tuple[str, str], Stats]:
    """Every timer once per round (the order reversed every other round, so that none always follows the
    same one), after WARMUP calls each; stops early past `budget_s`."""
    keys = list(timers)
    for k in keys:
        for _ in range(WARMUP):
            timers[k]()
    out = {k: Stats() for k in keys}
    deadline = time.monotonic() + budget_s
    for i in range(rounds):
        for k in keys if i % 2 == 0 else reversed(keys):
            out[k].latencies.append(timers[k]())
        if time.monotonic() > deadline:
            break
    return out


def throughput(server: Server, path: str, clients: int, seconds: float, into: Stats) -> None:
    """`clients` threads, each with its own connection, requesting `path` back to back for `seconds`."""
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def worker() -> None:
        done = errors = 0
        with httpx.Client(timeout=CLIENT_TIMEOUT_S, headers=HEADERS, event_hooks=HOOKS) as client:
            while time.monotonic() < stop_at and done + errors < MAX_REQUESTS_PER_CLIENT:
                try:
                    r = client.get(server.base + path)
                    _ = r.content
                    if r.status_code == 200:
                        done += 1
                    else:
                        errors += 1
                except httpx.HTTPError:
                    errors += 1
        with lock:
            into.completed += done
            into.errors += errors

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + CLIENT_TIMEOUT_S + 5)
    into.elapsed = time.perf_counter() - start


@dataclass
class Memory:
    """Peak growth of a server's resident set during requests of a small and of the largest page."""

    small_path: str
    large_path: str
    small: list[int] = field(default_factory=list)
    large: list[int] = field(default_factory=list)
    small_bytes: int = 0
    large_bytes: int = 0
    large_features: int = 0
    rss_before: int = 0
    rss_after: int = 0


def rss_growth(client: httpx.Client, pid: int, url: str) -> tuple[int, int]:
    """Peak growth (bytes) of process `pid`'s resident set while `url` is requested and its body streamed
    to nothing, sampled every RSS_SAMPLE_S by a thread; and the body's size."""
    proc = psutil.Process(pid)
    base = peak = proc.memory_info().rss
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, proc.memory_info().rss)
            time.sleep(RSS_SAMPLE_S)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    size = 0
    try:
        with client.stream("GET", url) as r:
            if r.status_code != 200:
                raise RuntimeError(f"{url}: HTTP {r.status_code}")
            for part in r.iter_raw():
                size += len(part)
    finally:
        done.set()
        sampler.join()
    return max(peak, proc.memory_info().rss) - base, size


def memory(server: Server, small: str, large: str, repeat: int = 3) -> Memory:
    """`repeat` small pages, then `repeat` of the largest; the small ones first so that the large one meets
    an allocator that has not yet held anything of its size."""
    m = Memory(small, large)
    with httpx.Client(timeout=CLIENT_TIMEOUT_S, headers=HEADERS, event_hooks=HOOKS) as client:
        m.rss_before = psutil.Process(server.proc.pid).memory_info().rss
        for _ in range(repeat):
            grew, m.small_bytes = rss_growth(client, server.proc.pid, server.base + small)
            m.small.append(grew)
        for _ in range(repeat):
            grew, m.large_bytes = rss_growth(client, server.proc.pid, server.base + large)
            m.large.append(grew)
        m.rss_after = psutil.Process(server.proc.pid).memory_info().rss
        m.large_features = len(client.get(server.base + large).json().get("features", []))
    return m


# --- report --------------------------------------------------------------------------------------------


def fmt(v: float | None, digits: int = 1) -> str:
    return "—" if v is None or math.isnan(v) else f"{v:,.{digits}f}"


def mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


def verdict(ratio: float | None, target: float | None) -> str:
    if ratio is None or target is None or math.isnan(ratio):
        return ""
    return f"{fmt(ratio, 2)} (≤ {target:g} {'met' if ratio <= target else 'MISSED'})"


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


@dataclass
class Results:
    """Everything measured."""

    probes: dict[str, dict[str, Probe]]
    floor_rows: dict[str, int]
    seq: dict[tuple[str, str], Stats]
    memory: dict[str, Memory]
    load: dict[str, dict[str, Stats]]


def run(
    servers: list[Server], static: Server | None, cases: list[Case], pg_url: str, args: argparse.Namespace
) -> Results:
    """Memory first, then one response of each case from each side checked (Raíces' items bodies handed to
    the HTTP floor's server), then the interleaved latency run, then throughput."""
    by_name = {s.name: s for s in servers}
    tipg = by_name.get("tipg")
    mem: dict[str, Memory] = {}
    large = "limit=10000&geometry=full"
    mem["Raíces"] = memory(
        by_name["Raíces"],
        "/collections/municipalities/items?limit=100&geometry=full",
        f"/collections/municipalities/items?{large}",
    )
    if tipg:
        base = f"/collections/{TIPG_COLLECTION}/items?geom-column=geom_full&limit="
        mem["tipg"] = memory(tipg, base + "100", base + "10000")

    probes: dict[str, dict[str, Probe]] = {}
    floor_rows: dict[str, int] = {}
    with (
        httpx.Client(timeout=CLIENT_TIMEOUT_S, headers=HEADERS, event_hooks=HOOKS) as client,
        psycopg.connect(pg_url) as conn,
    ):
        for c in cases:
            probes[c.name] = {}
            for s in servers:
                path = c.raices if s.name == "Raíces" else c.tipg
                if path is None:
                    continue
                r = client.get(s.base + path)
                if r.status_code != 200:
                    if s.name == "Raíces":
                        raise RuntimeError(f"Raíces {path}: HTTP {r.status_code} {r.text[:300]}")
                    c.tipg, c.note = None, f"tipg answers HTTP {r.status_code}: {r.text[:120]}"
                    continue
                probes[c.name][s.name] = probe(r)
                if static is not None and s.name == "Raíces" and c.floor:
                    (static_dir(static) / slug(c.name)).write_bytes(r.content)
            # tipg 1.x has no output crs: it ignores the parameter and answers in degrees
            theirs = probes[c.name].get("tipg")
            if (
                "crs=" in (c.tipg or "")
                and theirs
                and theirs.first_x is not None
                and abs(theirs.first_x) <= 180
            ):
                c.tipg = None
                c.note = f"tipg {tipg.version if tipg else ''} has no crs parameter (it answers in CRS84)"
                del probes[c.name]["tipg"]
            if c.floor:
                floor_rows[c.name] = len(conn.execute(c.floor.encode()).fetchall())

        timers: dict[tuple[str, str], Timer] = {}
        for c in cases:
            timers[(c.name, "Raíces")] = http_timer(client, by_name["Raíces"].base + c.raices)
            if tipg and c.tipg:
                timers[(c.name, "tipg")] = http_timer(client, tipg.base + c.tipg)
            if c.floor:
                timers[(c.name, "floor")] = floor_timer(conn, c.floor)
                if static is not None:
                    timers[(c.name, "HTTP floor")] = http_timer(client, f"{static.base}/{slug(c.name)}")
        seq = interleaved(timers, args.requests, budget_s=args.budget)

    load: dict[str, dict[str, Stats]] = {}
    for c in cases[:1] + [c for c in cases if c.name.startswith("tile")]:
        load[c.name] = {}
        for s in servers:
            path = c.raices if s.name == "Raíces" else c.tipg
            if path:
                load[c.name][s.name] = st = Stats()
                throughput(s, path, args.concurrency, args.seconds, st)
    return Results(probes, floor_rows, seq, mem, load)


def report(
    servers: list[Server], cases: list[Case], res: Results, args: argparse.Namespace, header: list[str]
) -> None:
    """Print what was compared, the checks and the tables."""
    names = [s.name for s in servers]
    for line in header:
        print(line)
    print()
    for c in cases:
        for name, p in res.probes[c.name].items():
            print(
                f"{c.name:<22} {name:<7} HTTP {p.status}, {p.size:>10,} bytes, {p.features:>4} features {p.note}"
            )
        if c.name in res.floor_rows:
            print(f"{c.name:<22} floor   {res.floor_rows[c.name]:>4} rows")
        if c.note:
            print(f"{c.name:<22} note: {c.note}")
    mismatched = [
        c.name
        for c in cases
        if c.floor and len({p.features for p in res.probes[c.name].values()} | {res.floor_rows[c.name]}) != 1
    ]
    tiles = {n: p.features for c in cases if c.name.startswith("tile") for n, p in res.probes[c.name].items()}
    print(
        f"check: items pages {'hold the same features on every side' if not mismatched else 'DIFFER: ' + ', '.join(mismatched)}; "
        f"tile features {', '.join(f'{k} {v}' for k, v in tiles.items())} (Raíces also keeps features that "
        "reach only into the buffer)\n"
    )

    print("latency, one interleaved run (ms; medians, p95 in brackets)")
    head = (
        f"{'case':<22}{'Raíces':>16}{'tipg':>16}{'DB floor':>16}{'HTTP floor':>16}   "
        f"{'Raíces/tipg':<22}{'Raíces/DB floor':<22}{'rest':>6}"
    )
    print(head)
    print("-" * len(head))
    for c in cases:
        cells, p50 = [], {}
        for side in ("Raíces", "tipg", "floor", "HTTP floor"):
            st = res.seq.get((c.name, side))
            if st is None:
                cells.append(f"{'—':>16}")
                continue
            p50[side] = st.pct(0.5)
            cells.append(f"{fmt(1000 * st.pct(0.5)):>8} [{fmt(1000 * st.pct(0.95), 0):>5}]")
        r_t = p50["Raíces"] / p50["tipg"] if "tipg" in p50 else None
        r_f = p50["Raíces"] / p50["floor"] if "floor" in p50 else None
        vt = verdict(r_t, c.target_tipg) if c.target_tipg else fmt(r_t, 2) if r_t else "—"
        vf = verdict(r_f, c.target_floor) if r_f else "—"
        rest = (
            1000 * (p50["Raíces"] - p50["floor"] - p50["HTTP floor"])
            if "floor" in p50 and "HTTP floor" in p50
            else float("nan")
        )
        print(f"{c.name:<22}{''.join(cells)}   {vt:<22}{vf:<22}{fmt(rest):>6}")
    n = {k: len(st.latencies) for k, st in res.seq.items()}
    print(f"samples per side and case: {min(n.values())}–{max(n.values())}")
    print(
        "DB floor: the rows' GeoJSON by psycopg, no HTTP; HTTP floor: Raíces' own body served by a bare ASGI app "
        "in the same uvicorn and read by the same client; rest = Raíces − DB floor − HTTP floor (medians), "
        "roughly the application's own time\n"
    )

    print("memory: peak growth of the server's resident set during one request (psutil, 1 ms samples)")
    for name, m in res.memory.items():
        print(
            f"  {name:<7} limit=100 page ({mb(m.small_bytes)}): {', '.join(mb(x) for x in m.small)};"
            f" largest page ({m.large_features} features, {mb(m.large_bytes)}): {', '.join(mb(x) for x in m.large)};"
            f" RSS {mb(m.rss_before)} → {mb(m.rss_after)}"
        )
    print()
    print(f"throughput, {args.concurrency} clients × {args.seconds:g} s (req/s; ok/errors)")
    for case, by in res.load.items():
        cells = "  ".join(f"{name} {fmt(st.rps)} ({st.completed}/{st.errors})" for name, st in by.items())
        ratio = by["Raíces"].rps / by["tipg"].rps if "tipg" in by and by["tipg"].rps else None
        print(
            f"  {case:<20} {cells}" + (f"  Raíces/tipg {fmt(ratio, 2)} (higher is faster)" if ratio else "")
        )
    if "tipg" in names:
        print(
            "Latency ratios below 1 mean Raíces is faster; the DB floor has no HTTP, no count and no envelope."
        )


def main() -> None:
    """Start both servers, measure, print the comparison, stop them."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=15, help="interleaved rounds (default 15)")
    parser.add_argument("--budget", type=float, default=120.0, help="stop the rounds after this many seconds")
    parser.add_argument(
        "--concurrency", type=int, default=4, help="concurrent clients in the throughput runs"
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each throughput run")
    parser.add_argument("--tipg-python", type=Path, help="a Python that has tipg and uvicorn installed")
    parser.add_argument(
        "--tipg-venv",
        type=Path,
        default=Path(tempfile.gettempdir()) / "tipg-venv",
        help="virtual environment for tipg, created when missing (outside the repository)",
    )
    parser.add_argument("--no-tipg", action="store_true", help="measure Raíces and the floor only")
    parser.add_argument(
        "--app-root",
        type=Path,
        default=ROOT,
        help="the checkout whose app/ is served (default: this one), e.g. a `git archive HEAD` export",
    )
    args = parser.parse_args()
    if args.requests < 1 or args.concurrency < 1 or args.seconds <= 0 or args.budget <= 0:
        parser.error("--requests and --concurrency must be at least 1, --seconds and --budget positive")
    if args.concurrency > 32:
        parser.error("--concurrency is at most 32 (a benchmark, not a load test)")

    url = database_url(get_settings())
    sa_url = url.render_as_string(hide_password=False)
    pg_url = re.sub(r"^postgresql\+\w+://", "postgresql://", sa_url)
    header = [f"machine   : {os.cpu_count()} cores, load average at start {load_avg()} (1, 5, 15 min)"]

    tipg_python: Path | None = None
    tipg_version = ""
    if not args.no_tipg:
        tipg_python, tipg_version = ensure_tipg(args.tipg_python, args.tipg_venv)
        if tipg_python is None:
            print(f"tipg is not available ({tipg_version}): comparing Raíces with the floor alone.\n")

    xy = slippy_tile(TILE_LON, TILE_LAT, TILE_ZOOM)
    cases = make_cases(xy)
    servers: list[Server] = []
    static: Server | None = None
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="raices-bench-") as tmp, bench_view(sa_url):
        try:
            servers, static = start_servers(args, sa_url, pg_url, tipg_python, tipg_version, Path(tmp))
            res = run(servers, static, cases, pg_url, args)
        finally:
            for s in [*servers, *([static] if static else [])]:
                s.stop()
    header += [
        f"            load average at end {load_avg()}; whole run {time.monotonic() - started:.0f} s",
        "servers   : one uvicorn process each (asyncio loop, h11), loopback; Raíces rate limit off",
        f"tipg      : {tipg_version or '—'} serving view {VIEW} (geom_simple as geom, geom as geom_full), "
        f"tile buffer {MVT_BUFFER}; its GeoJSON has 9 decimals, Raíces' 6",
        f"items     : limit={ITEMS_LIMIT} (all 682), uncompressed; CQL2 filter {CQL2!r}",
        f"tile      : z{TILE_ZOOM}/{xy[0]}/{xy[1]} (lon {TILE_LON:g}, lat {TILE_LAT:g}), MVT",
        f"rounds    : {WARMUP} warm-up + {args.requests} interleaved rounds (Raíces, tipg, DB and HTTP floor per case)",
    ]
    report(servers, cases, res, args, header)


def start_servers(
    args: argparse.Namespace, sa_url: str, pg_url: str, tipg_python: Path | None, tipg_version: str, tmp: Path
) -> tuple[list[Server], Server]:
    """Raíces, and tipg when it is available, started and answering, and the HTTP floor's server; all
    stopped when Raíces fails."""
    env = {
        **os.environ,
        "DATABASE_URL": sa_url,
        "PYTHONPATH": str(args.app_root),
        "RAICES_RATE_LIMIT_PER_MINUTE": "0",
        "RAICES_LOG_LEVEL": "WARNING",
    }
    proc, port, log = start_server(
        "Raíces",
        Path(sys.executable),
        ["app.main:create_app", "--factory"],
        env,
        args.app_root.resolve(),
        tmp,
    )
    ours = Server("Raíces", "/collections/municipalities", proc, port, log)
    servers = [ours]
    (tmp / "static").mkdir()
    (tmp / "static" / "ready").write_bytes(b"{}")
    (tmp / "static_app.py").write_text(STATIC_APP)
    senv = {**os.environ, "BENCH_STATIC_DIR": str(tmp / "static"), "PYTHONPATH": str(tmp)}
    proc, port, log = start_server("static", Path(sys.executable), ["static_app:app"], senv, tmp, tmp)
    static = Server("static", "/ready", proc, port, log)
    if tipg_python is not None:
        tenv = {k: v for k, v in os.environ.items() if not k.startswith(("TIPG_", "VIRTUAL_ENV", "PYTHON"))}
        tenv |= {
            "DATABASE_URL": pg_url,
            "TIPG_DB_SCHEMAS": '["public"]',
            "TIPG_DB_TABLES": f'["{TIPG_COLLECTION}"]',
            f"TIPG_TABLE_CONFIG__public_{VIEW}__PK": "pcode",
            f"TIPG_TABLE_CONFIG__public_{VIEW}__GEOMCOL": "geom",
            "TIPG_MVT_TILE_BUFFER": str(MVT_BUFFER),
            "TIPG_MAX_FEATURES_PER_QUERY": "10000",
        }
        # in its own folder, so that no .env of the repository reaches it
        proc, port, log = start_server("tipg", tipg_python, ["tipg.main:app"], tenv, tmp, tmp)
        servers.append(Server("tipg", f"/collections/{TIPG_COLLECTION}", proc, port, log, tipg_version))
    ready = []
    try:
        wait_ready(static, static.ready_path)
        for s in servers:
            try:
                wait_ready(s, s.ready_path)
                ready.append(s)
            except RuntimeError as exc:
                if s.name == "Raíces":
                    raise
                print(f"tipg did not start ({exc}); comparing Raíces with the floor alone.\n")
                s.stop()
    except BaseException:
        for s in [*servers, static]:
            s.stop()
        raise
    return ready, static


if __name__ == "__main__":
    main()
