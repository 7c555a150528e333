"""ACL compile from PostgreSQL: the issue's scenario, loaded and compiled the way Core does it.

One location with 20,000 devices of 10,000 users in 500 groups and 1,000 applied
rules (a third with a component Alias, a third with a Destination, the rest
manual; sources mixing users, groups and all-users) in a fresh embedded
PostgreSQL. Measures, median of several runs:

- full: `acl.loader.load_location_inputs` + `firewall.compile_location`;
- after one rule changes: the rule is updated in the database, then the inputs
  are reloaded and recompiled with a warm `LocationCompiler` (only that rule is
  recompiled; the reload is the cost that remains).

The loading time (SQL only) is shown beside the totals so the shares of the
database and of the compiler are visible; bench/bench_firewall.py compares the
compiler itself against the 1.6.6 semantics on the same data.

Usage: python bench/bench_acl_database.py [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql
from rich.console import Console
from rich.table import Table
from sqlalchemy import text
from sqlalchemy.engine import make_url

from defguard.core.acl.loader import load_location_inputs
from defguard.core.firewall import LocationCompiler, compile_location
from defguard.db.embedded import ensure_server
from defguard.db.engine import Database
from defguard.db.migrate import upgrade

FILL = [
    """INSERT INTO wireguard_network (id, name, address, port, pubkey, prvkey, endpoint, allowed_ips,
       acl_enabled) VALUES (1, 'big', '{10.0.0.1/16}', 51820, 'k', 'k', 'e', '{}', true)""",
    """INSERT INTO "user" (id, username, first_name, last_name, email)
       SELECT i, 'u' || i, 'U', 'T', 'u' || i || '@x' FROM generate_series(1, 10000) i""",
    """INSERT INTO "group" (id, name) SELECT i, 'g' || i FROM generate_series(2, 501) i""",
    """INSERT INTO group_user (group_id, user_id) SELECT 2 + u.id % 500, u.id FROM "user" u""",
    """INSERT INTO device (id, name, wireguard_pubkey, user_id, created)
       SELECT (u.id - 1) * 2 + i, 'd' || i, 'key' || u.id || '-' || i, u.id, now()
       FROM "user" u, generate_series(1, 2) i""",
    """INSERT INTO wireguard_network_device (device_id, wireguard_network_id, wireguard_ips)
       SELECT d.id, 1, ARRAY[('10.0.0.1'::inet + d.id)::inet] FROM device d""",
    """INSERT INTO aclalias (id, name, addresses, ports, protocols, kind, state, modified_by,
       any_address, any_port, any_protocol)
       SELECT i, 'a' || i, ARRAY[('172.16.0.0'::inet + i * 4)::inet], '{"[443,444)"}', '{6}',
              CASE WHEN i % 2 = 0 THEN 'component' ELSE 'destination' END::aclalias_kind,
              'applied', 'admin', false, false, false
       FROM generate_series(1, 100) i""",
    """INSERT INTO aclrule (id, name, allow_all_users, deny_all_users, all_locations, addresses,
       ports, protocols, state, modified_by, use_manual_destination_settings,
       any_address, any_port, any_protocol)
       SELECT i, 'r' || i, i % 7 = 0, false, true, ARRAY[('192.168.0.0'::inet + i)::inet],
              '{"[80,81)","[8000,8081)"}', '{6,17}', 'applied', 'admin', true, false, false, false
       FROM generate_series(1, 1000) i""",
    # Sources: 1-3 allowed groups per rule, one denied user.
    """INSERT INTO aclrulegroup (rule_id, group_id, allow)
       SELECT r.id, 2 + (r.id * k) % 500, true FROM aclrule r, generate_series(1, 3) k
       WHERE r.id % 7 <> 0 ON CONFLICT DO NOTHING""",
    """INSERT INTO aclruleuser (rule_id, user_id, allow) SELECT r.id, r.id, false FROM aclrule r""",
    # A third of the rules link a component Alias, a third a Destination.
    """INSERT INTO aclrulealias (rule_id, alias_id)
       SELECT r.id, CASE WHEN r.id % 3 = 0 THEN 2 + (r.id % 50) * 2 ELSE 1 + (r.id % 50) * 2 END
       FROM aclrule r WHERE r.id % 3 <> 2""",
]


async def measure(url, runs: int) -> dict[str, float]:
    db = Database(url, pool_size=2)
    try:
        load, full, reload_times, incremental = [], [], [], []
        for _ in range(runs):
            async with db.session() as s:
                t0 = time.perf_counter()
                inputs = await load_location_inputs(s, 1)
                t1 = time.perf_counter()
                config = compile_location(*inputs)
                t2 = time.perf_counter()
            assert config is not None and len(config.rules) > 1000
            load.append(t1 - t0)
            full.append(t2 - t0)
        compiler = LocationCompiler()
        async with db.session() as s:
            compiler.compile(*(await load_location_inputs(s, 1)))
        for i in range(runs):
            async with db.session() as s:
                await s.execute(
                    text("UPDATE aclrule SET ports = :p WHERE id = 500"),
                    {"p": [f"[{1000 + i},{1001 + i})"]},
                )
                await s.commit()
            async with db.session() as s:
                t0 = time.perf_counter()
                inputs = await load_location_inputs(s, 1)
                t1 = time.perf_counter()
                compiler.compile(*inputs)
                t2 = time.perf_counter()
            assert compiler.stats.rules_compiled == 1, compiler.stats
            reload_times.append(t2 - t0)
            incremental.append(t2 - t1)
        med = statistics.median
        return {
            "load": med(load),
            "full": med(full),
            "reload_recompile": med(reload_times),
            "recompile": med(incremental),
        }
    finally:
        await db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="defguard-bench-acl-"))
    server = ensure_server(tmp)
    try:
        admin = server.get_uri("postgres")
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(sql.SQL("CREATE DATABASE bench_acl"))
        url = make_url(admin).set(drivername="postgresql+psycopg", database="bench_acl")
        upgrade(url)
        with psycopg.connect(
            url.set(drivername="postgresql").render_as_string(hide_password=False)
        ) as c:
            for statement in FILL:
                c.execute(statement)
        result = asyncio.run(measure(url, args.runs))
    finally:
        server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    table = Table(
        title="ACL from PostgreSQL: 10,000 users, 20,000 devices, 500 groups, 1,000 rules"
    )
    for col in ("measurement", "median", "target"):
        table.add_column(col)
    table.add_row("load inputs (SQL only)", f"{result['load'] * 1000:.0f} ms", "")
    table.add_row("full: load + compile", f"{result['full'] * 1000:.0f} ms", "< 1 s")
    table.add_row(
        "one rule changed: recompile (warm compiler)",
        f"{result['recompile'] * 1000:.1f} ms",
        "< 100 ms",
    )
    table.add_row(
        "one rule changed: reload + recompile", f"{result['reload_recompile'] * 1000:.0f} ms", ""
    )
    Console().print(table)


if __name__ == "__main__":
    main()
