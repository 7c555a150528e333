"""Hand each client request to exactly one connected Core, and to another if that one dies.

Cores connect to the Edge (never the reverse); each open stream is a
`CoreConnection`. A request goes to the connection with the fewest requests
in flight. If that stream breaks before the answer arrives, the same request
(same id) goes to another Core: Core stores the result of every committed
request under its id, so a request that had already committed is answered
from that record instead of acting twice, and one that had not is run anew.

Only a request that finds no Core connected at all fails at once (503). A
retry may wait for a Core to (re)connect until the request's deadline.

A Core may tie a value to itself in an answer (`META_AFFINITY`: the token of
a client-MFA attempt it keeps in memory); the next request carrying that
value goes to that Core if it is still connected, so any number of Cores
keep the one-round-trip `finish`. The Edge remembers a bounded number of
such values, each for one request.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

import structlog

from defguard.bounded import OneUseMap
from defguard.edge import routes
from defguard.proto import edge_pb2

log = structlog.get_logger("defguard.edge")

_ids = itertools.count(1)
# As many as a Core keeps attempts (`core.vpn_sessions.edge`).
_AFFINITIES = 20_000


class NoCoreConnected(Exception):
    """No Core is connected: the Edge cannot answer (503)."""


class CoreTimeout(Exception):
    """No answer within the deadline (500, as the clients expect)."""


class CoreGone(Exception):
    """The stream carrying a request broke before its answer arrived."""


@dataclass(eq=False)
class CoreConnection:
    """One Core's open stream; only its writer task writes to it."""

    address: str
    link_id: int = field(default_factory=lambda: next(_ids))
    core_id: str = ""
    version: str = ""
    queue: asyncio.Queue[edge_pb2.EdgeToCore | None] = field(default_factory=asyncio.Queue)
    pending: dict[str, asyncio.Future[edge_pb2.CoreResponse]] = field(default_factory=dict)
    closed: bool = False

    @property
    def in_flight(self) -> int:
        return len(self.pending)

    def send(self, message: edge_pb2.EdgeToCore) -> bool:
        if self.closed:
            return False
        self.queue.put_nowait(message)
        return True

    def submit(self, message: edge_pb2.EdgeToCore) -> asyncio.Future[edge_pb2.CoreResponse]:
        future: asyncio.Future[edge_pb2.CoreResponse] = asyncio.get_running_loop().create_future()
        if not self.send(message):
            future.set_exception(CoreGone())
            return future
        self.pending[message.request.request_id] = future
        return future

    def resolve(self, response: edge_pb2.CoreResponse) -> None:
        future = self.pending.pop(response.request_id, None)
        if future is not None and not future.done():
            future.set_result(response)

    def close(self) -> None:
        """The stream is gone: every request it carried goes elsewhere."""
        self.closed = True
        self.queue.put_nowait(None)
        pending, self.pending = self.pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(CoreGone())


class CoreRouter:
    def __init__(self) -> None:
        self.connections: dict[int, CoreConnection] = {}
        self.cookie_key: bytes | None = None
        self.core_version: str | None = None
        self.values: dict[str, str] = {}
        self._changed = asyncio.Event()
        self.retries = 0
        self._affinity: OneUseMap[str, int] = OneUseMap(_AFFINITIES)

    # -- registry ------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return any(not c.closed for c in self.connections.values())

    @property
    def provisioned(self) -> bool:
        """A Core has sent the settings (above all the cookie key) the Edge needs."""
        return self.cookie_key is not None

    def add(self, connection: CoreConnection) -> None:
        self.connections[connection.link_id] = connection
        self._changed.set()
        self._changed = asyncio.Event()

    def remove(self, connection: CoreConnection) -> None:
        self.connections.pop(connection.link_id, None)
        connection.close()

    def apply_settings(self, connection: CoreConnection, settings: edge_pb2.EdgeSettings) -> None:
        if settings.cookie_key:
            self.cookie_key = bytes(settings.cookie_key)
        self.values = dict(settings.values)
        self.core_version = connection.version or self.core_version

    def _pick(self, avoid: set[int], prefer: int | None = None) -> CoreConnection | None:
        preferred = self.connections.get(prefer) if prefer is not None else None
        if preferred is not None and not preferred.closed and prefer not in avoid:
            return preferred
        live = [c for c in self.connections.values() if not c.closed]
        fresh = [c for c in live if c.link_id not in avoid]
        candidates = fresh or live
        if not candidates:
            return None
        return min(candidates, key=lambda c: c.in_flight)

    async def _wait_for_core(self, seconds: float) -> bool:
        if seconds <= 0:
            return False
        changed = self._changed
        try:
            await asyncio.wait_for(changed.wait(), seconds)
        except TimeoutError:
            return False
        return True

    # -- requests ------------------------------------------------------------------

    async def call(
        self,
        method: str,
        body: bytes,
        *,
        client_ip: str,
        user_agent: str,
        metadata: Mapping[str, str],
        within: float,
        sender: object,
        affinity: str | None = None,
    ) -> edge_pb2.CoreResponse:
        request = edge_pb2.EdgeToCore(
            sender=sender,  # type: ignore[arg-type]
            request=edge_pb2.EdgeRequest(
                request_id=uuid.uuid4().hex,
                method=method,
                body=body,
                client_ip=client_ip,
                user_agent=user_agent,
                metadata=dict(metadata),
            ),
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        tried: set[int] = set()
        prefer = self._affinity.take(affinity) if affinity else None
        while True:
            connection = self._pick(tried, prefer)
            if connection is None:
                if not tried:
                    raise NoCoreConnected()
                # The Core(s) that had the request died; wait for one to come back.
                if not await self._wait_for_core(deadline - loop.time()):
                    raise CoreTimeout()
                continue
            future = connection.submit(request)
            try:
                response = await asyncio.wait_for(future, max(deadline - loop.time(), 0.001))
            except CoreGone:
                tried.add(connection.link_id)
                self.retries += 1
                log.warning(
                    "a Core's stream broke before it answered; sending the request to another",
                    core=connection.address,
                    request_id=request.request.request_id,
                    operation=method,
                )
                continue
            except TimeoutError:
                connection.pending.pop(request.request.request_id, None)
                raise CoreTimeout() from None
            tied = response.metadata.get(routes.META_AFFINITY)
            if tied:
                self._affinity.put(tied, connection.link_id)
            return response
