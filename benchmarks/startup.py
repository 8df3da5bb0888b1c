"""`make run` from a loaded database to a healthy server, step by step (issue 14: ≤ 5 s).

Run: .venv/bin/python benchmarks/startup.py [--repeat 3] [--imports]

Times, as the Makefile's `run` target runs them (read it: `run` depends on the two install stamps, then runs
`raices serve --prepare`), on the database in use (DATABASE_URL, else the local cluster of `make run`):

  1. make's install check: `make --question` on `.venv/.installed-stamp` and
     `node_modules/.installed-stamp` (pip and npm run only when pyproject.toml or package.json is newer
     than its stamp; the script says when one is, and does not run the install);
  2. `raices serve --prepare` on a free loopback port (one process: start or reuse the cluster, migrate and
     load only what is missing, serve) until `/health` answers 200; then `/ready`, the first `/collections`
     and `/v1/priorities?country=GTM&top=20`, and the default profile's top 5 printed by the same process
     (scored once /health answers), which are not part of the target;
  3. for reference, not counted: `make db`'s steps as separate processes (`raices db start`,
     `db upgrade`, `load all --missing`, `score --top 5`: what `make run` ran before it became one
     process), plain `raices serve` to `/health`, the bare start-up of a Python process that imports the
     CLI (`import app.cli`), and with `--imports` the ten slowest imports of `app.main`
     (python -X importtime).

Nothing is dropped or reloaded: on a loaded database nothing is migrated or loaded (a new data version would
make the default profile's run be computed after /health, or on the first request that needs it). Prints
each step's median over `--repeat` runs, the total against the target and which step dominates.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _servers import free_port, stop_group

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"
STAMPS = [".venv/.installed-stamp", "node_modules/.installed-stamp"]
TARGET_S = 5.0
HEALTH_TIMEOUT_S = 120.0
POLL_S = 0.02


def timed(cmd: list[str]) -> tuple[float, int, str]:
    """Seconds, exit status and the last line of output of one command run from the project root."""
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    took = time.perf_counter() - start
    lines = (out.stdout + out.stderr).strip().splitlines()
    return took, out.returncode, lines[-1][:150] if lines else ""


def stale_stamps() -> list[str]:
    """The install stamps make would rebuild (their input is newer), so pip or npm would run."""
    inputs = {".venv/.installed-stamp": "pyproject.toml", "node_modules/.installed-stamp": "package.json"}
    out = []
    for stamp, source in inputs.items():
        s, src = ROOT / stamp, ROOT / source
        if not s.exists() or src.stat().st_mtime > s.stat().st_mtime:
            out.append(f"{stamp} (older than {source})")
    return out


def serve_until_healthy(prepare: bool) -> dict[str, float]:
    """Start `raices serve [--prepare]` on a free port; seconds to /health 200, to /ready 200 and of the
    first /collections and priorities requests after it, and with --prepare until the default profile's
    table is printed; the server (its own process group) is stopped."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    label = "raices serve --prepare" if prepare else "reference: raices serve (no --prepare)"
    sink = tempfile.NamedTemporaryFile(mode="w+", suffix=".out")  # noqa: SIM115 (closed below)
    start = time.perf_counter()
    proc = subprocess.Popen(
        [str(BIN / "raices"), "serve", *(["--prepare"] if prepare else []), "--port", str(port)],
        cwd=ROOT,
        stdout=sink,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    out: dict[str, float] = {}
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            for path in ("/health", "/ready"):
                while True:
                    if proc.poll() is not None:
                        raise SystemExit(f"raices serve exited with {proc.returncode} before {path} answered")
                    if time.perf_counter() - start > HEALTH_TIMEOUT_S:
                        raise SystemExit(f"{path} did not answer 200 within {HEALTH_TIMEOUT_S:.0f} s")
                    try:
                        if client.get(path).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    time.sleep(POLL_S)
                out[f"{label} → {path} 200"] = time.perf_counter() - start
            if not prepare:
                return out
            for path in ("/collections", "/v1/priorities?country=GTM&top=20"):
                t0 = time.perf_counter()
                client.get(path).raise_for_status()
                out[f"first {path.split('?')[0]} after"] = time.perf_counter() - t0
            while "SLV" not in Path(sink.name).read_text(encoding="utf-8", errors="replace"):
                if proc.poll() is not None or time.perf_counter() - start > HEALTH_TIMEOUT_S:
                    raise SystemExit("raices serve --prepare did not print the default profile's table")
                time.sleep(POLL_S)
            out[f"{label} → default top 5 printed"] = time.perf_counter() - start
    finally:
        sink.close()
        stop_group(proc)
    return out


def slowest_imports(n: int = 10) -> list[tuple[float, str]]:
    """The `n` imports of app.main with the largest cumulative time (seconds), from python -X importtime."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import app.main"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    rows = []
    for line in out.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if m and len(m.group(2)) <= 3:  # top-level and first-level packages only
            rows.append((int(m.group(1)) / 1e6, m.group(2) + m.group(3)))
    return sorted(rows, reverse=True)[:n]


def main() -> None:
    """Time every step `repeat` times; print medians, the total and the dominant step."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs of every step (default 3)")
    parser.add_argument("--imports", action="store_true", help="also list the slowest imports of app.main")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    raices = str(BIN / "raices")
    steps = {"make install check (stamps)": ["make", "--question", *STAMPS]}
    reference = {
        "reference: raices db start": [raices, "db", "start"],
        "reference: raices db upgrade": [raices, "db", "upgrade"],
        "reference: raices load all --missing": [raices, "load", "all", "--missing"],
        "reference: raices score --top 5": [raices, "score", "--top", "5"],
        "python: import app.cli (each process pays it)": [sys.executable, "-c", "import app.cli"],
    }
    print(f"load average at start {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} CPUs")
    print(f"database: {'DATABASE_URL' if os.environ.get('DATABASE_URL') else 'the local cluster (.data/)'}")
    if stale := stale_stamps():
        print(f"note: make would reinstall first: {', '.join(stale)} (not run here)")
    times: dict[str, list[float]] = {}
    last: dict[str, str] = {}
    for _ in range(args.repeat):
        for name, cmd in {**steps, **reference}.items():
            took, rc, line = timed(cmd)
            if rc != 0 and not name.startswith("make"):
                raise SystemExit(f"{name} failed ({rc}): {line}")
            times.setdefault(name, []).append(took)
            last[name] = (
                line if not name.startswith("make") else ("up to date" if rc == 0 else "would rebuild")
            )
        for prepare in (True, False):
            for name, took in serve_until_healthy(prepare).items():
                times.setdefault(name, []).append(took)

    med = {name: statistics.median(xs) for name, xs in times.items()}
    print(f"\n{'step':<58}{'median s':>10}{'min s':>8}{'max s':>8}  last output")
    for name, xs in times.items():
        print(f"{name:<58}{med[name]:>10.2f}{min(xs):>8.2f}{max(xs):>8.2f}  {last.get(name, '')}")
    counted = [*steps, "raices serve --prepare → /health 200"]
    total = sum(med[n] for n in counted)
    top = max(counted, key=lambda n: med[n])
    print(
        f"\nmake run to healthy (sum of medians of {', '.join(counted)}): {total:.2f} s — "
        f"{total / TARGET_S:.2f}× the {TARGET_S:g} s target ({'met' if total <= TARGET_S else 'MISSED'}); "
        f"largest step: {top} ({med[top]:.2f} s, {med[top] / total:.0%})"
    )
    old = [n for n in reference if n.startswith("reference: raices")]
    before = sum(med[n] for n in old) + med["reference: raices serve (no --prepare) → /health 200"]
    print(
        f"for comparison, the old make run (make db's four processes, then raices serve) with today's imports: "
        f"{med['make install check (stamps)'] + before:.2f} s"
    )
    print(
        f"Python start-up with the CLI's imports: {med['python: import app.cli (each process pays it)']:.2f} s"
    )
    if args.imports:
        print("\nslowest imports of app.main (cumulative s):")
        for secs, name in slowest_imports():
            print(f"  {secs:6.2f}  {name}")
    print(f"\nload average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
