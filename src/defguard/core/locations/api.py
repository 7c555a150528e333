"""REST endpoints of the locations feature (`/network`, admin only)."""

from __future__ import annotations

from fastapi import APIRouter, status
from fastapi.responses import JSONResponse

from defguard.core.auth.deps import AdminCaller
from defguard.core.context import AuditCtx, DbSession
from defguard.core.locations import service
from defguard.core.locations.schemas import (
    LocationCount,
    LocationDisplay,
    LocationInfo,
    LocationOut,
    LocationWrite,
)
from defguard.core.schemas import Empty, error_responses

router = APIRouter(tags=["locations"])

_AUTH_ERRORS = error_responses(401, 403)


@router.get("/network", response_model=list[LocationInfo], responses=_AUTH_ERRORS)
async def list_locations(_: AdminCaller, db: DbSession) -> list[LocationInfo]:
    """All locations, sorted by name."""
    return await service.list_location_infos(db)


@router.get("/network/count", response_model=LocationCount, responses=_AUTH_ERRORS)
async def count_locations(_: AdminCaller, db: DbSession) -> LocationCount:
    return LocationCount(count=await service.count_locations(db))


@router.get("/network/display", response_model=list[LocationDisplay], responses=_AUTH_ERRORS)
async def display_locations(_: AdminCaller, db: DbSession) -> list[LocationDisplay]:
    return await service.locations_display(db)


@router.get(
    "/network/{network_id}",
    response_model=LocationInfo,
    responses={**_AUTH_ERRORS, 404: {"description": "unknown id; the body is `null`"}},
)
async def get_location(
    network_id: int, _: AdminCaller, db: DbSession
) -> LocationInfo | JSONResponse:
    info = await service.location_info(db, network_id)
    if info is None:
        return JSONResponse(None, status_code=status.HTTP_404_NOT_FOUND)
    return info


@router.post(
    "/network",
    response_model=LocationOut,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(400, 401, 403),
)
async def create_location(
    data: LocationWrite, caller: AdminCaller, ctx: AuditCtx, db: DbSession
) -> LocationOut:
    location = await service.create_location(db, data, actor=caller.user, ctx=ctx)
    out = LocationOut.of(location)
    await db.commit()
    return out


@router.put(
    "/network/{network_id}",
    response_model=LocationOut,
    responses=error_responses(400, 401, 403, 404),
)
async def update_location(
    network_id: int, data: LocationWrite, caller: AdminCaller, ctx: AuditCtx, db: DbSession
) -> LocationOut:
    location = await service.update_location(db, network_id, data, actor=caller.user, ctx=ctx)
    out = LocationOut.of(location)
    await db.commit()
    return out


@router.delete(
    "/network/{network_id}", response_model=Empty, responses=error_responses(401, 403, 404)
)
async def delete_location(
    network_id: int, caller: AdminCaller, ctx: AuditCtx, db: DbSession
) -> Empty:
    await service.delete_location(db, network_id, actor=caller.user, ctx=ctx)
    await db.commit()
    return Empty()
