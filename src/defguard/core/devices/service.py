"""User and network devices, their keys and their addresses, inside the caller's transaction.

Nothing here commits; API handlers commit after the whole change. Adding user
devices is bulk-capable (`add_user_devices`): one batch of any size costs a
fixed number of statements, with addresses allocated in memory from the used
set of each location, loaded once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import ip_address

from sqlalchemy import BigInteger, Text, any_, func, insert, literal, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from defguard.core.activity.models import ActivityLogEvent
from defguard.core.activity.service import describe_agent, record
from defguard.core.context import RequestContext
from defguard.core.devices.models import Device, DeviceLocation, DeviceType
from defguard.core.devices.schemas import (
    DeviceConfig,
    DeviceLocationConfig,
    IpAvailability,
    NetworkDeviceInfo,
    NetworkDeviceLocation,
    SplitIpOut,
)
from defguard.core.errors import ApiError, bad_request, conflict, not_found
from defguard.core.locations.access import (
    allowed_locations_of_users,
    bump_revisions,
    id_array,
    insert_assignments,
    location_subnets,
    lock_addressing,
    network_full,
    unnest_table,
    update_assignments,
    used_addresses,
)
from defguard.core.locations.models import Location, LocationMfaMode
from defguard.core.users.models import User
from defguard.db.base import utcnow
from defguard.wireguard.addressing import (
    Address,
    Interface,
    IpProblem,
    NetworkFull,
    allocate,
    allocate_devices,
    as_address,
    classify_ip,
    containing_subnet,
    format_cidr,
    split_ip,
)
from defguard.wireguard.conf import format_endpoint, render_client_config
from defguard.wireguard.keys import is_valid_key

_device = Device.__table__
_dl = DeviceLocation.__table__


# -- shared checks -------------------------------------------------------------


def _check_name(name: str) -> None:
    if not name.strip():
        raise bad_request("name must not be empty")


def _check_key_format(key: str) -> None:
    if not is_valid_key(key):
        raise bad_request(f"{key} is not a valid pubkey")


def _duplicate_key(name: str, key: str) -> ApiError:
    return conflict(f"Failed to add device {name}, identical pubkey ({key}) already exists")


async def _location_pubkeys(db: AsyncSession) -> set[str]:
    return set((await db.execute(select(Location.pubkey))).scalars())


async def _existing_keys(
    db: AsyncSession, keys: Sequence[str], *, except_device: int | None = None
) -> set[str]:
    if not keys:
        return set()
    query = select(Device.wireguard_pubkey).where(
        Device.wireguard_pubkey == any_(literal(list(keys), type_=ARRAY(Text)))
    )
    if except_device is not None:
        query = query.where(Device.id != except_device)
    return set((await db.execute(query)).scalars())


async def _name_taken(
    db: AsyncSession, user_id: int, name: str, device_type: DeviceType, *, except_device: int | None
) -> bool:
    query = select(Device.id).where(
        Device.user_id == user_id, Device.name == name, Device.device_type == device_type
    )
    if except_device is not None:
        query = query.where(Device.id != except_device)
    return (await db.execute(query.limit(1))).first() is not None


def _name_conflict(name: str) -> ApiError:
    return conflict(f"Device with name {name} already exists")


# -- configs -------------------------------------------------------------------


def build_config(location: Location, ips: Sequence[Address]) -> DeviceConfig:
    """The client view of one device in one location, including the `.conf` text."""
    return DeviceConfig(
        network_id=location.id,
        network_name=location.name,
        config=render_client_config(
            addresses=ips,
            server_pubkey=location.pubkey,
            endpoint=location.endpoint,
            port=location.port,
            allowed_ips=location.allowed_ips,
            dns=location.dns,
            keepalive_interval=location.keepalive_interval,
        ),
        address=[str(ip) for ip in ips],
        endpoint=format_endpoint(location.endpoint, location.port),
        allowed_ips=[format_cidr(n) for n in location.allowed_ips],
        pubkey=location.pubkey,
        dns=location.dns,
        keepalive_interval=location.keepalive_interval,
        location_mfa_mode=location.location_mfa_mode,
        service_location_mode=location.service_location_mode,
    )


async def device_locations(
    db: AsyncSession, device_id: int
) -> list[tuple[Location, tuple[Address, ...]]]:
    """The locations a device has addresses in, by location id."""
    rows = await db.execute(
        select(Location, DeviceLocation.wireguard_ips)
        .join(DeviceLocation, DeviceLocation.wireguard_network_id == Location.id)
        .where(DeviceLocation.device_id == device_id)
        .order_by(Location.id)
    )
    return [(loc, tuple(as_address(ip) for ip in ips)) for loc, ips in rows]


async def device_configs(db: AsyncSession, device: Device) -> list[DeviceConfig]:
    return [build_config(loc, ips) for loc, ips in await device_locations(db, device.id)]


async def device_location_configs(db: AsyncSession, device: Device) -> list[DeviceLocationConfig]:
    """Downloadable configs: locations with MFA need the client's MFA flow instead."""
    return [
        DeviceLocationConfig(
            network_id=loc.id,
            network_name=loc.name,
            config=build_config(loc, ips).config,
            location_mfa_mode=loc.location_mfa_mode,
        )
        for loc, ips in await device_locations(db, device.id)
        if loc.location_mfa_mode == LocationMfaMode.DISABLED
    ]


