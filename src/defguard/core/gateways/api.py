"""REST endpoints of the gateways feature (spec §7) and the location stats (spec §5), admin only."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, status
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from defguard.core.auth.deps import AdminCaller
from defguard.core.context import AuditCtx, DbSession
from defguard.core.errors import bad_request, not_found
from defguard.core.gateways import service, stats
from defguard.core.gateways.schemas import (
    AdoptGateway,
    ConnectedDevice,
    ConnectedUser,
    GatewayInfo,
    GatewayOut,
    GatewayUpdate,
    LocationStats,
)
from defguard.core.locations.models import Location
from defguard.core.pagination import PageParams, Paginated
from defguard.core.schemas import Empty, error_responses

router = APIRouter(tags=["gateways"])

Page = Annotated[PageParams, Depends()]
_AUTH_ERRORS = error_responses(401, 403)
_NULL_404 = {404: {"description": "unknown id; the body is `null`"}}


@router.get("/gateway", response_model=list[GatewayInfo], responses=_AUTH_ERRORS)
async def list_gateways(_: AdminCaller, db: DbSession) -> list[GatewayInfo]:
    """Every gateway with its link state as seen by any live Core."""
    return await service.gateway_infos(db)


@router.get("/network/gateways", response_model=list[GatewayInfo], responses=_AUTH_ERRORS)
async def list_all_location_gateways(_: AdminCaller, db: DbSession) -> list[GatewayInfo]:
    return await service.gateway_infos(db)


@router.get(
    "/network/{network_id}/gateways", response_model=list[GatewayInfo], responses=_AUTH_ERRORS
)
async def list_location_gateways(
    network_id: int, _: AdminCaller, db: DbSession
) -> list[GatewayInfo]:
    """The location's gateways; `[]` when it has none."""
    return await service.gateway_infos(db, [network_id])


@router.post(
    "/network/{network_id}/gateways/adopt",
    response_model=GatewayOut,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(400, 401, 403, 404, 409),
)
async def adopt_gateway(
    network_id: int, data: AdoptGateway, caller: AdminCaller, db: DbSession
) -> GatewayOut:
    """Register a gateway of the location; every Core connects to it once this commits."""
    gateway = await service.adopt_gateway(db, network_id, data, actor=caller.user)
    out = await service.gateway_out(db, gateway)
    await db.commit()
    return out


@router.get(
    "/gateway/{gateway_id}", response_model=GatewayOut, responses={**_AUTH_ERRORS, **_NULL_404}
)
async def get_gateway(gateway_id: int, _: AdminCaller, db: DbSession) -> GatewayOut | JSONResponse:
    gateway = await service.find_gateway(db, gateway_id)
    if gateway is None:
        return JSONResponse(None, status_code=status.HTTP_404_NOT_FOUND)
    return await service.gateway_out(db, gateway)


async def _update_body(request: Request) -> GatewayUpdate:
    """Parsed by hand: the spec wants a 400 naming the problem, unknown fields included."""
    try:
        return GatewayUpdate.model_validate(json.loads(await request.body()))
    except (ValueError, ValidationError) as exc:
        raise bad_request(f"Failed to parse request data: {exc}") from None


@router.put(
    "/gateway/{gateway_id}",
    response_model=GatewayOut,
    responses=error_responses(400, 401, 403, 404),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": GatewayUpdate.model_json_schema()}},
        }
    },
)
async def update_gateway(
    gateway_id: int,
    request: Request,
    caller: AdminCaller,
    ctx: AuditCtx,
    db: DbSession,
) -> GatewayOut:
    """Rename, enable or disable; a disabled gateway loses its links to every Core."""
    body = await _update_body(request)
    gateway = await service.update_gateway(db, gateway_id, body, actor=caller.user, ctx=ctx)
    out = await service.gateway_out(db, gateway)
    await db.commit()
    return out


