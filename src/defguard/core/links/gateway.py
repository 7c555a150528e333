"""One Core's link to one gateway: connect, full state, revisions in order, stats intake.

Each link is its own task and catches everything its gateway can throw at it
(unreachable, wrong version, broken stream, a database hiccup while handling
a message), so one bad gateway never disturbs the Core or its other links.
Only this task writes to the stream, which keeps messages in revision order.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import grpc

from defguard import __version__
from defguard.config import CoreSettings
from defguard.core.gateways.stats import store_stats_batch
from defguard.core.links import records
from defguard.core.links.link import (
    HELLO_TIMEOUT,
    IncompatibleVersion,
    Link,
    LinkClosed,
    cancel_and_wait,
)
from defguard.core.links.protocol import INCOMPATIBLE_VERSION, compatible, open_channel, sender
from defguard.core.links.state import location_state, location_update
from defguard.db.engine import Database
from defguard.proto import common_pb2, gateway_pb2_grpc
from defguard.proto import gateway_pb2 as pb

# Past this many missed revisions one full state is cheaper than the diffs
# (and the change log of very old revisions may have been purged).
MAX_DIFFS = 16


@dataclass(frozen=True)
class GatewayTarget:
    """The fields of a `gateway` row that a link uses."""

    id: int
    name: str
    location_id: int
    address: str
    port: int

    @property
    def endpoint(self) -> tuple[int, str, int]:
        """What the link is to: a change here means a new connection."""
        return self.location_id, self.address, self.port


@dataclass(frozen=True)
class _Revision:
    revision: int


@dataclass(frozen=True)
class _Incoming:
    message: pb.GatewayToCore


@dataclass(frozen=True)
class _Ended:
    error: BaseException | None


class GatewayLink(Link):
    kind = "gateway"
    link_records = records.gateways
    target: GatewayTarget

    def __init__(
        self, target: GatewayTarget, *, db: Database, settings: CoreSettings, core_id: str
    ) -> None:
        super().__init__(target, db=db, settings=settings, core_id=core_id)
        self.sent_revision = -1
        self._events: asyncio.Queue[_Revision | _Incoming | _Ended] = asyncio.Queue()
        self._accepting = False

    def revision_committed(self, revision: int) -> None:
        """A revision of this link's location committed; push it once the link is up."""
        if self._accepting:
            self._events.put_nowait(_Revision(revision))

    # -- connection loop ----------------------------------------------------------

    async def _closed(self) -> None:
        self._accepting = False
        self._events = asyncio.Queue()
        await super()._closed()

    async def _session(self) -> None:
        channel = open_channel(
            self.target.address, self.target.port, self.settings, self.settings.gateway_grpc_ca
        )
        try:
            stub = gateway_pb2_grpc.GatewayStub(channel)
            call = stub.Connect()
            try:
                await self._converse(call)
            finally:
                call.cancel()
        finally:
            await channel.close(grace=None)

    async def _converse(self, call: Any) -> None:
        hello = await asyncio.wait_for(call.read(), HELLO_TIMEOUT)
        if hello is grpc.aio.EOF:
            raise LinkClosed("the gateway closed the stream before its hello")
        if hello.WhichOneof("payload") == "error":
            if hello.error.code == INCOMPATIBLE_VERSION:
                raise IncompatibleVersion(hello.error.message)
            raise LinkClosed(f"gateway error {hello.error.code}: {hello.error.message}")
        if hello.WhichOneof("payload") != "hello" or hello.sender.component != "gateway":
            raise LinkClosed("the first message was not a gateway hello")
        version = hello.sender.version
        if not compatible(__version__, version):
            await call.write(
                pb.CoreToGateway(
                    sender=sender(self.core_id),
                    error=common_pb2.ProtocolError(
                        code=INCOMPATIBLE_VERSION,
                        message=f"core {__version__} cannot configure gateway {version}",
                    ),
                )
            )
            raise IncompatibleVersion(f"core {__version__}, gateway {version}")
        if hello.hello.location_id and hello.hello.location_id != self.target.location_id:
            self.log.warning(
                "gateway served another location; sending this one's full state",
                previous_location=hello.hello.location_id,
            )
        # Accept revision notices before reading the state: one committed while
        # the state is being read is then queued (and skipped if already in it).
        self._accepting = True
        await self._connected(version, applied_revision=hello.hello.applied_revision)
        await self._send_full_state(call)
        reader = asyncio.create_task(self._read(call), name=f"gateway-read-{self.target.id}")
        try:
            while True:
                event = await self._events.get()
                await self._handle(call, event)
        finally:
            await cancel_and_wait(reader)

    async def _read(self, call: Any) -> None:
        try:
            while True:
                message = await call.read()
                if message is grpc.aio.EOF:
                    self._events.put_nowait(_Ended(None))
                    return
                self._events.put_nowait(_Incoming(message))
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._events.put_nowait(_Ended(exc))

    # -- messages -----------------------------------------------------------------

    async def _handle(self, call: Any, event: _Revision | _Incoming | _Ended) -> None:
        if isinstance(event, _Ended):
            if event.error is not None:
                raise event.error
            raise LinkClosed("the gateway closed the stream")
        if isinstance(event, _Revision):
            await self._push(call, event.revision)
            return
        message = event.message
        kind = message.WhichOneof("payload")
        if kind == "state_request":
            self.log.info(
                "gateway asked for the full state",
                applied_revision=message.state_request.applied_revision,
                reason=message.state_request.reason,
            )
            await self._send_full_state(call)
        elif kind == "stats":
            await self._take_stats(call, message.stats)
        elif kind == "applied":
            await records.link_applied(
                self.db, self.target.id, self.core_id, message.applied.revision
            )
        elif kind == "error":
            if message.error.code == INCOMPATIBLE_VERSION:
                raise IncompatibleVersion(message.error.message)
            # E.g. a failed application: the gateway asks for the state when it wants it.
            self.log.warning(
                "gateway reported an error", code=message.error.code, message=message.error.message
            )
        else:
            self.log.debug("ignored a gateway message", kind=kind)

    async def _send(self, call: Any, **payload: Any) -> None:
        await call.write(pb.CoreToGateway(sender=sender(self.core_id), **payload))

    async def _send_full_state(self, call: Any) -> None:
        async with self.db.session() as s:
            state = await location_state(s, self.target.location_id)
        await self._send(call, full_state=state)
        self.sent_revision = state.revision
        self.log.info("sent full state", revision=state.revision, peers=len(state.peers))

    async def _push(self, call: Any, revision: int) -> None:
        """Every revision after the last one sent, in order; a long gap as one full state."""
        if revision <= self.sent_revision:
            return
        if revision - self.sent_revision > MAX_DIFFS:
            await self._send_full_state(call)
            return
        for number in range(self.sent_revision + 1, revision + 1):
            async with self.db.session() as s:
                update = await location_update(s, self.target.location_id, number)
            await self._send(call, update=update)
            self.sent_revision = number
            self.log.debug(
                "sent update",
                revision=number,
                upserts=len(update.upsert_peers),
                removals=len(update.remove_peers),
            )

    async def _take_stats(self, call: Any, batch: pb.StatsBatch) -> None:
        """Acknowledge only what is stored; an unacknowledged batch goes to another Core."""
        try:
            async with self.db.transaction() as s:
                await store_stats_batch(
                    s, gateway_id=self.target.id, location_id=self.target.location_id, batch=batch
                )
        except Exception:
            self.log.exception("could not store a stats batch", batch_id=batch.batch_id)
            return
        await self._send(call, stats_ack=pb.StatsAck(batch_id=batch.batch_id))
