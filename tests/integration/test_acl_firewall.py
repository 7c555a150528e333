"""The firewall preview through the API, and which changes give locations a new revision."""

from __future__ import annotations

from ipaddress import ip_address
from typing import Any

import httpx
from sqlalchemy import update

from defguard.core.acl.loader import load_location_inputs
from defguard.core.devices.models import DeviceLocation
from defguard.core.firewall import compile_location
from defguard.db.engine import Database
from tests.acl_example import SPEC_EXAMPLE_FIREWALL
from tests.conftest import make_user
from tests.integration.test_acl_api import apply_rules, create_alias, create_rule, rule_body
from tests.integration.test_locations import add_device, create_location, revision


async def set_device_ips(db: Database, device_id: int, location_id: int, *ips: str) -> None:
    """Place a device at chosen addresses (the API allocates user devices the first free ones)."""
    async with db.transaction() as s:
        await s.execute(
            update(DeviceLocation)
            .where(
                DeviceLocation.device_id == device_id,
                DeviceLocation.wireguard_network_id == location_id,
            )
            .values(wireguard_ips=[ip_address(ip) for ip in ips])
        )


async def setup_example(client: httpx.AsyncClient, db: Database) -> dict[str, Any]:
    """The acl.md example: location 10.0.0.0/16, u1 and u2 with two devices each, rule "web"."""
    location = await create_location(
        client, name="office", address="10.0.0.1/16", acl_enabled=True, acl_default_allow=False
    )
    placed = {"u1": ("10.0.1.1", "10.0.1.2"), "u2": ("10.0.2.1", "10.0.2.2")}
    devices: dict[str, list[int]] = {}
    for username, ips in placed.items():
        await make_user(db, username)
        devices[username] = []
        for n, ip in enumerate(ips):
            device = await add_device(client, username, f"{username}-dev{n}")
            await set_device_ips(db, device["device"]["id"], location["id"], ip)
            devices[username].append(device["device"]["id"])
    alias = await create_alias(client, name="dns-host", addresses="10.0.5.5")
    rule = await create_rule(
        client,
        name="web",
        allow_all_users=True,
        addresses="192.168.1.0/24",
        ports="443, 80",
        protocols=[6],
        aliases=[alias["id"]],
    )
    return {"location": location, "rule": rule, "alias": alias, "devices": devices}


async def firewall(client: httpx.AsyncClient, location_id: int) -> Any:
    r = await client.get(f"/network/{location_id}/firewall")
    assert r.status_code == 200, r.text
    return r.json()


async def test_example_end_to_end(admin_client, db):
    setup = await setup_example(admin_client, db)
    location_id = setup["location"]["id"]
    assert setup["rule"]["id"] == 1
    # Pending rules do not reach gateways.
    assert await firewall(admin_client, location_id) == {"default_policy": "deny", "rules": []}
    before = await revision(db, location_id)
    await apply_rules(admin_client, setup["rule"]["id"])
    assert await revision(db, location_id) == before + 1
    assert await firewall(admin_client, location_id) == SPEC_EXAMPLE_FIREWALL


async def test_preview_is_null_without_acl_and_404_for_unknown_location(admin_client):
    location = await create_location(admin_client, acl_enabled=False)
    r = await admin_client.get(f"/network/{location['id']}/firewall")
    assert r.status_code == 200
    assert r.json() is None
    r = await admin_client.get("/network/999/firewall")
    assert r.status_code == 404


async def test_default_allow_policy(admin_client):
    location = await create_location(admin_client, acl_enabled=True, acl_default_allow=True)
    assert await firewall(admin_client, location["id"]) == {"default_policy": "allow", "rules": []}


async def test_disabled_and_expired_rules_do_not_reach_gateways(admin_client, db):
    location = await create_location(admin_client, acl_enabled=True)
    off = await create_rule(admin_client, name="off", enabled=False)
    old = await create_rule(admin_client, name="old", expires="2000-01-01T00:00:00")
    await apply_rules(admin_client, off["id"], old["id"])
    assert (await firewall(admin_client, location["id"]))["rules"] == []


async def test_rule_for_other_location_only(admin_client, db):
    a = await create_location(admin_client, name="A", address="10.1.0.1/24", acl_enabled=True)
    b = await create_location(admin_client, name="B", address="10.2.0.1/24", acl_enabled=True)
    rule = await create_rule(admin_client, all_locations=False, locations=[a["id"]])
    await apply_rules(admin_client, rule["id"])
    assert len((await firewall(admin_client, a["id"]))["rules"]) == 1  # DENY only: no sources
    assert (await firewall(admin_client, b["id"]))["rules"] == []


