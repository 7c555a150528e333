"""Console pages for users and groups.

Forms are checked the way a browser uses them: the controls are read from the
page and turned into the JSON body forms.js would send, which the API must
accept and apply.
"""

from __future__ import annotations

import json
import re

import httpx
import pytest
from sqlalchemy import select

from defguard.core.users.models import MfaMethod, User
from defguard.db.engine import Database
from defguard.wireguard.keys import generate_keypair
from tests.conftest import make_user
from tests.webforms import body_of, create_location, read_form

pytestmark = pytest.mark.asyncio
PAGE = "http://testserver"


async def page_script(client: httpx.AsyncClient, page: str, name: str) -> str:
    """The text of a script the page loads from /static (pages have no inline code)."""
    assert f'<script src="/static/{name}?v=' in page, name
    r = await client.get(f"{PAGE}/static/{name}")
    assert r.status_code == 200, name
    return r.text


async def user_row(db: Database, username: str) -> User:
    async with db.session() as s:
        return (await s.execute(select(User).where(User.username == username))).scalar_one()


async def create_group(client: httpx.AsyncClient, name: str, members: list[str]) -> None:
    r = await client.post("/group", json={"name": name, "members": members, "is_admin": False})
    assert r.status_code == 201, r.text


# -- missing objects -----------------------------------------------------------


async def test_unknown_user_and_group_are_404_pages(admin_client: httpx.AsyncClient):
    for path in ("/users/nobody", "/groups/nobody"):
        r = await admin_client.get(PAGE + path)
        assert r.status_code == 404, path
        assert "Not found" in r.text


# -- user list -----------------------------------------------------------------


async def test_user_list_shows_users_and_search_filters(
    admin_client: httpx.AsyncClient, db: Database
):
    await make_user(db, "alice", email="alice@corp.example")
    await make_user(db, "bob", password=None, email="robert@example.org")
    await make_user(db, "carol_x", active=False)
    await create_group(admin_client, "devops", ["alice"])
    await create_location(admin_client)
    r = await admin_client.post(
        "/device/alice", json={"name": "laptop", "wireguard_pubkey": generate_keypair().public}
    )
    assert r.status_code == 201, r.text

    page = (await admin_client.get(PAGE + "/users")).text
    alice = page.split('data-user="alice"')[1].split("</tr>")[0]
    assert 'href="/users/alice"' in alice and "alice@corp.example" in alice
    assert "devops" in alice and 'data-devices="1"' in alice and 'data-state="active"' in alice
    bob = page.split('data-user="bob"')[1].split("</tr>")[0]
    assert 'data-state="not-enrolled"' in bob
    assert 'data-state="disabled"' in page.split('data-user="carol_x"')[1].split("</tr>")[0]
    form = read_form(page, "create-user-form")
    assert (form.form["data-api"], form.form["data-method"]) == ("/api/v1/user", "POST")
    assert form.form["data-next"] == "/users/{username}"

    async def found(q: str) -> set[str]:
        text = (await admin_client.get(PAGE + "/users", params={"q": q})).text
        return set(re.findall(r'<tr data-user="([^"]+)"', text))

    assert await found("ALI") == {"alice"}
    assert await found("example.org") == {"bob"}  # e-mail
    assert await found("Bob Tester") == {"bob"}  # full name
    assert await found("_") == {"carol_x"}  # a literal, not a LIKE wildcard
    assert await found("%") == set()


async def test_user_list_pages(admin_client: httpx.AsyncClient, db: Database):
    async with db.transaction() as s:
        for i in range(55):
            s.add(
                User(username=f"u{i:02d}", first_name="U", last_name="Ser", email=f"user{i}@x.io")
            )
    first = (await admin_client.get(PAGE + "/users")).text
    assert len(re.findall(r"<tr data-user=", first)) == 50
    assert "Page 1 of 2" in first and 'href="/users?page=2"' in first
    second = (await admin_client.get(PAGE + "/users?page=2")).text
    # 56 users by name: admin, u00..u54; the second page has the last six.
    assert re.findall(r'<tr data-user="([^"]+)"', second) == [f"u{i}" for i in range(49, 55)]
    searched = (await admin_client.get(PAGE + "/users?q=u5&page=9")).text
    assert re.findall(r'<tr data-user="([^"]+)"', searched) == [f"u{i}" for i in range(50, 55)]


# -- user page -----------------------------------------------------------------


