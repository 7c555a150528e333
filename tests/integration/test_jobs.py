"""The job queue: a real worker runs deferred jobs once, and abandoned jobs are re-queued."""

from __future__ import annotations

import asyncio

import psycopg

from defguard.core.jobs import libpq_uri, make_job_app, requeue_stalled, running_worker


def _pg(url):
    return psycopg.connect(libpq_uri(url))


async def test_worker_runs_the_periodic_stalled_job_sweep(fresh_db_url, db):
    async with running_worker(fresh_db_url, db):
        for _ in range(100):
            await asyncio.sleep(0.2)
            with _pg(fresh_db_url) as c:
                done = c.execute(
                    "SELECT count(*) FROM procrastinate_jobs"
                    " WHERE task_name = 'defguard:retry_stalled_jobs' AND status = 'succeeded'"
                ).fetchone()[0]
            if done:
                break
    assert done >= 1


async def test_job_of_a_dead_worker_is_requeued(fresh_db_url, db):
    with _pg(fresh_db_url) as c:
        worker_id = c.execute(
            "INSERT INTO procrastinate_workers (last_heartbeat) VALUES (now() - interval '5 minutes')"
            " RETURNING id"
        ).fetchone()[0]
        job_id = c.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status, worker_id)"
            " VALUES ('default', 'defguard:some_task', '{}', 'doing', %s) RETURNING id",
            (worker_id,),
        ).fetchone()[0]
    app = make_job_app(fresh_db_url)
    async with app.open_async():
        # Another, live Core runs the sweep.
        retried = await requeue_stalled(app.job_manager)
    assert retried == 1
    with _pg(fresh_db_url) as c:
        assert c.execute(
            "SELECT status FROM procrastinate_jobs WHERE id = %s", (job_id,)
        ).fetchone() == ("todo",)


async def test_worker_comes_back_after_its_database_connections_are_cut(fresh_db_url, db):
    """A database restart or failover cuts every connection; jobs must keep running after it."""
    with _pg(fresh_db_url) as c:
        database = c.execute("SELECT current_database()").fetchone()[0]

    def succeeded() -> int:
        with _pg(fresh_db_url) as c:
            return c.execute(
                "SELECT count(*) FROM procrastinate_jobs"
                " WHERE task_name = 'defguard:retry_stalled_jobs' AND status = 'succeeded'"
            ).fetchone()[0]

    async with running_worker(fresh_db_url, db):
        await asyncio.sleep(1)
        with _pg(fresh_db_url) as c:
            cut = c.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (database,),
            ).fetchone()[0]
        assert cut >= 1
        before = succeeded()
        # The periodic sweep runs every 15 s; a restarted worker runs the next ones.
        for _ in range(200):
            await asyncio.sleep(0.2)
            if succeeded() > before:
                break
    assert succeeded() > before
