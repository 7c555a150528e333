"""Who is calling: session-cookie resolution and the role gates every router uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import delete, select
from sqlalchemy.orm import selectinload

from defguard.core.auth.models import Session
from defguard.core.context import DbSession
from defguard.core.errors import forbidden, unauthorized
from defguard.core.users.models import User
from defguard.db.base import utcnow

SESSION_COOKIE = "defguard_session"


@dataclass
class Caller:
    session: Session
    user: User

    @property
    def is_admin(self) -> bool:
        return self.user.is_admin


async def _resolve(request: Request, db: DbSession) -> Caller:
    session_id = request.cookies.get(SESSION_COOKIE)
    if not session_id:
        raise unauthorized("Session is required")
    session = await db.get(Session, session_id)
    if session is None:
        raise unauthorized("Session not found")
    if session.expires <= utcnow():
        await db.execute(delete(Session).where(Session.id == session_id))
        await db.commit()
        raise unauthorized("Session expired")
    user = (
        await db.execute(
            select(User).where(User.id == session.user_id).options(selectinload(User.groups))
        )
    ).scalar_one_or_none()
    if user is None:
        raise unauthorized("User not found")
    return Caller(session=session, user=user)


async def partial_session(caller: Annotated[Caller, Depends(_resolve)]) -> Caller:
    """Password-verified is enough (the MFA step endpoints, logout)."""
    return caller


async def full_session(caller: Annotated[Caller, Depends(_resolve)]) -> Caller:
    if caller.user.mfa_enabled and not caller.session.mfa_verified:
        raise unauthorized("MFA not verified")
    return caller


async def admin_session(caller: Annotated[Caller, Depends(full_session)]) -> Caller:
    if not caller.user.is_active:
        raise forbidden("user is disabled")
    if not caller.user.is_admin:
        raise forbidden("access denied")
    return caller


PartialCaller = Annotated[Caller, Depends(partial_session)]
CurrentCaller = Annotated[Caller, Depends(full_session)]
AdminCaller = Annotated[Caller, Depends(admin_session)]


def require_admin_or_self(caller: Caller, username: str) -> None:
    """The "admin or self" rule for endpoints whose path names a user."""
    if caller.user.username != username and not caller.is_admin:
        raise forbidden("requires privileged access")
