"""Scheduled and background work through a PostgreSQL job queue (procrastinate).

Every Core runs a worker. The queue hands each job to exactly one worker;
periodic jobs are deferred once per tick whatever the number of Cores (the
queue de-duplicates them by task and timestamp); a job whose Core died
mid-way is found by `retry_stalled_jobs` (its worker stops sending heartbeats)
and run again by another Core. Tasks must therefore be idempotent: they are
written as "bring the database to the state it should be in now".

Features register their tasks on `tasks` (a blueprint) at import time; the
per-process `App` binds them to a connection when the Core starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import procrastinate
import structlog
from procrastinate.manager import JobManager
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession

from defguard.db.direct import conninfo
from defguard.db.engine import Database

log = structlog.get_logger("defguard.core.jobs")

tasks = procrastinate.Blueprint()

# Jobs of a worker silent for this long are considered abandoned.
STALLED_AFTER_SECONDS = 30.0
HEARTBEAT_SECONDS = 5.0
WORKER_RESTART_SECONDS = 2.0


def libpq_uri(url: URL) -> str:
    """The same server and credentials as the ORM's, for psycopg used directly."""
    return conninfo(url)


_bound: procrastinate.App | None = None


def make_job_app(url: URL) -> procrastinate.App:
    """The process's queue app, pointed at `url`.

    procrastinate binds a blueprint's tasks to the one app they are added to
    (it renames them in place), so every process has a single app whose
    connection is (re)configured here; a Core process configures it once.
    """
    global _bound
    if _bound is None:
        _bound = procrastinate.App(connector=procrastinate.PsycopgConnector())
        _bound.add_tasks_from(tasks, namespace="defguard")
    connector = procrastinate.PsycopgConnector(conninfo=libpq_uri(url), min_size=1, max_size=4)
    _bound.connector = connector
    _bound.job_manager.connector = connector
    return _bound


_DEFER = text(
    """
    SELECT procrastinate_defer_jobs_v1(ARRAY[ROW(
        :queue, :task, 0, :lock, :queueing_lock, CAST(:args AS jsonb), :scheduled_at
    )::procrastinate_job_to_defer_v1])
    """
)


async def defer_in(
    db: AsyncSession,
    task_name: str,
    *,
    queue: str = "default",
    lock: str | None = None,
    queueing_lock: str | None = None,
    scheduled_at: datetime | None = None,
    **args: Any,
) -> None:
    """Queue a job in the caller's transaction: it exists if and only if the change commits.

    procrastinate's own `defer` uses its own connection, which would queue an
    e-mail for a change that is later rolled back (or lose it when the Core
    dies between the commit and the defer). `task_name` is the bare name a
    task was registered with here; the blueprint's namespace is added.
    """
    await db.execute(
        _DEFER,
        {
            "queue": queue,
            "task": f"defguard:{task_name}",
            "lock": lock,
            "queueing_lock": queueing_lock,
            "args": json.dumps(args),
            "scheduled_at": scheduled_at,
        },
    )


def database_of(context: procrastinate.JobContext) -> Database:
    return context.additional_context["db"]


@tasks.periodic(cron="* * * * * */15", periodic_id="retry-stalled")
@tasks.task(
    name="retry_stalled_jobs", queue="maintenance", pass_context=True, queueing_lock="retry-stalled"
)
async def retry_stalled_jobs(context: procrastinate.JobContext, timestamp: int) -> int:
    del timestamp
    return await requeue_stalled(context.app.job_manager)


async def requeue_stalled(manager: JobManager) -> int:
    """Re-queue jobs whose worker stopped sending heartbeats (its Core died mid-job)."""
    stalled = await manager.get_stalled_jobs(seconds_since_heartbeat=STALLED_AFTER_SECONDS)
    retried = 0
    for job in stalled:
        await manager.retry_job(job)
        retried += 1
        log.warning("re-queued a job abandoned by a dead worker", job_id=job.id, task=job.task_name)
    return retried


@contextlib.asynccontextmanager
async def running_worker(
    url: URL, db: Database, **options: Any
) -> AsyncIterator[procrastinate.App]:
    """Open the queue and run this process's worker in the background for the block's duration.

    The worker is restarted whenever it stops on its own: procrastinate ends
    a worker when its LISTEN connection fails, which a database restart or
    failover does to every Core at once, and a Core whose API stays up while
    its jobs silently stopped would be worse than one that is down.
    """
    app = make_job_app(url)
    stopping = asyncio.Event()

    async def supervise() -> None:
        while not stopping.is_set():
            try:
                await app.run_worker_async(
                    install_signal_handlers=False,
                    additional_context={"db": db},
                    update_heartbeat_interval=HEARTBEAT_SECONDS,
                    stalled_worker_timeout=STALLED_AFTER_SECONDS,
                    shutdown_graceful_timeout=10,
                    **options,
                )
                if stopping.is_set():
                    return
                log.warning("job worker stopped; restarting it")
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("job worker failed; restarting it")
            await asyncio.sleep(WORKER_RESTART_SECONDS)

    async with app.open_async():
        worker = asyncio.create_task(supervise(), name="job-worker")
        try:
            yield app
        finally:
            stopping.set()
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
