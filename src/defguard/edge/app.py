"""The Edge's public HTTP API: validate, forward to one Core, answer as Defguard's clients expect.

Body-level failures are answered here in plain text (the spec's 415/400/422/
413/408) without a Core round trip; everything else is Core's answer,
passed through with its status and JSON body. Session tokens never leave
the Edge in the clear: Core names the token, the Edge seals it into the
route's cookie, and opens the cookie again on the next request.

The forwarded routes are a plain ASGI layer in front of Starlette (which
serves the fixed routes, the pages and the static files): they are a table
forwarded generically, and the Edge's per-request cost is part of what
bounds poll and MFA throughput.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import structlog
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount
from starlette.routing import Route as HttpRoute

from defguard import __version__
from defguard.config import EdgeSettings
from defguard.edge import cookies, headers, routes
from defguard.edge.pages import not_found_page, page_routes
from defguard.edge.router import CoreRouter, CoreTimeout, NoCoreConnected
from defguard.proto import common_pb2
from defguard.web.fetchguard import FetchGuard
from defguard.web.templating import static_files

log = structlog.get_logger("defguard.edge")

BODY_LIMIT = 256 * 1024
REQUEST_TIME_LIMIT = 30.0
# QR codes for the enrollment page: a handful per enrollment, never a stream.
QR_PER_SECOND = 2
QR_BURST = 20

HARDENING = [
    (b"x-powered-by", b"Defguard"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"strict-origin-when-cross-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"content-security-policy", b"frame-ancestors 'none';"),
    (b"permissions-policy", b"geolocation=(), camera=(), microphone=()"),
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ResponseHeaders:
    """Adds the version, connection and hardening headers to every response, errors included."""

    def __init__(self, app: ASGIApp, router: CoreRouter) -> None:
        self.app = app
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_api = scope["path"].startswith("/api/")
        tls = scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = [
                    (b"defguard-component-version", __version__.encode()),
                    (b"defguard-core-connected", b"true" if self.router.connected else b"false"),
                    *HARDENING,
                ]
                if self.router.core_version:
                    extra.append((b"defguard-core-version", self.router.core_version.encode()))
                if tls:
                    extra.append((b"strict-transport-security", b"max-age=31536000"))
                if is_api:
                    extra.append((b"cache-control", b"no-store"))
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        await self.app(scope, receive, send_with_headers)


class RateLimiter:
    """Token bucket per client address; only when configured (the spec's optional 429)."""

    def __init__(self, per_second: int, burst: int) -> None:
        self.rate = float(per_second)
        self.burst = float(max(burst, per_second))
        self.buckets: dict[str, tuple[float, float]] = {}

    def retry_after(self, key: str) -> int:
        """0 when the request may proceed, else seconds to wait."""
        if self.rate <= 0:
            return 0
        now = time.monotonic()
        tokens, last = self.buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if len(self.buckets) > 100_000:
            self.buckets.clear()  # a spray over many addresses must not exhaust memory
        if tokens < 1:
            self.buckets[key] = (tokens, now)
            return max(1, int((1 - tokens) / self.rate + 0.999))
        self.buckets[key] = (tokens - 1, now)
        return 0


def _plain(status: int, text: str) -> Response:
    return PlainTextResponse(text, status_code=status)


# A forwarded route's answer: status, extra headers, body.
Answer = tuple[int, list[tuple[bytes, bytes]], bytes]
_TEXT = (b"content-type", b"text/plain; charset=utf-8")
_JSON = (b"content-type", b"application/json")


def _text(status: int, text: str, *extra: tuple[bytes, bytes]) -> Answer:
    return status, [_TEXT, *extra], text.encode()


def _json_error(status: int, message: str) -> Answer:
    return status, [_JSON], json.dumps({"error": message}).encode()


class _Disconnected(Exception):
    """The client went away while sending its body."""


def _headers(scope: Scope) -> dict[str, str]:
    """Request headers by lower-case name; the first of repeated ones, as Starlette's `get`."""
    found: dict[str, str] = {}
    for name, value in scope["headers"]:
        found.setdefault(name.decode("latin-1"), value.decode("latin-1"))
    return found


async def _read_body(declared: str | None, receive: Receive) -> bytes | None:
    """The body, or None when it exceeds the limit."""
    if declared is not None and declared.isdigit() and int(declared) > BODY_LIMIT:
        return None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > BODY_LIMIT:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _validation_text(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return f"Failed to deserialize the JSON body into the target type: {where}: {first['msg']}"


class EdgeApi:
    def __init__(self, settings: EdgeSettings, router: CoreRouter, instance_id: str) -> None:
        self.settings = settings
        self.router = router
        self.limiter = RateLimiter(settings.ratelimit_per_second, settings.ratelimit_burst)
        self.sender = common_pb2.Peer(
            component="edge", version=__version__, instance_id=instance_id
        )
        self.known_paths = {"/api/v1/health", "/api/v1/health-grpc", "/api/v1/info"} | {
            f"/api/v1{route.path}" for route in routes.ROUTES
        }

    @property
    def secure_cookies(self) -> bool:
        return self.router.values.get("public_url", "").startswith("https://")

    # -- fixed routes ----------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        del request
        return _plain(200, "alive")

    async def health_grpc(self, request: Request) -> Response:
        del request
        if self.router.connected:
            return _plain(200, "alive")
        return _plain(503, "Not connected to Defguard Core")

    async def info(self, request: Request) -> Response:
        del request
        if not self.router.provisioned:
            state = "setup"
        elif self.router.connected:
            state = "connected"
        else:
            state = "disconnected"
        return JSONResponse({"version": __version__, "server_state": state})

    async def not_found(self, request: Request) -> Response:
        if request.url.path in self.known_paths:
            return _plain(405, "Method not allowed")
        return _plain(404, "Not found")

    # -- forwarded routes --------------------------------------------------------------

    async def forward(self, route: routes.Route, scope: Scope, receive: Receive) -> Answer:
        try:
            async with asyncio.timeout(REQUEST_TIME_LIMIT):
                return await self._forward(route, scope, receive)
        except TimeoutError:
            return _text(408, "Request timed out")
        except _Disconnected:
            return _text(400, "Client disconnected")

    async def _forward(self, route: routes.Route, scope: Scope, receive: Receive) -> Answer:
        if not self.router.provisioned:
            return 503, [], b""
        request_headers = _headers(scope)
        peer = scope["client"][0] if scope.get("client") else None
        ip = headers.client_ip(
            request_headers.get("x-forwarded-for"), request_headers.get("forwarded"), peer
        )
        if ip is None:
            return _json_error(500, "Internal server error")
        wait = self.limiter.retry_after(ip)
        if wait:
            return _text(429, "Too many requests", (b"retry-after", str(wait).encode()))
        content_type = request_headers.get("content-type", "")
        if content_type.split(";")[0].strip().lower() != "application/json":
            return _text(415, "Expected request with `Content-Type: application/json`")
        body = await _read_body(request_headers.get("content-length"), receive)
        if body is None:
            return _text(413, "Payload too large")
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            return _text(400, f"Failed to parse the request body as JSON: {exc}")
        try:
            parsed = route.body.model_validate(data)
        except ValidationError as exc:
            return _text(422, _validation_text(exc))
        metadata: dict[str, str] = {}
        if route.cookie is not None and self.router.cookie_key is not None:
            sealed = cookies.parse_cookie_header(request_headers.get("cookie")).get(route.cookie)
            token = cookies.unseal(self.router.cookie_key, route.cookie, sealed) if sealed else None
            if token:
                metadata[routes.META_SESSION_TOKEN] = token
        version = headers.client_version(request_headers.get("defguard-client-version"))
        if version:
            metadata[routes.META_CLIENT_VERSION] = version
        platform = headers.platform_fields(request_headers.get("defguard-client-platform"))
        if platform.get(1):
            metadata[routes.META_CLIENT_OS] = platform[1]
        try:
            answer = await self.router.call(
                route.operation,
                body,
                client_ip=ip,
                user_agent=headers.user_agent(request_headers.get("user-agent")),
                metadata=metadata,
                within=self.settings.core_timeout_seconds,
                sender=self.sender,
                affinity=getattr(parsed, route.affinity_field) if route.affinity_field else None,
            )
        except NoCoreConnected:
            return _json_error(503, "Defguard Core is not connected")
        except CoreTimeout:
            log.warning("no Core answered in time", operation=route.operation)
            return _json_error(500, "Internal server error")
        return self._answer(route, answer)

    def _answer(self, route: routes.Route, answer: Any) -> Answer:
        body = bytes(answer.body)
        extra: list[tuple[bytes, bytes]] = [_JSON] if body else []
        meta = answer.metadata
        if route.cookie is not None and self.router.cookie_key is not None:
            path = routes.COOKIE_PATHS.get(route.cookie, "/api/v1")
            token = meta.get(routes.META_SET_SESSION)
            if token:
                expires = int(meta.get(routes.META_SESSION_EXPIRES, "0") or 0)
                value = cookies.seal(self.router.cookie_key, route.cookie, token)
                cookie = cookies.set_cookie(
                    route.cookie, value, path=path, expires=expires, secure=self.secure_cookies
                )
                extra.append((b"set-cookie", cookie.encode("latin-1")))
            elif meta.get(routes.META_CLEAR_SESSION):
                cookie = cookies.clear_cookie(route.cookie, path=path, secure=self.secure_cookies)
                extra.append((b"set-cookie", cookie.encode("latin-1")))
        return answer.status, extra, body


class ForwardedRoutes:
    """The forwarded `POST /api/v1/...` routes, answered before Starlette is involved.

    Every other request (other methods on these paths included, which get
    405 there) goes on to `app`.
    """

    def __init__(self, api: EdgeApi, app: ASGIApp) -> None:
        self.api = api
        self.app = app
        self.by_path = {f"/api/v1{route.path}": route for route in routes.ROUTES}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.by_path.get(scope["path"]) if scope["type"] == "http" else None
        if route is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        try:
            status, extra, body = await self.api.forward(route, scope, receive)
        except Exception:
            log.exception("forwarding a client request failed", operation=route.operation)
            status, extra, body = _text(500, "Internal Server Error")
        length = (b"content-length", str(len(body)).encode())
        await send({"type": "http.response.start", "status": status, "headers": [*extra, length]})
        await send({"type": "http.response.body", "body": body})


def create_edge_app(settings: EdgeSettings, router: CoreRouter, instance_id: str) -> ASGIApp:
    api = EdgeApi(settings, router, instance_id)
    table = [
        HttpRoute("/api/v1/health", api.health, methods=["GET"]),
        HttpRoute("/api/v1/health-grpc", api.health_grpc, methods=["GET"]),
        HttpRoute("/api/v1/info", api.info, methods=["GET"]),
        HttpRoute(
            "/api/{rest:path}",
            api.not_found,
            methods=["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"],
        ),
        *page_routes(RateLimiter(QR_PER_SECOND, QR_BURST).retry_after),
        Mount("/static", app=static_files(), name="static"),
        HttpRoute("/{rest:path}", not_found_page, methods=["GET"]),
    ]
    app = Starlette(routes=table)
    # Browsers label cross-site requests; refusing them protects the session
    # cookies the pages use. The desktop client is no browser and passes.
    return ResponseHeaders(FetchGuard(ForwardedRoutes(api, app)), router)
