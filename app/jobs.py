"""Scenario runs off the request path: a job queue (procrastinate) on the PostgreSQL the service already has.

A new scenario posted to /v1/scores is a job `compute_run` in the queue `scenarios`, which any worker
computes with `app.scoring.service.ensure_run` (retention included): a worker inside each API process
(`RAICES_INPROCESS_WORKER`, on by default, so `make run` needs nothing more) or `raices worker` processes.
Every API replica defers to, and reads from, the same tables, so any worker may take any replica's job.

One scenario, one job: a job is deferred with a queueing lock and a lock keyed by the profile's hash and
boundary sets, and a request finds the job already queued or running for its scenario before deferring
one; `ensure_run`'s advisory lock still guarantees one stored run.

procrastinate keeps no error message with a failed job, so the task stores the client-safe message of the
error (a domain error's own message, or a reference to the log for anything else) in `job_errors`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import procrastinate
import psycopg_pool
from procrastinate import exceptions as pexc
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL

from app.cache import database_key
from app.db import transaction
from app.errors import DatabaseUnavailable, InvalidParameter, InvalidProfile, RaicesError
from app.scoring.profile import Profile
from app.settings import Settings

if TYPE_CHECKING:
    from app.scoring import service

# app.scoring.service and .data (pandas, scipy, libpysal, geopandas) are imported where a job or a stored-run
# lookup needs them, not here: app.main imports this module, and the server answers /health without them

log = logging.getLogger("app.jobs")

QUEUE = "scenarios"
TASK = "compute_run"
RETRY_STALLED = "retry_stalled_scenarios"  # each minute, by whichever worker defers it first
MAINTENANCE = "scenarios-maintenance"  # its queue: its own jobs are kept an hour, not as long as scenarios'
WORKER_RETRY_S = 5.0  # the in-process worker starts again this long after losing its database
# how long the app's shutdown waits for the in-process worker: past procrastinate's 10 s for a running job
WORKER_STOP_S = 15.0
FINISH_POLL_S = 0.005  # between status reads once a job's task has returned in this process
# A worker looks for jobs on each NOTIFY and, failing one, every WORKER_POLL_S. procrastinate 3.x clears its
# new-job event after a fetch that found nothing, so a job deferred while that fetch ran (a scenario posted just
# as the previous one finished) waited for the 5 s default poll: about 1 request in 9 of benchmarks/scoring.py
# took 4-7 s instead of 0.2-0.3 s. An idle worker's fetch is one small query.
WORKER_POLL_S = 0.5
# procrastinate's statuses as the API names them
STATUSES = {
    "todo": "queued",
    "doing": "running",
    "succeeded": "succeeded",
    "failed": "failed",
    "cancelled": "cancelled",
    "aborted": "aborted",
}


class JobFailed(RaicesError):
    """A scenario job failed: the status, code and client-safe message of the error it failed with."""

    def __init__(self, status_code: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code


def conninfo(url: URL) -> str:
    """A libpq URI for procrastinate's psycopg connections from the SQLAlchemy URL in use."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def lock_key(profile: Profile, sets: list[str]) -> str:
    """The key that makes one scenario one job: the profile's hash and its sorted boundary sets."""
    return f"scenario:{profile.hash()}:{','.join(sorted(sets))}"


# --- the task ------------------------------------------------------------------------------------------------


def _record_failure(engine: Engine, job_id: int, error: RaicesError) -> None:
    with transaction(engine) as conn:
        conn.execute(
            text("""
            INSERT INTO job_errors (job_id, status, code, message) VALUES (:j, :s, :c, :m)
            ON CONFLICT (job_id) DO UPDATE SET status = :s, code = :c, message = :m, failed_at = now()"""),
            {"j": job_id, "s": error.status_code, "c": error.code, "m": error.message},
        )


def _forget_errors(engine: Engine) -> None:
    """Drop the recorded errors of jobs procrastinate no longer has."""
    with transaction(engine) as conn:
        conn.execute(
            text(
                "DELETE FROM job_errors e WHERE NOT EXISTS (SELECT 1 FROM procrastinate_jobs j WHERE j.id = e.job_id)"
            )
        )


