"""Per-request context: the database session, the caller's address and agent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from defguard.config import CoreSettings
from defguard.core.errors import bad_request
from defguard.db.engine import Database
from defguard.edge import headers


def get_database(request: Request) -> Database:
    return request.app.state.db


def get_settings(request: Request) -> CoreSettings:
    return request.app.state.settings


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A session per request; handlers commit what they change, anything else rolls back."""
    async with request.app.state.db.sessionmaker() as session:
        yield session


DbSession = Annotated[AsyncSession, Depends(get_session)]
Settings = Annotated[CoreSettings, Depends(get_settings)]


def client_ip(request: Request) -> str | None:
    """With a trusted reverse proxy, the address it appended (the right-most entry).

    Entries to the left of it were sent by the client and prove nothing; an
    entry that is not an address is ignored rather than stored.
    """
    peer = request.client.host if request.client else None
    settings: CoreSettings = request.app.state.settings
    if settings.use_forwarded_for:
        return headers.client_ip(request.headers.get("x-forwarded-for"), None, peer)
    return peer


@dataclass(frozen=True)
class RequestContext:
    ip: str | None
    user_agent: str | None


def request_context(request: Request) -> RequestContext:
    return RequestContext(ip=client_ip(request), user_agent=request.headers.get("user-agent"))


def audited_context(request: Request) -> RequestContext:
    """For mutating endpoints that write an activity-log event: the agent is required."""
    ctx = request_context(request)
    if not ctx.user_agent:
        raise bad_request("Missing UserAgent header")
    return ctx


Ctx = Annotated[RequestContext, Depends(request_context)]
AuditCtx = Annotated[RequestContext, Depends(audited_context)]
