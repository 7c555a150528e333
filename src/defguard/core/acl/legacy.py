"""The Defguard 1.6.6 firewall semantics, as a pure function on legacy-shaped rows.

The 2.0 upgrade must not change what any firewall lets through. This module
is the yardstick: it compiles 1.x rows ("empty means any", rules driven only by
destination aliases) exactly as `spec/legacy-1x-schema.md` describes, into the
same `FirewallConfig` types as the 2.0 compiler, so that the two can be
compared flow by flow with `decide`.

It is deliberately a direct, unoptimised transcription of the spec (sets and
loops, no caching): it is an oracle and a benchmark baseline, not a
production path. Its output keeps the 1.x quirks: firewall rule ids are the
ACL rule's or alias's id (so not unique) and comments use the 1.x wording.

`upgrade` models the 2.0 migration's backfill (U1) plus what the 2.0 loader
feeds the compiler, so the equivalence can also be checked without a database.

Ports are inclusive `(start, end)` pairs here, as the application read the
canonical int4ranges (`[80,81)` is port 80).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    IPv6Interface,
    IPv6Network,
)

from defguard.core import firewall
from defguard.core.firewall import (
    Address,
    AddressRange,
    DestinationSpec,
    Directory,
    FirewallConfig,
    FirewallRule,
    LocationSpec,
    PortRange,
    RuleSpec,
    Verdict,
)

Inet = IPv4Network | IPv6Network | IPv4Interface | IPv6Interface | Address


class RuleState(StrEnum):
    APPLIED = "applied"
    NEW = "new"
    MODIFIED = "modified"
    DELETED = "deleted"
    EXPIRED = "expired"


class AliasKind(StrEnum):
    DESTINATION = "destination"
    COMPONENT = "component"


class DeviceType(StrEnum):
    USER = "user"
    NETWORK = "network"


@dataclass(frozen=True)
class LegacyAlias:
    """An `aclalias` row with its `aclaliasdestinationrange` rows."""

    id: int
    name: str
    kind: AliasKind
    destination: tuple[Inet, ...] = ()
    ranges: tuple[tuple[Address, Address], ...] = ()
    ports: tuple[PortRange, ...] = ()
    protocols: tuple[int, ...] = ()


@dataclass(frozen=True)
class LegacyRule:
    """An `aclrule` row with its link rows; `aliases` in link order."""

    id: int
    name: str
    allow_all_users: bool = False
    deny_all_users: bool = False
    all_networks: bool = False
    networks: frozenset[int] = frozenset()
    destination: tuple[Inet, ...] = ()
    ranges: tuple[tuple[Address, Address], ...] = ()
    ports: tuple[PortRange, ...] = ()
    protocols: tuple[int, ...] = ()
    expires: datetime | None = None
    enabled: bool = True
    state: RuleState = RuleState.APPLIED
    allow_all_network_devices: bool = False
    deny_all_network_devices: bool = False
    allowed_users: frozenset[int] = frozenset()
    denied_users: frozenset[int] = frozenset()
    allowed_groups: frozenset[int] = frozenset()
    denied_groups: frozenset[int] = frozenset()
    allowed_devices: frozenset[int] = frozenset()
    denied_devices: frozenset[int] = frozenset()
    aliases: tuple[LegacyAlias, ...] = ()


@dataclass(frozen=True)
class LegacyUser:
    id: int
    is_active: bool = True


@dataclass(frozen=True)
class LegacyDevice:
    """A `device` row; `wireguard_ips` maps location id to its `wireguard_network_device` IPs."""

    id: int
    user_id: int
    device_type: DeviceType = DeviceType.USER
    configured: bool = True
    wireguard_ips: Mapping[int, tuple[Address, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class LegacyLocation:
    """A `wireguard_network` row (only what the firewall uses)."""

    id: int
    name: str
    address: tuple[IPv4Interface | IPv6Interface, ...]
    acl_enabled: bool = False
    acl_default_allow: bool = False


@dataclass(frozen=True)
class LegacyDirectory:
    """Users, `group_user` (group id -> user ids) and devices."""

    users: tuple[LegacyUser, ...] = ()
    group_members: Mapping[int, frozenset[int]] = field(default_factory=dict)
    devices: tuple[LegacyDevice, ...] = ()


# ---------------------------------------------------------------- helpers


def is_active(rule: LegacyRule, location_id: int, now: datetime) -> bool:
    """Whether the rule reaches this location's gateway (1.6 "active rules")."""
    return (
        rule.enabled
        and rule.state is RuleState.APPLIED
        and (rule.expires is None or rule.expires > now)
        and (rule.all_networks or location_id in rule.networks)
    )


def _inet_range(value: Inet) -> tuple[int, int, int]:
    """(family, first, last) of an inet value; host bits of a CIDR are ignored, like 1.6."""
    # checked first: an interface is also an instance of its address class
    if isinstance(value, IPv4Interface | IPv6Interface):
        value = value.network
    if isinstance(value, IPv4Address | IPv6Address):
        return value.version, int(value), int(value)
    return value.version, int(value.network_address), int(value.broadcast_address)


