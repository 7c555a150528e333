"""Loading one location's firewall inputs from the database for the pure compiler.

`load_location_inputs(db, location_id)` returns `(LocationSpec, [RuleSpec],
Directory)`:

- the rules that reach gateways (state `applied`, `enabled`, `expires` unset
  or in the future, `all_locations` or linked to the location), by id;
- each rule's manual destination (its own values merged with its linked
  component Aliases) when `use_manual_destination_settings`, else None, and
  one `DestinationSpec` per linked Destination, in link order;
- the Directory of who is in the location: the users with user devices
  there (and every user a rule names explicitly) with their `is_active`,
  their group memberships, the addresses of their devices in this location,
  and the configured network devices bound to the location.

Every part is a fixed number of set-based statements (no per-rule or
per-device queries), so a location with 20,000 devices and 1,000 rules
loads in well under a second (`tests/integration/test_acl_firewall.py`
checks it). Device addresses are fetched as one comma-joined string per
device and parsed with `parse_host`: fetching `inet[]` or `text[]` makes the
driver parse every array element and is several times slower on that many
rows.

A location whose ACL is disabled produces no firewall, so its rules and
directory are not loaded at all (empty list, empty Directory).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Text, any_, cast, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from defguard.core.acl.models import (
    AclAlias,
    AclRule,
    AliasKind,
    RuleState,
    acl_alias_range,
    acl_rule_alias,
    acl_rule_device,
    acl_rule_group,
    acl_rule_network,
    acl_rule_range,
    acl_rule_user,
)
from defguard.core.acl.parsing import AddressRange, PortRange, address_bounds, loaded_address
from defguard.core.devices.models import Device, DeviceLocation, DeviceType
from defguard.core.errors import not_found
from defguard.core.firewall import Address, DestinationSpec, Directory, LocationSpec, RuleSpec
from defguard.core.groups.models import group_user
from defguard.core.locations.access import id_array
from defguard.core.locations.models import Location
from defguard.core.users.models import User
from defguard.db.base import utcnow
from defguard.wireguard.addressing import as_interface, parse_host


def _ips_text(column: Any) -> Any:
    """A device's addresses as one comma-joined string.

    Several times faster to fetch than `inet[]` or `text[]` on tens of
    thousands of rows, where the driver parses every array element.
    """
    return func.array_to_string(column, ",")


def _parse_ips(text: str | None) -> list[Address]:
    return [parse_host(ip) for ip in text.split(",")] if text else []


def _bounds(addresses: Sequence[Any], ranges: Sequence[AddressRange]) -> list[AddressRange]:
    result = [address_bounds(loaded_address(a)) for a in addresses]
    result.extend(ranges)
    return result


async def _location(db: AsyncSession, location_id: int) -> LocationSpec:
    row = (
        await db.execute(
            select(
                Location.id,
                Location.name,
                Location.acl_enabled,
                Location.acl_default_allow,
                Location.address,
            ).where(Location.id == location_id)
        )
    ).one_or_none()
    if row is None:
        raise not_found(f"Network {location_id} not found")
    return LocationSpec(
        id=row.id,
        name=row.name,
        acl_enabled=row.acl_enabled,
        acl_default_allow=row.acl_default_allow,
        subnets=tuple(as_interface(a) for a in row.address),
    )


def active_rules_query(location_id: int) -> Any:
    """The rules that reach this location's gateways, in rule id order."""
    applies_here = exists().where(
        acl_rule_network.c.rule_id == AclRule.id, acl_rule_network.c.network_id == location_id
    )
    return (
        select(*AclRule.__table__.c)
        .where(
            AclRule.state == RuleState.APPLIED,
            AclRule.enabled,
            or_(AclRule.expires.is_(None), AclRule.expires > utcnow()),
            or_(AclRule.all_locations, applies_here),
        )
        .order_by(AclRule.id)
    )


async def _sources(
    db: AsyncSession, table: Any, column: str, rule_ids: Sequence[int]
) -> dict[int, tuple[set[int], set[int]]]:
    """Per rule: (allowed ids, denied ids) from one `allow`-flagged link table."""
    result: dict[int, tuple[set[int], set[int]]] = defaultdict(lambda: (set(), set()))
    query = select(table.c.rule_id, table.c[column], table.c.allow).where(
        table.c.rule_id == any_(id_array(rule_ids))
    )
    for rule_id, target, allow in await db.execute(query):
        result[rule_id][0 if allow else 1].add(target)
    return result


async def load_ranges(
    db: AsyncSession, table: Any, owner: str, ids: Sequence[int]
) -> dict[int, list[AddressRange]]:
    """Per owner (rule or alias): its `a-b` address ranges in insertion order, in one query."""
    result: dict[int, list[AddressRange]] = defaultdict(list)
    if not ids:
        return result
    query = (
        select(table.c[owner], cast(table.c.start, Text), cast(table.c.end, Text))
        .where(table.c[owner] == any_(id_array(ids)))
        .order_by(table.c.id)
    )
    for owner_id, start, end in await db.execute(query):
        result[owner_id].append((parse_host(start), parse_host(end)))
    return result


