"""REST endpoints of the devices feature (`/device`, and per-location config downloads).

Routes under `/device/network` and `/device/user` are declared before
`/device/{device_id}` so that those literal segments are never parsed as ids.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, status
from fastapi.responses import PlainTextResponse

from defguard.core.auth.deps import AdminCaller, CurrentCaller, require_admin_or_self
from defguard.core.context import AuditCtx, DbSession
from defguard.core.devices import service
from defguard.core.devices.schemas import (
    AddDevice,
    AddDeviceResult,
    AddNetworkDevice,
    AddNetworkDeviceResult,
    DeviceLocationConfig,
    DeviceOut,
    IpAvailability,
    IpAvailabilityCheck,
    ModifyDevice,
    ModifyNetworkDevice,
    NetworkDeviceInfo,
    SplitIpOut,
)
from defguard.core.errors import forbidden, not_found
from defguard.core.pagination import PageParams, Paginated
from defguard.core.schemas import Empty, error_responses

router = APIRouter(tags=["devices"])

Page = Annotated[PageParams, Depends()]


# -- network devices (admin) ---------------------------------------------------


@router.get(
    "/device/network",
    response_model=Paginated[NetworkDeviceInfo],
    responses=error_responses(401, 403),
)
async def list_network_devices(
    _: AdminCaller, db: DbSession, page: Page
) -> Paginated[NetworkDeviceInfo]:
    """Network devices sorted by name (paginated)."""
    total = await service.count_network_devices(db)
    states = await service.list_network_devices(db, offset=page.offset, limit=page.per_page)
    return Paginated[NetworkDeviceInfo](
        data=[service.network_device_info(s) for s in states], pagination=page.meta(total)
    )


@router.post(
    "/device/network",
    response_model=AddNetworkDeviceResult,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(400, 401, 403, 409),
)
async def add_network_device(
    data: AddNetworkDevice, caller: AdminCaller, ctx: AuditCtx, db: DbSession
) -> AddNetworkDeviceResult:
    state = await service.add_network_device(
        db,
        name=data.name,
        description=data.description,
        location_id=data.location_id,
        assigned_ips=data.assigned_ips,
        wireguard_pubkey=data.wireguard_pubkey,
        actor=caller.user,
        ctx=ctx,
    )
    result = AddNetworkDeviceResult(
        config=service.network_device_config(state), device=service.network_device_info(state)
    )
    await db.commit()
    return result


@router.get(
    "/device/network/ip/{location_id}",
    response_model=list[SplitIpOut],
    responses=error_responses(400, 401, 403, 404),
)
async def first_free_ips(location_id: int, _: AdminCaller, db: DbSession) -> list[SplitIpOut]:
    """The first free address per subnet; a full location gives `network_full`."""
    location = await service.location_or_404(db, location_id)
    return await service.first_free_ips(db, location)


@router.post(
    "/device/network/ip/{location_id}",
    response_model=list[IpAvailability],
    responses=error_responses(401, 403, 404),
)
async def check_ips(
    location_id: int, data: IpAvailabilityCheck, _: AdminCaller, db: DbSession
) -> list[IpAvailability]:
    """Availability of each IP, in input order."""
    location = await service.location_or_404(db, location_id)
    return await service.check_ips(db, location, data.ips, data.device_id)


@router.get(
    "/device/network/{device_id}",
    response_model=NetworkDeviceInfo,
    responses=error_responses(401, 403, 404),
)
async def get_network_device(device_id: int, _: AdminCaller, db: DbSession) -> NetworkDeviceInfo:
    return service.network_device_info(await service.network_device_state(db, device_id))


@router.put(
    "/device/network/{device_id}",
    response_model=NetworkDeviceInfo,
    responses=error_responses(400, 401, 403, 404, 409),
)
async def update_network_device(
    device_id: int, data: ModifyNetworkDevice, caller: AdminCaller, ctx: AuditCtx, db: DbSession
) -> NetworkDeviceInfo:
    state = await service.update_network_device(
        db,
        device_id,
        name=data.name,
        description=data.description,
        assigned_ips=data.assigned_ips,
        actor=caller.user,
        ctx=ctx,
    )
    info = service.network_device_info(state)
    await db.commit()
    return info


@router.delete(
    "/device/network/{device_id}", response_model=Empty, responses=error_responses(401, 403, 404)
)
async def delete_network_device(
    device_id: int, caller: AdminCaller, ctx: AuditCtx, db: DbSession
) -> Empty:
    state = await service.network_device_state(db, device_id)
    await service.delete_device(db, state.device, actor=caller.user, ctx=ctx)
    await db.commit()
    return Empty()


@router.get(
    "/device/network/{device_id}/config",
    response_model=list[DeviceLocationConfig],
    responses=error_responses(401, 403, 404),
)
async def network_device_config(
    device_id: int, _: AdminCaller, db: DbSession
) -> list[DeviceLocationConfig]:
    state = await service.network_device_state(db, device_id)
    return [
        DeviceLocationConfig(
            network_id=state.location.id,
            network_name=state.location.name,
            config=service.network_device_config(state).config,
            location_mfa_mode=state.location.location_mfa_mode,
        )
    ]


# -- user devices --------------------------------------------------------------


@router.get(
    "/device/user/{username}",
    response_model=list[DeviceOut],
    responses=error_responses(401, 403),
)
async def list_user_devices(username: str, caller: CurrentCaller, db: DbSession) -> list[DeviceOut]:
    """A user's devices; an unknown user simply has none."""
    if caller.user.username != username and not caller.is_admin:
        raise forbidden("Admin access required")
    return [DeviceOut.of(d) for d in await service.list_user_devices(db, username)]