@router.delete(
    "/gateway/{gateway_id}", response_model=Empty, responses=error_responses(401, 403, 404)
)
async def delete_gateway(
    gateway_id: int, caller: AdminCaller, ctx: AuditCtx, db: DbSession
) -> Empty:
    await service.delete_gateway(db, gateway_id, actor=caller.user, ctx=ctx)
    await db.commit()
    return Empty()


# -- stats (§5) -------------------------------------------------------------------------


def parse_from(value: str | None) -> datetime:
    """RFC 3339 with an offset, as naive UTC; default one hour ago; the future is a 400."""
    now = datetime.now(UTC)
    if value is None:
        return (now - timedelta(hours=1)).replace(tzinfo=None)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise bad_request(f"from: {value!r} is not an RFC 3339 timestamp") from None
    if parsed.tzinfo is None:
        raise bad_request(f"from: {value!r} needs a UTC offset, e.g. 2025-03-04T00:00:00Z")
    if parsed > now:
        raise bad_request("from: must not be in the future")
    return parsed.astimezone(UTC).replace(tzinfo=None)


def since_param(
    value: str | None = Query(
        None, alias="from", description="RFC 3339 start of the period; default one hour ago"
    ),
) -> datetime:
    return parse_from(value)


Since = Annotated[datetime, Depends(since_param)]


async def _known_location(db: DbSession, network_id: int) -> None:
    if await db.get(Location, network_id) is None:
        raise not_found(f"Requested location ({network_id}) not found")


@router.get(
    "/network/stats", response_model=LocationStats, responses=error_responses(400, 401, 403)
)
async def all_locations_stats(_: AdminCaller, db: DbSession, since: Since) -> dict[str, Any]:
    """Activity and transfer over every location, bucketed by minute (by hour past 6 h)."""
    return await stats.location_stats(db, since=since)


@router.get(
    "/network/{network_id}/stats",
    response_model=LocationStats,
    responses=error_responses(400, 401, 403, 404),
)
async def location_stats(
    network_id: int, _: AdminCaller, db: DbSession, since: Since
) -> dict[str, Any]:
    await _known_location(db, network_id)
    return await stats.location_stats(db, since=since, location_id=network_id)


@router.get(
    "/network/{network_id}/stats/connected_users",
    response_model=Paginated[ConnectedUser],
    responses=error_responses(400, 401, 403, 404),
)
async def connected_users(
    network_id: int, _: AdminCaller, db: DbSession, since: Since, page: Page
) -> Paginated[ConnectedUser]:
    """Users with a device connected now, with their transfer since `from`."""
    await _known_location(db, network_id)
    items = await stats.connected_users(db, network_id, since)
    return Paginated[ConnectedUser](
        data=[ConnectedUser(**item) for item in items[page.offset : page.offset + page.per_page]],
        pagination=page.meta(len(items)),
    )


@router.get(
    "/network/{network_id}/stats/connected_network_devices",
    response_model=Paginated[ConnectedDevice],
    responses=error_responses(400, 401, 403, 404),
)
async def connected_network_devices(
    network_id: int, _: AdminCaller, db: DbSession, since: Since, page: Page
) -> Paginated[ConnectedDevice]:
    await _known_location(db, network_id)
    items = await stats.connected_network_devices(db, network_id, since)
    return Paginated[ConnectedDevice](
        data=[ConnectedDevice(**item) for item in items[page.offset : page.offset + page.per_page]],
        pagination=page.meta(len(items)),
    )


@router.get(
    "/network/{network_id}/stats/connected_users/{user_id}/devices",
    response_model=list[ConnectedDevice],
    responses=error_responses(400, 401, 403, 404),
)
async def connected_user_devices(
    network_id: int, user_id: int, _: AdminCaller, db: DbSession, since: Since
) -> list[dict[str, Any]]:
    await _known_location(db, network_id)
    return await stats.connected_user_devices(db, network_id, user_id, since)
