"""`client-mfa/start` and `client-mfa/finish` through Core's Edge dispatch (spec sequence 4(c)).

Every request goes through `dispatch` exactly as an Edge hands it over, on a
real PostgreSQL; "two Cores" are two `Database` objects on the same URL.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pyotp
import pytest
from sqlalchemy import func, select, text, update

from defguard.config import CoreSettings
from defguard.core.activity.models import ActivityLogEvent
from defguard.core.auth.mfa import TOTP_INTERVAL, new_totp_secret, totp_secret_base32
from defguard.core.devices.models import Device
from defguard.core.edge_requests.dispatch import DirectCall
from defguard.core.edge_requests.handlers import dispatch
from defguard.core.gateways.models import PeerChange
from defguard.core.groups.models import Group
from defguard.core.links.state import desired_peers, location_update
from defguard.core.locations.models import Location
from defguard.core.settings.service import get_settings_row
from defguard.core.users.models import User
from defguard.core.vpn_sessions import edge as client_mfa
from defguard.core.vpn_sessions import tokens
from defguard.core.vpn_sessions.models import VpnClientSession
from defguard.db.direct import conninfo
from defguard.db.engine import Database
from defguard.edge import routes
from defguard.proto import edge_pb2
from defguard.proto import gateway_pb2 as pb
from tests.conftest import USER_AGENT, make_user
from tests.integration.test_locations import (
    add_device,
    create_location,
    location_body,
    revision,
)

CLIENT_IP = "203.0.113.9"


# -- helpers ---------------------------------------------------------------------------


async def call(
    db: Database,
    operation: str,
    body: dict[str, Any],
    *,
    ip: str = CLIENT_IP,
    request_id: str | None = None,
) -> tuple[int, Any]:
    """One client request as an Edge forwards it; (status, decoded JSON body)."""
    response = await dispatch(
        db,
        CoreSettings(),
        edge_pb2.EdgeRequest(
            request_id=request_id or uuid.uuid4().hex,
            method=operation,
            body=json.dumps(body).encode(),
            client_ip=ip,
            user_agent=USER_AGENT,
        ),
    )
    return response.status, json.loads(response.body) if response.body else None


async def start(
    db: Database, location_id: int, pubkey: str, method: int = 0, **kwargs: Any
) -> tuple[int, Any]:
    return await call(
        db,
        "client_mfa.start",
        {"location_id": location_id, "pubkey": pubkey, "method": method},
        **kwargs,
    )


async def finish(db: Database, token: str, code: str | None, **kwargs: Any) -> tuple[int, Any]:
    body: dict[str, Any] = {"token": token}
    if code is not None:
        body["code"] = code
    return await call(db, "client_mfa.finish", body, **kwargs)


async def enable_totp(db: Database, username: str) -> bytes:
    secret = new_totp_secret()
    async with db.transaction() as s:
        await s.execute(
            update(User)
            .where(User.username == username)
            .values(totp_enabled=True, totp_secret=secret, mfa_enabled=True)
        )
    return secret


async def enable_email_mfa(db: Database, username: str) -> None:
    async with db.transaction() as s:
        await s.execute(
            update(User)
            .where(User.username == username)
            .values(email_mfa_enabled=True, email_mfa_secret=new_totp_secret(), mfa_enabled=True)
        )


def totp_code(secret: bytes) -> str:
    """The current code, taken far enough from a step boundary to still be current when checked."""
    if TOTP_INTERVAL - time.time() % TOTP_INTERVAL < 2:
        time.sleep(2)
    return pyotp.TOTP(totp_secret_base32(secret), interval=TOTP_INTERVAL).now()


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


async def forget_totp_step(db: Database, username: str) -> None:
    """Lets a test pass TOTP twice within one 30 s step (each step's code is single-use)."""
    async with db.transaction() as s:
        await s.execute(update(User).where(User.username == username).values(totp_last_step=None))


async def peers(db: Database, location_id: int) -> dict[str, str]:
    """The location's desired peers: public key -> preshared key."""
    async with db.session() as s:
        return {p.public_key: p.preshared_key for p in await desired_peers(s, location_id)}


async def update_at(db: Database, location_id: int, rev: int) -> pb.LocationUpdate:
    async with db.session() as s:
        return await location_update(s, location_id, rev)


async def events(db: Database, event: str) -> list[ActivityLogEvent]:
    async with db.session() as s:
        return list(
            (
                await s.execute(
                    select(ActivityLogEvent)
                    .where(ActivityLogEvent.event == event)
                    .order_by(ActivityLogEvent.id)
                )
            ).scalars()
        )


async def sessions(db: Database) -> list[VpnClientSession]:
    async with db.session() as s:
        return list(
            (await s.execute(select(VpnClientSession).order_by(VpnClientSession.id))).scalars()
        )


async def mail_jobs(db: Database) -> list[dict[str, Any]]:
    async with db.session() as s:
        rows = await s.execute(
            text(
                "SELECT args FROM procrastinate_jobs WHERE task_name = 'defguard:send_mail'"
                " ORDER BY id"
            )
        )
        return [r[0] for r in rows]


async def mfa_location(admin_client, **overrides: Any) -> dict[str, Any]:
    return await create_location(admin_client, location_mfa_mode="internal", **overrides)


async def jdoe_device(admin_client, db: Database) -> dict[str, Any]:
    """A laptop of `jdoe`, addressed in every location that admits him."""
    del db
    return (await add_device(admin_client, "jdoe"))["device"]


async def connect(db: Database, location_id: int, pubkey: str, secret: bytes, **kwargs: Any) -> str:
    """A whole TOTP flow; returns the preshared key."""
    status, body = await start(db, location_id, pubkey, **kwargs)
    assert status == 200, body
    status, body = await finish(db, body["token"], totp_code(secret), **kwargs)
    assert status == 200, body
    return body["preshared_key"]


@pytest.fixture
async def setup(admin_client, db):
    """An internal-MFA location, `jdoe` with TOTP and a laptop in it."""
    location = await mfa_location(admin_client)
    await make_user(db, "jdoe")
    secret = await enable_totp(db, "jdoe")
    device = await jdoe_device(admin_client, db)
    return {"location": location["id"], "key": device["wireguard_pubkey"], "secret": secret}


# -- the flows ---------------------------------------------------------------------------


async def test_totp_flow_started_on_one_core_finished_on_another(db, setup):
    lid, key, secret = setup["location"], setup["key"], setup["secret"]
    # Before MFA the device is no peer at all in this location.
    assert await peers(db, lid) == {}
    before = await revision(db, lid)

    status, body = await start(db, lid, key)
    assert status == 200, body
    assert set(body) == {"token", "challenge"} and body["challenge"] is None
    assert await peers(db, lid) == {}
    assert await revision(db, lid) == before  # a pending attempt changes no peer

    other_core = Database(db.url)
    try:
        status, done = await finish(other_core, body["token"], totp_code(secret))
    finally:
        await other_core.dispose()
    assert status == 200, done
    assert set(done) == {"preshared_key", "token"} and done["token"] is None
    psk = done["preshared_key"]
    assert len(base64.b64decode(psk, validate=True)) == 32

    assert await peers(db, lid) == {key: psk}
    assert await revision(db, lid) == before + 1
    upd = await update_at(db, lid, before + 1)
    assert [(p.public_key, p.preshared_key) for p in upd.upsert_peers] == [(key, psk)]
    async with db.session() as s:
        logged = (
            await s.execute(
                select(PeerChange.public_key).where(
                    PeerChange.location_id == lid, PeerChange.revision == before + 1
                )
            )
        ).scalars()
        assert set(logged) == {key}

    [active] = await sessions(db)
    assert active.authorized_at is not None and active.ended_at is None
    assert active.preshared_key == psk and active.method == 0
    [event] = await events(db, "vpn_client_mfa_success")
    assert (event.username, event.location, event.module) == ("jdoe", "HQ", "vpn")
    assert str(event.ip) == CLIENT_IP


async def test_email_flow_mails_the_code_and_accepts_it(with_smtp, admin_client, db):
    location = await mfa_location(admin_client)
    await make_user(db, "jdoe")
    await enable_email_mfa(db, "jdoe")
    key = (await jdoe_device(admin_client, db))["wireguard_pubkey"]

    status, body = await start(db, location["id"], key, method=1)
    assert status == 200, body
    [job] = await mail_jobs(db)
    assert job["to"] == "jdoe@example.com" and job["template"] == "mfa_code"
    assert set(job["context"]) == {"first_name", "code", "purpose"}
    code = job["context"]["code"]
    assert len(code) == 6 and code.isdigit()

    status, missing = await finish(db, body["token"], None)
    assert (status, missing) == (400, {"error": "email MFA code not provided"})
    status, done = await finish(db, body["token"], code)
    assert status == 200, done
    assert await peers(db, location["id"]) == {key: done["preshared_key"]}


async def test_wrong_code_is_401_no_peer_and_the_session_stays(db, setup):
    lid, key, secret = setup["location"], setup["key"], setup["secret"]
    _, body = await start(db, lid, key)
    before = await revision(db, lid)

    code = totp_code(secret)
    status, err = await finish(db, body["token"], wrong(code))
    assert (status, err) == (401, {"error": "unauthorized"})
    assert await peers(db, lid) == {}
    assert await revision(db, lid) == before
    assert len(await events(db, "vpn_client_mfa_failed")) == 1
    assert [s.authorized_at for s in await sessions(db)] == [None]

    # Retry with the right code on the same token.
    status, done = await finish(db, body["token"], totp_code(secret))
    assert status == 200, done
    assert await peers(db, lid) == {key: done["preshared_key"]}


async def test_totp_code_is_single_use(db, setup):
    lid, key, secret = setup["location"], setup["key"], setup["secret"]
    code = totp_code(secret)
    _, first = await start(db, lid, key)
    status, done = await finish(db, first["token"], code)
    assert status == 200, done
    _, again = await start(db, lid, key)
    status, err = await finish(db, again["token"], code)
    assert (status, err) == (401, {"error": "unauthorized"})
    assert await peers(db, lid) == {key: done["preshared_key"]}


async def test_new_mfa_replaces_the_active_session_and_its_key(db, setup):
    lid, key, secret = setup["location"], setup["key"], setup["secret"]
    first = await connect(db, lid, key, secret)
    await forget_totp_step(db, "jdoe")
    second = await connect(db, lid, key, secret)
    assert first != second
    assert await peers(db, lid) == {key: second}
    old, new = await sessions(db)
    assert (old.ended_at is not None, old.end_reason) == (True, "replaced")
    assert (new.ended_at, new.preshared_key) == (None, second)


async def test_new_start_replaces_the_pending_attempt(db, setup):
    lid, key, secret = setup["location"], setup["key"], setup["secret"]
    _, first = await start(db, lid, key)
    _, second = await start(db, lid, key)
    assert len(await sessions(db)) == 1
    status, err = await finish(db, first["token"], totp_code(secret))
    assert (status, err) == (400, {"error": "login session not found"})
    status, done = await finish(db, second["token"], totp_code(secret))
    assert status == 200, done
    # A finished attempt cannot be finished again.
    status, err = await finish(db, second["token"], totp_code(secret))
    assert (status, err) == (400, {"error": "login session not found"})


async def test_retried_start_and_finish_answer_as_the_first_attempt(db, setup):
    """An Edge re-sends a request to another Core when the first Core's stream broke:
    the client must get the first attempt's answer, not a second attempt."""
    lid, key, secret = setup["location"], setup["key"], setup["secret"]
    other_core = Database(db.url, pool_size=2)
    try:
        status, first = await start(db, lid, key, request_id="start-1")
        assert status == 200, first
        status, again = await start(other_core, lid, key, request_id="start-1")
        assert (status, again) == (200, first)
        assert len(await sessions(db)) == 1

        code = totp_code(secret)
        status, done = await finish(db, first["token"], code, request_id="finish-1")
        assert status == 200, done
        status, replayed = await finish(other_core, first["token"], code, request_id="finish-1")
        assert (status, replayed) == (200, done)
        active = [s for s in await sessions(db) if s.authorized_at is not None]
        assert [s.preshared_key for s in active] == [done["preshared_key"]]
    finally:
        await other_core.dispose()


async def test_only_a_pending_attempt_commits_without_waiting_for_disk(db, setup):
    """A pending attempt lost in a database crash only makes the client start again, so
    `client_mfa_open` does not wait for its WAL flush. The setting must end with that
    transaction: the pooled connection next carries authorisations, which must wait."""
    lid, key, secret = setup["location"], setup["key"], setup["secret"]
    request = DirectCall(
        database=db,
        operation="client_mfa.start",
        body=routes.ClientMfaStart(location_id=lid, pubkey=key, method=0),
        request_id=uuid.uuid4().hex,
        client_ip=CLIENT_IP,
        user_agent=USER_AGENT,
        metadata={},
        settings=CoreSettings(),
    )

    async def setting(conn: psycopg.AsyncConnection) -> str:
        return (await (await conn.execute("SHOW synchronous_commit")).fetchone())[0]

    async with await psycopg.AsyncConnection.connect(conninfo(db.url)) as conn:
        assert await setting(conn) == "on"
        cursor = await conn.execute(client_mfa._OPEN, client_mfa.open_params(request))
        assert (await cursor.fetchone())[0] == "ok"
        assert await setting(conn) == "off"
        await conn.commit()
        assert await setting(conn) == "on"
    pending = await sessions(db)
    assert len(pending) == 1 and pending[0].authorized_at is None
    # The usual flow on the same database still authorises.
    assert await connect(db, lid, key, secret)


async def test_a_retried_wrong_code_counts_once(db, setup):
    """The Edge re-sends a request to another Core with the same id: one failure, one answer."""
    lid, key, secret = setup["location"], setup["key"], setup["secret"]
    _, body = await start(db, lid, key)
    bad = wrong(totp_code(secret))
    first = await finish(db, body["token"], bad, request_id="retry-1")
    other_core = Database(db.url)
    try:
        again = await finish(other_core, body["token"], bad, request_id="retry-1")
    finally:
        await other_core.dispose()
    assert first == again == (401, {"error": "unauthorized"})
    async with db.session() as s:
        failures = await s.scalar(
            text("SELECT count(*) FROM login_failure WHERE login LIKE 'client-mfa:%'")
        )
    assert failures == 2  # one per key: the device and the address
    assert len(await events(db, "vpn_client_mfa_failed")) == 1


# -- rate limiting -------------------------------------------------------------------------


async def test_wrong_codes_block_the_device_then_the_address(admin_client, db, setup):
    lid, key, secret = setup["location"], setup["key"], setup["secret"]
    _, body = await start(db, lid, key)
    code = totp_code(secret)
    # Five wrong codes from five addresses: the device is blocked whatever the address.
    for n in range(5):
        status, _ = await finish(db, body["token"], wrong(code), ip=f"198.51.100.{n + 1}")
        assert status == 401
    status, err = await finish(db, body["token"], totp_code(secret), ip="198.51.100.99")
    assert (status, err) == (429, {"error": "too many attempts"})
    status, err = await start(db, lid, key, ip="198.51.100.99")
    assert (status, err) == (429, {"error": "too many attempts"})
    assert await peers(db, lid) == {}

    # Other devices are not blocked by the laptop's failures, but five wrong
    # codes from one address, spread over two devices, block that address.
    phone = (await add_device(admin_client, "jdoe", "phone"))["device"]["wireguard_pubkey"]
    tablet = (await add_device(admin_client, "jdoe", "tablet"))["device"]["wireguard_pubkey"]
    _, on_phone = await start(db, lid, phone, ip="198.51.100.1")
    _, on_tablet = await start(db, lid, tablet, ip="198.51.100.1")
    for token in [on_phone["token"]] * 3 + [on_tablet["token"]] * 2:
        status, _ = await finish(db, token, wrong(code), ip="192.0.2.50")
        assert status == 401
    status, err = await finish(db, on_tablet["token"], totp_code(secret), ip="192.0.2.50")
    assert (status, err) == (429, {"error": "too many attempts"})
    # The tablet itself is not blocked: from another address it connects.
    status, done = await finish(db, on_tablet["token"], totp_code(secret), ip="192.0.2.51")
    assert status == 200, done
    assert await peers(db, lid) == {tablet: done["preshared_key"]}


# -- errors ------------------------------------------------------------------------------------


async def _set_mode(db: Database, location_id: int, mode: str) -> None:
    async with db.transaction() as s:
        await s.execute(
            text(
                "UPDATE wireguard_network SET location_mfa_mode = CAST(:m AS location_mfa_mode)"
                " WHERE id = :id"
            ),
            {"m": mode, "id": location_id},
        )


async def test_start_errors(admin_client, db, setup):
    lid, key = setup["location"], setup["key"]
    plain = await create_location(
        admin_client, name="plain", address="10.20.0.1/24", location_mfa_mode="disabled"
    )

    async def error(location_id: int, pubkey: str, method: int) -> tuple[int, str]:
        status, body = await start(db, location_id, pubkey, method)
        return status, body["error"]

    assert await error(999_999, key, 0) == (400, "location not found")
    assert await error(2**63, key, 0) == (400, "location not found")
    assert await error(plain["id"], key, 0) == (400, "MFA not enabled for location")
    assert await error(lid, "bm90IGEga2V5", 0) == (400, "device not found")
    assert await error(lid, key, 7) == (400, "invalid MFA method selected")
    assert await error(lid, key, -1) == (400, "invalid MFA method selected")
    assert await error(lid, key, 2) == (400, "selected MFA method not supported by location")
    for method in (3, 4):
        assert await error(lid, key, method) == (400, "selected MFA method not available")
    # E-mail MFA is not configured for jdoe.
    assert await error(lid, key, 1) == (400, "selected MFA method not available")

    # External MFA: only OpenID, and no provider is configured.
    await _set_mode(db, lid, "external")
    assert await error(lid, key, 2) == (400, "selected MFA method not available")
    assert await error(lid, key, 0) == (400, "selected MFA method not supported by location")

    assert await sessions(db) == []
    assert await mail_jobs(db) == []


async def test_start_without_totp_configured(admin_client, db):
    location = await mfa_location(admin_client)
    await make_user(db, "jdoe")
    key = (await jdoe_device(admin_client, db))["wireguard_pubkey"]
    status, body = await start(db, location["id"], key, 0)
    assert (status, body) == (400, {"error": "selected MFA method not available"})


async def test_start_outside_the_allowed_groups_is_401(admin_client, db):
    await make_user(db, "jdoe")
    await enable_totp(db, "jdoe")
    r = await admin_client.post("/group", json={"name": "devs", "is_admin": False, "members": []})
    assert r.status_code == 201, r.text
    location = await mfa_location(admin_client, allow_all_groups=False, allowed_groups=["devs"])
    key = (await jdoe_device(admin_client, db))["wireguard_pubkey"]
    status, body = await start(db, location["id"], key, 0)
    assert (status, body) == (401, {"error": "unauthorized"})
    assert await sessions(db) == []

    # Joining the group admits the device.
    async with db.session() as s:
        group_id = await s.scalar(select(Group.id).where(Group.name == "devs"))
    r = await admin_client.post(f"/group/{group_id}", json={"username": "jdoe"})
    assert r.status_code in (200, 201), r.text
    status, body = await start(db, location["id"], key, 0)
    assert status == 200, body


async def test_finish_errors(db, setup):
    lid, key, secret = setup["location"], setup["key"], setup["secret"]
    _, body = await start(db, lid, key)
    token = body["token"]

    for bad in ("", "not-a-jwt", token[:-4] + "AAAA"):
        assert await finish(db, bad, "123456") == (400, {"error": "invalid token"})

    async with db.session() as s:
        secret_key = (await get_settings_row(s)).secret_key
    claims = tokens.verify(secret_key, token)
    expired = tokens.issue(
        secret_key, claims, now=datetime.now(UTC) - tokens.TOKEN_LIFETIME - timedelta(seconds=1)
    )
    assert await finish(db, expired, "123456") == (400, {"error": "invalid token"})
    foreign = tokens.issue("another deployment's secret", claims)
    assert await finish(db, foreign, "123456") == (400, {"error": "invalid token"})
    # A valid signature on a token naming another key (or no session at all).
    other_key = tokens.issue(secret_key, tokens.MfaClaims(claims.session_id, lid, "b3RoZXI="))
    assert await finish(db, other_key, "123456") == (400, {"error": "login session not found"})
    gone = tokens.issue(secret_key, tokens.MfaClaims(claims.session_id + 100, lid, key))
    assert await finish(db, gone, "123456") == (400, {"error": "login session not found"})

    assert await finish(db, token, None) == (400, {"error": "TOTP code not provided"})
    assert await finish(db, token, "") == (400, {"error": "TOTP code not provided"})
    # None of that counted as a wrong code or made a peer.
    assert await events(db, "vpn_client_mfa_failed") == []
    assert await peers(db, lid) == {}
    status, done = await finish(db, token, totp_code(secret))
    assert status == 200, done


@pytest.mark.parametrize("finishing_core", ["same", "other"])
async def test_finish_rechecks_what_changed_since_start(db, setup, finishing_core):
    """The Core that served `start` keeps the attempt and skips reading it again at
    `finish`; any other Core reads it. Either way a change since `start` counts."""
    lid, key, secret = setup["location"], setup["key"], setup["secret"]
    finisher = db if finishing_core == "same" else Database(db.url)
    try:
        # The device got a new key: the token, bound to the old one, is void.
        _, body = await start(db, lid, key)
        assert body["token"] in client_mfa._opened[db]
        async with db.transaction() as s:
            await s.execute(
                update(Device).where(Device.wireguard_pubkey == key).values(wireguard_pubkey="bmV3")
            )
        status, err = await finish(finisher, body["token"], totp_code(secret))
        assert (status, err) == (400, {"error": "login session not found"})
        # Kept for one `finish` only (of the Core that kept it).
        assert (body["token"] in client_mfa._opened[db]) is (finishing_core == "other")

        # The location stopped asking for MFA.
        _, body = await start(db, lid, "bmV3")
        await _set_mode(db, lid, "disabled")
        status, err = await finish(finisher, body["token"], totp_code(secret))
        assert (status, err) == (400, {"error": "MFA not enabled for location"})
    finally:
        if finisher is not db:
            await finisher.dispose()
    assert await events(db, "vpn_client_mfa_failed") == []
    async with db.session() as s:
        active = await s.scalar(
            select(func.count())
            .select_from(VpnClientSession)
            .where(VpnClientSession.authorized_at.is_not(None))
        )
    assert active == 0


async def test_finish_after_losing_access_is_401(admin_client, db, setup):
    lid, key, secret = setup["location"], setup["key"], setup["secret"]
    _, body = await start(db, lid, key)
    async with db.transaction() as s:
        await s.execute(update(User).where(User.username == "jdoe").values(is_active=False))
    status, err = await finish(db, body["token"], totp_code(secret))
    assert (status, err) == (401, {"error": "unauthorized"})
    assert await peers(db, lid) == {}


# -- the location's MFA mode ---------------------------------------------------------------


async def test_changing_the_mfa_mode_changes_every_peer(admin_client, db):
    await make_user(db, "jdoe")
    secret = await enable_totp(db, "jdoe")
    location = await create_location(admin_client)
    lid = location["id"]
    laptop = (await add_device(admin_client, "jdoe"))["device"]["wireguard_pubkey"]
    phone = (await add_device(admin_client, "jdoe", "phone"))["device"]["wireguard_pubkey"]
    assert await peers(db, lid) == {laptop: "", phone: ""}

    # MFA on: every peer leaves the gateways in the diff.
    r = await admin_client.put(f"/network/{lid}", json=location_body(location_mfa_mode="internal"))
    assert r.status_code == 200, r.text
    rev = await revision(db, lid)
    upd = await update_at(db, lid, rev)
    assert sorted(upd.remove_peers) == sorted([laptop, phone])
    assert not upd.upsert_peers
    assert await peers(db, lid) == {}

    psk = await connect(db, lid, laptop, secret)
    assert await peers(db, lid) == {laptop: psk}
    _, pending = await start(db, lid, phone)

    # MFA off: every device is a peer again, without a preshared key, and the
    # session is over (turning MFA back on would not bring the old key back).
    r = await admin_client.put(f"/network/{lid}", json=location_body(location_mfa_mode="disabled"))
    assert r.status_code == 200, r.text
    rev = await revision(db, lid)
    upd = await update_at(db, lid, rev)
    assert {p.public_key: p.preshared_key for p in upd.upsert_peers} == {laptop: "", phone: ""}
    [session] = await sessions(db)
    assert session.end_reason == "location MFA mode changed"
    # An attempt started under MFA cannot be finished any more.
    await forget_totp_step(db, "jdoe")
    status, err = await finish(db, pending["token"], totp_code(secret))
    assert (status, err) == (400, {"error": "login session not found"})

    r = await admin_client.put(f"/network/{lid}", json=location_body(location_mfa_mode="internal"))
    assert r.status_code == 200, r.text
    assert await peers(db, lid) == {}


async def test_location_without_mfa_keeps_its_peers_without_sessions(admin_client, db):
    await make_user(db, "jdoe")
    location = await create_location(admin_client)
    key = (await add_device(admin_client, "jdoe"))["device"]["wireguard_pubkey"]
    assert await peers(db, location["id"]) == {key: ""}
    async with db.session() as s:
        assert await s.scalar(select(func.count()).select_from(VpnClientSession)) == 0
        mode = await s.scalar(
            select(Location.location_mfa_mode).where(Location.id == location["id"])
        )
    assert mode.value == "disabled"
