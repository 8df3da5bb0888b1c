"""Load: issue 14's mixed planner read load from 100 concurrent clients; throughput, latency, errors.

Starts the app with uvicorn (`--workers N`) on a free loopback port against the database in use
(DATABASE_URL, else the local cluster of `make run`), warms it up (the first priorities request computes
and stores a score run when none is stored), then

1. times the two planner reads one at a time on the quiet server (`--single` requests each, after a
   warm-up; median and p95 against the 10 ms target): `/v1/priorities?country=GTM&top=20` and
   `/v1/municipalities/{pcode}/score` over seeded random P-codes of the default boundary sets;
2. lets `--clients` asyncio clients (spread over `--pools` httpx.AsyncClients, 10 by default, each with its
   share of the connections; loopback only) send requests back to back for `--seconds`, spread evenly over
   * priorities top-20: `/v1/priorities?country=GTM&top=20`
   * score explanations: `/v1/municipalities/{pcode}/score`, seeded random P-codes of the 682 municipios
   * tiles: `/tiles/priorities/{z}/{x}/{y}.mvt`, every tile of the region at z6–z9 (from the TileJSON bounds)
   * OGC items with a CQL2 filter: `/collections/priorities/items?limit=100&filter=country='…' AND rank <= N`
   * name search: `/v1/municipalities?q=…`, the first 3–6 letters of seeded random municipio names

and prints, per endpoint and overall: requests, throughput (req/s), p50/p95/p99 latency and errors (a
status other than 2xx/304, or an exception), then the overall throughput against issue 14's baseline
(57 req/s, p50 2.0 s, p99 2.7 s on this machine; target at least 3 times the throughput with 0 errors)
and the load average of the machine at the start and at the end. Exits 1 when there is any error.

The load's client is part of the measurement (it shares the machine's cores with the server), so it is kept
lean: with one pool of 100 connections httpcore looked over every connection for each request, and without
sniffio installed (anyio 4 no longer needs it) it tried to import it for each request; the two took about
two thirds of the client's CPU (7.4 ms per request against 2.4). `--pools 1` gives the single pool again.

The server it starts has the per-client rate limit off (RAICES_RATE_LIMIT_PER_MINUTE=0): every client
here shares one address, and the point is the service's capacity, not the limiter's. With `--url` (a
server already running) nothing is started; a rate-limited server will answer 429s, counted as errors.
The server's output goes to a temporary log, whose exceptions are summed up at the end.

Run: .venv/bin/python benchmarks/load.py [--clients 100] [--seconds 10] [--workers 2] [--pools 10] [--single 30]
[--only NAME] [--url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import httpx
import psutil
from _servers import free_port, stop_group

try:  # httpcore asks for sniffio on every request; without it each ask is a failed import (a path search)
    import sniffio  # noqa: F401
except ImportError:
    sys.modules["sniffio"] = None  # type: ignore[assignment]  # a failed import, answered from memory

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


def database_url() -> str:
    """The database in use, as `raices db url` resolves it (DATABASE_URL, else the local cluster)."""
    sys.path.insert(0, str(ROOT))
    from app.db import database_url as resolve
    from app.settings import get_settings

    return resolve(get_settings()).render_as_string(hide_password=False)


@contextmanager
def serve(workers: int, log: Path) -> Iterator[tuple[str, int | None]]:
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
        yield url, proc.pid
    finally:
        stop_group(proc)


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


BASELINE_RPS, BASELINE_P50_S, BASELINE_P99_S = 57.0, 2.0, 2.7  # issue 14, this machine, before
TARGET_FACTOR = 3.0
TARGET_SINGLE_MS = 10.0
PRIORITIES_TOP20 = "/v1/priorities?country=GTM&top=20"
COUNTRIES = ("GTM", "HND", "SLV")


@dataclass
class Units:
    """P-codes and names of the municipios of the default boundary sets, as /v1/municipalities lists them."""

    pcodes: list[str]
    names: list[str]


def units(client: httpx.Client) -> Units:
    """Every municipio of the default sets (pages of the planner list)."""
    pcodes: list[str] = []
    names: list[str] = []
    offset = 0
    while True:
        r = client.get("/v1/municipalities", params={"limit": 1000, "offset": offset})
        r.raise_for_status()
        body = r.json()
        pcodes += [i["pcode"] for i in body["items"]]
        names += [i["name"] for i in body["items"]]
        offset += len(body["items"])
        if not body["items"] or offset >= body["total"]:
            return Units(pcodes, names)


def endpoints(bounds: list[float], u: Units) -> dict[str, list[str]]:
    """Endpoint name → the paths its requests cycle through (seeded choices)."""
    rng = random.Random(SEED)
    pcodes = rng.sample(u.pcodes, min(200, len(u.pcodes)))
    prefixes = sorted({n[: rng.randint(3, 6)] for n in rng.sample(u.names, min(100, len(u.names)))})
    filters = [f"country='{c}' AND rank <= {n}" for c in COUNTRIES for n in (10, 25, 50, 100)]
    return {
        "priorities top-20": [PRIORITIES_TOP20],
        "score explanation": [f"/v1/municipalities/{p}/score" for p in pcodes],
        "tiles z6-z9": [f"/tiles/priorities/{z}/{x}/{y}.mvt" for z, x, y in tiles_over(bounds)],
        "items CQL2 filter": [
            "/collections/priorities/items?" + urlencode({"limit": 100, "filter": f}) for f in filters
        ],
        "name search": ["/v1/municipalities?" + urlencode({"q": q}) for q in prefixes],
    }


def warm_up(url: str) -> dict[str, list[str]]:
    """The first three paths of each kind once (the first priorities request computes and stores a run when
    none is stored; a path that does not answer 200 stops the run here); the plan."""
    with httpx.Client(base_url=url, timeout=300) as client:
        start = time.perf_counter()
        client.get(PRIORITIES_TOP20).raise_for_status()
        print(f"warm-up: first priorities request {time.perf_counter() - start:.2f} s")
        r = client.get("/tiles/priorities.json")
        r.raise_for_status()
        plan = endpoints(r.json()["bounds"], units(client))
        for paths in plan.values():
            for path in paths[:3]:
                r = client.get(path)
                if r.status_code != 200:
                    raise SystemExit(f"warm-up: {path} answered HTTP {r.status_code}: {r.text[:200]}")
        return plan


def single(url: str, plan: dict[str, list[str]], n: int) -> dict[str, list[float]]:
    """The two planner reads one at a time, `n` each, taking turns (score explanations over the plan's
    P-codes in turn); their latencies in seconds."""
    out: dict[str, list[float]] = {"priorities top-20": [], "score explanation": []}
    scores = plan["score explanation"]
    with httpx.Client(base_url=url, timeout=60) as client:
        for i in range(n):
            for name, path in (
                ("priorities top-20", PRIORITIES_TOP20),
                ("score explanation", scores[i % len(scores)]),
            ):
                start = time.perf_counter()
                r = client.get(path)
                _ = r.content
                out[name].append(time.perf_counter() - start)
                r.raise_for_status()
    return out


async def run(
    url: str, plan: dict[str, list[str]], clients: int, seconds: float, pools: int = 10
) -> dict[str, Stats]:
    stats = {name: Stats() for name in plan}
    names = list(plan)
    # the clients share `pools` httpx.AsyncClients (client i uses pool i mod pools), each with its share of
    # the connections: httpcore looks over every connection of its pool for each request, which with one
    # pool of 100 cost the load process more CPU than the server spent answering (--pools 1: as before).
    # Keep-alive shorter than uvicorn's (5 s), so that a connection is never reused just as the server
    # closes it (that race would show as a ReadError that says nothing about the service)
    pools = max(1, min(pools, clients))
    https = []
    for p in range(pools):
        n = clients // pools + (p < clients % pools)
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n, keepalive_expiry=2.0)
        https.append(httpx.AsyncClient(base_url=url, limits=limits, timeout=60))
    try:
        stop = time.perf_counter() + seconds

        async def client(i: int) -> None:
            http = https[i % pools]
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
    finally:
        for http in https:
            await http.aclose()
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


def _listener(url: str, default_port: int) -> psutil.Process | None:
    """The process listening on the URL's loopback port (a database URL or an HTTP one), or None (remote,
    or not found)."""
    parsed = httpx.URL(re.sub(r"^postgresql(\+\w+)?://", "http://", url))
    if parsed.host not in ("127.0.0.1", "localhost", "::1"):
        return None
    with suppress(psutil.Error):
        for conn in psutil.net_connections(kind="tcp"):
            if (
                conn.status == psutil.CONN_LISTEN
                and conn.laddr.port == (parsed.port or default_port)
                and conn.pid
            ):
                return psutil.Process(conn.pid)
    return None


def _tree(root: psutil.Process | None) -> list[psutil.Process]:
    if root is None:
        return []
    with suppress(psutil.Error):
        return [root, *root.children(recursive=True)]
    return []


def _cpu(proc: psutil.Process) -> float:
    with suppress(psutil.Error):
        t = proc.cpu_times()
        return float(t.user + t.system)
    return 0.0


class CpuMeter:
    """CPU seconds used while the load runs, by the load's clients (this process), the server's processes and
    PostgreSQL's (its postmaster's tree), and the machine's idle and stolen time: where the two cores went."""

    def __init__(self, server_url: str, server_pid: int | None, db_url: str) -> None:
        server = psutil.Process(server_pid) if server_pid else _listener(server_url, 80)
        postmaster = _listener(db_url, 5432)
        self.groups = {
            "load clients (this process)": lambda: [psutil.Process()],
            "server (uvicorn processes)": lambda: _tree(server),
            "PostgreSQL (its processes)": lambda: _tree(postmaster),
        }
        self.start = {name: {p.pid: _cpu(p) for p in f()} for name, f in self.groups.items()}
        self.machine = psutil.cpu_times()

    def report(self, requests: int) -> None:
        """Each group's CPU seconds and share; per request, and the throughput the CPU would allow if the
        service (and, second figure, the clients too) had every core to itself."""
        end = psutil.cpu_times()
        fields = ("user", "nice", "system", "irq", "softirq", "steal", "idle", "iowait")
        delta = {f: getattr(end, f, 0.0) - getattr(self.machine, f, 0.0) for f in fields}
        total = sum(delta.values()) or 1.0
        busy = total - delta["idle"] - delta["iowait"] - delta["steal"]
        print(f"\nCPU during the load ({total:.1f} CPU-seconds on {os.cpu_count()} CPUs):")
        used = {
            name: sum(_cpu(p) - self.start[name].get(p.pid, 0.0) for p in f())
            for name, f in self.groups.items()
        }
        ours = sum(used.values())
        n = max(requests, 1)
        for name, secs in used.items():
            print(f"  {name:<30}{secs:7.1f} s  {secs / total:5.0%}   {1000 * secs / n:6.1f} ms per request")
        print(f"  {'other processes (machine)':<30}{busy - ours:7.1f} s  {(busy - ours) / total:5.0%}")
        print(f"  {'stolen by the hypervisor':<30}{delta['steal']:7.1f} s  {delta['steal'] / total:5.0%}")
        print(
            f"  {'idle':<30}{delta['idle'] + delta['iowait']:7.1f} s  {(delta['idle'] + delta['iowait']) / total:5.0%}"
        )
        cores = os.cpu_count() or 1
        service = sum(v for k, v in used.items() if not k.startswith("load"))
        if service > 0:
            print(
                f"  CPU-bound ceiling on {cores} cores: {cores * n / service:.0f} req/s for the server and "
                f"PostgreSQL alone, {cores * n / ours:.0f} req/s with these clients on the same cores "
                f"(target {TARGET_FACTOR * BASELINE_RPS:g} req/s)"
            )


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def report_single(lat: dict[str, list[float]]) -> None:
    """Median and p95 of each planner read against the target."""
    print(f"\nplanner reads one at a time (target ≤ {TARGET_SINGLE_MS:g} ms median each)")
    for name, xs in lat.items():
        xs = sorted(xs)
        p50, p95 = percentile(xs, 50) * 1000, percentile(xs, 95) * 1000
        met = "met" if p50 <= TARGET_SINGLE_MS else "MISSED"
        print(
            f"  {name:<20} n={len(xs):<4} p50 {p50:6.1f} ms  p95 {p95:6.1f} ms  "
            f"p50/target {p50 / TARGET_SINGLE_MS:.2f} ({met})"
        )


