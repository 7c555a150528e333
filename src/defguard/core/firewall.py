"""The firewall compiler's contract: pure data in, a location's firewall config out.

`compile_location` is a pure function (no I/O): the ACL feature loads the
rows into these types, the compiler turns them into ordered allow/deny rules
per IP family, and gateways apply the result. Keeping it pure is what lets the
semantics be tested exhaustively (hand-worked cases, a property test against an
independent oracle, the 1.x-versus-2.0 upgrade equivalence) without a database.

Addresses are carried as inclusive ranges of `ipaddress` objects of one family;
ports as inclusive `(start, end)` pairs; protocols as IP protocol numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface

Address = IPv4Address | IPv6Address
AddressRange = tuple[Address, Address]  # inclusive, same family, start <= end
PortRange = tuple[int, int]  # inclusive, 0 <= start <= end <= 65535

PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1}
SUPPORTED_PROTOCOLS = frozenset(PROTOCOLS.values())


class Verdict(Enum):
    ALLOW = "allow"
    DENY = "deny"


# ---------------------------------------------------------------- inputs


@dataclass(frozen=True)
class DestinationSpec:
    """One destination: the rule's manual settings (merged with its Aliases) or one Destination."""

    addresses: tuple[AddressRange, ...] = ()
    ports: tuple[PortRange, ...] = ()
    protocols: tuple[int, ...] = ()
    any_address: bool = False
    any_port: bool = False
    any_protocol: bool = False
    # For comments: "DESTINATION 3 - postgres"; None for the manual destination.
    destination_id: int | None = None
    destination_name: str | None = None


@dataclass(frozen=True)
class RuleSpec:
    """An applied, enabled, unexpired rule that applies to the location being compiled.

    Filtering by state, `enabled`, `expires` and locations happens before the
    compiler; `manual` is None when `use_manual_destination_settings` is off
    (linked Aliases are then ignored), otherwise it already includes the
    linked Aliases' addresses, ports and protocols.
    """

    id: int
    name: str
    allow_all_users: bool = False
    deny_all_users: bool = False
    allow_all_groups: bool = False
    deny_all_groups: bool = False
    allow_all_network_devices: bool = False
    deny_all_network_devices: bool = False
    allowed_users: frozenset[int] = frozenset()
    denied_users: frozenset[int] = frozenset()
    allowed_groups: frozenset[int] = frozenset()
    denied_groups: frozenset[int] = frozenset()
    allowed_network_devices: frozenset[int] = frozenset()
    denied_network_devices: frozenset[int] = frozenset()
    manual: DestinationSpec | None = None
    destinations: tuple[DestinationSpec, ...] = ()


@dataclass(frozen=True)
class Directory:
    """Who is in the location: users, their groups and devices' addresses *in this location*."""

    # user id -> is_active
    users: dict[int, bool] = field(default_factory=dict)
    # group id -> member user ids
    group_members: dict[int, frozenset[int]] = field(default_factory=dict)
    # user id -> addresses of that user's user-type devices in this location
    user_addresses: dict[int, tuple[Address, ...]] = field(default_factory=dict)
    # network device id -> addresses in this location (only configured devices bound here)
    network_device_addresses: dict[int, tuple[Address, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class LocationSpec:
    id: int
    name: str
    acl_enabled: bool
    acl_default_allow: bool
    # The location's own interface addresses; their families decide what "any address" covers.
    subnets: tuple[IPv4Interface | IPv6Interface, ...]


# ---------------------------------------------------------------- output


@dataclass(frozen=True)
class FirewallRule:
    id: int  # unique inside one config
    verdict: Verdict
    ip_version: int  # 4 or 6
    sources: tuple[AddressRange, ...]  # normalised; empty = any
    destinations: tuple[AddressRange, ...]  # normalised; empty = any
    ports: tuple[PortRange, ...]  # normalised; empty = any
    protocols: tuple[int, ...]  # sorted, unique; empty = any
    comment: str


@dataclass(frozen=True)
class FirewallConfig:
    default_policy: Verdict
    rules: tuple[FirewallRule, ...]
