"""User accounts (`/user`): admin management, self-service edits and passwords.

The static paths `/user/available` and `/user/change_password` are declared
before `/user/{username}` so that they win the route match.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from defguard.core.auth.deps import AdminCaller, CurrentCaller, require_admin_or_self
from defguard.core.context import AuditCtx, DbSession
from defguard.core.context import Settings as CoreConfig
from defguard.core.enrollment.configs import public_edge_url
from defguard.core.errors import bad_request
from defguard.core.pagination import PageParams, Paginated
from defguard.core.schemas import Empty, error_responses
from defguard.core.settings.service import get_settings_row
from defguard.core.users import service
from defguard.core.users.schemas import (
    AddUserRequest,
    ChangePasswordRequest,
    NewPasswordRequest,
    UserDetails,
    UserInfo,
    UserInfoUpdate,
    UsernameRequest,
)
from defguard.core.users.validation import FieldError, check_username

router = APIRouter(tags=["users"])


@router.get("/user", response_model=Paginated[UserInfo], responses=error_responses(401, 403))
async def list_users(
    _: AdminCaller, db: DbSession, page: Annotated[PageParams, Depends()]
) -> Paginated[UserInfo]:
    total, users = await service.list_users(db, offset=page.offset, limit=page.per_page)
    data = await service.user_infos(db, users)
    return Paginated[UserInfo](data=data, pagination=page.meta(total))


@router.post(
    "/user",
    status_code=201,
    response_model=UserInfo,
    responses=error_responses(400, 401, 403, 409),
)
async def add_user(
    body: AddUserRequest, caller: AdminCaller, db: DbSession, ctx: AuditCtx
) -> UserInfo:
    """Without a password the account is created not enrolled (finished by enrollment)."""
    spec = service.NewUser(
        username=body.username,
        first_name=body.first_name,
        last_name=body.last_name,
        email=body.email,
        phone=body.phone,
        password=body.password,
    )
    (user,) = await service.create_users(db, [spec], actor=caller.user, ctx=ctx)
    info = await service.user_info(db, user)
    await db.commit()
    return info


@router.post("/user/available", response_model=Empty, responses=error_responses(400, 401, 403))
async def username_available(body: UsernameRequest, _: AdminCaller, db: DbSession) -> Empty:
    """400 (with the reason) when the name is invalid or taken: "not available" either way."""
    try:
        check_username(body.username)
    except FieldError as exc:
        raise bad_request(str(exc)) from None
    if await service.find_user(db, body.username) is not None:
        raise bad_request(f"username {body.username} is already taken")
    return Empty()


@router.put("/user/change_password", response_model=Empty, responses=error_responses(400, 401))
async def change_own_password(
    body: ChangePasswordRequest, caller: CurrentCaller, db: DbSession, ctx: AuditCtx
) -> Empty:
    """Other sessions of the user stay logged in."""
    await service.change_own_password(
        db, caller.user, body.old_password, body.new_password, ctx=ctx
    )
    await db.commit()
    return Empty()


@router.get(
    "/user/{username}", response_model=UserDetails, responses=error_responses(401, 403, 404)
)
async def get_user(username: str, caller: CurrentCaller, db: DbSession) -> UserDetails:
    require_admin_or_self(caller, username)
    user = await service.require_user(db, username)
    return UserDetails(
        user=await service.user_info(db, user), security_keys=[], biometric_enabled_devices=[]
    )


@router.put(
    "/user/{username}",
    response_model=Empty,
    responses=error_responses(400, 401, 403, 404, 409),
)
async def modify_user(
    username: str, body: UserInfoUpdate, caller: CurrentCaller, db: DbSession, ctx: AuditCtx
) -> Empty:
    require_admin_or_self(caller, username)
    user = await service.require_user(db, username)
    await service.update_user(
        db, user, body, actor=caller.user, actor_is_admin=caller.is_admin, ctx=ctx
    )
    await db.commit()
    return Empty()


@router.delete(
    "/user/{username}", response_model=Empty, responses=error_responses(400, 401, 403, 404)
)
async def delete_user(username: str, caller: AdminCaller, db: DbSession, ctx: AuditCtx) -> Empty:
    user = await service.require_user(db, username)
    await service.delete_user(db, user, actor=caller.user, ctx=ctx)
    await db.commit()
    return Empty()


@router.put(
    "/user/{username}/password",
    response_model=Empty,
    responses=error_responses(400, 401, 403, 404),
)
async def set_user_password(
    username: str,
    body: NewPasswordRequest,
    caller: AdminCaller,
    db: DbSession,
    ctx: AuditCtx,
) -> Empty:
    if username == caller.user.username:
        raise bad_request("use PUT /user/change_password to change your own password")
    try:
        check_username(username)
    except FieldError as exc:
        raise bad_request(str(exc)) from None
    user = await service.require_user(db, username)
    await service.set_password_by_admin(db, user, body.new_password, actor=caller.user, ctx=ctx)
    await db.commit()
    return Empty()


@router.post(
    "/user/{username}/reset_password",
    response_model=Empty,
    responses=error_responses(400, 401, 403, 404),
)
async def reset_user_password(
    username: str, caller: AdminCaller, db: DbSession, ctx: AuditCtx, core: CoreConfig
) -> Empty:
    """Issues a password-reset token and mails the user a link to the Edge's reset page."""
    if username == caller.user.username:
        raise bad_request("cannot reset your own password this way")
    user = await service.require_user(db, username)
    edge_url = public_edge_url(await get_settings_row(db), core)
    await service.request_password_reset(db, user, actor=caller.user, ctx=ctx, edge_url=edge_url)
    await db.commit()
    return Empty()