async def device_config_text(db: AsyncSession, device: Device, location_id: int) -> str:
    location = await db.get(Location, location_id)
    if location is None:
        raise not_found(f"Network {location_id} not found")
    ips = (
        await db.execute(
            select(DeviceLocation.wireguard_ips).where(
                DeviceLocation.device_id == device.id,
                DeviceLocation.wireguard_network_id == location_id,
            )
        )
    ).scalar_one_or_none()
    if ips is None:
        raise not_found(f"No IP address found for device: {device.name}({device.id})")
    return build_config(location, [as_address(ip) for ip in ips]).config


# -- lookups -------------------------------------------------------------------


async def get_device(db: AsyncSession, device_id: int) -> Device | None:
    return await db.get(Device, device_id)


async def device_for(db: AsyncSession, caller: User, device_id: int) -> Device:
    """The device if the caller is an admin or its owner; otherwise it does not exist for them."""
    device = await db.get(Device, device_id)
    if device is None or (device.user_id != caller.id and not caller.is_admin):
        raise not_found(f"device id {device_id} not found")
    return device


async def user_by_username(db: AsyncSession, username: str) -> User | None:
    return (await db.execute(select(User).where(User.username == username))).scalar_one_or_none()


async def list_devices(db: AsyncSession) -> list[Device]:
    return list((await db.execute(select(Device).order_by(Device.id))).scalars())


async def list_user_devices(db: AsyncSession, username: str) -> list[Device]:
    query = (
        select(Device)
        .join(User, User.id == Device.user_id)
        .where(User.username == username, Device.device_type == DeviceType.USER)
        .order_by(Device.id)
    )
    return list((await db.execute(query)).scalars())


# -- adding user devices -------------------------------------------------------


@dataclass(frozen=True)
class NewUserDevice:
    user_id: int
    name: str
    wireguard_pubkey: str
    description: str | None = None


