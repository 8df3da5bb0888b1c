"""OGC API Features items and a vector tile from Raíces against tipg serving the same PostGIS rows.

Run: .venv/bin/python benchmarks/features.py [--requests 30] [--concurrency 4] [--seconds 5]

Both servers are started by this script on free loopback ports (one uvicorn process each, asyncio loop and
h11 on both so that only the applications differ) and stopped at the end, even on failure. tipg
(developmentseed, PyPI `tipg`) runs from its own virtual environment outside the repository, created on
first use (default: <tmp>/tipg-venv, or --tipg-python); when it cannot be installed or started the script
says so and prints the Raíces numbers alone.

tipg serves a view created for the run and dropped at the end, `bench_municipalities`: the same 682 rows
and properties as the `municipalities` collection (level-2 units of the default boundary sets) with the
simplified geometry `geom_simple` as its geometry column. Measured, for each server side by side:
  1. items, limit=1000 (all 682 features, simplified geometry): latency p50/p95 over N sequential
     requests after a warm-up (the servers take turns, request by request), then throughput with C
     concurrent clients for S seconds;
  2. the z6 tile over Guatemala/Honduras (lon -89, lat 15): the same measures.
Responses are asked for uncompressed (tipg would compress them, Raíces does not). Needs a loaded database
(`make run` once, or DATABASE_URL).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import mapbox_vector_tile
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
WARMUP = 3
STARTUP_TIMEOUT_S = 60.0
PIP_TIMEOUT_S = 300
CLIENT_TIMEOUT_S = 30.0
MAX_REQUESTS_PER_CLIENT = 5000
HEADERS = {"Accept-Encoding": "identity"}

# The municipalities collection of app.ogc.collections, as a view; typed geometry column so that tipg (and
# geometry_columns) see a MultiPolygon in EPSG:4326.
VIEW_SQL = f"""
CREATE OR REPLACE VIEW {VIEW} AS
SELECT u.pcode, u.national_code, u.name, u.country, u.parent_pcode AS department_pcode,
       d.name AS department_name, u.boundary_set_id AS boundary_set,
       round(u.area_km2::numeric, 3)::float8 AS area_km2,
       u.geom_simple::geometry(MultiPolygon, 4326) AS geom
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


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
    items_path: str
    tile_path: str
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


# --- measures ------------------------------------------------------------------------------------------


@dataclass
class Probe:
    """What one response of a server holds."""

    status: int
    size: int
    features: int
    note: str = ""


def probe_items(r: httpx.Response) -> Probe:
    body = r.json()
    feats = body.get("features", [])
    props = sorted(feats[0].get("properties", {})) if feats else []
    note = f"numberMatched={body.get('numberMatched')} numberReturned={body.get('numberReturned')}"
    return Probe(r.status_code, len(r.content), len(feats), f"{note}; properties {props}")


def probe_tile(r: httpx.Response) -> Probe:
    layers = mapbox_vector_tile.decode(r.content) if r.content else {}
    n = sum(len(layer["features"]) for layer in layers.values())
    return Probe(
        r.status_code, len(r.content), n, f"layers {sorted(layers)}; {r.headers.get('content-type')}"
    )


@dataclass
class Stats:
    """Latencies (seconds) of the sequential requests, and the throughput run."""

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


def sequential(servers: list[Server], paths: dict[str, str], n: int, budget_s: float) -> dict[str, Stats]:
    """N requests per server after a warm-up, the servers taking turns; stops early past `budget_s`."""
    stats = {s.name: Stats() for s in servers}
    with httpx.Client(timeout=CLIENT_TIMEOUT_S, headers=HEADERS) as client:
        for s in servers:
            for _ in range(WARMUP):
                client.get(s.base + paths[s.name]).raise_for_status()
        deadline = time.monotonic() + budget_s
        for _ in range(n):
            for s in servers:
                start = time.perf_counter()
                r = client.get(s.base + paths[s.name])
                _ = r.content
                took = time.perf_counter() - start
                r.raise_for_status()
                stats[s.name].latencies.append(took)
            if time.monotonic() > deadline:
                break
    return stats


def throughput(server: Server, path: str, clients: int, seconds: float, into: Stats) -> None:
    """`clients` threads, each with its own connection, requesting `path` back to back for `seconds`."""
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def worker() -> None:
        done = errors = 0
        with httpx.Client(timeout=CLIENT_TIMEOUT_S, headers=HEADERS) as client:
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


# --- report --------------------------------------------------------------------------------------------


def fmt(v: float, digits: int = 1) -> str:
    return "—" if v is None or math.isnan(v) else f"{v:,.{digits}f}"