async def test_destinations_and_ipv6(admin_client, db):
    location = await create_location(
        admin_client, address="10.0.0.1/16, fd00::1/64", acl_enabled=True
    )
    await make_user(db, "u1")
    device = await add_device(admin_client, "u1")
    await set_device_ips(db, device["device"]["id"], location["id"], "10.0.1.1", "fd00::11")
    dest = await create_alias(
        admin_client, "destination", name="pg", addresses="", any_address=True
    )
    rule = await create_rule(
        admin_client,
        name="db",
        use_manual_destination_settings=False,
        addresses="",
        ports="",
        protocols=[],
        destinations=[dest["id"]],
    )
    await apply_rules(admin_client, rule["id"])
    rules = (await firewall(admin_client, location["id"]))["rules"]
    label = f"RULE {rule['id']} - db, DESTINATION {dest['id']} - pg"
    assert [(r["verdict"], r["ip_version"], r["sources"], r["comment"]) for r in rules] == [
        ("allow", 4, ["10.0.1.1"], f"{label} ALLOW"),
        ("allow", 6, ["fd00::11"], f"{label} ALLOW"),
        ("deny", 4, [], f"{label} DENY"),
        ("deny", 6, [], f"{label} DENY"),
    ]
    assert all(r["ports"] == [5432] for r in rules if r["verdict"] == "allow")


# -- revisions ---------------------------------------------------------------------------


async def test_apply_bumps_locations_removed_by_a_modification(admin_client, db):
    a = await create_location(admin_client, name="A", address="10.1.0.1/24", acl_enabled=True)
    b = await create_location(admin_client, name="B", address="10.2.0.1/24", acl_enabled=True)
    off = await create_location(admin_client, name="C", address="10.3.0.1/24", acl_enabled=False)
    rule = await create_rule(admin_client, all_locations=False, locations=[a["id"], b["id"]])
    await apply_rules(admin_client, rule["id"])
    revs = {loc["id"]: await revision(db, loc["id"]) for loc in (a, b, off)}
    child = (
        await admin_client.put(
            f"/acl/rule/{rule['id']}", json=rule_body(all_locations=False, locations=[a["id"]])
        )
    ).json()
    # Staging changes nothing for gateways.
    assert {loc["id"]: await revision(db, loc["id"]) for loc in (a, b, off)} == revs
    await apply_rules(admin_client, child["id"])
    assert await revision(db, a["id"]) == revs[a["id"]] + 1
    assert await revision(db, b["id"]) == revs[b["id"]] + 1
    assert await revision(db, off["id"]) == revs[off["id"]]
    assert (await firewall(admin_client, b["id"]))["rules"] == []


async def test_alias_apply_bumps_the_locations_of_linking_rules(admin_client, db):
    setup = await setup_example(admin_client, db)
    location_id = setup["location"]["id"]
    await apply_rules(admin_client, setup["rule"]["id"])
    before = await revision(db, location_id)
    alias_id = setup["alias"]["id"]
    child = (
        await admin_client.put(
            f"/acl/alias/{alias_id}", json={"name": "dns-host", "addresses": "10.0.5.6"}
        )
    ).json()
    assert await revision(db, location_id) == before
    r = await admin_client.put("/acl/alias/apply", json={"aliases": [child["id"]]})
    assert r.status_code == 200
    assert await revision(db, location_id) == before + 1
    rules = (await firewall(admin_client, location_id))["rules"]
    assert rules[0]["destinations"] == ["10.0.5.6", "192.168.1.0/24"]


async def test_group_membership_change_bumps_and_changes_sources(admin_client, db):
    location = await create_location(
        admin_client, name="office", address="10.0.0.1/16", acl_enabled=True
    )
    await make_user(db, "u1")
    device = await add_device(admin_client, "u1")
    await set_device_ips(db, device["device"]["id"], location["id"], "10.0.1.1")
    r = await admin_client.post("/group", json={"name": "devs", "members": [], "is_admin": False})
    assert r.status_code == 201, r.text
    group_id = (await admin_client.get("/group-info")).json()[-1]["id"]
    rule = await create_rule(admin_client, allow_all_users=False, allowed_groups=[group_id])
    await apply_rules(admin_client, rule["id"])
    assert len((await firewall(admin_client, location["id"]))["rules"]) == 1  # DENY only

    before = await revision(db, location["id"])
    r = await admin_client.post(f"/group/{group_id}", json={"username": "u1"})
    assert r.status_code == 200, r.text
    assert await revision(db, location["id"]) == before + 1
    rules = (await firewall(admin_client, location["id"]))["rules"]
    assert rules[0]["verdict"] == "allow"
    assert rules[0]["sources"] == ["10.0.1.1"]

    before = await revision(db, location["id"])
    r = await admin_client.delete(f"/group/{group_id}/user/u1")
    assert r.status_code == 200
    assert await revision(db, location["id"]) == before + 1
    assert len((await firewall(admin_client, location["id"]))["rules"]) == 1


async def test_user_group_edit_bumps(admin_client, db):
    location = await create_location(admin_client, acl_enabled=True)
    await make_user(db, "u1")
    await add_device(admin_client, "u1")
    r = await admin_client.post("/group", json={"name": "devs", "members": [], "is_admin": False})
    assert r.status_code == 201
    before = await revision(db, location["id"])
    user = (await admin_client.get("/user/u1")).json()["user"]
    user["groups"] = ["devs"]
    r = await admin_client.put("/user/u1", json=user)
    assert r.status_code == 200, r.text
    assert await revision(db, location["id"]) == before + 1


