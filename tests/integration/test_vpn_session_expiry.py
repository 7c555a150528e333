"""MFA sessions end when their device never connects or stops handshaking, and their peers go."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta
from types import SimpleNamespace

from sqlalchemy import select, update
from sqlalchemy.sql.selectable import ScalarSelect

from defguard.core.devices.models import Device
from defguard.core.gateways.stats import store_stats_batch
from defguard.core.jobs import make_job_app, tasks
from defguard.core.vpn_sessions.models import VpnClientSession
from defguard.core.vpn_sessions.service import expire_sessions
from defguard.core.vpn_sessions.tasks import expire_vpn_sessions
from defguard.db.base import utcnow
from defguard.db.engine import Database
from defguard.proto import gateway_pb2 as pb
from tests.conftest import make_user
from tests.integration.test_client_mfa import (
    connect,
    enable_totp,
    events,
    forget_totp_step,
    mfa_location,
    peers,
    sessions,
    start,
    update_at,
)
from tests.integration.test_locations import add_device, create_location, revision

THRESHOLD = 300  # the locations' peer_disconnect_threshold here


def device_id_of(pubkey: str) -> ScalarSelect[int]:
    return select(Device.id).where(Device.wireguard_pubkey == pubkey).scalar_subquery()


async def shift(db: Database, pubkey: str, **ages: float) -> None:
    """Move the timestamps of a device's open session into the past (`field=seconds ago`)."""
    now = utcnow()
    async with db.transaction() as s:
        await s.execute(
            update(VpnClientSession)
            .where(
                VpnClientSession.device_id == device_id_of(pubkey),
                VpnClientSession.ended_at.is_(None),
            )
            .values(**{field: now - timedelta(seconds=ago) for field, ago in ages.items()})
        )


async def expire(db: Database) -> list[int]:
    async with db.transaction() as s:
        return (await expire_sessions(s)).ended


async def three_connected(admin_client, db):  # type: ignore[no-untyped-def]
    """An MFA location with three devices of `jdoe`, each past MFA."""
    location = await mfa_location(admin_client, peer_disconnect_threshold=THRESHOLD)
    await make_user(db, "jdoe")
    secret = await enable_totp(db, "jdoe")
    keys = {}
    for name in ("idle", "gone", "fresh"):
        keys[name] = (await add_device(admin_client, "jdoe", name))["device"]["wireguard_pubkey"]
        await forget_totp_step(db, "jdoe")
        await connect(db, location["id"], keys[name], secret)
    return location["id"], keys


async def test_never_connected_and_stale_sessions_end_fresh_ones_stay(admin_client, db):
    lid, keys = await three_connected(admin_client, db)
    assert set(await peers(db, lid)) == set(keys.values())

    # Authorized longer ago than the threshold and never a handshake.
    await shift(db, keys["idle"], authorized_at=THRESHOLD + 5)
    # Connected, but the last handshake is older than the threshold.
    await shift(
        db,
        keys["gone"],
        authorized_at=3 * THRESHOLD,
        connected_at=3 * THRESHOLD,
        last_handshake=THRESHOLD + 5,
    )
    # Authorized long ago, but handshaking now.
    await shift(
        db,
        keys["fresh"],
        authorized_at=3 * THRESHOLD,
        connected_at=3 * THRESHOLD,
        last_handshake=10,
    )
    before = await revision(db, lid)

    ended = await expire(db)
    assert len(ended) == 2
    assert set(await peers(db, lid)) == {keys["fresh"]}
    assert await revision(db, lid) == before + 1
    upd = await update_at(db, lid, before + 1)
    assert sorted(upd.remove_peers) == sorted([keys["idle"], keys["gone"]])

    reasons = {s.id: s.end_reason for s in await sessions(db)}
    assert sorted(reasons[i] for i in ended) == ["inactive", "never connected"]
    logged = await events(db, "vpn_client_mfa_disconnected")
    assert len(logged) == 2
    assert {(e.username, e.location, e.module) for e in logged} == {("jdoe", "HQ", "vpn")}

    # Idempotent: nothing more to end, no new revision.
    assert await expire(db) == []
    assert await revision(db, lid) == before + 1

    # Ended means ended: the device must pass MFA again to be a peer.
    status, _ = await start(db, lid, keys["idle"])
    assert status == 200


