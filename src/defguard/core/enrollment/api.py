"""Issuing enrollment and desktop-activation tokens (`/user/{username}/start_*`).

The user redeems the token on the public Edge; `enrollment_url` is where.
"""

from __future__ import annotations

from fastapi import APIRouter

from defguard.core.auth.deps import AdminCaller, CurrentCaller, require_admin_or_self
from defguard.core.context import AuditCtx, DbSession
from defguard.core.context import Settings as CoreConfig
from defguard.core.enrollment import service
from defguard.core.enrollment.models import TokenKind
from defguard.core.enrollment.schemas import EnrollmentTokenResponse, StartEnrollmentRequest
from defguard.core.schemas import error_responses
from defguard.core.users.service import require_user

router = APIRouter(tags=["enrollment"])


@router.post(
    "/user/{username}/start_enrollment",
    status_code=201,
    response_model=EnrollmentTokenResponse,
    responses=error_responses(400, 401, 403, 404),
)
async def start_enrollment(
    username: str,
    body: StartEnrollmentRequest,
    caller: AdminCaller,
    db: DbSession,
    ctx: AuditCtx,
    core: CoreConfig,
) -> EnrollmentTokenResponse:
    """A token to finish the account (password, device, MFA) on the Edge."""
    user = await require_user(db, username)
    issued = await service.issue_token(
        db,
        user,
        kind=TokenKind.ENROLLMENT,
        actor=caller.user,
        ctx=ctx,
        core=core,
        notify=body.send_enrollment_notification,
        email=body.email,
        valid_for=body.token_expiration_time,
    )
    await db.commit()
    return EnrollmentTokenResponse(enrollment_token=issued.token.id, enrollment_url=issued.url)


@router.post(
    "/user/{username}/start_desktop",
    status_code=201,
    response_model=EnrollmentTokenResponse,
    responses=error_responses(400, 401, 403, 404),
)
async def start_desktop(
    username: str,
    body: StartEnrollmentRequest,
    caller: CurrentCaller,
    db: DbSession,
    ctx: AuditCtx,
    core: CoreConfig,
) -> EnrollmentTokenResponse:
    """A token to add this instance to a desktop client; the lifetime always comes from settings."""
    require_admin_or_self(caller, username)
    user = await require_user(db, username)
    issued = await service.issue_token(
        db,
        user,
        kind=TokenKind.DESKTOP,
        actor=caller.user,
        ctx=ctx,
        core=core,
        notify=body.send_enrollment_notification,
        email=body.email,
        valid_for=None,
    )
    await db.commit()
    return EnrollmentTokenResponse(enrollment_token=issued.token.id, enrollment_url=issued.url)