def print_table(rows: list[tuple[str, float, float | None, str]], with_tipg: bool) -> None:
    """metric, Raíces, tipg, Raíces/tipg and which way is better."""
    head = f"{'metric':<34}{'Raíces':>12}"
    if with_tipg:
        head += f"{'tipg':>12}{'Raíces/tipg':>13}  better"
    print(head)
    print("-" * len(head.ljust(80 if with_tipg else 46)))
    for metric, ours, theirs, better in rows:
        digits = 0 if "bytes" in metric or "features" in metric else 1
        line = f"{metric:<34}{fmt(ours, digits):>12}"
        if with_tipg:
            ratio = ours / theirs if theirs else float("nan")
            if better == "lower":
                winner = "Raíces" if ratio < 1 else "tipg"
            elif better == "higher":
                winner = "Raíces" if ratio > 1 else "tipg"
            else:
                winner = ""
            verdict = f"{better}: {winner}" if better else ""
            line += f"{fmt(theirs if theirs is not None else float('nan'), digits):>12}{fmt(ratio, 2):>13}  {verdict}"
        print(line)


def main() -> None:
    """Start both servers, check they answer alike, measure, print the comparison, stop them."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--requests", type=int, default=30, help="sequential requests per server and endpoint"
    )
    parser.add_argument(
        "--concurrency", type=int, default=4, help="concurrent clients in the throughput runs"
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each throughput run")
    parser.add_argument("--tipg-python", type=Path, help="a Python that has tipg and uvicorn installed")
    parser.add_argument(
        "--tipg-venv",
        type=Path,
        default=Path(tempfile.gettempdir()) / "tipg-venv",
        help="virtual environment for tipg, created when missing (outside the repository)",
    )
    parser.add_argument("--no-tipg", action="store_true", help="measure Raíces only")
    parser.add_argument(
        "--app-root",
        type=Path,
        default=ROOT,
        help="the checkout whose app/ is served (default: this one), e.g. a `git archive HEAD` export",
    )
    args = parser.parse_args()
    if args.requests < 1 or args.concurrency < 1 or args.seconds <= 0:
        parser.error("--requests and --concurrency must be at least 1, --seconds positive")
    if args.concurrency > 32:
        parser.error("--concurrency is at most 32 (a benchmark, not a load test)")

    url = database_url(get_settings())
    sa_url = url.render_as_string(hide_password=False)
    pg_url = re.sub(r"^postgresql\+\w+://", "postgresql://", sa_url)

    tipg_python: Path | None = None
    tipg_version = ""
    if not args.no_tipg:
        tipg_python, tipg_version = ensure_tipg(args.tipg_python, args.tipg_venv)
        if tipg_python is None:
            print(f"tipg is not available ({tipg_version}): measuring Raíces alone.\n")

    x, y = slippy_tile(TILE_LON, TILE_LAT, TILE_ZOOM)
    cpus = os.cpu_count()
    servers: list[Server] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="raices-bench-") as tmp, bench_view(sa_url):
        try:
            env = {**os.environ, "DATABASE_URL": sa_url, "PYTHONPATH": str(args.app_root)}
            proc, port, log = start_server(
                "Raíces",
                Path(sys.executable),
                ["app.main:create_app", "--factory"],
                env,
                args.app_root.resolve(),
                Path(tmp),
            )
            servers.append(
                Server(
                    "Raíces",
                    f"/collections/municipalities/items?limit={ITEMS_LIMIT}",
                    f"/tiles/municipalities/{TILE_ZOOM}/{x}/{y}.mvt",
                    proc,
                    port,
                    log,
                )
            )
            if tipg_python is not None:
                tenv = {
                    k: v
                    for k, v in os.environ.items()
                    if not k.startswith(("TIPG_", "VIRTUAL_ENV", "PYTHON"))
                }
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
                proc, port, log = start_server(
                    "tipg", tipg_python, ["tipg.main:app"], tenv, Path(tmp), Path(tmp)
                )
                servers.append(
                    Server(
                        "tipg",
                        f"/collections/{TIPG_COLLECTION}/items?limit={ITEMS_LIMIT}",
                        f"/collections/{TIPG_COLLECTION}/tiles/WebMercatorQuad/{TILE_ZOOM}/{x}/{y}",
                        proc,
                        port,
                        log,
                        tipg_version,
                    )
                )
            ready = []
            for s in servers:
                try:
                    wait_ready(s, s.items_path.split("?")[0].removesuffix("/items") or "/")
                    ready.append(s)
                except RuntimeError as exc:
                    if s.name == "Raíces":
                        raise
                    print(f"tipg did not start ({exc}); measuring Raíces alone.\n")
                    s.stop()
            servers = ready
            results = run(servers, args)
        finally:
            for s in servers:
                s.stop()
    total = time.monotonic() - started
    report(servers, results, args, (x, y), cpus, total)


@dataclass
class Results:
    """Everything measured, by endpoint then server name."""

    probes: dict[str, dict[str, Probe]]
    seq: dict[str, dict[str, Stats]]
    load: dict[str, dict[str, Stats]]


def run(servers: list[Server], args: argparse.Namespace) -> Results:
    """Check one response of each kind from each server, then measure."""
    endpoints: dict[str, Callable[[Server], str]] = {
        "items": lambda s: s.items_path,
        "tile": lambda s: s.tile_path,
    }
    probes: dict[str, dict[str, Probe]] = {}
    seq: dict[str, dict[str, Stats]] = {}
    load: dict[str, dict[str, Stats]] = {}
    with httpx.Client(timeout=CLIENT_TIMEOUT_S, headers=HEADERS) as client:
        for ep, path in endpoints.items():
            probes[ep] = {}
            for s in servers:
                r = client.get(s.base + path(s))
                if r.status_code != 200:
                    raise RuntimeError(f"{s.name} {path(s)}: HTTP {r.status_code} {r.text[:300]}")
                probes[ep][s.name] = probe_items(r) if ep == "items" else probe_tile(r)
    for ep, path in endpoints.items():
        paths = {s.name: path(s) for s in servers}
        seq[ep] = sequential(servers, paths, args.requests, budget_s=max(15.0, 3 * args.seconds))
        load[ep] = {}
        for s in servers:
            load[ep][s.name] = Stats()
            throughput(s, paths[s.name], args.concurrency, args.seconds, load[ep][s.name])
    return Results(probes, seq, load)


def report(
    servers: list[Server],
    res: Results,
    args: argparse.Namespace,
    xy: tuple[int, int],
    cpus: int | None,
    total: float,
) -> None:
    """Print what was compared and the table."""
    names = [s.name for s in servers]
    with_tipg = "tipg" in names
    print(f"machine   : {cpus} cores; both servers one uvicorn process (asyncio loop, h11), loopback")
    if with_tipg:
        tipg = next(s for s in servers if s.name == "tipg")
        print(
            f"tipg      : {tipg.version or '?'} serving view {VIEW} (geom_simple as geom), tile buffer {MVT_BUFFER}"
        )
    print(f"items     : limit={ITEMS_LIMIT}, simplified geometry, uncompressed")
    print(f"tile      : z{TILE_ZOOM}/{xy[0]}/{xy[1]} (lon {TILE_LON:g}, lat {TILE_LAT:g}), MVT")
    print(
        f"measures  : {WARMUP} warm-up + {args.requests} sequential requests per server (taking turns); "
        f"{args.concurrency} clients × {args.seconds:g} s for throughput\n"
    )
    for ep in res.probes:
        for name, p in res.probes[ep].items():
            print(f"{ep:<5} {name:<7} HTTP {p.status}, {p.size:,} bytes, {p.features} features — {p.note}")
    items_ok = all(p.features == EXPECTED_FEATURES for p in res.probes["items"].values())
    tiles = {name: p.features for name, p in res.probes["tile"].items()}
    tile_note = "equal" if len(set(tiles.values())) == 1 else "differ"
    if tiles.get("Raíces", 0) > tiles.get("tipg", tiles.get("Raíces", 0)):
        tile_note += (
            " (tipg selects the features that touch the tile, Raíces those that touch its buffer too)"
        )
    print(
        f"check: items {'all' if items_ok else 'NOT all'} {EXPECTED_FEATURES} features on every server; "
        f"tile features {', '.join(f'{k} {v}' for k, v in tiles.items())}: {tile_note}\n"
    )

    rows: list[tuple[str, float, float | None, str]] = []
    for ep in res.probes:
        ours, theirs = res.seq[ep]["Raíces"], res.seq[ep].get("tipg")
        lo, lt = res.load[ep]["Raíces"], res.load[ep].get("tipg")
        rows += [
            (f"{ep} latency p50 (ms)", 1000 * ours.pct(0.5), theirs and 1000 * theirs.pct(0.5), "lower"),
            (f"{ep} latency p95 (ms)", 1000 * ours.pct(0.95), theirs and 1000 * theirs.pct(0.95), "lower"),
            (f"{ep} throughput, {args.concurrency} clients (req/s)", lo.rps, lt and lt.rps, "higher"),
            (f"{ep} response (bytes)", res.probes[ep]["Raíces"].size, _size(res, ep), ""),
            (f"{ep} features", res.probes[ep]["Raíces"].features, _count(res, ep), ""),
        ]
    print_table(rows, with_tipg)
    samples = ", ".join(
        f"{ep} {name} {len(st.latencies)}" for ep in res.seq for name, st in res.seq[ep].items()
    )
    errors = ", ".join(
        f"{ep} {name} {st.completed}/{st.errors}" for ep in res.load for name, st in res.load[ep].items()
    )
    print(f"\nsequential samples: {samples}")
    print(f"throughput requests ok/errors: {errors}")
    if with_tipg:
        print("Raíces/tipg < 1 on latency and > 1 on throughput mean Raíces is faster.")
    print(f"whole run: {total:.0f} s")


def _size(res: Results, ep: str) -> float | None:
    p = res.probes[ep].get("tipg")
    return p.size if p else None


def _count(res: Results, ep: str) -> float | None:
    p = res.probes[ep].get("tipg")
    return p.features if p else None


if __name__ == "__main__":
    main()
