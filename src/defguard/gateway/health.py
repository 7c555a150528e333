"""`GET /health`: 200 while at least one Core is connected, 503 otherwise.

A handful of lines of asyncio instead of a web framework: the endpoint is
polled by load balancers and orchestrators, takes no input, and should not
pull an ASGI stack into the DMZ process.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from defguard.logs import get_logger

log = get_logger(__name__)

READ_TIMEOUT = 5.0
MAX_HEADER_BYTES = 16 * 1024


def _response(status: int, reason: str, body: dict[str, object]) -> bytes:
    payload = json.dumps(body).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + payload


class HealthServer:
    def __init__(self, cores_connected: Callable[[], int], host: str, port: int) -> None:
        self.cores_connected = cores_connected
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    def respond(self, method: str, path: str) -> bytes:
        if path.split("?", 1)[0] != "/health":
            return _response(404, "Not Found", {"detail": "not found"})
        if method not in ("GET", "HEAD"):
            return _response(405, "Method Not Allowed", {"detail": "method not allowed"})
        cores = self.cores_connected()
        if cores:
            return _response(200, "OK", {"status": "ok", "cores_connected": cores})
        return _response(
            503, "Service Unavailable", {"status": "unavailable", "cores_connected": 0}
        )

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
            parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
            if len(parts) != 3:
                writer.write(_response(400, "Bad Request", {"detail": "bad request"}))
            else:
                response = self.respond(parts[0], parts[1])
                if parts[0] == "HEAD":
                    response = response.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
                writer.write(response)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            writer.close()

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, self.host, self.port, limit=MAX_HEADER_BYTES
        )
        log.info("health endpoint listening", address=self.host, port=self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