async def test_user_page_forms_are_valid_api_calls(admin_client: httpx.AsyncClient, db: Database):
    await make_user(db, "alice")
    await create_group(admin_client, "devops", [])
    await create_group(admin_client, "qa", ["alice"])
    r = await admin_client.get(PAGE + "/users/alice")
    assert r.status_code == 200
    assert r.headers["cache-control"] == "no-store"
    page = r.text
    assert "alice@example.com" in page

    # Profile: the form alone is a complete PUT body; only what was typed changes.
    edit = read_form(page, "edit-user-form")
    assert (edit.form["data-api"], edit.form["data-method"]) == ("/api/v1/user/alice", "PUT")
    body = body_of(edit, first_name="Alicia", phone="+48 600 100 200")
    put = await admin_client.put("/user/alice", json=body)
    assert put.status_code == 200, put.text
    user = (await admin_client.get("/user/alice")).json()["user"]
    assert (user["first_name"], user["phone"], user["groups"]) == (
        "Alicia",
        "+48 600 100 200",
        ["qa"],
    )

    # Groups: ticking and unticking boxes syncs membership.
    page = (await admin_client.get(PAGE + "/users/alice")).text
    groups = read_form(page, "user-groups-form")
    body = body_of(groups, check=("devops",), uncheck=("qa",))
    assert body["groups"] == ["devops"]
    assert (await admin_client.put("/user/alice", json=body)).status_code == 200
    user = (await admin_client.get("/user/alice")).json()["user"]
    assert (user["groups"], user["first_name"]) == (["devops"], "Alicia")

    # Renaming goes to the new name's page (PUT answers {}, so the body fills it).
    assert read_form(page, "edit-user-form").form["data-next"] == "/users/{username}?saved=1"

    # Disable: the button's body is the whole user with is_active flipped.
    button = re.search(r'<button[^>]*id="toggle-active"[^>]*>', page)
    assert button is not None
    attrs = dict(re.findall(r"([\w-]+)=\'([^\']*)\'", button.group(0)))
    assert 'data-api="/api/v1/user/alice"' in button.group(0)
    put = await admin_client.put("/user/alice", json=json.loads(attrs["data-body"]))
    assert put.status_code == 200, put.text
    assert (await admin_client.get("/user/alice")).json()["user"]["is_active"] is False

    page = (await admin_client.get(PAGE + "/users/alice")).text
    assert "Enable account" in page and 'id="user-disabled"' in page
    assert 'data-api="/api/v1/user/alice" data-method="DELETE"' in page
    assert read_form(page, "set-password-form").form["data-api"] == "/api/v1/user/alice/password"


async def test_start_enrollment_form_issues_a_token_that_the_page_never_shows(
    admin_client: httpx.AsyncClient, db: Database
):
    await make_user(db, "newbie", password=None)
    page = (await admin_client.get(PAGE + "/users/newbie")).text
    form = read_form(page, "start-enrollment-form")
    assert form.form["data-api"] == "/api/v1/user/newbie/start_enrollment"
    assert form.form["data-method"] == "POST"
    assert re.search(r'<form id="start-enrollment-form".*?id="start-enrollment"', page, re.S)
    for element in ("enrollment-result", "enrollment-token", "enrollment-url", "enrollment-qr"):
        assert f'id="{element}"' in page
    script = await page_script(admin_client, page, "console-user.js")
    assert "window.defguard.qrFor" in script or "dg().qrFor" in script

    body = body_of(form)
    assert body == {"email": "newbie@example.com"}  # no SMTP: no notification box
    r = await admin_client.post("/user/newbie/start_enrollment", json=body)
    assert r.status_code == 201, r.text
    token = r.json()["enrollment_token"]
    again = (await admin_client.get(PAGE + "/users/newbie")).text
    assert token not in again
    assert 'id="start-enrollment-form"' in again  # still pending: may be re-issued

    desktop = re.search(r'<button[^>]*id="start-desktop"[^>]*>', again)
    assert desktop is not None
    assert 'data-api="/api/v1/user/newbie/start_desktop"' in desktop.group(0)


async def test_enrolled_user_and_own_page_offer_only_what_the_api_allows(
    admin_client: httpx.AsyncClient, db: Database
):
    await make_user(db, "alice")
    page = (await admin_client.get(PAGE + "/users/alice")).text
    assert 'id="start-enrollment-form"' not in page and 'id="enrollment-done"' in page
    assert (
        'id="send-password-reset"' in page
        and "disabled" in page.split('id="send-password-reset"')[1].split(">")[0]
    )

    own = (await admin_client.get(PAGE + "/users/admin")).text
    for absent in ('id="delete-user"', 'id="toggle-active"', 'id="set-password-form"'):
        assert absent not in own
    # The admin can still edit their own profile with the same complete body.
    body = body_of(read_form(own, "edit-user-form"), last_name="Root")
    assert (await admin_client.put("/user/admin", json=body)).status_code == 200


