"""`/network`: locations, their validation, access rules and re-addressing."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from defguard.core.activity.models import ActivityLogEvent
from defguard.core.devices.models import DeviceLocation
from defguard.core.groups.models import Group
from defguard.core.locations.models import Location
from defguard.core.users.models import User
from defguard.db.base import Base
from defguard.db.engine import Database
from defguard.wireguard.keys import generate_keypair, is_valid_key
from tests.api_bodies import location_body
from tests.conftest import make_user


async def create_location(client: httpx.AsyncClient, **overrides: Any) -> dict[str, Any]:
    r = await client.post("/network", json=location_body(**overrides))
    assert r.status_code == 201, r.text
    return r.json()


async def add_device(
    client: httpx.AsyncClient, username: str, name: str = "laptop"
) -> dict[str, Any]:
    r = await client.post(
        f"/device/{username}", json={"name": name, "wireguard_pubkey": generate_keypair().public}
    )
    assert r.status_code == 201, r.text
    return r.json()


async def device_ips(db: Database, device_id: int, location_id: int) -> list[str]:
    async with db.session() as s:
        ips = (
            await s.execute(
                select(DeviceLocation.wireguard_ips).where(
                    DeviceLocation.device_id == device_id,
                    DeviceLocation.wireguard_network_id == location_id,
                )
            )
        ).scalar_one_or_none()
    return [str(ip) for ip in ips] if ips is not None else []


async def revision(db: Database, location_id: int) -> int:
    async with db.session() as s:
        return (
            await s.execute(select(Location.config_revision).where(Location.id == location_id))
        ).scalar_one()


async def table_count(db: Database, model: type[Base]) -> int:
    async with db.session() as s:
        return (await s.execute(select(func.count()).select_from(model))).scalar_one()


# -- roles ---------------------------------------------------------------------


async def test_anonymous_gets_401(client):
    for method, path in [
        ("GET", "/network"),
        ("GET", "/network/1"),
        ("GET", "/network/count"),
        ("GET", "/network/display"),
        ("POST", "/network"),
        ("PUT", "/network/1"),
        ("DELETE", "/network/1"),
    ]:
        body = location_body() if method in ("POST", "PUT") else None
        r = await client.request(method, path, json=body)
        assert r.status_code == 401, (method, path)
        assert r.json() == {"msg": "Session is required"}


async def test_non_admin_gets_403(user_client):
    for method, path in [
        ("GET", "/network"),
        ("GET", "/network/1"),
        ("GET", "/network/count"),
        ("GET", "/network/display"),
        ("POST", "/network"),
        ("PUT", "/network/1"),
        ("DELETE", "/network/1"),
    ]:
        body = location_body() if method in ("POST", "PUT") else None
        r = await user_client.request(method, path, json=body)
        assert r.status_code == 403, (method, path)
        assert r.json() == {"msg": "access denied"}


# -- create / read ---------------------------------------------------------------


async def test_create_returns_spec_shape(admin_client, db):
    r = await admin_client.post("/network", json=location_body())
    assert r.status_code == 201
    body = r.json()
    assert list(body) == [
        "id", "name", "address", "port", "pubkey", "endpoint", "dns", "mtu", "fwmark",
        "allowed_ips", "allow_all_groups", "connected_at", "acl_enabled", "acl_default_allow",
        "keepalive_interval", "peer_disconnect_threshold", "location_mfa_mode",
        "service_location_mode",
    ]  # fmt: skip
    assert body["address"] == ["10.10.0.1/24"]
    assert body["allowed_ips"] == ["10.10.0.0/24", "192.168.50.0/24"]
    assert body["connected_at"] is None
    assert is_valid_key(body["pubkey"])
    assert "prvkey" not in body
    async with db.session() as s:
        loc = await s.get(Location, body["id"])
        assert loc.prvkey and loc.prvkey != loc.pubkey
        events = (
            (
                await s.execute(
                    select(ActivityLogEvent).where(ActivityLogEvent.event == "vpn_location_added")
                )
            )
            .scalars()
            .all()
        )
    assert [e.location for e in events] == ["HQ"]


async def test_allowed_ips_host_bits_stripped_and_invalid_dropped(admin_client):
    body = await create_location(admin_client, allowed_ips="10.1.2.3/16, bogus, 10.0.0.5,0.0.0.0/0")
    assert body["allowed_ips"] == ["10.1.0.0/16", "10.0.0.5/32", "0.0.0.0/0"]


async def test_get_list_count_display(admin_client, db):
    async with db.transaction() as s:
        s.add(Group(name="devops"))
    b = await create_location(admin_client, name="b-site", address="10.2.0.1/24")
    a = await create_location(
        admin_client,
        name="a-site",
        address="10.3.0.1/24",
        allow_all_groups=False,
        allowed_groups=["devops", "nope"],
    )
    r = await admin_client.get("/network")
    assert r.status_code == 200
    items = r.json()
    assert [i["name"] for i in items] == ["a-site", "b-site"]
    assert items[0]["allowed_groups"] == ["devops"]
    assert items[0]["gateways"] == [] and items[0]["has_devices"] is False
    r = await admin_client.get(f"/network/{b['id']}")
    assert r.status_code == 200
    assert r.json()["name"] == "b-site" and r.json()["allowed_groups"] == []
    assert (await admin_client.get("/network/count")).json() == {"count": 2}
    assert (await admin_client.get("/network/display")).json() == [
        {"id": b["id"], "display": "b-site"},
        {"id": a["id"], "display": "a-site"},
    ]


async def test_unknown_id(admin_client):
    r = await admin_client.get("/network/999")
    assert r.status_code == 404 and r.text == "null"
    r = await admin_client.put("/network/999", json=location_body())
    assert r.status_code == 404 and r.json() == {"msg": "Network 999 not found"}
    r = await admin_client.delete("/network/999")
    assert r.status_code == 404 and r.json() == {"msg": "Network 999 not found"}


async def test_missing_user_agent(admin_client):
    r = await admin_client.post("/network", json=location_body(), headers={"User-Agent": ""})
    assert r.status_code == 400
    assert r.json() == {"msg": "Missing UserAgent header"}


# -- validation ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (
            {"location_mfa_mode": "internal", "peer_disconnect_threshold": 60},
            "peer_disconnect_threshold must be at least 120",
        ),
        ({"location_mfa_mode": "external"}, "External OpenID provider is not configured"),
        ({"allow_all_groups": False, "allowed_groups": []}, "At least one group"),
        ({"address": "not-an-ip"}, "not-an-ip is not a valid address"),
        ({"address": "10.0.0.1/33"}, "invalid prefix"),
        ({"address": "10.0.0.1/0"}, "invalid prefix"),
        ({"address": ""}, "at least one valid network address"),
        ({"address": "10.0.0.0/24"}, "network address"),
        ({"address": "10.0.0.255/24"}, "broadcast address"),
        ({"address": "10.0.0.1/24,10.0.0.200/16"}, "overlaps"),
        ({"port": 0}, "port must be between 1 and 65535"),
        ({"port": 70000}, "port must be between 1 and 65535"),
        ({"mtu": 100}, "mtu must be between"),
        ({"address": "fc00::1/112", "mtu": 1000}, "mtu must be between 1280"),
        ({"keepalive_interval": -1}, "keepalive_interval must be between"),
        ({"fwmark": -5}, "fwmark must be between"),
        ({"name": " "}, "name must not be empty"),
        ({"endpoint": ""}, "endpoint must not be empty"),
    ],
)
async def test_invalid_body_is_400_and_writes_nothing(admin_client, db, overrides, fragment):
    r = await admin_client.post("/network", json=location_body(**overrides))
    assert r.status_code == 400, r.text
    assert fragment.lower() in r.json()["msg"].lower()
    assert await table_count(db, Location) == 0
    assert await table_count(db, ActivityLogEvent) == 0


async def test_wrong_shape_is_422(admin_client):
    body = location_body()
    del body["port"]
    assert (await admin_client.post("/network", json=body)).status_code == 422
    r = await admin_client.post("/network", json=location_body(location_mfa_mode="sometimes"))
    assert r.status_code == 422


async def test_overlap_with_another_location_names_both(admin_client, db):
    first = await create_location(admin_client, name="HQ", address="10.10.0.1/24")
    r = await admin_client.post(
        "/network", json=location_body(name="Branch", address="10.10.0.129/25")
    )
    assert r.status_code == 400
    msg = r.json()["msg"]
    assert "10.10.0.129/25" in msg and "10.10.0.1/24" in msg and "HQ" in msg
    assert await table_count(db, Location) == 1
    # Changing a location onto its own subnet is not an overlap.
    r = await admin_client.put(
        f"/network/{first['id']}", json=location_body(name="HQ", address="10.10.0.1/25")
    )
    assert r.status_code == 200


async def test_put_with_mfa_forces_service_mode_off(admin_client):
    loc = await create_location(admin_client, service_location_mode="prelogon")
    assert loc["service_location_mode"] == "prelogon"
    r = await admin_client.put(
        f"/network/{loc['id']}",
        json=location_body(location_mfa_mode="internal", service_location_mode="alwayson"),
    )
    assert r.status_code == 200
    assert r.json()["location_mfa_mode"] == "internal"
    assert r.json()["service_location_mode"] == "disabled"


async def test_failed_put_changes_nothing(admin_client, db):
    loc = await create_location(admin_client)
    before = await revision(db, loc["id"])
    r = await admin_client.put(f"/network/{loc['id']}", json=location_body(name="X", port=0))
    assert r.status_code == 400
    assert (await admin_client.get(f"/network/{loc['id']}")).json()["name"] == "HQ"
    assert await revision(db, loc["id"]) == before


# -- access and allocation -----------------------------------------------------


async def test_create_addresses_allowed_devices(admin_client, db):
    await make_user(db, "jdoe")
    await create_location(admin_client, name="first", address="10.20.0.1/24")
    dev = (await add_device(admin_client, "jdoe"))["device"]
    loc = await create_location(admin_client, name="second", address="10.1.1.1/24")
    assert await device_ips(db, dev["id"], loc["id"]) == ["10.1.1.2"]
    info = (await admin_client.get(f"/network/{loc['id']}")).json()
    assert info["has_devices"] is True


async def test_group_rules_decide_access(admin_client, db):
    async with db.transaction() as s:
        s.add_all([Group(name="devops"), Group(name="sales")])
    for name in ("ops", "seller", "idle"):
        await make_user(db, name)
    async with db.transaction() as s:
        groups = {g.name: g for g in (await s.execute(select(Group))).scalars()}
        users = {
            u.username: u
            for u in (await s.execute(select(User).options(selectinload(User.groups)))).scalars()
        }
        users["ops"].groups.append(groups["devops"])
        users["seller"].groups.append(groups["sales"])
        users["idle"].groups.append(groups["devops"])
        users["idle"].is_active = False
    anywhere = await create_location(admin_client, name="anywhere", address="10.30.0.1/24")
    devices = {
        n: (await add_device(admin_client, n))["device"]["id"] for n in ("ops", "seller", "idle")
    }
    admin_dev = (await add_device(admin_client, "admin"))["device"]["id"]
    loc = await create_location(
        admin_client,
        name="ops-only",
        address="10.40.0.1/24",
        allow_all_groups=False,
        allowed_groups=["devops"],
    )
    assert await device_ips(db, devices["ops"], loc["id"]) == ["10.40.0.2"]
    assert await device_ips(db, devices["seller"], loc["id"]) == []
    assert await device_ips(db, devices["idle"], loc["id"]) == []  # inactive user
    assert await device_ips(db, admin_dev, loc["id"]) == ["10.40.0.3"]  # admin groups count
    assert await device_ips(db, devices["idle"], anywhere["id"]) == []
    assert await device_ips(db, devices["seller"], anywhere["id"]) != []

    # Switching the allowed group moves access from ops to seller in one PUT.
    r = await admin_client.put(
        f"/network/{loc['id']}",
        json=location_body(
            name="ops-only",
            address="10.40.0.1/24",
            allow_all_groups=False,
            allowed_groups=["sales"],
        ),
    )
    assert r.status_code == 200
    assert await device_ips(db, devices["ops"], loc["id"]) == []
    assert await device_ips(db, devices["seller"], loc["id"]) == ["10.40.0.2"]
    assert await device_ips(db, admin_dev, loc["id"]) == ["10.40.0.3"]


async def test_address_change_readdresses_devices(admin_client, db):
    await make_user(db, "jdoe")
    loc = await create_location(admin_client, address="10.1.1.1/24")
    first = (await add_device(admin_client, "jdoe", "one"))["device"]["id"]
    second = (await add_device(admin_client, "jdoe", "two"))["device"]["id"]
    assert await device_ips(db, first, loc["id"]) == ["10.1.1.2"]
    assert await device_ips(db, second, loc["id"]) == ["10.1.1.3"]
    rev = await revision(db, loc["id"])

    r = await admin_client.put(f"/network/{loc['id']}", json=location_body(address="10.50.0.1/16"))
    assert r.status_code == 200
    assert await device_ips(db, first, loc["id"]) == ["10.50.0.2"]
    assert await device_ips(db, second, loc["id"]) == ["10.50.0.3"]
    assert await revision(db, loc["id"]) > rev


async def test_dual_stack_keeps_fitting_ipv4(admin_client, db):
    """The spec example: 10.1.1.1/24 -> 10.1.1.1/24,fc00::1/112 keeps 10.1.1.2."""
    await make_user(db, "jdoe")
    loc = await create_location(admin_client, address="10.1.1.1/24")
    dev = (await add_device(admin_client, "jdoe"))["device"]["id"]
    r = await admin_client.put(
        f"/network/{loc['id']}", json=location_body(address="10.1.1.1/24,fc00::1/112")
    )
    assert r.status_code == 200
    assert r.json()["address"] == ["10.1.1.1/24", "fc00::1/112"]
    assert await device_ips(db, dev, loc["id"]) == ["10.1.1.2", "fc00::2"]
    # Gateway moves onto the device's address: the device is moved, the rest kept.
    r = await admin_client.put(
        f"/network/{loc['id']}", json=location_body(address="10.1.1.2/24,fc00::1/112")
    )
    assert r.status_code == 200
    assert await device_ips(db, dev, loc["id"]) == ["10.1.1.1", "fc00::2"]


async def test_capacity_check_on_modify(admin_client, db):
    await make_user(db, "jdoe")
    loc = await create_location(admin_client, address="10.1.1.1/24")
    for i in range(2):
        await add_device(admin_client, "jdoe", f"d{i}")
    # A /30 has 4 addresses: 2 devices + 3 reserved do not fit.
    r = await admin_client.put(f"/network/{loc['id']}", json=location_body(address="10.9.9.1/30"))
    assert r.status_code == 400
    assert r.json() == {"msg": "Network address space cannot fit all devices"}
    assert (await admin_client.get(f"/network/{loc['id']}")).json()["address"] == ["10.1.1.1/24"]


async def test_network_full_on_create(admin_client, db):
    await make_user(db, "jdoe")
    await create_location(admin_client, name="big", address="10.1.1.1/24")
    for i in range(2):
        await add_device(admin_client, "jdoe", f"d{i}")
    # 10.2.2.1/30: hosts .1 (gateway) and .2 only.
    r = await admin_client.post("/network", json=location_body(name="tiny", address="10.2.2.1/30"))
    assert r.status_code == 400
    body = r.json()
    assert body["code"] == "network_full"
    assert body["msg"].startswith("Network ") and " is full" in body["msg"]
    assert await table_count(db, Location) == 1


async def test_delete_removes_network_devices_keeps_user_devices(admin_client, db):
    await make_user(db, "jdoe")
    loc = await create_location(admin_client)
    user_dev = (await add_device(admin_client, "jdoe"))["device"]["id"]
    r = await admin_client.post(
        "/device/network",
        json={
            "name": "router",
            "location_id": loc["id"],
            "assigned_ips": ["10.10.0.50"],
            "wireguard_pubkey": generate_keypair().public,
        },
    )
    assert r.status_code == 201, r.text
    net_dev = r.json()["device"]["id"]
    r = await admin_client.delete(f"/network/{loc['id']}")
    assert r.status_code == 200 and r.json() == {}
    assert (await admin_client.get(f"/device/{user_dev}")).status_code == 200
    assert (await admin_client.get(f"/device/{net_dev}")).status_code == 404
    assert await table_count(db, DeviceLocation) == 0
    async with db.session() as s:
        events = (await s.execute(select(ActivityLogEvent.event))).scalars().all()
    assert "vpn_location_removed" in events


async def test_openapi_describes_location_schemas(client):
    doc = (await client.get("/openapi.json")).json()
    post = doc["paths"]["/api/v1/network"]["post"]
    assert "LocationWrite" in str(post["requestBody"])
    assert "LocationOut" in str(post["responses"]["201"])
    assert "LocationInfo" in str(doc["paths"]["/api/v1/network"]["get"]["responses"]["200"])


async def test_each_location_checks_its_own_groups(admin_client, db):
    """A group allowed somewhere else grants nothing here."""
    async with db.transaction() as s:
        s.add_all([Group(name="red"), Group(name="blue")])
    for name in ("ruby", "navy"):
        await make_user(db, name)
    async with db.transaction() as s:
        groups = {g.name: g for g in (await s.execute(select(Group))).scalars()}
        users = {
            u.username: u
            for u in (await s.execute(select(User).options(selectinload(User.groups)))).scalars()
        }
        users["ruby"].groups.append(groups["red"])
        users["navy"].groups.append(groups["blue"])
    await create_location(admin_client, name="all", address="10.60.0.1/24")
    ruby = (await add_device(admin_client, "ruby"))["device"]["id"]
    navy = (await add_device(admin_client, "navy"))["device"]["id"]
    red = await create_location(
        admin_client, name="red", address="10.61.0.1/24", allow_all_groups=False,
        allowed_groups=["red"],
    )  # fmt: skip
    blue = await create_location(
        admin_client, name="blue", address="10.62.0.1/24", allow_all_groups=False,
        allowed_groups=["blue"],
    )  # fmt: skip
    assert await device_ips(db, ruby, red["id"]) == ["10.61.0.2"]
    assert await device_ips(db, navy, red["id"]) == []
    assert await device_ips(db, navy, blue["id"]) == ["10.62.0.2"]
    assert await device_ips(db, ruby, blue["id"]) == []
    # A device added later follows the same rule.
    later = (await add_device(admin_client, "navy", "phone"))["configs"]
    assert sorted(c["network_name"] for c in later) == ["all", "blue"]


async def test_device_admitted_follows_allowed_pairs(admin_client, db):
    """VPN-client MFA checks admission with the SQL function `device_admitted`; it must
    say yes for exactly the device-location pairs `allowed_pairs` admits and the
    device holds an address in."""
    from sqlalchemy import text

    from defguard.core.locations.access import allowed_pairs

    for name in ("anna", "bob", "carl", "dave"):
        await make_user(db, name)
    await make_user(db, "root", admin=True)
    for group, members in (("devs", ["anna", "dave"]), ("ops", ["bob"])):
        r = await admin_client.post(
            "/group", json={"name": group, "is_admin": False, "members": members}
        )
        assert r.status_code == 201, r.text
    await create_location(admin_client, name="open", address="10.10.0.1/24")
    await create_location(
        admin_client,
        name="devs-only",
        address="10.20.0.1/24",
        allow_all_groups=False,
        allowed_groups=["devs"],
    )
    await create_location(
        admin_client,
        name="ops-only",
        address="10.30.0.1/24",
        allow_all_groups=False,
        allowed_groups=["ops"],
    )
    for name in ("anna", "bob", "carl", "dave", "root"):
        await add_device(admin_client, name)
    # Addresses the rules no longer back: dave is deactivated behind the API's
    # back, and carl gets an address in a location his groups do not open.
    async with db.transaction() as s:
        await s.execute(text("""UPDATE "user" SET is_active = false WHERE username = 'dave'"""))
        await s.execute(
            text(
                """
                INSERT INTO wireguard_network_device (device_id, wireguard_network_id, wireguard_ips)
                SELECT d.id, l.id, ARRAY['10.20.0.99'::inet]
                FROM device d JOIN "user" u ON u.id = d.user_id, wireguard_network l
                WHERE u.username = 'carl' AND l.name = 'devs-only'
                """
            )
        )

    async with db.session() as s:
        allowed = {tuple(row) for row in (await s.execute(select(allowed_pairs()))).all()}
        rows = (
            await s.execute(
                text(
                    """
                    SELECT l.id, d.user_id,
                           device_admitted(d.id, d.user_id, l.id, false),
                           EXISTS (SELECT 1 FROM wireguard_network_device w
                                   WHERE w.device_id = d.id AND w.wireguard_network_id = l.id)
                    FROM device d CROSS JOIN wireguard_network l
                    """
                )
            )
        ).all()
    assert len(rows) == 15
    assert any(admitted for *_, admitted, _ in rows)
    assert sum(addressed and not admitted for *_, admitted, addressed in rows) >= 2
    for location_id, user_id, admitted, addressed in rows:
        assert admitted == (addressed and (location_id, user_id) in allowed), (
            location_id,
            user_id,
        )
