"""Committed peer changes that no revision claimed (a Core died before publishing) get one."""

from __future__ import annotations

from sqlalchemy import select, text

from defguard.core.gateways.models import PeerChange
from defguard.core.locations.access import bump_committed, sweep_pending
from defguard.core.locations.models import Location
from defguard.db.engine import Database


async def _location(db: Database) -> int:
    async with db.transaction() as s:
        await s.execute(
            text(
                """INSERT INTO wireguard_network (id, name, address, port, pubkey, prvkey,
                   endpoint, allowed_ips) VALUES (7, 'hq', '{10.7.0.1/24}', 51820, 'k', 'k',
                   'vpn.example.com', '{}')"""
            )
        )
    return 7


async def _revision(db: Database, location_id: int) -> int:
    async with db.session() as s:
        return await s.scalar(select(Location.config_revision).where(Location.id == location_id))


async def test_sweep_publishes_forgotten_changes_once(db: Database) -> None:
    location_id = await _location(db)
    before = await _revision(db, location_id)
    async with db.transaction() as s:
        s.add(PeerChange(location_id=location_id, public_key="peer-key"))
    # Too young: the request that wrote it may still be publishing it itself.
    assert await sweep_pending(db, 60) == []
    assert await _revision(db, location_id) == before

    assert await sweep_pending(db, 0) == [location_id]
    after = await _revision(db, location_id)
    assert after == before + 1
    async with db.session() as s:
        stamped = await s.scalar(
            select(PeerChange.revision).where(PeerChange.public_key == "peer-key")
        )
    assert stamped == after
    # Nothing left: a second sweep changes nothing.
    assert await sweep_pending(db, 0) == []
    assert await _revision(db, location_id) == after


async def test_bump_after_commit_claims_the_committed_change(db: Database) -> None:
    location_id = await _location(db)
    async with db.transaction() as s:
        s.add(PeerChange(location_id=location_id, public_key="k2"))
    await bump_committed(db, [location_id])
    async with db.session() as s:
        revision = await s.scalar(select(PeerChange.revision).where(PeerChange.public_key == "k2"))
    assert revision == await _revision(db, location_id)


async def test_bump_after_commit_with_nothing_pending_makes_no_empty_revision(db: Database) -> None:
    """Concurrent MFA successes claim each other's changes; the later bump then adds nothing."""
    location_id = await _location(db)
    before = await _revision(db, location_id)
    await bump_committed(db, [location_id])
    assert await _revision(db, location_id) == before
