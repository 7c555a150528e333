"""Core's links to gateways, exercised against a FAKE gateway (tests/fake_gateway.py).

The fake only records what Cores send and replays what a test tells it to;
the real gateway process is tested on its own and end to end elsewhere.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from sqlalchemy import func, select, update
from structlog.testing import capture_logs

from defguard.config import CoreSettings
from defguard.core.gateways.models import GatewayLink, PeerStats
from defguard.core.links.manager import LinkManager
from defguard.core.users.models import User
from defguard.db.engine import Database
from defguard.proto import common_pb2
from defguard.proto import gateway_pb2 as pb
from tests.fake_gateway import FakeGateway, FakeStream, eventually, free_port, serving
from tests.integration.test_locations import add_device, create_location

StartCore = Callable[..., Awaitable[LinkManager]]


@pytest.fixture
async def start_core(db: Database) -> AsyncIterator[StartCore]:
    """Start a Core's link manager (as `defguard core` does) with quick retries."""
    managers: list[LinkManager] = []

    async def start(**overrides: Any) -> LinkManager:
        settings = CoreSettings(link_retry_seconds=0.2, **overrides)
        manager = LinkManager(db, settings, heartbeat_seconds=0.5, rescan_seconds=60)
        managers.append(manager)
        await manager.start()
        await asyncio.wait_for(manager.listening(), 10)
        return manager

    yield start
    for manager in managers:
        await manager.stop()


async def adopt(client: httpx.AsyncClient, location_id: int, port: int, name: str = "gw") -> int:
    r = await client.post(
        f"/network/{location_id}/gateways/adopt",
        json={"name": name, "ip_or_domain": "127.0.0.1", "grpc_port": port},
    )
    assert r.status_code == 201, r.text
    return r.json()["id"]


async def stream_with_state(gateway: FakeGateway, count: int = 1) -> list[FakeStream]:
    """Wait until `count` Cores hold a stream and each has sent its full state."""

    def ready() -> list[FakeStream] | None:
        streams = [s for s in gateway.live() if s.of_kind("full_state")]
        return streams if len(streams) >= count else None

    return await eventually(ready, what=f"{count} stream(s) with a full state")


async def gateway_info(client: httpx.AsyncClient, gateway_id: int) -> dict[str, Any]:
    r = await client.get("/gateway")
    assert r.status_code == 200, r.text
    return next(g for g in r.json() if g["id"] == gateway_id)


async def test_full_state_updates_state_request_and_link_state(admin_client, db, start_core):
    loc = await create_location(admin_client)
    lid = loc["id"]
    laptop = (await add_device(admin_client, "admin", "laptop"))["device"]
    fake = FakeGateway()
    async with serving(fake) as port:
        core = await start_core()
        gid = await adopt(admin_client, lid, port, "gw1")
        (stream,) = await stream_with_state(fake)

        first = stream.received[0]
        assert first.sender.component == "core" and first.sender.instance_id == core.core_id
        full = stream.of_kind("full_state")[0]
        assert (full.location_id, full.revision) == (lid, 1)
        assert [(p.public_key, list(p.allowed_ips)) for p in full.peers] == [
            (laptop["wireguard_pubkey"], ["10.10.0.2/32"])
        ]

        info = await eventually(
            lambda: _connected(admin_client, gid), what="the API to show the link"
        )
        assert info["connected_at"] and info["disconnected_at"] is None
        assert info["location_name"] == "HQ"
        r = await admin_client.get(f"/network/{lid}")
        assert [g["id"] for g in r.json()["gateways"] if g["connected"]] == [gid]

        # A gateway's failure report (not a version mismatch) keeps the link.
        await stream.send(error=common_pb2.ProtocolError(code="apply_failed", message="nft"))

        # A committed change arrives as the next revision's diff.
        phone = (await add_device(admin_client, "admin", "phone"))["device"]
        (upd,) = await eventually(lambda: stream.of_kind("update"), what="an update")
        assert (upd.base_revision, upd.revision) == (1, 2)
        assert [p.public_key for p in upd.upsert_peers] == [phone["wireguard_pubkey"]]
        assert not stream.ended.is_set() and len(fake.streams) == 1

        # A gateway that saw a gap asks, and gets the full state again.
        await stream.send(state_request=pb.StateRequest(applied_revision=0, reason="gap"))
        await eventually(lambda: len(stream.of_kind("full_state")) == 2, what="a second state")
        assert stream.of_kind("full_state")[1].revision == 2

        await stream.send(applied=pb.Applied(location_id=lid, revision=2))
        await eventually(lambda: _applied(db, gid), what="the applied revision")

        # A rename keeps the link; disabling the gateway drops it on every Core.
        r = await admin_client.put(f"/gateway/{gid}", json={"name": "gw-a", "enabled": True})
        assert r.status_code == 200, r.text
        await eventually(lambda: core.links[gid].target.name == "gw-a", what="the new name")
        assert not stream.ended.is_set() and len(fake.streams) == 1
        r = await admin_client.put(f"/gateway/{gid}", json={"name": "gw1", "enabled": False})
        assert r.status_code == 200, r.text
        await asyncio.wait_for(stream.ended.wait(), 10)
        info = await eventually(
            lambda: _disconnected(admin_client, gid), what="the API to show no link"
        )
        assert info["disconnected_at"] >= info["connected_at"]

        r = await admin_client.put(f"/gateway/{gid}", json={"name": "gw1", "enabled": True})
        await eventually(lambda: len(fake.live()) == 1, what="a new link")


