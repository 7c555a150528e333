"""Password reset: the admin's reset and the public request/start/reset flow on the Edge."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from defguard.core.auth.models import Session
from defguard.core.auth.passwords import verify_password_sync
from defguard.core.enrollment.models import Token, TokenKind
from defguard.db.base import utcnow
from defguard.db.engine import Database
from defguard.edge import routes
from tests.conftest import make_user, session_cookie
from tests.integration.test_enrollment import (
    STRONG,
    _unix,
    count,
    edge,
    edit_settings,
    edit_token,
    edit_user,
    enrollment_token,
    events,
    get_token,
    get_user,
    mails,
)

OLD_PASSWORD = "Us3r!Passw0rd"


async def reset_token(db: Database) -> str:
    async with db.session() as s:
        return (
            await s.execute(select(Token.id).where(Token.kind == TokenKind.PASSWORD_RESET))
        ).scalar_one()


async def requested(db: Database, settings, email: str = "jdoe@example.com") -> str:
    answer = await edge(db, settings, "password_reset.request", {"email": email})
    assert (answer.status, answer.body) == (200, b"")
    return await reset_token(db)


async def opened(db: Database, settings, token: str) -> int:
    answer = await edge(db, settings, "password_reset.start", {"token": token})
    assert answer.status == 200, answer.body
    return answer.json["deadline_timestamp"]


# --- admin reset -----------------------------------------------------------------------------


async def test_admin_reset_mails_a_link_to_the_edge(with_smtp, admin_client, db):
    await edit_settings(db, public_proxy_url="https://enroll.acme.test/")
    await make_user(db, "jdoe")
    assert (await admin_client.post("/user/jdoe/reset_password")).status_code == 200
    token = await reset_token(db)
    (mail,) = await mails(db)
    assert mail == {
        "to": "jdoe@example.com",
        "template": "password_reset",
        "context": {
            "first_name": "Jdoe",
            "link": f"https://enroll.acme.test/password-reset?token={token}",
        },
    }


async def test_refused_admin_reset_queues_nothing(admin_client, db):
    assert (await admin_client.post("/user/admin/reset_password")).status_code == 400
    assert (await admin_client.post("/user/ghost/reset_password")).status_code == 404
    assert await mails(db) == []
    assert await count(db, Token) == 0


# --- password-reset/request ----------------------------------------------------------------------


async def test_request_mails_a_fresh_token(with_smtp, db, settings):
    await make_user(db, "jdoe")
    first = await requested(db, settings, "JDoe@Example.com")
    second = await requested(db, settings)
    assert first != second
    assert await get_token(db, first) is None  # replaced
    token = await get_token(db, second)
    assert token is not None and token.admin_id is None and token.email == "jdoe@example.com"
    assert timedelta(hours=23, minutes=59) < token.expires_at - utcnow() <= timedelta(hours=24)
    links = [m["context"]["link"] for m in await mails(db, "password_reset")]
    assert links == [
        f"http://localhost:8080/password-reset?token={first}",
        f"http://localhost:8080/password-reset?token={second}",
    ]
    (event, _) = await events(db, "password_reset_requested")
    assert event.username == "jdoe" and event.module == "enrollment"


async def test_request_reveals_nothing_about_accounts(admin_client, db, settings):
    await make_user(db, "off", active=False)
    await enrollment_token(admin_client, db, "anna")  # exists, not enrolled
    await make_user(db, "ldapless", password=None)  # no password, never enrolled
    for email in (
        "nobody@example.com",
        "off@example.com",
        "anna@example.com",
        "ldapless@example.com",
    ):
        answer = await edge(db, settings, "password_reset.request", {"email": email})
        assert (answer.status, answer.body, answer.metadata) == (200, b"", {})
    assert await mails(db, "password_reset") == []
    async with db.session() as s:
        kinds = (await s.execute(select(Token.kind))).scalars().all()
    assert TokenKind.PASSWORD_RESET not in kinds
    assert await events(db, "password_reset_requested") == []


# --- password-reset/start ---------------------------------------------------------------------------


async def test_start_opens_a_session(db, settings):
    await make_user(db, "jdoe")
    token = await requested(db, settings)
    before = utcnow()
    answer = await edge(db, settings, "password_reset.start", {"token": token})
    assert answer.status == 200
    assert set(answer.json) == {"deadline_timestamp"}
    deadline = answer.json["deadline_timestamp"]
    assert abs(deadline - _unix(before + timedelta(minutes=10))) <= 2
    assert answer.metadata == {
        routes.META_SET_SESSION: token,
        routes.META_SESSION_EXPIRES: str(deadline),
    }
    assert await opened(db, settings, token) == deadline
    assert len(await events(db, "password_reset_started")) == 1


async def test_start_errors(admin_client, db, settings):
    await make_user(db, "jdoe")
    token = await requested(db, settings)
    enrollment = await enrollment_token(admin_client, db, "anna")

    unknown = await edge(db, settings, "password_reset.start", {"token": "z" * 32})
    assert (unknown.status, unknown.json) == (401, {"error": "invalid token"})
    wrong_kind = await edge(db, settings, "password_reset.start", {"token": enrollment})
    assert (wrong_kind.status, wrong_kind.error) == (403, "invalid token")

    await edit_user(db, "jdoe", is_active=False)
    disabled = await edge(db, settings, "password_reset.start", {"token": token})
    assert (disabled.status, disabled.error) == (403, "user disabled or not yet enrolled")
    stored = await get_token(db, token)
    assert stored is not None and stored.session_deadline is None
    await edit_user(db, "jdoe", is_active=True, enrollment_pending=True)
    pending = await edge(db, settings, "password_reset.start", {"token": token})
    assert (pending.status, pending.error) == (403, "user disabled or not yet enrolled")
    await edit_user(db, "jdoe", enrollment_pending=False)

    await edit_token(db, token, expires_at=utcnow() - timedelta(seconds=1))
    expired = await edge(db, settings, "password_reset.start", {"token": token})
    assert (expired.status, expired.error) == (401, "token expired")
    assert await events(db, "password_reset_started") == []


# --- password-reset/reset ---------------------------------------------------------------------------


async def test_reset_sets_the_password_and_ends_sessions(with_smtp, db, settings):
    user = await make_user(db, "jdoe")
    await session_cookie(db, user)
    token = await requested(db, settings)
    await opened(db, settings, token)
    answer = await edge(
        db,
        settings,
        "password_reset.reset",
        {"password": STRONG, "token": "ignored"},
        session=token,
    )
    assert (answer.status, answer.body) == (200, b"")
    assert answer.metadata == {routes.META_CLEAR_SESSION: "1"}
    stored = await get_user(db, "jdoe")
    assert verify_password_sync(stored.password_hash, STRONG)
    assert not verify_password_sync(stored.password_hash, OLD_PASSWORD)
    assert await count(db, Session) == 0
    spent = await get_token(db, token)
    assert spent is not None and spent.used_at is not None
    (done,) = await mails(db, "password_reset_done")
    assert done == {
        "to": "jdoe@example.com",
        "template": "password_reset_done",
        "context": {"first_name": "Jdoe"},
    }
    assert len(await events(db, "password_reset_completed")) == 1

    again = await edge(db, settings, "password_reset.reset", {"password": STRONG}, session=token)
    assert (again.status, again.error) == (401, "invalid token")
    restart = await edge(db, settings, "password_reset.start", {"token": token})
    assert (restart.status, restart.error) == (401, "invalid token")


async def test_reset_refusals_write_nothing(admin_client, db, settings):
    user = await make_user(db, "jdoe")
    await session_cookie(db, user)
    token = await requested(db, settings)
    body = {"password": STRONG}

    missing = await edge(db, settings, "password_reset.reset", body)
    assert (missing.status, missing.error) == (401, "Missing authorization header")
    not_started = await edge(db, settings, "password_reset.reset", body, session=token)
    assert (not_started.status, not_started.error) == (401, "invalid token")
    await opened(db, settings, token)
    enrollment = await enrollment_token(admin_client, db, "anna")
    wrong_kind = await edge(db, settings, "password_reset.reset", body, session=enrollment)
    assert (wrong_kind.status, wrong_kind.error) == (401, "invalid token")

    weak = await edge(db, settings, "password_reset.reset", {"password": "weakpass"}, session=token)
    assert (weak.status, weak.error) == (400, "password not strong enough")
    await edit_user(db, "jdoe", is_active=False)
    disabled = await edge(db, settings, "password_reset.reset", body, session=token)
    assert (disabled.status, disabled.error) == (403, "user disabled")
    await edit_user(db, "jdoe", is_active=True)
    await edit_token(db, token, session_deadline=utcnow() - timedelta(seconds=1))
    late = await edge(db, settings, "password_reset.reset", body, session=token)
    assert (late.status, late.error) == (401, "Session expired")

    assert verify_password_sync((await get_user(db, "jdoe")).password_hash, OLD_PASSWORD)
    assert await count(db, Session) == 2  # jdoe's and the admin client's
    stored = await get_token(db, token)
    assert stored is not None and stored.used_at is None
    assert await mails(db, "password_reset_done") == []
    assert await events(db, "password_reset_completed") == []
