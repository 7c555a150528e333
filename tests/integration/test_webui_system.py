"""Console pages for Edges, gateways, the activity log and the settings.

Forms are read from the page and turned into the JSON body forms.js would
send, which the API must accept: a form that renders but cannot be submitted
is caught here.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx
import pytest

from defguard.core.activity.models import ActivityLogEvent
from defguard.db.base import utcnow
from defguard.db.engine import Database
from tests.webforms import body_of, create_location, read_form

pytestmark = pytest.mark.asyncio
PAGE = "http://testserver"
SMTP_PASSWORD = "Sm7p-Pa55word-never-shown"


async def create_edge(client: httpx.AsyncClient, name: str, address: str, port: int) -> dict:
    r = await client.post("/proxy", json={"name": name, "address": address, "port": port})
    assert r.status_code == 201, r.text
    return r.json()


async def create_gateway(client: httpx.AsyncClient, location: str, gateway: str) -> dict:
    loc = await create_location(
        client, name=location, address="10.50.0.1/24", allowed_ips="10.50.0.0/24"
    )
    r = await client.post(
        f"/network/{loc['id']}/gateways/adopt",
        json={"name": gateway, "ip_or_domain": "192.0.2.20", "grpc_port": 50066},
    )
    assert r.status_code == 201, r.text
    return r.json()


def rows(page: str, attr: str) -> dict[str, str]:
    """Table rows by the value of their `attr` attribute."""
    found = {}
    for chunk in page.split(f'<tr {attr}="')[1:]:
        name, rest = chunk.split('"', 1)
        found[name] = rest.split("</tr>")[0]
    return found


# -- Edges -----------------------------------------------------------------------


async def test_edges_page_lists_edges_and_registers_new_ones(admin_client: httpx.AsyncClient):
    empty = await admin_client.get(PAGE + "/edges")
    assert empty.status_code == 200
    assert 'id="no-edges"' in empty.text

    edge = await create_edge(admin_client, "edge <eu>", "edge.example.com", 50051)
    page = (await admin_client.get(PAGE + "/edges")).text
    assert "edge &lt;eu&gt;" in page and "edge <eu>" not in page
    row = rows(page, "data-edge")["edge &lt;eu&gt;"]
    assert "edge.example.com:50051" in row
    assert 'data-state="disconnected"' in row
    assert f'href="/edges/{edge["id"]}"' in row
    assert f'data-api="/api/v1/proxy/{edge["id"]}" data-method="DELETE"' in row

    form = read_form(page, "add-edge-form")
    assert form.form["data-api"] == "/api/v1/proxy"
    assert form.form["data-method"] == "POST"
    body = body_of(form, name="edge-us", address="us.example.com", port="50052")
    assert body == {"name": "edge-us", "address": "us.example.com", "port": 50052}
    r = await admin_client.post("/proxy", json=body)
    assert r.status_code == 201, r.text
    assert "edge-us" in rows((await admin_client.get(PAGE + "/edges")).text, "data-edge")


async def test_edge_page_edits_the_edge(admin_client: httpx.AsyncClient):
    edge = await create_edge(admin_client, "edge-1", "198.51.100.4", 50051)
    r = await admin_client.get(PAGE + f"/edges/{edge['id']}")
    assert r.status_code == 200
    assert "198.51.100.4:50051" in r.text
    form = read_form(r.text, "edit-edge-form")
    assert form.form["data-api"] == f"/api/v1/proxy/{edge['id']}"
    assert form.form["data-method"] == "PUT"
    body = body_of(form, name="edge-renamed", enabled=False)
    assert body == {"name": "edge-renamed", "enabled": False}
    put = await admin_client.put(f"/proxy/{edge['id']}", json=body)
    assert put.status_code == 200, put.text
    row = rows((await admin_client.get(PAGE + "/edges")).text, "data-edge")["edge-renamed"]
    assert 'data-enabled="0"' in row and ">Enable<" in row

    for path in ("/edges/999", "/edges/abc"):
        missing = await admin_client.get(PAGE + path)
        assert missing.status_code == 404, path
        assert "Not found" in missing.text


# -- Gateways --------------------------------------------------------------------


async def test_gateways_page_lists_every_location_gateway(admin_client: httpx.AsyncClient):
    assert 'id="no-gateways"' in (await admin_client.get(PAGE + "/gateways")).text
    gateway = await create_gateway(admin_client, "Warsaw", "gw-waw")
    r = await admin_client.get(PAGE + "/gateways")
    assert r.status_code == 200
    row = rows(r.text, "data-gateway")["gw-waw"]
    assert "Warsaw" in row and f'href="/locations/{gateway["location_id"]}' in row
    assert "192.0.2.20:50066" in row
    assert 'data-state="disconnected"' in row and "never connected" in row
    assert f'data-api="/api/v1/gateway/{gateway["id"]}" data-method="DELETE"' in row
    assert f'data-api="/api/v1/gateway/{gateway["id"]}" data-method="PUT"' in row


# -- Activity log ----------------------------------------------------------------


async def add_events(db: Database, now: datetime) -> None:
    samples = [
        ("alice", "user_login", "defguard", "Alice logged in", 3),
        ("alice", "device_added", "defguard", "Added device laptop", 2),
        ("bob", "vpn_client_connected", "vpn", "Connected to Warsaw", 1),
        ("bob", "user_login_failed", "defguard", "Login failed: wrong password", 0),
    ]
    async with db.transaction() as s:
        for i, (user, event, module, description, days_ago) in enumerate(samples):
            s.add(
                ActivityLogEvent(
                    timestamp=now - timedelta(days=days_ago),
                    user_id=100 + i,
                    username=user,
                    location="Warsaw" if module == "vpn" else None,
                    ip="203.0.113.9",
                    event=event,
                    module=module,
                    device="Firefox 123, OS: Linux",
                    description=description,
                )
            )


async def test_activity_page_shows_and_filters_events(
    admin_client: httpx.AsyncClient, db: Database
):
    now = utcnow().replace(hour=12, minute=0, second=0, microsecond=0)
    await add_events(db, now)

    async def shown(**params: str) -> set[str]:
        r = await admin_client.get(PAGE + "/activity", params=params)
        assert r.status_code == 200, r.text
        return set(rows(r.text, "data-event"))

    page = (await admin_client.get(PAGE + "/activity")).text
    assert "Alice logged in" in page and "203.0.113.9/32" in page
    assert {"user_login", "device_added", "vpn_client_connected"} <= await shown()
    assert await shown(user="bob") == {"vpn_client_connected", "user_login_failed"}
    assert await shown(event="device_added") == {"device_added"}
    assert await shown(module="vpn") == {"vpn_client_connected"}
    assert await shown(location="Warsaw") == {"vpn_client_connected"}
    assert await shown(search="WRONG PASSWORD") == {"user_login_failed"}
    day = (now - timedelta(days=2)).date().isoformat()
    assert await shown(user="alice", **{"from": day}) == {"device_added"}
    assert await shown(user="alice", to=day) == {"user_login", "device_added"}
    assert await shown(user="alice", **{"from": day, "to": day}) == {"device_added"}
    assert await shown(user="nobody") == set()

    # The filters stay in the form and in the page links.
    r = await admin_client.get(PAGE + "/activity", params={"user": "bob", "event": "user_login"})
    form = read_form(r.text, "activity-filters")
    assert form.control("user")["value"] == "bob"
    assert "No event matches the filters." in r.text

    bad = await admin_client.get(PAGE + "/activity", params={"from": "yesterday"})
    assert bad.status_code == 200
    assert 'id="activity-error"' in bad.text and "from:" in bad.text


async def test_activity_page_is_paginated(admin_client: httpx.AsyncClient, db: Database):
    now = utcnow()
    async with db.transaction() as s:
        for i in range(30):
            s.add(
                ActivityLogEvent(
                    timestamp=now - timedelta(minutes=i),
                    user_id=1,
                    username="admin",
                    event=f"group_added_{i:02d}",
                    module="defguard",
                    device="",
                    description=f"event number {i}",
                )
            )
    first = (await admin_client.get(PAGE + "/activity", params={"per_page": "25"})).text
    assert len(rows(first, "data-event")) == 25
    assert "group_added_00" in rows(first, "data-event")
    assert 'id="activity-next"' in first and "page=2" in first
    second = (await admin_client.get(PAGE + "/activity?per_page=25&page=2")).text
    assert {"group_added_25", "group_added_29"} <= set(rows(second, "data-event"))
    assert "group_added_00" not in rows(second, "data-event")
    assert 'id="activity-prev"' in second and 'id="activity-next"' not in second


# -- Settings --------------------------------------------------------------------


async def test_settings_page_shows_values_but_never_the_smtp_password(
    admin_client: httpx.AsyncClient,
):
    r = await admin_client.patch(
        "/settings",
        json={
            "instance_name": "Acme VPN",
            "public_proxy_url": "https://enroll.acme.test",
            "enrollment_welcome_message": "Welcome <b>aboard</b>",
            "smtp_server": "smtp.acme.test",
            "smtp_port": 587,
            "smtp_user": "mailer",
            "smtp_password": SMTP_PASSWORD,
            "smtp_sender": "vpn@acme.test",
        },
    )
    assert r.status_code == 200, r.text
    page = await admin_client.get(PAGE + "/settings")
    assert page.status_code == 200
    html = page.text
    assert SMTP_PASSWORD not in html
    assert 'data-password-set="1"' in html
    assert "Welcome &lt;b&gt;aboard&lt;/b&gt;" in html

    general = read_form(html, "settings-form")
    assert general.form["data-api"] == "/api/v1/settings"
    assert general.form["data-method"] == "PATCH"
    assert "data-changed-only" in general.form  # the page sends only what was edited
    assert general.control("instance_name")["value"] == "Acme VPN"
    assert general.control("public_proxy_url")["value"] == "https://enroll.acme.test"
    assert not any(name.startswith("smtp_") for name in general.names())

    smtp = read_form(html, "smtp-form")
    assert smtp.form["data-api"] == "/api/v1/settings"
    assert smtp.control("smtp_server")["value"] == "smtp.acme.test"
    assert smtp.control("smtp_port")["value"] == "587"
    assert smtp.control("smtp_user")["value"] == "mailer"
    assert smtp.control("smtp_sender")["value"] == "vpn@acme.test"
    password = smtp.control("smtp_password")
    assert password["type"] == "password" and not password.get("value")
    assert "data-omit-empty" in password

    # Both forms, sent as they stand, are accepted and change nothing; the
    # untouched password field is left out, so the stored password stays.
    before = (await admin_client.get("/settings")).json()
    for form in (general, smtp):
        body = body_of(form)
        assert "smtp_password" not in body
        saved = await admin_client.patch("/settings", json=body)
        assert saved.status_code == 200, saved.text
        assert saved.json() == before

    # A typed password is sent.
    body = body_of(smtp, smtp_password="n3w-password")
    assert body["smtp_password"] == "n3w-password"


async def test_test_mail_form(admin_client: httpx.AsyncClient, with_smtp: None):
    html = (await admin_client.get(PAGE + "/settings")).text
    form = read_form(html, "test-mail-form")
    assert form.form["data-api"] == "/api/v1/mail/test"
    assert form.form["data-method"] == "POST"
    body = body_of(form)
    assert body == {"to": "admin@defguard.local"}  # the admin's own address to start with
    r = await admin_client.post("/mail/test", json=body)
    assert r.status_code == 200, r.text
    assert 'id="test-mail-result"' in html
    assert 'id="smtp-not-configured"' not in html
