"""One Core's link to one Edge: connect, send the Edge its settings, serve its client requests.

Like a gateway link, each Edge link is its own task that survives anything
its Edge does. Requests are served concurrently (bounded, so one busy Edge
cannot take every database connection); answers share the stream through a
lock, since grpc.aio allows one write at a time.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import grpc
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from defguard import __version__
from defguard.config import CoreSettings
from defguard.core.edge_requests.handlers import dispatch
from defguard.core.links import records
from defguard.core.links.link import (
    HELLO_TIMEOUT,
    IncompatibleVersion,
    Link,
    LinkClosed,
    cancel_and_wait,
)
from defguard.core.links.protocol import (
    INCOMPATIBLE_VERSION,
    Batcher,
    compatible,
    open_channel,
    sender,
)
from defguard.core.settings.service import get_settings_row
from defguard.db.engine import Database
from defguard.proto import common_pb2, edge_pb2, edge_pb2_grpc

# Requests one link serves at once; the rest wait in the link's stream.
MAX_CONCURRENT_REQUESTS = 24
# Answers sent together in one message when several are ready.
MAX_BATCH = 64


def cookie_key(secret_key: str) -> bytes:
    """The Edges' cookie key, derived from the secret every Core reads from PostgreSQL.

    Derived rather than stored so that it is the same on every Core without a
    second secret to keep, and distinct from the secret's other uses.
    """
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"defguard edge cookie key v1"
    ).derive(secret_key.encode())


def trailing_slash(url: str) -> str:
    return url if url.endswith("/") else url + "/"


@dataclass(frozen=True)
class EdgeTarget:
    """The fields of a `proxy` row that a link uses."""

    id: int
    name: str
    address: str
    port: int

    @property
    def endpoint(self) -> tuple[str, int]:
        return self.address, self.port


class EdgeLink(Link):
    kind = "proxy"
    link_records = records.proxies
    target: EdgeTarget

    def __init__(
        self, target: EdgeTarget, *, db: Database, settings: CoreSettings, core_id: str
    ) -> None:
        super().__init__(target, db=db, settings=settings, core_id=core_id)
        self.served = 0
        self._write_lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_REQUESTS)
        self._requests: set[asyncio.Task[None]] = set()
        self._answers: asyncio.Queue[edge_pb2.CoreResponse] = asyncio.Queue()

    async def _closed(self) -> None:
        requests, self._requests = list(self._requests), set()
        await asyncio.gather(*(cancel_and_wait(task) for task in requests))
        await super()._closed()

    async def _session(self) -> None:
        channel = open_channel(
            self.target.address, self.target.port, self.settings, self.settings.proxy_grpc_ca
        )
        try:
            call = edge_pb2_grpc.EdgeStub(channel).Connect()
            try:
                await self._converse(call)
            finally:
                call.cancel()
        finally:
            await channel.close(grace=None)

    async def _send(self, call: Any, **payload: Any) -> None:
        async with self._write_lock:
            await call.write(edge_pb2.CoreToEdge(sender=sender(self.core_id), **payload))

    async def _edge_settings(self) -> edge_pb2.EdgeSettings:
        async with self.db.session() as s:
            row = await get_settings_row(s)
            public_url = row.public_proxy_url or self.settings.enrollment_url
            return edge_pb2.EdgeSettings(
                cookie_key=cookie_key(row.secret_key),
                instance_url=trailing_slash(self.settings.url),
                values={"public_url": trailing_slash(public_url)},
            )

    async def _converse(self, call: Any) -> None:
        hello = await asyncio.wait_for(call.read(), HELLO_TIMEOUT)
        if hello is grpc.aio.EOF:
            raise LinkClosed("the proxy closed the stream before its hello")
        kind = hello.WhichOneof("payload")
        if kind == "error":
            if hello.error.code == INCOMPATIBLE_VERSION:
                raise IncompatibleVersion(hello.error.message)
            raise LinkClosed(f"proxy error {hello.error.code}: {hello.error.message}")
        if kind != "hello" or hello.sender.component != "edge":
            raise LinkClosed("the first message was not an Edge hello")
        version = hello.sender.version
        if not compatible(__version__, version):
            await self._send(
                call,
                error=common_pb2.ProtocolError(
                    code=INCOMPATIBLE_VERSION,
                    message=f"core {__version__} cannot serve edge {version}",
                ),
            )
            raise IncompatibleVersion(f"core {__version__}, edge {version}")
        await self._send(call, settings=await self._edge_settings())
        await self._connected(version)
        self._answers = asyncio.Queue()
        writer = asyncio.create_task(self._write_answers(call), name="edge-answers")
        try:
            await self._read_requests(call)
        finally:
            await cancel_and_wait(writer)

    async def _write_answers(self, call: Any) -> None:
        """Sends answers as they are ready: one alone, or all that queued up meanwhile."""
        batcher = Batcher()
        while True:
            batch = [await self._answers.get()]
            await batcher.pause()
            while len(batch) < MAX_BATCH and not self._answers.empty():
                batch.append(self._answers.get_nowait())
            if len(batch) == 1:
                await self._send(call, response=batch[0])
            else:
                await self._send(call, responses=edge_pb2.CoreResponseBatch(responses=batch))
            batcher.sent()
            self.served += len(batch)

    async def _start(self, request: edge_pb2.EdgeRequest) -> None:
        await self._slots.acquire()
        task = asyncio.create_task(self._serve(request))
        self._requests.add(task)
        task.add_done_callback(self._requests.discard)

    async def _read_requests(self, call: Any) -> None:
        while True:
            message = await call.read()
            if message is grpc.aio.EOF:
                raise LinkClosed("the proxy closed the stream")
            kind = message.WhichOneof("payload")
            if kind == "request":
                await self._start(message.request)
            elif kind == "requests":
                for request in message.requests.requests:
                    await self._start(request)
            elif kind == "error":
                if message.error.code == INCOMPATIBLE_VERSION:
                    raise IncompatibleVersion(message.error.message)
                self.log.warning(
                    "proxy reported an error",
                    code=message.error.code,
                    message=message.error.message,
                )

    async def _serve(self, request: edge_pb2.EdgeRequest) -> None:
        try:
            self._answers.put_nowait(await dispatch(self.db, self.settings, request))
        finally:
            self._slots.release()
