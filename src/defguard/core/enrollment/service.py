"""Enrollment, desktop-activation and password-reset tokens, their sessions, polling tokens.

An admin issues a token here (REST); the user redeems it on the Edge
(`enrollment.edge`). Redeeming opens a short *session*: the token is good for
its whole lifetime until first used, but once a client starts with it, the
remaining steps must fall within `SESSION_LENGTH`. That bounds what a token
copied out of a browser or a log is worth after the user has started.

Like every service here, functions work in the caller's transaction and
never commit.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytimeparse
from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from defguard.config import CoreSettings
from defguard.core.activity.service import record
from defguard.core.context import RequestContext
from defguard.core.enrollment.configs import public_edge_url
from defguard.core.enrollment.models import PollingToken, Token, TokenKind
from defguard.core.errors import bad_request, unauthorized
from defguard.core.mail.service import queue_mail
from defguard.core.settings.service import get_settings_row
from defguard.core.users.models import User
from defguard.core.users.service import TOKEN_ALPHABET, TOKEN_LENGTH, new_token_id
from defguard.db.base import utcnow

# Upstream Defguard's default session length for both flows. A desktop
# enrollment (password, device, MFA) takes a minute or two; ten minutes leave
# room without keeping a half-finished session usable for long. The session
# never outlives the token itself.
SESSION_LENGTH = timedelta(minutes=10)

ENROLLMENT_KINDS = frozenset({TokenKind.ENROLLMENT, TokenKind.DESKTOP})
RESET_KINDS = frozenset({TokenKind.PASSWORD_RESET})


def new_polling_token_id() -> str:
    return "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(TOKEN_LENGTH))


# --- sessions -------------------------------------------------------------------------


class TokenRejected(Exception):
    """A token that cannot be redeemed: `status` and `message` are the public answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def open_session(token: Token, now: datetime, length: timedelta = SESSION_LENGTH) -> datetime:
    """Start the token's session, or return the deadline of the one already open.

    A session is single: once its deadline has passed (or the token was
    used) the token is spent, even if the token itself has not expired.
    """
    if token.used_at is not None:
        raise TokenRejected(401, "invalid token")
    if token.session_deadline is not None:
        if now < token.session_deadline:
            return token.session_deadline
        raise TokenRejected(401, "invalid token")
    if token.expires_at <= now:
        raise TokenRejected(401, "token expired")
    token.session_started_at = now
    token.session_deadline = min(token.expires_at, now + length)
    return token.session_deadline


def check_session(token: Token | None, kinds: frozenset[TokenKind], now: datetime) -> Token:
    """The token behind a later step's cookie, if its session is open."""
    if token is None or token.kind not in kinds or token.used_at is not None:
        raise TokenRejected(401, "invalid token")
    if token.session_deadline is None:
        raise TokenRejected(401, "invalid token")
    if token.session_deadline <= now:
        raise TokenRejected(401, "Session expired")
    return token


async def find_token(db: AsyncSession, token_id: str) -> Token | None:
    """Locked for the rest of the transaction: two Cores cannot redeem it at once."""
    return (
        await db.execute(select(Token).where(Token.id == token_id).with_for_update())
    ).scalar_one_or_none()


# --- polling tokens -------------------------------------------------------------------


async def replace_polling_token(db: AsyncSession, device_id: int) -> str:
    """A fresh polling token for the device; the previous one stops working at once."""
    token = new_polling_token_id()
    stmt = insert(PollingToken).values(token=token, device_id=device_id, created_at=utcnow())
    await db.execute(
        stmt.on_conflict_do_update(
            index_elements=[PollingToken.device_id],
            set_={"token": stmt.excluded.token, "created_at": stmt.excluded.created_at},
        )
    )
    return token


# --- issuing enrollment tokens (admin REST) --------------------------------------------


def parse_duration(text: str) -> timedelta:
    """A human duration such as `3d`, `12h` or `1h 30m`."""
    seconds = pytimeparse.parse(text.strip()) if text.strip() else None
    if seconds is None:
        raise bad_request(f"token_expiration_time: cannot parse duration {text!r}")
    if seconds <= 0:
        raise bad_request("token_expiration_time: must be a positive duration")
    return timedelta(seconds=seconds)


@dataclass(frozen=True)
class IssuedToken:
    token: Token
    url: str


def _mail_time(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC")


async def _clear_unused_tokens(db: AsyncSession, user_id: int) -> None:
    """Issuing a new enrollment or desktop token withdraws the user's earlier ones."""
    await db.execute(
        delete(Token).where(
            Token.user_id == user_id,
            Token.kind.in_(ENROLLMENT_KINDS),
            Token.used_at.is_(None),
        )
    )


async def issue_token(
    db: AsyncSession,
    user: User,
    *,
    kind: TokenKind,
    actor: User,
    ctx: RequestContext,
    core: CoreSettings,
    notify: bool,
    email: str | None,
    valid_for: str | None,
) -> IssuedToken:
    """`start_enrollment` (kind ENROLLMENT) and `start_desktop` (kind DESKTOP).

    Every check runs before the first write, so a refused request leaves the
    user's earlier tokens in place.
    """
    desktop = kind is TokenKind.DESKTOP
    if desktop and email is None:
        email = user.email
    if notify and email is None:
        raise bad_request("Email notification is enabled, but email was not provided")
    if not desktop and user.enrolled:
        raise bad_request("User account is already activated")
    if not user.is_active:
        raise unauthorized("Enrollment user is disabled")
    settings = await get_settings_row(db)
    if desktop or valid_for is None:
        lifetime = timedelta(hours=settings.enrollment_token_timeout_hours)
    else:
        lifetime = parse_duration(valid_for)

    await _clear_unused_tokens(db, user.id)
    now = utcnow()
    token = Token(
        id=new_token_id(),
        kind=kind,
        user_id=user.id,
        admin_id=actor.id,
        email=email,
        created_at=now,
        expires_at=now + lifetime,
    )
    db.add(token)
    if not desktop:
        user.enrollment_pending = True
    url = public_edge_url(settings, core)
    if notify and email is not None:
        if desktop:
            context = {"first_name": user.first_name, "url": url, "token": token.id}
            await queue_mail(db, to=email, template="desktop_activation", context=context)
        else:
            context = {
                "first_name": user.first_name,
                "url": url,
                "token": token.id,
                "expires": _mail_time(token.expires_at),
            }
            await queue_mail(db, to=email, template="enrollment", context=context)
    what = "Desktop activation" if desktop else "Enrollment"
    record(db, ctx, actor, "enrollment_token_added", f"{what} token for {user.username}")
    await db.flush()
    return IssuedToken(token=token, url=url)
