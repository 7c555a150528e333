"""Why a user can or cannot reach an address: the compiled firewall evaluated for their devices.

Admins debugging ACLs ask "can U reach X:443?". The honest answer is what
the gateway's firewall would do, so this compiles the location exactly as
gateways get it and runs `firewall.decide` once per address the user's
devices hold there (and per protocol when none was given), naming the
deciding firewall rule or the default policy.

`to` is `ADDR[:PORT][/tcp|udp|icmp]`, IPv6 as `[ADDR]:PORT` (or a bare
address without a port). Without a protocol, a flow with a port is checked
for TCP and UDP, one without a port also for ICMP: a port only exists for a
transport protocol. ICMP takes no port.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from ipaddress import ip_address

from sqlalchemy import Text, cast, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from defguard.core.acl.loader import load_location_inputs
from defguard.core.acl.parsing import MAX_PORT, PROTOCOL_NAMES
from defguard.core.acl.schemas import ExplainOut, ExplainResult
from defguard.core.devices.models import Device, DeviceLocation, DeviceType
from defguard.core.errors import ApiError, bad_request, not_found
from defguard.core.firewall import (
    PROTOCOLS,
    Address,
    FirewallCompileError,
    FirewallConfig,
    LocationSpec,
    compile_location,
    decide,
)
from defguard.core.users.models import User
from defguard.wireguard.addressing import parse_host

_DIGITS = re.compile(r"[0-9]+")
_TCP, _UDP, _ICMP = PROTOCOLS["tcp"], PROTOCOLS["udp"], PROTOCOLS["icmp"]


@dataclass(frozen=True)
class Flow:
    destination: Address
    port: int | None
    protocols: tuple[int, ...]


def _bad_to(text: str, problem: str) -> ApiError:
    return bad_request(f"to: {problem}: {text!r} (expected ADDR[:PORT][/tcp|udp|icmp])")


def parse_flow(text: str) -> Flow:
    raw = text.strip()
    target, protocol_name = raw, None
    if "/" in raw:
        target, _, protocol_name = raw.rpartition("/")
        protocol_name = protocol_name.lower()
        if protocol_name not in PROTOCOLS:
            raise _bad_to(text, "unknown protocol")
    port_text: str | None = None
    if target.startswith("["):
        host, bracket, rest = target[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise _bad_to(text, "invalid bracketed address")
        port_text = rest[1:] if rest else None
    elif target.count(":") == 1:
        host, _, port_text = target.partition(":")
    else:
        host = target
    try:
        destination = ip_address(host)
    except ValueError:
        raise _bad_to(text, "invalid IP address") from None
    port = None
    if port_text is not None:
        if not _DIGITS.fullmatch(port_text) or int(port_text) > MAX_PORT:
            raise _bad_to(text, f"invalid port (0-{MAX_PORT})")
        port = int(port_text)
    if protocol_name is not None:
        protocols: tuple[int, ...] = (PROTOCOLS[protocol_name],)
        if protocols == (_ICMP,) and port is not None:
            raise _bad_to(text, "ICMP has no ports")
    elif port is not None:
        protocols = (_TCP, _UDP)
    else:
        protocols = (_TCP, _UDP, _ICMP)
    return Flow(destination, port, protocols)


def describe_flow(flow: Flow, protocol: int) -> str:
    dst = f"[{flow.destination}]" if flow.destination.version == 6 else str(flow.destination)
    port = f":{flow.port}" if flow.port is not None and protocol != _ICMP else ""
    return f"{dst}{port}/{PROTOCOL_NAMES[protocol]}"


async def _user_device_addresses(
    db: AsyncSession, user_id: int, location_id: int
) -> list[tuple[int, str, Address]]:
    rows = await db.execute(
        select(Device.id, Device.name, cast(DeviceLocation.wireguard_ips, ARRAY(Text)))
        .join(DeviceLocation, DeviceLocation.device_id == Device.id)
        .where(
            Device.user_id == user_id,
            Device.device_type == DeviceType.USER,
            DeviceLocation.wireguard_network_id == location_id,
        )
        .order_by(Device.id)
    )
    return [(did, name, parse_host(ip)) for did, name, ips in rows for ip in ips]


async def compile_for(
    db: AsyncSession, location_id: int
) -> tuple[LocationSpec, FirewallConfig | None]:
    """The location's config as its gateways get it (404 for an unknown location).

    A stored rule the compiler refuses is a 409 naming it: the admin must fix
    the rule, and serving a config without it would silently change access.
    """
    location, rules, directory = await load_location_inputs(db, location_id)
    try:
        return location, compile_location(location, rules, directory)
    except FirewallCompileError as exc:
        raise ApiError(
            409, f"location {location.name} has a rule no gateway can apply: {exc}"
        ) from None


async def explain_flow(db: AsyncSession, location_id: int, username: str, to: str) -> ExplainOut:
    """One result per (device address of the right family, protocol); see the module doc."""
    flow = parse_flow(to)
    user = (
        await db.execute(select(User.id, User.username).where(User.username == username))
    ).one_or_none()
    if user is None:
        raise not_found(f"user {username} not found")
    location, config = await compile_for(db, location_id)
    sources = await _user_device_addresses(db, user.id, location_id)
    results: list[ExplainResult] = []
    for device_id, device_name, source in sources:
        if source.version != flow.destination.version:
            continue
        for protocol in flow.protocols:
            port = None if protocol == _ICMP else flow.port
            verdict, rule = decide(config, source, flow.destination, port, protocol)
            if rule is not None:
                decided_by = rule.comment
            elif config is None:
                decided_by = "ACL disabled"
            else:
                decided_by = "default policy"
            results.append(
                ExplainResult(
                    device_id=device_id,
                    device=device_name,
                    source=str(source),
                    protocol=protocol,
                    verdict=verdict.value,  # type: ignore[arg-type]
                    rule_id=rule.id if rule is not None else None,
                    decided_by=decided_by,
                )
            )
    return ExplainOut(
        location_id=location.id,
        location=location.name,
        user=user.username,
        destination=str(flow.destination),
        port=flow.port,
        protocols=list(flow.protocols),
        acl_enabled=location.acl_enabled,
        default_policy=config.default_policy.value if config is not None else None,  # type: ignore[arg-type]
        results=results,
    )


def render_text(out: ExplainOut) -> str:
    """The human-readable form the CLI prints."""
    header = f"location {out.location} (id {out.location_id}): "
    if out.acl_enabled:
        header += f"ACL enabled, default policy {out.default_policy}"
    else:
        header += "ACL disabled (no firewall: everything is allowed)"
    lines = [header]
    if not out.results:
        lines.append(
            f"user {out.user} has no device with an IPv{ip_address(out.destination).version} "
            f"address in location {out.location}"
        )
    flow = Flow(ip_address(out.destination), out.port, tuple(out.protocols))
    for r in out.results:
        target = describe_flow(flow, r.protocol)
        by = f"rule {r.rule_id}: {r.decided_by}" if r.rule_id is not None else r.decided_by
        lines.append(f"{r.device} {r.source} -> {target}: {r.verdict.upper()} ({by})")
    return "\n".join(lines)
