"""VPN address parsing, validation and allocation, with no I/O.

A location's `address` list holds the gateway's own address in each VPN
subnet (e.g. `10.1.1.1/24`); every device holds exactly one address per
subnet. Allocation walks a subnet lazily in ascending order, so it never
materialises the subnet: handing out N addresses costs O(N + used) whether the
subnet is a /24, a /8 or an IPv6 /64.
"""

from __future__ import annotations

import socket
from collections.abc import Collection, Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    IPv6Interface,
    IPv6Network,
    ip_address,
    ip_interface,
    ip_network,
)
from itertools import count

Address = IPv4Address | IPv6Address
Interface = IPv4Interface | IPv6Interface
Network = IPv4Network | IPv6Network


class AddressError(ValueError):
    """An address the user typed cannot be used; the message is shown to them."""


class NetworkFull(Exception):
    """No free address is left in `subnet`."""

    def __init__(self, subnet: Interface) -> None:
        super().__init__(f"no free address left in {subnet}")
        self.subnet = subnet


# -- conversions ---------------------------------------------------------------


def as_interface(value: Address | Interface | Network | str) -> Interface:
    """An address with its prefix; a bare host becomes /32 or /128.

    PostgreSQL returns `inet` host values without a prefix, so values read back
    from the database may be addresses where interfaces were written.
    """
    if isinstance(value, IPv4Interface | IPv6Interface):
        return value
    if isinstance(value, IPv4Network | IPv6Network):
        return ip_interface((value.network_address, value.prefixlen))
    return ip_interface(value)


def as_address(value: Address | Interface | str) -> Address:
    if isinstance(value, IPv4Address | IPv6Address):
        return value
    if isinstance(value, IPv4Interface | IPv6Interface):
        return value.ip
    return ip_address(value)


def parse_host(text: str) -> Address:
    """A host address as PostgreSQL prints `inet` (a prefix, if any, is ignored).

    `inet_pton` is strict (no shorthand like `10.1`) and much faster than
    `ip_address`, which matters when loading every address of a location.
    """
    host = text.partition("/")[0]
    try:
        if ":" in host:
            return IPv6Address(socket.inet_pton(socket.AF_INET6, host))
        return IPv4Address(socket.inet_pton(socket.AF_INET, host))
    except OSError:
        return ip_address(host)


def format_cidr(value: Address | Interface | Network) -> str:
    """The REST form of a network value: always with its prefix, e.g. `10.0.0.5/32`."""
    return str(as_interface(value))


# -- parsing -------------------------------------------------------------------


def _entries(text: str) -> list[str]:
    return [entry.strip() for entry in text.split(",") if entry.strip()]


def _parse_interface(entry: str) -> Interface:
    if "%" in entry:
        raise AddressError(f"{entry} is not a valid address: scoped addresses are not allowed")
    try:
        return ip_interface(entry)
    except ValueError:
        pass
    host, _, prefix = entry.partition("/")
    try:
        ip_address(host)
    except ValueError:
        raise AddressError(f"{entry} is not a valid address") from None
    raise AddressError(f"{entry} is not a valid address: invalid prefix {prefix!r}")


def parse_location_addresses(text: str) -> list[Interface]:
    """A location's `address` field: the gateway's IP and prefix in each VPN subnet.

    Rejected: an empty list, a /0 prefix, an IP that is its subnet's network or
    broadcast address (so /31, /32, /127 and /128 are unusable), and subnets
    that overlap each other, which would make "one address per subnet"
    ambiguous.
    """
    subnets: list[Interface] = []
    for entry in _entries(text):
        subnet = _parse_interface(entry)
        net = subnet.network
        if net.prefixlen == 0:
            raise AddressError(f"{entry} is not a valid address: invalid prefix (/0)")
        if subnet.ip == net.network_address:
            raise AddressError(
                f"{entry} is not a valid address: {subnet.ip} is the network address"
            )
        if subnet.ip == net.broadcast_address:
            raise AddressError(
                f"{entry} is not a valid address: {subnet.ip} is the broadcast address"
            )
        for other in subnets:
            if other.network.overlaps(net):
                raise AddressError(f"Address {entry} overlaps {other} of the same location")
        subnets.append(subnet)
    if not subnets:
        raise AddressError("Must provide at least one valid network address")
    return subnets


