"""The downloaded client config is accepted by the real WireGuard tools.

A device config from the API, with a real private key filled in, goes through
`wg-quick strip` and `wg setconf` on a wireguard-go interface inside a fresh
network namespace; `wg` must then report the location as the peer with the
allowed IPs, endpoint and keepalive the location was created with. The
namespace has no routes, so nothing leaves it.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from defguard.wireguard.keys import generate_keypair
from tests.conftest import require_tools
from tests.integration.test_locations import create_location

pytestmark = pytest.mark.e2e

_counter = itertools.count()


def run(*args: str, input_text: str | None = None) -> str:
    result = subprocess.run(
        list(args), input=input_text, capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, f"{' '.join(args)} failed: {result.stderr}"
    return result.stdout


async def test_wireguard_accepts_downloaded_config(admin_client, tmp_path: Path):
    require_tools("wg", "wg-quick", "wireguard-go", "ip", root=True)
    location = await create_location(
        admin_client,
        address="10.66.0.1/24,fd66::1/120",
        endpoint="127.0.0.1",
        port=51999,
        allowed_ips="10.66.0.0/24,192.168.77.0/24,fd66::/120",
        dns="10.66.0.53",
        keepalive_interval=17,
    )
    keys = generate_keypair()
    r = await admin_client.post(
        "/device/admin", json={"name": "e2e", "wireguard_pubkey": keys.public}
    )
    assert r.status_code == 201, r.text
    device = r.json()["device"]
    r = await admin_client.get(f"/network/{location['id']}/device/{device['id']}/config")
    assert r.status_code == 200
    text = r.text
    assert "YOUR_PRIVATE_KEY" in text

    ifname = f"dge{os.getpid() % 100000}x{next(_counter)}"[:15]
    namespace = f"dge-{uuid.uuid4().hex[:12]}"
    conf = tmp_path / f"{ifname}.conf"
    conf.write_text(text.replace("YOUR_PRIVATE_KEY", keys.private) + "\n")
    stripped = run("wg-quick", "strip", str(conf))
    assert "Address" not in stripped and "DNS" not in stripped
    stripped_path = tmp_path / "stripped.conf"
    stripped_path.write_text(stripped)

    run("ip", "netns", "add", namespace)
    try:
        run("ip", "netns", "exec", namespace, "wireguard-go", ifname)
        run("ip", "netns", "exec", namespace, "wg", "setconf", ifname, str(stripped_path))

        dump = run("ip", "netns", "exec", namespace, "wg", "show", ifname, "dump")
        interface, *peers = [line.split("\t") for line in dump.strip().splitlines()]
        assert interface[0] == keys.private and interface[1] == keys.public
        assert len(peers) == 1
        peer_key, _psk, endpoint, allowed, _handshake, _rx, _tx, keepalive = peers[0]
        assert peer_key == location["pubkey"]
        assert endpoint == "127.0.0.1:51999"
        assert sorted(allowed.split(",")) == sorted(
            ["10.66.0.0/24", "192.168.77.0/24", "fd66::/120"]
        )
        assert keepalive == "17"

        showconf = run("ip", "netns", "exec", namespace, "wg", "showconf", ifname)
        assert f"PublicKey = {location['pubkey']}" in showconf
        assert "Endpoint = 127.0.0.1:51999" in showconf
        assert "PersistentKeepalive = 17" in showconf
    finally:
        # Deleting the link makes wireguard-go exit and remove its control socket.
        subprocess.run(
            ["ip", "-n", namespace, "link", "del", ifname], capture_output=True, check=False
        )
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True, check=False)
