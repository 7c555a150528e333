"""Enrollment and VPN-client MFA for real: the command-line client enrolls through a
`defguard edge` process, passes TOTP MFA for a location and gets a WireGuard tunnel
to a `defguard gateway`; an idle session ends and its peer leaves the gateway.

    client ns ──veth── gateway ns          (WireGuard)
        │                  │
      veth (HTTP,        veth (gRPC, Core → Gateway)
      client → Edge)       │
        └──────── test namespace: PostgreSQL, Core, Edge (Core → Edge over gRPC)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import psycopg
import pyotp
import pytest
from sqlalchemy.engine import URL

from defguard.client.state import StateStore
from defguard.core.auth.mfa import totp_secret_base32
from tests.api_bodies import location_body
from tests.conftest import require_tools
from tests.processes import CoreProcess, EdgeProcess, wait_for
from tests.wgtools import (
    GRPC_PORT,
    REPO,
    Gateway,
    gateway_in_namespace,
    namespace,
    ping,
    subnet_octets,
    unique_ifname,
    veth_pair,
    wg_dump,
)

pytestmark = pytest.mark.e2e

LOCATION = "office"
VPN_NET = "10.98.0.0/24"
GATEWAY_VPN_IP = "10.98.0.1"
ALICE_PASSWORD = "Al1ce!Passw0rd"
# The API insists on at least 120 s for an MFA location; the test lowers it in the
# database so that the expiry is seen within a test's run time.
API_MIN_THRESHOLD = 120
THRESHOLD = 15
# `expire_vpn_sessions` runs every 15 s; the gateway reports handshakes every STATS_PERIOD.
EXPIRY_JOB_PERIOD = 15
STATS_PERIOD = 2
TOTP_STEP = 30
HANDSHAKE_RETRY = 5

# Prints the current TOTP code and appends it to a file. At enrollment the secret comes
# in $DEFGUARD_TOTP_SECRET and is kept; `connect` has no such variable and reads it back.
CODE_SCRIPT = """\
import os, pathlib, sys
import pyotp
secret_file, codes_file = map(pathlib.Path, sys.argv[1:3])
secret = os.environ.get("DEFGUARD_TOTP_SECRET") or secret_file.read_text().strip()
secret_file.write_text(secret)
code = pyotp.TOTP(secret).now()
with codes_file.open("a") as out:
    out.write(code + "\\n")
print(code)
"""


class Client:
    """`defguard client ...` inside the client namespace with its own state directory."""

    def __init__(self, ns: str, state_dir: Path, ifname: str) -> None:
        self.ns = ns
        self.state_dir = state_dir
        self.ifname = ifname
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DEFGUARD_")}

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                self.ns,
                sys.executable,
                "-m",
                "defguard",
                "client",
                *args,
                "--state-dir",
                str(self.state_dir),
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=self.env,
            cwd=REPO,
            timeout=90,
            check=False,
        )

    def connect(self, *code_args: str) -> subprocess.CompletedProcess[str]:
        return self.run("connect", LOCATION, *code_args, "--ifname", self.ifname, "--userspace")

    def interface_exists(self) -> bool:
        result = subprocess.run(
            ["ip", "-n", self.ns, "link", "show", "dev", self.ifname],
            capture_output=True,
            check=False,
        )
        return result.returncode == 0

    def tunnel_psk(self) -> str:
        _, peers = wg_dump(self.ns, self.ifname)
        assert len(peers) == 1, peers
        return next(iter(peers.values()))[1]

    def pubkey(self) -> str:
        (instance,) = StateStore(self.state_dir).instances()
        return instance.device.pubkey

    def cleanup(self) -> None:
        subprocess.run(["ip", "-n", self.ns, "link", "del", self.ifname], capture_output=True)
        Path(f"/var/run/wireguard/{self.ifname}.sock").unlink(missing_ok=True)


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _peers(gw: Gateway) -> dict[str, list[str]]:
    try:
        return wg_dump(gw.ns, gw.ifname)[1]
    except (subprocess.CalledProcessError, AssertionError):
        return {}


def _dsn(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _sql(url: URL, query: str, *params: object) -> list[tuple]:
    with psycopg.connect(_dsn(url), autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def _gateway_caught_up(url: URL, gateway_id: int) -> bool:
    """The gateway applied its location's latest revision: what it holds is what Core wants."""
    rows = _sql(
        url,
        """SELECT max(gl.applied_revision) >= l.config_revision
           FROM gateway g JOIN wireguard_network l ON l.id = g.location_id
           LEFT JOIN gateway_link gl ON gl.gateway_id = g.id
           WHERE g.id = %s GROUP BY l.config_revision""",
        gateway_id,
    )
    return bool(rows and rows[0][0])


