"""The benchmarks' HTTP client reads what real servers send: its figures depend on it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from httpload import Connection, head, with_body

Reply = Callable[[bytes], list[bytes]]


@asynccontextmanager
async def server(reply: Reply) -> AsyncIterator[tuple[int, list[bytes], list[int]]]:
    """A TCP server answering each request with `reply(request)`'s chunks; an empty
    chunk closes the connection. Yields its port, the requests and the accepts."""
    seen: list[bytes] = []
    accepts: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepts.append(1)
        try:
            while True:
                request = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in request.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                request += await reader.readexactly(length)
                seen.append(request)
                for chunk in reply(request):
                    if not chunk:
                        writer.close()
                        return
                    writer.write(chunk)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with srv:
        yield srv.sockets[0].getsockname()[1], seen, accepts


def test_request_bytes_carry_headers_and_length() -> None:
    request = with_body(
        head("POST", "h:1", "/api/v1/poll", {"Content-Type": "application/json"}), b'{"a":1}'
    )
    assert request == (
        b"POST /api/v1/poll HTTP/1.1\r\nHost: h:1\r\nContent-Type: application/json\r\n"
        b'Content-Length: 7\r\n\r\n{"a":1}'
    )


async def test_keep_alive_answers_in_order_on_one_connection() -> None:
    def reply(request: bytes) -> list[bytes]:
        body = request.split(b"\r\n\r\n", 1)[1]
        return [b"HTTP/1.1 201 Created\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)]

    async with server(reply) as (port, seen, accepts):
        http = Connection("127.0.0.1", port)
        for n in range(3):
            body = b"n=%d" % n
            assert await http.send(with_body(head("POST", "x", "/"), body)) == (201, body)
        http.close()
    assert len(seen) == 3 and len(accepts) == 1


async def test_chunked_body_split_across_reads() -> None:
    def reply(request: bytes) -> list[bytes]:
        return [
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
            b"lo\r\n6\r\n world\r\n0\r\n\r\n",
        ]

    async with server(reply) as (port, _, _):
        http = Connection("127.0.0.1", port)
        assert await http.send(with_body(head("GET", "x", "/"))) == (200, b"hello world")
        assert await http.send(with_body(head("GET", "x", "/"))) == (200, b"hello world")
        http.close()


async def test_connection_close_opens_a_new_connection_for_the_next_request() -> None:
    def reply(request: bytes) -> list[bytes]:
        return [b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", b""]

    async with server(reply) as (port, seen, accepts):
        http = Connection("127.0.0.1", port)
        for _ in range(2):
            assert await http.send(with_body(head("GET", "x", "/"))) == (200, b"ok")
        http.close()
    assert len(seen) == 2 and len(accepts) == 2


async def test_response_cut_short_is_an_error_not_a_hang() -> None:
    def reply(request: bytes) -> list[bytes]:
        return [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", b""]

    async with server(reply) as (port, _, _):
        http = Connection("127.0.0.1", port)
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(http.send(with_body(head("GET", "x", "/"))), 5)
        http.close()