def parse_allowed_ips(text: str | None) -> list[Network]:
    """The routes clients send through the tunnel: invalid entries are dropped and
    host bits stripped (`10.1.1.7/24` becomes `10.1.1.0/24`); /0 is allowed."""
    if not text:
        return []
    result: list[Network] = []
    for entry in _entries(text):
        if "%" in entry:
            continue
        try:
            net = ip_network(entry, strict=False)
        except ValueError:
            continue
        if net not in result:
            result.append(net)
    return result


def find_overlap(
    subnets: Iterable[Interface], others: Iterable[Interface]
) -> tuple[Interface, Interface] | None:
    """The first pair of overlapping subnets, one from each side."""
    others = list(others)
    for subnet in subnets:
        for other in others:
            if subnet.network.overlaps(other.network):
                return subnet, other
    return None


# -- single-address checks -----------------------------------------------------


class IpProblem(Enum):
    OUTSIDE = "is not in any subnet of the location"
    NETWORK = "is the network address of its subnet"
    BROADCAST = "is the broadcast address of its subnet"
    GATEWAY = "is the gateway's own address"
    TAKEN = "is already assigned to another device"


def containing_subnet(ip: Address, subnets: Sequence[Interface]) -> int | None:
    for index, subnet in enumerate(subnets):
        if ip in subnet.network:
            return index
    return None


def classify_ip(
    ip: Address, subnets: Sequence[Interface], used: Container[Address]
) -> tuple[int | None, IpProblem | None]:
    """Which subnet `ip` belongs to and why it cannot be given to a device, if so."""
    index = containing_subnet(ip, subnets)
    if index is None:
        return None, IpProblem.OUTSIDE
    subnet = subnets[index]
    if ip == subnet.network.network_address:
        return index, IpProblem.NETWORK
    if ip == subnet.network.broadcast_address:
        return index, IpProblem.BROADCAST
    if ip == subnet.ip:
        return index, IpProblem.GATEWAY
    if ip in used:
        return index, IpProblem.TAKEN
    return index, None


def is_host_address(ip: Address, subnet: Interface) -> bool:
    """Inside the subnet and neither its network, broadcast nor gateway address."""
    net = subnet.network
    return (
        ip in net and ip != net.network_address and ip != net.broadcast_address and ip != subnet.ip
    )


# -- allocation ----------------------------------------------------------------


def iter_free(
    subnet: Network, reserved: Collection[Address], used: Container[Address]
) -> Iterator[Address]:
    """Free host addresses of `subnet` in ascending order, computed lazily.

    Skips the network and broadcast addresses, `reserved` (the gateway's own
    IP) and anything in `used`. Only addresses actually walked are created, so
    taking N of them costs O(N + number of used addresses below the N-th).
    """
    first = int(subnet.network_address) + 1
    last = int(subnet.broadcast_address) - 1
    make = IPv4Address if subnet.version == 4 else IPv6Address
    skip = {int(a) for a in reserved if a.version == subnet.version}
    for value in count(first):
        if value > last:
            return
        if value in skip:
            continue
        candidate = make(value)
        if candidate in used:
            continue
        yield candidate


def allocate(subnet: Interface, used: Container[Address], n: int = 1) -> list[Address]:
    """The first `n` free addresses of a location subnet; raises `NetworkFull`."""
    result = []
    free = iter_free(subnet.network, (subnet.ip,), used)
    for _ in range(n):
        candidate = next(free, None)
        if candidate is None:
            raise NetworkFull(subnet)
        result.append(candidate)
    return result


def allocate_devices(
    subnets: Sequence[Interface], used: Container[Address], n: int
) -> list[tuple[Address, ...]]:
    """One address per subnet for each of `n` new devices, first-free order."""
    columns = [allocate(subnet, used, n) for subnet in subnets]
    return list(zip(*columns, strict=True)) if columns else [() for _ in range(n)]