async def add_user_devices(
    db: AsyncSession, specs: Sequence[NewUserDevice], *, actor: User, ctx: RequestContext
) -> list[Device]:
    """Create user devices and address each in every location that allows its owner.

    Returns the devices in `specs` order. All-or-nothing: any invalid or
    duplicate key or name, unknown user, or full location raises before a
    row is written. Statement count is fixed whatever `len(specs)` is.
    """
    specs = list(specs)
    if not specs:
        return []
    keys_seen: set[str] = set()
    names_seen: set[tuple[int, str]] = set()
    for spec in specs:
        _check_name(spec.name)
        _check_key_format(spec.wireguard_pubkey)
        if spec.wireguard_pubkey in keys_seen:
            raise _duplicate_key(spec.name, spec.wireguard_pubkey)
        if (spec.user_id, spec.name) in names_seen:
            raise _name_conflict(spec.name)
        keys_seen.add(spec.wireguard_pubkey)
        names_seen.add((spec.user_id, spec.name))

    await lock_addressing(db)
    locations = {
        loc.id: loc for loc in (await db.execute(select(Location).order_by(Location.id))).scalars()
    }
    if not locations:
        raise bad_request("No VPN location exists; create a location before adding devices")
    location_keys = {loc.pubkey for loc in locations.values()}
    for spec in specs:
        if spec.wireguard_pubkey in location_keys:
            raise bad_request(
                f"Device pubkey {spec.wireguard_pubkey} is the same as gateway pubkey"
            )
    taken = await _existing_keys(db, [s.wireguard_pubkey for s in specs])
    for spec in specs:
        if spec.wireguard_pubkey in taken:
            raise _duplicate_key(spec.name, spec.wireguard_pubkey)

    user_ids = sorted({s.user_id for s in specs})
    owners = {
        uid: name
        for uid, name in (
            await db.execute(
                select(User.id, User.username).where(User.id == any_(id_array(user_ids)))
            )
        )
    }
    for uid in user_ids:
        if uid not in owners:
            raise not_found(f"user id {uid} not found")
    await _check_new_names(db, specs)

    allowed = await allowed_locations_of_users(db, user_ids)
    members: dict[int, list[int]] = defaultdict(list)
    for index, spec in enumerate(specs):
        for location_id in allowed.get(spec.user_id, ()):
            members[location_id].append(index)
    used = await used_addresses(db, sorted(members))
    addresses: dict[int, list[tuple[Address, ...]]] = {}
    for location_id, indices in members.items():
        location = locations[location_id]
        try:
            addresses[location_id] = allocate_devices(
                location_subnets(location), used[location_id], len(indices)
            )
        except NetworkFull as exc:
            raise network_full(location.name, exc.subnet) from None

    devices = await _insert_devices(db, specs)
    rows = [
        (devices[index].id, location_id, ips)
        for location_id, indices in members.items()
        for index, ips in zip(indices, addresses[location_id], strict=True)
    ]
    await insert_assignments(db, rows)
    await bump_revisions(db, members)
    await _record_device_events(db, ctx, actor, devices, owners)
    return devices


async def _check_new_names(db: AsyncSession, specs: Sequence[NewUserDevice]) -> None:
    src = unnest_table(
        user_id=(BigInteger, [s.user_id for s in specs]), name=(Text, [s.name for s in specs])
    )
    clash = (
        await db.execute(
            select(Device.name)
            .join(src, (Device.user_id == src.c.user_id) & (Device.name == src.c.name))
            .where(Device.device_type == DeviceType.USER)
            .limit(1)
        )
    ).scalar_one_or_none()
    if clash is not None:
        raise _name_conflict(clash)


async def _insert_devices(db: AsyncSession, specs: Sequence[NewUserDevice]) -> list[Device]:
    """One INSERT .. SELECT FROM unnest(..) RETURNING, loaded as session-bound devices."""
    src = unnest_table(
        name=(Text, [s.name for s in specs]),
        key=(Text, [s.wireguard_pubkey for s in specs]),
        user_id=(BigInteger, [s.user_id for s in specs]),
        description=(Text, [s.description for s in specs]),
    )
    now = utcnow()
    stmt = insert(_device).from_select(
        [
            "name",
            "wireguard_pubkey",
            "user_id",
            "description",
            "created",
            "device_type",
            "configured",
        ],
        select(
            src.c.name,
            src.c.key,
            src.c.user_id,
            src.c.description,
            literal(now, type_=_device.c.created.type),
            literal(DeviceType.USER, type_=_device.c.device_type.type),
            literal(True),
        ),
    )
    inserted = (
        await db.execute(select(Device).from_statement(stmt.returning(*_device.c)))
    ).scalars()
    by_key = {device.wireguard_pubkey: device for device in inserted}
    return [by_key[s.wireguard_pubkey] for s in specs]


