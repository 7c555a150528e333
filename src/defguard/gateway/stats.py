"""Peer statistics: each batch goes to one Core, and to another when it is not acknowledged.

Core stores batches idempotently by `batch_id`, so sending the same batch
twice is harmless while losing one is not: a batch stays pending until some
Core acknowledges it. Pending batches are bounded, so a Gateway cut off from
every Core for a long time keeps the most recent ones and drops the oldest.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from defguard.gateway.wireguard import PeerStats
from defguard.logs import get_logger
from defguard.proto import gateway_pb2

log = get_logger(__name__)


class StatsLink(Protocol):
    """A connected Core that can take a batch."""

    link_id: int

    def send_stats(self, batch: gateway_pb2.StatsBatch) -> bool:
        """Queue the batch for sending; False when the link is closing."""
        ...


def build_batch(
    location_id: int, peers: Sequence[PeerStats], *, now: float | None = None
) -> gateway_pb2.StatsBatch:
    return gateway_pb2.StatsBatch(
        batch_id=str(uuid.uuid4()),
        location_id=location_id,
        collected_at=int(now if now is not None else time.time()),
        peers=[
            gateway_pb2.PeerStats(
                public_key=p.public_key,
                endpoint=p.endpoint,
                upload=p.rx_bytes,
                download=p.tx_bytes,
                latest_handshake=p.latest_handshake,
                allowed_ips=list(p.allowed_ips),
            )
            for p in peers
        ],
    )


@dataclass
class _Pending:
    batch: gateway_pb2.StatsBatch
    link_id: int | None = None
    deadline: float = 0.0
    tried: set[int] = field(default_factory=set)


class StatsDispatcher:
    """Delivers batches to connected Cores, one Core per attempt, round-robin.

    `links` returns the Cores connected right now. Timing uses the event loop's
    monotonic clock, so tests can drive it with short timeouts.
    """

    def __init__(
        self,
        links: Callable[[], Sequence[StatsLink]],
        *,
        ack_timeout: float,
        max_pending: int = 120,
    ) -> None:
        self._links = links
        self.ack_timeout = ack_timeout
        self.max_pending = max_pending
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self._next = 0
        self._wake = asyncio.Event()

    @property
    def pending(self) -> list[str]:
        return list(self._pending)

    def submit(self, batch: gateway_pb2.StatsBatch) -> None:
        self._pending[batch.batch_id] = _Pending(batch)
        while len(self._pending) > self.max_pending:
            dropped, _ = self._pending.popitem(last=False)
            log.warning("stats batch dropped: no Core acknowledged it", batch_id=dropped)
        self._wake.set()

    def ack(self, batch_id: str, link_id: int) -> None:
        if self._pending.pop(batch_id, None) is not None:
            log.debug("stats batch acknowledged", batch_id=batch_id, link=link_id)

    def link_changed(self) -> None:
        """A Core connected or left: batches in flight to a gone Core go elsewhere now."""
        self._wake.set()

    def _pick(self, links: Sequence[StatsLink], item: _Pending) -> StatsLink:
        ordered = sorted(links, key=lambda link: link.link_id)
        untried = [link for link in ordered if link.link_id not in item.tried]
        candidates = untried or ordered
        choice = candidates[self._next % len(candidates)]
        self._next += 1
        return choice

    def dispatch_due(self, now: float) -> float | None:
        """Send every batch that is not in flight; return the next deadline, if any."""
        links = list(self._links())
        live = {link.link_id for link in links}
        next_deadline: float | None = None
        for batch_id, item in self._pending.items():
            in_flight = item.link_id is not None and item.link_id in live and item.deadline > now
            if not in_flight:
                if not links:
                    item.link_id = None
                    continue
                link = self._pick(links, item)
                if not link.send_stats(item.batch):
                    continue
                if item.link_id is not None:
                    log.info(
                        "stats batch re-sent to another Core",
                        batch_id=batch_id,
                        previous=item.link_id,
                        link=link.link_id,
                    )
                item.link_id = link.link_id
                item.tried.add(link.link_id)
                item.deadline = now + self.ack_timeout
            if next_deadline is None or item.deadline < next_deadline:
                next_deadline = item.deadline
        return next_deadline

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            deadline = self.dispatch_due(loop.time())
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)


async def collect_periodically(
    period: float,
    collect: Callable[[], Awaitable[gateway_pb2.StatsBatch | None]],
    dispatcher: StatsDispatcher,
) -> None:
    """Every `period` seconds read the device and hand a batch to the dispatcher."""
    while True:
        await asyncio.sleep(period)
        try:
            batch = await collect()
        except Exception as exc:  # a transient device error must not stop future stats
            log.warning("reading peer stats failed", error=str(exc))
            continue
        if batch is not None:
            dispatcher.submit(batch)
