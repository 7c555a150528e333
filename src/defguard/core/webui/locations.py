"""Console pages: locations, their gateways and devices, and a device's own page.

Reads go through the services the `/network`, `/gateway` and `/device` handlers
use; every change is a call of those endpoints from the page (forms.js).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from defguard.core.context import DbSession
from defguard.core.devices.models import Device, DeviceLocation, DeviceType
from defguard.core.devices.service import build_config, device_locations, get_device
from defguard.core.gateways.service import gateway_infos
from defguard.core.groups.service import list_group_names
from defguard.core.locations.models import LocationMfaMode, ServiceLocationMode
from defguard.core.locations.schemas import LocationInfo
from defguard.core.locations.service import list_location_infos, location_info
from defguard.core.users.models import User
from defguard.core.webui.pages import Admin, PageUser, render
from defguard.core.webui.users import like_pattern
from defguard.wireguard.addressing import as_address

router = APIRouter()

MFA_MODES = [
    (LocationMfaMode.DISABLED.value, "Disabled"),
    (LocationMfaMode.INTERNAL.value, "Internal (Defguard MFA)"),
    (LocationMfaMode.EXTERNAL.value, "External (OpenID provider)"),
]
SERVICE_MODES = [
    (ServiceLocationMode.DISABLED.value, "Disabled"),
    (ServiceLocationMode.PRELOGON.value, "Pre-logon"),
    (ServiceLocationMode.ALWAYSON.value, "Always on"),
]
# What a new location starts with: the API's own defaults where it has them.
NEW_LOCATION: dict[str, Any] = {
    "name": "",
    "address": "",
    "endpoint": "",
    "port": 51820,
    "allowed_ips": "",
    "dns": "",
    "mtu": 1420,
    "fwmark": 0,
    "keepalive_interval": 25,
    "peer_disconnect_threshold": 300,
    "allow_all_groups": True,
    "allowed_groups": [],
    "acl_enabled": False,
    "acl_default_allow": False,
    "location_mfa_mode": LocationMfaMode.DISABLED.value,
    "service_location_mode": ServiceLocationMode.DISABLED.value,
}


def form_values(location: LocationInfo) -> dict[str, Any]:
    """The write body that would leave the location as it is (the PUT form's values)."""
    return {
        "name": location.name,
        "address": ",".join(location.address),
        "endpoint": location.endpoint,
        "port": location.port,
        "allowed_ips": ",".join(location.allowed_ips),
        "dns": location.dns or "",
        "mtu": location.mtu,
        "fwmark": location.fwmark,
        "keepalive_interval": location.keepalive_interval,
        "peer_disconnect_threshold": location.peer_disconnect_threshold,
        "allow_all_groups": location.allow_all_groups,
        "allowed_groups": list(location.allowed_groups),
        "acl_enabled": location.acl_enabled,
        "acl_default_allow": location.acl_default_allow,
        "location_mfa_mode": location.location_mfa_mode.value,
        "service_location_mode": location.service_location_mode.value,
    }


def parse_id(value: str) -> int | None:
    """Path ids arrive as text so that `/locations/abc` gets the 404 page, not a 422."""
    return int(value) if value.isdigit() and len(value) < 19 else None


def file_name(*parts: str) -> str:
    """A download name that every OS accepts, as keys.js `safeName` makes them."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", "-".join(parts)).strip("-")[:60]
    return (name or "defguard") + ".conf"


async def group_names(db: AsyncSession) -> list[str]:
    _, names = await list_group_names(db, offset=0, limit=10_000)
    return sorted(names, key=str.lower)


@dataclass
class LocationDevice:
    id: int
    name: str
    device_type: str
    owner: str
    ips: list[str]


DEVICES_PER_PAGE = 100


async def location_devices(
    db: AsyncSession, location_id: int, search: str, page: int
) -> tuple[int, list[LocationDevice]]:
    """One page of the location's devices with their owners, and how many match in all.

    Paged because a location holds every device of its users: tens of
    thousands in a large company would make a page of megabytes.
    """
    query = (
        select(
            Device.id, Device.name, Device.device_type, User.username, DeviceLocation.wireguard_ips
        )
        .join(DeviceLocation, DeviceLocation.device_id == Device.id)
        .join(User, User.id == Device.user_id)
        .where(DeviceLocation.wireguard_network_id == location_id)
    )
    if search:
        pattern = like_pattern(search)
        query = query.where(
            Device.name.ilike(pattern, escape="\\") | User.username.ilike(pattern, escape="\\")
        )
    total = (await db.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    rows = await db.execute(
        query.order_by(Device.device_type, func.lower(Device.name), Device.id)
        .offset((page - 1) * DEVICES_PER_PAGE)
        .limit(DEVICES_PER_PAGE)
    )
    return total, [
        LocationDevice(did, name, kind.value, owner, [str(as_address(ip)) for ip in ips or ()])
        for did, name, kind, owner, ips in rows
    ]


async def device_counts(db: AsyncSession) -> dict[int, int]:
    """One grouped count, not a device list per location."""
    rows = await db.execute(
        select(DeviceLocation.wireguard_network_id, func.count()).group_by(
            DeviceLocation.wireguard_network_id
        )
    )
    return {location_id: count for location_id, count in rows}


def _not_found(request: Request, admin: PageUser, what: str) -> HTMLResponse:
    return render(
        request, "not_found.html", admin, section="locations", status_code=404, message=what
    )


@router.get("/locations", response_class=HTMLResponse)
async def locations_page(request: Request, admin: Admin, db: DbSession) -> HTMLResponse:
    locations = await list_location_infos(db)
    gateways = await gateway_infos(db, [loc.id for loc in locations])
    return render(
        request,
        "locations.html",
        admin,
        section="locations",
        locations=locations,
        gateways={loc.id: [g for g in gateways if g.location_id == loc.id] for loc in locations},
        device_counts=await device_counts(db),
    )


@router.get("/locations/new", response_class=HTMLResponse)
async def new_location_page(request: Request, admin: Admin, db: DbSession) -> HTMLResponse:
    return render(
        request,
        "location_new.html",
        admin,
        section="locations",
        values=NEW_LOCATION,
        groups=await group_names(db),
        mfa_modes=MFA_MODES,
        service_modes=SERVICE_MODES,
    )


@router.get("/locations/{location_id}", response_class=HTMLResponse)
async def location_page(
    location_id: str, request: Request, admin: Admin, db: DbSession
) -> HTMLResponse:
    lid = parse_id(location_id)
    location = await location_info(db, lid) if lid is not None else None
    if location is None:
        return _not_found(request, admin, f"There is no location with id {location_id}.")
    search = request.query_params.get("dq", "").strip()
    page = parse_id(request.query_params.get("dpage", "1")) or 1
    total, devices = await location_devices(db, location.id, search, page)
    return render(
        request,
        "location_detail.html",
        admin,
        section="locations",
        location=location,
        values=form_values(location),
        groups=await group_names(db),
        mfa_modes=MFA_MODES,
        service_modes=SERVICE_MODES,
        gateways=await gateway_infos(db, [location.id]),
        devices=devices,
        device_total=total,
        device_search=search,
        device_page=page,
        device_pages=max(1, -(-total // DEVICES_PER_PAGE)),
        saved=request.query_params.get("saved") == "1",
    )


@dataclass
class DeviceLocationView:
    id: int
    name: str
    endpoint: str
    ips: list[str]
    mfa: bool
    config: str
    file_name: str


@router.get("/devices/{device_id}", response_class=HTMLResponse)
async def device_page(
    device_id: str, request: Request, admin: Admin, db: DbSession
) -> HTMLResponse:
    did = parse_id(device_id)
    device = await get_device(db, did) if did is not None else None
    if device is None:
        return render(
            request,
            "not_found.html",
            admin,
            status_code=404,
            message=f"There is no device with id {device_id}.",
        )
    owner = await db.get(User, device.user_id)
    views = [
        DeviceLocationView(
            id=loc.id,
            name=loc.name,
            endpoint=f"{loc.endpoint}:{loc.port}",
            ips=[str(ip) for ip in ips],
            # As `GET /device/{id}/config`: an MFA location's client needs the MFA flow.
            mfa=loc.location_mfa_mode != LocationMfaMode.DISABLED,
            config=build_config(loc, ips).config,
            file_name=file_name(device.name, loc.name),
        )
        for loc, ips in await device_locations(db, device.id)
    ]
    network = device.device_type == DeviceType.NETWORK
    return render(
        request,
        "device_detail.html",
        admin,
        section="locations" if network else "users",
        device=device,
        owner=owner.username if owner else "",
        owner_name=owner.full_name if owner else "",
        network=network,
        locations=views,
        saved=request.query_params.get("saved") == "1",
        after_delete=(
            f"/locations/{views[0].id}"
            if network and views
            else f"/users/{quote(owner.username, safe='')}"
            if owner and not network
            else "/locations"
        ),
    )