class _Finished:
    """The jobs whose task body has returned or raised in this process (the most recent FINISHED_KEPT), with
    the stored run a successful one returned, so that a request waiting on a job the in-process worker runs
    wakes as soon as the task's work is done instead of at its next poll, and takes the run from here.
    procrastinate records the job's status a moment later; a waiter on a failed job reads it from the
    queue."""

    def __init__(self) -> None:
        self._ids: dict[tuple[str, int], int | None] = {}  # (database, job id): job ids are per database
        self._changed = threading.Condition()

    def add(self, engine: Engine, job_id: int, run: int | None) -> None:
        with self._changed:
            self._ids[(database_key(engine), job_id)] = run
            while len(self._ids) > FINISHED_KEPT:
                del self._ids[next(iter(self._ids))]
            self._changed.notify_all()

    def wait(self, engine: Engine, job_id: int, seconds: float) -> bool:
        """Whether the job's task has finished here, waiting up to `seconds` for it."""
        key = (database_key(engine), job_id)
        with self._changed:
            return self._changed.wait_for(lambda: key in self._ids, timeout=max(seconds, 0.0))

    def run(self, engine: Engine, job_id: int) -> int | None:
        """The run the job's task stored, when it finished here and succeeded."""
        with self._changed:
            return self._ids.get((database_key(engine), job_id))


FINISHED_KEPT = 256
_finished = _Finished()


def compute(
    engine: Engine, retention: service.Retention, job_id: int, profile_json: str, sets: list[str]
) -> int:
    """The job's work: the stored run of this scenario (computed when missing, older scenarios pruned). A
    failure is recorded for the pollers with a client-safe message, then re-raised so the job fails."""
    from app.scoring import service

    run = None
    try:
        profile = Profile.model_validate_json(profile_json)
        run = service.ensure_run(engine, profile, sets, retention=retention)
        return run
    except RaicesError as exc:
        _record_failure(engine, job_id, exc)
        raise
    except Exception:
        ref = uuid.uuid4().hex[:12]
        log.exception("scenario job %s failed (reference %s)", job_id, ref)
        _record_failure(
            engine, job_id, RaicesError(f"Scoring failed (reference {ref}); the error has been logged.")
        )
        raise
    finally:
        _finished.add(engine, job_id, run)


def make_queue(
    engine: Engine, settings: Settings, connector: procrastinate.BaseConnector | None = None
) -> procrastinate.App:
    """A procrastinate App on the service's database with the task `compute_run` bound to `engine`. Without
    a connector, an async one (a worker's: small pool, LISTEN/NOTIFY) on the engine's database."""
    if connector is None:
        connector = procrastinate.PsycopgConnector(
            conninfo=conninfo(engine.url),
            min_size=1,
            max_size=3,
            kwargs={"connect_timeout": settings.db_connect_timeout},
        )
    queue = procrastinate.App(connector=connector)

    @queue.task(name=TASK, queue=QUEUE, pass_context=True)
    def compute_run(context: procrastinate.JobContext, profile_json: str, sets: list[str]) -> int:
        """Score one scenario (a sync task: procrastinate runs it in a thread, off the event loop)."""
        from app.scoring import service

        assert context.job.id is not None
        retention = service.Retention.from_settings(settings)
        return compute(engine, retention, context.job.id, profile_json, sets)

    keep_hours = max(1, round(settings.scenario_runs_max_age_hours))

    @queue.periodic(cron="* * * * *", periodic_id=RETRY_STALLED)
    @queue.task(name=RETRY_STALLED, queue=MAINTENANCE, queueing_lock=RETRY_STALLED, pass_context=True)
    async def retry_stalled(context: procrastinate.JobContext, timestamp: int) -> None:
        """Put back in the queue the scenario jobs of workers that stopped sending heartbeats (a replica
        killed mid-job), which would otherwise stay `running` for every request of their scenario; and keep
        the queue's tables bounded: finished scenario jobs go when their runs may (the scenario retention
        age), this task's own after an hour."""
        manager = context.app.job_manager
        for job in await manager.get_stalled_jobs(queue=QUEUE, task_name=TASK):
            log.warning("scenario job %s: its worker is gone; queued again", job.id)
            await manager.retry_job(job)
        await manager.delete_old_jobs(
            keep_hours, queue=QUEUE, include_failed=True, include_cancelled=True, include_aborted=True
        )
        await manager.delete_old_jobs(1, queue=MAINTENANCE, include_failed=True)
        await asyncio.to_thread(_forget_errors, engine)

    return queue


# --- the API's side: find a run or a job, defer, wait, report --------------------------------------------------


@dataclass(frozen=True)
class JobState:
    """A scenario job as the API reports it."""

    id: int
    status: str  # queued | running | succeeded | failed | cancelled | aborted
    profile_hash: str
    sets: list[str]
    error: JobFailed | None = None

    @property
    def finished(self) -> bool:
        return self.status not in ("queued", "running")

    def body(self) -> dict[str, Any]:
        """The job as JSON: id, status, hash, sets, and the error (code, description) when it failed."""
        out: dict[str, Any] = {
            "job": self.id,
            "status": self.status,
            "hash": self.profile_hash,
            "sets": self.sets,
        }
        if self.error is not None:
            out["error"] = {"code": self.error.code, "description": self.error.message}
        return out


