"""Engine and session factory; the one place that decides where the database is."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from defguard.config import DatabaseSettings
from defguard.db.direct import DirectPool
from defguard.db.embedded import embedded_url


def resolve_url(settings: DatabaseSettings) -> URL:
    if settings.is_external:
        return settings.external_url()
    return embedded_url(settings.data_dir, settings.db_name)


def make_engine(url: URL, *, pool_size: int = 10) -> AsyncEngine:
    return create_async_engine(url, pool_size=pool_size, max_overflow=10, pool_pre_ping=True)


class Database:
    """Holds the engine and hands out sessions; one per process."""

    def __init__(self, url: URL, *, pool_size: int = 10) -> None:
        self.url = url
        self.engine = make_engine(url, pool_size=pool_size)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)
        # For single-statement reads: no BEGIN/ROLLBACK round trips around them.
        self.autocommit_sessionmaker = async_sessionmaker(
            self.engine.execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=False
        )
        self._direct: DirectPool | None = None

    @property
    def direct(self) -> DirectPool:
        """Plain autocommit connections for the hottest client requests (see `db.direct`)."""
        if self._direct is None:
            self._direct = DirectPool(self.url)
        return self._direct

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.sessionmaker() as session:
            yield session

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session whose work commits together or not at all."""
        async with self.sessionmaker() as session, session.begin():
            yield session

    async def dispose(self) -> None:
        if self._direct is not None:
            await self._direct.close()
            self._direct = None
        await self.engine.dispose()
