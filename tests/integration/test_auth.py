"""Login, sessions, throttling and the TOTP / recovery-code MFA flow over real HTTP."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import timedelta

import httpx
import pyotp
from sqlalchemy import func, select, update

from defguard.config import CoreSettings
from defguard.core.activity.models import ActivityLogEvent
from defguard.core.app import create_app
from defguard.core.auth.models import LoginFailure, Session
from defguard.core.users.models import User
from defguard.db.base import utcnow
from tests.conftest import USER_AGENT, make_user, session_cookie

PASSWORD = "Us3r!Passw0rd"


async def login(client: httpx.AsyncClient, username: str, password: str = PASSWORD):
    return await client.post("/auth", json={"username": username, "password": password})


async def events(db, name: str) -> list[ActivityLogEvent]:
    async with db.session() as s:
        rows = await s.execute(
            select(ActivityLogEvent)
            .where(ActivityLogEvent.event == name)
            .order_by(ActivityLogEvent.id)
        )
        return list(rows.scalars())


async def sessions_of(db, username: str) -> list[Session]:
    async with db.session() as s:
        rows = await s.execute(
            select(Session).join(User, User.id == Session.user_id).where(User.username == username)
        )
        return list(rows.scalars())


def totp_now(secret: str) -> str:
    """The current code; waits out the last second of a step so the server sees the same step."""
    if 30 - time.time() % 30 < 1.5:
        time.sleep(1.6)
    return pyotp.TOTP(secret).now()


async def enable_totp(client: httpx.AsyncClient) -> tuple[str, list[str]]:
    r = await client.post("/auth/totp/init")
    assert r.status_code == 200, r.text
    secret = r.json()["secret"]
    r = await client.post("/auth/totp", json={"code": totp_now(secret)})
    assert r.status_code == 200, r.text
    return secret, r.json()["codes"]


# --- login and cookies ---------------------------------------------------------


async def test_login_sets_session_cookie(client, db):
    await make_user(db, "jdoe")
    r = await login(client, "jdoe")
    assert r.status_code == 200
    body = r.json()
    assert body["url"] is None
    assert body["user"]["username"] == "jdoe"
    assert body["user"]["is_admin"] is False

    cookie = r.headers["set-cookie"]
    match = re.match(r"defguard_session=([A-Za-z0-9]+);", cookie)
    assert match and len(match.group(1)) == 24
    attrs = [a.strip() for a in cookie.split(";")[1:]]
    assert "HttpOnly" in attrs
    assert "Path=/" in attrs
    assert "SameSite=Lax" in attrs
    assert "Max-Age=604800" in attrs
    assert "Secure" not in attrs
    assert not any(a.lower().startswith("domain=") for a in attrs)

    (row,) = await sessions_of(db, "jdoe")
    assert row.id == match.group(1)
    assert timedelta(days=6, hours=23) < row.expires - utcnow() <= timedelta(days=7)
    assert str(row.ip) == "203.0.113.7"

    me = await client.get("/me")
    assert me.status_code == 200
    assert me.json()["username"] == "jdoe"
    assert len(await events(db, "user_login")) == 1


async def test_cookie_secure_and_domain_follow_settings(db):
    settings = CoreSettings(url="https://vpn.example.com", cookie_domain="example.com")
    app = create_app(settings, db)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 40000))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver/api/v1", headers={"User-Agent": USER_AGENT}
    ) as c:
        await make_user(db, "jdoe")
        r = await login(c, "jdoe")
    attrs = [a.strip() for a in r.headers["set-cookie"].split(";")]
    assert "Secure" in attrs
    assert "Domain=example.com" in attrs


async def test_login_by_email_is_case_insensitive(client, db):
    await make_user(db, "jdoe", email="John.Doe@Example.com")
    r = await login(client, "JOHN.DOE@example.COM")
    assert r.status_code == 200
    assert r.json()["user"]["username"] == "jdoe"


async def test_wrong_password_is_rejected_and_logged(client, db):
    await make_user(db, "jdoe")
    r = await login(client, "jdoe", "Wrong!Passw0rd")
    assert r.status_code == 401
    assert r.json() == {"msg": "Invalid username or password"}
    assert "set-cookie" not in r.headers
    assert await sessions_of(db, "jdoe") == []
    failed = await events(db, "user_login_failed")
    assert [e.username for e in failed] == ["jdoe"]


async def test_unknown_user_is_rejected_without_event(client, db):
    r = await login(client, "ghost")
    assert r.status_code == 401
    assert r.json() == {"msg": "Invalid username or password"}
    assert await events(db, "user_login_failed") == []


async def test_disabled_user_cannot_log_in(client, db):
    await make_user(db, "jdoe", active=False)
    r = await login(client, "jdoe")
    assert r.status_code == 401
    assert await sessions_of(db, "jdoe") == []


async def test_login_requires_user_agent(client, db):
    await make_user(db, "jdoe")
    r = await client.post(
        "/auth", json={"username": "jdoe", "password": PASSWORD}, headers={"User-Agent": ""}
    )
    assert r.status_code == 400
    assert await sessions_of(db, "jdoe") == []


async def test_login_body_errors(client):
    r = await client.post(
        "/auth", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400
    r = await client.post("/auth", json={"username": "jdoe"})
    assert r.status_code == 422
    assert "password" in r.json()["msg"]


async def test_expired_sessions_are_purged_on_login(client, db):
    user = await make_user(db, "jdoe")
    sid = await session_cookie(db, user)
    async with db.transaction() as s:
        await s.execute(
            update(Session).where(Session.id == sid).values(expires=utcnow() - timedelta(minutes=1))
        )
    assert (await login(client, "jdoe")).status_code == 200
    ids = [row.id for row in await sessions_of(db, "jdoe")]
    assert sid not in ids and len(ids) == 1


async def test_expired_session_is_refused(client, db):
    user = await make_user(db, "jdoe")
    sid = await session_cookie(db, user)
    async with db.transaction() as s:
        await s.execute(
            update(Session).where(Session.id == sid).values(expires=utcnow() - timedelta(seconds=1))
        )
    client.cookies.set("defguard_session", sid)
    r = await client.get("/me")
    assert r.status_code == 401
    assert r.json() == {"msg": "Session expired"}


# --- throttling --------------------------------------------------------------------


async def test_five_failures_block_further_attempts(client, db):
    await make_user(db, "jdoe")
    for _ in range(5):
        assert (await login(client, "jdoe", "Wrong!Passw0rd")).status_code == 401
    r = await login(client, "jdoe")
    assert r.status_code == 429
    assert r.json() == {"msg": "Too many login attempts"}
    # The e-mail address resolves to the same account and shares its counter.
    assert (await login(client, "jdoe@example.com")).status_code == 429

    # Five minutes after the last failure the block is over.
    async with db.transaction() as s:
        await s.execute(update(LoginFailure).values(at=LoginFailure.at - timedelta(minutes=5)))
    assert (await login(client, "jdoe")).status_code == 200


async def test_failures_spread_over_more_than_a_minute_do_not_block(client, db):
    await make_user(db, "jdoe")
    for _ in range(4):
        assert (await login(client, "jdoe", "Wrong!Passw0rd")).status_code == 401
    async with db.transaction() as s:
        await s.execute(update(LoginFailure).values(at=LoginFailure.at - timedelta(seconds=61)))
    assert (await login(client, "jdoe", "Wrong!Passw0rd")).status_code == 401
    assert (await login(client, "jdoe")).status_code == 200


async def test_concurrent_failures_cannot_exceed_the_limit(client, db):
    await make_user(db, "jdoe")
    results = await asyncio.gather(*(login(client, "jdoe", "Wrong!Passw0rd") for _ in range(8)))
    assert sorted(r.status_code for r in results) == [401] * 5 + [429] * 3
    async with db.session() as s:
        count = (await s.execute(select(func.count()).select_from(LoginFailure))).scalar_one()
    assert count == 5


# --- logout and session info ------------------------------------------------------------


async def test_logout_deletes_session_and_cookie(client, db):
    await make_user(db, "jdoe")
    await login(client, "jdoe")
    r = await client.post("/auth/logout")
    assert r.status_code == 200
    assert r.json() == {}
    assert "Max-Age=0" in r.headers["set-cookie"]
    assert await sessions_of(db, "jdoe") == []
    assert len(await events(db, "user_logout")) == 1
    r = await client.get("/me")
    assert r.status_code == 401


async def test_session_info(client, admin_client, db):
    r = await client.get("/session-info")
    assert r.json() == {
        "authorized": False,
        "is_admin": False,
        "active_wizard": None,
        "username": None,
    }
    r = await admin_client.get("/session-info")
    assert r.json() == {
        "authorized": True,
        "is_admin": True,
        "active_wizard": None,
        "username": "admin",
    }


async def test_me_requires_session(client):
    r = await client.get("/me")
    assert r.status_code == 401
    assert r.json() == {"msg": "Session is required"}
    client.cookies.set("defguard_session", "x" * 24)
    r = await client.get("/me")
    assert r.json() == {"msg": "Session not found"}


# --- TOTP ------------------------------------------------------------------------------


async def test_totp_mfa_flow(client, db):
    await make_user(db, "jdoe")
    assert (await login(client, "jdoe")).status_code == 200

    r = await client.post("/auth/totp/init")
    secret = r.json()["secret"]
    assert re.fullmatch(r"[A-Z2-7]{32}", secret)
    r = await client.post(
        "/auth/totp", json={"code": "000000" if totp_now(secret) != "000000" else "111111"}
    )
    assert r.status_code == 404
    assert r.json() == {"msg": "Invalid TOTP code"}

    r = await client.post("/auth/totp", json={"code": totp_now(secret)})
    assert r.status_code == 200
    codes = r.json()["codes"]
    assert len(codes) == 8
    assert all(re.fullmatch(r"[A-Za-z0-9]{16}", c) for c in codes)
    # The session that confirmed the factor stays usable.
    me = (await client.get("/me")).json()
    assert me["totp_enabled"] is True
    assert me["mfa_enabled"] is True
    assert me["mfa_method"] == "OneTimePassword"
    assert len(await events(db, "mfa_totp_enabled")) == 1

    await client.post("/auth/logout")
    r = await login(client, "jdoe")
    assert r.status_code == 201
    assert r.json() == {
        "mfa_method": "OneTimePassword",
        "totp_available": True,
        "webauthn_available": False,
        "email_available": False,
    }
    assert "defguard_session=" in r.headers["set-cookie"]
    r = await client.get("/me")
    assert r.status_code == 401
    assert r.json() == {"msg": "MFA not verified"}

    wrong = "123456" if totp_now(secret) != "123456" else "654321"
    r = await client.post("/auth/totp/verify", json={"code": wrong})
    assert r.status_code == 401
    assert r.json() == {"msg": "Invalid TOTP code"}
    assert len(await events(db, "user_mfa_login_failed")) == 1

    r = await client.post("/auth/totp/verify", json={"code": totp_now(secret)})
    assert r.status_code == 200
    assert r.json()["user"]["username"] == "jdoe"
    assert r.json()["url"] is None
    assert (await client.get("/me")).status_code == 200
    assert len(await events(db, "user_mfa_login")) == 1


async def test_totp_verify_failures_are_throttled(client, db):
    await make_user(db, "jdoe")
    await login(client, "jdoe")
    secret, _ = await enable_totp(client)
    await client.post("/auth/logout")
    assert (await login(client, "jdoe")).status_code == 201
    wrong = "000000"
    for _ in range(5):
        code = wrong if totp_now(secret) != wrong else "999999"
        assert (await client.post("/auth/totp/verify", json={"code": code})).status_code == 401
    r = await client.post("/auth/totp/verify", json={"code": totp_now(secret)})
    assert r.status_code == 429
    assert (await client.get("/me")).status_code == 401


async def test_recovery_code_is_consumed_once(client, db):
    await make_user(db, "jdoe")
    await login(client, "jdoe")
    _, codes = await enable_totp(client)
    async with db.session() as s:
        stored = (
            await s.execute(select(User.recovery_codes).where(User.username == "jdoe"))
        ).scalar_one()
    assert len(stored) == 8
    assert not set(codes) & set(stored), "recovery codes must not be stored in plain text"

    await client.post("/auth/logout")
    assert (await login(client, "jdoe")).status_code == 201
    r = await client.post("/auth/recovery", json={"code": codes[0]})
    assert r.status_code == 200
    assert r.json()["user"]["username"] == "jdoe"
    assert (await client.get("/me")).status_code == 200
    assert len(await events(db, "recovery_code_used")) == 1

    await client.post("/auth/logout")
    assert (await login(client, "jdoe")).status_code == 201
    r = await client.post("/auth/recovery", json={"code": codes[0]})
    assert r.status_code == 401
    assert r.json() == {"msg": "Unauthorized"}
    assert (await client.get("/me")).status_code == 401
    r = await client.post("/auth/recovery", json={"code": codes[1]})
    assert r.status_code == 200


async def test_totp_init_needs_full_session(client, db):
    await make_user(db, "jdoe")
    await login(client, "jdoe")
    await enable_totp(client)
    await client.post("/auth/logout")
    await login(client, "jdoe")
    r = await client.post("/auth/totp/init")
    assert r.status_code == 401
    assert r.json() == {"msg": "MFA not verified"}


async def test_totp_init_refused_while_enabled(client, db):
    await make_user(db, "jdoe")
    await login(client, "jdoe")
    await enable_totp(client)
    r = await client.post("/auth/totp/init")
    assert r.status_code == 400
    assert "already enabled" in r.json()["msg"]


async def test_disable_own_mfa(client, db):
    await make_user(db, "jdoe")
    await login(client, "jdoe")
    await enable_totp(client)
    r = await client.delete("/auth/mfa")
    assert r.status_code == 200
    assert r.json() == {}
    me = (await client.get("/me")).json()
    assert (me["mfa_enabled"], me["totp_enabled"], me["mfa_method"]) == (False, False, "None")
    async with db.session() as s:
        user = (await s.execute(select(User).where(User.username == "jdoe"))).scalar_one()
    assert user.totp_secret is None and user.recovery_codes == []
    assert len(await events(db, "mfa_disabled")) == 1
    await client.post("/auth/logout")
    assert (await login(client, "jdoe")).status_code == 200


async def test_admin_removes_user_totp(client, admin_client, db):
    await make_user(db, "jdoe")
    await login(client, "jdoe")
    await enable_totp(client)
    r = await admin_client.delete("/user/jdoe/totp")
    assert r.status_code == 200
    me = (await admin_client.get("/user/jdoe")).json()["user"]
    assert (me["mfa_enabled"], me["totp_enabled"], me["mfa_method"]) == (False, False, "None")
    assert [e.username for e in await events(db, "mfa_totp_disabled")] == ["admin"]
    assert (await admin_client.delete("/user/ghost/totp")).status_code == 404


async def test_admin_disables_user_mfa(client, admin_client, db):
    await make_user(db, "jdoe")
    await login(client, "jdoe")
    await enable_totp(client)
    assert (await admin_client.delete("/user/jdoe/mfa")).status_code == 200
    assert len(await events(db, "user_mfa_disabled")) == 1
    client.cookies.clear()
    assert (await login(client, "jdoe")).status_code == 200


async def test_user_cannot_touch_other_users_mfa(user_client, db):
    r = await user_client.delete("/user/admin/mfa")
    assert r.status_code == 403
    assert r.json() == {"msg": "requires privileged access"}
    assert (await user_client.delete("/user/admin/totp")).status_code == 403


async def test_put_auth_mfa(client, db):
    await make_user(db, "jdoe")
    await login(client, "jdoe")
    r = await client.put("/auth/mfa")
    assert r.status_code == 304
    assert (await client.get("/me")).status_code == 200
    await enable_totp(client)
    r = await client.put("/auth/mfa")
    assert r.status_code == 200
    assert r.json() == {}
    assert await sessions_of(db, "jdoe") == []


async def test_totp_code_cannot_be_replayed_in_its_window(app, client, db):
    import httpx

    from tests.conftest import USER_AGENT

    await make_user(db, "jdoe")
    await login(client, "jdoe")
    secret, _ = await enable_totp(client)
    await client.post("/auth/logout")
    transport = httpx.ASGITransport(app=app, client=("198.51.100.9", 40001))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver/api/v1", headers={"User-Agent": USER_AGENT}
    ) as other:
        assert (await login(client, "jdoe")).status_code == 201
        assert (await login(other, "jdoe")).status_code == 201
        for _ in range(20):
            code = totp_now(secret)
            first = await client.post("/auth/totp/verify", json={"code": code})
            if totp_now(secret) == code:  # still the same 30 s window
                break
        assert first.status_code == 200
        # Someone who saw the code uses it again in the same window: refused.
        replay = await other.post("/auth/totp/verify", json={"code": code})
        if totp_now(secret) == code:
            assert replay.status_code == 401
            assert (await other.get("/me")).status_code == 401
