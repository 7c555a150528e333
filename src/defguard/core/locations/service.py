"""Creating, changing and removing locations, inside the caller's transaction.

Nothing here commits: the API handler commits once the whole change (rows,
re-addressed devices, revision bump, activity event) is in place, so a failure
at any step leaves the database untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import any_, delete, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from defguard.core.activity.service import record
from defguard.core.context import RequestContext
from defguard.core.devices.models import Device, DeviceLocation, DeviceType
from defguard.core.errors import bad_request, not_found
from defguard.core.gateways.service import location_gateways
from defguard.core.groups.models import Group
from defguard.core.locations.access import (
    SyncTarget,
    bump_revisions,
    id_array,
    lock_addressing,
    sync_locations,
)
from defguard.core.locations.models import Location, LocationMfaMode, ServiceLocationMode
from defguard.core.locations.schemas import LocationDisplay, LocationInfo, LocationWrite
from defguard.core.users.models import User
from defguard.core.vpn_sessions.service import mfa_mode_changed
from defguard.wireguard.addressing import (
    AddressError,
    Interface,
    Network,
    as_interface,
    find_overlap,
    parse_allowed_ips,
    parse_location_addresses,
)
from defguard.wireguard.keys import generate_keypair

INT32_MAX = 2**31 - 1
MFA_MIN_DISCONNECT_THRESHOLD = 120


@dataclass
class ValidatedWrite:
    subnets: list[Interface]
    allowed_ips: list[Network]
    groups: list[Group]


def _check_range(field: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise bad_request(f"{field} must be between {low} and {high}")


async def validate_write(
    db: AsyncSession, data: LocationWrite, *, location_id: int | None
) -> ValidatedWrite:
    """The §5 rules in their documented order, then range and overlap checks."""
    if (
        data.location_mfa_mode != LocationMfaMode.DISABLED
        and data.peer_disconnect_threshold < MFA_MIN_DISCONNECT_THRESHOLD
    ):
        raise bad_request(
            "peer_disconnect_threshold must be at least 120 when location MFA is enabled"
        )
    if data.location_mfa_mode == LocationMfaMode.EXTERNAL:
        raise bad_request("Cannot enable external MFA. External OpenID provider is not configured")
    if not data.allow_all_groups and not data.allowed_groups:
        raise bad_request("At least one group must be specified when allow_all_groups is disabled")
    try:
        subnets = parse_location_addresses(data.address)
    except AddressError as exc:
        raise bad_request(f"address: {exc}") from None

    if not data.name.strip():
        raise bad_request("name must not be empty")
    if not data.endpoint.strip():
        raise bad_request("endpoint must not be empty")
    _check_range("port", data.port, 1, 65535)
    # IPv6 needs links of at least 1280 bytes; 576 is the IPv4 minimum datagram.
    min_mtu = 1280 if any(s.version == 6 for s in subnets) else 576
    _check_range("mtu", data.mtu, min_mtu, 65535)
    _check_range("fwmark", data.fwmark, 0, 2**32 - 1)
    _check_range("keepalive_interval", data.keepalive_interval, 0, 65535)
    _check_range("peer_disconnect_threshold", data.peer_disconnect_threshold, 0, INT32_MAX)

    others = select(Location.id, Location.name, Location.address)
    if location_id is not None:
        others = others.where(Location.id != location_id)
    for other_id, other_name, other_address in await db.execute(others):
        clash = find_overlap(subnets, [as_interface(a) for a in other_address])
        if clash is not None:
            mine, theirs = clash
            raise bad_request(
                f"address: {mine} overlaps {theirs} of location {other_name} (id {other_id})"
            )

    groups: list[Group] = []
    if data.allowed_groups:
        groups = list(
            (
                await db.execute(
                    select(Group)
                    .where(Group.name.in_(set(data.allowed_groups)))
                    .order_by(Group.name)
                )
            ).scalars()
        )
    return ValidatedWrite(subnets, parse_allowed_ips(data.allowed_ips), groups)


def _apply(location: Location, data: LocationWrite, valid: ValidatedWrite) -> None:
    location.name = data.name
    location.address = list(valid.subnets)
    location.endpoint = data.endpoint
    location.port = data.port
    location.allowed_ips = [as_interface(n) for n in valid.allowed_ips]
    location.dns = data.dns
    location.mtu = data.mtu
    location.fwmark = data.fwmark
    location.allow_all_groups = data.allow_all_groups
    location.allowed_groups = list(valid.groups)
    location.keepalive_interval = data.keepalive_interval
    location.peer_disconnect_threshold = data.peer_disconnect_threshold
    location.acl_enabled = data.acl_enabled
    location.acl_default_allow = data.acl_default_allow
    location.location_mfa_mode = data.location_mfa_mode
    location.service_location_mode = data.service_location_mode


async def create_location(
    db: AsyncSession, data: LocationWrite, *, actor: User, ctx: RequestContext
) -> Location:
    """A new location with its own keypair; every currently allowed device gets addresses."""
    await lock_addressing(db)
    valid = await validate_write(db, data, location_id=None)
    keys = generate_keypair()
    location = Location(pubkey=keys.public, prvkey=keys.private, connected_at=None)
    _apply(location, data, valid)
    db.add(location)
    await db.flush()
    await sync_locations(db, [SyncTarget(location.id, location.name, valid.subnets)])
    record(
        db,
        ctx,
        actor,
        "vpn_location_added",
        f"Added VPN location {location.name}",
        location=location.name,
    )
    await db.flush()
    return location


async def _locked_location(db: AsyncSession, location_id: int) -> Location:
    location = (
        await db.execute(
            select(Location)
            .where(Location.id == location_id)
            .options(selectinload(Location.allowed_groups))
            .with_for_update(of=Location)
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    if location is None:
        raise not_found(f"Network {location_id} not found")
    return location


async def update_location(
    db: AsyncSession, location_id: int, data: LocationWrite, *, actor: User, ctx: RequestContext
) -> Location:
    """Apply a PUT body and re-sync the location's devices.

    Devices keep every address that still fits the (possibly new) subnets;
    only missing ones are allocated, all with a fixed number of statements.
    """
    await lock_addressing(db)
    location = await _locked_location(db, location_id)
    valid = await validate_write(db, data, location_id=location_id)
    previous_mfa_mode = location.location_mfa_mode
    _apply(location, data, valid)
    if data.location_mfa_mode != LocationMfaMode.DISABLED:
        location.service_location_mode = ServiceLocationMode.DISABLED
    await db.flush()
    await sync_locations(
        db, [SyncTarget(location.id, location.name, valid.subnets)], check_capacity=True
    )
    if location.location_mfa_mode != previous_mfa_mode:
        # Whether a device needs a session to be a peer changed for every device.
        await mfa_mode_changed(db, location.id)
    # The location's own settings (port, MTU, addresses...) changed too.
    await bump_revisions(db, [location.id])
    await db.refresh(location, attribute_names=["config_revision"])
    record(
        db,
        ctx,
        actor,
        "vpn_location_modified",
        f"Modified VPN location {location.name}",
        location=location.name,
    )
    await db.flush()
    return location


async def delete_location(
    db: AsyncSession, location_id: int, *, actor: User, ctx: RequestContext
) -> None:
    """Remove a location and its network devices; user devices only lose their addresses."""
    await lock_addressing(db)
    location = await _locked_location(db, location_id)
    name = location.name
    bound = select(DeviceLocation.device_id).where(
        DeviceLocation.wireguard_network_id == location_id
    )
    await db.execute(
        delete(Device)
        .where(Device.device_type == DeviceType.NETWORK, Device.id.in_(bound))
        .execution_options(synchronize_session=False)
    )
    await db.delete(location)
    record(db, ctx, actor, "vpn_location_removed", f"Removed VPN location {name}", location=name)
    await db.flush()


async def get_location(db: AsyncSession, location_id: int) -> Location | None:
    return await db.get(Location, location_id)


async def _infos(db: AsyncSession, locations: list[Location]) -> list[LocationInfo]:
    ids = [loc.id for loc in locations]
    with_devices: set[int] = set()
    if ids:
        with_devices = set(
            (
                await db.execute(
                    select(DeviceLocation.wireguard_network_id)
                    .where(DeviceLocation.wireguard_network_id == any_(id_array(ids)))
                    .distinct()
                )
            ).scalars()
        )
    gateways = await location_gateways(db, ids)
    return [
        LocationInfo.build(
            loc,
            allowed_groups=[g.name for g in loc.allowed_groups],
            has_devices=loc.id in with_devices,
            gateways=gateways.get(loc.id, []),
        )
        for loc in locations
    ]


async def list_location_infos(db: AsyncSession) -> list[LocationInfo]:
    locations = list(
        (
            await db.execute(
                select(Location)
                .options(selectinload(Location.allowed_groups))
                .order_by(Location.name, Location.id)
            )
        ).scalars()
    )
    return await _infos(db, locations)


async def location_info(db: AsyncSession, location_id: int) -> LocationInfo | None:
    location = (
        await db.execute(
            select(Location)
            .where(Location.id == location_id)
            .options(selectinload(Location.allowed_groups))
        )
    ).scalar_one_or_none()
    if location is None:
        return None
    return (await _infos(db, [location]))[0]


async def count_locations(db: AsyncSession) -> int:
    return (await db.execute(select(func.count()).select_from(Location))).scalar_one()


async def locations_display(db: AsyncSession) -> list[LocationDisplay]:
    rows = await db.execute(select(Location.id, Location.name).order_by(Location.id))
    return [LocationDisplay(id=lid, display=name) for lid, name in rows]


async def any_location_exists(db: AsyncSession) -> bool:
    return (await db.execute(select(exists().where(Location.id.is_not(None))))).scalar_one()