# -- scale -------------------------------------------------------------------------------


async def test_loader_scales(db):
    """20,000 devices and 1,000 rules load completely (timings: bench/bench_acl_database.py)."""
    import psycopg

    from defguard.core.jobs import libpq_uri

    with psycopg.connect(libpq_uri(db.url)) as c:
        c.execute(
            """INSERT INTO wireguard_network (name, address, port, pubkey, prvkey, endpoint,
               allowed_ips, acl_enabled) VALUES ('big', '{10.0.0.1/16}', 51820, 'k', 'k', 'e',
               '{}', true)"""
        )
        c.execute(
            """INSERT INTO "user" (username, first_name, last_name, email)
               SELECT 'u' || i, 'U', 'T', 'u' || i || '@x' FROM generate_series(1, 5000) i"""
        )
        c.execute("""INSERT INTO "group" (name) SELECT 'g' || i FROM generate_series(1, 50) i""")
        c.execute(
            """INSERT INTO group_user (group_id, user_id)
               SELECT g.id, u.id FROM "user" u JOIN "group" g ON g.name = 'g' || (u.id % 50 + 1)
               WHERE u.username LIKE 'u%'"""
        )
        c.execute(
            """INSERT INTO device (name, wireguard_pubkey, user_id, created)
               SELECT 'd' || i, 'key' || i, u.id, now()
               FROM "user" u, generate_series(1, 4) i WHERE u.username LIKE 'u%'"""
        )
        c.execute(
            """INSERT INTO wireguard_network_device (device_id, wireguard_network_id, wireguard_ips)
               SELECT d.id, 1, ARRAY[('10.0.0.0'::inet + 2 + row_number() OVER ())::inet]
               FROM device d"""
        )
        c.execute(
            """INSERT INTO aclrule (name, allow_all_users, deny_all_users, all_locations, addresses,
               ports, protocols, state, modified_by)
               SELECT 'r' || i, i % 2 = 0, false, true, ARRAY[('192.168.0.0'::inet + i)::inet],
               '{"[80,81)"}', '{6}', 'applied', 'admin' FROM generate_series(1, 1000) i"""
        )
        c.execute(
            """INSERT INTO aclrulegroup (rule_id, group_id, allow)
               SELECT r.id, g.id, true FROM aclrule r JOIN "group" g ON g.name = 'g' || (r.id % 50 + 1)
               WHERE r.id % 2 = 1"""
        )
        c.execute(
            """INSERT INTO aclruleuser (rule_id, user_id, allow)
               SELECT r.id, u.id, false FROM aclrule r JOIN "user" u ON u.username = 'u' || r.id"""
        )
    async with db.session() as s:
        location_id = 1
        location, rules, directory = await load_location_inputs(s, location_id)
    assert len(rules) == 1000
    assert sum(len(a) for a in directory.user_addresses.values()) == 20000
    assert len(directory.group_members) == 50
    config = compile_location(location, rules, directory)
    assert config is not None
    assert len(config.rules) == 2000


async def test_network_device_sources_and_deny_wins(admin_client, db):
    from defguard.wireguard.keys import generate_keypair

    location = await create_location(
        admin_client, name="site", address="10.0.0.1/16", acl_enabled=True
    )
    ids = []
    for n, ip in enumerate(("10.0.9.1", "10.0.9.2")):
        r = await admin_client.post(
            "/device/network",
            json={
                "name": f"router{n}",
                "description": None,
                "location_id": location["id"],
                "assigned_ips": [ip],
                "wireguard_pubkey": generate_keypair().public,
            },
        )
        assert r.status_code == 201, r.text
        ids.append(r.json()["device"]["id"])
    rule = await create_rule(
        admin_client,
        allow_all_users=False,
        allow_all_network_devices=True,
        denied_network_devices=[ids[1]],
    )
    assert (rule["allow_all_network_devices"], rule["denied_network_devices"]) == (True, [ids[1]])
    await apply_rules(admin_client, rule["id"])
    rules = (await firewall(admin_client, location["id"]))["rules"]
    assert rules[0]["sources"] == ["10.0.9.1"]


async def test_deleting_a_named_group_bumps(admin_client, db):
    location = await create_location(admin_client, acl_enabled=True)
    await make_user(db, "u1")
    await add_device(admin_client, "u1")
    r = await admin_client.post(
        "/group", json={"name": "devs", "members": ["u1"], "is_admin": False}
    )
    assert r.status_code == 201
    group_id = (await admin_client.get("/group-info")).json()[-1]["id"]
    rule = await create_rule(admin_client, allow_all_users=False, allowed_groups=[group_id])
    await apply_rules(admin_client, rule["id"])
    assert (await firewall(admin_client, location["id"]))["rules"][0]["verdict"] == "allow"
    before = await revision(db, location["id"])
    assert (await admin_client.delete(f"/group/{group_id}")).status_code == 200
    assert await revision(db, location["id"]) == before + 1
    assert [r["verdict"] for r in (await firewall(admin_client, location["id"]))["rules"]] == [
        "deny"
    ]