class Scenarios:
    """Scenario runs for the API: the stored run when there is one, else a job to wait for or to poll. Its
    connections to the queue (a small synchronous pool) are opened on first use and closed by `close`."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self._queue: procrastinate.App | None = None
        self._pool: psycopg_pool.ConnectionPool | None = None
        self._lock = threading.Lock()

    def queue(self) -> procrastinate.App:
        """The synchronous App the routes defer and list jobs with (opened once, thread-safe)."""
        with self._lock:
            if self._queue is None:
                pool = psycopg_pool.ConnectionPool(
                    conninfo(self.engine.url),
                    min_size=1,
                    max_size=4,
                    timeout=5,
                    open=False,
                    check=psycopg_pool.ConnectionPool.check_connection,
                    kwargs={"connect_timeout": self.settings.db_connect_timeout},
                )
                pool.open(wait=False)  # a database that is down fails the request, not the start-up
                queue = make_queue(self.engine, self.settings, procrastinate.SyncPsycopgConnector())
                queue.open(pool)
                self._pool, self._queue = pool, queue
            return self._queue

    def close(self) -> None:
        """Close the queue's connections (the App leaves a pool it was given open)."""
        with self._lock:
            if self._queue is not None:
                self._queue.close()
            if self._pool is not None:
                self._pool.close()
            self._queue = self._pool = None

    def stored_run(self, profile: Profile, set_ids: list[str] | None) -> tuple[list[str], int | None]:
        """The boundary sets (the default ones when none are given) and the stored run on the current data,
        if any. Checked before any job is made: unknown sets are a 400, unknown indicators a 422."""
        from app.scoring import data as scoring_data
        from app.scoring import service

        with self.engine.connect() as conn:
            sets = sorted(set_ids or scoring_data.default_sets(conn))
            known = set(conn.execute(text("SELECT id FROM boundary_sets")).scalars())
            unknown = [s for s in sets if s not in known]
            if unknown:
                raise InvalidParameter(f"Unknown boundary sets {unknown}; known: {', '.join(sorted(known))}.")
            codes = set(conn.execute(text("SELECT code FROM indicators")).scalars())
            missing = [i.code for i in profile.indicators() if i.code not in codes]
            if missing:
                raise InvalidProfile(f"Unknown indicators {missing}; the catalogue is at /v1/indicators.")
            version = scoring_data.data_version(conn)
            # ensure_run's own lookup (same key: profile hash, data version, sets)
            return sets, service._find(conn, profile, version, sets)

    def submit(self, profile: Profile, sets: list[str]) -> int:
        """The id of the job computing this scenario: the one already queued or running, else a new one."""
        key = lock_key(profile, sets)
        queue = self.queue()
        try:
            for status in ("doing", "todo"):
                found = queue.job_manager.list_jobs(queueing_lock=key, status=status, queue=QUEUE)
                if found and found[0].id is not None:
                    return found[0].id
            try:
                args: dict[str, Any] = {"profile_json": profile.model_dump_json(), "sets": sets}
                return queue.configure_task(TASK, queueing_lock=key, lock=key, queue=QUEUE).defer(**args)
            except pexc.AlreadyEnqueued:  # deferred by another request meanwhile
                found = queue.job_manager.list_jobs(queueing_lock=key, status="todo", queue=QUEUE)
                if found and found[0].id is not None:
                    return found[0].id
                raise
        except pexc.ConnectorException as exc:
            raise DatabaseUnavailable("The job queue's database is unavailable; try again shortly.") from exc

    def state(self, job_id: int) -> JobState | None:
        """A scenario job's state, or None when there is no such job."""
        try:
            found = self.queue().job_manager.list_jobs(id=job_id, task=TASK)
        except pexc.ConnectorException as exc:
            raise DatabaseUnavailable("The job queue's database is unavailable; try again shortly.") from exc
        if not found:
            return None
        job = found[0]
        status = STATUSES.get(str(job.status), str(job.status))
        kwargs = job.task_kwargs
        profile = Profile.model_validate_json(str(kwargs["profile_json"]))
        sets = [str(s) for s in kwargs["sets"]]  # type: ignore[union-attr]
        error = self._error(job_id) if status in ("failed", "cancelled", "aborted") else None
        return JobState(job_id, status, profile.hash(), sets, error)

    def _error(self, job_id: int) -> JobFailed:
        with self.engine.connect() as conn:
            row = conn.execute(
                text("SELECT status, code, message FROM job_errors WHERE job_id = :j"), {"j": job_id}
            ).first()
        if row is None:  # cancelled, or aborted when its worker stopped: nothing was raised
            return JobFailed(
                503, "JobAborted", "The job was stopped before it finished; post the scenario again."
            )
        return JobFailed(int(row.status), str(row.code), str(row.message))

    def wait(self, job_id: int, seconds: float) -> JobState | int:
        """The job's state once it has finished, or after `seconds` (polled, 50 ms growing to 0.5 s). A job
        whose task runs in this process (the in-process worker) wakes the wait when its task returns: the
        answer is then the run it stored, or, when it failed, the status, which procrastinate writes just
        after and which is polled from 5 ms on (doubling)."""
        deadline = time.monotonic() + seconds
        pause = 0.05
        quick = FINISH_POLL_S
        while True:
            state = self.state(job_id)
            assert state is not None  # deferred by us; jobs are only deleted by an operator
            if state.finished or time.monotonic() >= deadline:
                return state
            left = max(0.0, deadline - time.monotonic())
            if _finished.wait(self.engine, job_id, min(pause, left)):
                run = _finished.run(self.engine, job_id)
                if run is not None:
                    return run
                time.sleep(min(quick, max(0.0, deadline - time.monotonic())))
                quick = min(quick * 2, 0.5)
            else:
                pause = min(pause * 1.5, 0.5)

    def run_or_job(self, profile: Profile, set_ids: list[str] | None, wait: float) -> int | JobState:
        """The stored run of a scenario, computing it in a job and waiting up to `wait` seconds; the job
        still queued or running after that. A job that failed raises its error (as a synchronous
        computation would have)."""
        sets, run = self.stored_run(profile, set_ids)
        if run is not None:
            return run
        state = self.wait(self.submit(profile, sets), wait)
        if isinstance(state, int):  # the run the in-process worker's task stored
            return state
        if state.status == "succeeded":
            _, run = self.stored_run(profile, sets)
            if run is not None:
                return run
        if state.error is not None:
            raise state.error
        return state


