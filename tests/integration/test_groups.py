"""The groups API: CRUD, membership, admin-group rules and location names."""

from __future__ import annotations

from ipaddress import ip_interface

import pytest
from sqlalchemy import func, select

from defguard.core.activity.models import ActivityLogEvent
from defguard.core.groups.models import Group
from defguard.core.locations import access
from defguard.core.locations.models import Location
from tests.conftest import make_user


async def events(db, name: str) -> list[ActivityLogEvent]:
    async with db.session() as s:
        rows = await s.execute(select(ActivityLogEvent).where(ActivityLogEvent.event == name))
        return list(rows.scalars())


async def group_count(db) -> int:
    async with db.session() as s:
        return (await s.execute(select(func.count()).select_from(Group))).scalar_one()


async def add_location(db, name: str, *, groups: list[str] = (), allow_all: bool = False) -> None:
    async with db.transaction() as s:
        allowed = (
            (await s.execute(select(Group).where(Group.name.in_(groups)))).scalars().all()
            if groups
            else []
        )
        s.add(
            Location(
                name=name,
                address=[ip_interface("10.1.0.1/24")],
                port=51820,
                pubkey="pub",
                prvkey="prv",
                endpoint="vpn.example.com",
                allowed_ips=[ip_interface("10.0.0.0/8")],
                allow_all_groups=allow_all,
                allowed_groups=list(allowed),
            )
        )


async def create(admin_client, name: str, members: list[str] = (), is_admin: bool = False):
    body = {"name": name, "members": list(members), "is_admin": is_admin}
    return await admin_client.post("/group", json=body)


async def group_id(admin_client, name: str) -> int:
    infos = (await admin_client.get("/group-info")).json()
    return next(g["id"] for g in infos if g["name"] == name)


