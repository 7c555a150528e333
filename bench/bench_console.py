"""Console pages at scale: how long Core takes to render each admin page with N users,
each with a device in one location, and how large the page is.

Pages are requested in-process through the ASGI app (no network), with an admin
session, on an embedded PostgreSQL. The baseline in the same run is
`GET /api/v1/health`: the cost of a request through the app and its middleware
that touches nothing; the ratio shows what rendering a page adds.

Usage: python bench/bench_console.py [--users 20000] [--repeat 20]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import httpx
import psycopg
from psycopg import sql
from rich.console import Console
from rich.table import Table
from sqlalchemy import select
from sqlalchemy.engine import make_url

from defguard.config import CoreSettings
from defguard.core.app import create_app
from defguard.core.auth.models import Session
from defguard.core.bootstrap import bootstrap
from defguard.core.context import RequestContext
from defguard.core.devices.service import NewUserDevice, add_user_devices
from defguard.core.locations.service import create_location
from defguard.core.users.models import User
from defguard.core.users.service import NewUser, create_users
from defguard.db.base import utcnow
from defguard.db.embedded import ensure_server
from defguard.db.engine import Database
from defguard.db.migrate import upgrade

sys.path.insert(0, str(Path(__file__).parent))
from bench_addressing import location_body

CTX = RequestContext(ip="127.0.0.1", user_agent="defguard-bench")


async def seed(db: Database, n: int) -> tuple[str, int, int]:
    """Returns an admin session id, the location id and one device id."""
    await bootstrap(db, "Bench!Passw0rd1")
    async with db.session() as s:
        admin = (await s.execute(select(User).where(User.username == "admin"))).scalar_one()
    async with db.transaction() as s:
        location = await create_location(s, location_body("10.0.0.1/16"), actor=admin, ctx=CTX)
    async with db.transaction() as s:
        users = await create_users(
            s,
            [
                NewUser(username=f"user{i}", first_name="U", last_name=str(i), email=f"u{i}@x.test")
                for i in range(n)
            ],
            actor=admin,
            ctx=CTX,
        )
        user_ids = [u.id for u in users]
    async with db.transaction() as s:
        devices = await add_user_devices(
            s,
            [
                NewUserDevice(
                    user_id=uid,
                    name="laptop",
                    wireguard_pubkey=base64.b64encode(os.urandom(32)).decode(),
                )
                for uid in user_ids
            ],
            actor=admin,
            ctx=CTX,
        )
        device_id = devices[0].id
    sid = secrets.token_hex(12)
    async with db.transaction() as s:
        s.add(
            Session(
                id=sid, user_id=admin.id, mfa_verified=True, expires=utcnow() + timedelta(hours=1)
            )
        )
    return sid, location.id, device_id


async def measure(url: str, n: int, repeat: int) -> list[tuple[str, float, float, int]]:
    db = Database(make_url(url), pool_size=4)
    try:
        sid, location_id, device_id = await seed(db, n)
        app = create_app(CoreSettings(url="http://localhost:8000"), db)
        transport = httpx.ASGITransport(app=app)
        pages = [
            "/api/v1/health",
            "/",
            "/users",
            f"/users?q=user{n // 2}",
            f"/users/user{n // 3}",
            "/groups",
            "/locations",
            f"/locations/{location_id}",
            f"/devices/{device_id}",
            "/acl",
            f"/acl/firewall?location={location_id}",
            "/edges",
            "/gateways",
            "/activity",
            "/settings",
        ]
        results = []
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://bench",
            cookies={"defguard_session": sid},
            headers={"User-Agent": "defguard-bench"},
            timeout=120,
        ) as client:
            for path in pages:
                r = await client.get(path)
                assert r.status_code == 200, (path, r.status_code, r.text[:200])
                times = []
                for _ in range(repeat):
                    t0 = time.perf_counter()
                    r = await client.get(path)
                    times.append(time.perf_counter() - t0)
                times.sort()
                p50 = statistics.median(times) * 1000
                p90 = times[int(len(times) * 0.9) - 1] * 1000
                results.append((path, p50, p90, len(r.content)))
        return results
    finally:
        await db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="defguard-bench-console-"))
    server = ensure_server(tmp)
    try:
        admin_uri = server.get_uri("postgres")
        with psycopg.connect(admin_uri, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier("console")))
        url = make_url(admin_uri).set(drivername="postgresql+psycopg", database="console")
        upgrade(url)
        rows = asyncio.run(
            measure(url.render_as_string(hide_password=False), args.users, args.repeat)
        )
    finally:
        server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    baseline = rows[0][1]
    table = Table(
        title=f"console pages, {args.users} users with one device each ({args.repeat} requests each)"
    )
    for column in ("page", "p50 ms", "p90 ms", "vs /health", "size KiB"):
        table.add_column(column)
    for path, p50, p90, size in rows:
        table.add_row(
            path, f"{p50:.1f}", f"{p90:.1f}", f"{p50 / baseline:.1f}", f"{size / 1024:.1f}"
        )
    Console().print(table)


if __name__ == "__main__":
    main()