def profile_of(engine: Engine, profile_hash: str) -> Profile | None:
    """The profile last stored under this hash (a scenario posted before), or None."""
    with engine.connect() as conn:
        spec = conn.execute(
            text("SELECT profile FROM score_runs WHERE profile_hash = :h ORDER BY computed_at DESC LIMIT 1"),
            {"h": profile_hash},
        ).scalar()
    return Profile.model_validate(spec) if spec is not None else None


# --- workers -----------------------------------------------------------------------------------------------------


def worker_options(settings: Settings, name: str) -> dict[str, Any]:
    """procrastinate worker options: the scenarios queue, the configured concurrency, and a fetch every
    WORKER_POLL_S when no notification came (procrastinate's default is 5 s)."""
    return {
        "queues": [QUEUE, MAINTENANCE],
        "concurrency": settings.worker_concurrency,
        "name": name,
        "fetch_job_polling_interval": WORKER_POLL_S,
    }


class InProcessWorker:
    """A procrastinate worker on the API's event loop (its sync task runs in a thread). It starts again after
    losing its database, and is stopped with the app; a job still running then is waited for up to 10 s."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.queue = make_queue(engine, settings)
        self.options = worker_options(settings, "raices-api")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="raices-job-worker")

    async def _run(self) -> None:
        while True:
            try:
                async with self.queue.open_async():
                    await self.queue.run_worker_async(
                        **self.options, install_signal_handlers=False, shutdown_graceful_timeout=10
                    )
            except Exception as exc:  # the database went away or is not migrated yet: try again later
                log.warning(
                    "job worker stopped (%s: %s); starting again in %s s",
                    type(exc).__name__,
                    exc,
                    WORKER_RETRY_S,
                )
                await asyncio.sleep(WORKER_RETRY_S)

    async def stop(self) -> None:
        """Cancel the worker and wait for it, at most WORKER_STOP_S: procrastinate's worker has been seen
        (rarely, in tests that stop an app just after starting it) never to end after a cancellation, and a
        shutdown must not hang on it; it is then cancelled once more and, failing that, left behind."""
        if self._task is None:
            return
        task, self._task = self._task, None
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=WORKER_STOP_S)
        if not done:
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=1.0)
        if not done:
            log.warning("job worker did not stop within %s s of its cancellation; left behind", WORKER_STOP_S)
        elif not task.cancelled() and task.exception() is not None:
            log.warning("job worker ended with %r", task.exception())


def run_worker(engine: Engine, settings: Settings, *, wait: bool = True) -> None:
    """A dedicated worker process (`raices worker`): computes scenario jobs until stopped (SIGINT/SIGTERM),
    or, with `wait=False`, until the queue is empty."""
    make_queue(engine, settings).run_worker(**worker_options(settings, "raices-worker"), wait=wait)
