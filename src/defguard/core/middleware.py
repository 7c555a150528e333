"""Transport limits from the REST contract: body size (413) and request timeout (408)."""

from __future__ import annotations

import asyncio
import json

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY = 256 * 1024
MAX_IMPORT_BODY = 4 * 1024 * 1024
REQUEST_TIMEOUT = 30.0


async def _send_json(send: Send, status: int, msg: str) -> None:
    body = json.dumps({"msg": msg}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(Exception):
    pass


class LimitsMiddleware:
    """Rejects oversized bodies without reading them whole and bounds handler time."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = MAX_IMPORT_BODY if scope["path"].endswith("/network/import") else MAX_BODY
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await _send_json(send, 413, f"request body larger than {limit} bytes")
                return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await asyncio.wait_for(self.app(scope, limited_receive, tracking_send), REQUEST_TIMEOUT)
        except _BodyTooLarge:
            if not started:
                await _send_json(send, 413, f"request body larger than {limit} bytes")
        except TimeoutError:
            if not started:
                await _send_json(send, 408, "Request Timeout")


def install_middleware(app: FastAPI) -> None:
    app.add_middleware(LimitsMiddleware)