@router.get("/device", response_model=list[DeviceOut], responses=error_responses(401, 403))
async def list_devices(_: AdminCaller, db: DbSession) -> list[DeviceOut]:
    """Every device of both types, by id."""
    return [DeviceOut.of(d) for d in await service.list_devices(db)]


@router.post(
    "/device/{username}",
    response_model=AddDeviceResult,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(400, 401, 403, 404, 409),
)
async def add_device(
    username: str, data: AddDevice, caller: CurrentCaller, ctx: AuditCtx, db: DbSession
) -> AddDeviceResult:
    """Add a device for a user; it gets an address in every location that allows them."""
    require_admin_or_self(caller, username)
    user = await service.user_by_username(db, username)
    if user is None:
        raise not_found(f"user {username} not found")
    if not user.is_active and not caller.is_admin:
        raise forbidden("User is disabled")
    (device,) = await service.add_user_devices(
        db,
        [service.NewUserDevice(user.id, data.name, data.wireguard_pubkey, data.description)],
        actor=caller.user,
        ctx=ctx,
    )
    result = AddDeviceResult(
        device=DeviceOut.of(device), configs=await service.device_configs(db, device)
    )
    await db.commit()
    return result


@router.get("/device/{device_id}", response_model=DeviceOut, responses=error_responses(401, 404))
async def get_device(device_id: int, caller: CurrentCaller, db: DbSession) -> DeviceOut:
    return DeviceOut.of(await service.device_for(db, caller.user, device_id))


@router.put(
    "/device/{device_id}",
    response_model=DeviceOut,
    responses=error_responses(400, 401, 404, 409),
)
async def update_device(
    device_id: int, data: ModifyDevice, caller: CurrentCaller, ctx: AuditCtx, db: DbSession
) -> DeviceOut:
    device = await service.device_for(db, caller.user, device_id)
    device = await service.update_device(
        db,
        device,
        name=data.name,
        wireguard_pubkey=data.wireguard_pubkey,
        description=data.description,
        actor=caller.user,
        ctx=ctx,
    )
    out = DeviceOut.of(device)
    await db.commit()
    return out


@router.delete("/device/{device_id}", response_model=Empty, responses=error_responses(401, 404))
async def delete_device(
    device_id: int, caller: CurrentCaller, ctx: AuditCtx, db: DbSession
) -> Empty:
    """Remove a device of either type."""
    device = await service.device_for(db, caller.user, device_id)
    await service.delete_device(db, device, actor=caller.user, ctx=ctx)
    await db.commit()
    return Empty()


@router.get(
    "/device/{device_id}/config",
    response_model=list[DeviceLocationConfig],
    responses=error_responses(401, 404),
)
async def device_configs(
    device_id: int, caller: CurrentCaller, db: DbSession
) -> list[DeviceLocationConfig]:
    """Configs of the device's locations that do not require MFA."""
    device = await service.device_for(db, caller.user, device_id)
    return await service.device_location_configs(db, device)


@router.get(
    "/network/{network_id}/device/{device_id}/config",
    response_class=PlainTextResponse,
    responses={
        200: {"content": {"text/plain": {}}, "description": "WireGuard config text"},
        **error_responses(401, 404),
    },
)
async def device_config_text(
    network_id: int, device_id: int, caller: CurrentCaller, db: DbSession
) -> PlainTextResponse:
    device = await service.device_for(db, caller.user, device_id)
    return PlainTextResponse(await service.device_config_text(db, device, network_id))