async def _connected(client: httpx.AsyncClient, gid: int) -> dict[str, Any] | None:
    info = await gateway_info(client, gid)
    return info if info["connected"] else None


async def _disconnected(client: httpx.AsyncClient, gid: int) -> dict[str, Any] | None:
    info = await gateway_info(client, gid)
    return None if info["connected"] else info


async def _applied(db: Database, gid: int) -> bool:
    async with db.session() as s:
        revisions = await s.execute(
            select(GatewayLink.applied_revision).where(GatewayLink.gateway_id == gid)
        )
        return revisions.scalars().all() == [2]


async def test_stats_from_two_cores_are_stored_once_and_acked(admin_client, db, start_core):
    loc = await create_location(admin_client)
    lid = loc["id"]
    laptop = (await add_device(admin_client, "admin", "laptop"))["device"]
    key = laptop["wireguard_pubkey"]
    fake = FakeGateway()
    async with serving(fake) as port:
        cores = [await start_core(), await start_core()]
        gid = await adopt(admin_client, lid, port)
        streams = await stream_with_state(fake, count=2)
        assert {s.core_id for s in streams} == {c.core_id for c in cores}
        info = await eventually(lambda: _connected(admin_client, gid), what="connected")
        assert info["version"]

        now = int(time.time())

        def batch(batch_id: str, at: int, up: int, down: int) -> pb.StatsBatch:
            peer = pb.PeerStats(
                public_key=key,
                endpoint="203.0.113.9:51820",
                upload=up,
                download=down,
                latest_handshake=at - 5,
                allowed_ips=["10.10.0.2/32"],
            )
            return pb.StatsBatch(batch_id=batch_id, location_id=lid, collected_at=at, peers=[peer])

        # The same batch reaches both Cores (the first ack was "lost").
        first = batch("b-1", now - 60, 1000, 2000)
        for stream in streams:
            await stream.send(stats=first)
        for stream in streams:
            await eventually(
                lambda s=stream: [a.batch_id for a in s.of_kind("stats_ack")] == ["b-1"],
                what="an ack",
            )
        await streams[0].send(stats=batch("b-2", now - 30, 4000, 8000))
        await eventually(lambda: len(streams[0].of_kind("stats_ack")) == 2, what="second ack")
        async with db.session() as s:
            stored = await s.execute(select(PeerStats.batch_id, PeerStats.device_id))
            assert sorted(stored.all()) == [("b-1", laptop["id"]), ("b-2", laptop["id"])]

    # Any Core answers the stats endpoints from the stored rows.
    for path in ("/network/stats", f"/network/{lid}/stats"):
        r = await admin_client.get(path)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["current_active_users"] == 1
        assert body["current_active_user_devices"] == 1
        assert body["active_network_devices"] == 0
        assert (body["upload"], body["download"]) == (3000, 6000)
        assert sum(row["upload"] for row in body["transfer_series"]) == 3000

    r = await admin_client.get(f"/network/{lid}/stats/connected_users")
    assert r.status_code == 200, r.text
    (user,) = r.json()["data"]
    async with db.session() as s:
        admin_id = (await s.execute(select(User.id).where(User.username == "admin"))).scalar_one()
    assert user["user_id"] == admin_id
    assert user["connected_devices_count"] == 1
    assert user["public_ip"] == "203.0.113.9"
    assert user["vpn_ips"] == ["10.10.0.2"]
    assert (user["total_upload"], user["total_download"]) == (3000, 6000)
    assert r.json()["pagination"]["total_items"] == 1

    r = await admin_client.get(f"/network/{lid}/stats/connected_users/{admin_id}/devices")
    assert [d["device_id"] for d in r.json()] == [laptop["id"]]
    connected_at = datetime.fromisoformat(r.json()[0]["connected_at"])
    assert abs(connected_at - datetime.utcfromtimestamp(now - 60)) < timedelta(seconds=1)
    r = await admin_client.get(f"/network/{lid}/stats/connected_network_devices")
    assert r.json()["data"] == []


