"""Every Core links to every enabled gateway and Edge and keeps that true while rows change.

The database is the registry: `gateway` and `proxy` rows say which links
should exist, NOTIFY on `defguard_gateway` and `defguard_proxy` says when to
look again, and NOTIFY on
`defguard_location` (sent by `bump_revisions` at commit) says which revision
to push. Notifications are only a shortcut: a periodic pass re-reads both
the rows and the revisions, so a notification lost with a dropped listener
connection delays a change by at most one pass instead of losing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import psycopg
import structlog
from sqlalchemy import select

from defguard.config import CoreSettings
from defguard.core.gateways.models import Gateway
from defguard.core.jobs import libpq_uri
from defguard.core.links import records
from defguard.core.links.edge import EdgeLink, EdgeTarget
from defguard.core.links.gateway import GatewayLink, GatewayTarget
from defguard.core.links.link import cancel_and_wait
from defguard.core.locations.access import sweep_pending
from defguard.core.locations.models import Location
from defguard.core.proxies.models import Proxy
from defguard.db.engine import Database

log = structlog.get_logger("defguard.core.links")

GATEWAY_CHANNEL = "defguard_gateway"
PROXY_CHANNEL = "defguard_proxy"
LOCATION_CHANNEL = "defguard_location"
# Link heartbeats; readers consider a link dead after a few missed beats.
HEARTBEAT_SECONDS = 5.0
# How often the rows and revisions are re-read even without notifications.
RESCAN_SECONDS = 30.0
# How often (and after how long) committed peer changes without a revision are published.
SWEEP_SECONDS = 1.0


class LinkManager:
    def __init__(
        self,
        db: Database,
        settings: CoreSettings,
        *,
        core_id: str | None = None,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        rescan_seconds: float = RESCAN_SECONDS,
    ) -> None:
        self.db = db
        self.settings = settings
        self.core_id = core_id or uuid.uuid4().hex
        self.heartbeat_seconds = heartbeat_seconds
        self.rescan_seconds = rescan_seconds
        self.links: dict[int, GatewayLink] = {}
        self.edge_links: dict[int, EdgeLink] = {}
        self._reconcile_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._listening = asyncio.Event()

    async def start(self) -> None:
        log.info("starting gateway and proxy links", core_id=self.core_id)
        self._tasks = [
            asyncio.create_task(self._listen(), name="gateway-listener"),
            asyncio.create_task(self._beat(), name="gateway-heartbeat"),
            asyncio.create_task(self._sweep(), name="revision-sweeper"),
        ]

    async def listening(self) -> None:
        """Returns once notifications are being received and the rows were read."""
        await self._listening.wait()

    async def stop(self) -> None:
        await asyncio.gather(*(cancel_and_wait(task) for task in self._tasks))
        self._tasks = []
        async with self._reconcile_lock:
            links, self.links = list(self.links.values()), {}
            edges, self.edge_links = list(self.edge_links.values()), {}
            await asyncio.gather(*(link.stop() for link in [*links, *edges]))
        try:
            await records.gateways.core_disconnected(self.db, self.core_id)
            await records.proxies.core_disconnected(self.db, self.core_id)
        except Exception:
            log.exception("could not record this Core's disconnection")

    # -- registry -------------------------------------------------------------------

    async def _enabled_gateways(self) -> dict[int, GatewayTarget]:
        async with self.db.session() as s:
            rows = await s.execute(
                select(
                    Gateway.id, Gateway.name, Gateway.location_id, Gateway.address, Gateway.port
                ).where(Gateway.enabled)
            )
            return {row[0]: GatewayTarget(*row) for row in rows}

    async def _enabled_proxies(self) -> dict[int, EdgeTarget]:
        async with self.db.session() as s:
            rows = await s.execute(
                select(Proxy.id, Proxy.name, Proxy.address, Proxy.port).where(Proxy.enabled)
            )
            return {row[0]: EdgeTarget(*row) for row in rows}

    async def reconcile(self) -> None:
        """Start links for new or changed rows, stop those whose rows went or were disabled."""
        async with self._reconcile_lock:
            await self._reconcile_proxies()
            wanted = await self._enabled_gateways()
            for gateway_id, link in list(self.links.items()):
                target = wanted.get(gateway_id)
                if target is not None and target.endpoint == link.target.endpoint:
                    link.target = target  # a rename needs no new connection
                    continue
                del self.links[gateway_id]
                log.info("stopping gateway link", gateway=link.target.name)
                await link.stop()
            for gateway_id, target in wanted.items():
                if gateway_id not in self.links:
                    link = GatewayLink(
                        target, db=self.db, settings=self.settings, core_id=self.core_id
                    )
                    self.links[gateway_id] = link
                    link.start()

    async def _reconcile_proxies(self) -> None:
        wanted = await self._enabled_proxies()
        for proxy_id, link in list(self.edge_links.items()):
            target = wanted.get(proxy_id)
            if target is not None and target.endpoint == link.target.endpoint:
                link.target = target
                continue
            del self.edge_links[proxy_id]
            log.info("stopping proxy link", proxy=link.target.name)
            await link.stop()
        for proxy_id, target in wanted.items():
            if proxy_id not in self.edge_links:
                edge = EdgeLink(target, db=self.db, settings=self.settings, core_id=self.core_id)
                self.edge_links[proxy_id] = edge
                edge.start()

    def revision_committed(self, location_id: int, revision: int) -> None:
        for link in self.links.values():
            if link.target.location_id == location_id:
                link.revision_committed(revision)

    async def catch_up(self) -> None:
        """Offer every link its location's current revision (a no-op when it has it)."""
        location_ids = {link.target.location_id for link in self.links.values()}
        if not location_ids:
            return
        async with self.db.session() as s:
            rows = await s.execute(
                select(Location.id, Location.config_revision).where(Location.id.in_(location_ids))
            )
            for location_id, revision in rows:
                self.revision_committed(location_id, revision)

    # -- background tasks -------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _listener_connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        conn = await psycopg.AsyncConnection.connect(libpq_uri(self.db.url), autocommit=True)
        try:
            yield conn
        finally:
            await conn.close()

    async def _listen(self) -> None:
        while True:
            try:
                async with self._listener_connection() as conn:
                    await conn.execute(f"LISTEN {GATEWAY_CHANNEL}")
                    await conn.execute(f"LISTEN {PROXY_CHANNEL}")
                    await conn.execute(f"LISTEN {LOCATION_CHANNEL}")
                    # Only now read the rows: nothing committed after this is missed.
                    await self.reconcile()
                    await self.catch_up()
                    self._listening.set()
                    async for notice in conn.notifies():
                        await self._notified(notice.channel, notice.payload)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("link notification listener failed; reconnecting")
            self._listening.clear()
            await asyncio.sleep(self.settings.link_retry_seconds)

    async def _notified(self, channel: str, payload: str) -> None:
        if channel in (GATEWAY_CHANNEL, PROXY_CHANNEL):
            await self.reconcile()
            return
        location, _, revision = payload.partition(":")
        try:
            self.revision_committed(int(location), int(revision))
        except ValueError:
            log.warning("ignored a malformed location notice", payload=payload)

    async def _sweep(self) -> None:
        """Revisions for committed peer changes whose own bump never ran (a Core died).

        MFA successes bump their location right after committing; this covers
        the moment between the two, so gateways converge within seconds even
        then. With nothing pending it is one index lookup per second.
        """
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            try:
                swept = await sweep_pending(self.db, SWEEP_SECONDS)
                if swept:
                    log.info("published forgotten peer changes", locations=swept)
            except Exception:
                log.exception("revision sweep failed")

    async def _beat(self) -> None:
        elapsed = 0.0
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            elapsed += self.heartbeat_seconds
            try:
                connected = [gid for gid, link in self.links.items() if link.connected]
                await records.gateways.heartbeat(self.db, self.core_id, connected)
                edges = [pid for pid, link in self.edge_links.items() if link.connected]
                await records.proxies.heartbeat(self.db, self.core_id, edges)
                if elapsed >= self.rescan_seconds:
                    elapsed = 0.0
                    await self.reconcile()
                    await self.catch_up()
            except Exception:
                log.exception("link heartbeat failed")


@contextlib.asynccontextmanager
async def running_links(db: Database, settings: CoreSettings) -> AsyncIterator[LinkManager]:
    """This process's links to every gateway, for the block's duration."""
    manager = LinkManager(db, settings)
    await manager.start()
    try:
        yield manager
    finally:
        await manager.stop()
