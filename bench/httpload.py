"""A keep-alive HTTP/1.1 client for load generators that share the machine they measure.

The load generator runs on the same 2 cores as the Edge, Core and
PostgreSQL it drives, so every millisecond it spends is taken from them.
aiohttp costs about 0.15 ms of CPU per POST here. This client costs a
fraction of that, because it only writes request bytes prepared by its
caller and leaves response parsing to httptools (llhttp, the parser uvicorn
uses). It has no redirects, cookies, pooling or TLS: one connection per
simulated client, one request in flight on it.
"""

from __future__ import annotations

import asyncio
from typing import cast

import httptools


def head(method: str, host: str, path: str, headers: dict[str, str] | None = None) -> bytes:
    """A request's first lines, without Content-Length; built once, sent many times."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n").encode()


def with_body(request_head: bytes, body: bytes = b"") -> bytes:
    """A whole request from `head()` and its body."""
    return b"%sContent-Length: %d\r\n\r\n%s" % (request_head, len(body), body)


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.body: list[bytes] = []
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"unparseable response: {exc}"))
            assert self.transport is not None
            self.transport.close()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        body, self.body = b"".join(self.body), []
        if not self.parser.should_keep_alive():
            self.lost = True  # the next request opens a new connection
        if waiter is not None and not waiter.done():
            waiter.set_result((self.parser.get_status_code(), body))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._fail(ConnectionError("connection closed before the response ended"))

    def _fail(self, exc: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)


class Connection:
    """One simulated client's connection: reopened when the server closes it."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._protocol: _Protocol | None = None

    async def send(self, data: bytes) -> tuple[int, bytes]:
        """(status, body) of the response to one request made by `with_body()`."""
        protocol = self._protocol
        if protocol is None or protocol.lost:
            loop = asyncio.get_running_loop()
            _, protocol = await loop.create_connection(_Protocol, self.host, self.port)
            self._protocol = protocol
        assert protocol.transport is not None
        protocol.waiter = asyncio.get_running_loop().create_future()
        protocol.transport.write(data)
        return await protocol.waiter

    def close(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        self._protocol = None
