"""The console's sign-in page, its session gate and the CSRF protection of the REST API."""

from __future__ import annotations

import re

import httpx
import pytest

from defguard.db.engine import Database
from tests.conftest import ADMIN_PASSWORD, USER_AGENT

pytestmark = pytest.mark.asyncio
PAGE = "http://testserver"
# Every console page behind the admin gate. Pages of one object need not find it:
# the gate answers before the lookup. "/users/jdoe" is the non-admin's own page.
CONSOLE_PAGES = [
    "/",
    "/locations",
    "/locations/new",
    "/locations/1",
    "/devices/1",
    "/users",
    "/users/admin",
    "/users/jdoe",
    "/groups",
    "/groups/admin",
    "/acl",
    "/acl/rules/new",
    "/acl/rules/1",
    "/acl/aliases",
    "/acl/aliases/new",
    "/acl/aliases/1",
    "/acl/destinations",
    "/acl/destinations/new",
    "/acl/destinations/1",
    "/acl/firewall",
    "/acl/explain",
    "/edges",
    "/edges/1",
    "/gateways",
    "/activity",
    "/settings",
]
CONSOLE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# What the policy blocks: a script without src (JSON data blocks aside), a style
# attribute or element, an inline event handler.
INLINE_CODE = re.compile(
    r"<script(?![^>]*\bsrc=)(?![^>]*type=\"application/json\")[^>]*>|<style\b|\sstyle=|\son[a-z]+=",
    re.IGNORECASE,
)


def csrf_of(html: str) -> str:
    match = re.search(r'<meta name="csrf-token" content="([^"]*)">', html)
    assert match is not None
    return match.group(1)


async def test_anonymous_is_sent_to_login_with_the_page_to_return_to(client: httpx.AsyncClient):
    r = await client.get(f"{PAGE}/?q=a")
    assert r.status_code == 303
    assert r.headers["location"] == "/login?next=/%3Fq%3Da"
    login = await client.get(f"{PAGE}/login?next=/users")
    assert login.status_code == 200
    assert 'data-api="/api/v1/auth"' in login.text
    assert 'data-return="/users"' in login.text


async def test_every_console_page_sends_anonymous_to_login(client: httpx.AsyncClient):
    for path in CONSOLE_PAGES:
        r = await client.get(PAGE + path)
        assert r.status_code == 303, path
        assert r.headers["location"].startswith("/login?next="), path


async def test_every_console_page_refuses_non_admin(user_client: httpx.AsyncClient):
    for path in CONSOLE_PAGES:
        r = await user_client.get(PAGE + path)
        assert r.status_code == 403, path
        assert "Admins only" in r.text, path


async def test_login_refuses_redirects_to_other_sites(client: httpx.AsyncClient):
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        page = await client.get(f"{PAGE}/login", params={"next": target})
        assert 'data-return="/"' in page.text


async def test_password_login_then_dashboard(client: httpx.AsyncClient):
    r = await client.post("/auth", json={"username": "admin", "password": ADMIN_PASSWORD})
    assert r.status_code == 200
    page = await client.get(f"{PAGE}/")
    assert page.status_code == 200
    assert csrf_of(page.text)


async def test_browser_requests_need_the_session_csrf_token(admin_client: httpx.AsyncClient):
    page = await admin_client.get(f"{PAGE}/")
    token = csrf_of(page.text)
    browser = {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors", "Origin": PAGE}
    body = {"name": "ops", "members": [], "is_admin": False}
    refused = await admin_client.post("/group", json=body, headers=browser)
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["msg"]
    wrong = await admin_client.post("/group", json=body, headers={**browser, "X-CSRF-Token": "x"})
    assert wrong.status_code == 403
    groups = (await admin_client.get("/group")).json()
    assert "ops" not in str(groups)
    ok = await admin_client.post("/group", json=body, headers={**browser, "X-CSRF-Token": token})
    assert ok.status_code == 201, ok.text


async def test_cross_site_requests_are_refused_even_with_a_token(admin_client: httpx.AsyncClient):
    token = csrf_of((await admin_client.get(f"{PAGE}/")).text)
    r = await admin_client.post(
        "/group",
        json={"name": "evil"},
        headers={"Sec-Fetch-Site": "cross-site", "X-CSRF-Token": token},
    )
    assert r.status_code == 403
    r = await admin_client.post(
        "/group", json={"name": "evil"}, headers={"Origin": "https://evil.example"}
    )
    assert r.status_code == 403
    assert "evil" not in str((await admin_client.get("/group")).json())


async def test_api_clients_without_browser_headers_are_unaffected(
    admin_client: httpx.AsyncClient,
):
    r = await admin_client.post(
        "/group", json={"name": "scripted", "members": [], "is_admin": False}
    )
    assert r.status_code == 201, r.text


async def test_qr_endpoint_needs_admin_and_token(
    admin_client: httpx.AsyncClient, app, db: Database
):
    token = csrf_of((await admin_client.get(f"{PAGE}/")).text)
    browser = {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors", "X-CSRF-Token": token}
    r = await admin_client.post(f"{PAGE}/ui/qr", json={"text": "otpauth://x"}, headers=browser)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("image/svg+xml")
    assert r.text.startswith("<svg")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, headers={"User-Agent": USER_AGENT}) as anon:
        r = await anon.post(f"{PAGE}/ui/qr", json={"text": "x"})
    assert r.status_code == 303


async def test_static_assets_are_served(client: httpx.AsyncClient):
    for name in (
        "app.css",
        "forms.js",
        "keys.js",
        "login.js",
        "console-acl-explain.js",
        "console-acl-firewall.js",
        "console-acl-rule.js",
        "console-activity.js",
        "console-location.js",
        "console-settings.js",
        "console-user.js",
    ):
        r = await client.get(f"{PAGE}/static/{name}")
        assert r.status_code == 200, name


def assert_console_headers(r: httpx.Response, path: str) -> None:
    assert r.headers["content-type"].startswith("text/html"), path
    assert r.headers.get_list("content-security-policy") == [CONSOLE_CSP], path
    assert r.headers["cache-control"] == "no-store", path
    assert INLINE_CODE.search(r.text) is None, (path, INLINE_CODE.search(r.text))


async def test_console_pages_carry_the_content_security_policy(
    client: httpx.AsyncClient, admin_client: httpx.AsyncClient, user_client: httpx.AsyncClient
):
    for path in CONSOLE_PAGES:
        assert_console_headers(await admin_client.get(PAGE + path), path)
    assert_console_headers(await client.get(f"{PAGE}/login"), "/login")
    forbidden = await user_client.get(f"{PAGE}/")
    assert forbidden.status_code == 403
    assert_console_headers(forbidden, "/ as non-admin")


async def test_api_and_its_docs_carry_no_page_policy(admin_client: httpx.AsyncClient):
    # Swagger UI needs inline scripts and a CDN; JSON has nothing a policy governs.
    for r in (await admin_client.get("/group"), await admin_client.get("/docs")):
        assert r.status_code == 200, r.url
        assert "content-security-policy" not in r.headers, r.url
