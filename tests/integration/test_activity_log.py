"""The activity log: who did what, when and from where, filtered, sorted and paged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.conftest import make_user

NEW_USER = {
    "first_name": "Anna",
    "last_name": "Smith",
    "password": "Tr0ub4dor&3x",
}


async def _create_users(admin_client, *names: str) -> None:
    for name in names:
        body = {**NEW_USER, "username": name, "email": f"{name}@example.com"}
        assert (await admin_client.post("/user", json=body)).status_code == 201


async def test_admin_actions_are_recorded_with_who_what_where(admin_client):
    await _create_users(admin_client, "anna")
    r = await admin_client.get("/activity_log", params={"event": "user_added"})
    assert r.status_code == 200
    body = r.json()
    assert body["pagination"]["total_items"] == 1
    event = body["data"][0]
    assert event["username"] == "admin"
    assert event["event"] == "user_added"
    assert event["module"] == "defguard"
    assert event["ip"] == "203.0.113.7/32"
    assert event["device"] == "Firefox 123, OS: Linux"
    assert "anna" in event["description"]


async def test_login_success_and_failure_are_recorded(client, admin_client, db):
    await make_user(db, "bob")
    assert (
        await client.post("/auth", json={"username": "bob", "password": "wrong"})
    ).status_code == 401
    assert (
        await client.post("/auth", json={"username": "bob", "password": "Us3r!Passw0rd"})
    ).status_code == 200
    r = await admin_client.get("/activity_log", params={"username": "bob", "sort_order": "asc"})
    assert [e["event"] for e in r.json()["data"]] == ["user_login_failed", "user_login"]


async def test_filters_search_sort_and_paging(admin_client):
    await _create_users(admin_client, "u1", "u2", "u3")
    r = await admin_client.get(
        "/activity_log", params={"event": "user_added", "per_page": 2, "sort_order": "asc"}
    )
    body = r.json()
    assert body["pagination"] == {
        "current_page": 1,
        "page_size": 2,
        "total_items": 3,
        "total_pages": 2,
        "next_page": 2,
    }
    first_page = [e["description"] for e in body["data"]]
    r = await admin_client.get(
        "/activity_log",
        params={"event": "user_added", "per_page": 2, "page": 2, "sort_order": "asc"},
    )
    second_page = [e["description"] for e in r.json()["data"]]
    assert len(first_page) == 2 and len(second_page) == 1
    assert not set(first_page) & set(second_page)
    # Descending by default: the newest first.
    newest = (await admin_client.get("/activity_log", params={"event": "user_added"})).json()[
        "data"
    ][0]
    assert "u3" in newest["description"]
    # Case-insensitive search over the description.
    found = (await admin_client.get("/activity_log", params={"search": "U2"})).json()["data"]
    assert len(found) == 1 and "u2" in found[0]["description"]
    # Repeatable filters combine as any-of.
    r = await admin_client.get(
        "/activity_log", params=[("event", "user_added"), ("event", "user_login")]
    )
    assert {e["event"] for e in r.json()["data"]} == {"user_added"}


async def test_time_window(admin_client):
    await _create_users(admin_client, "early")
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    assert (await admin_client.get("/activity_log", params={"from": future})).json()["data"] == []
    assert (await admin_client.get("/activity_log", params={"from": past})).json()["pagination"][
        "total_items"
    ] >= 1
    assert (await admin_client.get("/activity_log", params={"until": past})).json()["data"] == []
    r = await admin_client.get("/activity_log", params={"from": "yesterday"})
    assert r.status_code == 400
    assert "from" in r.json()["msg"]


async def test_non_admins_see_only_their_own_events(admin_client, user_client, client):
    await _create_users(admin_client, "someone")
    r = await user_client.put(
        "/user/change_password",
        json={"old_password": "Us3r!Passw0rd", "new_password": "N3w!Passw0rdX"},
    )
    assert r.status_code == 200
    body = (await user_client.get("/activity_log")).json()
    assert {e["username"] for e in body["data"]} == {"jdoe"}
    assert body["pagination"]["total_items"] == len(body["data"])
    assert (await client.get("/activity_log")).status_code == 401
