"""CSRF protection for the REST API when a browser calls it with the session cookie.

Two layers: `FetchGuard` (shared with the Edge) refuses any state-changing
request another site triggered; this middleware additionally requires the
console's per-session token on state-changing requests a browser sends with a
session cookie. Programs that are not browsers send no `Sec-Fetch-*` headers and
keep using the API with a cookie or token as before.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from defguard.core.auth.deps import SESSION_COOKIE
from defguard.core.settings.service import get_settings_row
from defguard.edge.cookies import parse_cookie_header
from defguard.web import csrf
from defguard.web.fetchguard import SAFE_METHODS, refuse

# The sign-in steps run before the page could hold a token for the new session,
# and logging out is the one harmless thing a forged request could do; FetchGuard
# still refuses all of them cross-site.
EXEMPT_PATHS = frozenset(
    {
        "/api/v1/auth",
        "/api/v1/auth/totp/verify",
        "/api/v1/auth/recovery",
        "/api/v1/auth/email/verify",
        "/api/v1/auth/logout",
    }
)


class CsrfTokenGuard:
    def __init__(self, app: ASGIApp, fastapi_app: object) -> None:
        self.app = app
        self.fastapi_app = fastapi_app

    async def _secret(self) -> str:
        state = self.fastapi_app.state  # type: ignore[attr-defined]
        cached = getattr(state, "secret_key", None)
        if cached is None:
            async with state.db.sessionmaker() as db:
                cached = (await get_settings_row(db)).secret_key
            state.secret_key = cached
        return cached

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] in SAFE_METHODS
            or scope["path"] in EXEMPT_PATHS
        ):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        from_browser = b"sec-fetch-mode" in headers or b"sec-fetch-site" in headers
        session_id = parse_cookie_header(headers.get(b"cookie", b"").decode("latin-1")).get(
            SESSION_COOKIE
        )
        if from_browser and session_id:
            token = headers.get(csrf.HEADER.encode(), b"").decode("latin-1")
            if not csrf.valid(await self._secret(), session_id, token):
                await refuse(send, "missing or invalid CSRF token; reload the page")
                return
        await self.app(scope, receive, send)
