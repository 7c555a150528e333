"""Login, sessions and second factors.

Functions work in the caller's transaction. The few that must persist
something on failure (a failed attempt counts toward throttling and is logged)
commit before raising; everything else is committed by the API handler.
"""

from __future__ import annotations

import asyncio
import secrets
import string
import time
from dataclasses import dataclass
from datetime import timedelta
from functools import cache

from sqlalchemy import case, delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from defguard.core.activity.service import record
from defguard.core.auth import throttle
from defguard.core.auth.mfa import (
    claim_totp_step,
    clear_mfa,
    configured_methods,
    consume_recovery_code,
    current_totp_step,
    generate_recovery_codes,
    hash_recovery_code,
    new_totp_secret,
    reconcile_mfa,
    verify_totp,
)
from defguard.core.auth.models import Session
from defguard.core.auth.passwords import hash_password_sync, verify_password
from defguard.core.context import RequestContext
from defguard.core.errors import ApiError, bad_request, not_found, unauthorized
from defguard.core.settings.service import get_settings_row
from defguard.core.users.models import MfaMethod, User
from defguard.db.base import utcnow

SESSION_ID_LENGTH = 24
_SESSION_ALPHABET = string.ascii_letters + string.digits
BAD_CREDENTIALS = "Invalid username or password"


def new_session_id() -> str:
    return "".join(secrets.choice(_SESSION_ALPHABET) for _ in range(SESSION_ID_LENGTH))


@cache
def _dummy_hash() -> str:
    """A real Argon2 hash to verify against for unknown logins.

    Doing the same slow work whether or not the account exists keeps response
    times from revealing which usernames are valid.
    """
    return hash_password_sync(secrets.token_urlsafe(16))


async def _verify_login_password(user: User | None, password: str) -> bool:
    if user is None or user.password_hash is None:
        reference = await asyncio.to_thread(_dummy_hash)
        await verify_password(reference, password)
        return False
    return await verify_password(user.password_hash, password)


async def find_login_user(db: AsyncSession, login: str) -> User | None:
    """The username wins over an e-mail match; e-mails compare case-insensitively."""
    query = (
        select(User)
        .where(or_(User.username == login, func.lower(User.email) == func.lower(login)))
        .order_by(case((User.username == login, 0), else_=1))
        .limit(1)
        .options(selectinload(User.groups))
    )
    return (await db.execute(query)).scalar_one_or_none()


async def user_with_groups(db: AsyncSession, user_id: int) -> User | None:
    query = select(User).where(User.id == user_id).options(selectinload(User.groups))
    return (await db.execute(query)).scalar_one_or_none()


async def purge_expired_sessions(db: AsyncSession) -> None:
    """Expired sessions and stale throttling rows, swept on every successful login."""
    await db.execute(delete(Session).where(Session.expires <= utcnow()))
    await throttle.purge_stale(db)


@dataclass
class LoginResult:
    user: User
    session: Session
    max_age: int

    @property
    def mfa_required(self) -> bool:
        return self.user.mfa_enabled


async def login(
    db: AsyncSession, login_name: str, password: str, ctx: RequestContext
) -> LoginResult:
    """Check the password and open a session (password-verified only when MFA is on).

    A failure is counted and logged (for existing accounts) and committed
    before the 401 is raised, so throttling sees it on every Core.
    """
    user = await find_login_user(db, login_name)
    key = user.username if user is not None else login_name
    await throttle.guard(db, key)
    password_ok = await _verify_login_password(user, password)
    if user is None or not password_ok or not user.is_active:
        await throttle.record_failure(db, key)
        if user is not None:
            reason = "invalid password" if not password_ok else "account disabled"
            record(db, ctx, user, "user_login_failed", f"Login failed: {reason}")
        await db.commit()
        if user is not None and password_ok:
            raise unauthorized("user is disabled")
        raise unauthorized(BAD_CREDENTIALS)

    await purge_expired_sessions(db)
    reconcile_mfa(user)
    settings = await get_settings_row(db)
    days = settings.authentication_period_days
    session = Session(
        id=new_session_id(),
        user_id=user.id,
        mfa_verified=False,
        created=utcnow(),
        expires=utcnow() + timedelta(days=days),
        ip=ctx.ip,
        user_agent=ctx.user_agent,
    )
    db.add(session)
    if not user.mfa_enabled:
        record(db, ctx, user, "user_login", "User logged in")
    await db.flush()
    return LoginResult(user=user, session=session, max_age=days * 86400)


