"""Login, logout, session information and the MFA endpoints (`/auth`, `/me`, ...)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from defguard.config import CoreSettings
from defguard.core.auth import service
from defguard.core.auth.deps import (
    SESSION_COOKIE,
    CurrentCaller,
    PartialCaller,
    require_admin_or_self,
)
from defguard.core.auth.mfa import totp_secret_base32
from defguard.core.auth.models import Session
from defguard.core.auth.schemas import (
    CodeRequest,
    LoginRequest,
    LoginResponse,
    MfaRequired,
    RecoveryCodes,
    SessionInfo,
    TotpSecret,
)
from defguard.core.context import AuditCtx, DbSession, Settings
from defguard.core.schemas import Empty, error_responses
from defguard.core.settings.service import get_settings_row
from defguard.core.users.models import User
from defguard.core.users.schemas import UserInfo
from defguard.core.users.service import require_user, user_info
from defguard.db.base import utcnow

router = APIRouter(tags=["auth"])


def _set_session_cookie(
    response: Response, settings: CoreSettings, session_id: str, max_age: int
) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        max_age=max_age,
        path="/",
        domain=settings.cookie_domain,
        secure=settings.secure_cookie,
        httponly=True,
        samesite="Lax",  # type: ignore[arg-type]
    )


def _clear_session_cookie(response: Response, settings: CoreSettings) -> None:
    response.delete_cookie(
        SESSION_COOKIE,
        path="/",
        domain=settings.cookie_domain,
        secure=settings.secure_cookie,
        httponly=True,
        samesite="Lax",  # type: ignore[arg-type]
    )


async def _login_response(db: DbSession, user: User) -> LoginResponse:
    return LoginResponse(user=await user_info(db, user), url=None)


@router.post(
    "/auth",
    response_model=LoginResponse,
    responses={
        201: {"model": MfaRequired, "description": "password accepted, second factor required"},
        **error_responses(400, 401, 429),
    },
)
async def login(
    body: LoginRequest, db: DbSession, ctx: AuditCtx, settings: Settings
) -> JSONResponse:
    """Both outcomes set the session cookie; with MFA on it is only password-verified."""
    result = await service.login(db, body.username, body.password, ctx)
    user = result.user
    if result.mfa_required:
        payload = MfaRequired(
            mfa_method=user.mfa_method.api_name,  # type: ignore[arg-type]
            totp_available=user.totp_enabled,
            webauthn_available=False,
            email_available=user.email_mfa_enabled,
        ).model_dump(mode="json")
        status = 201
    else:
        payload = (await _login_response(db, user)).model_dump(mode="json")
        status = 200
    await db.commit()
    response = JSONResponse(payload, status_code=status)
    _set_session_cookie(response, settings, result.session.id, result.max_age)
    return response


@router.post("/auth/logout", response_model=Empty, responses=error_responses(400, 401))
async def logout(
    caller: PartialCaller, db: DbSession, ctx: AuditCtx, settings: Settings
) -> JSONResponse:
    await service.logout(db, caller.session, caller.user, ctx)
    await db.commit()
    response = JSONResponse({})
    _clear_session_cookie(response, settings)
    return response


@router.get("/session-info", response_model=SessionInfo)
async def session_info(request: Request, db: DbSession) -> SessionInfo:
    """Never fails: an absent, expired or MFA-pending session is simply "not authorized"."""
    row = await get_settings_row(db)
    wizard = None if row.initialized_at is not None else "initial"
    anonymous = SessionInfo(authorized=False, is_admin=False, active_wizard=wizard, username=None)
    session_id = request.cookies.get(SESSION_COOKIE)
    if not session_id:
        return anonymous
    session = await db.get(Session, session_id)
    if session is None or session.expires <= utcnow():
        return anonymous
    user = await service.user_with_groups(db, session.user_id)
    if user is None or (user.mfa_enabled and not session.mfa_verified):
        return anonymous
    return SessionInfo(
        authorized=True, is_admin=user.is_admin, active_wizard=wizard, username=user.username
    )


@router.get("/me", response_model=UserInfo, responses=error_responses(401))
async def me(caller: CurrentCaller, db: DbSession) -> UserInfo:
    return await user_info(db, caller.user)


@router.put(
    "/auth/mfa",
    response_model=Empty,
    responses={304: {"description": "no MFA factor is configured"}, **error_responses(401)},
)
async def enable_mfa(caller: CurrentCaller, db: DbSession, settings: Settings) -> Response:
    """Turning MFA on ends every session of the user, this one included."""
    if not await service.enable_mfa(db, caller.user):
        return Response(status_code=304)
    await db.commit()
    response = JSONResponse({})
    _clear_session_cookie(response, settings)
    return response


@router.delete("/auth/mfa", response_model=Empty, responses=error_responses(400, 401))
async def disable_own_mfa(caller: CurrentCaller, db: DbSession, ctx: AuditCtx) -> Empty:
    await service.disable_mfa(db, caller.user, actor=caller.user, ctx=ctx, event="mfa_disabled")
    await db.commit()
    return Empty()


@router.delete(
    "/user/{username}/mfa",
    response_model=Empty,
    responses=error_responses(400, 401, 403, 404),
)
async def disable_user_mfa(
    username: str, caller: CurrentCaller, db: DbSession, ctx: AuditCtx
) -> Empty:
    require_admin_or_self(caller, username)
    user = await require_user(db, username)
    await service.disable_mfa(db, user, actor=caller.user, ctx=ctx, event="user_mfa_disabled")
    await db.commit()
    return Empty()


@router.post("/auth/totp/init", response_model=TotpSecret, responses=error_responses(400, 401))
async def totp_init(caller: CurrentCaller, db: DbSession) -> TotpSecret:
    secret = await service.init_totp(db, caller.user)
    await db.commit()
    return TotpSecret(secret=totp_secret_base32(secret))


@router.post("/auth/totp", response_model=RecoveryCodes, responses=error_responses(400, 401, 404))
async def totp_enable(
    body: CodeRequest, caller: CurrentCaller, db: DbSession, ctx: AuditCtx
) -> RecoveryCodes:
    codes = await service.enable_totp(db, caller.user, caller.session, body.code, ctx)
    await db.commit()
    return RecoveryCodes(codes=codes)


@router.post(
    "/auth/totp/verify", response_model=LoginResponse, responses=error_responses(400, 401, 429)
)
async def totp_verify(
    body: CodeRequest, caller: PartialCaller, db: DbSession, ctx: AuditCtx
) -> LoginResponse:
    await service.verify_totp_login(db, caller.user, caller.session, body.code, ctx)
    response = await _login_response(db, caller.user)
    await db.commit()
    return response


@router.delete(
    "/user/{username}/totp",
    response_model=Empty,
    responses=error_responses(400, 401, 403, 404),
)
async def totp_disable(username: str, caller: CurrentCaller, db: DbSession, ctx: AuditCtx) -> Empty:
    require_admin_or_self(caller, username)
    user = await require_user(db, username)
    await service.disable_totp(db, user, actor=caller.user, ctx=ctx)
    await db.commit()
    return Empty()


@router.post(
    "/auth/recovery", response_model=LoginResponse, responses=error_responses(400, 401, 429)
)
async def recovery_login(
    body: CodeRequest, caller: PartialCaller, db: DbSession, ctx: AuditCtx
) -> LoginResponse:
    await service.use_recovery_code(db, caller.user, caller.session, body.code, ctx)
    response = await _login_response(db, caller.user)
    await db.commit()
    return response
