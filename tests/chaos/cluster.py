"""The processes of a chaos run, and the data every run starts with."""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
from aiosmtpd.controller import Controller
from sqlalchemy.engine import URL

from defguard.core.auth.mfa import totp_secret_base32
from tests.api_bodies import location_body
from tests.chaos.clock import now
from tests.chaos.options import ChaosOptions
from tests.processes import free_port, wait_for
from tests.wgtools import GRPC_PORT, Gateway

REPO = Path(__file__).resolve().parents[2]
ADMIN_PASSWORD = "Chaos!Adm1nPass"
UA = {"User-Agent": "defguard-chaos"}
LOCATION = "office"
VPN_ADDRESS = "10.120.0.1/16"
VPN_NET = "10.120.0.0/16"
# Filled devices take addresses from here, far above what enrollment allocates.
FILLED_ADDRESSES_FROM = (10 << 24) | (120 << 16) | (128 << 8)
# The API insists on at least this idle threshold for an MFA location.
API_MIN_THRESHOLD = 120
# A Core logs this once per Edge it has linked to.
LINKED_TO_EDGE = "proxy connected"


def child_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEFGUARD_")}
    env.update(values)
    return env


def libpq(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def sql(url: URL, query: str, *params: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(libpq(url), autocommit=True) as conn:
        cur = conn.execute(query, params)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


class Node:
    """One `defguard` process with its own log file; can be killed and started again."""

    def __init__(self, name: str, command: str, env: dict[str, str], log: Path) -> None:
        self.name = name
        self.command = command
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_offset = 0
        self.starts = 0

    def spawn(self) -> None:
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"===== {self.name} start {self.starts} at {now()} =====\n".encode())
        self.log_offset = self.log.stat().st_size
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "defguard", self.command],
            env=self.env,
            stdout=out,
            stderr=out,
            cwd=REPO,
        )
        out.close()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0

    def current_log(self) -> str:
        """What the running process has written so far."""
        with self.log.open("rb") as f:
            f.seek(self.log_offset)
            return f.read().decode(errors="replace")

    def whole_log(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self, chars: int = 4000) -> str:
        return self.whole_log()[-chars:]

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class EdgeNode(Node):
    def __init__(self, index: int, workdir: Path) -> None:
        self.http_port, self.grpc_port = free_port(), free_port()
        super().__init__(
            f"edge{index}",
            "edge",
            child_env(
                DEFGUARD_PROXY_HTTP_PORT=str(self.http_port),
                DEFGUARD_PROXY_GRPC_PORT=str(self.grpc_port),
                DEFGUARD_HTTP_BIND_ADDRESS="127.0.0.1",
                DEFGUARD_GRPC_BIND_ADDRESS="127.0.0.1",
            ),
            workdir / f"edge{index}.log",
        )

    @property
    def public_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.public_url}/api/v1/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False


class CoreNode(Node):
    def __init__(self, index: int, workdir: Path, db_url: URL, edges: Sequence[EdgeNode]) -> None:
        self.http_port = free_port()
        self.edges = len(edges)
        self.linked_seen = False
        super().__init__(
            f"core{index}",
            "core",
            child_env(
                DEFGUARD_DATABASE_URL=db_url.render_as_string(hide_password=False),
                DEFGUARD_HTTP_PORT=str(self.http_port),
                DEFGUARD_HTTP_BIND_ADDRESS="127.0.0.1",
                DEFGUARD_DEFAULT_ADMIN_PASSWORD=ADMIN_PASSWORD,
                DEFGUARD_LINK_RETRY_SECONDS="1",
                DEFGUARD_PROXY_URL=",".join(edge.grpc_url for edge in edges),
                DEFGUARD_ENROLLMENT_URL=edges[0].public_url,
            ),
            workdir / f"core{index}.log",
        )

    def spawn(self) -> None:
        self.linked_seen = False
        super().spawn()

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/api/v1"

    @property
    def linked(self) -> bool:
        """Running and linked to every Edge: it can take any client request."""
        if not self.alive:
            return False
        if not self.linked_seen:
            self.linked_seen = self.current_log().count(LINKED_TO_EDGE) >= self.edges
        return self.linked_seen


