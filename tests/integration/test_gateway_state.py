"""The peer change log (triggers + revision bumps + NOTIFY) and the desired gateway state built from it."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
from sqlalchemy import select

from defguard.core.devices.models import Device
from defguard.core.gateways.models import PeerChange
from defguard.core.groups.models import Group
from defguard.core.jobs import libpq_uri
from defguard.core.links.state import location_state, location_update
from defguard.core.locations.models import Location
from defguard.db.engine import Database
from defguard.proto import gateway_pb2 as pb
from tests.conftest import make_user
from tests.integration.test_devices import add_network_device, new_key
from tests.integration.test_locations import (
    add_device,
    create_location,
    location_body,
    revision,
)


async def changes(db: Database, location_id: int) -> list[tuple[str, int | None]]:
    async with db.session() as s:
        rows = await s.execute(
            select(PeerChange.public_key, PeerChange.revision)
            .where(PeerChange.location_id == location_id)
            .order_by(PeerChange.id)
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


async def pending(db: Database) -> int:
    async with db.session() as s:
        rows = await s.execute(select(PeerChange.id).where(PeerChange.revision.is_(None)))
        return len(rows.all())


async def state(db: Database, location_id: int) -> pb.LocationState:
    async with db.session() as s:
        return await location_state(s, location_id)


async def update(db: Database, location_id: int, rev: int) -> pb.LocationUpdate:
    async with db.session() as s:
        return await location_update(s, location_id, rev)


def peers(message: Any) -> dict[str, list[str]]:
    items = message.peers if isinstance(message, pb.LocationState) else message.upsert_peers
    return {p.public_key: list(p.allowed_ips) for p in items}


class Listener:
    """A plain LISTEN connection, as every Core holds one."""

    def __init__(self, db: Database) -> None:
        self.conn = psycopg.connect(libpq_uri(db.url), autocommit=True)
        self.conn.execute("LISTEN defguard_location")

    def payloads(self) -> list[str]:
        return [n.payload for n in self.conn.notifies(timeout=0.5, stop_after=50)]

    def close(self) -> None:
        self.conn.close()


async def test_changes_are_logged_by_triggers_and_claimed_by_the_bump(admin_client, db):
    loc = await create_location(admin_client)
    lid = loc["id"]
    await make_user(db, "jdoe")
    listener = Listener(db)
    try:
        laptop = (await add_device(admin_client, "jdoe"))["device"]
        assert await revision(db, lid) == 1
        assert await changes(db, lid) == [(laptop["wireguard_pubkey"], 1)]
        assert await asyncio.to_thread(listener.payloads) == [f"{lid}:1"]

        # A new key: the peer changes under both keys.
        old_key, key = laptop["wireguard_pubkey"], new_key()
        r = await admin_client.put(
            f"/device/{laptop['id']}", json={"name": "laptop", "wireguard_pubkey": key}
        )
        assert r.status_code == 200, r.text
        assert sorted((await changes(db, lid))[1:]) == sorted([(old_key, 2), (key, 2)])

        # Renaming changes no peer: no row, no revision.
        r = await admin_client.put(
            f"/device/{laptop['id']}", json={"name": "renamed", "wireguard_pubkey": key}
        )
        assert await revision(db, lid) == 2
        assert len(await changes(db, lid)) == 3

        # A network device, then its new address.
        r = await add_network_device(admin_client, lid)
        router = r.json()["device"]
        assert (await changes(db, lid))[-1] == (router["wireguard_pubkey"], 3)
        r = await admin_client.put(
            f"/device/network/{router['id']}",
            json={"name": "router", "assigned_ips": ["10.10.0.60"]},
        )
        assert r.status_code == 200, r.text
        assert (await changes(db, lid))[-1] == (router["wireguard_pubkey"], 4)

        # Deleting the owner cascades to the device: its key is still logged.
        r = await admin_client.delete("/user/jdoe")
        assert r.status_code == 200, r.text
        assert (await changes(db, lid))[-1] == (key, 5)
        assert await asyncio.to_thread(listener.payloads) == [f"{lid}:{n}" for n in (2, 3, 4, 5)]
        assert await pending(db) == 0
    finally:
        listener.close()


async def test_group_and_location_changes_log_every_touched_peer(admin_client, db):
    await make_user(db, "jdoe")
    r = await admin_client.post(
        "/group", json={"name": "devs", "is_admin": False, "members": ["jdoe"]}
    )
    assert r.status_code == 201, r.text
    loc = await create_location(admin_client, allow_all_groups=False, allowed_groups=["devs"])
    lid = loc["id"]
    phone = (await add_device(admin_client, "jdoe", "phone"))["device"]
    before = await revision(db, lid)

    # Leaving the location's only group takes the device out of it.
    async with db.session() as s:
        group_id = (await s.execute(select(Group.id).where(Group.name == "devs"))).scalar_one()
    r = await admin_client.delete(f"/group/{group_id}/user/jdoe")
    assert r.status_code == 200, r.text
    assert await revision(db, lid) == before + 1
    assert (await changes(db, lid))[-1] == (phone["wireguard_pubkey"], before + 1)
    upd = await update(db, lid, before + 1)
    assert list(upd.remove_peers) == [phone["wireguard_pubkey"]]
    assert not upd.upsert_peers

    # Deleting the location's network devices with the location logs them too
    # (the rows outlive the location; the purge job removes them).
    router = (await add_network_device(admin_client, lid, assigned_ips=["10.10.0.70"])).json()
    r = await admin_client.delete(f"/network/{lid}")
    assert r.status_code == 200, r.text
    assert (router["device"]["wireguard_pubkey"], None) in await changes(db, lid)


async def test_full_state_and_diffs(admin_client, db):
    loc = await create_location(admin_client, keepalive_interval=15, mtu=1400, fwmark=7)
    lid = loc["id"]
    await make_user(db, "jdoe")
    a = (await add_device(admin_client, "jdoe", "a"))["device"]
    b = (await add_device(admin_client, "jdoe", "b"))["device"]

    full = await state(db, lid)
    assert full.location_id == lid and full.location_name == "HQ"
    assert full.revision == await revision(db, lid) == 2
    assert full.interface.listen_port == 51820
    assert list(full.interface.addresses) == ["10.10.0.1/24"]
    assert (full.interface.mtu, full.interface.fwmark) == (1400, 7)
    async with db.session() as s:
        assert full.interface.private_key == (await s.get(Location, lid)).prvkey
    assert peers(full) == {
        a["wireguard_pubkey"]: ["10.10.0.2/32"],
        b["wireguard_pubkey"]: ["10.10.0.3/32"],
    }
    assert {p.keepalive_interval for p in full.peers} == {15}
    assert {p.preshared_key for p in full.peers} == {""}
    assert not full.HasField("firewall")  # ACL off: no firewall management

    # Adding: the diff names only the new peer.
    c = (await add_device(admin_client, "jdoe", "c"))["device"]
    upd = await update(db, lid, 3)
    assert (upd.base_revision, upd.revision) == (2, 3)
    assert peers(upd) == {c["wireguard_pubkey"]: ["10.10.0.4/32"]}
    assert not upd.remove_peers
    assert list(upd.interface.addresses) == ["10.10.0.1/24"]
    # ACL off: every update says so, so a gateway drops a firewall it may still have.
    assert not upd.HasField("firewall") and upd.firewall_disabled

    # Re-addressing every device (a second subnet) upserts them all.
    body = {**_location_body(loc), "address": "10.10.0.1/24,fd00::1/112"}
    r = await admin_client.put(f"/network/{lid}", json=body)
    assert r.status_code == 200, r.text
    rev = await revision(db, lid)
    upd = await update(db, lid, rev)
    assert peers(upd) == {
        a["wireguard_pubkey"]: ["10.10.0.2/32", "fd00::2/128"],
        b["wireguard_pubkey"]: ["10.10.0.3/32", "fd00::3/128"],
        c["wireguard_pubkey"]: ["10.10.0.4/32", "fd00::4/128"],
    }
    assert list(upd.interface.addresses) == ["10.10.0.1/24", "fd00::1/112"]

    # A new key: upsert under the new one, remove the old one.
    key = new_key()
    r = await admin_client.put(f"/device/{a['id']}", json={"name": "a", "wireguard_pubkey": key})
    assert r.status_code == 200, r.text
    upd = await update(db, lid, rev + 1)
    assert list(peers(upd)) == [key]
    assert list(upd.remove_peers) == [a["wireguard_pubkey"]]

    # Deleting: a removal only.
    r = await admin_client.delete(f"/device/{b['id']}")
    assert r.status_code == 200, r.text
    upd = await update(db, lid, rev + 2)
    assert list(upd.remove_peers) == [b["wireguard_pubkey"]]
    assert not upd.upsert_peers

    # An unconfigured device is not a peer.
    async with db.transaction() as s:
        device = await s.get(Device, c["id"])
        device.configured = False
    assert set(peers(await state(db, lid))) == {key}

    # That flip happened outside any service, so no revision claimed it yet;
    # the next bump does (a change is late, never lost).
    assert await pending(db) == 1
    r = await admin_client.put(f"/network/{lid}", json={**body, "port": 51821})
    assert r.status_code == 200, r.text
    upd = await update(db, lid, await revision(db, lid))
    assert upd.interface.listen_port == 51821
    assert list(upd.remove_peers) == [c["wireguard_pubkey"]]
    assert not upd.upsert_peers
    assert await pending(db) == 0

    # A settings change alone: interface (and firewall) only.
    r = await admin_client.put(f"/network/{lid}", json={**body, "port": 51822})
    upd = await update(db, lid, await revision(db, lid))
    assert upd.interface.listen_port == 51822
    assert not upd.upsert_peers and not upd.remove_peers


async def test_acl_enabled_location_carries_its_firewall(admin_client, db):
    loc = await create_location(admin_client, acl_enabled=True, acl_default_allow=False)
    full = await state(db, loc["id"])
    assert full.HasField("firewall")
    assert pb.FirewallVerdict.Name(full.firewall.default_policy) == "FIREWALL_VERDICT_DENY"
    await add_device(admin_client, "admin")
    upd = await update(db, loc["id"], await revision(db, loc["id"]))
    assert upd.HasField("firewall")


def _location_body(loc: dict[str, Any]) -> dict[str, Any]:
    return location_body(
        keepalive_interval=loc["keepalive_interval"], mtu=loc["mtu"], fwmark=loc["fwmark"]
    )
