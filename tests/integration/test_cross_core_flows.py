"""Every multi-step flow started on one Core and finished on another.

Two "Cores" here are two independent app/engine pairs on the same database,
as two processes would be: nothing one of them keeps in memory is visible to
the other, so a flow only succeeds if its state lives in PostgreSQL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from defguard.config import CoreSettings
from defguard.core.app import create_app
from defguard.core.links.edge import cookie_key
from defguard.core.settings.service import get_settings_row
from defguard.db.engine import Database
from tests.conftest import USER_AGENT, make_user
from tests.integration.test_auth import totp_now
from tests.integration.test_enrollment import edge, enrollment_token, new_key

PASSWORD = "Str0ng!Passw0rd"


@pytest.fixture
async def other_core(db: Database, settings: CoreSettings) -> AsyncIterator[Database]:
    second = Database(db.url)
    try:
        yield second
    finally:
        await second.dispose()


@pytest.fixture
async def other_client(
    other_core: Database, settings: CoreSettings
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, other_core, own_db=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver/api/v1", headers={"User-Agent": USER_AGENT}
    ) as http:
        yield http


async def test_web_login_with_totp_across_cores(client, other_client, db):
    """Password on Core A, TOTP on Core B, then the session works on both."""
    await make_user(db, "jdoe", password=PASSWORD)
    r = await client.post("/auth", json={"username": "jdoe", "password": PASSWORD})
    assert r.status_code == 200
    r = await client.post("/auth/totp/init")
    secret = r.json()["secret"]
    assert (await client.post("/auth/totp", json={"code": totp_now(secret)})).status_code == 200
    await client.post("/auth/logout")

    r = await client.post("/auth", json={"username": "jdoe", "password": PASSWORD})
    assert r.status_code == 201  # MFA required
    other_client.cookies = client.cookies
    # A code of the next step: the replay guard saw this step's code on Core A.
    r = await other_client.post("/auth/totp/verify", json={"code": totp_now_next(secret)})
    assert r.status_code == 200, r.text
    client.cookies = other_client.cookies
    assert (await client.get("/me")).json()["username"] == "jdoe"
    assert (await other_client.get("/me")).json()["username"] == "jdoe"


def totp_now_next(secret: str) -> str:
    """Wait for the next TOTP step: the enabling code of this step was already used."""
    import time

    step = int(time.time()) // 30
    while int(time.time()) // 30 == step:
        time.sleep(0.2)
    return totp_now(secret)


async def test_enrollment_across_cores(admin_client, db, other_core, settings):
    token = await enrollment_token(admin_client, db)
    started = await edge(db, settings, "enrollment.start", {"token": token})
    assert started.status == 200
    session = started.metadata["set_session"]
    created = await edge(
        other_core,
        settings,
        "enrollment.create_device",
        {"name": "laptop", "pubkey": new_key()},
        session=session,
    )
    assert created.status == 200, created.body
    done = await edge(
        db, settings, "enrollment.activate_user", {"password": PASSWORD}, session=session
    )
    assert done.status == 200, done.body
    polled = await edge(other_core, settings, "poll", {"token": created.json["token"]})
    assert polled.status == 200
    assert polled.json["device_config"]["device"]["name"] == "laptop"


async def test_password_reset_across_cores(db, other_core, settings):
    await make_user(db, "jdoe", password=PASSWORD)
    from sqlalchemy import select

    from defguard.core.enrollment.models import Token, TokenKind

    # With SMTP settings, so the reset mail (and with it the token) is issued.
    async with db.transaction() as s:
        row = await get_settings_row(s)
        row.smtp_server, row.smtp_sender = "smtp.example.test", "vpn@example.test"
    asked = await edge(db, settings, "password_reset.request", {"email": "jdoe@example.com"})
    assert asked.status == 200
    async with db.session() as s:
        token = (
            await s.execute(select(Token.id).where(Token.kind == TokenKind.PASSWORD_RESET))
        ).scalar_one()
    started = await edge(other_core, settings, "password_reset.start", {"token": token})
    assert started.status == 200, started.body
    reset = await edge(
        db,
        settings,
        "password_reset.reset",
        {"password": "N3w!Passw0rd"},
        session=started.metadata["set_session"],
    )
    assert reset.status == 200, reset.body


async def test_every_core_gives_edges_the_same_cookie_key(db, other_core):
    async with db.session() as a, other_core.session() as b:
        key_a = cookie_key((await get_settings_row(a)).secret_key)
        key_b = cookie_key((await get_settings_row(b)).secret_key)
    assert key_a == key_b and len(key_a) == 32
