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
LOCK_NAMESPACE = 0x64670003


def too_many_attempts() -> ApiError:
    return ApiError(429, "Too many login attempts")


# How long a failure can still matter: a block lasts BLOCK after the last of a
# burst that spans at most WINDOW.
KEEP = BLOCK + WINDOW

# The rule itself is the `login_blocked` SQL function (migration
# 0007_client_requests), shared with the VPN-client MFA functions.
_BLOCKED = text("SELECT login_blocked(:keys, :max_failures, :window, :block, :now)").bindparams(
    bindparam("keys", type_=ARRAY(Text))
)
_ADD = text("SELECT login_failure_add(:key, :now, :keep)")
_LOCK = select(func.pg_advisory_xact_lock(LOCK_NAMESPACE, func.hashtext(bindparam("key"))))


def policy(now: datetime) -> dict[str, Any]:
    """The parameters `login_blocked` takes besides the keys."""
    return {"max_failures": MAX_FAILURES, "window": WINDOW, "block": BLOCK, "now": now}


async def is_blocked(db: AsyncSession, key: str) -> bool:
    return bool(await db.scalar(_BLOCKED, {"keys": [key], **policy(utcnow())}))


async def guard(db: AsyncSession, key: str) -> None:
    """Serialise attempts on `key` and refuse one while the key is blocked."""
    await db.execute(_LOCK, {"key": key})
    if await is_blocked(db, key):
        raise too_many_attempts()


async def record_failure(db: AsyncSession, key: str) -> None:
    """Note a failure; rows too old to matter for this key are dropped on the way."""
    await db.execute(_ADD, {"key": key, "now": utcnow(), "keep": KEEP})


async def purge_stale(db: AsyncSession) -> None:
    """Drop failures that can no longer block anyone (e.g. sprays over random names)."""
    await db.execute(delete(LoginFailure).where(LoginFailure.at < utcnow() - KEEP))
