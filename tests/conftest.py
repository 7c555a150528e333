"""Test fixtures: one embedded PostgreSQL per run, a migrated template, a fresh database per test."""

from __future__ import annotations

import itertools
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import URL, make_url

from defguard.config import CoreSettings
from defguard.core.app import create_app
from defguard.core.auth.models import Session
from defguard.core.auth.passwords import hash_password_sync
from defguard.core.bootstrap import bootstrap
from defguard.core.groups.models import Group
from defguard.core.users.models import User
from defguard.db.base import utcnow
from defguard.db.embedded import ensure_server
from defguard.db.engine import Database
from defguard.db.migrate import upgrade

TEMPLATE = "defguard_template"
ADMIN_PASSWORD = "Adm1n!Passw0rd"
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64; rv:123.0) Gecko/20100101 Firefox/123.0"
_counter = itertools.count()


def require_tools(*tools: str, root: bool = False) -> None:
    """Skip locally when a tool is missing, but fail loudly in CI where it must be present."""
    missing = [t for t in tools if shutil.which(t) is None]
    problem = None
    if missing:
        problem = f"missing tools: {', '.join(missing)}"
    elif root and os.geteuid() != 0:
        problem = "needs root"
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"{problem} (CI must provide them; see .ci/run)")
        pytest.skip(problem)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[object]:
    tmp = Path(tempfile.mkdtemp(prefix="defguard-test-pg-"))
    server = ensure_server(tmp)
    try:
        yield server
    finally:
        server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_admin_uri(pg_server: object) -> str:
    return pg_server.get_uri("postgres")  # type: ignore[attr-defined]


def _db_url(admin_uri: str, name: str) -> URL:
    return make_url(admin_uri).set(drivername="postgresql+psycopg", database=name)


@pytest.fixture(scope="session")
def template_db(pg_admin_uri: str) -> str:
    with psycopg.connect(pg_admin_uri, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(TEMPLATE)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
    upgrade(_db_url(pg_admin_uri, TEMPLATE))
    return TEMPLATE


@pytest.fixture
def fresh_db_url(pg_admin_uri: str, template_db: str) -> Iterator[URL]:
    """A new database cloned from the migrated template, dropped after the test."""
    name = f"t_{os.getpid()}_{next(_counter)}"
    with psycopg.connect(pg_admin_uri, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                sql.Identifier(name), sql.Identifier(template_db)
            )
        )
    try:
        yield _db_url(pg_admin_uri, name)
    finally:
        with psycopg.connect(pg_admin_uri, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def empty_db_url(pg_admin_uri: str) -> Iterator[URL]:
    """A new database with no schema at all, for migration tests."""
    name = f"e_{os.getpid()}_{next(_counter)}"
    with psycopg.connect(pg_admin_uri, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _db_url(pg_admin_uri, name)
    finally:
        with psycopg.connect(pg_admin_uri, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
async def db(fresh_db_url: URL) -> AsyncIterator[Database]:
    database = Database(fresh_db_url, pool_size=5)
    await bootstrap(database, ADMIN_PASSWORD)
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
def settings() -> CoreSettings:
    return CoreSettings(url="http://localhost:8000", enrollment_url="http://localhost:8080")


@pytest.fixture
async def app(settings: CoreSettings, db: Database):
    return create_app(settings, db)


@pytest.fixture
async def client(app) -> AsyncIterator[httpx.AsyncClient]:
    """An anonymous client speaking real HTTP semantics to the ASGI app."""
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 40000))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver/api/v1", headers={"User-Agent": USER_AGENT}
    ) as c:
        yield c


async def make_user(
    db: Database,
    username: str,
    *,
    password: str | None = "Us3r!Passw0rd",
    admin: bool = False,
    email: str | None = None,
    active: bool = True,
) -> User:
    """Insert a user directly (fixtures only; the users API has its own tests)."""
    async with db.transaction() as s:
        user = User(
            username=username,
            first_name=username.capitalize(),
            last_name="Tester",
            email=email or f"{username}@example.com",
            password_hash=hash_password_sync(password) if password else None,
            is_active=active,
        )
        if admin:
            from sqlalchemy import select

            group = (await s.execute(select(Group).where(Group.is_admin))).scalars().first()
            user.groups.append(group)
        s.add(user)
    return user


async def session_cookie(db: Database, user: User, *, mfa_verified: bool = True) -> str:
    """A server-side session row for `user`, as a successful login would create."""
    sid = secrets.token_hex(12)
    async with db.transaction() as s:
        s.add(
            Session(
                id=sid,
                user_id=user.id,
                mfa_verified=mfa_verified,
                expires=utcnow() + timedelta(days=1),
            )
        )
    return sid


async def _client_as(app, db: Database, username: str) -> httpx.AsyncClient:
    from sqlalchemy import select

    async with db.session() as s:
        user = (await s.execute(select(User).where(User.username == username))).scalar_one()
    sid = await session_cookie(db, user)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 40000))
    return httpx.AsyncClient(
        transport=transport,
        base_url="http://testserver/api/v1",
        headers={"User-Agent": USER_AGENT},
        cookies={"defguard_session": sid},
    )


@pytest.fixture
async def admin_client(app, db: Database) -> AsyncIterator[httpx.AsyncClient]:
    """Logged in as the bootstrapped `admin` (full, MFA-verified session)."""
    async with await _client_as(app, db, "admin") as c:
        yield c


@pytest.fixture
async def user_client(app, db: Database) -> AsyncIterator[httpx.AsyncClient]:
    """Logged in as `jdoe`, a regular (non-admin) user."""
    await make_user(db, "jdoe")
    async with await _client_as(app, db, "jdoe") as c:
        yield c


@pytest.fixture
async def with_smtp(db: Database) -> None:
    """SMTP settings present, so mails are queued (nothing is sent until a worker runs them)."""
    from defguard.core.settings.models import Settings

    async with db.transaction() as s:
        row = await s.get(Settings, 1)
        assert row is not None
        row.smtp_server = "smtp.example.test"
        row.smtp_sender = "vpn@example.test"
