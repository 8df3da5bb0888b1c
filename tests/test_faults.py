"""Faults: the database restarted while serving, a load killed half way."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from fastapi.testclient import TestClient
from sqlalchemy import text

from app.cluster import Cluster
from app.db import make_engine, upgrade
from app.main import create_app
from app.settings import Settings
from tests.conftest import PG, snapshot


def test_database_restart_fails_fast_then_recovers(settings: Settings) -> None:
    root = Path(tempfile.mkdtemp(prefix="raices-fault-"))
    root.chmod(0o755)
    cluster = Cluster(root / "cluster")
    try:
        cluster.start()
        upgrade(cluster.url)
        s = settings.model_copy(update={"database_url": cluster.url, "db_connect_timeout": 2})
        engine = make_engine(s, cluster.url)
        with TestClient(create_app(s, engine)) as c:
            assert c.get("/v1/countries").status_code == 200
            cluster.stop()
            started = time.monotonic()
            down = c.get("/v1/countries")
            health = c.get("/health")
            ready = c.get("/ready")
            elapsed = time.monotonic() - started
            assert down.status_code == 503 and down.json()["code"] == "ServiceUnavailable"
            assert down.headers["retry-after"] == "5"
            assert health.status_code == 503 and ready.status_code == 503
            assert elapsed < 15  # three requests, each bounded by the connect timeout
            cluster.start()
            assert c.get("/v1/countries").status_code == 200  # pre-ping: the pool recovers by itself
            assert c.get("/health").status_code == 200
        engine.dispose()
    finally:
        cluster.destroy()
        shutil.rmtree(root, ignore_errors=True)


def test_load_killed_half_way_leaves_previous_data(fresh: tuple, pg: PG) -> None:
    """Block the SLV load on the crosswalk table after it has rewritten the units in its transaction, kill the
    process there, and find the previous data intact and nothing left locked."""
    engine, settings = fresh
    with engine.begin() as conn:
        conn.execute(text("UPDATE admin_units SET name = 'Before the kill' WHERE pcode = 'SV0101'"))
    before = snapshot(engine)
    url = engine.url.render_as_string(hide_password=False)
    blocker = psycopg.connect(url.replace("postgresql+psycopg", "postgresql"))
    blocker.execute("LOCK TABLE crosswalk IN ACCESS EXCLUSIVE MODE")  # held until we roll back
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "RAICES_DATA_CACHE": str(settings.data_cache),
        "RAICES_ALLOW_DOWNLOAD": "false",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "load", "slv-codab-2021", "--force"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        waiting = False
        with psycopg.connect(url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as watch:
            while time.monotonic() < deadline and not waiting:
                waiting = bool(
                    watch.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND query ILIKE '%crosswalk%'"
                    ).fetchone()[0]
                )
                time.sleep(0.1)
        assert waiting, "the load never reached the crosswalk"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        blocker.rollback()
        blocker.close()
    time.sleep(0.5)  # the server notices the dead client and rolls its transaction back
    assert snapshot(engine) == before
    with engine.connect() as conn:
        assert (
            conn.execute(text("SELECT name FROM admin_units WHERE pcode = 'SV0101'")).scalar()
            == "Before the kill"
        )
