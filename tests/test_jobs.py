"""Scenario runs in a job queue (procrastinate on the service's PostgreSQL): a new scenario not computed within
RAICES_SCENARIO_WAIT_SECONDS answers 202 with a job to poll, the job's URL leads to the result, one scenario
is one job and one run, failures are reported with a message, and the API stays responsive meanwhile."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from app import jobs
from app.main import create_app
from app.scoring.service import DEFAULT_PROFILE, bundled_profiles
from app.settings import PROJECT_ROOT, Settings

# the default profile with fewer draws: real data in every country, a hash of its own
SPEC = {**bundled_profiles()[DEFAULT_PROFILE].model_dump(mode="json"), "id": "jobs-test", "draws": 20}
SLV_DRIVER = "dry_corridor_area_share"  # one of its indicators (deleted to make a job fail)


def _spec(seed: int) -> dict[str, Any]:
    return {**SPEC, "seed": seed}  # another seed, another hash: a scenario not stored yet


@pytest.fixture
def db(fresh: tuple[Engine, Settings]) -> tuple[Engine, Settings]:
    return fresh


def _client(db: tuple[Engine, Settings], **changes: Any) -> TestClient:
    engine, settings = db
    return TestClient(create_app(settings.model_copy(update={"scenario_wait_seconds": 0, **changes}), engine))


def _count(engine: Engine, sql: str, **params: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(sql), params).scalar_one())


def _poll(c: TestClient, location: str, timeout: float = 180) -> httpx.Response:
    """GET the job until it is no longer queued or running (a 303, or a 200 saying it failed)."""
    deadline = time.monotonic() + timeout
    while True:
        r = c.get(location, follow_redirects=False)
        if r.status_code != 200 or r.json()["status"] not in ("queued", "running"):
            return r
        assert r.headers["retry-after"] == "1"
        assert time.monotonic() < deadline, r.json()
        time.sleep(0.2)


def test_new_scenario_answers_202_and_polling_reaches_the_result(db: tuple[Engine, Settings]) -> None:
    engine, _ = db
    with _client(db) as c:
        r = c.post("/v1/scores", json=SPEC, params={"country": "SLV", "limit": 5})
        assert r.status_code == 202, r.text
        body = r.json()
        assert body["status"] in ("queued", "running") and body["job"] >= 1
        assert r.headers["location"] == body["location"]
        assert f"/v1/scores/jobs/{body['job']}?" in body["location"]
        assert "country=SLV" in body["location"] and "limit=5" in body["location"]
        done = _poll(c, r.headers["location"])
        assert done.status_code == 303
        target = done.headers["location"]
        assert f"/v1/scores/{body['hash']}?" in target and "country=SLV" in target
        result = c.get(target)
        assert result.status_code == 200, result.text
        out = result.json()
        assert out["profile"]["hash"] == body["hash"] and out["limit"] == 5
        assert len(out["items"]) == 5 and {i["country"] for i in out["items"]} == {"SLV"}
        assert [i["rank"] for i in out["items"]] == [1, 2, 3, 4, 5]
        # the same answer as a synchronous POST now that the run is stored (and no second job)
        again = c.post("/v1/scores", json=SPEC, params={"country": "SLV", "limit": 5})
        assert again.status_code == 200 and again.json()["items"] == out["items"]
    assert _count(engine, "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'compute_run'") == 1
    assert _count(engine, "SELECT count(*) FROM score_runs WHERE profile_hash = :h", h=body["hash"]) == 1


def test_health_answers_while_a_job_computes(db: tuple[Engine, Settings], monkeypatch: Any) -> None:
    """The job runs in a worker thread: the event loop keeps serving (with an async task it would not). The
    job's computation holds in its thread until the health checks are done, so a fast machine, where a
    scenario takes a fraction of a second, cannot finish it before they are made."""
    from app.scoring import service

    release = threading.Event()
    ensure_run = service.ensure_run

    def held_ensure_run(*args: Any, **kwargs: Any) -> int:
        release.wait(timeout=60)  # blocks the worker's thread only, unless the job runs on the event loop
        return ensure_run(*args, **kwargs)

    monkeypatch.setattr(service, "ensure_run", held_ensure_run)
    with _client(db) as c:
        location = c.post("/v1/scores", json=_spec(11)).headers["location"]
        try:
            deadline = time.monotonic() + 60
            while c.get(location).json()["status"] != "running":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            timings = []
            for _ in range(5):
                started = time.perf_counter()
                assert c.get("/health").status_code == 200
                timings.append(time.perf_counter() - started)
            still = c.get(location, follow_redirects=False)
            assert still.status_code == 200 and still.json()["status"] == "running"  # answered during the job
            assert max(timings) < 2.0, timings
        finally:
            release.set()
        assert _poll(c, location).status_code == 303


def test_same_scenario_twice_is_one_job_and_one_run_then_200_without_a_job(
    db: tuple[Engine, Settings],
) -> None:
    engine, settings = db
    spec = _spec(12)
    with _client(db, inprocess_worker=False) as c:  # no worker: the job stays queued
        first = c.post("/v1/scores", json=spec)
        second = c.post("/v1/scores", json=spec, params={"limit": 3})
        assert first.status_code == second.status_code == 202
        assert first.json()["job"] == second.json()["job"]
        assert c.get(first.headers["location"]).json()["status"] == "queued"
        assert _count(engine, "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'compute_run'") == 1
        jobs.run_worker(engine, settings, wait=False)  # a dedicated worker empties the queue
        assert _poll(c, second.headers["location"]).status_code == 303
        assert len(c.get(second.headers["location"]).json()["items"]) == 3  # followed to the result
        stored = c.post("/v1/scores", json=spec)  # stored now: 200 at once, no new job
        assert stored.status_code == 200 and stored.json()["profile"]["hash"] == first.json()["hash"]
    assert _count(engine, "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'compute_run'") == 1
    assert (
        _count(engine, "SELECT count(*) FROM score_runs WHERE profile_hash = :h", h=first.json()["hash"]) == 1
    )


def test_a_job_whose_worker_is_gone_is_queued_again(db: tuple[Engine, Settings]) -> None:
    """A replica killed mid-job leaves it `doing`; the periodic task puts it back once its worker's heartbeat
    is older than 30 s, and a worker computes it."""
    engine, settings = db
    with _client(db, inprocess_worker=False) as c:
        r = c.post("/v1/scores", json=_spec(18))
        job = r.json()["job"]
        with engine.begin() as conn:  # what a worker killed after taking the job leaves behind
            worker = conn.execute(
                text(
                    "INSERT INTO procrastinate_workers (last_heartbeat) VALUES (now() - interval '5 minutes') "
                    "RETURNING id"
                )
            ).scalar_one()
            conn.execute(
                text("UPDATE procrastinate_jobs SET status = 'doing', worker_id = :w WHERE id = :j"),
                {"w": worker, "j": job},
            )
        assert c.get(r.headers["location"]).json()["status"] == "running"
        queue = jobs.make_queue(engine, settings)

        async def retry_then_work() -> None:  # the periodic task deferred now, then a worker
            async with queue.open_async():
                await queue.tasks[jobs.RETRY_STALLED].defer_async(timestamp=0)
                await queue.run_worker_async(queues=[jobs.QUEUE, jobs.MAINTENANCE], wait=False)

        asyncio.run(retry_then_work())
        assert _poll(c, r.headers["location"]).status_code == 303


def test_failed_jobs_report_their_error(db: tuple[Engine, Settings]) -> None:
    engine, settings = db
    with _client(db, inprocess_worker=False) as c:
        catalogue = c.post("/v1/scores", json=_spec(13))
        assert catalogue.status_code == 202
        with engine.begin() as conn:
            # the catalogue changes after the request was checked and queued, before a worker takes it
            conn.execute(text("DELETE FROM indicators WHERE code = :c"), {"c": SLV_DRIVER})
        jobs.run_worker(engine, settings, wait=False)
        failed = _poll(c, catalogue.headers["location"])
        assert failed.status_code == 200
        assert failed.json()["status"] == "failed"
        assert failed.json()["error"]["code"] == "InvalidProfile"
        assert SLV_DRIVER in failed.json()["error"]["description"]


def test_an_unexpected_failure_is_reported_by_reference(db: tuple[Engine, Settings]) -> None:
    engine, settings = db
    with engine.begin() as conn:  # the detail goes to the log only
        conn.execute(text("ALTER TABLE score_zones RENAME TO score_zones_gone"))
    with _client(db, inprocess_worker=False) as c:
        r = c.post("/v1/scores", json=_spec(15))
        assert r.status_code == 202
        jobs.run_worker(engine, settings, wait=False)
        body = _poll(c, r.headers["location"]).json()
        assert body["status"] == "failed" and body["error"]["code"] == "InternalError"
        assert "reference" in body["error"]["description"]
        assert "Traceback" not in str(body) and "score_zones" not in str(body)


def test_a_failure_within_the_wait_is_the_error_itself(db: tuple[Engine, Settings]) -> None:
    engine, _ = db
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE score_zones RENAME TO score_zones_gone"))
    with _client(db, scenario_wait_seconds=120) as c:
        r = c.post("/v1/scores", json=_spec(16))
        assert r.status_code == 500 and r.json()["code"] == "InternalError"
        assert "reference" in r.json()["description"]


def test_unknown_job_and_unknown_scenario_are_404(client: TestClient) -> None:
    r = client.get("/v1/scores/jobs/987654321")
    assert r.status_code == 404 and "post the profile to /v1/scores" in r.json()["description"]
    r = client.get("/v1/scores/0123456789abcdef")
    assert r.status_code == 404 and "post its profile to /v1/scores" in r.json()["description"]
    assert client.get("/v1/scores/jobs/0").status_code == 422
    assert client.get("/v1/scores/not-a-hash").status_code == 422


def test_bad_profiles_are_refused_before_any_job(db: tuple[Engine, Settings]) -> None:
    engine, _ = db
    with _client(db, inprocess_worker=False) as c:
        r = c.post("/v1/scores", json={**SPEC, "pillars": {"IV": [{"code": "no_such_indicator"}]}})
        assert r.status_code == 422 and "no_such_indicator" in r.json()["description"]
        r = c.post("/v1/scores", json=SPEC, params={"set": "no-such-set"})
        assert r.status_code == 400 and "no-such-set" in r.json()["description"]
    assert _count(engine, "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'compute_run'") == 0


def test_raices_worker_computes_a_replicas_job(db: tuple[Engine, Settings]) -> None:
    """An API without a worker of its own defers; `raices worker`, another process, computes."""
    _, settings = db
    with _client(db, inprocess_worker=False) as c:
        r = c.post("/v1/scores", json=_spec(17))
        assert r.status_code == 202
        raices = Path(sys.executable).with_name("raices")
        cmd = [str(raices)] if raices.exists() else [sys.executable, "-m", "app.cli"]
        env = {**os.environ, "DATABASE_URL": str(settings.database_url), "RAICES_LOG_LEVEL": "WARNING"}
        proc = subprocess.Popen([*cmd, "worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            done = _poll(c, r.headers["location"])
        finally:
            proc.terminate()
            _, stderr = proc.communicate(timeout=60)
        assert done.status_code == 303, (done.text, stderr.decode()[-2000:])
        assert c.get(done.headers["location"]).status_code == 200


def test_the_migrated_queue_schema_is_the_installed_procrastinates() -> None:
    """Migration 0010 applies a copy of procrastinate 3.10.0's schema: an upgrade of procrastinate that
    changes it needs a migration (and a new copy), and this fails until there is one."""
    from procrastinate.schema import SchemaManager

    copy = (PROJECT_ROOT / "migrations" / "procrastinate" / "schema-3.10.0.sql").read_text(encoding="utf-8")
    assert SchemaManager.get_schema() == copy


def test_shutdown_does_not_hang_on_a_worker_that_ignores_its_cancellation(
    db: tuple[Engine, Settings], monkeypatch: Any
) -> None:
    """procrastinate's worker was seen (rarely) never to end after the app cancelled it, and the app's shutdown
    hung on it. A worker that turns its first cancellation into a wait that never ends (as procrastinate
    does: it stops its loop and waits for it) is cancelled once more after a bound (WORKER_STOP_S), and the app stops."""

    async def stuck(self: jobs.InProcessWorker) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.Event().wait()  # its loop, which never ends

    monkeypatch.setattr(jobs.InProcessWorker, "_run", stuck)
    monkeypatch.setattr(jobs, "WORKER_STOP_S", 0.2)
    stopped = threading.Event()

    def serve() -> None:
        with _client(db) as c:
            assert c.get("/health").status_code == 200
        stopped.set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    thread.join(timeout=60)
    assert stopped.is_set(), "the app's shutdown hung on its job worker"
