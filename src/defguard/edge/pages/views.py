"""Page routes and the session-less QR endpoint the pages use for secrets they hold.

The pages carry no data of their own: the enrollment token arrives in the
query string and is read by the page's script, so nothing secret is ever
rendered into HTML or kept by the Edge.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from defguard.edge import headers
from defguard.web.qr import qr_svg
from defguard.web.templating import make_templates

templates = make_templates(Path(__file__).parent / "templates")

# The pages load only their own scripts and styles; forms are submitted by
# script, so `form-action 'none'` stops a form that is submitted before the
# script has loaded from putting a password into a URL.
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# Pages hold one-time secrets in memory (recovery codes, a private key): no
# copy may come back from the back-forward cache or a shared cache.
PAGE_HEADERS = {"cache-control": "no-store", "content-security-policy": PAGE_CSP}

QR_TEXT_LIMIT = 2000  # a WireGuard config with a few dozen allowed networks
QR_BODY_LIMIT = 8 * 1024


def _page(request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
    return templates.TemplateResponse(
        request, name, context, status_code=status_code, headers=PAGE_HEADERS
    )


async def enrollment_page(request: Request) -> Response:
    return _page(request, "enrollment.html", page="enrollment")


async def password_reset_page(request: Request) -> Response:
    return _page(request, "password_reset.html", page="password-reset")


async def not_found_page(request: Request) -> Response:
    return _page(request, "not_found.html", status_code=404, page="not-found")


def qr_endpoint(retry_after: Callable[[str], int]) -> Callable[[Request], Any]:
    """`POST /ui/qr {"text": ...}` → SVG, for text that exists only in the browser.

    No session exists before enrollment finishes, so the endpoint is open;
    it stores and logs nothing, takes short texts only, and is rate-limited
    per client address. Cross-site callers are refused by the fetch guard.
    """
    # Drawing a large code costs ~0.2 s of CPU; a few at a time keep the Edge responsive.
    slots = asyncio.Semaphore(2)

    async def qr(request: Request) -> Response:
        peer = request.client.host if request.client else None
        ip = headers.client_ip(
            request.headers.get("x-forwarded-for"), request.headers.get("forwarded"), peer
        )
        wait = retry_after(ip or "unknown")
        if wait:
            return PlainTextResponse(
                "Too many requests", status_code=429, headers={"Retry-After": str(wait)}
            )
        content_type = request.headers.get("content-type", "")
        if content_type.split(";")[0].strip().lower() != "application/json":
            return PlainTextResponse("Expected JSON", status_code=415)
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > QR_BODY_LIMIT:
            return PlainTextResponse("Payload too large", status_code=413)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > QR_BODY_LIMIT:
                return PlainTextResponse("Payload too large", status_code=413)
        try:
            text = json.loads(body).get("text")
        except (ValueError, UnicodeDecodeError, AttributeError):
            text = None
        if not isinstance(text, str) or not 1 <= len(text) <= QR_TEXT_LIMIT:
            return PlainTextResponse(
                f"text: expected 1 to {QR_TEXT_LIMIT} characters", status_code=422
            )
        async with slots:
            svg = await asyncio.to_thread(qr_svg, text)
        return Response(str(svg), media_type="image/svg+xml", headers={"cache-control": "no-store"})

    return qr


def page_routes(qr_retry_after: Callable[[str], int]) -> list[BaseRoute]:
    """The pages and the QR endpoint; the caller adds static files and the 404 catch-all."""
    return [
        Route("/", enrollment_page, methods=["GET"]),
        Route("/enrollment", enrollment_page, methods=["GET"]),
        Route("/password-reset", password_reset_page, methods=["GET"]),
        Route("/ui/qr", qr_endpoint(qr_retry_after), methods=["POST"]),
    ]
