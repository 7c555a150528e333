"""Addressing at scale: N users each with a device in one location, then the location moved.

Measures, through the same service functions the REST API calls:

1. creating N password-less users (`users.service.create_users`),
2. adding one device for each, addressed in a /16 location (`devices.service.add_user_devices`),
3. changing the location's subnet so that all N devices are re-addressed
   (`locations.service.update_location`).

As a baseline in the same run it loads the same rows (users, devices,
addresses) into a second fresh database with PostgreSQL `COPY`, the fastest way
the database itself accepts them; the ratio shows what the service layer adds.

Usage: python bench/bench_addressing.py [--users 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import ipaddress
import os
import shutil
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql
from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from defguard.core.bootstrap import bootstrap
from defguard.core.context import RequestContext
from defguard.core.devices.models import DeviceLocation
from defguard.core.devices.service import NewUserDevice, add_user_devices
from defguard.core.locations.schemas import LocationWrite
from defguard.core.locations.service import create_location, update_location
from defguard.core.users.models import User
from defguard.core.users.service import NewUser, create_users
from defguard.db.embedded import ensure_server
from defguard.db.engine import Database
from defguard.db.migrate import upgrade

CTX = RequestContext(ip="127.0.0.1", user_agent="defguard-bench")


def location_body(address: str) -> LocationWrite:
    return LocationWrite(
        name="HQ",
        address=address,
        endpoint="vpn.example.com",
        port=51820,
        allowed_ips="10.0.0.0/8",
        dns=None,
        mtu=1420,
        fwmark=0,
        allow_all_groups=True,
        allowed_groups=[],
        keepalive_interval=25,
        peer_disconnect_threshold=300,
        acl_enabled=False,
        acl_default_allow=False,
        location_mfa_mode="disabled",
        service_location_mode="disabled",
    )


def fresh_database(admin_uri: str, name: str) -> str:
    with psycopg.connect(admin_uri, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_url(admin_uri).set(drivername="postgresql+psycopg", database=name)
    upgrade(url)
    return url.render_as_string(hide_password=False)


def fake_keys(n: int) -> list[str]:
    """Distinct well-formed 32-byte keys (the service checks format, not curve membership)."""
    return [base64.b64encode(os.urandom(32)).decode() for _ in range(n)]


async def service_run(url: str, n: int, keys: list[str]) -> dict[str, float]:
    db = Database(make_url(url), pool_size=2)
    try:
        await bootstrap(db, "Bench!Passw0rd1")
        async with db.session() as s:
            admin = (await s.execute(select(User).where(User.username == "admin"))).scalar_one()
        async with db.transaction() as s:
            location = await create_location(s, location_body("10.0.0.1/16"), actor=admin, ctx=CTX)

        t0 = time.perf_counter()
        async with db.transaction() as s:
            users = await create_users(
                s,
                [
                    NewUser(
                        username=f"user{i}",
                        first_name="U",
                        last_name=str(i),
                        email=f"u{i}@example.com",
                    )
                    for i in range(n)
                ],
                actor=admin,
                ctx=CTX,
            )
            user_ids = [u.id for u in users]
        t1 = time.perf_counter()
        async with db.transaction() as s:
            await add_user_devices(
                s,
                [
                    NewUserDevice(user_id=uid, name="laptop", wireguard_pubkey=k)
                    for uid, k in zip(user_ids, keys, strict=True)
                ],
                actor=admin,
                ctx=CTX,
            )
        t2 = time.perf_counter()
        async with db.transaction() as s:
            await update_location(
                s, location.id, location_body("10.1.0.1/16"), actor=admin, ctx=CTX
            )
        t3 = time.perf_counter()

        async with db.session() as s:
            rows = (
                (
                    await s.execute(
                        select(DeviceLocation.wireguard_ips).where(
                            DeviceLocation.wireguard_network_id == location.id
                        )
                    )
                )
                .scalars()
                .all()
            )
            new_net = ipaddress.ip_network("10.1.0.0/16")
            flat = [ip for ips in rows for ip in ips]
            # The admin has no device; every user device is addressed once, uniquely, in the new subnet.
            assert len(rows) == n, len(rows)
            assert len(set(flat)) == n and all(ip in new_net for ip in flat)
            assert (await s.execute(select(func.count()).select_from(User))).scalar_one() == n + 1
        return {"users": t1 - t0, "devices": t2 - t1, "readdress": t3 - t2}
    finally:
        await db.dispose()


def copy_baseline(url: str, n: int, keys: list[str]) -> float:
    """Load equivalent rows with COPY: the database's own floor for this much data."""
    pg = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    net = ipaddress.ip_network("10.0.0.0/16")
    hosts = net.hosts()
    next(hosts)  # the gateway's own address
    with psycopg.connect(pg) as conn:
        conn.execute(
            "INSERT INTO wireguard_network (id, name, address, port, pubkey, prvkey, endpoint, allowed_ips)"
            " VALUES (1, 'HQ', '{10.0.0.1/16}', 51820, 'pk', 'sk', 'vpn', '{}')"
        )
        t0 = time.perf_counter()
        with conn.cursor() as cur:
            with cur.copy(
                'COPY "user" (id, username, first_name, last_name, email) FROM STDIN'
            ) as cp:
                for i in range(n):
                    cp.write_row((i + 100, f"user{i}", "U", str(i), f"u{i}@example.com"))
            with cur.copy(
                "COPY device (id, name, wireguard_pubkey, user_id, created) FROM STDIN"
            ) as cp:
                for i in range(n):
                    cp.write_row((i + 100, "laptop", keys[i], i + 100, "2025-01-01"))
            with cur.copy(
                "COPY wireguard_network_device (device_id, wireguard_network_id, wireguard_ips) FROM STDIN"
            ) as cp:
                for i in range(n):
                    cp.write_row((i + 100, 1, [str(next(hosts))]))
        conn.commit()
        return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=20_000)
    args = parser.parse_args()
    n = args.users

    tmp = Path(tempfile.mkdtemp(prefix="defguard-bench-"))
    server = ensure_server(tmp)
    try:
        admin_uri = server.get_uri("postgres")
        keys = fake_keys(n)
        baseline = copy_baseline(fresh_database(admin_uri, "bench_copy"), n, keys)
        result = asyncio.run(service_run(fresh_database(admin_uri, "bench_service"), n, keys))
    finally:
        server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)

    create = result["users"] + result["devices"]
    table = Table(title=f"{n} users, one device each, one /16 location")
    for col in ("step", "seconds", "× COPY baseline", "target"):
        table.add_column(col)
    table.add_row("COPY baseline (users+devices+addresses)", f"{baseline:.2f}", "1.0", "")
    table.add_row("  create users", f"{result['users']:.2f}", "", "")
    table.add_row("  add devices (addressed)", f"{result['devices']:.2f}", "", "")
    table.add_row("users + devices", f"{create:.2f}", f"{create / baseline:.1f}", "< 6 s")
    table.add_row(
        "re-address all (subnet change)",
        f"{result['readdress']:.2f}",
        f"{result['readdress'] / baseline:.1f}",
        "< 5 s",
    )
    Console().print(table)


if __name__ == "__main__":
    main()
