"""`defguard core` and `defguard edge` as separate processes, for the end-to-end and browser tests.

Each process gets its own ports and a log file; `start` waits until it answers
and fails with the end of its log when it exits instead.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ADMIN_PASSWORD = "E2e!Adm1nPass"
UA = {"User-Agent": "defguard-e2e"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


class CoreProcess:
    def __init__(self, url, log: Path) -> None:
        self.port = free_port()
        self.log = log
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DEFGUARD_")}
        self.env.update(
            DEFGUARD_DATABASE_URL=url.render_as_string(hide_password=False),
            DEFGUARD_HTTP_PORT=str(self.port),
            DEFGUARD_HTTP_BIND_ADDRESS="127.0.0.1",
            DEFGUARD_DEFAULT_ADMIN_PASSWORD=ADMIN_PASSWORD,
            DEFGUARD_LINK_RETRY_SECONDS="1",
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1"

    def start(self) -> None:
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "defguard", "core"], env=self.env, stdout=out, stderr=out
        )

        def healthy() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError("core exited:\n" + self.log.read_text()[-4000:])
            try:
                return httpx.get(f"{self.base}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 60, "core to answer /health")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)

    def client(self) -> httpx.Client:
        http = httpx.Client(base_url=self.base, headers=UA, timeout=30)
        r = http.post("/auth", json={"username": "admin", "password": ADMIN_PASSWORD})
        assert r.status_code == 200, r.text
        return http


class EdgeProcess:
    """`defguard edge`: public HTTP on the address clients reach, gRPC for Core on loopback."""

    def __init__(self, http_address: str, log: Path) -> None:
        self.http_address = http_address
        self.http_port = free_port()
        self.grpc_port = free_port()
        self.log = log
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DEFGUARD_")}
        self.env.update(
            DEFGUARD_PROXY_HTTP_PORT=str(self.http_port),
            DEFGUARD_PROXY_GRPC_PORT=str(self.grpc_port),
            DEFGUARD_HTTP_BIND_ADDRESS=http_address,
            DEFGUARD_GRPC_BIND_ADDRESS="127.0.0.1",
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def public_url(self) -> str:
        return f"http://{self.http_address}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    def start(self) -> None:
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "defguard", "edge"], env=self.env, stdout=out, stderr=out
        )

        def healthy() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError("edge exited:\n" + self.log.read_text()[-4000:])
            try:
                return httpx.get(f"{self.public_url}/api/v1/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 30, "the edge to answer /health")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
