"""Load: many concurrent clients on priorities, feature items and vector tiles; throughput, latency, errors.

Starts the app with uvicorn (`--workers N`) on a free loopback port against the database in use
(DATABASE_URL, else the local cluster of `make run`), warms it up (the first priorities request computes
and stores a score run), then lets `--clients` asyncio clients (one httpx.AsyncClient, loopback only)
send requests back to back for `--seconds`, spread evenly over

* `/v1/priorities?country=GTM&limit=50`
* `/collections/priorities/items?limit=100`
* `/collections/municipalities/items?limit=100&bbox=…` (boxes inside the region, seeded)
* `/tiles/priorities/{z}/{x}/{y}.mvt`, every tile of the region at z6–z9 (from the TileJSON bounds)

and prints, per endpoint and overall: requests, throughput (req/s), p50/p95/p99 latency and errors (a
status other than 2xx/304, or an exception). Exits 1 when there is any error.

The server it starts has the per-client rate limit off (RAICES_RATE_LIMIT_PER_MINUTE=0): every client
here shares one address, and the point is the service's capacity, not the limiter's. With `--url` (a
server already running) nothing is started; a rate-limited server will answer 429s, counted as errors.
The server's output goes to a temporary log, whose exceptions are summed up at the end.

Run: .venv/bin/python benchmarks/load.py [--clients 100] [--seconds 30] [--workers 2] [--url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
TILE_ZOOMS = range(6, 10)
SEED = 2021


@dataclass
class Stats:
    requests: int = 0
    latencies: list[float] = field(default_factory=list)  # of every answered request, errors included
    errors: int = 0
    samples: list[str] = field(default_factory=list)  # the first few errors, to print

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.samples) < 3:
            self.samples.append(what)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def database_url() -> str:
    """The database in use, as `raices db url` resolves it (DATABASE_URL, else the local cluster)."""
    sys.path.insert(0, str(ROOT))
    from app.db import database_url as resolve
    from app.settings import get_settings

    return resolve(get_settings()).render_as_string(hide_password=False)


@contextmanager
def serve(workers: int, log: Path) -> Iterator[str]:
    """uvicorn with `workers` processes on a free loopback port, its output in `log`; stopped (its whole
    process group) on exit."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "RAICES_LOG_LEVEL": "WARNING",
        "RAICES_RATE_LIMIT_PER_MINUTE": "0",
    }
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "app.main:create_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"uvicorn exited with {proc.returncode} before serving; see {log}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"uvicorn did not answer /health within 60 s; see {log}")
            time.sleep(0.2)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def tiles_over(bounds: list[float]) -> list[tuple[int, int, int]]:
    """Every WebMercatorQuad tile (z, x, y) at TILE_ZOOMS touching the bounds (west, south, east, north)."""
    west, south, east, north = bounds

    def xy(lon: float, lat: float, z: int) -> tuple[int, int]:
        n = 1 << z
        lat = max(min(lat, 85.0511), -85.0511)
        x = int((lon + 180.0) / 360.0 * n)
        y = int((1.0 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2.0 * n)
        return min(max(x, 0), n - 1), min(max(y, 0), n - 1)

    out = []
    for z in TILE_ZOOMS:
        x0, y0 = xy(west, north, z)
        x1, y1 = xy(east, south, z)
        out += [(z, x, y) for x in range(x0, x1 + 1) for y in range(y0, y1 + 1)]
    return out


def bboxes_in(bounds: list[float], count: int = 50) -> list[str]:
    """Seeded boxes of 0.2°–2° inside the bounds."""
    rng = random.Random(SEED)
    west, south, east, north = bounds
    out = []
    for _ in range(count):
        w, h = rng.uniform(0.2, 2.0), rng.uniform(0.2, 2.0)
        x, y = rng.uniform(west, max(west, east - w)), rng.uniform(south, max(south, north - h))
        out.append(f"{x:.4f},{y:.4f},{x + w:.4f},{y + h:.4f}")
    return out


def endpoints(bounds: list[float]) -> dict[str, list[str]]:
    """Endpoint name → the paths its requests cycle through."""
    return {
        "priorities": ["/v1/priorities?country=GTM&limit=50"],
        "items priorities": ["/collections/priorities/items?limit=100"],
        "items municipalities+bbox": [
            f"/collections/municipalities/items?limit=100&bbox={b}" for b in bboxes_in(bounds)
        ],
        "tiles z6-z9": [f"/tiles/priorities/{z}/{x}/{y}.mvt" for z, x, y in tiles_over(bounds)],
    }


def warm_up(url: str) -> list[float]:
    """One request to each kind (the first priorities request computes and stores a run); the bounds."""
    with httpx.Client(base_url=url, timeout=300) as client:
        start = time.perf_counter()
        r = client.get("/v1/priorities?country=GTM&limit=50")
        r.raise_for_status()
        print(f"warm-up: first priorities request {time.perf_counter() - start:.2f} s")
        r = client.get("/tiles/priorities.json")
        r.raise_for_status()
        bounds: list[float] = r.json()["bounds"]
        for paths in endpoints(bounds).values():
            client.get(paths[0]).raise_for_status()
        return bounds


async def run(url: str, plan: dict[str, list[str]], clients: int, seconds: float) -> dict[str, Stats]:
    stats = {name: Stats() for name in plan}
    names = list(plan)
    # keep-alive shorter than uvicorn's (5 s), so that a connection is never reused just as the server
    # closes it (that race would show as a ReadError that says nothing about the service)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients, keepalive_expiry=2.0)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http:
        stop = time.perf_counter() + seconds

        async def client(i: int) -> None:
            rng = random.Random(SEED + i)
            n = i  # clients start on different endpoints, then cycle through all of them
            while time.perf_counter() < stop:
                name = names[n % len(names)]
                n += 1
                path = rng.choice(plan[name])
                stats[name].requests += 1
                start = time.perf_counter()
                try:
                    r = await http.get(path)
                    await r.aread()
                except Exception as exc:  # every exception is an error to count, not to crash on
                    stats[name].error(f"{path}: {type(exc).__name__}: {exc}")
                    continue
                stats[name].latencies.append(time.perf_counter() - start)
                if not (200 <= r.status_code < 300 or r.status_code == 304):
                    stats[name].error(f"{path}: HTTP {r.status_code} {r.text[:120]}")

        await asyncio.gather(*(client(i) for i in range(clients)))
    return stats


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    k = min(len(sorted_values) - 1, max(0, math.ceil(q / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def report(stats: dict[str, Stats], seconds: float) -> int:
    rows = [(name, s.requests, s.latencies, s.errors) for name, s in stats.items()]
    rows.append(
        (
            "overall",
            sum(s.requests for s in stats.values()),
            [x for s in stats.values() for x in s.latencies],
            sum(s.errors for s in stats.values()),
        )
    )
    print(
        f"\n{'endpoint':<28}{'requests':>9}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'errors':>8}"
    )
    for name, n, lat, errors in rows:
        lat = sorted(lat)
        p50, p95, p99 = (percentile(lat, q) * 1000 for q in (50, 95, 99))
        print(f"{name:<28}{n:>9}{n / seconds:>9.1f}{p50:>9.0f}{p95:>9.0f}{p99:>9.0f}{errors:>8}")
    for name, s in stats.items():
        for sample in s.samples:
            print(f"  error ({name}): {sample}")
    return rows[-1][3]


def server_errors(log: Path) -> None:
    """The exceptions the server logged, most frequent first."""
    counts = Counter(
        line.strip()[:200]
        for line in log.read_text(errors="replace").splitlines()
        if re.match(r"[A-Za-z_][\w.]*(Error|Exception): ", line)
    )
    if not counts:
        log.unlink(missing_ok=True)
        return
    print(f"\nserver log {log}; exceptions logged:")
    for line, n in counts.most_common(5):
        print(f"  {n} × {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=100, help="concurrent clients (default 100)")
    parser.add_argument("--seconds", type=float, default=30.0, help="duration of the load (default 30)")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes (default 2)")
    parser.add_argument("--url", help="use this running server (on this machine) instead of starting one")
    args = parser.parse_args()
    if args.url and httpx.URL(args.url).host not in ("127.0.0.1", "localhost", "::1"):
        parser.error(
            "--url must be a loopback address: this is a load test, not to be aimed at others' hosts"
        )

    @contextmanager
    def given(url: str) -> Iterator[str]:
        yield url

    log = Path(tempfile.gettempdir()) / f"raices-load-{os.getpid()}.log"
    server = given(args.url.rstrip("/")) if args.url else serve(args.workers, log)
    with server as url:
        where = args.url or f"{url} ({args.workers} uvicorn workers)"
        print(f"server: {where}; {os.cpu_count()} CPUs here")
        bounds = warm_up(url)
        plan = endpoints(bounds)
        print(
            f"{args.clients} clients for {args.seconds:g} s; {len(plan['tiles z6-z9'])} tiles at z6-z9, "
            f"{len(plan['items municipalities+bbox'])} bboxes"
        )
        started = time.perf_counter()
        stats = asyncio.run(run(url, plan, args.clients, args.seconds))
        elapsed = time.perf_counter() - started
    errors = report(stats, elapsed)
    if not args.url:
        server_errors(log)
    print(f"\n{'no errors' if errors == 0 else f'{errors} ERRORS'} in {elapsed:.1f} s")
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
