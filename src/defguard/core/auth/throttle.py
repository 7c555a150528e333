"""Login throttling kept in PostgreSQL, so every Core enforces the same limit.

Five failed attempts (password, TOTP or recovery code) within 60 seconds block
the login for five minutes after the last failure. Failures are keyed by the
resolved username when the account exists, so trying the e-mail address and
the username alternately shares one counter; attempts on unknown names are
keyed by the submitted string.

`guard` takes a transaction-scoped advisory lock on the key before checking,
so concurrent attempts on one account, even on different Cores, are counted
one after another and cannot slip past the limit together. The lock is
released when the request's transaction ends.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Text, bindparam, delete, func, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from defguard.core.auth.models import LoginFailure
from defguard.core.errors import ApiError
from defguard.db.base import utcnow

MAX_FAILURES = 5
WINDOW = timedelta(seconds=60)
BLOCK = timedelta(minutes=5)
# First half of the two-key advisory lock: keeps these locks apart from others.
_LOCK_NAMESPACE = 0x64670003


def too_many_attempts() -> ApiError:
    return ApiError(429, "Too many login attempts")


# Built once: these run on every login and every VPN-client MFA attempt.
_RECENT = (
    select(LoginFailure.at)
    .where(LoginFailure.login == bindparam("key"))
    .order_by(LoginFailure.at.desc())
    .limit(MAX_FAILURES)
)
_LOCK = select(func.pg_advisory_xact_lock(_LOCK_NAMESPACE, func.hashtext(bindparam("key"))))


async def is_blocked(db: AsyncSession, key: str) -> bool:
    recent = (await db.execute(_RECENT, {"key": key})).scalars().all()
    if len(recent) < MAX_FAILURES:
        return False
    last, fifth = recent[0], recent[-1]
    return last - fifth <= WINDOW and utcnow() - last < BLOCK


_RECENT_MANY = text(
    """
    SELECT login, array_agg(at ORDER BY at DESC) FROM (
        SELECT login, at, row_number() OVER (PARTITION BY login ORDER BY at DESC) AS n
        FROM login_failure WHERE login = ANY(:keys)
    ) recent WHERE n <= :limit GROUP BY login
    """
).bindparams(bindparam("keys", type_=ARRAY(Text)))


def _blocked(recent: list[datetime]) -> bool:
    if len(recent) < MAX_FAILURES:
        return False
    last, fifth = recent[0], recent[MAX_FAILURES - 1]
    return last - fifth <= WINDOW and utcnow() - last < BLOCK


def lock_statement() -> Any:
    """The statement `guard` serialises a key with (parameter `key`)."""
    return _LOCK


async def any_blocked(db: AsyncSession, keys: list[str]) -> bool:
    """`is_blocked` for several keys in one query (an MFA attempt checks device and address)."""
    rows = await db.execute(_RECENT_MANY, {"keys": keys, "limit": MAX_FAILURES})
    return any(_blocked(list(recent)) for _, recent in rows)


async def guard(db: AsyncSession, key: str) -> None:
    """Serialise attempts on `key` and refuse one while the key is blocked."""
    await db.execute(_LOCK, {"key": key})
    if await is_blocked(db, key):
        raise too_many_attempts()


async def record_failure(db: AsyncSession, key: str) -> None:
    """Note a failure; rows too old to matter for this key are dropped on the way."""
    now = utcnow()
    await db.execute(
        delete(LoginFailure).where(
            LoginFailure.login == key, LoginFailure.at < now - BLOCK - WINDOW
        )
    )
    db.add(LoginFailure(login=key, at=now))
    await db.flush()


async def purge_stale(db: AsyncSession) -> None:
    """Drop failures that can no longer block anyone (e.g. sprays over random names)."""
    await db.execute(delete(LoginFailure).where(LoginFailure.at < utcnow() - BLOCK - WINDOW))