def first_overfull(subnets: Sequence[Interface], device_count: int) -> Interface | None:
    """The first subnet too small for `device_count` devices plus its reserved addresses.

    IPv4 reserves network, broadcast and gateway (3); IPv6 keeps the upstream
    rule of 2. Allocation itself still skips the last IPv6 address, so a subnet
    can pass this check and then report `NetworkFull`.
    """
    for subnet in subnets:
        spare = 3 if subnet.version == 4 else 2
        if subnet.network.num_addresses < device_count + spare:
            return subnet
    return None


@dataclass
class AddressPlan:
    """What a location's assignment table must become.

    `assign` holds the full new address tuple of every device whose row is new
    or changes; `remove` the devices that lose their row.
    """

    assign: dict[int, tuple[Address, ...]] = field(default_factory=dict)
    remove: list[int] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.assign or self.remove)


def plan_location(
    subnets: Sequence[Interface],
    current: Mapping[int, Sequence[Address]],
    allowed: Iterable[int],
) -> AddressPlan:
    """Bring a location's device addresses in line with its subnets and allowed set.

    Devices no longer allowed are removed. Every allowed device keeps each
    address that is still a host address of one of the subnets (first claim
    wins if two devices hold the same one); only missing subnets get a new
    address, handed out first-free in device-id order. Raises `NetworkFull`.
    """
    allowed_ids = sorted(set(allowed))
    allowed_set = set(allowed_ids)
    plan = AddressPlan(remove=sorted(d for d in current if d not in allowed_set))

    used: set[Address] = set()
    slots: dict[int, list[Address | None]] = {}
    for device_id in allowed_ids:
        row: list[Address | None] = [None] * len(subnets)
        for ip in current.get(device_id, ()):
            for index, subnet in enumerate(subnets):
                if row[index] is None and ip not in used and is_host_address(ip, subnet):
                    row[index] = ip
                    used.add(ip)
                    break
        slots[device_id] = row

    free = [iter_free(s.network, (s.ip,), used) for s in subnets]
    for device_id in allowed_ids:
        row = slots[device_id]
        for index, ip in enumerate(row):
            if ip is None:
                candidate = next(free[index], None)
                if candidate is None:
                    raise NetworkFull(subnets[index])
                row[index] = candidate
        new = tuple(ip for ip in row if ip is not None)
        old = current.get(device_id)
        if old is None or len(old) != len(new) or set(old) != set(new):
            plan.assign[device_id] = new
    return plan


# -- presentation --------------------------------------------------------------


@dataclass(frozen=True)
class SplitIp:
    """An address cut where the subnet starts to vary, for the UI's `192.168.(1.7)/16`."""

    network_part: str
    modifiable_part: str
    network_prefix: str
    ip: str


def _segments(value: int, version: int) -> list[int]:
    if version == 4:
        return [(value >> shift) & 0xFF for shift in (24, 16, 8, 0)]
    return [(value >> shift) & 0xFFFF for shift in range(112, -1, -16)]


def split_ip(ip: Address, subnet: Interface | Network) -> SplitIp:
    net = subnet.network if isinstance(subnet, IPv4Interface | IPv6Interface) else subnet
    version = ip.version
    delimiter = "." if version == 4 else ":"

    def fmt(segment: int) -> str:
        return str(segment) if version == 4 else f"{segment:04x}"

    ip_segments = _segments(int(ip), version)
    first_segments = _segments(int(net.network_address), version)
    last_segments = _segments(int(net.broadcast_address), version)
    network_part = ""
    modifiable_part = ""
    for index, (first, last) in enumerate(zip(first_segments, last_segments, strict=True)):
        if first != last:
            modifiable_part = delimiter.join(fmt(s) for s in ip_segments[index:])
            break
        network_part += fmt(ip_segments[index]) + delimiter
    return SplitIp(
        network_part=network_part,
        modifiable_part=modifiable_part,
        network_prefix=str(net.prefixlen),
        ip=str(ip),
    )
