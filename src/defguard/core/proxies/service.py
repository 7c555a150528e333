"""Registering Edges and reporting each one's link state, inside the caller's transaction.

Link state is derived exactly as for gateways: every Core writes and
heartbeats its own `proxy_link` row, and an Edge counts as connected while
at least one live Core holds an open link to it. Every change to a `proxy`
row is announced (NOTIFY) and each Core starts or stops its link to match.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import BigInteger, any_, bindparam, select, text
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncSession

from defguard.core.activity.service import record
from defguard.core.context import RequestContext
from defguard.core.errors import bad_request, conflict
from defguard.core.gateways.service import LinkView, summarize_links
from defguard.core.proxies.addresses import check_port, parse_grpc_url, parse_host
from defguard.core.proxies.models import Proxy, ProxyLink
from defguard.core.proxies.schemas import ProxyCreate, ProxyInfo, ProxyOut, ProxyUpdate
from defguard.core.users.models import User
from defguard.db.base import utcnow

# -- link state ----------------------------------------------------------------------


async def link_views(db: AsyncSession, proxy_ids: Iterable[int]) -> dict[int, LinkView]:
    """Per Edge, its state across every Core's link row, judged against the database clock."""
    ids = sorted(set(proxy_ids))
    if not ids:
        return {}
    now = (await db.execute(text("SELECT now() AT TIME ZONE 'utc'"))).scalar_one()
    rows = (
        await db.execute(
            select(ProxyLink).where(
                ProxyLink.proxy_id == any_(bindparam(None, ids, type_=ARRAY(BigInteger)))
            )
        )
    ).scalars()
    by_proxy: dict[int, list[ProxyLink]] = defaultdict(list)
    for row in rows:
        by_proxy[row.proxy_id].append(row)
    # summarize_links reads only the columns a proxy_link row shares with a
    # gateway_link row (connected_at, disconnected_at, last_seen, version).
    return {pid: summarize_links(by_proxy.get(pid, []), now) for pid in ids}  # type: ignore[arg-type]


def _fields(proxy: Proxy, view: LinkView) -> dict[str, Any]:
    return {
        "id": proxy.id,
        "name": proxy.name,
        "address": proxy.address,
        "port": proxy.port,
        "connected_at": view.connected_at,
        "disconnected_at": view.disconnected_at,
        "version": view.version,
        "enabled": proxy.enabled,
        "certificate_serial": proxy.certificate_serial,
        "certificate_expiry": proxy.certificate_expiry,
        "modified_at": proxy.modified_at,
        "modified_by": proxy.modified_by,
    }


async def proxy_out(db: AsyncSession, proxy: Proxy) -> ProxyOut:
    view = (await link_views(db, [proxy.id]))[proxy.id]
    return ProxyOut(**_fields(proxy, view))


async def proxy_infos(db: AsyncSession) -> list[ProxyInfo]:
    proxies = (await db.execute(select(Proxy).order_by(Proxy.id))).scalars().all()
    views = await link_views(db, [p.id for p in proxies])
    return [ProxyInfo(**_fields(p, views[p.id]), connected=views[p.id].connected) for p in proxies]


# -- changes ---------------------------------------------------------------------------


def _check_name(name: str) -> str:
    name = name.strip()
    if not name:
        raise bad_request("name: must not be empty")
    return name


async def _taken(db: AsyncSession, address: str, port: int) -> bool:
    found = await db.execute(select(Proxy.id).where(Proxy.address == address, Proxy.port == port))
    return found.first() is not None


async def create_proxy(db: AsyncSession, body: ProxyCreate, *, actor: User) -> Proxy:
    """Register an Edge; every Core hears of the row (NOTIFY) and connects to it."""
    name = _check_name(body.name)
    try:
        address = parse_host(body.address)
    except ValueError as exc:
        raise bad_request(f"address: {exc}") from None
    try:
        port = check_port(body.port)
    except ValueError:
        raise bad_request("port: must be between 1 and 65535") from None
    if await _taken(db, address, port):
        raise conflict(f"An Edge with address {address} and port {port} already exists")
    proxy = Proxy(
        name=name,
        address=address,
        port=port,
        enabled=True,
        modified_at=utcnow(),
        modified_by=actor.full_name,
    )
    db.add(proxy)
    await db.flush()
    return proxy


async def find_proxy(db: AsyncSession, proxy_id: int, *, for_update: bool = False) -> Proxy | None:
    query = select(Proxy).where(Proxy.id == proxy_id)
    if for_update:
        query = query.with_for_update()
    return (await db.execute(query)).scalar_one_or_none()


async def update_proxy(
    db: AsyncSession, proxy: Proxy, body: ProxyUpdate, *, actor: User, ctx: RequestContext
) -> Proxy:
    """Rename, enable or disable; a disabled Edge loses its link to every Core (NOTIFY)."""
    proxy.name = _check_name(body.name)
    proxy.enabled = body.enabled
    proxy.modified_at = utcnow()
    proxy.modified_by = actor.full_name
    record(db, ctx, actor, "proxy_modified", f"Modified Edge {proxy.name}")
    await db.flush()
    return proxy


async def delete_proxy(db: AsyncSession, proxy: Proxy, *, actor: User, ctx: RequestContext) -> None:
    """Remove the Edge; its link rows go with it and every Core drops the connection."""
    name = proxy.name
    await db.delete(proxy)
    record(db, ctx, actor, "proxy_deleted", f"Deleted Edge {name}")
    await db.flush()


async def ensure_proxies(db: AsyncSession, urls: list[str], actor_name: str) -> list[Proxy]:
    """The rows for these gRPC URLs, inserting the missing ones (named `host:port`).

    Every URL is parsed before anything is written, so one bad URL
    (`ValueError` naming it) leaves the table as it was. An existing row is
    returned as it is, even if an admin renamed or disabled it since: the
    URLs say which Edges exist, not how they are configured. Safe when
    several Cores start at once: a row inserted by another Core in the
    meantime is kept, not duplicated.
    """
    targets = list(dict.fromkeys(parse_grpc_url(url) for url in urls))
    proxies: list[Proxy] = []
    for address, port in targets:
        await db.execute(
            insert(Proxy)
            .values(
                name=f"[{address}]:{port}" if ":" in address else f"{address}:{port}",
                address=address,
                port=port,
                enabled=True,
                modified_at=utcnow(),
                modified_by=actor_name,
            )
            .on_conflict_do_nothing(constraint="proxy_address_port_key")
        )
        proxy = (
            await db.execute(select(Proxy).where(Proxy.address == address, Proxy.port == port))
        ).scalar_one()
        proxies.append(proxy)
    return proxies
