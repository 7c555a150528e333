"""Core's share of a client request: Edge requests dispatched in-process, no Edge and no gRPC.

Same data as bench/bench_edge.py (users with TOTP, one device each in an MFA
location, polling tokens). Calls `edge_requests.dispatch` directly, 16 at a
time (what one Edge link allows), and reports polls per second, MFA
authorisations (start + finish) per second, and the share of wall time this
Python process was on the CPU: the rest is PostgreSQL and waiting.

Usage: python bench/bench_dispatch.py [--users 3000] [--polls 2000] [--mfa 300]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import pyotp
from sqlalchemy.engine import URL, make_url

sys.path.insert(0, str(Path(__file__).parent))
from bench_edge import fill
from defguard import eventloop
from defguard.config import CoreSettings
from defguard.core.bootstrap import bootstrap
from defguard.core.edge_requests.handlers import dispatch
from defguard.db.embedded import ensure_server
from defguard.db.engine import Database
from defguard.db.migrate import upgrade
from defguard.proto import edge_pb2

CONCURRENCY = 16
_TICK = os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds() -> float:
    """CPU time of every `postgres` process on this machine (this benchmark's server),
    including backends that already exited (counted in the postmaster's children time)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name, rest = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :]
        if name == "postgres":
            fields = rest.split()
            total += sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
    return total / _TICK


def request(request_id: str, method: str, body: dict, ip: str) -> edge_pb2.EdgeRequest:
    return edge_pb2.EdgeRequest(
        request_id=request_id, method=method, body=json.dumps(body).encode(), client_ip=ip
    )


async def measure(url: URL, tokens: list[str], users: list, polls: int, mfas: int) -> None:
    db = Database(url, pool_size=16)
    settings = CoreSettings()
    await bootstrap(db, "Bench!Adm1nPassw0rd")
    slots = asyncio.Semaphore(CONCURRENCY)

    async def poll(i: int) -> int:
        async with slots:
            answer = await dispatch(
                db, settings, request(f"p{i}", "poll", {"token": random.choice(tokens)}, "10.0.0.1")
            )
            return answer.status

    async def mfa(i: int) -> int:
        _user_id, pubkey, secret = users[i]
        ip = f"10.1.{i >> 8 & 255}.{i & 255}"
        async with slots:
            started = await dispatch(
                db,
                settings,
                request(
                    f"s{i}",
                    "client_mfa.start",
                    {"location_id": 1, "pubkey": pubkey, "method": 0},
                    ip,
                ),
            )
            if started.status != 200:
                return started.status
            code = pyotp.TOTP(base64.b32encode(secret).decode().rstrip("=")).now()
            token = json.loads(started.body)["token"]
            finished = await dispatch(
                db,
                settings,
                request(f"f{i}", "client_mfa.finish", {"token": token, "code": code}, ip),
            )
            return finished.status

    for name, fn, count in (("poll", poll, polls), ("MFA start+finish", mfa, mfas)):
        wall, cpu, pg = time.perf_counter(), time.process_time(), postgres_cpu_seconds()
        statuses = await asyncio.gather(*(fn(i) for i in range(count)))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        pg = postgres_cpu_seconds() - pg
        counted = dict(sorted((s, statuses.count(s)) for s in set(statuses)))
        print(
            f"{name}: {count / wall:,.0f}/s, Python on CPU {cpu / wall:.0%} of the time, "
            f"{cpu / count * 1000:.2f} ms CPU each in Core, "
            f"{pg / count * 1000:.2f} ms in PostgreSQL, statuses {counted}"
        )
    await db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--polls", type=int, default=2000)
    parser.add_argument("--mfa", type=int, default=300)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="defguard-bench-dispatch-"))
    server = ensure_server(tmp / "pg")
    try:
        admin = server.get_uri("postgres")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench")
        url = make_url(admin).set(drivername="postgresql+psycopg", database="bench")
        upgrade(url)
        tokens, users = fill(
            url.set(drivername="postgresql").render_as_string(hide_password=False), args.users
        )
        # Core runs on this loop too (defguard.eventloop).
        eventloop.run(measure(url, tokens, users, args.polls, min(args.mfa, args.users)))
    finally:
        server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