async def test_handshakes_from_stats_keep_a_session_alive(admin_client, db):
    lid, keys = await three_connected(admin_client, db)
    key = keys["fresh"]
    await shift(db, key, authorized_at=THRESHOLD - 30)
    now = int(time.time())
    batch = pb.StatsBatch(
        batch_id=uuid.uuid4().hex,
        location_id=lid,
        collected_at=now,
        peers=[
            pb.PeerStats(public_key=key, latest_handshake=now - 5, upload=1, download=2),
            pb.PeerStats(public_key=keys["gone"], latest_handshake=0),
        ],
    )
    for _ in range(2):  # a batch re-sent to another Core changes nothing more
        async with db.transaction() as s:
            await store_stats_batch(s, gateway_id=1, location_id=lid, batch=batch)

    by_key = {k: None for k in keys.values()}
    async with db.session() as s:
        rows = await s.execute(
            select(Device.wireguard_pubkey, VpnClientSession)
            .join(VpnClientSession, VpnClientSession.device_id == Device.id)
            .where(VpnClientSession.ended_at.is_(None))
        )
        for pubkey, session in rows:
            by_key[pubkey] = session
    fresh = by_key[key]
    assert fresh is not None and fresh.connected_at is not None
    assert fresh.last_handshake == fresh.connected_at
    assert abs((utcnow() - fresh.last_handshake).total_seconds() - 5) < 5
    assert by_key[keys["gone"]].connected_at is None  # 0 means no handshake yet
    assert [e.location for e in await events(db, "vpn_client_mfa_connected")] == ["HQ"]

    # Long past its authorization, but it handshakes: it stays.
    await shift(db, key, authorized_at=3 * THRESHOLD)
    await shift(db, keys["idle"], authorized_at=THRESHOLD + 5)
    await shift(db, keys["gone"], authorized_at=THRESHOLD + 5)
    assert len(await expire(db)) == 2
    assert set(await peers(db, lid)) == {key}


async def test_handshake_of_an_earlier_peer_does_not_count(admin_client, db):
    """A handshake from before the session's authorization belongs to an older session."""
    lid, keys = await three_connected(admin_client, db)
    key = keys["fresh"]
    old = int(time.time()) - 10 * 60
    batch = pb.StatsBatch(
        batch_id=uuid.uuid4().hex,
        location_id=lid,
        collected_at=int(time.time()),
        peers=[pb.PeerStats(public_key=key, latest_handshake=old)],
    )
    async with db.transaction() as s:
        await store_stats_batch(s, gateway_id=1, location_id=lid, batch=batch)
    active = [s for s in await sessions(db) if s.ended_at is None]
    assert all(s.connected_at is None for s in active)


async def test_stale_pending_attempts_are_dropped(admin_client, db):
    location = await mfa_location(admin_client)
    await make_user(db, "jdoe")
    await enable_totp(db, "jdoe")
    old = (await add_device(admin_client, "jdoe", "old"))["device"]["wireguard_pubkey"]
    new = (await add_device(admin_client, "jdoe", "new"))["device"]["wireguard_pubkey"]
    for key in (old, new):
        status, _ = await start(db, location["id"], key)
        assert status == 200
    async with db.transaction() as s:
        await s.execute(
            update(VpnClientSession)
            .where(VpnClientSession.device_id == device_id_of(old))
            .values(created_at=utcnow() - timedelta(minutes=6))
        )
    async with db.transaction() as s:
        result = await expire_sessions(s)
    assert (result.ended, result.purged) == ([], 1)
    assert len(await sessions(db)) == 1


async def test_racing_cores_end_each_session_once(admin_client, db):
    lid, keys = await three_connected(admin_client, db)
    for key in keys.values():
        await shift(db, key, authorized_at=THRESHOLD + 5)
    before = await revision(db, lid)
    other_core = Database(db.url)
    try:

        async def one_core(database: Database) -> list[int]:
            async with database.transaction() as s:
                return (await expire_sessions(s)).ended

        results = await asyncio.gather(one_core(db), one_core(other_core))
    finally:
        await other_core.dispose()
    assert len(results[0] + results[1]) == 3 and len(set(results[0] + results[1])) == 3
    assert await revision(db, lid) in (before + 1, before + 2)
    assert len(await events(db, "vpn_client_mfa_disconnected")) == 3
    assert await peers(db, lid) == {}


async def test_location_without_mfa_is_left_alone(admin_client, db):
    await make_user(db, "jdoe")
    location = await create_location(admin_client, peer_disconnect_threshold=THRESHOLD)
    key = (await add_device(admin_client, "jdoe"))["device"]["wireguard_pubkey"]
    before = await revision(db, location["id"])
    assert await expire(db) == []
    assert await peers(db, location["id"]) == {key: ""}
    assert await revision(db, location["id"]) == before


async def test_periodic_task_is_registered_and_runs(admin_client, db):
    # procrastinate renames blueprint tasks once an app has taken them.
    task = tasks.tasks.get("expire_vpn_sessions") or tasks.tasks["defguard:expire_vpn_sessions"]
    assert task.queueing_lock == "vpn-session-expiry"
    app = make_job_app(db.url)
    assert "defguard:expire_vpn_sessions" in app.tasks
    periodic = list(app.periodic_registry.periodic_tasks.values())
    assert any(
        p.task.name == "defguard:expire_vpn_sessions" and p.cron == "* * * * * */15"
        for p in periodic
    )

    lid, keys = await three_connected(admin_client, db)
    await shift(db, keys["idle"], authorized_at=THRESHOLD + 5)
    context = SimpleNamespace(additional_context={"db": db})
    assert await expire_vpn_sessions(context, timestamp=0) == 1
    assert keys["idle"] not in await peers(db, lid)
