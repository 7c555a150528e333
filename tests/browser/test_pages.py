"""Every console page and Edge page opens without errors, at desktop and at phone width
(no sideways scrolling), and shows the data the API holds. Screenshots of each."""

from __future__ import annotations

import pytest
from playwright.sync_api import ConsoleMessage, Page, expect

from tests.browser.conftest import PHONE, System, login
from tests.browser.test_enrollment import LOCATION

pytestmark = pytest.mark.browser

PUBKEY = "n+kAdgrlU77BMy30ywHH/mYAfTI7oMQTzkB+m3CoLo0="


def seed(system: System) -> dict[str, int]:
    api = system.api
    location = api.post("/network", json={**LOCATION, "acl_enabled": True}).json()
    r = api.post(
        "/user",
        json={
            "username": "anna",
            "first_name": "Anna",
            "last_name": "Smith",
            "email": "anna@example.test",
            "password": "Anna!Passw0rd1",
        },
    )
    assert r.status_code == 201, r.text
    r = api.post("/group", json={"name": "engineering", "members": ["anna"], "is_admin": False})
    assert r.status_code == 201, r.text
    device = api.post("/device/anna", json={"name": "anna-laptop", "wireguard_pubkey": PUBKEY})
    assert device.status_code == 201, device.text
    return {"location": location["id"], "device": device.json()["device"]["id"]}


def check_page(page: Page, url: str, name: str, shots, expected: str) -> None:
    errors: list[str] = []
    # Chromium reports what the Content-Security-Policy blocked only as console errors.
    console: list[str] = []

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error":
            console.append(msg.text)

    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", on_console)
    response = page.goto(url)
    assert response is not None and response.status == 200, url
    expect(page.locator("main")).to_contain_text(expected)
    size = page.viewport_size
    page.set_viewport_size(PHONE)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"{url} scrolls sideways at phone width ({width}px)"
    if size:
        page.set_viewport_size(size)
    shots(page, name, phone=True)
    page.remove_listener("console", on_console)
    assert not errors, errors
    blocked = [text for text in console if "Content Security Policy" in text]
    assert not blocked, (url, blocked)


def test_console_pages(page: Page, system: System, shots) -> None:
    ids = seed(system)
    login(page, system)
    base = system.console
    for path, name, expected in [
        ("/", "dashboard-overview", "Branch"),
        ("/users", "users", "anna"),
        ("/users/anna", "user-detail", "anna-laptop"),
        ("/groups", "groups", "engineering"),
        ("/groups/engineering", "group", "anna"),
        ("/locations", "locations", "Branch"),
        (f"/locations/{ids['location']}", "location-detail", "anna-laptop"),
        (f"/devices/{ids['device']}", "device-detail", "anna-laptop"),
        ("/locations/new", "location-new", "Create location"),
        ("/acl", "acl-rules", "Rules"),
        ("/acl/rules/new", "acl-rule-new", "New rule"),
        ("/acl/aliases", "acl-aliases", "Aliases"),
        ("/acl/destinations", "acl-destinations", "Destinations"),
        (f"/acl/firewall?location={ids['location']}", "acl-firewall-empty", "Branch"),
        ("/acl/explain", "acl-explain", "Explain"),
        ("/edges", "edges", "connected"),
        ("/gateways", "gateways", "Gateways"),
        ("/activity", "activity", "anna"),
        ("/settings", "settings", "SMTP"),
    ]:
        check_page(page, base + path, name, shots, expected)


def test_edge_pages(page: Page, system: System, shots) -> None:
    check_page(page, system.edge_url + "/", "enroll-start", shots, "token")
    check_page(page, system.edge_url + "/password-reset", "password-reset", shots, "e-mail")
