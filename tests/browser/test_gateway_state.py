"""A location created in the console, a real gateway registered to it from the page, a real
WireGuard client sending traffic through it, and the dashboard showing the connected device,
the traffic and the gateway's link state going from connected to disconnected when it stops."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import System, login
from tests.conftest import require_tools
from tests.wgtools import (
    GRPC_PORT,
    gateway_in_namespace,
    keypair,
    namespace,
    ping,
    subnet_octets,
    veth_pair,
    wg_dump,
    wireguard_client,
)

pytestmark = [pytest.mark.browser, pytest.mark.e2e]


def reload_until(page: Page, ready, what: str, attempts: int = 40) -> None:
    for _ in range(attempts):
        if ready():
            return
        page.wait_for_timeout(1000)
        page.reload()
    raise AssertionError(f"the page never showed {what}")


def create_location(page: Page, system: System, endpoint: str) -> int:
    expect(page.locator("#dashboard-empty")).to_be_visible()
    page.click("#create-first-location")
    page.fill("#location-form input[name=name]", "Office HQ")
    page.fill("#location-form input[name=address]", "not an address")
    page.fill("#location-form input[name=endpoint]", endpoint)
    page.click("#location-submit")
    # The API's message appears next to the field it names, and nothing is created.
    expect(page.locator('.field-error[data-for="address"]')).not_to_be_empty()
    assert system.api.get("/network").json() == []
    page.fill("#location-form input[name=address]", "10.61.0.1/24")
    page.click("#location-submit")
    page.wait_for_url(re.compile(r".*/locations/\d+$"))
    (location,) = system.api.get("/network").json()
    assert location["name"] == "Office HQ"
    assert location["address"] == ["10.61.0.1/24"]
    expect(page.locator("#no-gateways")).to_be_visible()
    return location["id"]


def test_gateway_link_state_connected_device_and_traffic(
    page: Page, system: System, shots, tmp_path: Path
) -> None:
    require_tools("wireguard-go", "wg", "nft", "ip", root=True)
    second, third = subnet_octets()
    gw_public, client_public = f"10.{second}.{third}.1", f"10.{second}.{third}.2"
    with (
        gateway_in_namespace(tmp_path, DEFGUARD_STATS_PERIOD="1") as gateway,
        namespace() as client_ns,
        veth_pair(gateway.ns, client_ns, f"{gw_public}/30", f"{client_public}/30"),
    ):
        login(page, system)
        location_id = create_location(page, system, gw_public)
        shots(page, "location", phone=True)

        gateway.start()
        page.fill("#add-gateway-form input[name=name]", "gw-office")
        page.fill("#add-gateway-form input[name=ip_or_domain]", gateway.address)
        page.fill("#add-gateway-form input[name=grpc_port]", str(GRPC_PORT))
        page.click("#add-gateway-form button[type=submit]")
        expect(page.locator('#gateways-table tr[data-gateway="gw-office"]')).to_be_visible()

        state = page.locator('tr[data-gateway="gw-office"] [data-state]')
        page.goto(f"{system.console}/")
        reload_until(page, lambda: state.get_attribute("data-state") == "connected", "connected")

        # A device of admin's, and a real client in its own namespace using it.
        private, public = keypair()
        r = system.api.post(
            "/device/admin", json={"name": "admin-laptop", "wireguard_pubkey": public}
        )
        assert r.status_code == 201, r.text
        (config,) = [c for c in r.json()["configs"] if c["network_id"] == location_id]
        for _ in range(50):
            if public in wg_dump(gateway.ns, gateway.ifname)[1]:
                break
            page.wait_for_timeout(200)
        with wireguard_client(
            client_ns,
            private_key=private,
            peer_public=config["pubkey"],
            endpoint=config["endpoint"],
            address=f"{config['address'][0]}/24",
            allowed_ips="10.61.0.0/24",
        ):
            assert ping(client_ns, "10.61.0.1", count=20, interval=0.1) == 20
            connected = page.locator('[data-location="Office HQ"] [data-connected]')
            reload_until(
                page,
                lambda: (
                    connected.get_attribute("data-connected") == "1"
                    and page.locator('[data-location="Office HQ"] svg.chart').count() == 1
                ),
                "the connected device and its traffic",
            )
            shots(page, "dashboard", phone=True)

        gateway.stop()
        reload_until(
            page, lambda: state.get_attribute("data-state") == "disconnected", "disconnected"
        )
        shots(page, "dashboard-gateway-down")
