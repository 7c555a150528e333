"""The real Gateway (`python -m defguard gateway`) driven over real gRPC by test Cores.

Each Gateway runs as a subprocess inside its own network namespace, with a
wireguard-go interface and nftables; the test process reaches its gRPC and
health ports over a veth pair it created. A second namespace holds a real
WireGuard client (wireguard-go) with a real handshake, so "a change does not
disturb other peers" is checked on a live session: its latest handshake and
learned endpoint must survive and its counters must not reset.

`TestCore` is a test harness standing in for a Core (the real Core link is a
separate component); it speaks the protocol of `gateway.proto` and records
everything the Gateway sends.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from defguard import __version__
from defguard.proto import gateway_pb2
from tests.conftest import require_tools
from tests.wgtools import (
    Gateway,
    TestCore,
    connected,
    gateway_in_namespace,
    ifindex,
    keypair,
    namespace,
    ns_run,
    ping,
    run,
    subnet_octets,
    unique_ifname,
    veth_pair,
    wg_dump,
    wireguard_client,
)

pytestmark = pytest.mark.e2e

HEALTH_PORT = 8081
LISTEN_PORT = 51820
LOCATION_ID = 7
VPN_GATEWAY = "10.77.0.1"
VPN_CLIENT = "10.77.0.2"
STATS_PERIOD = 0.3
STATS_ACK_TIMEOUT = 0.8


def _tools() -> None:
    require_tools("wireguard-go", "wg", "ip", "nft", root=True)


@dataclass
class Env:
    gateway: Gateway
    client_ns: str
    client_if: str
    gateway_private: str
    gateway_public: str
    client_public: str
    hooks_log: Path
    revisions: Iterator[int] = field(default_factory=lambda: itertools.count(100, 10))

    @property
    def target(self) -> str:
        return self.gateway.target

    @property
    def health_url(self) -> str:
        return f"http://{self.gateway.address}:{HEALTH_PORT}/health"

    def revision(self) -> int:
        return next(self.revisions)

    def client_peer(self) -> gateway_pb2.PeerConfig:
        return gateway_pb2.PeerConfig(
            public_key=self.client_public, allowed_ips=[f"{VPN_CLIENT}/32"]
        )

    def state(
        self,
        revision: int,
        *peers: gateway_pb2.PeerConfig,
        firewall: gateway_pb2.FirewallConfig | None = None,
    ) -> gateway_pb2.LocationState:
        return gateway_pb2.LocationState(
            location_id=LOCATION_ID,
            location_name="office",
            revision=revision,
            interface=self.interface(),
            peers=[self.client_peer(), *peers],
            firewall=firewall,
        )

    def interface(self) -> gateway_pb2.InterfaceConfig:
        return gateway_pb2.InterfaceConfig(
            private_key=self.gateway_private,
            listen_port=LISTEN_PORT,
            addresses=[f"{VPN_GATEWAY}/24", "fd77::1/64"],
        )

    def update(
        self,
        base: int,
        revision: int,
        *,
        upsert: tuple[gateway_pb2.PeerConfig, ...] = (),
        remove: tuple[str, ...] = (),
        firewall: gateway_pb2.FirewallConfig | None = None,
    ) -> gateway_pb2.LocationUpdate:
        return gateway_pb2.LocationUpdate(
            location_id=LOCATION_ID,
            base_revision=base,
            revision=revision,
            interface=self.interface(),
            upsert_peers=list(upsert),
            remove_peers=list(remove),
            firewall=firewall,
        )

    def dump(self) -> tuple[list[str], dict[str, list[str]]]:
        return wg_dump(self.gateway.ns, self.gateway.ifname)

    def client_session(self) -> list[str]:
        """The gateway's view of the live client peer: key, psk, endpoint, ips, handshake, rx, tx."""
        return self.dump()[1][self.client_public]

    def handshake(self) -> list[str]:
        """Ping until the client has a handshake; return the gateway's view of that peer."""
        assert ping(self.client_ns, VPN_GATEWAY, count=3) >= 1, self.gateway.log()
        session = self.client_session()
        assert int(session[4]) > 0 and session[2] != "(none)"
        return session


