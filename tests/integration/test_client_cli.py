"""`defguard client connect / status / disconnect` bringing a real WireGuard tunnel up and down.

The client runs in its own network namespace and reaches a wireguard-go peer
in another one over a veth pair. Enrollment and MFA need a real Edge and Core
and are covered by the end-to-end tests; here the device's state is what an
enrollment stores, written through the client's own state module, and the
Edge it points at does not answer, so `connect` must fall back to the
stored configuration.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from defguard.client.api import Device, DeviceConfig, InstanceInfo
from defguard.client.state import Instance, StateStore
from tests.conftest import require_tools
from tests.wgtools import (
    REPO,
    keypair,
    namespace,
    ns_run,
    ping,
    subnet_octets,
    unique_ifname,
    userspace_interface,
    veth_pair,
    wg_dump,
)

pytestmark = pytest.mark.e2e

INSTANCE_ID = "0b6f0c3e-5d0a-4a53-9d0e-2f6f1b7c9a10"


@dataclass
class Site:
    client_ns: str
    server_ns: str
    server_ifname: str
    server_public: str
    endpoint: str
    server_tunnel_ip: str
    client_tunnel_ip: str
    tunnel_net: str
    client_private: str
    client_public: str


@pytest.fixture
def site() -> Iterator[Site]:
    require_tools("ip", "wg", "wireguard-go", root=True)
    a, b = subnet_octets()
    c, d = subnet_octets()
    client_private, client_public = keypair()
    server_private, server_public = keypair()
    with (
        namespace() as client_ns,
        namespace() as server_ns,
        veth_pair(client_ns, server_ns, f"10.{a}.{b}.1/30", f"10.{a}.{b}.2/30"),
        userspace_interface(server_ns) as server_if,
    ):
        ns_run(client_ns, "ip", "link", "set", "lo", "up")
        ns_run(
            server_ns,
            "wg",
            "set",
            server_if,
            "listen-port",
            "51820",
            "private-key",
            "/dev/stdin",
            "peer",
            client_public,
            "allowed-ips",
            f"10.{c}.{d}.2/32",
            input=server_private,
        )
        ns_run(server_ns, "ip", "addr", "add", f"10.{c}.{d}.1/24", "dev", server_if)
        ns_run(server_ns, "ip", "link", "set", server_if, "up")
        yield Site(
            client_ns=client_ns,
            server_ns=server_ns,
            server_ifname=server_if,
            server_public=server_public,
            endpoint=f"10.{a}.{b}.2:51820",
            server_tunnel_ip=f"10.{c}.{d}.1",
            client_tunnel_ip=f"10.{c}.{d}.2",
            tunnel_net=f"10.{c}.{d}.0/24",
            client_private=client_private,
            client_public=client_public,
        )


def _enroll_state(root: Path, site: Site, **location: object) -> StateStore:
    """What `enroll` stores, pointing at an Edge that does not answer."""
    config = {
        "network_id": 1,
        "network_name": "HQ",
        "endpoint": site.endpoint,
        "assigned_ip": site.client_tunnel_ip,
        "pubkey": site.server_public,
        "allowed_ips": f"{site.tunnel_net},192.0.2.0/24",
        "dns": "10.0.0.53",
        "keepalive_interval": 25,
        "location_mfa_mode": 1,
        "service_location_mode": 1,
    }
    config.update(location)
    store = StateStore(root)
    store.save_instance(
        Instance(
            edge_url="http://127.0.0.1:9/",
            info=InstanceInfo(
                id=INSTANCE_ID,
                name="Acme",
                url="http://127.0.0.1:9/",
                proxy_url="http://127.0.0.1:9/",
                username="jdoe",
                client_traffic_policy=0,
            ),
            device=Device(id=17, name="box", pubkey=site.client_public, user_id=5, created_at=0),
            polling_token="MdZ3lx1h3sGpXa2JoEPQj354KVypfbip",
            configs=[DeviceConfig.model_validate(config)],
        ),
        site.client_private,
    )
    return store


def _client(ns: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEFGUARD_")}
    return subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-m", "defguard", "client", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
        check=False,
    )


def _links(ns: str) -> str:
    return ns_run(ns, "ip", "-o", "link", "show")


def test_connect_status_disconnect_over_a_real_tunnel(site, tmp_path):
    state = tmp_path / "state"
    _enroll_state(state, site)
    ifname = unique_ifname("dgc")

    up = _client(site.client_ns, "connect", "hq", "--state-dir", str(state), "--ifname", ifname)
    assert up.returncode == 0, up.stderr
    assert f"Connected to HQ on {ifname}" in up.stdout
    assert "could not refresh Acme" in up.stderr  # the Edge is down: stored configs are used
    assert "10.0.0.53" in up.stderr  # DNS is reported, not applied

    assert ping(site.client_ns, site.server_tunnel_ip) > 0
    _, peers = wg_dump(site.server_ns, site.server_ifname)
    assert int(peers[site.client_public][4]) > 0  # the server saw a handshake from this key

    routes = ns_run(site.client_ns, "ip", "route", "show", "dev", ifname)
    assert site.tunnel_net in routes and "192.0.2.0/24" in routes
    addresses = ns_run(site.client_ns, "ip", "-o", "addr", "show", "dev", ifname)
    assert f"{site.client_tunnel_ip}/32" in addresses

    conf = state / "tunnels" / f"{ifname}.conf"
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    assert f"PrivateKey = {site.client_private}" in conf.read_text()

    status = _client(site.client_ns, "status", "--state-dir", str(state))
    assert status.returncode == 0, status.stderr
    assert f"connected on {ifname}" in status.stdout
    assert "latest handshake never" not in status.stdout
    assert "latest handshake" in status.stdout
    assert site.client_private not in status.stdout + status.stderr

    again = _client(
        site.client_ns, "connect", "1", "--state-dir", str(state), "--ifname", "dgcother"
    )
    assert again.returncode == 2
    assert "already connected" in again.stderr

    down = _client(site.client_ns, "disconnect", "HQ", "--state-dir", str(state))
    assert down.returncode == 0, down.stderr
    assert f"Disconnected HQ ({ifname})" in down.stdout
    assert ifname not in _links(site.client_ns)
    assert not conf.exists()
    assert not Path(f"/var/run/wireguard/{ifname}.sock").exists()
    assert "disconnected" in _client(site.client_ns, "status", "--state-dir", str(state)).stdout


def test_a_failed_bring_up_leaves_nothing_behind(site, tmp_path):
    state = tmp_path / "state"
    # `wg` rejects the keepalive, after the link already exists.
    _enroll_state(state, site, keepalive_interval=70000)
    ifname = unique_ifname("dgc")

    result = _client(site.client_ns, "connect", "HQ", "--state-dir", str(state), "--ifname", ifname)
    assert result.returncode == 1
    assert "wg setconf" in result.stderr
    assert site.client_private not in result.stderr
    assert ifname not in _links(site.client_ns)
    assert not (state / "tunnels" / f"{ifname}.conf").exists()
    assert not (state / "tunnels" / f"{ifname}.json").exists()


def test_an_interface_that_is_not_ours_is_left_alone(site, tmp_path):
    state = tmp_path / "state"
    _enroll_state(state, site)
    ifname = unique_ifname("dgc")
    ns_run(
        site.client_ns, "ip", "link", "add", ifname, "type", "veth", "peer", "name", f"{ifname}p"
    )

    result = _client(site.client_ns, "connect", "HQ", "--state-dir", str(state), "--ifname", ifname)
    assert result.returncode == 1
    assert f"interface {ifname} already exists" in result.stderr
    assert ifname in _links(site.client_ns)
    assert not (state / "tunnels").exists()
