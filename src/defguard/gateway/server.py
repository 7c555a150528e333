"""The Gateway's gRPC service: any number of Cores, one applied state.

Every Core opens `Gateway.Connect` and pushes the same revisions, so the
service's job is to apply each revision once: state messages from all streams
go through one `Synchronizer`, whose lock serialises decisions and
applications. Each stream gets the answer to its own message (`Applied`,
`StateRequest` or `ProtocolError`); stats go to one stream at a time through
the `StatsDispatcher`.

A Core leaving changes nothing on the host: the interface, peers and firewall
stay as last applied until some Core sends something newer.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import grpc

from defguard import __version__
from defguard.gateway.nftables import Firewall, FirewallError
from defguard.gateway.state import (
    Apply,
    GatewayState,
    Ignore,
    InvalidMessage,
    Plan,
    RequestFullState,
    decide_full_state,
    decide_update,
    unknown_revision,
)
from defguard.gateway.stats import StatsDispatcher
from defguard.gateway.wireguard import WireGuardBackend, WireGuardError
from defguard.logs import get_logger
from defguard.proto import common_pb2, gateway_pb2, gateway_pb2_grpc

log = get_logger(__name__)

COMPONENT = "gateway"
# After a failed application the Gateway asks for full state again, but not in a tight loop.
RETRY_DELAY = 5.0
WRITER_DRAIN_TIMEOUT = 5.0


def major_version(version: str) -> int | None:
    head = version.strip().lstrip("v").split(".", 1)[0]
    return int(head) if head.isdigit() else None


def check_sender(msg: gateway_pb2.CoreToGateway) -> common_pb2.ProtocolError | None:
    """An error for a message this Gateway must not act on: not from a Core, or another major version."""
    if not msg.HasField("sender") or msg.sender.component != "core":
        component = msg.sender.component if msg.HasField("sender") else "nobody"
        return common_pb2.ProtocolError(
            code="unexpected_peer",
            message=f"a Gateway only serves Cores; this message is from {component!r}",
        )
    ours = major_version(__version__)
    theirs = major_version(msg.sender.version)
    if theirs is None or theirs != ours:
        return common_pb2.ProtocolError(
            code="incompatible_version",
            message=(
                f"Core version {msg.sender.version or '(none)'} is incompatible with "
                f"Gateway version {__version__}: major versions must match"
            ),
        )
    return None


# ---------------------------------------------------------------- applying state


@dataclass(frozen=True)
class Outcome:
    """What became of one state message, and so what to answer."""

    kind: str  # "applied", "ignored", "request", "invalid", "failed"
    reason: str = ""
    plan: Plan | None = None


class Synchronizer:
    """The applied state and the one lock under which every Core's messages are applied."""

    def __init__(
        self, backend: WireGuardBackend, firewall: Firewall, state: GatewayState | None = None
    ) -> None:
        self.backend = backend
        self.firewall = firewall
        self.state = state or GatewayState()
        self.lock = asyncio.Lock()

    async def handle(self, msg: gateway_pb2.LocationState | gateway_pb2.LocationUpdate) -> Outcome:
        async with self.lock:
            try:
                if isinstance(msg, gateway_pb2.LocationState):
                    decision = decide_full_state(self.state, msg)
                else:
                    decision = decide_update(self.state, msg)
            except InvalidMessage as exc:
                return Outcome("invalid", str(exc))
            if isinstance(decision, Ignore):
                return Outcome("ignored", decision.reason)
            if isinstance(decision, RequestFullState):
                return Outcome("request", decision.reason)
            assert isinstance(decision, Apply)
            return await self._apply(decision.plan)

    async def _apply(self, plan: Plan) -> Outcome:
        started = time.perf_counter()
        try:
            # Firewall first: a new peer never gets a moment of access the new rules deny.
            if plan.firewall_changed:
                await self.firewall.apply(plan.firewall)
            await self.backend.apply(plan)
        except (WireGuardError, FirewallError, OSError, ValueError) as exc:
            log.error(
                "applying state failed",
                location=plan.location_id,
                revision=plan.revision,
                error=str(exc),
            )
            await self._recover()
            return Outcome("failed", str(exc), plan)
        self.state = plan.result
        log.info(
            "state applied",
            location=plan.location_id,
            revision=plan.revision,
            added=len(plan.add_peers),
            changed=len(plan.change_peers),
            removed=len(plan.remove_peers),
            interface=sorted(plan.interface.changed_fields),
            firewall=plan.firewall_changed,
            ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return Outcome("applied", plan=plan)

    async def _recover(self) -> None:
        """After a partial application, believe the device, not the model, and forget the revision."""
        try:
            if not await self.backend.usable():
                log.warning("interface is gone; creating it again", interface=self.backend.ifname)
                await self.backend.create()
                self.state = GatewayState()
                return
            interface, peers = await self.backend.read_state()
        except (WireGuardError, OSError) as exc:
            log.error("reading the device after a failure failed", error=str(exc))
            self.state = unknown_revision(self.state)
            return
        self.state = GatewayState(
            location_id=self.state.location_id,
            location_name=self.state.location_name,
            revision=0,
            interface=interface,
            peers=peers,
            firewall=self.state.firewall,
            firewall_known=False,
        )


# ---------------------------------------------------------------- links


_link_ids = itertools.count(1)


@dataclass(eq=False)
class CoreLink:
    """One connected Core stream; messages to it go through its own queue and writer task."""

    address: str
    sender: common_pb2.Peer
    link_id: int = field(default_factory=lambda: next(_link_ids))
    core_id: str = ""
    core_version: str = ""
    queue: asyncio.Queue[gateway_pb2.GatewayToCore | None] = field(default_factory=asyncio.Queue)
    closing: bool = False

    def send(self, msg: gateway_pb2.GatewayToCore) -> bool:
        if self.closing:
            return False
        self.queue.put_nowait(msg)
        return True

    def send_stats(self, batch: gateway_pb2.StatsBatch) -> bool:
        return self.send(gateway_pb2.GatewayToCore(sender=self.sender, stats=batch))


class GatewayService(gateway_pb2_grpc.GatewayServicer):
    def __init__(
        self,
        sync: Synchronizer,
        *,
        name: str,
        ifname: str,
        instance_id: str,
        stats_ack_timeout: float,
        listen_port: int | None = None,
    ) -> None:
        self.sync = sync
        self.listen_port = listen_port
        self.name = name
        self.ifname = ifname
        self.sender = common_pb2.Peer(
            component=COMPONENT, version=__version__, instance_id=instance_id
        )
        self.links: dict[int, CoreLink] = {}
        self.dispatcher = StatsDispatcher(self.connected_links, ack_timeout=stats_ack_timeout)
        self._retries: set[asyncio.Task[None]] = set()

    def connected_links(self) -> Sequence[CoreLink]:
        return [link for link in self.links.values() if not link.closing]

    @property
    def cores_connected(self) -> int:
        return len(self.connected_links())

    def _message(self, **payload: object) -> gateway_pb2.GatewayToCore:
        return gateway_pb2.GatewayToCore(sender=self.sender, **payload)  # type: ignore[arg-type]

    def _hello(self) -> gateway_pb2.GatewayToCore:
        state = self.sync.state
        return self._message(
            hello=gateway_pb2.GatewayHello(
                name=self.name,
                interface_name=self.ifname,
                applied_revision=state.revision,
                location_id=state.location_id,
            )
        )

    def _applied(self) -> gateway_pb2.GatewayToCore:
        state = self.sync.state
        return self._message(
            applied=gateway_pb2.Applied(location_id=state.location_id, revision=state.revision)
        )

    def _state_request(self, reason: str) -> gateway_pb2.GatewayToCore:
        return self._message(
            state_request=gateway_pb2.StateRequest(
                applied_revision=self.sync.state.revision, reason=reason
            )
        )

    def _error(self, code: str, message: str) -> gateway_pb2.GatewayToCore:
        return self._message(error=common_pb2.ProtocolError(code=code, message=message))

    def _retry_later(self, link: CoreLink) -> None:
        async def retry() -> None:
            await asyncio.sleep(RETRY_DELAY)
            link.send(self._state_request("retrying after a failed application"))

        task = asyncio.get_running_loop().create_task(retry())
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)

    async def _on_state(
        self, link: CoreLink, msg: gateway_pb2.LocationState | gateway_pb2.LocationUpdate
    ) -> None:
        if self.listen_port and msg.HasField("interface"):
            msg.interface.listen_port = self.listen_port
        outcome = await self.sync.handle(msg)
        kind = "full state" if isinstance(msg, gateway_pb2.LocationState) else "update"
        if outcome.kind == "applied":
            link.send(self._applied())
        elif outcome.kind == "ignored":
            log.debug("state message ignored", kind=kind, core=link.address, reason=outcome.reason)
            # Tells this Core where the Gateway stands even though its message changed nothing.
            link.send(self._applied())
        elif outcome.kind == "request":
            log.info("requesting full state", core=link.address, reason=outcome.reason)
            link.send(self._state_request(outcome.reason))
        elif outcome.kind == "invalid":
            log.warning(
                "invalid state message", kind=kind, core=link.address, reason=outcome.reason
            )
            link.send(self._error("invalid_state", outcome.reason))
        else:
            link.send(self._error("apply_failed", outcome.reason))
            self._retry_later(link)

    async def _writer(self, link: CoreLink, context: grpc.aio.ServicerContext) -> None:
        """The only task that writes to the stream: grpc.aio allows one write at a time."""
        try:
            while True:
                msg = await link.queue.get()
                if msg is None:
                    return
                await context.write(msg)
        except (grpc.RpcError, grpc.aio.UsageError, RuntimeError) as exc:
            # The stream is gone; the reading side notices and cleans up.
            link.closing = True
            self.dispatcher.link_changed()
            log.debug("writing to Core failed", core=link.address, error=str(exc))

    async def Connect(
        self,
        request_iterator: AsyncIterator[gateway_pb2.CoreToGateway],
        context: grpc.aio.ServicerContext,
    ) -> None:
        link = CoreLink(address=context.peer(), sender=self.sender)
        auth = context.auth_context()
        common_name = auth.get("x509_common_name", [b""])[0].decode(errors="replace")
        self.links[link.link_id] = link
        log.info(
            "core connected", core=link.address, link=link.link_id, certificate=common_name or None
        )
        writer = asyncio.get_running_loop().create_task(self._writer(link, context))
        link.send(self._hello())
        self.dispatcher.link_changed()
        reason = "stream closed by Core"
        try:
            async for msg in request_iterator:
                error = check_sender(msg)
                if error is not None:
                    log.warning(
                        "rejecting Core",
                        core=link.address,
                        code=error.code,
                        version=msg.sender.version,
                    )
                    link.send(self._message(error=error))
                    reason = error.code
                    break
                if not link.core_id:
                    link.core_id = msg.sender.instance_id
                    link.core_version = msg.sender.version
                    log.info(
                        "core identified",
                        core=link.address,
                        instance=link.core_id,
                        version=link.core_version,
                    )
                kind = msg.WhichOneof("payload")
                if kind == "full_state":
                    await self._on_state(link, msg.full_state)
                elif kind == "update":
                    await self._on_state(link, msg.update)
                elif kind == "stats_ack":
                    self.dispatcher.ack(msg.stats_ack.batch_id, link.link_id)
                elif kind == "error":
                    log.warning(
                        "core reported an error",
                        core=link.address,
                        code=msg.error.code,
                        message=msg.error.message,
                    )
                else:
                    log.warning("empty or unknown message from Core", core=link.address)
            link.closing = True
            link.queue.put_nowait(None)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer, WRITER_DRAIN_TIMEOUT)
        except asyncio.CancelledError:
            reason = "stream cancelled"
            raise
        except Exception as exc:
            reason = f"stream error: {exc}"
        finally:
            link.closing = True
            writer.cancel()
            self.links.pop(link.link_id, None)
            self.dispatcher.link_changed()
            log.info(
                "core disconnected",
                core=link.address,
                link=link.link_id,
                reason=reason,
                cores_connected=self.cores_connected,
            )
