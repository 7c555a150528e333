"""The text forms of ACL destinations: `addresses`, `ports` and `protocols`.

Admins type destinations as short comma-separated strings; the schema keeps
them in three shapes (single IPs and CIDRs in `addresses inet[]`, `a-b` ranges
in the `*destinationrange` tables, ports as canonical `int4range[]`). This
module is the only place that converts between the two, and it is pure so
that every malformed token can be tested without a database.

Every error names the offending token, because the API returns it verbatim
(422) and the admin has to find it in what they typed.

A CIDR with host bits set (`10.1.2.3/16`) is normalised to its network
(`10.1.0.0/16`): a firewall destination can only mean the whole network,
and rejecting it would only make the admin retype the same intent. A `/32`
(or IPv6 `/128`) is stored as the plain address. Netmask syntax
(`10.0.0.0/255.255.255.0`) is refused rather than guessed at.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
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

from defguard.core.firewall import SUPPORTED_PROTOCOLS

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network
# What `inet` columns hold: a bare host address or an address with a prefix.
StoredAddress = IPv4Address | IPv6Address | IPv4Interface | IPv6Interface
AddressRange = tuple[Address, Address]
PortRange = tuple[int, int]

MAX_PORT = 65535
PROTOCOL_NAMES = {6: "tcp", 17: "udp", 1: "icmp"}

_DIGITS = re.compile(r"[0-9]+")


class ParseError(ValueError):
    """A destination string the admin has to correct; the message names the token."""

    def __init__(self, field: str, token: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}: {token!r}" if token else f"{field}: {problem}")
        self.field = field
        self.token = token
        self.problem = problem


@dataclass(frozen=True)
class ParsedAddresses:
    """Single IPs and networks (for `addresses inet[]`) and `a-b` ranges (range table)."""

    addresses: tuple[Address | Network, ...] = ()
    ranges: tuple[AddressRange, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.addresses and not self.ranges


def _tokens(text: str | None) -> list[str]:
    """Comma-separated tokens; empty ones (a trailing comma, doubled commas) are skipped."""
    if not text:
        return []
    return [t.strip() for t in text.split(",") if t.strip()]


def _parse_ip(token: str, field: str, whole: str) -> Address:
    if "%" in token or "/" in token:
        raise ParseError(field, whole, "invalid IP address")
    try:
        return ip_address(token)
    except ValueError:
        raise ParseError(field, whole, "invalid IP address") from None


def _parse_network(token: str, field: str) -> Address | Network:
    host, _, prefix = token.partition("/")
    if not _DIGITS.fullmatch(prefix):
        # Covers netmask syntax (`/255.255.255.0`), which ip_network would accept.
        raise ParseError(field, token, "invalid CIDR (prefix must be a number of bits)")
    base = _parse_ip(host.strip(), field, token)
    if int(prefix) > base.max_prefixlen:
        raise ParseError(field, token, "invalid CIDR (prefix too long)")
    network = ip_network(f"{base}/{int(prefix)}", strict=False)
    if network.prefixlen == network.max_prefixlen:
        return network.network_address
    return network


def parse_addresses(text: str | None, field: str = "addresses") -> ParsedAddresses:
    """`"10.0.0.1, 10.1.0.0/16, 10.2.0.1-10.2.0.9"` → IPs/networks and ranges, in input order."""
    addresses: list[Address | Network] = []
    ranges: list[AddressRange] = []
    for token in _tokens(text):
        if "-" in token:
            parts = token.split("-")
            if len(parts) != 2:
                raise ParseError(field, token, "invalid address range")
            start = _parse_ip(parts[0].strip(), field, token)
            end = _parse_ip(parts[1].strip(), field, token)
            if start.version != end.version:
                raise ParseError(field, token, "address range mixes IPv4 and IPv6")
            if start >= end:  # type: ignore[operator]
                raise ParseError(field, token, "address range must start below its end")
            ranges.append((start, end))
        elif "/" in token:
            addresses.append(_parse_network(token, field))
        else:
            addresses.append(_parse_ip(token, field, token))
    return ParsedAddresses(tuple(addresses), tuple(ranges))


def _parse_port(text: str, field: str, token: str) -> int:
    if not _DIGITS.fullmatch(text):
        raise ParseError(field, token, "invalid port")
    value = int(text)
    if value > MAX_PORT:
        raise ParseError(field, token, f"port outside 0-{MAX_PORT}")
    return value


def parse_ports(text: str | None, field: str = "ports") -> tuple[PortRange, ...]:
    """`"80, 443, 8000-8080"` → inclusive ranges in input order; a single port is `(p, p)`."""
    result: list[PortRange] = []
    for token in _tokens(text):
        if "-" in token:
            parts = token.split("-")
            if len(parts) != 2:
                raise ParseError(field, token, "invalid port range")
            start = _parse_port(parts[0].strip(), field, token)
            end = _parse_port(parts[1].strip(), field, token)
            if start >= end:
                raise ParseError(field, token, "port range must start below its end")
            result.append((start, end))
        else:
            port = _parse_port(token, field, token)
            result.append((port, port))
    return tuple(result)


def parse_protocols(values: Iterable[int], field: str = "protocols") -> tuple[int, ...]:
    """Protocol numbers, checked against what gateways can apply; duplicates dropped."""
    result: list[int] = []
    for value in values:
        if value not in SUPPORTED_PROTOCOLS:
            raise ParseError(
                field, str(value), "unsupported protocol (expected 6 TCP, 17 UDP or 1 ICMP)"
            )
        if value not in result:
            result.append(value)
    return tuple(result)


# -- back to text ------------------------------------------------------------------


def stored_address(value: Address | Network) -> StoredAddress:
    """The value to put in an `inet[]` column: networks as `inet` with a prefix, not `cidr`."""
    if isinstance(value, IPv4Network):
        return IPv4Interface((value.network_address, value.prefixlen))
    if isinstance(value, IPv6Network):
        return IPv6Interface((value.network_address, value.prefixlen))
    return value


def loaded_address(value: StoredAddress | str) -> Address | Network:
    """An `inet` value as read back: a host address or a network."""
    if isinstance(value, str):
        return loaded_address(ip_interface(value))
    if isinstance(value, IPv4Interface | IPv6Interface):
        if value.network.prefixlen == value.network.max_prefixlen:
            return value.ip
        return value.network
    return value


def address_bounds(value: Address | Network) -> AddressRange:
    """An IP or a network as the inclusive range the firewall compiler works with."""
    if isinstance(value, IPv4Network | IPv6Network):
        return (value.network_address, value.broadcast_address)
    return (value, value)


def format_addresses(
    addresses: Sequence[StoredAddress | Address | Network], ranges: Sequence[AddressRange]
) -> str:
    parts = [str(loaded_address(a)) for a in addresses]
    parts.extend(f"{start}-{end}" for start, end in ranges)
    return ", ".join(parts)


def format_ports(ports: Sequence[PortRange]) -> str:
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in ports)
