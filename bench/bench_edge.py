"""Client traffic through Edge → Core → PostgreSQL: config polls and VPN-client MFA per second.

Everything runs on this machine as real processes: an embedded PostgreSQL, one
`defguard edge`, `--cores` `defguard core` processes linked to it over gRPC,
and this script as the load generator (`httpload`, one keep-alive connection
per simulated client, `--concurrency` of them).
Data: `--users` users with TOTP enabled, each with one device in a location
with internal MFA and a polling token.

Phases, each `--seconds` long:

1. baseline: `GET /api/v1/health` on the Edge (HTTP only, no Core), the
   ceiling of the Edge's HTTP layer and of the load generator on this machine;
2. poll: `POST /api/v1/poll` with random devices' polling tokens;
3. MFA: `client-mfa/start` (TOTP) then `client-mfa/finish` with the current
   code, each user at most once per TOTP step (codes cannot be replayed); one
   authorisation = both requests, and a fresh preshared key must come back.

Reports requests per second, p50/p99 latency and the load generator's own CPU
time per operation for each phase; the ratio to the baseline is what carries
across machines.

Usage: python bench/bench_edge.py [--users 20000] [--seconds 15] [--cores 1] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from pathlib import Path

import psycopg
import pyotp
from psycopg import sql
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import make_url

from defguard import eventloop
from defguard.db.embedded import ensure_server
from defguard.db.migrate import upgrade
from httpload import Connection, head, with_body

ADMIN_PASSWORD = "Bench!Adm1nPass"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fill(uri: str, users: int) -> tuple[list[str], list[tuple[int, str, bytes]]]:
    """Users with TOTP, one device each in an MFA location, polling tokens; returns what clients hold."""
    secrets_by_user = [secrets.token_bytes(20) for _ in range(users)]
    keys = [base64.b64encode(secrets.token_bytes(32)).decode() for _ in range(users)]
    tokens = [secrets.token_hex(16) for _ in range(users)]
    with psycopg.connect(uri, autocommit=False) as conn:
        conn.execute(
            """INSERT INTO wireguard_network (id, name, address, port, pubkey, prvkey, endpoint,
               allowed_ips, location_mfa_mode, peer_disconnect_threshold, allow_all_groups)
               VALUES (1, 'office', '{10.0.0.1/16}', 51820, %s, %s, 'vpn.example.com', '{10.0.0.0/16}',
                       'internal', 300, true)""",
            (base64.b64encode(secrets.token_bytes(32)).decode(),) * 2,
        )
        with conn.cursor().copy(
            'COPY "user" (id, username, first_name, last_name, email, password_hash, totp_enabled,'
            " totp_secret, mfa_enabled, mfa_method) FROM STDIN"
        ) as copy:
            for i in range(users):
                copy.write_row(
                    (
                        1000 + i,
                        f"user{i}",
                        "U",
                        str(i),
                        f"user{i}@example.com",
                        None,
                        True,
                        secrets_by_user[i],
                        True,
                        "one_time_password",
                    )
                )
        with conn.cursor().copy(
            "COPY device (id, name, wireguard_pubkey, user_id, created) FROM STDIN"
        ) as copy:
            for i in range(users):
                copy.write_row((1000 + i, f"laptop{i}", keys[i], 1000 + i, "2026-01-01"))
        conn.execute(
            """INSERT INTO wireguard_network_device (device_id, wireguard_network_id, wireguard_ips)
               SELECT id, 1, ARRAY['10.0.0.1'::inet + (id - 998)] FROM device"""
        )
        with conn.cursor().copy("COPY polling_token (token, device_id) FROM STDIN") as copy:
            for i in range(users):
                copy.write_row((tokens[i], 1000 + i))
        # What Core's own bump would have done for these peers.
        conn.execute("UPDATE wireguard_network SET config_revision = config_revision + 1")
        conn.execute("UPDATE peer_change SET revision = 1 WHERE revision IS NULL")
        conn.commit()
    # Planner statistics, as autovacuum would have them on a database in use.
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("ANALYZE")
    return tokens, [(1000 + i, keys[i], secrets_by_user[i]) for i in range(users)]


class Processes:
    def __init__(self, uri: str, cores: int, logdir: Path) -> None:
        self.http_port, self.grpc_port = free_port(), free_port()
        base = {k: v for k, v in os.environ.items() if not k.startswith("DEFGUARD_")}
        base["DEFGUARD_DATABASE_URL"] = uri
        base["DEFGUARD_LOG_LEVEL"] = "warning"
        self.procs: list[subprocess.Popen[bytes]] = []
        edge_env = dict(
            base,
            DEFGUARD_PROXY_HTTP_PORT=str(self.http_port),
            DEFGUARD_PROXY_GRPC_PORT=str(self.grpc_port),
            DEFGUARD_HTTP_BIND_ADDRESS="127.0.0.1",
            DEFGUARD_GRPC_BIND_ADDRESS="127.0.0.1",
        )
        self._spawn("edge", edge_env, logdir / "edge.log")
        for i in range(cores):
            core_env = dict(
                base,
                DEFGUARD_HTTP_PORT=str(free_port()),
                DEFGUARD_HTTP_BIND_ADDRESS="127.0.0.1",
                DEFGUARD_PROXY_URL=f"http://127.0.0.1:{self.grpc_port}",
                DEFGUARD_DEFAULT_ADMIN_PASSWORD=ADMIN_PASSWORD,
                DEFGUARD_LINK_RETRY_SECONDS="1",
            )
            self._spawn("core", core_env, logdir / f"core{i}.log")

    def _spawn(self, command: str, env: dict[str, str], log: Path) -> None:
        out = log.open("ab")
        self.procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "defguard", command], env=env, stdout=out, stderr=out
            )
        )

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


async def wait_connected(http: Connection, info: bytes, cores: int) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            status, body = await http.send(info)
            if status == 200 and json.loads(body)["server_state"] == "connected":
                # Give every Core time to link before measuring.
                await asyncio.sleep(2 + cores)
                return
        except (OSError, ValueError):
            http.close()
        await asyncio.sleep(0.3)
    raise SystemExit("the Edge never got a Core")


async def run_phase(
    connections: list[Connection], seconds: float, one: Callable[[Connection], Awaitable[bool]]
) -> tuple[int, int, list[float]]:
    """(completed operations, failures, latencies in ms) for `seconds` of load."""
    latencies: list[float] = []
    failures = 0
    stop_at = time.monotonic() + seconds

    async def worker(http: Connection) -> None:
        nonlocal failures
        while time.monotonic() < stop_at:
            start = time.perf_counter()
            ok = await one(http)
            if ok:
                latencies.append((time.perf_counter() - start) * 1000)
            else:
                failures += 1

    await asyncio.gather(*(worker(http) for http in connections))
    return len(latencies), failures, latencies


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(args: argparse.Namespace, port: int, tokens: list[str], users: list) -> list:
    results = []
    host = f"127.0.0.1:{port}"
    api = "/api/v1"
    connections = [Connection("127.0.0.1", port) for _ in range(args.concurrency)]
    await wait_connected(connections[0], with_body(head("GET", host, f"{api}/info")), args.cores)
    json_type = {"Content-Type": "application/json"}

    # The generator's own work kept small: it shares the 2 cores with what it measures.
    # Requests are prepared once, as bytes.
    health_request = with_body(head("GET", host, f"{api}/health"))
    poll_head = head("POST", host, f"{api}/poll", json_type)
    poll_requests = [with_body(poll_head, json.dumps({"token": t}).encode()) for t in tokens]

    async def health(http: Connection) -> bool:
        status, _ = await http.send(health_request)
        return status == 200

    async def poll(http: Connection) -> bool:
        status, body = await http.send(random.choice(poll_requests))
        return status == 200 and json.loads(body)["device_config"]["device"] is not None

    # Each simulated client has its own address (the Edge reads the right-most
    # X-Forwarded-For entry), so per-address limits apply per client as in real life.
    def client(user_id: int, pubkey: str, secret: bytes) -> tuple:
        where = dict(
            json_type,
            **{"X-Forwarded-For": f"10.{user_id >> 16 & 255}.{user_id >> 8 & 255}.{user_id & 255}"},
        )
        start = json.dumps({"location_id": 1, "pubkey": pubkey, "method": 0}).encode()
        return (
            user_id,
            with_body(head("POST", host, f"{api}/client-mfa/start", where), start),
            head("POST", host, f"{api}/client-mfa/finish", where),
            pyotp.TOTP(base64.b32encode(secret).decode().rstrip("=")),
        )

    queue = deque(client(*user) for user in random.sample(users, len(users)))
    used_step: dict[int, int] = {}
    stale = [0]
    why: Counter[str] = Counter()

    async def mfa(http: Connection) -> bool:
        step = int(time.time()) // 30
        for _ in range(len(queue)):
            user_id, start_request, finish_head, totp = queue[0]
            queue.rotate(-1)
            if used_step.get(user_id) != step:
                used_step[user_id] = step
                break
        else:
            return False
        status, body = await http.send(start_request)
        if status != 200:
            why[f"start {status} {body[:60]!r}"] += 1
            return False
        token = json.loads(body)["token"]
        finish = json.dumps({"token": token, "code": totp.now()}).encode()
        status, body = await http.send(with_body(finish_head, finish))
        if status == 401 and int(time.time()) // 30 != step:
            stale[0] += 1  # the code's TOTP step ended in flight; a client retries
            return False
        if status != 200:
            why[f"finish {status} {body[:60]!r}"] += 1
            return False
        return len(base64.b64decode(json.loads(body)["preshared_key"])) == 32

    phases = [
        ("baseline: GET /health", health),
        ("poll", poll),
        ("MFA start+finish", mfa),
    ]
    for name, fn in phases:
        if name.split(":")[0].split()[0].lower() not in args.phases:
            continue
        await fn(connections[0])  # warm
        cpu = time.process_time()
        done, failed, lat = await run_phase(connections, args.seconds, fn)
        # What the load generator itself costs: it shares the machine.
        generator_ms = (time.process_time() - cpu) * 1000 / max(done, 1)
        if fn is mfa:
            failed -= stale[0]
            print(f"MFA codes whose TOTP step ended in flight (a client retries): {stale[0]}")
            if why:
                print("MFA failures:", dict(why))
        results.append(
            (
                name,
                done / args.seconds,
                failed,
                percentile(lat, 0.5),
                percentile(lat, 0.99),
                generator_ms,
            )
        )
    for http in connections:
        http.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=20000)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--cores", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument(
        "--phases", default="baseline,poll,mfa", help="Comma-separated subset of the phases."
    )
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="defguard-bench-edge-"))
    server = ensure_server(tmp / "pg")
    processes: Processes | None = None
    try:
        admin = server.get_uri("postgres")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier("bench")))
        url = make_url(admin).set(drivername="postgresql+psycopg", database="bench")
        upgrade(url)
        uri = url.render_as_string(hide_password=False)
        started = time.perf_counter()
        tokens, users = fill(
            url.set(drivername="postgresql").render_as_string(hide_password=False), args.users
        )
        print(f"filled {args.users} users in {time.perf_counter() - started:.1f} s")
        processes = Processes(uri, args.cores, tmp)
        print(
            "pids (edge, cores):", " ".join(str(proc.pid) for proc in processes.procs), flush=True
        )
        # The same event loop as the servers: the generator shares their 2 cores.
        results = eventloop.run(measure(args, processes.http_port, tokens, users))
    finally:
        if processes is not None:
            processes.stop()
        server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)

    table = Table(title=f"Edge → {args.cores} Core(s) → PostgreSQL, {args.concurrency} connections")
    columns = (
        "phase",
        "per second",
        "failed",
        "p50 ms",
        "p99 ms",
        "vs baseline",
        "generator CPU ms",
    )
    for column in columns:
        table.add_column(column)
    baseline = results[0][1] if results[0][0].startswith("baseline") else float("nan")
    for name, rate, failed, p50, p99, generator_ms in results:
        table.add_row(
            name,
            f"{rate:,.0f}",
            str(failed),
            f"{p50:.1f}",
            f"{p99:.1f}",
            f"{rate / baseline:.3f}",
            f"{generator_ms:.2f}",
        )
    Console(width=130).print(table)


if __name__ == "__main__":
    main()
