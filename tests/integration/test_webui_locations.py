"""Console pages for the dashboard, locations and devices.

The location forms are checked the way a browser would use them: the fields
are read from the page and turned into the JSON body forms.js would send,
which the API must accept.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import timedelta
from typing import Any

import httpx
import pytest

from defguard.core.gateways.models import PeerStats
from defguard.core.locations.schemas import LocationWrite
from defguard.db.base import utcnow
from defguard.db.engine import Database
from defguard.wireguard.keys import generate_keypair
from tests.conftest import make_user
from tests.webforms import body_of, create_location, read_form

pytestmark = pytest.mark.asyncio
PAGE = "http://testserver"


async def add_device(client: httpx.AsyncClient, username: str, name: str) -> dict[str, Any]:
    r = await client.post(
        f"/device/{username}", json={"name": name, "wireguard_pubkey": generate_keypair().public}
    )
    assert r.status_code == 201, r.text
    return r.json()["device"]


# -- dashboard -----------------------------------------------------------------


async def test_empty_dashboard_offers_to_create_a_location(admin_client: httpx.AsyncClient):
    r = await admin_client.get(PAGE + "/")
    assert r.status_code == 200
    assert 'id="dashboard-empty"' in r.text
    assert 'href="/locations/new"' in r.text


async def test_dashboard_shows_locations_gateways_and_traffic(
    admin_client: httpx.AsyncClient, db: Database
):
    hq = await create_location(admin_client, name="HQ <main>")
    await create_location(admin_client, name="Branch", address="10.20.0.1/24")
    r = await admin_client.post(
        f"/network/{hq['id']}/gateways/adopt",
        json={"name": "gw-hq", "ip_or_domain": "192.0.2.10", "grpc_port": 50066},
    )
    assert r.status_code == 201, r.text
    device = await add_device(admin_client, "admin", "laptop")
    now = utcnow().replace(microsecond=0)
    async with db.transaction() as s:
        for i, minutes in enumerate((30, 20, 10, 1)):
            s.add(
                PeerStats(
                    batch_id=f"b{i}",
                    gateway_id=r.json()["id"],
                    location_id=hq["id"],
                    device_id=device["id"],
                    public_key=device["wireguard_pubkey"],
                    collected_at=now - timedelta(minutes=minutes),
                    endpoint="203.0.113.9:40000",
                    upload=1000 * (i + 1),
                    download=5000 * (i + 1),
                    latest_handshake=now - timedelta(minutes=minutes, seconds=5),
                )
            )

    page = (await admin_client.get(PAGE + "/")).text
    assert "HQ &lt;main&gt;" in page and "<main>" not in page.replace("<main class", "")
    assert "Branch" in page
    hq_panel = page.split(f'id="location-{hq["id"]}"')[1].split("</section>")[0]
    assert "10.10.0.1/24" in hq_panel
    assert 'data-gateway="gw-hq"' in hq_panel
    assert 'data-state="disconnected"' in hq_panel
    assert 'data-connected="1"' in hq_panel  # the laptop handshook a minute ago
    svg = re.search(r'<svg class="chart".*?</svg>', hq_panel, re.S)
    assert svg is not None
    root = ET.fromstring(svg.group(0))
    assert len(root.findall("{http://www.w3.org/2000/svg}polyline")) == 2
    # Transfer is the growth of the counters: 3000 B up, 15000 B down.
    assert "upload 2.9 KiB" in hq_panel and "download 14.6 KiB" in hq_panel
    branch_panel = page.split('data-location="Branch"')[1].split("</section>")[0]
    assert "No gateway yet" in branch_panel
    assert "No traffic reported" in branch_panel


# -- locations -----------------------------------------------------------------


async def test_new_location_form_carries_the_whole_write_body(admin_client: httpx.AsyncClient):
    r = await admin_client.get(PAGE + "/locations/new")
    assert r.status_code == 200
    form = read_form(r.text, "location-form")
    assert form.form["data-api"] == "/api/v1/network"
    assert form.form["data-method"] == "POST"
    assert form.form["data-next"] == "/locations/{id}"
    body = body_of(form, name="Office", address="10.30.0.1/24", endpoint="vpn.example.org")
    assert set(body) == set(LocationWrite.model_fields)
    assert body["allow_all_groups"] is True and body["allowed_groups"] == []
    assert body["allowed_ips"] is None and body["dns"] is None
    created = await admin_client.post("/network", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["name"] == "Office"
    assert created.json()["mtu"] == 1420


async def test_location_list_and_page(admin_client: httpx.AsyncClient, db: Database):
    await make_user(db, "alice")
    loc = await create_location(admin_client, name="Office", dns="10.10.0.53")
    laptop = await add_device(admin_client, "alice", "alice-laptop")
    await admin_client.post(
        f"/network/{loc['id']}/gateways/adopt",
        json={"name": "edge-gw", "ip_or_domain": "gw.example.com", "grpc_port": 50070},
    )

    listing = await admin_client.get(PAGE + "/locations")
    assert listing.status_code == 200
    assert f'href="/locations/{loc["id"]}"' in listing.text
    assert 'data-gateway="edge-gw"' in listing.text
    assert 'href="/locations/new"' in listing.text

    r = await admin_client.get(PAGE + f"/locations/{loc['id']}")
    assert r.status_code == 200
    page = r.text
    assert f'href="/devices/{laptop["id"]}"' in page
    assert "10.10.0.2" in page
    assert 'href="/users/alice"' in page
    assert 'data-gateway="edge-gw"' in page
    adopt = read_form(page, "add-gateway-form")
    assert adopt.form["data-api"] == f"/api/v1/network/{loc['id']}/gateways/adopt"
    assert {c["name"] for c in adopt.controls} == {"name", "ip_or_domain", "grpc_port"}
    assert f'data-api="/api/v1/network/{loc["id"]}" data-method="DELETE"' in page

    # The edit form, sent unchanged, is a valid PUT that changes nothing.
    edit = read_form(page, "location-form")
    assert edit.form["data-api"] == f"/api/v1/network/{loc['id']}"
    assert edit.form["data-method"] == "PUT"
    body = body_of(edit)
    assert set(body) == set(LocationWrite.model_fields)
    assert body["dns"] == "10.10.0.53" and body["address"] == "10.10.0.1/24"
    put = await admin_client.put(f"/network/{loc['id']}", json=body)
    assert put.status_code == 200, put.text
    before = {k: v for k, v in loc.items() if k != "connected_at"}
    assert {k: v for k, v in put.json().items() if k in before} == before


async def test_edit_form_keeps_allowed_groups(admin_client: httpx.AsyncClient):
    r = await admin_client.post("/group", json={"name": "devops", "members": [], "is_admin": False})
    assert r.status_code == 201, r.text
    loc = await create_location(admin_client, allow_all_groups=False, allowed_groups=["devops"])
    page = (await admin_client.get(PAGE + f"/locations/{loc['id']}")).text
    body = body_of(read_form(page, "location-form"))
    assert body["allow_all_groups"] is False
    assert body["allowed_groups"] == ["devops"]


async def test_unknown_location_and_device_are_404_pages(admin_client: httpx.AsyncClient):
    for path in ("/locations/999", "/locations/abc", "/devices/999", "/devices/x"):
        r = await admin_client.get(PAGE + path)
        assert r.status_code == 404, path
        assert "Not found" in r.text


# -- devices -------------------------------------------------------------------


async def test_device_page_offers_config_and_qr(admin_client: httpx.AsyncClient, db: Database):
    await make_user(db, "bob")
    loc = await create_location(admin_client, name="HQ")
    mfa = await create_location(
        admin_client, name="Secure", address="10.40.0.1/24", location_mfa_mode="internal"
    )
    device = await add_device(admin_client, "bob", "bob-phone")

    r = await admin_client.get(PAGE + f"/devices/{device['id']}")
    assert r.status_code == 200
    page = r.text
    assert "bob-phone" in page
    assert 'href="/users/bob"' in page
    assert device["wireguard_pubkey"] in page
    hq = page.split(f'id="device-location-{loc["id"]}"')[1].split("</section>")[0]
    assert "10.10.0.2" in hq
    config_url = f"/api/v1/network/{loc['id']}/device/{device['id']}/config"
    assert f'href="{config_url}" download="bob-phone-HQ.conf"' in hq
    assert '<svg class="qr"' in hq
    assert "YOUR_PRIVATE_KEY" in hq
    config = await admin_client.get(PAGE + config_url)
    assert config.status_code == 200
    assert "PrivateKey = YOUR_PRIVATE_KEY" in config.text
    secure = page.split(f'id="device-location-{mfa["id"]}"')[1].split("</section>")[0]
    assert "requires MFA" in secure and "<svg" not in secure

    edit = read_form(page, "device-form")
    assert edit.form["data-api"] == f"/api/v1/device/{device['id']}"
    assert edit.form["data-method"] == "PUT"
    body = body_of(edit, name="bob-tablet")
    assert body == {
        "name": "bob-tablet",
        "wireguard_pubkey": device["wireguard_pubkey"],
        "description": None,
    }
    assert (await admin_client.put(f"/device/{device['id']}", json=body)).status_code == 200
    assert f'data-api="/api/v1/device/{device["id"]}" data-method="DELETE"' in page
    assert 'data-next="/users/bob"' in page


async def test_network_device_is_listed_with_its_address(admin_client: httpx.AsyncClient):
    loc = await create_location(admin_client, name="DC")
    r = await admin_client.post(
        "/device/network",
        json={
            "name": "printer",
            "location_id": loc["id"],
            "assigned_ips": ["10.10.0.40"],
            "wireguard_pubkey": generate_keypair().public,
        },
    )
    assert r.status_code == 201, r.text
    device_id = r.json()["device"]["id"]
    page = (await admin_client.get(PAGE + f"/locations/{loc['id']}")).text
    row = page.split('data-device="printer"')[1].split("</tr>")[0]
    assert f'href="/devices/{device_id}"' in row and "10.10.0.40" in row and "network" in row
    device_page = (await admin_client.get(PAGE + f"/devices/{device_id}")).text
    assert "network device" in device_page
    assert f'data-next="/locations/{loc["id"]}"' in device_page


async def test_location_devices_are_paged_and_searchable(
    admin_client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
):
    """A location holds every device of its users; the page shows them a page at a time."""
    from defguard.core.webui import locations

    monkeypatch.setattr(locations, "DEVICES_PER_PAGE", 2)
    location = await create_location(admin_client)
    for name in ("alpha", "bravo", "charlie"):
        await add_device(admin_client, "admin", name)
    base = f"{PAGE}/locations/{location['id']}"

    first = (await admin_client.get(base)).text
    assert 'id="device-total">(3)' in first
    assert re.findall(r'data-device="(\w+)"', first) == ["alpha", "bravo"]
    assert 'id="devices-next"' in first and 'id="devices-prev"' not in first

    second = (await admin_client.get(base, params={"dpage": 2})).text
    assert re.findall(r'data-device="(\w+)"', second) == ["charlie"]
    assert 'id="devices-prev"' in second and 'id="devices-next"' not in second

    found = (await admin_client.get(base, params={"dq": "RAV"})).text
    assert re.findall(r'data-device="(\w+)"', found) == ["bravo"]
    assert 'id="device-total">(1)' in found
    # `_` and `%` are plain characters, not wildcards.
    none = (await admin_client.get(base, params={"dq": "%"})).text
    assert "data-device=" not in none and "No device matches" in none
