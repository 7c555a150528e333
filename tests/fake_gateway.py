"""A FAKE gateway for Core-side link tests: a grpc.aio server that only records.

It speaks the real protocol (`Gateway.Connect`), sends a hello, records every
message a Core sends on each stream and lets a test send messages back. It
configures nothing: the real gateway process has its own tests, and the
end-to-end test runs Core against that one.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from defguard import __version__
from defguard.proto import common_pb2, gateway_pb2_grpc
from defguard.proto import gateway_pb2 as pb

SERVER_OPTIONS = [
    # Accept the Core's keepalive pings (see defguard.core.links.protocol).
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
]


@dataclass
class FakeStream:
    """One Core's stream as the fake gateway sees it."""

    context: Any
    received: list[pb.CoreToGateway] = field(default_factory=list)
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def of_kind(self, kind: str) -> list[Any]:
        return [getattr(m, kind) for m in self.received if m.WhichOneof("payload") == kind]

    @property
    def core_id(self) -> str:
        return self.received[0].sender.instance_id if self.received else ""

    async def send(self, **payload: Any) -> None:
        await self.context.write(
            pb.GatewayToCore(
                sender=common_pb2.Peer(component="gateway", version=__version__), **payload
            )
        )


class FakeGateway(gateway_pb2_grpc.GatewayServicer):
    def __init__(self, *, name: str = "fake-gw", version: str = __version__) -> None:
        self.name = name
        self.version = version
        self.streams: list[FakeStream] = []

    async def Connect(self, request_iterator: Any, context: Any) -> None:
        stream = FakeStream(context)
        self.streams.append(stream)
        try:
            await context.write(
                pb.GatewayToCore(
                    sender=common_pb2.Peer(component="gateway", version=self.version),
                    hello=pb.GatewayHello(name=self.name, interface_name="wg-fake"),
                )
            )
            while True:
                message = await context.read()
                if message is grpc.aio.EOF:
                    return
                stream.received.append(message)
        finally:
            stream.ended.set()

    def live(self) -> list[FakeStream]:
        return [s for s in self.streams if not s.ended.is_set()]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.asynccontextmanager
async def serving(
    gateway: FakeGateway,
    port: int | None = None,
    credentials: grpc.ServerCredentials | None = None,
) -> AsyncIterator[int]:
    server = grpc.aio.server(options=SERVER_OPTIONS)
    gateway_pb2_grpc.add_GatewayServicer_to_server(gateway, server)
    address = f"127.0.0.1:{port or 0}"
    if credentials is None:
        bound = server.add_insecure_port(address)
    else:
        bound = server.add_secure_port(address, credentials)
    await server.start()
    try:
        yield bound
    finally:
        await server.stop(grace=None)


async def eventually(
    check: Callable[[], Any], timeout: float = 10.0, what: str = "condition"
) -> Any:
    """Poll `check` (sync or async) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