def peer(allowed: str) -> gateway_pb2.PeerConfig:
    return gateway_pb2.PeerConfig(public_key=keypair()[1], allowed_ips=[allowed])


def assert_undisturbed(before: list[str], after: list[str]) -> None:
    """Same handshake and endpoint, counters not reset: the session survived."""
    assert after[2] == before[2], "endpoint lost"
    assert after[4] == before[4], "handshake changed"
    assert int(after[5]) >= int(before[5]) and int(after[6]) >= int(before[6]), "counters reset"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """One Gateway with a live WireGuard client, shared by the tests of this module."""
    _tools()
    tmp = tmp_path_factory.mktemp("gateway")
    hooks_log = tmp / "hooks.log"
    gw_private, gw_public = keypair()
    client_private, client_public = keypair()
    second, third = subnet_octets()
    with (
        gateway_in_namespace(
            tmp,
            HEALTH_PORT=str(HEALTH_PORT),
            DEFGUARD_STATS_PERIOD=str(STATS_PERIOD),
            DEFGUARD_STATS_ACK_TIMEOUT=str(STATS_ACK_TIMEOUT),
            PRE_UP=f"echo pre_up %i >> {hooks_log}",
            POST_UP=f"echo post_up %i >> {hooks_log}",
        ) as gateway,
        namespace() as client_ns,
        veth_pair(gateway.ns, client_ns, f"10.{second}.{third}.5/30", f"10.{second}.{third}.6/30"),
        wireguard_client(
            client_ns,
            private_key=client_private,
            peer_public=gw_public,
            endpoint=f"10.{second}.{third}.5:{LISTEN_PORT}",
            address=f"{VPN_CLIENT}/24",
            allowed_ips="10.77.0.0/24",
        ) as client_if,
    ):
        gateway.start()
        yield Env(
            gateway=gateway,
            client_ns=client_ns,
            client_if=client_if,
            gateway_private=gw_private,
            gateway_public=gw_public,
            client_public=client_public,
            hooks_log=hooks_log,
        )


# ---------------------------------------------------------------- sync by revision


async def test_full_state_creates_interface_and_peers(env: Env) -> None:
    assert env.hooks_log.read_text().split() == [
        "pre_up",
        env.gateway.ifname,
        "post_up",
        env.gateway.ifname,
    ]
    others = [peer("10.77.0.10/32"), peer("10.77.0.11/32")]
    async with connected(env.target) as core:
        hello = core.hello  # type: ignore[attr-defined]
        assert hello.interface_name == env.gateway.ifname
        assert hello.name == f"gw-{env.gateway.ifname}"
        revision = env.revision()
        await core.apply_full(env.state(revision, *others))

    interface, peers = env.dump()
    assert interface[0] == env.gateway_private and interface[1] == env.gateway_public
    assert interface[2] == str(LISTEN_PORT)
    assert set(peers) == {env.client_public, *(p.public_key for p in others)}
    assert peers[others[0].public_key][3] == "10.77.0.10/32"
    addresses = json.loads(ns_run(env.gateway.ns, "ip", "-j", "addr", "show", env.gateway.ifname))
    local = {f"{a['local']}/{a['prefixlen']}" for a in addresses[0]["addr_info"]}
    assert {f"{VPN_GATEWAY}/24", "fd77::1/64"} <= local
    assert ping(env.client_ns, VPN_GATEWAY, count=3) >= 2


async def test_single_peer_changes_leave_other_sessions_alone(env: Env) -> None:
    x, y = peer("10.77.0.20/32"), peer("10.77.0.21/32")
    async with connected(env.target) as core:
        base = env.revision()
        await core.apply_full(env.state(base, x))
        before = env.handshake()
        index = ifindex(env.gateway.ns, env.gateway.ifname)

        await core.apply_update(env.update(base, base + 1, upsert=(y,)))
        _, peers = env.dump()
        assert y.public_key in peers and x.public_key in peers
        assert_undisturbed(before, peers[env.client_public])

        await core.apply_update(env.update(base + 1, base + 2, remove=(x.public_key,)))
        _, peers = env.dump()
        assert x.public_key not in peers and y.public_key in peers
        assert_undisturbed(before, peers[env.client_public])

        changed = gateway_pb2.PeerConfig(
            public_key=y.public_key, allowed_ips=["10.77.0.22/32"], keepalive_interval=25
        )
        await core.apply_update(env.update(base + 2, base + 3, upsert=(changed,)))
        _, peers = env.dump()
        assert peers[y.public_key][3] == "10.77.0.22/32" and peers[y.public_key][7] == "25"
        assert_undisturbed(before, peers[env.client_public])

        assert ifindex(env.gateway.ns, env.gateway.ifname) == index
        assert ping(env.client_ns, VPN_GATEWAY, count=2) == 2