def _merge(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1] + 1:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def _to_addresses(version: int, ranges: Iterable[tuple[int, int]]) -> tuple[AddressRange, ...]:
    cls = IPv4Address if version == 4 else IPv6Address
    return tuple((cls(s), cls(e)) for s, e in ranges)


def _split_addresses(
    destination: Iterable[Inet], ranges: Iterable[tuple[Address, Address]]
) -> dict[int, tuple[AddressRange, ...]]:
    """Per family, merged; ranges whose ends are of different families are dropped."""
    by_family: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
    for value in destination:
        version, start, end = _inet_range(value)
        by_family[version].append((start, end))
    for start, end in ranges:
        if start.version == end.version:
            by_family[start.version].append((int(start), int(end)))
    return {v: _to_addresses(v, _merge(r)) for v, r in by_family.items()}


def _merge_ports(ports: Iterable[PortRange]) -> tuple[PortRange, ...]:
    return tuple(_merge(ports))


# ---------------------------------------------------------------- sources


def _source_addresses(
    rule: LegacyRule, location_id: int, directory: LegacyDirectory
) -> dict[int, tuple[AddressRange, ...]]:
    active = {u.id for u in directory.users if u.is_active}

    def users(all_flag: bool, explicit: frozenset[int], groups: frozenset[int]) -> set[int]:
        if all_flag:
            return set(active)
        chosen = {u for u in explicit if u in active}
        for g in groups:
            chosen |= {u for u in directory.group_members.get(g, ()) if u in active}
        return chosen

    source_users = users(rule.allow_all_users, rule.allowed_users, rule.allowed_groups) - users(
        rule.deny_all_users, rule.denied_users, rule.denied_groups
    )

    devices = {d.id: d for d in directory.devices}
    network_here = {
        d.id
        for d in directory.devices
        if d.device_type is DeviceType.NETWORK and d.configured and location_id in d.wireguard_ips
    }

    def network(all_flag: bool, explicit: frozenset[int]) -> set[int]:
        if all_flag:
            return set(network_here)
        return {i for i in explicit if i in devices and devices[i].configured}

    source_devices = network(rule.allow_all_network_devices, rule.allowed_devices) - network(
        rule.deny_all_network_devices, rule.denied_devices
    )

    ips: list[Address] = []
    for device in directory.devices:
        if (device.device_type is DeviceType.USER and device.user_id in source_users) or (
            device.id in source_devices
        ):
            ips.extend(device.wireguard_ips.get(location_id, ()))
    by_family: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
    for ip in ips:
        by_family[ip.version].append((int(ip), int(ip)))
    return {v: _to_addresses(v, _merge(r)) for v, r in by_family.items()}


# ---------------------------------------------------------------- compilation


def compile_legacy(
    location: LegacyLocation,
    rules: Sequence[LegacyRule],
    directory: LegacyDirectory,
    *,
    now: datetime,
    license_active: bool = True,
) -> FirewallConfig | None:
    """The firewall config Defguard 1.6.6 generated for the location (None: no firewall)."""
    if not (license_active and location.acl_enabled):
        return None
    location_families = {a.version for a in location.address}
    allows: list[FirewallRule] = []
    denies: list[FirewallRule] = []

    def emit_pair(
        rule_id: int,
        comment: str,
        sources: dict[int, tuple[AddressRange, ...]],
        addresses: dict[int, tuple[AddressRange, ...]],
        ports: tuple[PortRange, ...],
        protocols: tuple[int, ...],
    ) -> None:
        no_addr = not addresses[4] and not addresses[6]
        for family in (4, 6):
            if family not in location_families or not (addresses[family] or no_addr):
                continue
            if sources[family]:
                allows.append(
                    FirewallRule(
                        rule_id,
                        Verdict.ALLOW,
                        family,
                        sources[family],
                        addresses[family],
                        ports,
                        protocols,
                        f"{comment} ALLOW",
                    )
                )
            denies.append(
                FirewallRule(
                    rule_id, Verdict.DENY, family, (), addresses[family], (), (), f"{comment} DENY"
                )
            )

    for rule in sorted(rules, key=lambda r: r.id):
        if not is_active(rule, location.id, now):
            continue
        sources = _source_addresses(rule, location.id, directory)
        destinations = [a for a in rule.aliases if a.kind is AliasKind.DESTINATION]
        components = [a for a in rule.aliases if a.kind is AliasKind.COMPONENT]
        addresses = _split_addresses(
            [*rule.destination, *(d for c in components for d in c.destination)],
            [*rule.ranges, *(r for c in components for r in c.ranges)],
        )
        ports = _merge_ports([*rule.ports, *(p for c in components for p in c.ports)])
        protocols = tuple(sorted({*rule.protocols, *(p for c in components for p in c.protocols)}))
        no_addr = not addresses[4] and not addresses[6]
        if not (destinations and no_addr and not ports and not protocols):
            emit_pair(rule.id, f"ACL {rule.id} - {rule.name}", sources, addresses, ports, protocols)
        for alias in destinations:
            emit_pair(
                alias.id,
                f"ACL {rule.id} - {rule.name}, ALIAS {alias.id} - {alias.name}",
                sources,
                _split_addresses(alias.destination, alias.ranges),
                _merge_ports(alias.ports),
                tuple(sorted(set(alias.protocols))),
            )

    policy = Verdict.ALLOW if location.acl_default_allow else Verdict.DENY
    return FirewallConfig(default_policy=policy, rules=(*allows, *denies))