async def _record_device_events(
    db: AsyncSession,
    ctx: RequestContext,
    actor: User,
    devices: Sequence[Device],
    owners: dict[int, str],
) -> None:
    """One `device_added` event per device, as `record` writes them, in one statement.

    Only the description differs between the events of a batch.
    """
    descriptions = []
    for device in devices:
        owner = owners[device.user_id]
        description = f"Added device {device.name}"
        if owner != actor.username:
            description += f" for user {owner}"
        descriptions.append(description)
    src = unnest_table(description=(Text, descriptions))
    log = ActivityLogEvent.__table__
    await db.execute(
        insert(log).from_select(
            ["timestamp", "user_id", "username", "ip", "event", "module", "device", "description"],
            select(
                literal(utcnow(), type_=log.c.timestamp.type),
                literal(actor.id, type_=log.c.user_id.type),
                literal(actor.username, type_=Text),
                literal(ctx.ip, type_=log.c.ip.type),
                literal("device_added", type_=Text),
                literal("defguard", type_=Text),
                literal(describe_agent(ctx.user_agent), type_=Text),
                src.c.description,
            ),
        )
    )


# -- changing and removing -----------------------------------------------------


async def _device_location_ids(db: AsyncSession, device_id: int) -> list[int]:
    return list(
        (
            await db.execute(
                select(DeviceLocation.wireguard_network_id).where(
                    DeviceLocation.device_id == device_id
                )
            )
        ).scalars()
    )


async def update_device(
    db: AsyncSession,
    device: Device,
    *,
    name: str,
    wireguard_pubkey: str,
    description: str | None,
    actor: User,
    ctx: RequestContext,
) -> Device:
    """Rename or re-key a device; a new key reaches gateways through a revision bump."""
    _check_name(name)
    await lock_addressing(db)
    location_keys = await _location_pubkeys(db)
    if not location_keys:
        raise bad_request("No VPN location exists; create a location before changing devices")
    key_changed = wireguard_pubkey != device.wireguard_pubkey
    if key_changed:
        _check_key_format(wireguard_pubkey)
        if wireguard_pubkey in location_keys:
            raise bad_request("device's pubkey must be different from server's pubkey")
        if await _existing_keys(db, [wireguard_pubkey], except_device=device.id):
            raise _duplicate_key(name, wireguard_pubkey)
    if name != device.name and await _name_taken(
        db, device.user_id, name, device.device_type, except_device=device.id
    ):
        raise _name_conflict(name)
    device.name = name
    device.wireguard_pubkey = wireguard_pubkey
    device.description = description
    await db.flush()
    if key_changed:
        await bump_revisions(db, await _device_location_ids(db, device.id))
    event = (
        "network_device_modified" if device.device_type == DeviceType.NETWORK else "device_modified"
    )
    record(db, ctx, actor, event, f"Modified device {device.name}")
    await db.flush()
    return device


async def delete_device(
    db: AsyncSession, device: Device, *, actor: User, ctx: RequestContext
) -> None:
    """Remove a device of either type; its locations' gateways drop the peer."""
    await lock_addressing(db)
    locations = (
        await db.execute(
            select(Location.id, Location.name)
            .join(DeviceLocation, DeviceLocation.wireguard_network_id == Location.id)
            .where(DeviceLocation.device_id == device.id)
            .order_by(Location.id)
        )
    ).all()
    name = device.name
    await db.delete(device)
    await db.flush()
    await bump_revisions(db, [lid for lid, _ in locations])
    if device.device_type == DeviceType.NETWORK:
        location_name = locations[0][1] if locations else None
        record(
            db,
            ctx,
            actor,
            "network_device_removed",
            f"Removed network device {name}",
            location=location_name,
        )
    else:
        record(db, ctx, actor, "device_removed", f"Removed device {name}")
    await db.flush()


# -- network devices -----------------------------------------------------------


@dataclass
class NetworkDeviceState:
    device: Device
    location: Location
    ips: tuple[Address, ...]
    added_by: str


async def _used_in_location(
    db: AsyncSession, location_id: int, *, except_device: int | None = None
) -> set[Address]:
    return (await used_addresses(db, [location_id], except_device=except_device))[location_id]


def _parse_ip(text: str) -> Address | None:
    if "%" in text:
        return None
    try:
        return ip_address(text.strip())
    except ValueError:
        return None