async def test_two_cores_duplicates_are_ignored(env: Env) -> None:
    x = peer("10.77.0.30/32")
    async with connected(env.target) as a, connected(env.target) as b:
        base = env.revision()
        await a.apply_full(env.state(base, x))
        before = env.dump()

        # The same revision with other content from a second Core: acknowledged, not applied.
        stray = peer("10.77.0.31/32")
        await b.send(full_state=env.state(base, x, stray))
        applied = await b.expect("applied")
        assert applied.revision == base  # type: ignore[attr-defined]
        assert stray.public_key not in env.dump()[1]

        y = peer("10.77.0.32/32")
        await a.apply_update(env.update(base, base + 1, upsert=(y,)))
        after_a = env.dump()
        await b.send(update=env.update(base, base + 1, upsert=(y,)))
        assert (await b.expect("applied")).revision == base + 1  # type: ignore[attr-defined]
        assert env.dump()[1][y.public_key][:4] == after_a[1][y.public_key][:4]
        # An older update is ignored too.
        await b.send(update=env.update(base - 1, base, upsert=(stray,)))
        assert (await b.expect("applied")).revision == base + 1  # type: ignore[attr-defined]
        assert stray.public_key not in env.dump()[1]
        assert set(env.dump()[1]) == set(before[1]) | {y.public_key}

        # Both streams stay usable: the next revision may come from either Core.
        await b.apply_update(env.update(base + 1, base + 2, remove=(y.public_key,)))
        await a.send(update=env.update(base + 1, base + 2, remove=(y.public_key,)))
        assert (await a.expect("applied")).revision == base + 2  # type: ignore[attr-defined]
        await a.nothing_more()
        await b.nothing_more()


async def test_gap_asks_that_core_for_full_state(env: Env) -> None:
    async with connected(env.target) as a, connected(env.target) as b:
        base = env.revision()
        await a.apply_full(env.state(base))
        z = peer("10.77.0.40/32")
        await a.send(update=env.update(base + 3, base + 4, upsert=(z,)))
        request = await a.expect("state_request")
        assert request.applied_revision == base  # type: ignore[attr-defined]
        assert "gap" in request.reason  # type: ignore[attr-defined]
        await b.nothing_more()
        assert z.public_key not in env.dump()[1]

        wrong = env.update(base, base + 1)
        wrong.location_id = LOCATION_ID + 1
        await a.send(update=wrong)
        assert (await a.expect("state_request")).applied_revision == base  # type: ignore[attr-defined]

        await a.apply_full(env.state(base + 4, z))
        assert z.public_key in env.dump()[1]


async def test_all_cores_gone_keeps_everything_then_resyncs(env: Env) -> None:
    firewall = gateway_pb2.FirewallConfig(default_policy=gateway_pb2.FIREWALL_VERDICT_ALLOW)
    x = peer("10.77.0.50/32")
    async with httpx.AsyncClient(timeout=5) as http:
        async with connected(env.target) as a, connected(env.target) as b:
            revision = env.revision()
            await a.apply_full(env.state(revision, x, firewall=firewall))
            r = await http.get(env.health_url)
            assert r.status_code == 200 and r.json()["cores_connected"] == 2
            await b.close()
            assert (await http.get(env.health_url)).status_code == 200
            before = env.handshake()
            interface_before, peers_before = env.dump()

        for _ in range(50):
            if (await http.get(env.health_url)).status_code == 503:
                break
            await asyncio.sleep(0.1)
        assert (await http.get(env.health_url)).status_code == 503
        await asyncio.sleep(1.0)
        interface_after, peers_after = env.dump()
        assert interface_after == interface_before
        assert set(peers_after) == set(peers_before)
        assert_undisturbed(before, peers_after[env.client_public])
        ns_run(env.gateway.ns, "nft", "list", "table", "inet", f"defguard_{env.gateway.ifname}")
        assert ping(env.client_ns, VPN_GATEWAY, count=2) == 2

        y = peer("10.77.0.51/32")
        async with connected(env.target) as c:
            assert c.hello.applied_revision == revision  # type: ignore[attr-defined]
            assert c.hello.location_id == LOCATION_ID  # type: ignore[attr-defined]
            assert (await http.get(env.health_url)).status_code == 200
            await c.apply_full(env.state(revision + 1, x, y, firewall=firewall))
            _, peers = env.dump()
            assert y.public_key in peers
            assert_undisturbed(before, peers[env.client_public])
        assert (await http.get(env.health_url.replace("/health", "/other"))).status_code == 404


