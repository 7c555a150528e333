"""`/gateway`, `/network/{id}/gateways` and the location stats endpoints (spec §5 and §7)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text

from defguard.core.activity.models import ActivityLogEvent
from defguard.core.gateways.models import GatewayLink, PeerChange, PeerStats
from defguard.core.gateways.service import LINK_STALE_AFTER, summarize_links
from defguard.core.gateways.stats import purge
from defguard.core.jobs import tasks
from defguard.db.base import utcnow
from tests.integration.test_devices import add_network_device
from tests.integration.test_locations import create_location

ADOPT = {"name": "gw-1", "ip_or_domain": "gw1.example.com", "grpc_port": 50066}


async def test_anonymous_and_non_admin_are_rejected(client, user_client):
    paths = [
        ("get", "/gateway"),
        ("get", "/network/gateways"),
        ("get", "/network/1/gateways"),
        ("get", "/gateway/1"),
        ("put", "/gateway/1"),
        ("delete", "/gateway/1"),
        ("post", "/network/1/gateways/adopt"),
        ("get", "/network/stats"),
        ("get", "/network/1/stats"),
        ("get", "/network/1/stats/connected_users"),
        ("get", "/network/1/stats/connected_network_devices"),
        ("get", "/network/1/stats/connected_users/1/devices"),
    ]
    for method, path in paths:
        kwargs = {"json": ADOPT} if method in ("put", "post") else {}
        r = await client.request(method, path, **kwargs)
        assert r.status_code == 401, (method, path)
        r = await user_client.request(method, path, **kwargs)
        assert r.status_code == 403, (method, path)
        assert r.json() == {"msg": "access denied"}


async def test_adopt_list_get_update_delete(admin_client, db):
    loc = await create_location(admin_client)
    other = await create_location(admin_client, name="Branch", address="10.20.0.1/24")
    r = await admin_client.post(
        f"/network/{loc['id']}/gateways/adopt",
        json={**ADOPT, "ip_or_domain": "https://GW1.Example.com"},
    )
    assert r.status_code == 201, r.text
    gw = r.json()
    assert gw["address"] == "gw1.example.com" and gw["port"] == 50066
    assert gw["location_id"] == loc["id"] and gw["name"] == "gw-1" and gw["enabled"] is True
    assert gw["modified_by"] == "Defguard Administrator"
    assert gw["connected_at"] is None and gw["disconnected_at"] is None and gw["version"] is None
    assert set(gw) == {
        "id", "location_id", "name", "address", "port", "connected_at", "disconnected_at",
        "certificate_serial", "certificate_expiry", "version", "enabled", "modified_at",
        "modified_by", "core_client_cert_expiry",
    }  # fmt: skip

    r = await admin_client.post(
        f"/network/{loc['id']}/gateways/adopt",
        json={"name": "gw-2", "ip_or_domain": "[fd00::10]", "grpc_port": 50067},
    )
    assert r.status_code == 201, r.text
    assert r.json()["address"] == "fd00::10"

    r = await admin_client.get("/gateway")
    listed = r.json()
    assert [g["name"] for g in listed] == ["gw-1", "gw-2"]
    assert all(g["connected"] is False and g["location_name"] == "HQ" for g in listed)
    assert "core_client_cert_expiry" not in listed[0]
    assert (await admin_client.get("/network/gateways")).json() == listed
    assert (await admin_client.get(f"/network/{loc['id']}/gateways")).json() == listed
    assert (await admin_client.get(f"/network/{other['id']}/gateways")).json() == []
    r = await admin_client.get(f"/network/{loc['id']}")
    assert r.json()["gateways"] == listed
    r = await admin_client.get("/network")
    assert {n["name"]: len(n["gateways"]) for n in r.json()} == {"HQ": 2, "Branch": 0}

    r = await admin_client.get(f"/gateway/{gw['id']}")
    assert r.status_code == 200 and r.json() == gw
    r = await admin_client.get("/gateway/999")
    assert r.status_code == 404 and r.json() is None

    r = await admin_client.put(f"/gateway/{gw['id']}", json={"name": "edge-1", "enabled": False})
    assert r.status_code == 200, r.text
    assert (r.json()["name"], r.json()["enabled"]) == ("edge-1", False)
    assert r.json()["modified_at"] >= gw["modified_at"]

    r = await admin_client.delete(f"/gateway/{gw['id']}")
    assert r.status_code == 200 and r.json() == {}
    r = await admin_client.delete(f"/gateway/{gw['id']}")
    assert r.status_code == 404 and r.json() == {"msg": f"Gateway {gw['id']} not found"}
    assert [g["name"] for g in (await admin_client.get("/gateway")).json()] == ["gw-2"]

    async with db.session() as s:
        events = (
            await s.execute(
                select(ActivityLogEvent.event, ActivityLogEvent.location).order_by(
                    ActivityLogEvent.id
                )
            )
        ).all()
    assert [tuple(e) for e in events if e[0].startswith("gateway")] == [
        ("gateway_modified", "HQ"),
        ("gateway_deleted", "HQ"),
    ]


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"ip_or_domain": "gw.example.com:50066"}, 400, "port"),
        ({"ip_or_domain": "gw.example.com/path"}, 400, "path"),
        ({"ip_or_domain": "gw.example.com?x=1"}, 400, "path"),
        ({"ip_or_domain": "http://"}, 400, "empty"),
        ({"ip_or_domain": "bad_host!"}, 400, "not a valid"),
        ({"grpc_port": 0}, 400, "grpc_port"),
        ({"grpc_port": 65536}, 400, "grpc_port"),
        ({"name": "  "}, 400, "name"),
    ],
)
async def test_adopt_validation(admin_client, body, status, fragment):
    loc = await create_location(admin_client)
    r = await admin_client.post(f"/network/{loc['id']}/gateways/adopt", json={**ADOPT, **body})
    assert r.status_code == status, r.text
    assert fragment in r.json()["msg"]


async def test_adopt_duplicate_unknown_location_and_bad_put(admin_client):
    loc = await create_location(admin_client)
    path = f"/network/{loc['id']}/gateways/adopt"
    gw = (await admin_client.post(path, json=ADOPT)).json()
    r = await admin_client.post(path, json={**ADOPT, "ip_or_domain": "GW1.example.com"})
    assert r.status_code == 409, r.text
    r = await admin_client.post(path, json={**ADOPT, "grpc_port": 50067})
    assert r.status_code == 201, r.text
    r = await admin_client.post("/network/999/gateways/adopt", json=ADOPT)
    assert r.status_code == 404 and r.json() == {"msg": "Network 999 not found"}
    r = await admin_client.post(path, json={"name": "x"})
    assert r.status_code == 422

    put = f"/gateway/{gw['id']}"
    for body in (
        {"name": "x", "enabled": True, "extra": 1},
        {"name": "x"},
        {"name": "x", "enabled": "maybe"},
    ):
        r = await admin_client.put(put, json=body)
        assert r.status_code == 400, body
        assert r.json()["msg"].startswith("Failed to parse request data: ")
    r = await admin_client.put(
        put, content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400 and r.json()["msg"].startswith("Failed to parse request data")
    r = await admin_client.put("/gateway/999", json={"name": "x", "enabled": True})
    assert r.status_code == 404 and r.json() == {"msg": "Gateway 999 not found"}
    r = await admin_client.put(put, json={"name": "x", "enabled": True}, headers={"User-Agent": ""})
    assert r.status_code == 400 and r.json() == {"msg": "Missing UserAgent header"}


async def test_stats_parameters_and_empty_bodies(admin_client):
    loc = await create_location(admin_client)
    base = f"/network/{loc['id']}/stats"
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    for path in ("/network/stats", base, f"{base}/connected_users"):
        assert (await admin_client.get(path, params={"from": future})).status_code == 400
        assert (
            await admin_client.get(path, params={"from": "2025-03-04T00:00:00"})
        ).status_code == 400
        assert (await admin_client.get(path, params={"from": "yesterday"})).status_code == 400
    for path in (
        "/network/999/stats",
        "/network/999/stats/connected_users",
        "/network/999/stats/connected_network_devices",
        "/network/999/stats/connected_users/1/devices",
    ):
        r = await admin_client.get(path)
        assert r.status_code == 404, path
    r = await admin_client.get(base, params={"from": "2025-03-04T00:00:00Z"})
    assert r.status_code == 200
    assert r.json() == {
        "current_active_users": 0,
        "current_active_user_devices": 0,
        "current_active_network_devices": 0,
        "active_users": 0,
        "active_user_devices": 0,
        "active_network_devices": 0,
        "upload": 0,
        "download": 0,
        "transfer_series": [],
    }
    r = await admin_client.get(f"{base}/connected_users")
    assert r.json()["data"] == [] and r.json()["pagination"]["total_items"] == 0
    r = await admin_client.get(f"{base}/connected_users/1/devices")
    assert r.json() == []


async def test_purge_keeps_recent_rows_and_the_last_link(admin_client, db):
    loc = await create_location(admin_client)
    gw = (await admin_client.post(f"/network/{loc['id']}/gateways/adopt", json=ADOPT)).json()
    now = utcnow()
    async with db.transaction() as s:
        for batch, age in (("old", timedelta(days=31)), ("new", timedelta(days=1))):
            s.add(
                PeerStats(
                    batch_id=batch,
                    gateway_id=gw["id"],
                    location_id=loc["id"],
                    public_key="k",
                    collected_at=now - age,
                    upload=1,
                    download=1,
                )
            )
        s.add(PeerChange(location_id=loc["id"], public_key="k", revision=1, created_at=now))
        s.add(
            PeerChange(
                location_id=loc["id"],
                public_key="k",
                revision=1,
                created_at=now - timedelta(days=2),
            )
        )
        for core, age in (("dead", timedelta(days=3)), ("older", timedelta(days=5))):
            s.add(
                GatewayLink(
                    gateway_id=gw["id"],
                    core_id=core,
                    connected_at=now - age,
                    disconnected_at=now - age,
                    last_seen=now - age,
                )
            )
    async with db.transaction() as s:
        counts = await purge(s)
    assert counts == {"peer_stats": 1, "peer_change": 1, "gateway_link": 1}
    async with db.session() as s:
        assert (await s.execute(select(PeerStats.batch_id))).scalars().all() == ["new"]
        assert (await s.execute(select(GatewayLink.core_id))).scalars().all() == ["dead"]
        assert (await s.execute(text("SELECT count(*) FROM peer_change"))).scalar_one() == 1
    # Registered as a periodic job of every Core's worker (the queue runs it once per tick).
    periodic = {p.periodic_id: p.task.name for p in tasks.periodic_registry.periodic_tasks.values()}
    assert periodic["purge-stats"].endswith("purge_stats")


def _link(connected: datetime, disconnected: datetime | None, seen: datetime) -> GatewayLink:
    return GatewayLink(
        gateway_id=1,
        core_id=str(connected),
        connected_at=connected,
        disconnected_at=disconnected,
        last_seen=seen,
        version="2.0.0",
    )


def test_link_summary_across_cores():
    now = datetime(2025, 3, 4, 12, 0, 0)
    m = timedelta(minutes=1)
    assert summarize_links([], now).connected is False
    # Two live Cores: connected since the earlier link; an older drop is shown.
    view = summarize_links(
        [
            _link(now - 10 * m, None, now),
            _link(now - 5 * m, None, now),
            _link(now - 30 * m, now - 20 * m, now - 20 * m),
        ],
        now,
    )
    assert (view.connected, view.connected_at, view.disconnected_at) == (
        True,
        now - 10 * m,
        now - 20 * m,
    )
    # A drop after the live link started does not contradict `connected`.
    view = summarize_links(
        [_link(now - 10 * m, None, now), _link(now - 9 * m, now - 2 * m, now - 2 * m)], now
    )
    assert view.connected and view.disconnected_at is None
    # A Core that stopped heartbeating counts as gone since its last beat.
    stale = now - LINK_STALE_AFTER - m
    view = summarize_links([_link(now - 10 * m, None, stale)], now)
    assert (view.connected, view.connected_at, view.disconnected_at) == (
        False,
        now - 10 * m,
        stale,
    )


async def test_connected_at_counts_from_the_return_after_a_drop(admin_client, db):
    loc = await create_location(admin_client)
    r = await add_network_device(admin_client, loc["id"])
    device = r.json()["device"]
    now = utcnow().replace(microsecond=0)
    m = timedelta(minutes=1)
    samples = [
        # (collected, handshake): up, then silent past the 300 s threshold, then back.
        (now - 50 * m, now - 50 * m),
        (now - 20 * m, now - 40 * m),
        (now - 10 * m, now - 10 * m),
        (now - 1 * m, now - 2 * m),
    ]
    async with db.transaction() as s:
        for index, (collected, handshake) in enumerate(samples):
            s.add(
                PeerStats(
                    batch_id=f"b{index}",
                    gateway_id=1,
                    location_id=loc["id"],
                    device_id=device["id"],
                    public_key=device["wireguard_pubkey"],
                    collected_at=collected,
                    endpoint="[2001:db8::5]:40000",
                    upload=100 * (index + 1),
                    download=10 * (index + 1),
                    latest_handshake=handshake,
                )
            )
    r = await admin_client.get(f"/network/{loc['id']}/stats/connected_network_devices")
    assert r.status_code == 200, r.text
    (item,) = r.json()["data"]
    assert item["device_id"] == device["id"]
    assert item["connected_at"] == (now - 10 * m).isoformat()
    assert item["public_ip"] == "2001:db8::5"
    assert item["vpn_ips"] == ["10.10.0.50"]
    # Transfer since `from` (default one hour): differences of the cumulative counters.
    assert (item["total_upload"], item["total_download"]) == (300, 30)
    r = await admin_client.get(f"/network/{loc['id']}/stats")
    body = r.json()
    assert (body["current_active_network_devices"], body["active_network_devices"]) == (1, 1)
    assert body["current_active_users"] == 0