async def test_retries_until_the_gateway_is_up_and_follows_rows(admin_client, db, start_core):
    loc = await create_location(admin_client)
    lid = loc["id"]
    port = free_port()
    core = await start_core()
    with capture_logs() as logs:
        gid = await adopt(admin_client, lid, port, "late")
        await eventually(
            lambda: sum(e["event"] == "Connecting to gateway" for e in logs) >= 3,
            what="repeated connection attempts",
        )
    attempt = next(e for e in logs if e["event"] == "Connecting to gateway")
    assert (attempt["gateway"], attempt["address"]) == ("late", f"127.0.0.1:{port}")

    late, other = FakeGateway(), FakeGateway(name="other")
    async with serving(late, port):
        (stream,) = await stream_with_state(late)
        # A row added while running is picked up without a restart...
        async with serving(other) as other_port:
            other_id = await adopt(admin_client, lid, other_port, "other")
            await stream_with_state(other)
            # ...and a deleted row loses its link.
            r = await admin_client.delete(f"/gateway/{gid}")
            assert r.status_code == 200, r.text
            await asyncio.wait_for(stream.ended.wait(), 10)
            assert set(core.links) == {other_id}


async def test_an_incompatible_gateway_does_not_stop_the_others(admin_client, db, start_core):
    loc = await create_location(admin_client)
    old, good = FakeGateway(version="1.9.0"), FakeGateway()
    async with serving(old) as old_port, serving(good) as good_port:
        await start_core()
        with capture_logs() as logs:
            old_id = await adopt(admin_client, loc["id"], old_port, "old")
            await adopt(admin_client, loc["id"], good_port, "good")
            await stream_with_state(good)
            (rejected,) = await eventually(lambda: old.streams, what="the old gateway's stream")
            await asyncio.wait_for(rejected.ended.wait(), 10)
        (error,) = rejected.of_kind("error")
        assert error.code == "incompatible_version"
        assert not rejected.of_kind("full_state")
        assert any(e["event"] == "gateway version is incompatible" for e in logs)
        assert not (await gateway_info(admin_client, old_id))["connected"]


async def test_a_dead_cores_link_goes_stale(admin_client, db, start_core):
    loc = await create_location(admin_client)
    fake = FakeGateway()
    async with serving(fake) as port:
        core = await start_core()
        gid = await adopt(admin_client, loc["id"], port)
        await stream_with_state(fake)
        await eventually(lambda: _connected(admin_client, gid), what="connected")
        # What a SIGKILLed Core leaves behind: an open row nobody heartbeats.
        await core.stop()
        async with db.transaction() as s:
            await s.execute(
                update(GatewayLink).values(
                    disconnected_at=None, last_seen=func.now() - timedelta(minutes=1)
                )
            )
        info = await gateway_info(admin_client, gid)
        assert not info["connected"]
        assert info["disconnected_at"] is not None


def _certificates(tmp: Path) -> dict[str, Path]:
    """A CA, a gateway certificate for 127.0.0.1 and a Core client certificate."""
    from ipaddress import ip_address

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write(path: str, data: bytes) -> Path:
        (tmp / path).write_bytes(data)
        return tmp / path

    now = datetime.utcnow()
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("test ca"))
        .issuer_name(name("test ca"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    out = {"ca": write("ca.pem", ca.public_bytes(serialization.Encoding.PEM))}
    for role, san in (("gateway", ip_address("127.0.0.1")), ("core", None)):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(role))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=1))
        )
        if san is not None:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(san)]), critical=False
            )
        cert = builder.sign(ca_key, hashes.SHA256())
        out[f"{role}_cert"] = write(f"{role}.pem", cert.public_bytes(serialization.Encoding.PEM))
        out[f"{role}_key"] = write(
            f"{role}.key",
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
    return out


async def test_mutual_tls(admin_client, db, start_core, tmp_path):
    certs = _certificates(tmp_path)
    credentials = grpc.ssl_server_credentials(
        [(certs["gateway_key"].read_bytes(), certs["gateway_cert"].read_bytes())],
        root_certificates=certs["ca"].read_bytes(),
        require_client_auth=True,
    )
    loc = await create_location(admin_client)
    fake = FakeGateway()
    async with serving(fake, credentials=credentials) as port:
        await start_core(
            gateway_grpc_ca=certs["ca"],
            core_client_cert=certs["core_cert"],
            core_client_key=certs["core_key"],
        )
        await adopt(admin_client, loc["id"], port)
        (stream,) = await stream_with_state(fake)
        assert stream.of_kind("full_state")[0].location_id == loc["id"]
        peer = stream.context.auth_context()
        assert peer.get("x509_common_name") == [b"core"]
