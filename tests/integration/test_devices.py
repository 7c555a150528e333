"""`/device`: user and network devices, keys, names, configs and addresses."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import func, select

from defguard.core.activity.models import ActivityLogEvent
from defguard.core.context import RequestContext
from defguard.core.devices.info import user_devices
from defguard.core.devices.models import Device, DeviceLocation
from defguard.core.devices.schemas import UserDevice
from defguard.core.devices.service import NewUserDevice, add_user_devices
from defguard.core.users.models import User
from defguard.db.engine import Database
from defguard.wireguard.keys import generate_keypair
from tests.conftest import make_user
from tests.integration.test_locations import (
    add_device,
    create_location,
    device_ips,
    location_body,
    revision,
    table_count,
)


def new_key() -> str:
    return generate_keypair().public


async def events(db: Database) -> list[str]:
    async with db.session() as s:
        return list(
            (
                await s.execute(select(ActivityLogEvent.event).order_by(ActivityLogEvent.id))
            ).scalars()
        )


async def set_active(db: Database, username: str, active: bool) -> None:
    async with db.transaction() as s:
        user = (await s.execute(select(User).where(User.username == username))).scalar_one()
        user.is_active = active


async def add_network_device(
    client: httpx.AsyncClient, location_id: int, **overrides: Any
) -> httpx.Response:
    body = {
        "name": "router",
        "description": "branch router",
        "location_id": location_id,
        "assigned_ips": ["10.10.0.50"],
        "wireguard_pubkey": new_key(),
    }
    body.update(overrides)
    return await client.post("/device/network", json=body)


# -- roles ---------------------------------------------------------------------


async def test_anonymous_gets_401(client):
    for method, path in [
        ("GET", "/device"),
        ("GET", "/device/1"),
        ("PUT", "/device/1"),
        ("DELETE", "/device/1"),
        ("POST", "/device/jdoe"),
        ("GET", "/device/user/jdoe"),
        ("GET", "/device/1/config"),
        ("GET", "/network/1/device/1/config"),
        ("GET", "/device/network"),
        ("POST", "/device/network"),
        ("GET", "/device/network/1"),
        ("GET", "/device/network/ip/1"),
    ]:
        r = await client.request(method, path, json={} if method in ("POST", "PUT") else None)
        assert r.status_code == 401, (method, path)


async def test_admin_only_endpoints_reject_users(user_client):
    for method, path, body in [
        ("GET", "/device", None),
        ("GET", "/device/network", None),
        ("POST", "/device/network", {}),
        ("GET", "/device/network/1", None),
        ("PUT", "/device/network/1", {}),
        ("DELETE", "/device/network/1", None),
        ("GET", "/device/network/1/config", None),
        ("GET", "/device/network/ip/1", None),
        ("POST", "/device/network/ip/1", {"ips": []}),
    ]:
        r = await user_client.request(method, path, json=body)
        assert r.status_code == 403, (method, path)
        assert r.json() == {"msg": "access denied"}


# -- adding --------------------------------------------------------------------


async def test_user_adds_own_device_and_gets_config(user_client, admin_client, db):
    loc = await create_location(admin_client, address="10.10.0.1/24")
    key = new_key()
    r = await user_client.post("/device/jdoe", json={"name": "laptop", "wireguard_pubkey": key})
    assert r.status_code == 201, r.text
    body = r.json()
    device = body["device"]
    assert list(device) == [
        "id", "name", "wireguard_pubkey", "user_id", "created", "device_type", "description",
        "configured",
    ]  # fmt: skip
    assert device["name"] == "laptop" and device["wireguard_pubkey"] == key
    assert device["device_type"] == "user" and device["configured"] is True
    assert device["description"] is None
    assert "+" not in device["created"] and "Z" not in device["created"]
    (config,) = body["configs"]
    assert config == {
        "network_id": loc["id"],
        "network_name": "HQ",
        "config": (
            "[Interface]\nPrivateKey = YOUR_PRIVATE_KEY\nAddress = 10.10.0.2\nDNS = 10.10.0.53\n\n"
            f"[Peer]\nPublicKey = {loc['pubkey']}\nAllowedIPs = 10.10.0.0/24,192.168.50.0/24\n"
            "Endpoint = vpn.example.com:51820\nPersistentKeepalive = 25"
        ),
        "address": ["10.10.0.2"],
        "endpoint": "vpn.example.com:51820",
        "allowed_ips": ["10.10.0.0/24", "192.168.50.0/24"],
        "pubkey": loc["pubkey"],
        "dns": "10.10.0.53",
        "keepalive_interval": 25,
        "location_mfa_mode": "disabled",
        "service_location_mode": "disabled",
    }
    assert await events(db) == ["vpn_location_added", "device_added"]
    assert await revision(db, loc["id"]) == 1


async def test_first_device_gets_second_address(admin_client, db):
    await make_user(db, "jdoe")
    loc = await create_location(admin_client, address="10.1.1.1/24")
    body = await add_device(admin_client, "jdoe")
    assert body["configs"][0]["address"] == ["10.1.1.2"]
    assert await device_ips(db, body["device"]["id"], loc["id"]) == ["10.1.1.2"]


async def test_device_added_to_every_allowing_location(admin_client, db):
    await make_user(db, "jdoe")
    a = await create_location(admin_client, name="A", address="10.1.1.1/24")
    b = await create_location(admin_client, name="B", address="10.2.2.1/24,fd00::1/64")
    await create_location(
        admin_client,
        name="C",
        address="10.3.3.1/24",
        allow_all_groups=False,
        allowed_groups=["admin"],
    )
    body = await add_device(admin_client, "jdoe")
    assert [(c["network_name"], c["address"]) for c in body["configs"]] == [
        ("A", ["10.1.1.2"]),
        ("B", ["10.2.2.2", "fd00::2"]),
    ]
    assert await device_ips(db, body["device"]["id"], a["id"]) == ["10.1.1.2"]
    assert await device_ips(db, body["device"]["id"], b["id"]) == ["10.2.2.2", "fd00::2"]
    assert "Address = 10.2.2.2,fd00::2" in body["configs"][1]["config"]


async def test_other_user_forbidden_and_unknown_user_404(user_client, admin_client, db):
    await create_location(admin_client)
    r = await user_client.post("/device/admin", json={"name": "x", "wireguard_pubkey": new_key()})
    assert r.status_code == 403 and r.json() == {"msg": "requires privileged access"}
    r = await admin_client.post("/device/ghost", json={"name": "x", "wireguard_pubkey": new_key()})
    assert r.status_code == 404 and r.json() == {"msg": "user ghost not found"}


async def test_disabled_user_cannot_add_for_self(user_client, admin_client, db):
    await create_location(admin_client)
    await set_active(db, "jdoe", False)
    r = await user_client.post("/device/jdoe", json={"name": "x", "wireguard_pubkey": new_key()})
    assert r.status_code == 403 and r.json() == {"msg": "User is disabled"}
    # An admin may, but a disabled user's device gets no address anywhere.
    r = await admin_client.post("/device/jdoe", json={"name": "x", "wireguard_pubkey": new_key()})
    assert r.status_code == 201 and r.json()["configs"] == []


async def test_no_location_is_400(admin_client, db):
    r = await admin_client.post("/device/admin", json={"name": "x", "wireguard_pubkey": new_key()})
    assert r.status_code == 400
    assert "location" in r.json()["msg"]
    assert await table_count(db, Device) == 0


async def test_invalid_pubkey_is_400(admin_client, db):
    await create_location(admin_client)
    for key in ["not-a-key", "AAAA", new_key()[:-2] + "=="[:2], "x" * 44, ""]:
        r = await admin_client.post("/device/admin", json={"name": "x", "wireguard_pubkey": key})
        assert r.status_code == 400, key
        assert r.json() == {"msg": f"{key} is not a valid pubkey"}
    assert await table_count(db, Device) == 0


async def test_duplicate_pubkey_is_409_and_writes_nothing(admin_client, db):
    await make_user(db, "jdoe")
    await create_location(admin_client)
    key = new_key()
    r = await admin_client.post("/device/admin", json={"name": "a", "wireguard_pubkey": key})
    assert r.status_code == 201
    before = await events(db)
    r = await admin_client.post("/device/jdoe", json={"name": "b", "wireguard_pubkey": key})
    assert r.status_code == 409
    assert r.json() == {"msg": f"Failed to add device b, identical pubkey ({key}) already exists"}
    assert await table_count(db, Device) == 1
    assert await table_count(db, DeviceLocation) == 1
    assert await events(db) == before


async def test_pubkey_of_a_location_is_400(admin_client, db):
    loc = await create_location(admin_client)
    r = await admin_client.post(
        "/device/admin", json={"name": "x", "wireguard_pubkey": loc["pubkey"]}
    )
    assert r.status_code == 400
    assert r.json() == {"msg": f"Device pubkey {loc['pubkey']} is the same as gateway pubkey"}


async def test_duplicate_name_is_409(admin_client, db):
    await create_location(admin_client)
    await add_device(admin_client, "admin", "laptop")
    r = await admin_client.post(
        "/device/admin", json={"name": "laptop", "wireguard_pubkey": new_key()}
    )
    assert r.status_code == 409 and "laptop" in r.json()["msg"]
    assert await table_count(db, Device) == 1


async def test_network_full_writes_nothing(admin_client, db):
    await create_location(admin_client, address="10.2.2.1/30")  # one host left: .2
    await add_device(admin_client, "admin", "one")
    r = await admin_client.post(
        "/device/admin", json={"name": "two", "wireguard_pubkey": new_key()}
    )
    assert r.status_code == 400
    assert r.json()["code"] == "network_full"
    assert r.json()["msg"].startswith("Network 10.2.2.0/30 is full")
    assert await table_count(db, Device) == 1


async def test_bulk_add_service(admin_client, db):
    loc = await create_location(admin_client, address="10.7.0.1/16")
    for i in range(5):
        await make_user(db, f"bulk{i}", password=None)
    ctx = RequestContext(ip="127.0.0.1", user_agent="pytest")
    async with db.transaction() as s:
        users = list((await s.execute(select(User).order_by(User.id))).scalars())
        admin = next(u for u in users if u.username == "admin")
        specs = [NewUserDevice(u.id, "phone", new_key()) for u in users if u.username != "admin"]
        devices = await add_user_devices(s, specs, actor=admin, ctx=ctx)
        assert [d.wireguard_pubkey for d in devices] == [s.wireguard_pubkey for s in specs]
    for index, device in enumerate(devices):
        assert await device_ips(db, device.id, loc["id"]) == [f"10.7.0.{index + 2}"]
    assert await revision(db, loc["id"]) == 1
    async with db.session() as s:
        added = (
            await s.execute(select(func.count()).where(ActivityLogEvent.event == "device_added"))
        ).scalar_one()
    assert added == 5


# -- reading -------------------------------------------------------------------


async def test_get_device_admin_or_owner(user_client, admin_client, db):
    await create_location(admin_client)
    mine = (await add_device(user_client, "jdoe"))["device"]
    theirs = (await add_device(admin_client, "admin", "desktop"))["device"]
    assert (await user_client.get(f"/device/{mine['id']}")).json() == mine
    assert (await admin_client.get(f"/device/{mine['id']}")).json() == mine
    r = await user_client.get(f"/device/{theirs['id']}")
    assert r.status_code == 404 and r.json() == {"msg": f"device id {theirs['id']} not found"}
    r = await admin_client.get("/device/9999")
    assert r.status_code == 404 and r.json() == {"msg": "device id 9999 not found"}


async def test_list_devices(user_client, admin_client, db):
    loc = await create_location(admin_client)
    mine = (await add_device(user_client, "jdoe"))["device"]
    theirs = (await add_device(admin_client, "admin", "desktop"))["device"]
    net = (await add_network_device(admin_client, loc["id"])).json()["device"]
    all_ids = [d["id"] for d in (await admin_client.get("/device")).json()]
    assert all_ids == [mine["id"], theirs["id"], net["id"]]
    assert (await user_client.get("/device/user/jdoe")).json() == [mine]
    r = await user_client.get("/device/user/admin")
    assert r.status_code == 403 and r.json() == {"msg": "Admin access required"}
    assert (await admin_client.get("/device/user/jdoe")).json() == [mine]
    assert (await admin_client.get("/device/user/ghost")).json() == []


async def test_config_endpoints(user_client, admin_client, db):
    plain = await create_location(admin_client, name="plain", address="10.1.1.1/24")
    mfa = await create_location(
        admin_client, name="mfa", address="10.2.2.1/24", location_mfa_mode="internal"
    )
    device = (await add_device(user_client, "jdoe"))["device"]
    r = await user_client.get(f"/device/{device['id']}/config")
    assert r.status_code == 200
    (entry,) = r.json()
    assert set(entry) == {"network_id", "network_name", "config", "location_mfa_mode"}
    assert entry["network_id"] == plain["id"] and "Address = 10.1.1.2" in entry["config"]

    r = await user_client.get(f"/network/{mfa['id']}/device/{device['id']}/config")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert r.text.startswith("[Interface]\nPrivateKey = YOUR_PRIVATE_KEY\nAddress = 10.2.2.2\n")
    assert not r.text.endswith("\n")

    other = (await add_device(admin_client, "admin", "desktop"))["device"]
    r = await user_client.get(f"/network/{plain['id']}/device/{other['id']}/config")
    assert r.status_code == 404

    # A location that does not allow the device's owner has no address for it.
    only_admins = await create_location(
        admin_client,
        name="admins",
        address="10.3.3.1/24",
        allow_all_groups=False,
        allowed_groups=["admin"],
    )
    r = await admin_client.get(f"/network/{only_admins['id']}/device/{device['id']}/config")
    assert r.status_code == 404
    assert r.json() == {"msg": f"No IP address found for device: laptop({device['id']})"}


async def test_config_without_dns_and_allowed_ips(admin_client, db):
    loc = await create_location(admin_client, dns=None, allowed_ips="")
    device = (await add_device(admin_client, "admin"))["device"]
    r = await admin_client.get(f"/network/{loc['id']}/device/{device['id']}/config")
    assert r.text == (
        "[Interface]\nPrivateKey = YOUR_PRIVATE_KEY\nAddress = 10.10.0.2\n\n\n"
        f"[Peer]\nPublicKey = {loc['pubkey']}\n"
        "Endpoint = vpn.example.com:51820\nPersistentKeepalive = 25"
    )


async def test_user_devices_info(admin_client, db):
    await make_user(db, "jdoe")
    loc = await create_location(admin_client, address="10.1.1.1/24")
    device = (await add_device(admin_client, "jdoe"))["device"]
    await add_network_device(admin_client, loc["id"], assigned_ips=["10.1.1.77"])
    async with db.session() as s:
        jdoe = (await s.execute(select(User).where(User.username == "jdoe"))).scalar_one()
        infos = await user_devices(s, [jdoe.id, 9999])
    assert infos[9999] == []
    (info,) = infos[jdoe.id]
    assert UserDevice.model_validate(info).model_dump(mode="json") == info
    assert info == {
        **device,
        "networks": [
            {
                "network_id": loc["id"],
                "network_name": "HQ",
                "network_gateway_ip": "vpn.example.com",
                "device_wireguard_ips": ["10.1.1.2"],
                "last_connected_ip": None,
                "last_connected_at": None,
                "is_active": False,
                "location_mfa_mode": "disabled",
            }
        ],
    }


# -- changing and removing -------------------------------------------------------


async def test_modify_device(user_client, admin_client, db):
    loc = await create_location(admin_client)
    device = (await add_device(user_client, "jdoe"))["device"]
    rev = await revision(db, loc["id"])
    r = await user_client.put(
        f"/device/{device['id']}",
        json={
            "name": "renamed",
            "wireguard_pubkey": device["wireguard_pubkey"],
            "description": "d",
        },
    )
    assert r.status_code == 200
    assert r.json()["name"] == "renamed" and r.json()["description"] == "d"
    assert await revision(db, loc["id"]) == rev

    key = new_key()
    r = await user_client.put(
        f"/device/{device['id']}", json={"name": "renamed", "wireguard_pubkey": key}
    )
    assert r.status_code == 200 and r.json()["wireguard_pubkey"] == key
    assert await revision(db, loc["id"]) == rev + 1
    assert (await events(db))[-2:] == ["device_modified", "device_modified"]


async def test_modify_device_rejections(user_client, admin_client, db):
    loc = await create_location(admin_client)
    device = (await add_device(user_client, "jdoe"))["device"]
    other = (await add_device(user_client, "jdoe", "phone"))["device"]
    url = f"/device/{device['id']}"
    r = await user_client.put(url, json={"name": "x", "wireguard_pubkey": loc["pubkey"]})
    assert r.status_code == 400
    assert r.json() == {"msg": "device's pubkey must be different from server's pubkey"}
    r = await user_client.put(url, json={"name": "x", "wireguard_pubkey": "bad"})
    assert r.status_code == 400 and r.json() == {"msg": "bad is not a valid pubkey"}
    r = await user_client.put(
        url, json={"name": "x", "wireguard_pubkey": other["wireguard_pubkey"]}
    )
    assert r.status_code == 409
    r = await user_client.put(
        url, json={"name": "phone", "wireguard_pubkey": device["wireguard_pubkey"]}
    )
    assert r.status_code == 409
    theirs = (await add_device(admin_client, "admin", "desktop"))["device"]
    r = await user_client.put(
        f"/device/{theirs['id']}", json={"name": "x", "wireguard_pubkey": new_key()}
    )
    assert r.status_code == 404
    assert (await user_client.get(url)).json() == device


async def test_delete_device(user_client, admin_client, db):
    loc = await create_location(admin_client)
    device = (await add_device(user_client, "jdoe"))["device"]
    theirs = (await add_device(admin_client, "admin", "desktop"))["device"]
    assert (await user_client.delete(f"/device/{theirs['id']}")).status_code == 404
    rev = await revision(db, loc["id"])
    r = await user_client.delete(f"/device/{device['id']}")
    assert r.status_code == 200 and r.json() == {}
    assert (await user_client.get(f"/device/{device['id']}")).status_code == 404
    assert await device_ips(db, device["id"], loc["id"]) == []
    assert await revision(db, loc["id"]) == rev + 1
    assert (await events(db))[-1] == "device_removed"
    # Its address is free again.
    again = await add_device(user_client, "jdoe", "new")
    assert again["configs"][0]["address"] == ["10.10.0.2"]


# -- network devices -------------------------------------------------------------


async def test_network_device_lifecycle(admin_client, db):
    loc = await create_location(admin_client, address="10.10.0.1/24,fd00::1/64")
    key = new_key()
    r = await add_network_device(admin_client, loc["id"], wireguard_pubkey=key)
    assert r.status_code == 201, r.text
    body = r.json()
    info = body["device"]
    assert info["assigned_ips"] == ["10.10.0.50", "fd00::2"]
    assert info["added_by"] == "admin" and info["location"] == {"id": loc["id"], "name": "HQ"}
    assert info["split_ips"] == [
        {
            "network_part": "10.10.0.",
            "modifiable_part": "50",
            "network_prefix": "24",
            "ip": "10.10.0.50",
        },
        {
            "network_part": "fd00:0000:0000:0000:",
            "modifiable_part": "0000:0000:0000:0002",
            "network_prefix": "64",
            "ip": "fd00::2",
        },
    ]
    assert body["config"]["address"] == ["10.10.0.50", "fd00::2"]
    assert (await events(db))[-1] == "network_device_added"

    did = info["id"]
    assert (await admin_client.get(f"/device/network/{did}")).json() == info
    r = await admin_client.get(f"/device/network/{did}/config")
    assert r.status_code == 200
    (entry,) = r.json()
    assert entry["network_id"] == loc["id"] and "Address = 10.10.0.50,fd00::2" in entry["config"]

    r = await admin_client.put(
        f"/device/network/{did}",
        json={"name": "router2", "description": None, "assigned_ips": ["10.10.0.60", "fd00::2"]},
    )
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "router2" and r.json()["assigned_ips"] == ["10.10.0.60", "fd00::2"]
    assert await device_ips(db, did, loc["id"]) == ["10.10.0.60", "fd00::2"]

    page = (await admin_client.get("/device/network")).json()
    assert [d["name"] for d in page["data"]] == ["router2"]
    assert page["pagination"]["total_items"] == 1

    r = await admin_client.delete(f"/device/network/{did}")
    assert r.status_code == 200 and r.json() == {}
    assert (await admin_client.get(f"/device/network/{did}")).status_code == 404
    assert (await events(db))[-2:] == ["network_device_modified", "network_device_removed"]


async def test_network_device_ip_rules(admin_client, db):
    loc = await create_location(admin_client, address="10.10.0.1/24")
    await add_device(admin_client, "admin")  # takes 10.10.0.2
    cases = {
        "10.10.0.0": "network address",
        "10.10.0.255": "broadcast address",
        "10.10.0.1": "gateway",
        "10.10.0.2": "already assigned",
        "10.99.0.5": "not in any subnet",
        "nonsense": "invalid IP address",
    }
    for ip, fragment in cases.items():
        r = await add_network_device(admin_client, loc["id"], assigned_ips=[ip])
        assert r.status_code == 400, ip
        assert fragment in r.json()["msg"], (ip, r.json())
    r = await add_network_device(admin_client, loc["id"], assigned_ips=["10.10.0.5", "10.10.0.6"])
    assert r.status_code == 400 and "same subnet" in r.json()["msg"]
    r = await add_network_device(admin_client, 999)
    assert r.status_code == 400
    r = await add_network_device(admin_client, loc["id"], wireguard_pubkey="bad")
    assert r.status_code == 400 and r.json() == {"msg": "bad is not a valid pubkey"}
    assert await table_count(db, Device) == 1


async def test_network_device_ip_helpers(admin_client, db):
    loc = await create_location(admin_client, address="10.10.0.1/24")
    await add_device(admin_client, "admin")
    r = await admin_client.get(f"/device/network/ip/{loc['id']}")
    assert r.status_code == 200
    assert r.json() == [
        {
            "network_part": "10.10.0.",
            "modifiable_part": "3",
            "network_prefix": "24",
            "ip": "10.10.0.3",
        }
    ]
    net = (await add_network_device(admin_client, loc["id"], assigned_ips=["10.10.0.9"])).json()
    r = await admin_client.post(
        f"/device/network/ip/{loc['id']}",
        json={"ips": ["10.10.0.3", "10.10.0.2", "10.10.0.1", "10.11.0.1", "junk", "10.10.0.9"]},
    )
    assert r.json() == [
        {"available": True, "valid": True},
        {"available": False, "valid": True},
        {"available": False, "valid": True},
        {"available": False, "valid": False},
        {"available": False, "valid": False},
        {"available": False, "valid": True},
    ]
    r = await admin_client.post(
        f"/device/network/ip/{loc['id']}",
        json={"ips": ["10.10.0.9"], "device_id": net["device"]["id"]},
    )
    assert r.json() == [{"available": True, "valid": True}]
    assert (await admin_client.get("/device/network/ip/999")).status_code == 404


async def test_first_free_ip_of_full_location(admin_client, db):
    loc = await create_location(admin_client, address="10.2.2.1/30")
    await add_device(admin_client, "admin")
    r = await admin_client.get(f"/device/network/ip/{loc['id']}")
    assert r.status_code == 400 and r.json()["code"] == "network_full"


async def test_network_devices_follow_location_changes(admin_client, db):
    loc = await create_location(admin_client, address="10.10.0.1/24")
    net = (await add_network_device(admin_client, loc["id"], assigned_ips=["10.10.0.9"])).json()
    r = await admin_client.put(
        f"/network/{loc['id']}", json=location_body(address="10.10.0.1/24,fd00::1/120")
    )
    assert r.status_code == 200
    assert await device_ips(db, net["device"]["id"], loc["id"]) == ["10.10.0.9", "fd00::2"]


async def test_openapi_describes_device_schemas(client):
    doc = (await client.get("/openapi.json")).json()
    post = doc["paths"]["/api/v1/device/{username}"]["post"]
    assert "AddDevice" in str(post["requestBody"])
    assert "AddDeviceResult" in str(post["responses"]["201"])
    assert "/api/v1/device/network/ip/{location_id}" in doc["paths"]
