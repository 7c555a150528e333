"""Refuses state-changing requests that a browser sent from another site.

Browsers label every request with `Sec-Fetch-Site` and, for POST and the like,
`Origin`; neither can be forged by a page. A request another site triggers is
refused before it reaches a handler, which stops cross-site request forgery
against cookie sessions whatever the endpoint. Programs that are not browsers
(curl, the CLI) send neither header and pass; they carry no ambient cookies an
attacker could ride on. The desktop client's HTTP plugin (Tauri) labels its
requests with its webview's origin (`tauri://localhost`, or
`http://tauri.localhost` on Windows), an origin no web page can have, and never
sends `Sec-Fetch-Site`; it passes too.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SAME_SITE_VALUES = frozenset({"same-origin", "none"})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def _desktop_client(scheme: str, hostname: str | None) -> bool:
    return scheme == "tauri" or (scheme in ("http", "https") and hostname == "tauri.localhost")


def cross_site_reason(scope: Scope) -> str | None:
    """Why the request is refused, or None. Pure: the decision reads only headers."""
    if scope.get("method", "GET") in SAFE_METHODS:
        return None
    site = _header(scope, b"sec-fetch-site")
    if site is not None and site not in SAME_SITE_VALUES:
        return f"cross-site request refused (Sec-Fetch-Site: {site})"
    origin = _header(scope, b"origin")
    if origin and origin != "null":
        parts = urlsplit(origin)
        if site is None and _desktop_client(parts.scheme, parts.hostname):
            return None
        if parts.scheme in ("http", "https"):
            host = _header(scope, b"x-forwarded-host") or _header(scope, b"host") or ""
            if parts.netloc.lower() != host.split(",")[0].strip().lower():
                return "cross-site request refused (Origin does not match Host)"
    elif origin == "null":
        return "cross-site request refused (opaque Origin)"
    return None


async def refuse(send: Send, msg: str) -> None:
    """A 403 with the API's error shape, sent before any handler runs."""
    body = json.dumps({"msg": msg}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 403,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class FetchGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            reason = cross_site_reason(scope)
            if reason is not None:
                await refuse(send, reason)
                return
        await self.app(scope, receive, send)