def _tunnel_carries_traffic(client_ns: str) -> None:
    """Pings through the tunnel succeed, allowing one WireGuard handshake retry.

    The gateway gets the peer asynchronously, once Core pushes the revision that
    MFA created, while the client brings its interface up as soon as `connect`
    has the preshared key; an initiation that arrives before the peer is
    dropped, and WireGuard retries it 5 s later.
    """
    wait_for(
        lambda: ping(client_ns, GATEWAY_VPN_IP, count=1, wait=1.0) == 1,
        HANDSHAKE_RETRY + 5,
        "the first reply through the tunnel",
    )
    assert ping(client_ns, GATEWAY_VPN_IP, count=3) == 3


def _totp_step() -> int:
    return int(time.time() // TOTP_STEP)


def _tail(path: Path, chars: int) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except FileNotFoundError:
        return "(not started)"


@contextmanager
def _logs_on_failure(*logs: tuple[str, Callable[[], str]]) -> Iterator[None]:
    try:
        yield
    except BaseException:
        for name, read in logs:
            print(f"\n----- {name} log -----\n{read()}")
        raise


def _location(endpoint: str, threshold: int) -> dict:
    return location_body(
        name=LOCATION,
        address=f"{GATEWAY_VPN_IP}/24",
        endpoint=endpoint,
        allowed_ips=VPN_NET,
        dns=None,
        peer_disconnect_threshold=threshold,
        acl_default_allow=True,
        location_mfa_mode="internal",
    )


def test_enroll_mfa_connect_and_idle_expiry_through_the_edge(fresh_db_url, tmp_path):
    require_tools("wireguard-go", "wg", "ip", "nft", root=True)
    code_script = tmp_path / "totp_code.py"
    code_script.write_text(CODE_SCRIPT)
    secret_file, codes_file = tmp_path / "totp.secret", tmp_path / "codes.txt"
    code_command = f"{sys.executable} {code_script} {secret_file} {codes_file}"

    with ExitStack() as stack:
        gw = stack.enter_context(
            gateway_in_namespace(tmp_path, DEFGUARD_STATS_PERIOD=str(STATS_PERIOD))
        )
        a, b = subnet_octets()
        gw_public, client_public = f"10.{a}.{b}.1", f"10.{a}.{b}.2"
        c, d = subnet_octets()
        edge_side, client_side = f"10.{c}.{d}.1", f"10.{c}.{d}.2"
        client_ns = stack.enter_context(namespace())
        stack.enter_context(veth_pair(gw.ns, client_ns, f"{gw_public}/30", f"{client_public}/30"))
        stack.enter_context(veth_pair(None, client_ns, f"{edge_side}/30", f"{client_side}/30"))

        edge = EdgeProcess(edge_side, tmp_path / "edge.log")
        core = CoreProcess(fresh_db_url, tmp_path / "core.log")
        core.env.update(
            DEFGUARD_PROXY_URL=edge.grpc_url,
            DEFGUARD_ENROLLMENT_URL=edge.public_url,
        )
        client = Client(client_ns, tmp_path / "client-state", unique_ifname("dgc"))
        stack.callback(client.cleanup)
        stack.callback(core.stop)
        stack.callback(edge.stop)
        stack.enter_context(
            _logs_on_failure(
                ("core", lambda: _tail(core.log, 12000)),
                ("edge", lambda: _tail(edge.log, 4000)),
                ("gateway", lambda: _tail(gw.log_path, 6000)),
            )
        )

        gw.start()
        edge.start()
        core.start()
        http = core.client()

        # The location requires internal MFA; the API refuses a short idle threshold.
        r = http.post("/network", json=_location(gw_public, THRESHOLD))
        assert r.status_code == 400 and "peer_disconnect_threshold" in r.json()["msg"], r.text
        r = http.post("/network", json=_location(gw_public, API_MIN_THRESHOLD))
        assert r.status_code == 201, r.text
        location_id = r.json()["id"]
        _sql(
            fresh_db_url,
            "UPDATE wireguard_network SET peer_disconnect_threshold = %s WHERE id = %s",
            THRESHOLD,
            location_id,
        )
        r = http.post(
            f"/network/{location_id}/gateways/adopt",
            json={"name": "gw1", "ip_or_domain": gw.address, "grpc_port": GRPC_PORT},
        )
        assert r.status_code == 201, r.text
        gateway_id = r.json()["id"]
        wait_for(lambda: _gateway_caught_up(fresh_db_url, gateway_id), 30, "the gateway link")
        wait_for(
            lambda: any(p["connected"] for p in http.get("/proxy").json()),
            30,
            "Core's link to the Edge",
        )

        # An admin creates alice without a password and hands her an enrollment token.
        r = http.post(
            "/user",
            json={
                "username": "alice",
                "first_name": "Alice",
                "last_name": "A",
                "email": "alice@example.com",
            },
        )
        assert r.status_code == 201, r.text
        r = http.post("/user/alice/start_enrollment", json={"send_enrollment_notification": False})
        assert r.status_code == 201, r.text
        token, url = r.json()["enrollment_token"], r.json()["enrollment_url"]
        assert url.rstrip("/") == edge.public_url

        # alice enrolls this machine through the Edge: password, device and TOTP.
        out = _ok(
            client.run(
                "enroll",
                url,
                token,
                "--name",
                "laptop",
                "--password",
                ALICE_PASSWORD,
                "--mfa-code-command",
                code_command,
            )
        )
        assert "Account alice is activated" in out, out
        assert LOCATION in out and "MFA" in out, out
        secret = secret_file.read_text().strip()
        ((totp_enabled, stored_secret),) = _sql(
            fresh_db_url,
            'SELECT totp_enabled, totp_secret FROM "user" WHERE username = %s',
            "alice",
        )
        assert totp_enabled and totp_secret_base32(stored_secret) == secret
        r = httpx.post(
            f"{core.base}/auth",
            json={"username": "alice", "password": ALICE_PASSWORD},
            headers={"User-Agent": "defguard-e2e"},
        )
        # The password set through the Edge works, and signing in now asks for TOTP.
        assert r.status_code == 201 and r.json()["totp_available"], r.text
        pubkey = client.pubkey()

        # Enrolled but not past MFA: the device is not a peer of the gateway.
        wait_for(lambda: _gateway_caught_up(fresh_db_url, gateway_id), 10, "the gateway to sync")
        assert pubkey not in _peers(gw)

        # A wrong code: no tunnel on the client, no peer on the gateway.
        right = pyotp.TOTP(secret).now()
        wrong = f"{(int(right) + 1) % 1_000_000:06d}"
        result = client.connect("--code", wrong)
        assert result.returncode == 1, (result.stdout, result.stderr)
        assert "code rejected" in result.stderr, result.stderr
        assert not client.interface_exists()
        wait_for(lambda: _gateway_caught_up(fresh_db_url, gateway_id), 10, "the gateway to sync")
        assert pubkey not in _peers(gw)

        # The right code: the tunnel comes up, keyed with the session's preshared key.
        out = _ok(client.connect("--code-command", code_command))
        first_step = _totp_step()
        assert f"Connected to {LOCATION} on {client.ifname}" in out, out
        wait_for(lambda: pubkey in _peers(gw), 10, "the device's peer on the gateway")
        first_psk = _peers(gw)[pubkey][1]
        assert first_psk != "(none)"
        assert client.tunnel_psk() == first_psk
        _tunnel_carries_traffic(client_ns)
        status = _ok(client.run("status"))
        assert f"connected on {client.ifname}" in status, status
        assert "latest handshake never" not in status, status

        # Disconnecting is local: the gateway keeps the peer until the session is idle
        # for the location's threshold, then the expiry job takes it away.
        handshake = int(_peers(gw)[pubkey][4])
        assert handshake > 0
        out = _ok(client.run("disconnect", LOCATION))
        assert f"Disconnected {LOCATION}" in out, out
        assert not client.interface_exists()
        assert pubkey in _peers(gw)
        wait_for(
            lambda: pubkey not in _peers(gw),
            THRESHOLD + EXPIRY_JOB_PERIOD + 3 * STATS_PERIOD + 5,
            "the idle peer's removal",
        )
        assert time.time() >= handshake + THRESHOLD
        ended = _sql(
            fresh_db_url,
            "SELECT end_reason FROM vpn_client_session WHERE authorized_at IS NOT NULL",
        )
        assert ended == [("inactive",)], ended

        # A new connection needs a new code: the one already used is refused.
        used_code = codes_file.read_text().split()[-1]
        result = client.connect("--code", used_code)
        assert result.returncode == 1, (result.stdout, result.stderr)
        assert not client.interface_exists()
        assert pubkey not in _peers(gw)
        wait_for(lambda: _totp_step() > first_step, TOTP_STEP + 1, "the next TOTP step")
        _ok(client.connect("--code-command", code_command))
        wait_for(lambda: pubkey in _peers(gw), 10, "the device's peer on the gateway again")
        second_psk = _peers(gw)[pubkey][1]
        assert second_psk not in ("(none)", first_psk)
        assert client.tunnel_psk() == second_psk
        _tunnel_carries_traffic(client_ns)
        _ok(client.run("disconnect"))