async def test_stats_go_to_one_core_and_move_on_without_ack(env: Env) -> None:
    async with connected(env.target) as setup:
        await setup.apply_full(env.state(env.revision()))
    env.handshake()
    async with (
        connected(env.target, auto_ack=False) as silent,
        connected(env.target) as acking,
    ):
        first = await asyncio.wait_for(silent.stats.get(), 5)
        assert first.location_id == LOCATION_ID
        by_key = {p.public_key: p for p in first.peers}
        client = by_key[env.client_public]
        assert client.upload > 0 and client.download > 0 and client.latest_handshake > 0
        assert client.endpoint and list(client.allowed_ips) == [f"{VPN_CLIENT}/32"]
        # Not acknowledged by the silent Core, so the same batch reaches the other one.
        deadline = time.monotonic() + STATS_ACK_TIMEOUT + 3
        while first.batch_id not in acking.stats_seen and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert first.batch_id in acking.stats_seen
        await asyncio.sleep(STATS_ACK_TIMEOUT + 0.5)
        # An acknowledged batch is never sent again, to anyone.
        for batch_id in set(acking.stats_seen):
            assert acking.stats_seen.count(batch_id) == 1
            assert silent.stats_seen.count(batch_id) <= 1
        # Round-robin: the acknowledging Core also got batches first-hand.
        assert set(acking.stats_seen) - set(silent.stats_seen)


async def test_firewall_table_follows_state(env: Env) -> None:
    rule = gateway_pb2.FirewallRule(
        id=1,
        verdict=gateway_pb2.FIREWALL_VERDICT_ALLOW,
        ip_version=4,
        sources=[gateway_pb2.AddressRange(start=VPN_CLIENT, end=VPN_CLIENT)],
        destinations=[gateway_pb2.AddressRange(start="192.168.50.0", end="192.168.50.255")],
        ports=[gateway_pb2.PortRange(start=443, end=443)],
        protocols=[6],
        comment="ALLOW https",
    )
    firewall = gateway_pb2.FirewallConfig(
        default_policy=gateway_pb2.FIREWALL_VERDICT_DENY, rules=[rule]
    )
    table = f"defguard_{env.gateway.ifname}"
    async with connected(env.target) as core:
        revision = env.revision()
        await core.apply_full(env.state(revision, firewall=firewall))
        listing = ns_run(env.gateway.ns, "nft", "list", "table", "inet", table)
        lines = [line.strip() for line in listing.splitlines()]
        chain = lines[lines.index("type filter hook forward priority filter; policy accept;") + 1 :]
        iif = f'iifname "{env.gateway.ifname}"'
        assert chain[:3] == [
            "ct state established,related accept",
            f'{iif} ip saddr {VPN_CLIENT} ip daddr 192.168.50.0/24 tcp dport 443 accept comment "ALLOW https"',
            f'{iif} drop comment "default policy"',
        ]
        # Firewall unchanged in an update (absent = unchanged): the table stays.
        await core.apply_update(env.update(revision, revision + 1, upsert=(peer("10.77.0.60/32"),)))
        ns_run(env.gateway.ns, "nft", "list", "table", "inet", table)
        # No firewall in the full state (ACL off for the location): no table, no filtering.
        await core.apply_full(env.state(revision + 2))
        assert table not in ns_run(env.gateway.ns, "nft", "list", "tables")
    assert ping(env.client_ns, VPN_GATEWAY, count=2) == 2