def _resolve_network_ips(
    location: Location, requested: Sequence[str], used: set[Address], device_name: str
) -> tuple[Address, ...]:
    """Validate the admin's chosen IPs and allocate the subnets they left out."""
    subnets = location_subnets(location)
    chosen: list[Address | None] = [None] * len(subnets)
    for text in requested:
        ip = _parse_ip(text)
        if ip is None:
            raise bad_request(
                f"Failed to add network device {device_name}, invalid IP address: {text}"
            )
        index, problem = classify_ip(ip, subnets, used)
        if problem is not None:
            raise bad_request(f"IP address {ip} {problem.value} in location {location.name}")
        assert index is not None
        if chosen[index] is not None:
            raise bad_request(
                f"IP addresses {chosen[index]} and {ip} are in the same subnet {subnets[index]};"
                " a device holds one address per subnet"
            )
        chosen[index] = ip
    taken = used | {ip for ip in chosen if ip is not None}
    for index, ip in enumerate(chosen):
        if ip is None:
            try:
                chosen[index] = allocate(subnets[index], taken)[0]
            except NetworkFull as exc:
                raise network_full(location.name, exc.subnet) from None
    return tuple(ip for ip in chosen if ip is not None)


async def add_network_device(
    db: AsyncSession,
    *,
    name: str,
    description: str | None,
    location_id: int,
    assigned_ips: Sequence[str],
    wireguard_pubkey: str,
    actor: User,
    ctx: RequestContext,
) -> NetworkDeviceState:
    """A network device (a whole site behind one peer) bound to exactly one location."""
    _check_name(name)
    await lock_addressing(db)
    location = await db.get(Location, location_id)
    if location is None:
        raise bad_request(f"Failed to add device {name}, network {location_id} not found")
    _check_key_format(wireguard_pubkey)
    if wireguard_pubkey in await _location_pubkeys(db):
        raise bad_request(f"Device pubkey {wireguard_pubkey} is the same as gateway pubkey")
    if await _existing_keys(db, [wireguard_pubkey]):
        raise _duplicate_key(name, wireguard_pubkey)
    if await _name_taken(db, actor.id, name, DeviceType.NETWORK, except_device=None):
        raise _name_conflict(name)
    ips = _resolve_network_ips(
        location, assigned_ips, await _used_in_location(db, location.id), name
    )

    device = Device(
        name=name,
        wireguard_pubkey=wireguard_pubkey,
        user_id=actor.id,
        created=utcnow(),
        device_type=DeviceType.NETWORK,
        description=description,
        configured=True,
    )
    db.add(device)
    await db.flush()
    await insert_assignments(db, [(device.id, location.id, ips)])
    await bump_revisions(db, [location.id])
    record(
        db,
        ctx,
        actor,
        "network_device_added",
        f"Added network device {name}",
        location=location.name,
    )
    await db.flush()
    return NetworkDeviceState(device, location, ips, actor.username)


async def network_device_state(db: AsyncSession, device_id: int) -> NetworkDeviceState:
    states = await _network_device_states(db, device_ids=[device_id])
    if not states:
        raise not_found(f"Network device with ID {device_id} not found")
    return states[0]


async def _network_device_states(
    db: AsyncSession,
    *,
    device_ids: Iterable[int] | None = None,
    offset: int | None = None,
    limit: int | None = None,
) -> list[NetworkDeviceState]:
    query = (
        select(Device, Location, DeviceLocation.wireguard_ips, User.username)
        .join(DeviceLocation, DeviceLocation.device_id == Device.id)
        .join(Location, Location.id == DeviceLocation.wireguard_network_id)
        .join(User, User.id == Device.user_id)
        .where(Device.device_type == DeviceType.NETWORK)
        .order_by(Device.name, Device.id)
    )
    if device_ids is not None:
        query = query.where(Device.id == any_(id_array(device_ids)))
    if offset is not None:
        query = query.offset(offset)
    if limit is not None:
        query = query.limit(limit)
    rows = await db.execute(query)
    return [
        NetworkDeviceState(device, loc, tuple(as_address(ip) for ip in ips), username)
        for device, loc, ips, username in rows
    ]


