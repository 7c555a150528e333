"""The 2.0 upgrade keeps every firewall decision: 1.x rows compiled with the 1.x meaning,
then migrated by the real Alembic revisions, loaded from PostgreSQL and compiled by
the 2.0 compiler, decide every sampled flow the same way, location by location.

Hypothesis generates the legacy databases: users (some inactive), groups, user and
network devices, component and destination aliases with addresses, ranges, ports and
protocols, and rules in every state with every source and destination shape. Known,
documented differences are not generated: protocols outside TCP/UDP/ICMP (2.0 refuses
them), ranges mixing address families, and user-type devices named as rule devices.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import timedelta
from ipaddress import IPv4Interface, IPv6Interface, ip_address, ip_network

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql
from sqlalchemy.engine import make_url

from defguard.core.acl.legacy import (
    AliasKind,
    DeviceType,
    LegacyAlias,
    LegacyDevice,
    LegacyDirectory,
    LegacyLocation,
    LegacyRule,
    LegacyUser,
    RuleState,
    compile_legacy,
    decide,
)
from defguard.core.acl.loader import load_location_inputs
from defguard.core.firewall import compile_location
from defguard.db.base import utcnow
from defguard.db.engine import Database
from defguard.db.migrate import upgrade

LOCATIONS = {
    1: ("v4", (IPv4Interface("10.1.0.1/16"),)),
    2: ("dual", (IPv4Interface("10.2.0.1/16"), IPv6Interface("fd00:2::1/64"))),
}
V4_TARGETS = ["192.168.1.0/24", "192.168.1.5", "10.9.0.0/16", "10.1.0.7"]
V6_TARGETS = ["fd00:9::/64", "fd00:9::5", "fd00:2::7"]
V4_RANGES = [("192.168.2.1", "192.168.2.9"), ("10.9.1.1", "10.9.1.200")]
V6_RANGES = [("fd00:8::1", "fd00:8::ff")]
PORTS = [(22, 22), (53, 53), (80, 80), (443, 443), (8000, 8080)]
FLOW_PORTS = [None, 22, 53, 80, 443, 8000, 8080, 9000]
_db_counter = itertools.count()

addresses = st.lists(st.sampled_from(V4_TARGETS + V6_TARGETS), max_size=3, unique=True)
ranges = st.lists(st.sampled_from(V4_RANGES + V6_RANGES), max_size=2, unique=True)
ports = st.lists(st.sampled_from(PORTS), max_size=2, unique=True)
protocols = st.lists(st.sampled_from([1, 6, 17]), max_size=2, unique=True)


@st.composite
def worlds(draw):
    n_users = draw(st.integers(2, 5))
    users = [
        LegacyUser(id=100 + i, is_active=(i == 0) or draw(st.booleans())) for i in range(n_users)
    ]
    uids = [u.id for u in users]
    groups = {
        1: frozenset({uids[0]} | set(draw(st.lists(st.sampled_from(uids), max_size=2)))),  # admin
        2: frozenset(draw(st.lists(st.sampled_from(uids), max_size=3))),
        3: frozenset(draw(st.lists(st.sampled_from(uids), max_size=3))),
    }
    devices = []
    next_host = {1: itertools.count(2), 2: itertools.count(2)}
    device_id = itertools.count(500)

    def ips_for(loc: int) -> tuple:
        host = next(next_host[loc])
        if loc == 1:
            return (ip_address(f"10.1.0.{host}"),)
        return (ip_address(f"10.2.0.{host}"), ip_address(f"fd00:2::{host:x}"))

    for uid in uids:
        for _ in range(draw(st.integers(0, 2))):
            locs = draw(st.sets(st.sampled_from([1, 2]), min_size=1))
            devices.append(
                LegacyDevice(
                    id=next(device_id),
                    user_id=uid,
                    wireguard_ips={loc: ips_for(loc) for loc in locs},
                )
            )
    for _ in range(draw(st.integers(0, 2))):
        loc = draw(st.sampled_from([1, 2]))
        devices.append(
            LegacyDevice(
                id=next(device_id),
                user_id=uids[0],
                device_type=DeviceType.NETWORK,
                configured=draw(st.booleans()),
                wireguard_ips={loc: ips_for(loc)},
            )
        )
    network_ids = [d.id for d in devices if d.device_type is DeviceType.NETWORK]

    aliases = []
    for i in range(draw(st.integers(0, 4))):
        aliases.append(
            LegacyAlias(
                id=300 + i,
                name=f"alias{i}",
                kind=draw(st.sampled_from([AliasKind("destination"), AliasKind("component")])),
                destination=tuple(
                    ip_network(a, strict=False) if "/" in a else ip_address(a)
                    for a in draw(addresses)
                ),
                ranges=tuple((ip_address(a), ip_address(b)) for a, b in draw(ranges)),
                ports=tuple(draw(ports)),
                protocols=tuple(draw(protocols)),
            )
        )
    now = utcnow()
    rules = []
    for i in range(draw(st.integers(1, 5))):
        all_networks = draw(st.booleans())
        # The backfill's hardest cases are rules with no manual destination at all
        # (driven by aliases, or "any"); make them common rather than rare.
        manual = draw(st.sampled_from(["manual", "none", "none"]))

        def maybe(strategy, manual=manual):
            return draw(strategy) if manual == "manual" else []

        rules.append(
            LegacyRule(
                id=200 + i,
                name=f"rule{i}",
                allow_all_users=draw(st.booleans()),
                deny_all_users=draw(st.booleans()) and draw(st.booleans()),
                all_networks=all_networks,
                networks=frozenset()
                if all_networks
                else frozenset(draw(st.sets(st.sampled_from([1, 2])))),
                destination=tuple(
                    ip_network(a, strict=False) if "/" in a else ip_address(a)
                    for a in maybe(addresses)
                ),
                ranges=tuple((ip_address(a), ip_address(b)) for a, b in maybe(ranges)),
                ports=tuple(maybe(ports)),
                protocols=tuple(maybe(protocols)),
                expires=draw(
                    st.sampled_from([None, now - timedelta(days=1), now + timedelta(days=1)])
                ),
                enabled=draw(st.booleans()) or draw(st.booleans()),
                state=draw(st.sampled_from([RuleState("applied")] * 4 + [RuleState("new")])),
                allow_all_network_devices=draw(st.booleans()),
                deny_all_network_devices=draw(st.booleans()) and draw(st.booleans()),
                allowed_users=frozenset(draw(st.sets(st.sampled_from(uids), max_size=2))),
                denied_users=frozenset(draw(st.sets(st.sampled_from(uids), max_size=1))),
                allowed_groups=frozenset(draw(st.sets(st.sampled_from([1, 2, 3]), max_size=2))),
                denied_groups=frozenset(draw(st.sets(st.sampled_from([2, 3]), max_size=1))),
                allowed_devices=frozenset(draw(st.sets(st.sampled_from(network_ids), max_size=2)))
                if network_ids
                else frozenset(),
                denied_devices=frozenset(draw(st.sets(st.sampled_from(network_ids), max_size=1)))
                if network_ids
                else frozenset(),
                aliases=tuple(
                    draw(st.lists(st.sampled_from(aliases), max_size=2, unique_by=lambda a: a.id))
                )
                if aliases
                else (),
            )
        )
    default_allow = {1: draw(st.booleans()), 2: draw(st.booleans())}
    return users, groups, devices, aliases, rules, default_allow, now


def _port_ranges(values) -> list[str]:
    return [f"[{a},{b + 1})" for a, b in values]


def _fill_legacy(conn: psycopg.Connection, world) -> None:
    users, groups, devices, aliases, rules, default_allow, _ = world
    for loc_id, (_, subnets) in LOCATIONS.items():
        conn.execute(
            "INSERT INTO wireguard_network (id, name, address, port, pubkey, prvkey, endpoint, allowed_ips,"
            " acl_enabled, acl_default_allow) VALUES (%s, %s, %s, 51820, %s, 'sk', 'vpn', '{}', true, %s)",
            (
                loc_id,
                f"loc{loc_id}",
                [str(s) for s in subnets],
                f"pk{loc_id}",
                default_allow[loc_id],
            ),
        )
    for u in users:
        conn.execute(
            'INSERT INTO "user" (id, username, last_name, first_name, email, is_active) VALUES (%s, %s, %s, %s, %s, %s)',
            (u.id, f"u{u.id}", "L", "F", f"u{u.id}@x", u.is_active),
        )
    conn.execute("INSERT INTO \"group\" (id, name) VALUES (2, 'g2'), (3, 'g3')")
    for gid, members in groups.items():
        for uid in members:
            conn.execute("INSERT INTO group_user (group_id, user_id) VALUES (%s, %s)", (gid, uid))
    for d in devices:
        conn.execute(
            "INSERT INTO device (id, name, wireguard_pubkey, user_id, created, device_type, configured)"
            " VALUES (%s, %s, %s, %s, now(), %s, %s)",
            (d.id, f"d{d.id}", f"key{d.id}", d.user_id, str(d.device_type), d.configured),
        )
        for loc, ips in d.wireguard_ips.items():
            conn.execute(
                "INSERT INTO wireguard_network_device (device_id, wireguard_network_id, wireguard_ips)"
                " VALUES (%s, %s, %s::inet[])",
                (d.id, loc, [str(ip) for ip in ips]),
            )
    for a in aliases:
        conn.execute(
            "INSERT INTO aclalias (id, name, destination, ports, protocols, kind)"
            " VALUES (%s, %s, %s::inet[], %s::int4range[], %s, %s)",
            (
                a.id,
                a.name,
                [str(x) for x in a.destination],
                _port_ranges(a.ports),
                list(a.protocols),
                str(a.kind),
            ),
        )
        for start, end in a.ranges:
            conn.execute(
                'INSERT INTO aclaliasdestinationrange (alias_id, "start", "end") VALUES (%s, %s, %s)',
                (a.id, str(start), str(end)),
            )
    for r in rules:
        conn.execute(
            "INSERT INTO aclrule (id, name, allow_all_users, deny_all_users, all_networks, destination, ports,"
            " protocols, expires, enabled, state, allow_all_network_devices, deny_all_network_devices)"
            " VALUES (%s, %s, %s, %s, %s, %s::inet[], %s::int4range[], %s, %s, %s, %s, %s, %s)",
            (
                r.id,
                r.name,
                r.allow_all_users,
                r.deny_all_users,
                r.all_networks,
                [str(x) for x in r.destination],
                _port_ranges(r.ports),
                list(r.protocols),
                r.expires,
                r.enabled,
                str(r.state),
                r.allow_all_network_devices,
                r.deny_all_network_devices,
            ),
        )
        for loc in r.networks:
            conn.execute(
                "INSERT INTO aclrulenetwork (rule_id, network_id) VALUES (%s, %s)", (r.id, loc)
            )
        for table, column, allowed, denied in (
            ("aclruleuser", "user_id", r.allowed_users, r.denied_users),
            ("aclrulegroup", "group_id", r.allowed_groups, r.denied_groups),
            ("aclruledevice", "device_id", r.allowed_devices, r.denied_devices),
        ):
            for allow, ids in ((True, allowed), (False, denied)):
                for i in ids:
                    conn.execute(
                        sql.SQL("INSERT INTO {} (rule_id, {}, allow) VALUES (%s, %s, %s)").format(
                            sql.Identifier(table), sql.Identifier(column)
                        ),
                        (r.id, i, allow),
                    )
        for start, end in r.ranges:
            conn.execute(
                'INSERT INTO aclruledestinationrange (rule_id, "start", "end") VALUES (%s, %s, %s)',
                (r.id, str(start), str(end)),
            )
        for a in r.aliases:
            conn.execute(
                "INSERT INTO aclrulealias (rule_id, alias_id) VALUES (%s, %s)", (r.id, a.id)
            )


def _flows(world, loc_id: int):
    _, _, devices, _, _, _, _ = world
    sources = [ip for d in devices for ip in d.wireguard_ips.get(loc_id, ())]
    targets = [ip_address(a.split("/")[0]) for a in V4_TARGETS + V6_TARGETS]
    targets += [ip_address(a) for pair in V4_RANGES + V6_RANGES for a in pair]
    targets += [
        ip_address("192.168.1.77"),
        ip_address("8.8.8.8"),
        ip_address("fd00:9::77"),
        ip_address("2001:db8::1"),
    ]
    for src in sources:
        for dst in targets:
            if dst.version != src.version:
                continue
            for proto in (1, 6, 17):
                for port in FLOW_PORTS if proto != 1 else [None]:
                    yield src, dst, port, proto


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(world=worlds())
def test_upgrade_preserves_every_decision(pg_admin_uri, world):
    users, groups, devices, _, rules, default_allow, now = world
    name = f"eq_{next(_db_counter)}"
    with psycopg.connect(pg_admin_uri, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_url(pg_admin_uri).set(drivername="postgresql+psycopg", database=name)
    try:
        upgrade(url, "1.x")
        with psycopg.connect(
            url.set(drivername="postgresql").render_as_string(hide_password=False)
        ) as conn:
            _fill_legacy(conn, world)
        directory = LegacyDirectory(
            users=tuple(users), group_members=groups, devices=tuple(devices)
        )
        before = {
            loc: compile_legacy(
                LegacyLocation(
                    id=loc,
                    name=f"loc{loc}",
                    address=subnets,
                    acl_enabled=True,
                    acl_default_allow=default_allow[loc],
                ),
                rules,
                directory,
                now=now,
            )
            for loc, (_, subnets) in LOCATIONS.items()
        }

        upgrade(url)

        async def compile_all():
            db = Database(url, pool_size=1)
            try:
                out = {}
                async with db.session() as s:
                    for loc in LOCATIONS:
                        out[loc] = compile_location(*(await load_location_inputs(s, loc)))
                return out
            finally:
                await db.dispose()

        after = asyncio.run(compile_all())
        for loc in LOCATIONS:
            assert (before[loc] is None) == (after[loc] is None)
            for src, dst, port, proto in _flows(world, loc):
                old = decide(before[loc], src, dst, port, proto)
                new = decide(after[loc], src, dst, port, proto)
                assert old == new, (loc, str(src), str(dst), port, proto, old, new)
    finally:
        with psycopg.connect(pg_admin_uri, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
