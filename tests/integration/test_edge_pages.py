"""The Edge's public pages on a real Edge (HTTP + gRPC) linked to a real Core.

The pages are static HTML driven by `/static/enroll.js`; what matters here is
that they are served next to the unchanged API, that unknown paths get a 404
page, and that a browser request from another site cannot use the session
cookies while the desktop client (no browser headers) still works.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from sqlalchemy import select

from defguard.core.enrollment.models import Token
from defguard.db.engine import Database
from tests.integration.test_edge_link import (
    RunningEdge,
    add_proxy,
    core_links,
    provisioned,
    running_edge,
    wait_until,
)
from tests.integration.test_enrollment import enrollment_token


def root(edge: RunningEdge) -> str:
    return str(edge.http.base_url.copy_with(path="/"))


@contextlib.asynccontextmanager
async def linked_edge(db: Database) -> AsyncIterator[RunningEdge]:
    """An Edge a Core has connected to and provisioned."""
    async with running_edge() as edge:
        await add_proxy(db, edge.grpc_port)
        async with core_links(db):
            await wait_until(lambda: provisioned(edge))
            yield edge


async def session_opened(db: Database, token: str) -> bool:
    async with db.session() as s:
        row = (await s.execute(select(Token).where(Token.id == token))).scalar_one()
        return row.session_deadline is not None


async def test_pages_render_their_forms() -> None:
    async with running_edge() as edge:
        base = root(edge)
        for path in ("", "enrollment?token=Zq7Secret0Token0Value0Xy12345678"):
            page = await edge.http.get(base + path)
            assert page.status_code == 200
            assert page.headers["content-type"].startswith("text/html")
            assert page.headers["cache-control"] == "no-store"
            assert "form-action 'none'" in page.headers.get_list("content-security-policy")[0]
            assert page.headers["x-frame-options"] == "DENY"
            html = page.text
            for element in (
                'id="token-form"',
                'id="link-error"',
                'id="password-form"',
                'id="mfa-totp-start"',
                'id="totp-code-form"',
                'id="recovery-codes"',
                'id="device-form"',
                'id="generate-keys"',
                'id="device-config"',
                'id="finish-enrollment"',
                'id="enrollment-done"',
                'name="token"',
                'name="password"',
                'name="pubkey"',
                "/static/enroll.js",
                "/static/keys.js",
            ):
                assert element in html, element
            # The token stays in the address bar for the script; the server never echoes it.
            assert "Zq7Secret0Token" not in html

        reset = await edge.http.get(base + "password-reset?token=Zq7Secret0Token")
        assert reset.status_code == 200
        for element in (
            'id="reset-request-form"',
            'name="email"',
            'id="reset-password-form"',
            'id="reset-done"',
            'id="link-error"',
        ):
            assert element in reset.text, element
        assert "Zq7Secret0Token" not in reset.text


async def test_unknown_paths_get_a_404_page_and_the_api_keeps_its_answers() -> None:
    async with running_edge() as edge:
        base = root(edge)
        missing = await edge.http.get(base + "no/such/page")
        assert missing.status_code == 404
        assert missing.headers["content-type"].startswith("text/html")
        assert "Page not found" in missing.text
        assert 'href="/enrollment"' in missing.text
        # API paths are not pages: same plain-text answers as before.
        api_missing = await edge.http.get("/nope")
        assert api_missing.status_code == 404 and api_missing.text == "Not found"
        assert (await edge.http.get("/poll")).status_code == 405
        assert (await edge.http.get("/health")).text == "alive"


async def test_static_files_are_served() -> None:
    async with running_edge() as edge:
        base = root(edge)
        for name, kind in (
            ("enroll.js", "javascript"),
            ("keys.js", "javascript"),
            ("forms.js", "javascript"),
            ("app.css", "text/css"),
        ):
            r = await edge.http.get(f"{base}static/{name}")
            assert r.status_code == 200, name
            assert kind in r.headers["content-type"], name
        script = (await edge.http.get(base + "static/enroll.js")).text
        assert "enrollment/start" in script and "password-reset/start" in script
        assert (await edge.http.get(base + "static/nope.js")).status_code == 404


async def test_cross_site_requests_are_refused_and_the_desktop_client_passes(
    admin_client, db: Database
) -> None:
    token = await enrollment_token(admin_client, db)
    async with linked_edge(db) as edge:
        origin = root(edge).rstrip("/")
        refused = await edge.http.post(
            "/enrollment/start", json={"token": token}, headers={"Sec-Fetch-Site": "cross-site"}
        )
        assert refused.status_code == 403
        assert "set-cookie" not in refused.headers
        assert refused.headers["x-frame-options"] == "DENY"  # hardening still applied
        foreign = await edge.http.post(
            "/enrollment/start", json={"token": token}, headers={"Origin": "https://evil.test"}
        )
        assert foreign.status_code == 403
        assert not await session_opened(db, token)  # Core never saw either request

        # The desktop client sends no browser headers.
        desktop = await edge.http.post("/enrollment/start", json={"token": token})
        assert desktop.status_code == 200, desktop.text
        assert desktop.headers["set-cookie"].startswith("defguard_proxy=")
        assert desktop.json()["user"]["login"] == "anna"

        # Its HTTP plugin labels requests with the webview's URL (Windows: tauri.localhost).
        tauri = await edge.http.post(
            "/enrollment/start",
            json={"token": token},
            headers={"Origin": "http://tauri.localhost"},
        )
        assert tauri.status_code == 200, tauri.text

        # The pages' own requests: same origin.
        page = await edge.http.post(
            "/enrollment/start",
            json={"token": token},
            headers={"Sec-Fetch-Site": "same-origin", "Origin": origin},
        )
        assert page.status_code == 200, page.text

        # Cross-site reads of pages stay allowed (a link in an e-mail is a cross-site GET).
        linked = await edge.http.get(
            origin + "/enrollment?token=x", headers={"Sec-Fetch-Site": "cross-site"}
        )
        assert linked.status_code == 200


async def test_qr_endpoint_draws_short_texts_for_the_page_only() -> None:
    async with running_edge() as edge:
        url = root(edge) + "ui/qr"
        drawn = await edge.http.post(url, json={"text": "otpauth://totp/Acme:anna?secret=ABC"})
        assert drawn.status_code == 200
        assert drawn.headers["content-type"].startswith("image/svg+xml")
        assert drawn.headers["cache-control"] == "no-store"
        assert drawn.text.startswith("<svg")
        assert "ABC" not in drawn.text  # encoded as modules, never embedded
        assert (await edge.http.post(url, json={"text": "x" * 2001})).status_code == 422
        assert (await edge.http.post(url, json={"text": ""})).status_code == 422
        assert (await edge.http.post(url, content=b"text=x")).status_code == 415
        cross = await edge.http.post(
            url, json={"text": "x"}, headers={"Sec-Fetch-Site": "cross-site"}
        )
        assert cross.status_code == 403


async def test_qr_endpoint_is_rate_limited_per_address() -> None:
    async with running_edge() as edge:
        url = root(edge) + "ui/qr"
        statuses = [
            (
                await edge.http.post(
                    url, json={"text": "t"}, headers={"X-Forwarded-For": "192.0.2.9"}
                )
            )
            for _ in range(25)
        ]
        limited = [r for r in statuses if r.status_code == 429]
        assert limited and limited[0].headers["retry-after"].isdigit()
        other = await edge.http.post(
            url, json={"text": "t"}, headers={"X-Forwarded-For": "192.0.2.10"}
        )
        assert other.status_code == 200