async def test_incompatible_core_is_rejected_and_others_served(env: Env) -> None:
    async with connected(env.target) as good, connected(env.target, version="3.0.0") as bad:
        await bad.send(full_state=env.state(env.revision()))
        error = await bad.expect("error")
        assert error.code == "incompatible_version"  # type: ignore[attr-defined]
        assert "3.0.0" in error.message and __version__ in error.message  # type: ignore[attr-defined]
        await asyncio.wait_for(bad.closed.wait(), 5)
        await good.apply_full(env.state(env.revision()))

    async with connected(env.target, component="edge") as edge:
        await edge.send(full_state=env.state(env.revision()))
        assert (await edge.expect("error")).code == "unexpected_peer"  # type: ignore[attr-defined]

    async with connected(env.target) as core:
        invalid = env.state(env.revision())
        invalid.peers.append(gateway_pb2.PeerConfig(public_key="not a key"))
        await core.send(full_state=invalid)
        assert (await core.expect("error")).code == "invalid_state"  # type: ignore[attr-defined]
        # The stream stays open and the Gateway keeps serving it.
        await core.apply_full(env.state(env.revision()))
    assert env.gateway.proc is not None and env.gateway.proc.poll() is None


# ---------------------------------------------------------------- TLS, restart, shutdown


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    ip: str | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer or (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ip:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(obj: x509.Certificate | ec.EllipticCurvePrivateKey) -> bytes:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass
class Pki:
    ca: bytes
    server_cert: Path
    server_key: Path
    ca_path: Path
    client_cert: bytes
    client_key: bytes
    rogue_cert: bytes
    rogue_key: bytes


def make_pki(tmp: Path, server_ip: str) -> Pki:
    """A throwaway CA, a server certificate for `server_ip`, a client and a rogue client."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("test CA", ca_key, None, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _cert("gateway", server_key, (ca.subject, ca_key), ip=server_ip)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _cert("core-1", client_key, (ca.subject, ca_key))
    rogue_ca_key = ec.generate_private_key(ec.SECP256R1())
    rogue_ca = _cert("rogue CA", rogue_ca_key, None, ca=True)
    rogue_key = ec.generate_private_key(ec.SECP256R1())
    rogue = _cert("core-x", rogue_key, (rogue_ca.subject, rogue_ca_key))
    paths = {name: tmp / name for name in ("ca.pem", "server.pem", "server.key")}
    paths["ca.pem"].write_bytes(_pem(ca))
    paths["server.pem"].write_bytes(_pem(server))
    paths["server.key"].write_bytes(_pem(server_key))
    return Pki(
        ca=_pem(ca),
        server_cert=paths["server.pem"],
        server_key=paths["server.key"],
        ca_path=paths["ca.pem"],
        client_cert=_pem(client),
        client_key=_pem(client_key),
        rogue_cert=_pem(rogue),
        rogue_key=_pem(rogue_key),
    )


async def _refused(core: TestCore) -> bool:
    """True when the stream ended before the Gateway said anything (TLS handshake refused)."""
    try:
        await asyncio.wait_for(core.closed.wait(), 10)
    finally:
        await core.close()
    return core.inbox.empty() and core.status == grpc.StatusCode.UNAVAILABLE


async def test_tls_and_mutual_tls(tmp_path: Path) -> None:
    _tools()
    with gateway_in_namespace(tmp_path) as gateway:
        pki = make_pki(tmp_path, gateway.address)
        gateway.env |= {
            "DEFGUARD_GRPC_CERT": str(pki.server_cert),
            "DEFGUARD_GRPC_KEY": str(pki.server_key),
        }
        gateway.start()
        trusted = grpc.ssl_channel_credentials(root_certificates=pki.ca)
        async with connected(gateway.target, credentials=trusted) as core:
            assert core.hello.interface_name == gateway.ifname  # type: ignore[attr-defined]
        assert await _refused(TestCore(gateway.target))
        assert gateway.stop() == 0

        gateway.env["DEFGUARD_GRPC_CA"] = str(pki.ca_path)
        gateway.start()
        with_cert = grpc.ssl_channel_credentials(pki.ca, pki.client_key, pki.client_cert)
        async with connected(gateway.target, credentials=with_cert) as core:
            assert core.hello.interface_name == gateway.ifname  # type: ignore[attr-defined]
        assert await _refused(TestCore(gateway.target, credentials=trusted))
        rogue = grpc.ssl_channel_credentials(pki.ca, pki.rogue_key, pki.rogue_cert)
        assert await _refused(TestCore(gateway.target, credentials=rogue))
        assert "certificate='core-1'" in gateway.log() or "certificate=core-1" in gateway.log()
        assert gateway.stop() == 0


async def test_shutdown_runs_down_hooks_and_removes_interface(tmp_path: Path) -> None:
    _tools()
    hooks = tmp_path / "hooks.log"
    # Backend chosen by probing the kernel (wireguard-go where it has no WireGuard).
    with gateway_in_namespace(
        tmp_path,
        DEFGUARD_USERSPACE="false",
        PRE_DOWN=f"echo pre_down %i >> {hooks}; ip link show %i >/dev/null && echo present >> {hooks}",
        POST_DOWN=f"ip link show %i >/dev/null 2>&1 || echo gone >> {hooks}; echo post_down >> {hooks}",
    ) as gateway:
        gateway.start()
        private, _ = keypair()
        async with connected(gateway.target) as core:
            await core.apply_full(
                gateway_pb2.LocationState(
                    location_id=1,
                    revision=1,
                    interface=gateway_pb2.InterfaceConfig(
                        private_key=private, addresses=["10.78.0.1/24"]
                    ),
                    peers=[peer("10.78.0.2/32")],
                    firewall=gateway_pb2.FirewallConfig(
                        default_policy=gateway_pb2.FIREWALL_VERDICT_DENY
                    ),
                )
            )
        assert gateway.stop(signal.SIGINT) == 0
        assert hooks.read_text().split() == [
            "pre_down",
            gateway.ifname,
            "present",
            "gone",
            "post_down",
        ]
        assert gateway.ifname not in ns_run(gateway.ns, "ip", "link")
        assert "defguard_" not in ns_run(gateway.ns, "nft", "list", "tables")
        assert not Path(f"/var/run/wireguard/{gateway.ifname}.sock").exists()


async def test_restart_with_kept_interface_adopts_it(tmp_path: Path) -> None:
    _tools()
    with gateway_in_namespace(tmp_path, DEFGUARD_KEEP_INTERFACE="true") as gateway:
        gateway.start()
        private, _ = keypair()
        peers = [peer("10.79.0.2/32"), peer("10.79.0.3/32")]
        state = gateway_pb2.LocationState(
            location_id=3,
            revision=5,
            interface=gateway_pb2.InterfaceConfig(
                private_key=private, listen_port=51821, addresses=["10.79.0.1/24"]
            ),
            peers=peers,
        )
        async with connected(gateway.target) as core:
            await core.apply_full(state)
        index = ifindex(gateway.ns, gateway.ifname)
        assert gateway.stop() == 0
        kept = wg_dump(gateway.ns, gateway.ifname)
        assert set(kept[1]) == {p.public_key for p in peers}

        gateway.start()
        async with connected(gateway.target) as core:
            assert core.hello.applied_revision == 0  # type: ignore[attr-defined]
            await core.apply_full(state)
        assert ifindex(gateway.ns, gateway.ifname) == index
        assert wg_dump(gateway.ns, gateway.ifname) == kept
        assert "added=0" in gateway.log().rsplit("adopted existing interface", 1)[1]
        assert gateway.stop() == 0
        run("ip", "-n", gateway.ns, "link", "del", gateway.ifname)


# ---------------------------------------------------------------- the two backends


async def test_kernel_configuration_path_matches_userspace() -> None:
    """The kernel backend's `wg addconf`/`wg set` commands, run against wireguard-go.

    No kernel module here, but `wg` speaks UAPI to a wireguard-go interface
    the same way it speaks netlink to the kernel, so the kernel backend's
    configuration path is exercised for real; only its `ip link add ... type
    wireguard` is not. Both backends must end with exactly the planned peers.
    """
    _tools()
    from defguard.gateway.state import GatewayState, decide_full_state, decide_update
    from defguard.gateway.wireguard import KernelBackend, UserspaceBackend

    def plan_for(state: GatewayState, msg: object) -> object:
        decision = (
            decide_full_state(state, msg)  # type: ignore[arg-type]
            if isinstance(msg, gateway_pb2.LocationState)
            else decide_update(state, msg)  # type: ignore[arg-type]
        )
        return decision.plan  # type: ignore[union-attr]

    private, public = keypair()
    psk = keypair()[0]
    interface = gateway_pb2.InterfaceConfig(private_key=private, listen_port=51830)
    many = [peer(f"10.80.{i // 250}.{i % 250 + 2}/32") for i in range(300)]
    many[0].preshared_key = psk
    many[1].keepalive_interval = 15
    many[2].allowed_ips.append("fd80::2/128")
    changed = gateway_pb2.PeerConfig(
        public_key=many[3].public_key, allowed_ips=["10.81.0.0/24"], preshared_key=psk
    )
    messages: list[object] = [
        gateway_pb2.LocationState(location_id=1, revision=1, interface=interface, peers=many),
        gateway_pb2.LocationUpdate(
            location_id=1,
            base_revision=1,
            revision=2,
            interface=interface,
            upsert_peers=[changed, peer("10.82.0.2/32")],
            remove_peers=[many[4].public_key, many[5].public_key],
        ),
        gateway_pb2.LocationUpdate(
            location_id=1,
            base_revision=2,
            revision=3,
            interface=gateway_pb2.InterfaceConfig(
                private_key=keypair()[0], listen_port=51831, fwmark=42
            ),
            upsert_peers=[gateway_pb2.PeerConfig(public_key=many[0].public_key, allowed_ips=[])],
        ),
    ]
    # One namespace each: both interfaces take the same listen port.
    with namespace() as ns_user, namespace() as ns_kernel:
        names = [unique_ifname("wgu"), unique_ifname("wgk")]
        spaces = [ns_user, ns_kernel]
        for ns, name in zip(spaces, names, strict=True):
            ns_run(ns, "wireguard-go", name)
        backends = [UserspaceBackend(names[0]), KernelBackend(names[1])]
        try:
            state = GatewayState()
            for msg in messages:
                plan = plan_for(state, msg)
                for backend in backends:
                    await backend.apply(plan)  # type: ignore[arg-type]
                state = plan.result  # type: ignore[attr-defined]
                for backend in backends:
                    dump = await backend.dump()
                    assert {spec.public_key: spec for spec, _ in dump.peers} == dict(state.peers)
                    assert state.interface is not None
                    assert dump.private_key == state.interface.private_key
                    assert dump.listen_port == state.interface.listen_port
                    assert dump.fwmark == state.interface.fwmark
            assert public not in dict(state.peers)
        finally:
            for backend in backends:
                await backend.close()
            for ns, name in zip(spaces, names, strict=True):
                subprocess.run(["ip", "-n", ns, "link", "del", name], capture_output=True)


async def test_interface_lost_underneath_is_recreated_from_full_state(tmp_path: Path) -> None:
    """wireguard-go killed or the link deleted by hand: the next change fails, then heals."""
    _tools()
    with gateway_in_namespace(tmp_path) as gateway:
        gateway.start()
        private, _ = keypair()
        x, y = peer("10.83.0.2/32"), peer("10.83.0.3/32")
        interface = gateway_pb2.InterfaceConfig(private_key=private, addresses=["10.83.0.1/24"])
        state = gateway_pb2.LocationState(location_id=2, revision=1, interface=interface, peers=[x])
        async with connected(gateway.target) as core:
            await core.apply_full(state)
            run("ip", "-n", gateway.ns, "link", "del", gateway.ifname)
            await core.send(
                update=gateway_pb2.LocationUpdate(
                    location_id=2,
                    base_revision=1,
                    revision=2,
                    interface=interface,
                    upsert_peers=[y],
                )
            )
            error = await core.expect("error")
            assert error.code == "apply_failed"  # type: ignore[attr-defined]
            # The Gateway forgot its revision, so a full state at any revision is applied.
            state.revision = 2
            state.peers.append(y)
            await core.apply_full(state)
            _, peers = wg_dump(gateway.ns, gateway.ifname)
            assert set(peers) == {x.public_key, y.public_key}
            assert "10.83.0.1/24" in ns_run(gateway.ns, "ip", "addr", "show", gateway.ifname)

            # Interface changes in an update: one address swapped, MTU set; peers untouched.
            moved = gateway_pb2.InterfaceConfig(
                private_key=private, addresses=["10.84.0.1/24", "fd84::1/64"], mtu=1380
            )
            await core.apply_update(
                gateway_pb2.LocationUpdate(
                    location_id=2, base_revision=2, revision=3, interface=moved
                )
            )
        link = json.loads(ns_run(gateway.ns, "ip", "-j", "addr", "show", gateway.ifname))[0]
        assert link["mtu"] == 1380
        managed = [a for a in link["addr_info"] if a.get("scope") != "link"]
        assert {f"{a['local']}/{a['prefixlen']}" for a in managed} == {
            "10.84.0.1/24",
            "fd84::1/64",
        }
        assert set(wg_dump(gateway.ns, gateway.ifname)[1]) == {x.public_key, y.public_key}
        assert gateway.stop() == 0


# ---------------------------------------------------------------- settings and hooks (no root needed)


async def test_hooks_substitute_the_interface_and_fail_loudly(tmp_path: Path) -> None:
    from defguard.gateway.hooks import HookError, run_down_hook, run_hook

    out = tmp_path / "hook.out"
    await run_hook("POST_UP", f"echo %i $DEFGUARD_IFNAME > {out}", "wg7")
    assert out.read_text().split() == ["wg7", "wg7"]
    await run_hook("PRE_UP", None, "wg7")
    with pytest.raises(HookError, match="PRE_UP hook exited with status 3"):
        await run_hook("PRE_UP", "exit 3", "wg7")
    await run_down_hook("PRE_DOWN", "exit 4", "wg7")  # logged, not raised


def test_tls_settings_are_checked_before_anything_starts(tmp_path: Path) -> None:
    from defguard.gateway.tls import TlsConfigError, server_credentials

    pki = make_pki(tmp_path, "10.0.0.1")
    assert server_credentials(None, None, None) is None
    assert server_credentials(pki.server_cert, pki.server_key, pki.ca_path) is not None
    with pytest.raises(TlsConfigError, match="both"):
        server_credentials(pki.server_cert, None, None)
    with pytest.raises(TlsConfigError, match="mutual TLS"):
        server_credentials(None, None, pki.ca_path)
    with pytest.raises(TlsConfigError, match="cannot read"):
        server_credentials(tmp_path / "missing.pem", pki.server_key, None)
    (tmp_path / "junk.pem").write_text("junk")
    with pytest.raises(TlsConfigError, match="not PEM"):
        server_credentials(tmp_path / "junk.pem", pki.server_key, None)


def test_gateway_exits_with_an_error_on_bad_tls_settings(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DEFGUARD_GRPC_CERT": str(tmp_path / "missing.pem"),
        "DEFGUARD_GRPC_KEY": str(tmp_path / "missing.key"),
        "DEFGUARD_IFNAME": unique_ifname("wgn"),
    }
    result = subprocess.run(
        [sys.executable, "-m", "defguard", "gateway"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "cannot read certificate" in result.stderr


def test_gateway_that_cannot_listen_exits_and_removes_its_interface(env: Env) -> None:
    ifname = unique_ifname("wgd")
    second = {**env.gateway.env, "DEFGUARD_IFNAME": ifname, "HEALTH_PORT": ""}
    try:
        result = subprocess.run(
            ["ip", "netns", "exec", env.gateway.ns, sys.executable, "-m", "defguard", "gateway"],
            env={k: v for k, v in second.items() if v},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        left_behind = ifname in ns_run(env.gateway.ns, "ip", "link")
    finally:
        subprocess.run(["ip", "-n", env.gateway.ns, "link", "del", ifname], capture_output=True)
    assert result.returncode == 1, result.stderr
    assert "cannot listen" in result.stderr
    assert not left_behind
