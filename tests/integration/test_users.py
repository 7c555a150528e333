"""The users API: listing, creation, edits, removal, passwords and the bulk service."""

from __future__ import annotations

from datetime import timedelta
from ipaddress import ip_address, ip_interface

import pytest
from sqlalchemy import func, select

from defguard.core.activity.models import ActivityLogEvent
from defguard.core.auth.models import Session
from defguard.core.auth.passwords import verify_password_sync
from defguard.core.context import RequestContext
from defguard.core.devices.models import Device, DeviceLocation
from defguard.core.enrollment.models import Token, TokenKind
from defguard.core.errors import ApiError
from defguard.core.groups.models import Group
from defguard.core.locations import access
from defguard.core.locations.models import Location
from defguard.core.users.models import User
from defguard.core.users.service import NewUser, create_users
from defguard.db.base import utcnow
from tests.conftest import make_user

USER_INFO_FIELDS = {
    "id",
    "username",
    "first_name",
    "last_name",
    "name",
    "email",
    "phone",
    "mfa_enabled",
    "totp_enabled",
    "email_mfa_enabled",
    "mfa_method",
    "groups",
    "authorized_apps",
    "is_active",
    "enrolled",
    "is_admin",
    "ldap_pass_requires_change",
    "devices",
}
ANNA = {
    "username": "asmith",
    "first_name": "Anna",
    "last_name": "Smith",
    "email": "anna@example.com",
    "phone": "+48 600 100 200",
    "password": "Tr0ub4dor&3x",
}


async def count_users(db) -> int:
    async with db.session() as s:
        return (await s.execute(select(func.count()).select_from(User))).scalar_one()


async def events(db, name: str) -> list[ActivityLogEvent]:
    async with db.session() as s:
        rows = await s.execute(
            select(ActivityLogEvent)
            .where(ActivityLogEvent.event == name)
            .order_by(ActivityLogEvent.id)
        )
        return list(rows.scalars())


async def get_user(db, username: str) -> User | None:
    async with db.session() as s:
        return (await s.execute(select(User).where(User.username == username))).scalar_one_or_none()


@pytest.fixture
def resyncs(monkeypatch) -> list[int]:
    """Counts location re-syncs, which every membership or status change must trigger."""
    calls: list[int] = []
    real = access.resync_locations

    async def counting(db, location_ids=None):
        calls.append(1)
        return await real(db, location_ids)

    monkeypatch.setattr(access, "resync_locations", counting)
    return calls


# --- role gates -----------------------------------------------------------------


async def test_anonymous_and_non_admin_are_refused(client, user_client):
    r = await client.get("/user")
    assert r.status_code == 401
    assert r.json() == {"msg": "Session is required"}
    r = await user_client.get("/user")
    assert r.status_code == 403
    assert r.json() == {"msg": "access denied"}
    r = await user_client.post("/user", json=ANNA)
    assert r.status_code == 403
    r = await user_client.delete("/user/admin")
    assert r.status_code == 403


# --- listing --------------------------------------------------------------------


async def test_list_users_is_paginated(admin_client, db):
    await make_user(db, "jdoe")
    r = await admin_client.get("/user", params={"per_page": 1})
    assert r.status_code == 200
    body = r.json()
    assert body["pagination"] == {
        "current_page": 1,
        "page_size": 1,
        "total_items": 2,
        "total_pages": 2,
        "next_page": 2,
    }
    (admin,) = body["data"]
    assert set(admin) == USER_INFO_FIELDS
    assert admin["username"] == "admin"
    assert admin["groups"] == ["admin"]
    assert admin["is_admin"] is True
    r = await admin_client.get("/user", params={"page": 2, "per_page": 1})
    assert [u["username"] for u in r.json()["data"]] == ["jdoe"]


# --- creation ---------------------------------------------------------------------


async def test_create_user(admin_client, db):
    r = await admin_client.post("/user", json=ANNA)
    assert r.status_code == 201
    body = r.json()
    assert body == {
        "id": body["id"],
        "username": "asmith",
        "first_name": "Anna",
        "last_name": "Smith",
        "name": "Anna Smith",
        "email": "anna@example.com",
        "phone": "+48 600 100 200",
        "mfa_enabled": False,
        "totp_enabled": False,
        "email_mfa_enabled": False,
        "mfa_method": "None",
        "groups": [],
        "authorized_apps": [],
        "is_active": True,
        "enrolled": True,
        "is_admin": False,
        "ldap_pass_requires_change": False,
        "devices": [],
    }
    user = await get_user(db, "asmith")
    assert verify_password_sync(user.password_hash, ANNA["password"])
    (event,) = await events(db, "user_added")
    assert event.username == "admin"
    assert "asmith" in event.description

    r = await admin_client.get("/user/asmith")
    assert r.status_code == 200
    assert r.json() == {"user": body, "security_keys": [], "biometric_enabled_devices": []}