@pytest.fixture
def resyncs(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = access.resync_locations

    async def counting(db, location_ids=None):
        calls.append(1)
        return await real(db, location_ids)

    monkeypatch.setattr(access, "resync_locations", counting)
    return calls


async def test_groups_are_admin_only(client, user_client):
    assert (await client.get("/group")).status_code == 401
    r = await user_client.get("/group")
    assert r.status_code == 403
    assert r.json() == {"msg": "access denied"}
    assert (
        await user_client.post("/group", json={"name": "x", "members": [], "is_admin": False})
    ).status_code == 403
    assert (await user_client.get("/group-info")).status_code == 403


async def test_create_and_read_group(admin_client, db, resyncs):
    await make_user(db, "jdoe")
    await make_user(db, "asmith")
    r = await create(admin_client, "devops", ["jdoe", "asmith"])
    assert r.status_code == 201
    assert r.json() == {"name": "devops", "members": ["jdoe", "asmith"], "is_admin": False}
    assert resyncs
    gid = await group_id(admin_client, "devops")
    r = await admin_client.get(f"/group/{gid}")
    assert r.json() == {
        "id": gid,
        "name": "devops",
        "members": ["asmith", "jdoe"],
        "vpn_locations": [],
        "is_admin": False,
    }
    r = await admin_client.get("/group")
    assert r.json()["data"] == ["admin", "devops"]
    assert r.json()["pagination"]["total_items"] == 2
    (event,) = await events(db, "group_added")
    assert event.username == "admin" and "devops" in event.description


async def test_unknown_member_creates_nothing(admin_client, db):
    await make_user(db, "jdoe")
    r = await create(admin_client, "devops", ["jdoe", "ghost"])
    assert r.status_code == 404
    assert r.json() == {"msg": "Failed to find user ghost"}
    assert await group_count(db) == 1
    assert await events(db, "group_added") == []


async def test_duplicate_and_invalid_names(admin_client, db):
    r = await create(admin_client, "admin")
    assert r.status_code == 409
    assert r.json() == {"msg": "group admin already exists"}
    r = await create(admin_client, "  ")
    assert r.status_code == 400
    assert r.json()["msg"].startswith("name: ")
    r = await admin_client.post("/group", json={"name": "x", "members": []})
    assert r.status_code == 422
    assert "is_admin" in r.json()["msg"]
    assert await group_count(db) == 1


async def test_unknown_group(admin_client):
    r = await admin_client.get("/group/999")
    assert r.status_code == 404
    assert r.json() == {"msg": "Group 999 not found"}
    r = await admin_client.delete("/group/999")
    assert r.status_code == 404
    assert r.json() == {"msg": "Failed to find group 999"}
    body = {"name": "x", "members": [], "is_admin": False}
    assert (await admin_client.put("/group/999", json=body)).status_code == 404


async def test_update_group(admin_client, db, resyncs):
    await make_user(db, "jdoe")
    await make_user(db, "asmith")
    await create(admin_client, "devops", ["jdoe"])
    await create(admin_client, "ops")
    gid = await group_id(admin_client, "devops")
    resyncs.clear()
    body = {"name": "platform", "members": ["asmith", "nobody"], "is_admin": False}
    r = await admin_client.put(f"/group/{gid}", json=body)
    assert r.status_code == 200
    assert r.json() == {}
    info = (await admin_client.get(f"/group/{gid}")).json()
    assert (info["name"], info["members"]) == ("platform", ["asmith"])
    assert resyncs
    assert len(await events(db, "group_modified")) == 1
    r = await admin_client.put(f"/group/{gid}", json={**body, "name": "ops"})
    assert r.status_code == 409


async def test_admin_group_rules(admin_client, db):
    admin_gid = await group_id(admin_client, "admin")
    body = {"name": "admin", "members": ["admin"], "is_admin": False}
    r = await admin_client.put(f"/group/{admin_gid}", json=body)
    assert r.status_code == 400
    assert "only admin group" in r.json()["msg"]
    r = await admin_client.delete(f"/group/{admin_gid}")
    assert r.status_code == 400
    assert "only admin group" in r.json()["msg"]
    # Emptying the admin group would leave nobody in charge.
    r = await admin_client.put(
        f"/group/{admin_gid}", json={**body, "members": [], "is_admin": True}
    )
    assert r.status_code == 400
    r = await admin_client.delete(f"/group/{admin_gid}/user/admin")
    assert r.status_code == 400
    assert (await admin_client.get("/me")).json()["is_admin"] is True

    # With a second admin group holding the admin, the first may go.
    await create(admin_client, "superusers", ["admin"], is_admin=True)
    assert (await admin_client.delete(f"/group/{admin_gid}")).status_code == 200
    assert (await admin_client.get("/me")).json()["groups"] == ["superusers"]
    assert len(await events(db, "group_removed")) == 1


async def test_members_add_and_remove(admin_client, user_client, db, resyncs):
    await create(admin_client, "devops")
    gid = await group_id(admin_client, "devops")
    resyncs.clear()
    r = await admin_client.post(f"/group/{gid}", json={"username": "jdoe"})
    assert r.status_code == 200
    assert r.json() == {}
    assert (await user_client.get("/me")).json()["groups"] == ["devops"]
    assert resyncs
    r = await admin_client.post(f"/group/{gid}", json={"username": "ghost"})
    assert r.status_code == 404
    r = await admin_client.post("/group/999", json={"username": "jdoe"})
    assert r.status_code == 404

    r = await admin_client.delete(f"/group/{gid}/user/jdoe")
    assert r.status_code == 200
    assert (await user_client.get("/me")).json()["groups"] == []
    assert (await admin_client.delete(f"/group/{gid}/user/ghost")).status_code == 404
    assert len(await events(db, "group_member_added")) == 1
    assert len(await events(db, "group_member_removed")) == 1


async def test_admin_membership_grants_admin(admin_client, user_client):
    admin_gid = await group_id(admin_client, "admin")
    assert (await user_client.get("/user")).status_code == 403
    await admin_client.post(f"/group/{admin_gid}", json={"username": "jdoe"})
    assert (await user_client.get("/user")).status_code == 200


async def test_groups_assign(admin_client, db, resyncs):
    jdoe = await make_user(db, "jdoe")
    asmith = await make_user(db, "asmith")
    await create(admin_client, "a")
    await create(admin_client, "b", ["jdoe"])
    resyncs.clear()
    r = await admin_client.post(
        "/groups-assign", json={"groups": ["a", "b"], "users": [jdoe.id, asmith.id]}
    )
    assert r.status_code == 200
    assert r.json() == {}
    for name in ("a", "b"):
        gid = await group_id(admin_client, name)
        members = (await admin_client.get(f"/group/{gid}")).json()["members"]
        assert members == ["asmith", "jdoe"]
    assert resyncs
    assert len(await events(db, "groups_bulk_assigned")) == 1

    await create(admin_client, "c")
    r = await admin_client.post("/groups-assign", json={"groups": ["c", "zzz"], "users": [jdoe.id]})
    assert r.status_code == 400
    assert "zzz" in r.json()["msg"]
    r = await admin_client.post("/groups-assign", json={"groups": ["c"], "users": [jdoe.id, 9999]})
    assert r.status_code == 400
    assert "9999" in r.json()["msg"]
    gid = await group_id(admin_client, "c")
    assert (await admin_client.get(f"/group/{gid}")).json()["members"] == []


async def test_vpn_locations(admin_client, db):
    await create(admin_client, "devops")
    await add_location(db, "HQ", groups=["devops"])
    await add_location(db, "Everyone", allow_all=True)
    await add_location(db, "Shared", groups=["devops", "admin"])
    gid = await group_id(admin_client, "devops")
    info = (await admin_client.get(f"/group/{gid}")).json()
    assert info["vpn_locations"] == ["Everyone", "HQ", "Shared"]
    listed = {g["name"]: g for g in (await admin_client.get("/group-info")).json()}
    assert listed["devops"]["vpn_locations"] == ["HQ", "Shared"]
    assert listed["admin"]["vpn_locations"] == ["Shared"]

    # devops is the only group allowed into HQ: deleting it would orphan the location.
    r = await admin_client.delete(f"/group/{gid}")
    assert r.status_code == 400
    assert "HQ" in r.json()["msg"]
    assert await group_count(db) == 2
