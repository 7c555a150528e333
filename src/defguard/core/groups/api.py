"""Groups (`/group`, `/group-info`, `/groups-assign`); every endpoint is admin-only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from defguard.core.auth.deps import AdminCaller
from defguard.core.context import AuditCtx, DbSession
from defguard.core.groups import service
from defguard.core.groups.schemas import (
    EditGroupInfo,
    GroupInfo,
    GroupMemberRequest,
    GroupsAssignRequest,
)
from defguard.core.pagination import PageParams, Paginated
from defguard.core.schemas import Empty, error_responses

router = APIRouter(tags=["groups"])


@router.get("/group", response_model=Paginated[str], responses=error_responses(401, 403))
async def list_groups(
    _: AdminCaller, db: DbSession, page: Annotated[PageParams, Depends()]
) -> Paginated[str]:
    total, names = await service.list_group_names(db, offset=page.offset, limit=page.per_page)
    return Paginated[str](data=names, pagination=page.meta(total))


@router.get("/group-info", response_model=list[GroupInfo], responses=error_responses(401, 403))
async def list_group_infos(_: AdminCaller, db: DbSession) -> list[GroupInfo]:
    """`vpn_locations` lists only locations that name the group explicitly."""
    return await service.all_group_infos(db)


@router.get("/group/{group_id}", response_model=GroupInfo, responses=error_responses(401, 403, 404))
async def get_group(group_id: int, _: AdminCaller, db: DbSession) -> GroupInfo:
    """`vpn_locations` also counts the locations open to all groups."""
    group = await service.require_group(db, group_id)
    return await service.group_info(db, group)


@router.post(
    "/group",
    status_code=201,
    response_model=EditGroupInfo,
    responses=error_responses(400, 401, 403, 404, 409),
)
async def create_group(
    body: EditGroupInfo, caller: AdminCaller, db: DbSession, ctx: AuditCtx
) -> EditGroupInfo:
    await service.create_group(db, body, actor=caller.user, ctx=ctx)
    await db.commit()
    return body


@router.put(
    "/group/{group_id}",
    response_model=Empty,
    responses=error_responses(400, 401, 403, 404, 409),
)
async def modify_group(
    group_id: int, body: EditGroupInfo, caller: AdminCaller, db: DbSession, ctx: AuditCtx
) -> Empty:
    group = await service.require_group(db, group_id)
    await service.update_group(db, group, body, actor=caller.user, ctx=ctx)
    await db.commit()
    return Empty()


@router.delete(
    "/group/{group_id}", response_model=Empty, responses=error_responses(400, 401, 403, 404)
)
async def delete_group(group_id: int, caller: AdminCaller, db: DbSession, ctx: AuditCtx) -> Empty:
    group = await service.require_group(db, group_id, f"Failed to find group {group_id}")
    await service.delete_group(db, group, actor=caller.user, ctx=ctx)
    await db.commit()
    return Empty()


@router.post(
    "/group/{group_id}", response_model=Empty, responses=error_responses(400, 401, 403, 404)
)
async def add_group_member(
    group_id: int, body: GroupMemberRequest, caller: AdminCaller, db: DbSession, ctx: AuditCtx
) -> Empty:
    group = await service.require_group(db, group_id)
    await service.add_member(db, group, body.username, actor=caller.user, ctx=ctx)
    await db.commit()
    return Empty()


@router.delete(
    "/group/{group_id}/user/{username}",
    response_model=Empty,
    responses=error_responses(400, 401, 403, 404),
)
async def remove_group_member(
    group_id: int, username: str, caller: AdminCaller, db: DbSession, ctx: AuditCtx
) -> Empty:
    group = await service.require_group(db, group_id)
    await service.remove_member(db, group, username, actor=caller.user, ctx=ctx)
    await db.commit()
    return Empty()


@router.post("/groups-assign", response_model=Empty, responses=error_responses(400, 401, 403))
async def assign_groups(
    body: GroupsAssignRequest, caller: AdminCaller, db: DbSession, ctx: AuditCtx
) -> Empty:
    await service.assign_groups(db, body.groups, body.users, actor=caller.user, ctx=ctx)
    await db.commit()
    return Empty()