def decide(
    config: FirewallConfig | None,
    src: Address,
    dst: Address,
    port: int | None,
    protocol: int,
) -> Verdict:
    """The verdict for one flow under either compiler's output (same nftables semantics)."""
    return firewall.decide(config, src, dst, port, protocol)[0]


def semantic_rules(
    config: FirewallConfig | None,
) -> tuple[Verdict, tuple[tuple[object, ...], ...]] | None:
    """The config without ids and comments: what the firewall does, not how rules are labelled."""
    if config is None:
        return None
    return config.default_policy, tuple(
        (r.verdict, r.ip_version, r.sources, r.destinations, r.ports, r.protocols)
        for r in config.rules
    )


# ---------------------------------------------------------------- the 2.0 upgrade


def _address_ranges(
    destination: Iterable[Inet], ranges: Iterable[tuple[Address, Address]]
) -> tuple[AddressRange, ...]:
    """2.0 addresses of legacy values; mixed-family ranges (invalid in 2.0) are dropped as 1.6 did."""
    split = _split_addresses(destination, ranges)
    return split[4] + split[6]


def _has_addresses(item: LegacyRule | LegacyAlias) -> bool:
    return bool(item.destination or item.ranges)


def upgrade_rule(rule: LegacyRule) -> RuleSpec:
    """The 2.0 rule the migration backfill (U1) makes of a legacy rule, as the loader presents it."""
    components = [a for a in rule.aliases if a.kind is AliasKind.COMPONENT]
    destinations = [a for a in rule.aliases if a.kind is AliasKind.DESTINATION]
    ca = any(_has_addresses(c) for c in components)
    cp = any(c.ports for c in components)
    cr = any(c.protocols for c in components)
    na, np_, nr = not _has_addresses(rule), not rule.ports, not rule.protocols
    use_manual = not (na and np_ and nr and not ca and not cp and not cr and destinations)
    manual = None
    if use_manual:
        manual = DestinationSpec(
            addresses=_address_ranges(
                [*rule.destination, *(d for c in components for d in c.destination)],
                [*rule.ranges, *(r for c in components for r in c.ranges)],
            ),
            ports=(*rule.ports, *(p for c in components for p in c.ports)),
            protocols=(*rule.protocols, *(p for c in components for p in c.protocols)),
            any_address=na and not ca,
            any_port=np_ and not cp,
            any_protocol=nr and not cr,
        )
    return RuleSpec(
        id=rule.id,
        name=rule.name,
        allow_all_users=rule.allow_all_users,
        deny_all_users=rule.deny_all_users,
        allow_all_network_devices=rule.allow_all_network_devices,
        deny_all_network_devices=rule.deny_all_network_devices,
        allowed_users=rule.allowed_users,
        denied_users=rule.denied_users,
        allowed_groups=rule.allowed_groups,
        denied_groups=rule.denied_groups,
        allowed_network_devices=rule.allowed_devices,
        denied_network_devices=rule.denied_devices,
        manual=manual,
        destinations=tuple(
            DestinationSpec(
                addresses=_address_ranges(a.destination, a.ranges),
                ports=a.ports,
                protocols=a.protocols,
                any_address=not _has_addresses(a),
                any_port=not a.ports,
                any_protocol=not a.protocols,
                destination_id=a.id,
                destination_name=a.name,
            )
            for a in destinations
        ),
    )


def upgrade_directory(location_id: int, directory: LegacyDirectory) -> Directory:
    """What the 2.0 loader builds for the location from the same users, groups and devices."""
    user_addresses: dict[int, tuple[Address, ...]] = {}
    network_device_addresses: dict[int, tuple[Address, ...]] = {}
    for device in directory.devices:
        if location_id not in device.wireguard_ips:
            continue
        ips = device.wireguard_ips[location_id]
        if device.device_type is DeviceType.USER:
            user_addresses[device.user_id] = user_addresses.get(device.user_id, ()) + ips
        elif device.configured:
            network_device_addresses[device.id] = ips
    return Directory(
        users={u.id: u.is_active for u in directory.users},
        group_members=dict(directory.group_members),
        user_addresses=user_addresses,
        network_device_addresses=network_device_addresses,
    )


def upgrade(
    location: LegacyLocation,
    rules: Sequence[LegacyRule],
    directory: LegacyDirectory,
    *,
    now: datetime,
) -> tuple[LocationSpec, list[RuleSpec], Directory]:
    """The 2.0 compiler's inputs for the location after the upgrade (only rules that reach it)."""
    return (
        LocationSpec(
            id=location.id,
            name=location.name,
            acl_enabled=location.acl_enabled,
            acl_default_allow=location.acl_default_allow,
            subnets=location.address,
        ),
        [upgrade_rule(r) for r in rules if is_active(r, location.id, now)],
        upgrade_directory(location.id, directory),
    )