async def test_create_user_without_password_is_not_enrolled(admin_client, db):
    data = {k: v for k, v in ANNA.items() if k not in ("password", "phone")}
    r = await admin_client.post("/user", json=data)
    assert r.status_code == 201
    assert r.json()["enrolled"] is False
    assert r.json()["phone"] is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("password", "weakpass"),
        ("password", "Sh0rt!"),
        ("username", "-leading-dash"),
        ("username", "has space"),
        ("username", "x" * 64),
        ("phone", "202.555.0173"),
        ("phone", "123-456-789-0000"),
    ],
)
async def test_create_user_validation(admin_client, db, field, value):
    r = await admin_client.post("/user", json={**ANNA, field: value})
    assert r.status_code == 400
    assert r.json()["msg"].startswith(f"{field}: ")
    assert await count_users(db) == 1
    assert await events(db, "user_added") == []


async def test_create_user_duplicates_conflict(admin_client, db):
    r = await admin_client.post("/user", json={**ANNA, "username": "admin"})
    assert r.status_code == 409
    assert r.json() == {"msg": "username admin already exists"}
    r = await admin_client.post("/user", json={**ANNA, "email": "ADMIN@defguard.local"})
    assert r.status_code == 409
    assert "email" in r.json()["msg"]
    assert await count_users(db) == 1


