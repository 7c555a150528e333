"""`/acl/rule`, `/acl/alias`, `/acl/destination`: CRUD, validation, staging and apply."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import inspect, select

from defguard.core.acl.models import AclAlias, AclRule
from defguard.core.activity.models import ActivityLogEvent
from defguard.db.base import Base
from defguard.db.engine import Database
from tests.conftest import make_user
from tests.integration.test_locations import create_location


def rule_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "web",
        "all_locations": True,
        "locations": [],
        "expires": None,
        "enabled": True,
        "allow_all_users": True,
        "deny_all_users": False,
        "allow_all_groups": False,
        "deny_all_groups": False,
        "allow_all_network_devices": False,
        "deny_all_network_devices": False,
        "allowed_users": [],
        "denied_users": [],
        "allowed_groups": [],
        "denied_groups": [],
        "allowed_network_devices": [],
        "denied_network_devices": [],
        "use_manual_destination_settings": True,
        "addresses": "192.168.1.0/24",
        "ports": "80, 443",
        "protocols": [6],
        "any_address": False,
        "any_port": False,
        "any_protocol": False,
        "aliases": [],
        "destinations": [],
    }
    body.update(overrides)
    return body


async def create_rule(client: httpx.AsyncClient, **overrides: Any) -> dict[str, Any]:
    r = await client.post("/acl/rule", json=rule_body(**overrides))
    assert r.status_code == 201, r.text
    return r.json()


async def apply_rules(client: httpx.AsyncClient, *ids: int) -> None:
    r = await client.put("/acl/rule/apply", json={"rules": list(ids)})
    assert r.status_code == 200, r.text


async def create_alias(
    client: httpx.AsyncClient, kind: str = "alias", **overrides: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "dns-host",
        "addresses": "10.0.5.5",
        "ports": "",
        "protocols": [],
    }
    if kind == "destination":
        body.update(name="postgres", ports="5432", protocols=[6])
    body.update(overrides)
    r = await client.post(f"/acl/{kind}", json=body)
    assert r.status_code == 201, r.text
    return r.json()


async def get_rule(client: httpx.AsyncClient, rule_id: int) -> httpx.Response:
    return await client.get(f"/acl/rule/{rule_id}")


# -- schema ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "table",
    [
        "aclrule",
        "aclalias",
        "aclrulenetwork",
        "aclruleuser",
        "aclrulegroup",
        "aclruledevice",
        "aclrulealias",
        "aclruledestinationrange",
        "aclaliasdestinationrange",
    ],
)
async def test_models_match_the_migrated_tables(db: Database, table: str):
    model = Base.metadata.tables[table]
    async with db.engine.connect() as conn:
        columns = await conn.run_sync(lambda c: inspect(c).get_columns(table))
    actual = {c["name"]: c["nullable"] for c in columns}
    expected = {c.name: c.nullable for c in model.columns}
    assert expected == actual


# -- roles -------------------------------------------------------------------------

ENDPOINTS = [
    ("GET", "/acl/rule"),
    ("GET", "/acl/rule/count"),
    ("GET", "/acl/rule/1"),
    ("POST", "/acl/rule"),
    ("PUT", "/acl/rule/1"),
    ("DELETE", "/acl/rule/1"),
    ("PUT", "/acl/rule/apply"),
    ("GET", "/acl/alias"),
    ("GET", "/acl/alias/count"),
    ("GET", "/acl/alias/1"),
    ("POST", "/acl/alias"),
    ("PUT", "/acl/alias/1"),
    ("DELETE", "/acl/alias/1"),
    ("PUT", "/acl/alias/apply"),
    ("GET", "/acl/destination"),
    ("GET", "/acl/destination/count"),
    ("GET", "/acl/destination/1"),
    ("POST", "/acl/destination"),
    ("PUT", "/acl/destination/1"),
    ("DELETE", "/acl/destination/1"),
    ("PUT", "/acl/destination/apply"),
    ("GET", "/network/1/firewall"),
    ("GET", "/network/1/firewall/explain?user=admin&to=10.0.0.1"),
]


async def test_anonymous_gets_401(client):
    for method, path in ENDPOINTS:
        r = await client.request(method, path, json={})
        assert r.status_code == 401, (method, path)


async def test_non_admin_gets_403(user_client):
    for method, path in ENDPOINTS:
        r = await user_client.request(method, path, json={})
        assert r.status_code == 403, (method, path)
        assert r.json() == {"msg": "access denied"}


# -- rules: CRUD -----------------------------------------------------------------------


async def test_create_get_and_list_rule(admin_client, db):
    await create_location(admin_client)
    user = await make_user(db, "alice")
    created = await create_rule(
        admin_client,
        all_locations=False,
        locations=[1],
        allow_all_users=False,
        allowed_users=[user.id],
        denied_groups=[1],
        addresses="10.0.0.1, 10.1.2.3/16, 10.2.0.1-10.2.0.9",
        ports="80, 443, 8000-8080",
        protocols=[6, 17],
        expires="2030-01-01T12:00:00+02:00",
    )
    assert created["id"] >= 1
    assert created["state"] == "New"
    assert created["parent_id"] is None
    assert created["addresses"] == "10.0.0.1, 10.1.0.0/16, 10.2.0.1-10.2.0.9"
    assert created["ports"] == "80, 443, 8000-8080"
    assert created["protocols"] == [6, 17]
    assert created["locations"] == [1]
    assert created["allowed_users"] == [user.id]
    assert created["denied_groups"] == [1]
    assert created["expires"] == "2030-01-01T10:00:00"
    r = await get_rule(admin_client, created["id"])
    assert r.status_code == 200
    assert r.json() == created
    listed = (await admin_client.get("/acl/rule")).json()
    assert listed["data"] == [created]
    assert listed["pagination"] == {
        "current_page": 1,
        "page_size": 50,
        "total_items": 1,
        "total_pages": 1,
        "next_page": None,
    }
    async with db.session() as s:
        rule = await s.get(AclRule, created["id"])
        assert rule.modified_by == "admin"
        assert rule.ports == [(80, 80), (443, 443), (8000, 8080)]
        events = (await s.execute(select(ActivityLogEvent.event))).scalars().all()
    assert "acl_rule_added" in events


async def test_unknown_rule_is_404(admin_client):
    assert (await get_rule(admin_client, 999)).status_code == 404
    assert (await admin_client.put("/acl/rule/999", json=rule_body())).status_code == 404
    assert (await admin_client.delete("/acl/rule/999")).status_code == 404


async def test_pagination(admin_client):
    for i in range(5):
        await create_rule(admin_client, name=f"r{i}")
    page = (await admin_client.get("/acl/rule?page=2&per_page=2")).json()
    assert [r["name"] for r in page["data"]] == ["r2", "r3"]
    assert page["pagination"] == {
        "current_page": 2,
        "page_size": 2,
        "total_items": 5,
        "total_pages": 3,
        "next_page": 3,
    }
    big = (await admin_client.get("/acl/rule?per_page=1000")).json()
    assert big["pagination"]["page_size"] == 100


async def test_count(admin_client):
    a = await create_rule(admin_client, name="a")
    b = await create_rule(admin_client, name="b")
    await create_rule(admin_client, name="c")
    await apply_rules(admin_client, a["id"], b["id"])
    await admin_client.put(f"/acl/rule/{a['id']}", json=rule_body(name="a2"))
    await admin_client.delete(f"/acl/rule/{b['id']}")
    r = await admin_client.get("/acl/rule/count")
    assert r.json() == {"applied": 2, "pending": 3}


# -- rules: validation -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"name": " "}, "name"),
        ({"allow_all_users": False}, "sources"),
        ({"ports": ""}, "ports"),
        ({"addresses": ""}, "addresses"),
        ({"protocols": []}, "protocols"),
        ({"use_manual_destination_settings": False}, "destinations"),
        ({"allowed_users": [999]}, "allowed_users: unknown user id(s): 999"),
        ({"denied_groups": [999]}, "denied_groups: unknown group id(s): 999"),
        ({"locations": [999]}, "locations: unknown location id(s): 999"),
        ({"allowed_network_devices": [999]}, "allowed_network_devices"),
        ({"aliases": [999]}, "aliases: unknown Alias id(s): 999"),
        ({"destinations": [999]}, "destinations: unknown Destination id(s): 999"),
    ],
)
async def test_rule_validation_is_400(admin_client, overrides, fragment):
    r = await admin_client.post("/acl/rule", json=rule_body(**overrides))
    assert r.status_code == 400, r.text
    assert fragment in r.json()["msg"]


async def test_any_flags_satisfy_the_manual_destination(admin_client):
    rule = await create_rule(
        admin_client,
        addresses="",
        ports="",
        protocols=[],
        any_address=True,
        any_port=True,
        any_protocol=True,
    )
    assert rule["any_address"] and rule["any_port"] and rule["any_protocol"]


async def test_alias_fills_a_manual_dimension(admin_client):
    alias = await create_alias(admin_client, ports="53", protocols=[17], addresses="")
    rule = await create_rule(admin_client, ports="", protocols=[], aliases=[alias["id"]])
    assert rule["aliases"] == [alias["id"]]
    assert rule["destinations"] == []


async def test_destination_only_rule(admin_client):
    dest = await create_alias(admin_client, "destination")
    rule = await create_rule(
        admin_client,
        use_manual_destination_settings=False,
        addresses="",
        ports="",
        protocols=[],
        destinations=[dest["id"]],
    )
    assert rule["destinations"] == [dest["id"]]


async def test_links_need_the_right_kind(admin_client):
    dest = await create_alias(admin_client, "destination")
    alias = await create_alias(admin_client)
    r = await admin_client.post("/acl/rule", json=rule_body(aliases=[dest["id"]]))
    assert r.status_code == 400
    assert "aliases: unknown Alias" in r.json()["msg"]
    r = await admin_client.post(
        "/acl/rule",
        json=rule_body(use_manual_destination_settings=False, destinations=[alias["id"]]),
    )
    assert r.status_code == 400
    assert "destinations: unknown Destination" in r.json()["msg"]


async def test_rule_may_link_only_applied_aliases(admin_client):
    alias = await create_alias(admin_client)
    r = await admin_client.put(f"/acl/alias/{alias['id']}", json={"name": "x", "ports": "53"})
    child = r.json()
    assert child["state"] == "Modified"
    r = await admin_client.post("/acl/rule", json=rule_body(aliases=[child["id"]]))
    assert r.status_code == 400
    assert "only applied" in r.json()["msg"]


@pytest.mark.parametrize(
    ("field", "value", "token"),
    [
        ("ports", "65536", "65536"),
        ("ports", "200-100", "200-100"),
        ("ports", "100-100", "100-100"),
        ("ports", "1-2-3", "1-2-3"),
        ("ports", "80, junk", "junk"),
        ("addresses", "10.0.0.1-fd00::1", "10.0.0.1-fd00::1"),
        ("addresses", "10.0.0.0/255.255.255.0", "10.0.0.0/255.255.255.0"),
        ("addresses", "10.0.0.1, garbage", "garbage"),
        ("protocols", [6, 47], "47"),
    ],
)
async def test_parse_errors_are_422_naming_the_token(admin_client, field, value, token):
    r = await admin_client.post("/acl/rule", json=rule_body(**{field: value}))
    assert r.status_code == 422, r.text
    assert token in r.json()["msg"]
    assert r.json()["msg"].startswith(field)
    r = await admin_client.post("/acl/alias", json={"name": "a", field: value})
    assert r.status_code == 422, r.text
    assert token in r.json()["msg"]


# -- rules: lifecycle -------------------------------------------------------------------


async def test_edit_pending_rule_in_place(admin_client):
    rule = await create_rule(admin_client)
    r = await admin_client.put(f"/acl/rule/{rule['id']}", json=rule_body(name="renamed"))
    assert r.status_code == 200
    assert r.json()["id"] == rule["id"]
    assert r.json()["state"] == "New"
    assert r.json()["name"] == "renamed"


async def test_edit_applied_rule_stages_a_child_and_apply_replaces_the_parent(admin_client, db):
    rule = await create_rule(admin_client)
    await apply_rules(admin_client, rule["id"])
    assert (await get_rule(admin_client, rule["id"])).json()["state"] == "Applied"

    r = await admin_client.put(f"/acl/rule/{rule['id']}", json=rule_body(name="web2", ports="8080"))
    assert r.status_code == 200
    child = r.json()
    assert child["id"] != rule["id"]
    assert child["parent_id"] == rule["id"]
    assert child["state"] == "Modified"
    parent = (await get_rule(admin_client, rule["id"])).json()
    assert (parent["state"], parent["ports"]) == ("Applied", "80, 443")

    # A second edit of the applied rule replaces the pending child.
    r = await admin_client.put(f"/acl/rule/{rule['id']}", json=rule_body(name="web3"))
    second = r.json()
    assert (await get_rule(admin_client, child["id"])).status_code == 404
    assert second["parent_id"] == rule["id"]

    await apply_rules(admin_client, second["id"])
    assert (await get_rule(admin_client, rule["id"])).status_code == 404
    applied = (await get_rule(admin_client, second["id"])).json()
    assert (applied["state"], applied["parent_id"], applied["name"]) == ("Applied", None, "web3")
    async with db.session() as s:
        events = (await s.execute(select(ActivityLogEvent.event))).scalars().all()
    assert events.count("acl_rule_applied") == 2


async def test_delete_applied_rule_stages_deleted_child(admin_client):
    alias = await create_alias(admin_client)
    rule = await create_rule(admin_client, aliases=[alias["id"]], locations=[])
    await apply_rules(admin_client, rule["id"])
    r = await admin_client.delete(f"/acl/rule/{rule['id']}")
    assert r.status_code == 200
    assert r.json() == {}
    rules = (await admin_client.get("/acl/rule")).json()["data"]
    assert len(rules) == 2
    child = next(r for r in rules if r["id"] != rule["id"])
    assert (child["state"], child["parent_id"]) == ("Deleted", rule["id"])
    assert child["aliases"] == [alias["id"]]
    assert child["addresses"] == rule["addresses"]
    await apply_rules(admin_client, child["id"])
    assert (await admin_client.get("/acl/rule")).json()["data"] == []


async def test_delete_pending_rule_removes_it(admin_client):
    rule = await create_rule(admin_client)
    assert (await admin_client.delete(f"/acl/rule/{rule['id']}")).status_code == 200
    assert (await get_rule(admin_client, rule["id"])).status_code == 404


async def test_discarding_a_pending_change_keeps_the_applied_rule(admin_client):
    rule = await create_rule(admin_client)
    await apply_rules(admin_client, rule["id"])
    child = (await admin_client.put(f"/acl/rule/{rule['id']}", json=rule_body(name="x"))).json()
    assert (await admin_client.delete(f"/acl/rule/{child['id']}")).status_code == 200
    assert (await get_rule(admin_client, rule["id"])).json()["state"] == "Applied"


async def test_applying_an_applied_rule_is_400_and_rolls_back_the_batch(admin_client, db):
    applied = await create_rule(admin_client, name="applied")
    await apply_rules(admin_client, applied["id"])
    fresh = await create_rule(admin_client, name="fresh")
    r = await admin_client.put("/acl/rule/apply", json={"rules": [fresh["id"], applied["id"]]})
    assert r.status_code == 400
    assert "applied" in r.json()["msg"]
    assert (await get_rule(admin_client, fresh["id"])).json()["state"] == "New"
    r = await admin_client.put("/acl/rule/apply", json={"rules": [fresh["id"], 999]})
    assert r.status_code == 404
    assert (await get_rule(admin_client, fresh["id"])).json()["state"] == "New"


# -- aliases and destinations -----------------------------------------------------------


async def test_alias_crud_and_count(admin_client, db):
    alias = await create_alias(admin_client, addresses="10.0.5.5, 10.9.0.0/16, 10.0.6.1-10.0.6.5")
    assert alias == {
        "id": alias["id"],
        "parent_id": None,
        "kind": "Component",
        "state": "Applied",
        "name": "dns-host",
        "addresses": "10.0.5.5, 10.9.0.0/16, 10.0.6.1-10.0.6.5",
        "ports": "",
        "protocols": [],
        "rules": [],
    }
    assert (await admin_client.get(f"/acl/alias/{alias['id']}")).json() == alias
    listed = (await admin_client.get("/acl/alias")).json()
    assert listed["data"] == [alias]
    assert listed["pagination"]["total_items"] == 1
    # Kinds stay apart.
    assert (await admin_client.get(f"/acl/destination/{alias['id']}")).status_code == 404
    assert (await admin_client.get("/acl/destination")).json()["data"] == []
    assert (await admin_client.get("/acl/alias/count")).json() == {"applied": 1, "pending": 0}
    async with db.session() as s:
        row = await s.get(AclAlias, alias["id"])
        # Components record what they leave out, as the 2.0 upgrade backfilled them.
        assert (row.any_address, row.any_port, row.any_protocol) == (False, True, True)
        assert row.modified_by == "admin"
    assert (await admin_client.delete(f"/acl/alias/{alias['id']}")).status_code == 200
    assert (await admin_client.get(f"/acl/alias/{alias['id']}")).status_code == 404


async def test_alias_and_destination_validation(admin_client):
    r = await admin_client.post("/acl/alias", json={"name": "empty"})
    assert r.status_code == 400
    assert "at least one of addresses, ports or protocols" in r.json()["msg"]
    r = await admin_client.post(
        "/acl/destination", json={"name": "d", "addresses": "10.0.0.1", "protocols": [6]}
    )
    assert r.status_code == 400
    assert "ports" in r.json()["msg"]
    r = await admin_client.post(
        "/acl/destination",
        json={"name": "d", "addresses": "10.0.0.1", "any_port": True, "any_protocol": True},
    )
    assert r.status_code == 201
    dest = r.json()
    assert (dest["kind"], dest["any_port"], dest["any_address"]) == ("Destination", True, False)


async def test_alias_edit_and_apply_repoints_rule_links(admin_client):
    alias = await create_alias(admin_client)
    rule = await create_rule(admin_client, aliases=[alias["id"]])
    await apply_rules(admin_client, rule["id"])
    r = await admin_client.put(
        f"/acl/alias/{alias['id']}", json={"name": "dns-host", "addresses": "10.0.5.6"}
    )
    assert r.status_code == 200
    child = r.json()
    assert (child["state"], child["parent_id"], child["rules"]) == ("Modified", alias["id"], [])
    assert (await admin_client.get("/acl/alias/count")).json() == {"applied": 1, "pending": 1}
    # Until applied, rules keep the current version.
    assert (await get_rule(admin_client, rule["id"])).json()["aliases"] == [alias["id"]]
    # Editing the pending version changes it in place.
    r = await admin_client.put(
        f"/acl/alias/{child['id']}", json={"name": "dns-host", "addresses": "10.0.5.7"}
    )
    assert r.json()["id"] == child["id"]

    r = await admin_client.put("/acl/alias/apply", json={"aliases": [alias["id"]]})
    assert r.status_code == 400
    r = await admin_client.put("/acl/alias/apply", json={"aliases": [child["id"]]})
    assert r.status_code == 200, r.text
    assert (await admin_client.get(f"/acl/alias/{alias['id']}")).status_code == 404
    applied = (await admin_client.get(f"/acl/alias/{child['id']}")).json()
    assert applied["state"] == "Applied"
    assert applied["parent_id"] is None
    assert applied["addresses"] == "10.0.5.7"
    assert applied["rules"] == [rule["id"]]
    assert (await get_rule(admin_client, rule["id"])).json()["aliases"] == [child["id"]]


async def test_alias_in_use_cannot_be_deleted(admin_client):
    dest = await create_alias(admin_client, "destination")
    rule = await create_rule(
        admin_client, use_manual_destination_settings=False, destinations=[dest["id"]]
    )
    r = await admin_client.delete(f"/acl/destination/{dest['id']}")
    assert r.status_code == 400
    assert f"used by ACL rule(s) {rule['id']}" in r.json()["msg"]
    await admin_client.delete(f"/acl/rule/{rule['id']}")
    assert (await admin_client.delete(f"/acl/destination/{dest['id']}")).status_code == 200


async def test_destination_apply_uses_its_own_body_key(admin_client):
    dest = await create_alias(admin_client, "destination")
    child = (
        await admin_client.put(
            f"/acl/destination/{dest['id']}",
            json={"name": "pg", "addresses": "10.0.0.2", "ports": "5432", "protocols": [6]},
        )
    ).json()
    r = await admin_client.put("/acl/destination/apply", json={"destinations": [child["id"]]})
    assert r.status_code == 200, r.text
    assert (await admin_client.get(f"/acl/destination/{child['id']}")).json()["name"] == "pg"
    assert (await admin_client.get("/acl/destination/count")).json() == {
        "applied": 1,
        "pending": 0,
    }