class MailSink:
    """An SMTP server on loopback that keeps the recipients of each message it accepts."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[tuple[str, ...]] = []
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        del server, session
        self.received.append(tuple(envelope.rcpt_tos))
        return "250 Message accepted for delivery"

    def __enter__(self) -> MailSink:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


@dataclass
class MfaUser:
    user_id: int
    pubkey: str
    secret: str  # base32
    last_step: int = -1
    busy: bool = False


class Cluster:
    """The processes, and the data every run starts with."""

    def __init__(
        self, db_url: URL, workdir: Path, options: ChaosOptions, gateways: Sequence[Gateway]
    ) -> None:
        self.db_url = db_url
        self.workdir = workdir
        self.options = options
        self.gateways = list(gateways)
        self.edges = [EdgeNode(i, workdir) for i in range(options.edges)]
        self.cores = [CoreNode(i, workdir, db_url, self.edges) for i in range(options.cores)]
        self.location_id = 0
        self.admin_cookie = ""
        self.mfa_users: list[MfaUser] = []
        self.poll_tokens: list[tuple[str, str]] = []  # (token, the device's pubkey)

    def logs(self) -> list[Node]:
        return [*self.cores, *self.edges]

    def start(self, mail: MailSink) -> None:
        for gateway in self.gateways:
            gateway.start()
        for edge in self.edges:
            edge.spawn()
        for edge in self.edges:
            wait_for(edge.healthy, 30, f"{edge.name} to answer /health")
        # The first Core migrates and bootstraps alone; the rest join it.
        self.cores[0].spawn()
        wait_for(lambda: self._linked(self.cores[0]), 90, "the first Core's links")
        for core in self.cores[1:]:
            core.spawn()
        http = httpx.Client(base_url=self.cores[0].api, headers=UA, timeout=30)
        r = http.post("/auth", json={"username": "admin", "password": ADMIN_PASSWORD})
        assert r.status_code == 200, r.text
        self.admin_cookie = r.cookies["defguard_session"]
        self._location(http)
        for i, gateway in enumerate(self.gateways):
            r = http.post(
                f"/network/{self.location_id}/gateways/adopt",
                json={"name": f"gw{i}", "ip_or_domain": gateway.address, "grpc_port": GRPC_PORT},
            )
            assert r.status_code == 201, r.text
        http.close()
        sql(
            self.db_url,
            """UPDATE settings SET smtp_server = '127.0.0.1', smtp_port = %s,
               smtp_encryption = 'None', smtp_user = NULL, smtp_password = NULL,
               smtp_sender = 'defguard@example.com'""",
            mail.port,
        )
        self._fill(self.options.mfa_users)
        for core in self.cores:
            wait_for(lambda core=core: self._linked(core), 90, f"{core.name}'s links")
        wait_for(self._gateways_caught_up, 30, "the gateways to apply the location")

    def _linked(self, core: CoreNode) -> bool:
        if not core.alive:
            raise AssertionError(f"{core.name} exited:\n{core.tail()}")
        return core.linked

    def _location(self, http: httpx.Client) -> None:
        endpoint = self.gateways[0].address if self.gateways else "vpn.example.com"
        r = http.post(
            "/network",
            json=location_body(
                name=LOCATION,
                address=VPN_ADDRESS,
                endpoint=endpoint,
                allowed_ips=VPN_NET,
                dns=None,
                peer_disconnect_threshold=API_MIN_THRESHOLD,
                acl_default_allow=True,
                location_mfa_mode="internal",
            ),
        )
        assert r.status_code == 201, r.text
        self.location_id = r.json()["id"]
        sql(
            self.db_url,
            "UPDATE wireguard_network SET peer_disconnect_threshold = %s WHERE id = %s",
            self.options.session_threshold,
            self.location_id,
        )

    def _fill(self, count: int) -> None:
        """Users with TOTP, each with one device addressed in the location and a polling token.

        Written straight to the database (the REST API cannot set a TOTP
        secret): these are the users that pass MFA during the run.
        """
        secrets_ = [secrets.token_bytes(20) for _ in range(count)]
        keys = [base64.b64encode(secrets.token_bytes(32)).decode() for _ in range(count)]
        tokens = [secrets.token_hex(16) for _ in range(count)]
        names = [f"mfa{i}" for i in range(count)]
        addresses = [
            socket.inet_ntoa((FILLED_ADDRESSES_FROM + 1 + i).to_bytes(4, "big"))
            for i in range(count)
        ]
        with psycopg.connect(libpq(self.db_url)) as conn:
            user_ids = [
                row[0]
                for row in conn.execute(
                    """INSERT INTO "user" (username, first_name, last_name, email, password_hash,
                           totp_enabled, totp_secret, mfa_enabled, mfa_method)
                       SELECT n, 'Mfa', n, n || '@example.com', NULL, true, s, true,
                              'one_time_password'
                       FROM unnest(%s::text[], %s::bytea[]) WITH ORDINALITY AS u(n, s, i)
                       ORDER BY i RETURNING id""",
                    (names, secrets_),
                ).fetchall()
            ]
            device_ids = [
                row[0]
                for row in conn.execute(
                    """INSERT INTO device (name, wireguard_pubkey, user_id, created)
                       SELECT 'laptop', k, u, now()
                       FROM unnest(%s::text[], %s::bigint[]) WITH ORDINALITY AS d(k, u, i)
                       ORDER BY i RETURNING id""",
                    (keys, user_ids),
                ).fetchall()
            ]
            conn.execute(
                """INSERT INTO wireguard_network_device (device_id, wireguard_network_id,
                       wireguard_ips)
                   SELECT d, %s, ARRAY[a::inet] FROM unnest(%s::bigint[], %s::text[]) AS x(d, a)""",
                (self.location_id, device_ids, addresses),
            )
            conn.execute(
                """INSERT INTO polling_token (token, device_id)
                   SELECT * FROM unnest(%s::text[], %s::bigint[])""",
                (tokens, device_ids),
            )
            conn.commit()
        self.mfa_users = [
            MfaUser(user_id, key, totp_secret_base32(secret))
            for user_id, key, secret in zip(user_ids, keys, secrets_, strict=True)
        ]
        self.poll_tokens = list(zip(tokens, keys, strict=True))

    def _gateways_caught_up(self) -> bool:
        rows = sql(
            self.db_url,
            """SELECT g.id, coalesce(max(gl.applied_revision), -1) >= l.config_revision
               FROM gateway g JOIN wireguard_network l ON l.id = g.location_id
               LEFT JOIN gateway_link gl ON gl.gateway_id = g.id
               GROUP BY g.id, l.config_revision""",
        )
        return len(rows) == len(self.gateways) and all(ok for _, ok in rows)

    def stop(self) -> None:
        for node in [*self.cores, *self.edges]:
            node.stop()


@contextlib.contextmanager
def running_cluster(
    db_url: URL, workdir: Path, options: ChaosOptions, gateways: Sequence[Gateway]
) -> Iterator[tuple[Cluster, MailSink]]:
    with MailSink() as mail:
        cluster = Cluster(db_url, workdir, options, gateways)
        try:
            cluster.start(mail)
            yield cluster, mail
        finally:
            cluster.stop()