async def logout(db: AsyncSession, session: Session, user: User, ctx: RequestContext) -> None:
    await db.execute(delete(Session).where(Session.id == session.id))
    record(db, ctx, user, "user_logout", "User logged out")
    await db.flush()


async def delete_sessions(db: AsyncSession, user_id: int) -> None:
    await db.execute(delete(Session).where(Session.user_id == user_id))


# --- MFA management ------------------------------------------------------------


async def enable_mfa(db: AsyncSession, user: User) -> bool:
    """Turn MFA on when a factor exists; every session must then log in again."""
    if not configured_methods(user):
        return False
    reconcile_mfa(user)
    await delete_sessions(db, user.id)
    await db.flush()
    return True


async def disable_mfa(
    db: AsyncSession, user: User, *, actor: User, ctx: RequestContext, event: str
) -> None:
    clear_mfa(user)
    description = "Disabled own MFA" if actor.id == user.id else f"Disabled MFA of {user.username}"
    record(db, ctx, actor, event, description)
    await db.flush()


async def init_totp(db: AsyncSession, user: User) -> bytes:
    """A fresh secret for the authenticator app; replaces any unconfirmed one.

    Replacing the secret of an already enabled TOTP would silently break the
    user's authenticator, so that is refused: disable TOTP first.
    """
    if user.totp_enabled:
        raise bad_request("TOTP is already enabled; disable it before setting up a new secret")
    secret = new_totp_secret()
    user.totp_secret = secret
    await db.flush()
    return secret


async def enable_totp(
    db: AsyncSession, user: User, session: Session, code: str, ctx: RequestContext
) -> list[str] | None:
    """Confirm the secret with a code; returns recovery codes if this is the first factor.

    The confirming session counts as MFA-verified (it just proved the factor),
    so the user is not bounced out; other sessions must pass the new factor.
    """
    if user.totp_enabled:
        raise bad_request("TOTP is already enabled")
    if not verify_totp(user.totp_secret, code):
        raise not_found("Invalid TOTP code")
    codes = None
    if not user.recovery_codes:
        codes = generate_recovery_codes()
        user.recovery_codes = [hash_recovery_code(c) for c in codes]
    user.totp_enabled = True
    if user.mfa_method is MfaMethod.NONE:
        user.mfa_method = MfaMethod.ONE_TIME_PASSWORD
    user.mfa_enabled = True
    session.mfa_verified = True
    record(db, ctx, user, "mfa_totp_enabled", "Enabled TOTP")
    await db.flush()
    return codes


async def disable_totp(db: AsyncSession, user: User, *, actor: User, ctx: RequestContext) -> None:
    user.totp_enabled = False
    user.totp_secret = None
    reconcile_mfa(user)
    description = (
        "Disabled own TOTP" if actor.id == user.id else f"Disabled TOTP of {user.username}"
    )
    record(db, ctx, actor, "mfa_totp_disabled", description)
    await db.flush()


# --- MFA login step --------------------------------------------------------------


async def _fail_mfa_step(
    db: AsyncSession, user: User, ctx: RequestContext, description: str, error: ApiError
) -> ApiError:
    await throttle.record_failure(db, user.username)
    record(db, ctx, user, "user_mfa_login_failed", description)
    await db.commit()
    return error


async def verify_totp_login(
    db: AsyncSession, user: User, session: Session, code: str, ctx: RequestContext
) -> None:
    await throttle.guard(db, user.username)
    now = time.time()
    if (
        not user.totp_enabled
        or not verify_totp(user.totp_secret, code, now)
        or not await claim_totp_step(db, user.id, current_totp_step(now))
    ):
        raise await _fail_mfa_step(
            db, user, ctx, "Invalid TOTP code", unauthorized("Invalid TOTP code")
        )
    session.mfa_verified = True
    record(db, ctx, user, "user_mfa_login", "User logged in with TOTP")
    await db.flush()


async def use_recovery_code(
    db: AsyncSession, user: User, session: Session, code: str, ctx: RequestContext
) -> None:
    await throttle.guard(db, user.username)
    if not await consume_recovery_code(db, user.id, code):
        raise await _fail_mfa_step(
            db, user, ctx, "Invalid recovery code", unauthorized("Unauthorized")
        )
    session.mfa_verified = True
    record(db, ctx, user, "recovery_code_used", "User logged in with a recovery code")
    await db.flush()