async def count_network_devices(db: AsyncSession) -> int:
    query = (
        select(func.count())
        .select_from(Device)
        .join(DeviceLocation, DeviceLocation.device_id == Device.id)
        .where(Device.device_type == DeviceType.NETWORK)
    )
    return (await db.execute(query)).scalar_one()


async def list_network_devices(
    db: AsyncSession, *, offset: int, limit: int
) -> list[NetworkDeviceState]:
    return await _network_device_states(db, offset=offset, limit=limit)


async def update_network_device(
    db: AsyncSession,
    device_id: int,
    *,
    name: str,
    description: str | None,
    assigned_ips: Sequence[str],
    actor: User,
    ctx: RequestContext,
) -> NetworkDeviceState:
    _check_name(name)
    await lock_addressing(db)
    state = await network_device_state(db, device_id)
    device, location = state.device, state.location
    if name != device.name and await _name_taken(
        db, device.user_id, name, DeviceType.NETWORK, except_device=device.id
    ):
        raise _name_conflict(name)
    parsed = [_parse_ip(text) for text in assigned_ips]
    if None in parsed or set(parsed) != set(state.ips):
        used = await _used_in_location(db, location.id, except_device=device.id)
        ips = _resolve_network_ips(location, assigned_ips, used, name)
        row_id = (
            await db.execute(
                select(DeviceLocation.id).where(
                    DeviceLocation.device_id == device.id,
                    DeviceLocation.wireguard_network_id == location.id,
                )
            )
        ).scalar_one()
        await update_assignments(db, [(row_id, ips)])
        await bump_revisions(db, [location.id])
        state.ips = ips
    device.name = name
    device.description = description
    record(
        db,
        ctx,
        actor,
        "network_device_modified",
        f"Modified network device {name}",
        location=location.name,
    )
    await db.flush()
    return state


def network_device_info(state: NetworkDeviceState) -> NetworkDeviceInfo:
    subnets = location_subnets(state.location)
    split = []
    for ip in state.ips:
        index = containing_subnet(ip, subnets)
        if index is not None:
            split.append(SplitIpOut(**vars(split_ip(ip, subnets[index]))))
    device = state.device
    return NetworkDeviceInfo(
        id=device.id,
        name=device.name,
        assigned_ips=[str(ip) for ip in state.ips],
        description=device.description,
        added_by=state.added_by,
        added_date=device.created,
        location=NetworkDeviceLocation(id=state.location.id, name=state.location.name),
        wireguard_pubkey=device.wireguard_pubkey,
        configured=device.configured,
        split_ips=split,
    )


def network_device_config(state: NetworkDeviceState) -> DeviceConfig:
    return build_config(state.location, state.ips)


# -- address helpers for the network-device form -------------------------------


async def location_or_404(db: AsyncSession, location_id: int) -> Location:
    location = await db.get(Location, location_id)
    if location is None:
        raise not_found(f"Network {location_id} not found")
    return location


async def first_free_ips(db: AsyncSession, location: Location) -> list[SplitIpOut]:
    """The first free address of each subnet, as the UI pre-fills the form."""
    used = await _used_in_location(db, location.id)
    result = []
    for subnet in location_subnets(location):
        try:
            ip = allocate(subnet, used)[0]
        except NetworkFull as exc:
            raise network_full(location.name, exc.subnet) from None
        result.append(SplitIpOut(**vars(split_ip(ip, subnet))))
    return result


async def check_ips(
    db: AsyncSession, location: Location, ips: Sequence[str], device_id: int | None
) -> list[IpAvailability]:
    """Per input IP: `valid` (parses, inside a subnet) and `available` (also free)."""
    used = await _used_in_location(db, location.id, except_device=device_id)
    subnets: list[Interface] = location_subnets(location)
    result = []
    for text in ips:
        ip = _parse_ip(text)
        if ip is None:
            result.append(IpAvailability(available=False, valid=False))
            continue
        _, problem = classify_ip(ip, subnets, used)
        result.append(
            IpAvailability(available=problem is None, valid=problem is not IpProblem.OUTSIDE)
        )
    return result
