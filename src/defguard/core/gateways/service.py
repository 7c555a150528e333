"""Registering gateways and reporting each one's link state, inside the caller's transaction.

Link state is not stored on the gateway row: every Core writes its own
`gateway_link` row and heartbeats it, and a gateway counts as connected
while at least one live Core (recent heartbeat) holds an open link to it.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

from sqlalchemy import BigInteger, any_, bindparam, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from defguard.core.activity.service import record
from defguard.core.context import RequestContext
from defguard.core.errors import bad_request, conflict, not_found
from defguard.core.gateways.models import Gateway, GatewayLink
from defguard.core.gateways.schemas import AdoptGateway, GatewayInfo, GatewayOut, GatewayUpdate
from defguard.core.locations.models import Location
from defguard.core.users.models import User
from defguard.db.base import utcnow

# Three missed heartbeats (and a little slack) and a Core's link counts as gone.
LINK_STALE_AFTER = timedelta(seconds=20)

_SCHEME = re.compile(r"^https?://", re.IGNORECASE)
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def normalize_host(value: str) -> str:
    """The host part of `ip_or_domain`: no scheme, port, path, query or fragment.

    Domains are case-insensitive, so they are stored in lower case; that is
    what makes the (address, port) uniqueness meaningful.
    """
    host = _SCHEME.sub("", value.strip())
    if not host:
        raise bad_request("ip_or_domain: must not be empty")
    if any(c in host for c in "/?#@") or any(c.isspace() for c in host):
        raise bad_request(f"ip_or_domain: {value!r} must be a bare host without path or query")
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        address = ip_address(host[1:-1] if bracketed else host)
    except ValueError:
        address = None
    if isinstance(address, IPv4Address | IPv6Address):
        return str(address)
    if ":" in host or bracketed:
        raise bad_request(f"ip_or_domain: {value!r} must not include a port")
    domain = host.lower().rstrip(".")
    if len(domain) > 253 or not all(_LABEL.match(label) for label in domain.split(".")):
        raise bad_request(f"ip_or_domain: {value!r} is not a valid IP address or domain name")
    return domain


def _check_port(port: int) -> None:
    if not 1 <= port <= 65535:
        raise bad_request("grpc_port must be between 1 and 65535")


def _check_name(name: str) -> str:
    name = name.strip()
    if not name:
        raise bad_request("name must not be empty")
    return name


# -- link state ----------------------------------------------------------------------


@dataclass(frozen=True)
class LinkView:
    connected: bool
    connected_at: datetime | None
    disconnected_at: datetime | None
    version: str | None


NO_LINK = LinkView(False, None, None, None)


def summarize_links(links: Sequence[GatewayLink], now: datetime) -> LinkView:
    """One gateway's state across every Core's link row.

    Connected: since the earliest start among live links; the disconnection
    shown is the last one before that (the spec's rule `connected_at >=
    disconnected_at` then holds). Not connected: the last link's start and
    its end, where a dead Core's end is its last heartbeat.
    """
    if not links:
        return NO_LINK
    live = [
        link
        for link in links
        if link.disconnected_at is None and now - link.last_seen <= LINK_STALE_AFTER
    ]

    def ended(link: GatewayLink) -> datetime:
        return link.disconnected_at or link.last_seen

    gone = [ended(link) for link in links if link not in live]
    if live:
        since = min(link.connected_at for link in live)
        newest = max(live, key=lambda link: link.connected_at)
        before = [t for t in gone if t <= since]
        return LinkView(True, since, max(before, default=None), newest.version)
    newest = max(links, key=lambda link: link.connected_at)
    return LinkView(False, newest.connected_at, max(gone), newest.version)


async def link_views(db: AsyncSession, gateway_ids: Iterable[int]) -> dict[int, LinkView]:
    ids = sorted(set(gateway_ids))
    if not ids:
        return {}
    now = (await db.execute(text("SELECT now() AT TIME ZONE 'utc'"))).scalar_one()
    rows = (
        await db.execute(
            select(GatewayLink).where(
                GatewayLink.gateway_id == any_(bindparam(None, ids, type_=ARRAY(BigInteger)))
            )
        )
    ).scalars()
    by_gateway: dict[int, list[GatewayLink]] = defaultdict(list)
    for row in rows:
        by_gateway[row.gateway_id].append(row)
    return {gid: summarize_links(by_gateway.get(gid, []), now) for gid in ids}


def _fields(gateway: Gateway, view: LinkView) -> dict[str, Any]:
    return {
        "id": gateway.id,
        "location_id": gateway.location_id,
        "name": gateway.name,
        "address": gateway.address,
        "port": gateway.port,
        "connected_at": view.connected_at,
        "disconnected_at": view.disconnected_at,
        "certificate_serial": gateway.certificate_serial,
        "certificate_expiry": gateway.certificate_expiry,
        "version": view.version,
        "enabled": gateway.enabled,
        "modified_at": gateway.modified_at,
        "modified_by": gateway.modified_by,
    }


async def gateway_out(db: AsyncSession, gateway: Gateway) -> GatewayOut:
    view = (await link_views(db, [gateway.id]))[gateway.id]
    return GatewayOut(**_fields(gateway, view))


async def gateway_infos(
    db: AsyncSession, location_ids: Iterable[int] | None = None
) -> list[GatewayInfo]:
    """GatewayInfo of every gateway (or of those locations'), by id."""
    query = (
        select(Gateway, Location.name)
        .join(Location, Location.id == Gateway.location_id)
        .order_by(Gateway.id)
    )
    if location_ids is not None:
        ids = sorted(set(location_ids))
        if not ids:
            return []
        query = query.where(
            Gateway.location_id == any_(bindparam(None, ids, type_=ARRAY(BigInteger)))
        )
    rows = (await db.execute(query)).all()
    views = await link_views(db, [g.id for g, _ in rows])
    return [
        GatewayInfo(**_fields(g, views[g.id]), connected=views[g.id].connected, location_name=name)
        for g, name in rows
    ]


async def location_gateways(
    db: AsyncSession, location_ids: Iterable[int]
) -> dict[int, list[dict[str, Any]]]:
    """Per location: its gateways as JSON-ready GatewayInfo dicts (for the location GET bodies)."""
    result: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for info in await gateway_infos(db, location_ids):
        result[info.location_id].append(info.model_dump(mode="json"))
    return result


# -- changes ---------------------------------------------------------------------------


async def adopt_gateway(
    db: AsyncSession, location_id: int, body: AdoptGateway, *, actor: User
) -> Gateway:
    """Register a gateway; every Core hears of the row (NOTIFY) and connects to it."""
    if await db.get(Location, location_id) is None:
        raise not_found(f"Network {location_id} not found")
    name = _check_name(body.name)
    host = normalize_host(body.ip_or_domain)
    _check_port(body.grpc_port)
    taken = await db.execute(
        select(Gateway.id).where(Gateway.address == host, Gateway.port == body.grpc_port)
    )
    if taken.first() is not None:
        raise conflict(f"A gateway with address {host} and port {body.grpc_port} already exists")
    gateway = Gateway(
        location_id=location_id,
        name=name,
        address=host,
        port=body.grpc_port,
        enabled=True,
        modified_at=utcnow(),
        modified_by=actor.full_name,
    )
    db.add(gateway)
    await db.flush()
    return gateway


async def _location_name(db: AsyncSession, location_id: int) -> str | None:
    return (
        await db.execute(select(Location.name).where(Location.id == location_id))
    ).scalar_one_or_none()


async def find_gateway(db: AsyncSession, gateway_id: int) -> Gateway | None:
    return await db.get(Gateway, gateway_id)


async def require_gateway(db: AsyncSession, gateway_id: int) -> Gateway:
    gateway = (
        await db.execute(select(Gateway).where(Gateway.id == gateway_id).with_for_update())
    ).scalar_one_or_none()
    if gateway is None:
        raise not_found(f"Gateway {gateway_id} not found")
    return gateway


async def update_gateway(
    db: AsyncSession, gateway_id: int, body: GatewayUpdate, *, actor: User, ctx: RequestContext
) -> Gateway:
    """Rename or enable/disable; disabling makes every Core drop its link (NOTIFY)."""
    gateway = await require_gateway(db, gateway_id)
    gateway.name = _check_name(body.name)
    gateway.enabled = body.enabled
    gateway.modified_at = utcnow()
    gateway.modified_by = actor.full_name
    record(
        db,
        ctx,
        actor,
        "gateway_modified",
        f"Modified gateway {gateway.name}",
        location=await _location_name(db, gateway.location_id),
    )
    await db.flush()
    return gateway


async def delete_gateway(
    db: AsyncSession, gateway_id: int, *, actor: User, ctx: RequestContext
) -> None:
    gateway = await require_gateway(db, gateway_id)
    name = gateway.name
    location = await _location_name(db, gateway.location_id)
    await db.delete(gateway)
    record(db, ctx, actor, "gateway_deleted", f"Deleted gateway {name}", location=location)
    await db.flush()
