"""Limits and metrics are right with several uvicorn workers: `raices serve --workers 2` shares one rate
limit (counted in PostgreSQL) and every worker's scrape of /metrics gives the totals of all workers."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.settings import Settings

PER_MINUTE = 40


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def two_workers(fresh: tuple[object, Settings]) -> Iterator[str]:
    """`raices serve --workers 2` on a private copy of the loaded database; its base URL."""
    _, settings = fresh
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "RAICES_DATA_CACHE": str(settings.data_cache),
        "RAICES_RATE_LIMIT_PER_MINUTE": str(PER_MINUTE),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    raices = Path(sys.executable).with_name("raices")
    cmd = [str(raices)] if raices.exists() else [sys.executable, "-m", "app.cli"]
    proc = subprocess.Popen(
        [*cmd, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"{base}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(2)  # both workers up
        yield base
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def _ready_count(body: str) -> float:
    found = re.search(
        r'raices_http_requests_total\{method="GET",route="/ready",status="200"\} ([0-9.e+]+)', body
    )
    return float(found.group(1)) if found else 0.0


def test_rate_limit_and_metrics_are_shared_by_the_workers(two_workers: str) -> None:
    # a fresh connection per request, so the kernel spreads them over both workers
    codes = [httpx.get(f"{two_workers}/v1/countries", timeout=30).status_code for _ in range(PER_MINUTE + 20)]
    assert set(codes) <= {200, 429}
    assert codes.count(200) <= PER_MINUTE  # one limit for the service, not one per worker
    assert codes.count(429) >= 20 - 2  # (a minute boundary may free a couple)
    refused = httpx.get(f"{two_workers}/v1/countries", timeout=30)
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1

    for _ in range(20):
        assert httpx.get(f"{two_workers}/ready", timeout=30).status_code == 200
    scrapes = [_ready_count(httpx.get(f"{two_workers}/metrics", timeout=30).text) for _ in range(8)]
    assert scrapes == [20.0] * 8  # whichever worker answers, it reports both workers' requests