def report_target(stats: dict[str, Stats], elapsed: float) -> None:
    """Overall throughput and latency against issue 14's baseline and target."""
    n = sum(s.requests for s in stats.values())
    errors = sum(s.errors for s in stats.values())
    lat = sorted(x for s in stats.values() for x in s.latencies)
    rps = n / elapsed
    met = rps >= TARGET_FACTOR * BASELINE_RPS and errors == 0
    print(
        f"\nagainst issue 14: {rps:.1f} req/s = {rps / BASELINE_RPS:.2f}× the baseline {BASELINE_RPS:g} req/s "
        f"(target ≥ {TARGET_FACTOR:g}× = {TARGET_FACTOR * BASELINE_RPS:g} req/s with 0 errors: "
        f"{rps / (TARGET_FACTOR * BASELINE_RPS):.2f} of it, {'met' if met else 'MISSED'}); p50 {percentile(lat, 50):.2f} s (baseline {BASELINE_P50_S:g} s), "
        f"p99 {percentile(lat, 99):.2f} s (baseline {BASELINE_P99_S:g} s); {errors} errors"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=100, help="concurrent clients (default 100)")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of the load (default 10)")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes (default 2)")
    parser.add_argument(
        "--pools",
        type=int,
        default=10,
        help="httpx clients the load's clients are spread over (default 10; 1: one pool of every connection)",
    )
    parser.add_argument(
        "--single",
        type=int,
        default=30,
        help="sequential requests of each planner read (default 30; 0: none)",
    )
    parser.add_argument(
        "--only", help="load one kind of request alone (e.g. 'score explanation'), for its CPU per request"
    )
    parser.add_argument("--url", help="use this running server (on this machine) instead of starting one")
    args = parser.parse_args()
    if args.url and httpx.URL(args.url).host not in ("127.0.0.1", "localhost", "::1"):
        parser.error(
            "--url must be a loopback address: this is a load test, not to be aimed at others' hosts"
        )

    @contextmanager
    def given(url: str) -> Iterator[tuple[str, int | None]]:
        yield url, None

    print(f"load average at start {load_avg()} (1, 5, 15 min); {os.cpu_count()} CPUs here")
    log = Path(tempfile.gettempdir()) / f"raices-load-{os.getpid()}.log"
    server = given(args.url.rstrip("/")) if args.url else serve(args.workers, log)
    with server as (url, pid):
        where = args.url or f"{url} ({args.workers} uvicorn workers)"
        print(f"server: {where}")
        plan = warm_up(url)
        if args.only:
            if args.only not in plan:
                raise SystemExit(f"--only must be one of: {', '.join(plan)}")
            plan_load = {args.only: plan[args.only]}
        else:
            plan_load = plan
        lat = single(url, plan, args.single) if args.single > 0 else {}
        print(
            f"{args.clients} clients ({args.pools} httpx pools) for {args.seconds:g} s; {len(plan['tiles z6-z9'])} tiles at z6-z9, "
            f"{len(plan['score explanation'])} P-codes, {len(plan['name search'])} name prefixes, "
            f"{len(plan['items CQL2 filter'])} CQL2 filters"
        )
        meter = CpuMeter(url, pid, database_url())
        started = time.perf_counter()
        stats = asyncio.run(run(url, plan_load, args.clients, args.seconds, args.pools))
        elapsed = time.perf_counter() - started
        meter.report(sum(st.requests for st in stats.values()))
    errors = report(stats, elapsed)
    if lat:
        report_single(lat)
    if not args.only:
        report_target(stats, elapsed)
    if not args.url:
        server_errors(log)
    print(
        f"\n{'no errors' if errors == 0 else f'{errors} ERRORS'} in {elapsed:.1f} s; load average at end {load_avg()}"
    )
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