async def test_mfa_state_and_disable_button(admin_client: httpx.AsyncClient, db: Database):
    await make_user(db, "alice")
    page = (await admin_client.get(PAGE + "/users/alice")).text
    assert 'id="disable-mfa"' not in page
    async with db.transaction() as s:
        user = (await s.execute(select(User).where(User.username == "alice"))).scalar_one()
        user.totp_enabled = user.mfa_enabled = True
        user.totp_secret = b"x" * 20
        user.mfa_method = MfaMethod.ONE_TIME_PASSWORD
    page = (await admin_client.get(PAGE + "/users/alice")).text
    assert 'data-totp="on"' in page and 'data-mfa="on"' in page
    assert 'id="disable-mfa" data-api="/api/v1/user/alice/mfa" data-method="DELETE"' in page
    assert 'id="disable-totp" data-api="/api/v1/user/alice/totp" data-method="DELETE"' in page
    assert (await admin_client.delete("/user/alice/mfa")).status_code == 200
    assert not (await user_row(db, "alice")).mfa_enabled


async def test_user_page_lists_devices_and_the_add_device_form(
    admin_client: httpx.AsyncClient, db: Database
):
    await make_user(db, "alice")
    await create_location(admin_client)
    key = generate_keypair().public
    r = await admin_client.post("/device/alice", json={"name": "phone", "wireguard_pubkey": key})
    device = r.json()["device"]
    page = (await admin_client.get(PAGE + "/users/alice")).text
    row = page.split('data-device="phone"')[1].split("</tr>")[0]
    assert f'href="/devices/{device["id"]}"' in row and key in row
    assert "HQ" in row and "10.10.0.2" in row
    form = read_form(page, "add-device-form")
    assert form.form["data-api"] == "/api/v1/device/alice"
    assert {str(c["name"]) for c in form.controls} == {"name", "wireguard_pubkey"}
    script = await page_script(admin_client, page, "console-user.js")
    assert 'id="generate-keys"' in page and "withPrivateKey" in script


# -- groups --------------------------------------------------------------------


async def test_group_list_and_create_form(admin_client: httpx.AsyncClient, db: Database):
    await make_user(db, "alice")
    await create_group(admin_client, "devops", ["alice", "admin"])
    page = (await admin_client.get(PAGE + "/groups")).text
    row = page.split('data-group="devops"')[1].split("</tr>")[0]
    assert 'href="/groups/devops"' in row and 'data-members="2"' in row
    assert 'data-admin="1"' in page.split('data-group="admin"')[1].split("</tr>")[0]

    form = read_form(page, "create-group-form")
    assert (form.form["data-api"], form.form["data-next"]) == ("/api/v1/group", "/groups/{name}")
    body = body_of(form, check=("alice",), name="qa/ops")
    assert body == {"name": "qa/ops", "is_admin": False, "members": ["alice"]}
    r = await admin_client.post("/group", json=body)
    assert r.status_code == 201, r.text
    # Free-text names, "/" included, have their page.
    created = await admin_client.get(PAGE + "/groups/qa%2Fops")
    assert created.status_code == 200 and 'data-member="alice"' in created.text


async def test_group_page_edits_members_and_name(admin_client: httpx.AsyncClient, db: Database):
    await make_user(db, "alice")
    await make_user(db, "bob")
    await create_group(admin_client, "devops", ["alice"])
    group_id = next(
        g["id"] for g in (await admin_client.get("/group-info")).json() if g["name"] == "devops"
    )
    page = (await admin_client.get(PAGE + "/groups/devops")).text
    assert 'data-member="alice"' in page and 'data-member="bob"' not in page
    assert f'data-api="/api/v1/group/{group_id}/user/alice" data-method="DELETE"' in page
    assert f'data-api="/api/v1/group/{group_id}" data-method="DELETE"' in page
    add = read_form(page, "add-member-form")
    assert add.form["data-api"] == f"/api/v1/group/{group_id}"
    assert '<option value="bob">' in page and '<option value="alice">' not in page

    edit = read_form(page, "edit-group-form")
    assert edit.form["data-method"] == "PUT"
    body = body_of(edit, name="platform")
    assert body == {"name": "platform", "is_admin": False, "members": ["alice"]}
    assert (await admin_client.put(f"/group/{group_id}", json=body)).status_code == 200
    renamed = await admin_client.get(PAGE + "/groups/platform")
    assert renamed.status_code == 200 and 'data-member="alice"' in renamed.text


async def test_group_pickers_turn_into_typed_usernames_for_many_users(
    admin_client: httpx.AsyncClient, db: Database, monkeypatch: pytest.MonkeyPatch
):
    """With thousands of users a check box per user would make a page of megabytes."""
    from defguard.core.webui import groups

    await make_user(db, "anna")
    small = (await admin_client.get(f"{PAGE}/groups")).text
    assert 'id="new-group-members"' in small and 'value="anna"' in small

    monkeypatch.setattr(groups, "PICK_LIST_LIMIT", 1)
    large = (await admin_client.get(f"{PAGE}/groups")).text
    assert 'id="new-group-members"' not in large and 'value="anna"' not in large
    body = body_of(read_form(large, "create-group-form"), name="ops", members="anna, admin")
    assert body["members"] == ["anna", "admin"]
    r = await admin_client.post("/group", json=body)
    assert r.status_code == 201, r.text
    assert sorted(r.json()["members"]) == ["admin", "anna"]