async def test_create_user_malformed_and_incomplete_bodies(admin_client):
    r = await admin_client.post(
        "/user", content=b'{"username": ', headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400
    r = await admin_client.post("/user", json={"username": "x", "first_name": "X"})
    assert r.status_code == 422
    assert "last_name" in r.json()["msg"]
    assert "email" in r.json()["msg"]


async def test_create_user_requires_user_agent(admin_client, db):
    r = await admin_client.post("/user", json=ANNA, headers={"User-Agent": ""})
    assert r.status_code == 400
    assert r.json() == {"msg": "Missing UserAgent header"}
    assert await count_users(db) == 1


# --- bulk service ---------------------------------------------------------------


async def test_create_users_in_bulk(db):
    async with db.session() as s:
        admin = (await s.execute(select(User).where(User.username == "admin"))).scalar_one()
    specs = [
        NewUser(username=f"bulk{i}", first_name="B", last_name=str(i), email=f"b{i}@example.com")
        for i in range(500)
    ]
    ctx = RequestContext(ip="10.0.0.1", user_agent="import")
    async with db.transaction() as s:
        users = await create_users(s, specs, actor=admin, ctx=ctx)
        assert [u.username for u in users] == [s.username for s in specs]
        assert all(u.id and u.groups == [] and not u.enrolled for u in users)
    assert await count_users(db) == 501
    assert len(await events(db, "user_added")) == 500

    clash = [
        NewUser(username="fresh", first_name="F", last_name="F", email="fresh@example.com"),
        NewUser(username="other", first_name="O", last_name="O", email="B7@EXAMPLE.com"),
    ]
    with pytest.raises(ApiError) as exc:
        async with db.transaction() as s:
            await create_users(s, clash, actor=admin, ctx=ctx)
    assert exc.value.status == 409
    in_batch = [
        NewUser(username="twin", first_name="T", last_name="T", email="t1@example.com"),
        NewUser(username="twin", first_name="T", last_name="T", email="t2@example.com"),
    ]
    with pytest.raises(ApiError) as exc:
        async with db.transaction() as s:
            await create_users(s, in_batch, actor=admin, ctx=ctx)
    assert exc.value.msg == "username twin already exists"
    assert await count_users(db) == 501


# --- reading one user ------------------------------------------------------------------


async def test_get_user_admin_or_self(user_client, admin_client):
    r = await user_client.get("/user/jdoe")
    assert r.status_code == 200
    assert r.json()["user"]["username"] == "jdoe"
    r = await user_client.get("/user/admin")
    assert r.status_code == 403
    assert r.json() == {"msg": "requires privileged access"}
    r = await admin_client.get("/user/ghost")
    assert r.status_code == 404
    assert r.json() == {"msg": "user ghost not found"}


# --- editing --------------------------------------------------------------------------


async def test_admin_edits_user_and_groups(admin_client, user_client, db, resyncs):
    async with db.transaction() as s:
        s.add(Group(name="devops"))
    info = (await admin_client.get("/user/jdoe")).json()["user"]
    info.update(
        first_name="Johnny",
        email="johnny@example.com",
        phone="91-1234-5678",
        groups=["devops", "no-such-group"],
    )
    r = await admin_client.put("/user/jdoe", json=info)
    assert r.status_code == 200
    assert r.json() == {}
    after = (await admin_client.get("/user/jdoe")).json()["user"]
    assert after["first_name"] == "Johnny"
    assert after["name"] == "Johnny Tester"
    assert after["email"] == "johnny@example.com"
    assert after["phone"] == "91-1234-5678"
    assert after["groups"] == ["devops"]
    assert resyncs
    assert len(await events(db, "user_modified")) == 1
    assert len(await events(db, "user_groups_modified")) == 1

    # Renaming moves the account to the new path.
    after["username"] = "johnny"
    assert (await admin_client.put("/user/jdoe", json=after)).status_code == 200
    assert (await admin_client.get("/user/johnny")).status_code == 200
    assert (await admin_client.get("/user/jdoe")).status_code == 404


async def test_user_edits_self_within_limits(user_client, db):
    info = (await user_client.get("/user/jdoe")).json()["user"]
    changed = {
        **info,
        "first_name": "Hacker",
        "phone": "+1 (202) 555-0173",
        "groups": ["admin"],
        "is_active": True,
        "is_admin": True,
    }
    r = await user_client.put("/user/jdoe", json=changed)
    assert r.status_code == 200
    after = (await user_client.get("/user/jdoe")).json()["user"]
    assert after["phone"] == "+1 (202) 555-0173"
    assert after["first_name"] == info["first_name"]
    assert after["groups"] == []
    assert after["is_admin"] is False

    r = await user_client.put("/user/admin", json=changed)
    assert r.status_code == 403


async def test_edit_validation_and_rules(admin_client, user_client, db):
    info = (await admin_client.get("/user/jdoe")).json()["user"]
    r = await admin_client.put("/user/jdoe", json={**info, "phone": "202.555.0173"})
    assert r.status_code == 400
    assert r.json()["msg"].startswith("phone: ")
    r = await admin_client.put("/user/jdoe", json={**info, "username": "bad name"})
    assert r.status_code == 400
    assert r.json()["msg"].startswith("username: ")
    r = await admin_client.put("/user/jdoe", json={**info, "username": "admin"})
    assert r.status_code == 409
    r = await user_client.put("/user/jdoe", json={**info, "mfa_method": "OneTimePassword"})
    assert r.status_code == 400
    assert r.json()["msg"].startswith("mfa_method: ")
    without_name = {k: v for k, v in info.items() if k != "name"}
    r = await admin_client.put("/user/jdoe", json=without_name)
    assert r.status_code == 422
    assert "name" in r.json()["msg"]
    r = await admin_client.put("/user/ghost", json=info)
    assert r.status_code == 404

    admin_info = (await admin_client.get("/user/admin")).json()["user"]
    r = await admin_client.put("/user/admin", json={**admin_info, "is_active": False})
    assert r.status_code == 400
    assert (await admin_client.get("/me")).status_code == 200


async def test_failed_edit_writes_nothing(admin_client, db):
    await make_user(db, "jdoe")
    await make_user(db, "other", email="taken@example.com")
    info = (await admin_client.get("/user/jdoe")).json()["user"]
    r = await admin_client.put(
        "/user/jdoe", json={**info, "first_name": "Changed", "email": "TAKEN@example.com"}
    )
    assert r.status_code == 409
    assert (await get_user(db, "jdoe")).first_name == info["first_name"]
    assert await events(db, "user_modified") == []


async def test_deactivation_ends_sessions(admin_client, user_client, db, resyncs):
    assert (await user_client.get("/me")).status_code == 200
    info = (await admin_client.get("/user/jdoe")).json()["user"]
    r = await admin_client.put("/user/jdoe", json={**info, "is_active": False})
    assert r.status_code == 200
    assert resyncs
    async with db.session() as s:
        count = await s.execute(
            select(func.count()).select_from(Session).where(Session.user_id == info["id"])
        )
        assert count.scalar_one() == 0
    assert (await user_client.get("/me")).status_code == 401
    assert (await admin_client.get("/user/jdoe")).json()["user"]["is_active"] is False


async def test_last_admin_cannot_leave_admin_group(admin_client):
    info = (await admin_client.get("/user/admin")).json()["user"]
    r = await admin_client.put("/user/admin", json={**info, "groups": []})
    assert r.status_code == 400
    assert "admin" in r.json()["msg"]
    assert (await admin_client.get("/user/admin")).json()["user"]["groups"] == ["admin"]


# --- deletion -----------------------------------------------------------------------------


async def test_delete_user(admin_client, db, resyncs):
    await make_user(db, "jdoe")
    r = await admin_client.delete("/user/admin")
    assert r.status_code == 400
    r = await admin_client.delete("/user/ghost")
    assert r.status_code == 404
    assert r.json() == {"msg": "user ghost not found"}
    r = await admin_client.delete("/user/jdoe")
    assert r.status_code == 200
    assert r.json() == {}
    assert await get_user(db, "jdoe") is None
    assert resyncs
    (event,) = await events(db, "user_removed")
    assert "jdoe" in event.description


async def test_deleting_user_bumps_locations_of_their_devices(admin_client, db):
    jdoe = await make_user(db, "jdoe")
    async with db.transaction() as s:
        location = Location(
            name="HQ",
            address=[ip_interface("10.1.0.1/24")],
            port=51820,
            pubkey="pub",
            prvkey="prv",
            endpoint="vpn.example.com",
            allowed_ips=[ip_interface("10.0.0.0/8")],
            allow_all_groups=True,
        )
        device = Device(name="laptop", wireguard_pubkey="k" * 43 + "=", user_id=jdoe.id)
        s.add_all([location, device])
        await s.flush()
        s.add(
            DeviceLocation(
                device_id=device.id,
                wireguard_network_id=location.id,
                wireguard_ips=[ip_address("10.1.0.2")],
            )
        )
    async with db.session() as s:
        before = (await s.get(Location, location.id)).config_revision
    assert (await admin_client.delete("/user/jdoe")).status_code == 200
    async with db.session() as s:
        assert (await s.get(Location, location.id)).config_revision > before
        assert (await s.execute(select(func.count()).select_from(Device))).scalar_one() == 0


# --- available -------------------------------------------------------------------------------


async def test_username_available(admin_client, user_client):
    assert (await admin_client.post("/user/available", json={"username": "newbie"})).json() == {}
    r = await admin_client.post("/user/available", json={"username": "admin"})
    assert r.status_code == 400
    r = await admin_client.post("/user/available", json={"username": "_bad"})
    assert r.status_code == 400
    assert r.json()["msg"].startswith("username: ")
    r = await user_client.post("/user/available", json={"username": "newbie"})
    assert r.status_code == 403


# --- passwords ------------------------------------------------------------------------------


async def test_change_own_password(user_client, client, db):
    r = await user_client.put(
        "/user/change_password",
        json={"old_password": "Wrong!Passw0rd", "new_password": "N3w!Password"},
    )
    assert r.status_code == 400
    assert r.json()["msg"].startswith("old_password: ")
    r = await user_client.put(
        "/user/change_password",
        json={"old_password": "Us3r!Passw0rd", "new_password": "weak"},
    )
    assert r.status_code == 400
    assert r.json()["msg"].startswith("new_password: ")
    r = await user_client.put(
        "/user/change_password",
        json={"old_password": "Us3r!Passw0rd", "new_password": "N3w!Password"},
    )
    assert r.status_code == 200
    assert r.json() == {}
    # The session that changed it stays logged in.
    assert (await user_client.get("/me")).status_code == 200
    login = await client.post("/auth", json={"username": "jdoe", "password": "N3w!Password"})
    assert login.status_code == 200
    assert len(await events(db, "password_changed")) == 1


async def test_admin_sets_password(admin_client, db):
    await make_user(db, "jdoe")
    r = await admin_client.put("/user/jdoe/password", json={"new_password": "weak"})
    assert r.status_code == 400
    r = await admin_client.put("/user/admin/password", json={"new_password": "Adm1n!Other"})
    assert r.status_code == 400
    r = await admin_client.put("/user/ghost/password", json={"new_password": "G0od!Passw0rd"})
    assert r.status_code == 404
    r = await admin_client.put("/user/-bad/password", json={"new_password": "G0od!Passw0rd"})
    assert r.status_code == 400
    r = await admin_client.put("/user/jdoe/password", json={"new_password": "G0od!Passw0rd"})
    assert r.status_code == 200
    assert verify_password_sync((await get_user(db, "jdoe")).password_hash, "G0od!Passw0rd")
    assert len(await events(db, "password_changed_by_admin")) == 1


async def test_reset_password_issues_one_token(admin_client, db):
    await make_user(db, "jdoe")
    assert (await admin_client.post("/user/jdoe/reset_password")).status_code == 200
    assert (await admin_client.post("/user/jdoe/reset_password")).status_code == 200
    async with db.session() as s:
        tokens = (await s.execute(select(Token))).scalars().all()
    (token,) = tokens
    assert token.kind is TokenKind.PASSWORD_RESET
    assert len(token.id) == 32 and token.id.isalnum()
    assert token.email == "jdoe@example.com"
    assert token.used_at is None
    assert timedelta(hours=23, minutes=59) < token.expires_at - utcnow() <= timedelta(hours=24)
    assert len(await events(db, "password_reset_requested")) == 2
    assert (await admin_client.post("/user/admin/reset_password")).status_code == 400
    assert (await admin_client.post("/user/ghost/reset_password")).status_code == 404