async def load_rules(db: AsyncSession, location_id: int) -> list[RuleSpec]:
    rules = (await db.execute(active_rules_query(location_id))).all()
    if not rules:
        return []
    ids = [r.id for r in rules]
    users = await _sources(db, acl_rule_user, "user_id", ids)
    groups = await _sources(db, acl_rule_group, "group_id", ids)
    devices = await _sources(db, acl_rule_device, "device_id", ids)
    rule_ranges = await load_ranges(db, acl_rule_range, "rule_id", ids)

    links = (
        await db.execute(
            select(
                acl_rule_alias.c.rule_id,
                AclAlias.id,
                AclAlias.name,
                AclAlias.kind,
                AclAlias.addresses,
                AclAlias.ports,
                AclAlias.protocols,
                AclAlias.any_address,
                AclAlias.any_port,
                AclAlias.any_protocol,
            )
            .join(AclAlias, AclAlias.id == acl_rule_alias.c.alias_id)
            .where(acl_rule_alias.c.rule_id == any_(id_array(ids)))
            .order_by(acl_rule_alias.c.id)
        )
    ).all()
    alias_ranges = await load_ranges(
        db, acl_alias_range, "alias_id", sorted({link.id for link in links})
    )
    components: dict[int, list[Any]] = defaultdict(list)
    destinations: dict[int, list[DestinationSpec]] = defaultdict(list)
    for link in links:
        if link.kind is AliasKind.COMPONENT:
            components[link.rule_id].append(link)
        else:
            destinations[link.rule_id].append(
                DestinationSpec(
                    addresses=tuple(_bounds(link.addresses, alias_ranges[link.id])),
                    ports=tuple(link.ports),
                    protocols=tuple(dict.fromkeys(link.protocols)),
                    any_address=link.any_address,
                    any_port=link.any_port,
                    any_protocol=link.any_protocol,
                    destination_id=link.id,
                    destination_name=link.name,
                )
            )

    specs = []
    for rule in rules:
        manual = None
        if rule.use_manual_destination_settings:
            addresses = _bounds(rule.addresses, rule_ranges[rule.id])
            ports: list[PortRange] = list(rule.ports)
            protocols = list(rule.protocols)
            for alias in components[rule.id]:
                addresses.extend(_bounds(alias.addresses, alias_ranges[alias.id]))
                ports.extend(alias.ports)
                protocols.extend(alias.protocols)
            manual = DestinationSpec(
                addresses=tuple(addresses),
                ports=tuple(ports),
                protocols=tuple(dict.fromkeys(protocols)),
                any_address=rule.any_address,
                any_port=rule.any_port,
                any_protocol=rule.any_protocol,
            )
        u, g, d = users[rule.id], groups[rule.id], devices[rule.id]
        specs.append(
            RuleSpec(
                id=rule.id,
                name=rule.name,
                allow_all_users=rule.allow_all_users,
                deny_all_users=rule.deny_all_users,
                allow_all_groups=rule.allow_all_groups,
                deny_all_groups=rule.deny_all_groups,
                allow_all_network_devices=rule.allow_all_network_devices,
                deny_all_network_devices=rule.deny_all_network_devices,
                allowed_users=frozenset(u[0]),
                denied_users=frozenset(u[1]),
                allowed_groups=frozenset(g[0]),
                denied_groups=frozenset(g[1]),
                allowed_network_devices=frozenset(d[0]),
                denied_network_devices=frozenset(d[1]),
                manual=manual,
                destinations=tuple(destinations[rule.id]),
            )
        )
    return specs


async def load_directory(
    db: AsyncSession, location_id: int, rules: Sequence[RuleSpec] = ()
) -> Directory:
    """Who is in the location.

    Users and groups that `rules` name are always present (possibly without
    addresses or members), so the compiler never meets an unknown id.
    """
    dl = DeviceLocation
    user_rows = await db.execute(
        select(Device.user_id, User.is_active, _ips_text(dl.wireguard_ips))
        .join(Device, Device.id == dl.device_id)
        .join(User, User.id == Device.user_id)
        .where(dl.wireguard_network_id == location_id, Device.device_type == DeviceType.USER)
    )
    users: dict[int, bool] = {}
    addresses: dict[int, list[Address]] = defaultdict(list)
    for user_id, active, ips in user_rows:
        users[user_id] = active
        addresses[user_id].extend(_parse_ips(ips))

    named_users = {u for r in rules for u in (*r.allowed_users, *r.denied_users)} - users.keys()
    if named_users:
        query = select(User.id, User.is_active).where(User.id == any_(id_array(named_users)))
        users.update({uid: active for uid, active in await db.execute(query)})

    named_groups = {g for r in rules for g in (*r.allowed_groups, *r.denied_groups)}
    members: dict[int, set[int]] = defaultdict(set)
    if addresses:
        # The ids as one array: the planner sees how many there are and hashes
        # them, where a sub-select may probe the (group_id, user_id) index per user.
        member_rows = await db.execute(
            select(group_user.c.group_id, group_user.c.user_id).where(
                group_user.c.user_id == any_(id_array(addresses))
            )
        )
        for group_id, user_id in member_rows:
            members[group_id].add(user_id)
    for group_id in named_groups:
        members.setdefault(group_id, set())

    network_rows = await db.execute(
        select(Device.id, _ips_text(dl.wireguard_ips))
        .join(Device, Device.id == dl.device_id)
        .where(
            dl.wireguard_network_id == location_id,
            Device.device_type == DeviceType.NETWORK,
            Device.configured,
        )
    )
    return Directory(
        users=users,
        group_members={g: frozenset(m) for g, m in members.items()},
        user_addresses={u: tuple(a) for u, a in addresses.items()},
        network_device_addresses={
            device_id: tuple(_parse_ips(ips)) for device_id, ips in network_rows
        },
    )


async def load_location_inputs(
    db: AsyncSession, location_id: int
) -> tuple[LocationSpec, list[RuleSpec], Directory]:
    """Everything `firewall.compile_location` needs for one location (404 if it is unknown)."""
    location = await _location(db, location_id)
    if not location.acl_enabled:
        return location, [], Directory()
    rules = await load_rules(db, location_id)
    return location, rules, await load_directory(db, location_id, rules)
