"""README's first command, for real: `defguard up`, then an admin's first steps over HTTP."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.api_bodies import location_body
from tests.conftest import require_tools
from tests.wgtools import keypair, load_client_config

UA = {"User-Agent": "defguard-e2e"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_up(data_dir: Path, port: int) -> tuple[subprocess.Popen[str], list[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEFGUARD_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "defguard",
            "up",
            "--data-dir",
            str(data_dir),
            "--port",
            str(port),
            "--edge-port",
            str(_free_port()),
            "--edge-grpc-port",
            str(_free_port()),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    lines: list[str] = []
    deadline = time.monotonic() + 90
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "Press Ctrl+C" in line:
            return proc, lines
    proc.kill()
    pytest.fail("defguard up did not report readiness:\n" + "".join(lines))


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


def _postgres_running(data_dir: Path) -> bool:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return any(str(data_dir) in line and "postgres" in line for line in out.splitlines())


def test_up_prints_login_and_admin_gets_a_working_config(tmp_path):
    data_dir = tmp_path / "data"
    port = _free_port()
    proc, lines = _start_up(data_dir, port)
    try:
        out = "".join(lines)
        assert f"http://127.0.0.1:{port}/api/v1" in out
        match = re.search(r"Login:\s+admin / (\S+)\s+\(generated", out)
        assert match, out
        password = match.group(1)

        # The Edge is up and a Core has connected to it and provisioned it.
        edge = re.search(r"Enrollment:\s+(http://127\.0\.0\.1:\d+)/", out)
        assert edge, out
        deadline = time.monotonic() + 30
        state = None
        while time.monotonic() < deadline and state != "connected":
            state = httpx.get(f"{edge.group(1)}/api/v1/info", timeout=2).json()["server_state"]
            time.sleep(0.2)
        assert state == "connected"

        # The printed console URL serves the sign-in page, and the Edge its enrollment page.
        console = re.search(r"Admin console:\s+(http://127\.0\.0\.1:\d+)/", out)
        assert console, out
        page = httpx.get(f"{console.group(1)}/", follow_redirects=True, timeout=5)
        assert page.status_code == 200 and 'id="login-form"' in page.text
        page = httpx.get(f"{edge.group(1)}/", timeout=5)
        assert page.status_code == 200 and 'id="token-form"' in page.text

        with httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1", headers=UA) as http:
            r = http.post("/auth", json={"username": "admin", "password": password})
            assert r.status_code == 200, r.text
            r = http.post(
                "/network",
                json=location_body(endpoint="127.0.0.1"),
            )
            assert r.status_code == 201, r.text
            location = r.json()
            r = http.post(
                "/user",
                json={
                    "username": "asmith",
                    "first_name": "Anna",
                    "last_name": "Smith",
                    "email": "anna@example.com",
                    "password": "Tr0ub4dor&3x",
                },
            )
            assert r.status_code == 201, r.text
            private, public = keypair()
            r = http.post("/device/asmith", json={"name": "laptop", "wireguard_pubkey": public})
            assert r.status_code == 201, r.text
            device = r.json()["device"]
            r = http.get(f"/network/{location['id']}/device/{device['id']}/config")
            assert r.status_code == 200, r.text
            config = r.text
        assert "Address = 10.10.0.2" in config

        require_tools("wg", "wg-quick", "wireguard-go", "ip", root=True)
        peer = load_client_config(config, private)
        assert peer["public_key"] == location["pubkey"]
        assert set(peer["allowed_ips"].split(",")) == {"10.10.0.0/24", "192.168.50.0/24"}
        assert peer["persistent_keepalive"] == "25"
    finally:
        _stop(proc)
    assert not _postgres_running(data_dir), "embedded PostgreSQL outlived defguard up"

    # Second start: same data, no new password.
    proc, lines = _start_up(data_dir, port)
    try:
        out = "".join(lines)
        assert "generated" not in out
        assert "reset-password" in out
        with httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1", headers=UA) as http:
            assert (
                http.post("/auth", json={"username": "admin", "password": password}).status_code
                == 200
            )
            assert [n["name"] for n in http.get("/network").json()] == ["HQ"]
    finally:
        _stop(proc)


def test_up_runs_several_of_each_component(tmp_path):
    """`defguard up --cores 2 --edges 2 --gateways 2`: a full mesh, and a killed Core comes back."""
    require_tools("wireguard-go", "wg", "ip", "nft", root=True)
    data_dir = tmp_path / "data"
    port, edge_port, edge_grpc, gw_grpc = (_free_port() for _ in range(4))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEFGUARD_")}
    env["DEFGUARD_LINK_RETRY_SECONDS"] = "1"
    env["DEFGUARD_DEFAULT_ADMIN_PASSWORD"] = "Up!Adm1nPassw0rd"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "defguard",
            "up",
            "--data-dir",
            str(data_dir),
            "--port",
            str(port),
            "--edge-port",
            str(edge_port),
            "--edge-grpc-port",
            str(edge_grpc),
            "--gateway-grpc-port",
            str(gw_grpc),
            "--cores",
            "2",
            "--edges",
            "2",
            "--gateways",
            "2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    lines: list[str] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "Press Ctrl+C" in line:
            break
    out = "".join(lines)
    try:
        assert "Press Ctrl+C" in out, out
        for name in ("Core 1", "Core 2", "Edge 1", "Edge 2", "Gateway 1", "Gateway 2"):
            assert name in out, out
        with httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1", headers=UA) as http:
            r = http.post("/auth", json={"username": "admin", "password": "Up!Adm1nPassw0rd"})
            assert r.status_code == 200, r.text

            def all_connected() -> bool:
                gateways = http.get("/gateway").json()
                proxies = http.get("/proxy").json()
                return (
                    len(gateways) == 2
                    and all(g["connected"] for g in gateways)
                    and len(proxies) == 2
                    and all(p["connected"] for p in proxies)
                )

            deadline = time.monotonic() + 60
            while not all_connected():
                assert time.monotonic() < deadline, (
                    http.get("/gateway").json(),
                    http.get("/proxy").json(),
                )
                time.sleep(0.5)

            # SIGKILL the second Core: the supervisor restarts it on its port.
            ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
            second = f"http://127.0.0.1:{port + 1}/api/v1"
            cores = [
                int(line.split()[0])
                for line in ps.splitlines()
                if "defguard core" in line and str(data_dir) not in line
            ]
            assert cores
            before = httpx.get(f"{second}/health", timeout=2).status_code
            assert before == 200
            victims = [
                pid
                for pid in cores
                if f"DEFGUARD_HTTP_PORT={port + 1}"
                in Path(f"/proc/{pid}/environ").read_bytes().replace(b"\0", b" ").decode()
            ]
            assert len(victims) == 1
            os.kill(victims[0], signal.SIGKILL)
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{second}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "the killed Core was not restarted"
                time.sleep(0.5)
    finally:
        _stop(proc)
