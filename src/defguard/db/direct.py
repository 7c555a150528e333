"""Plain psycopg connections for the requests that come by the thousand per second.

Client polls and VPN-client MFA are most of a deployment's traffic, and on
those paths each database round trip through the ORM costs more Python than
the request's own work. Their handlers therefore send hand-written SQL over
these connections: autocommit (one statement is one transaction, with no
BEGIN/COMMIT round trips), prepared on first use, rows as plain tuples. What
must change atomically is done by one SQL function call (see the
`0007_client_requests` migration), so a request costs two round trips at most.

The pool is opened on first use, inside the running event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import psycopg_pool
from sqlalchemy.engine import URL

# Statements are prepared on their first execution: every one sent here repeats.
_PREPARE_THRESHOLD = 0
_CHECKOUT_TIMEOUT = 5.0


def conninfo(url: URL) -> str:
    """The libpq URI of a SQLAlchemy URL (same server, database and credentials)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


Params = Mapping[str, Any] | Sequence[Any]


class DirectConnection:
    """One pooled connection, held for the statements of one request."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._conn = conn

    async def fetchone(self, statement: str, params: Params) -> tuple[Any, ...] | None:
        cursor = await self._conn.execute(statement, params)  # type: ignore[arg-type]
        return await cursor.fetchone()

    async def fetchall(self, statement: str, params: Params) -> list[tuple[Any, ...]]:
        cursor = await self._conn.execute(statement, params)  # type: ignore[arg-type]
        return await cursor.fetchall()


class DirectPool:
    """A few autocommit connections beside the ORM's pool, for hand-written statements.

    A connection that broke (PostgreSQL restarted, a failover) raises
    `psycopg.OperationalError` in the statement that finds out, and the pool
    drops it when it comes back; callers whose statements are reads or
    idempotent function calls then `recover` and run again (see `dispatch`).
    """

    def __init__(self, url: URL, *, max_size: int = 16) -> None:
        self._pool = psycopg_pool.AsyncConnectionPool(
            conninfo(url),
            min_size=1,
            max_size=max_size,
            kwargs={
                "autocommit": True,
                "prepare_threshold": _PREPARE_THRESHOLD,
                # How these connections show in pg_stat_activity.
                "application_name": "defguard-direct",
                # Every statement here finds rows by key, and its plan is kept for
                # the connection's life: a plan made while a table was empty (a new
                # install, sessions at night) must not stay a sequential scan once
                # the table holds thousands of rows.
                "options": "-c enable_seqscan=off",
            },
            # Within the Edge's deadline for an answer.
            timeout=_CHECKOUT_TIMEOUT,
            open=False,
            name="defguard-direct",
        )
        self._opening: asyncio.Future[None] | None = None

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[DirectConnection]:
        if self._opening is None:
            # Without waiting for a first connection: if PostgreSQL is down the
            # pool keeps trying in the background (a pool that failed to
            # start would stay closed for good).
            self._opening = asyncio.ensure_future(self._pool.open(wait=False))
        if not self._opening.done():
            await asyncio.shield(self._opening)
        async with self._pool.connection() as conn:
            yield DirectConnection(conn)

    async def recover(self) -> None:
        """After a broken connection: drop every idle one that is broken too.

        A restart or failover of PostgreSQL breaks all of them at once, and
        checking each costs a round trip, so this runs only after a failure.
        """
        if self._opening is not None and self._opening.done():
            await self._pool.check()

    async def close(self) -> None:
        if self._opening is not None:
            await self._pool.close()
            self._opening = None
