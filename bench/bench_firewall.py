"""Firewall compilation at scale: one location, 20,000 devices, 1,000 ACL rules.

Builds a seeded scenario in the 1.x shape (10,000 users with 20,000 devices,
500 groups, 50 network devices, 100 component aliases, 100 destination
aliases, 1,000 rules mixing all-users, all-users-but, group, user and
network-device sources with manual, alias and destination-alias
destinations), converts it with the pure model of the 2.0 upgrade, and
measures:

1. a full compile from scratch (`compile_location`),
2. an incremental recompile after one rule changes (`LocationCompiler`), with
   the other specs passed as the same objects and as freshly loaded equal ones,
3. an incremental recompile after one user gets a new device,
4. rendering the preview JSON.

As a baseline in the same run it compiles the same data with the 1.6.6
semantics (`defguard.core.acl.legacy.compile_legacy`, a direct per-rule
implementation without memoisation), checks that both firewalls are
identical apart from rule ids and comments, and reports ratios to it.

Usage: python bench/bench_firewall.py [--users 10000] [--devices 20000] [--groups 500]
       [--rules 1000] [--runs 5] [--baseline-runs 1] [--dual-stack] [--seed 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Callable
from datetime import datetime
from ipaddress import IPv4Address, IPv6Address, ip_interface, ip_network
from random import Random
from typing import TypeVar

from rich.console import Console
from rich.table import Table

from defguard.core.acl.legacy import (
    AliasKind,
    DeviceType,
    Inet,
    LegacyAlias,
    LegacyDevice,
    LegacyDirectory,
    LegacyLocation,
    LegacyRule,
    LegacyUser,
    compile_legacy,
    semantic_rules,
    upgrade,
)
from defguard.core.firewall import (
    Address,
    FirewallConfig,
    LocationCompiler,
    RuleSpec,
    compile_location,
    config_to_json,
)

NOW = datetime(2026, 1, 1)
T = TypeVar("T")


# ---------------------------------------------------------------- scenario


@dataclasses.dataclass
class Scenario:
    location: LegacyLocation
    rules: list[LegacyRule]
    directory: LegacyDirectory


def _inet(rnd: Random) -> Inet:
    prefix = rnd.choice([32, 32, 32, 28, 24])
    host = IPv4Address(int(IPv4Address("172.16.0.0")) + rnd.randrange(1 << 16))
    return ip_network(f"{host}/{prefix}", strict=False)


def _range(rnd: Random) -> tuple[Address, Address]:
    start = int(IPv4Address("172.20.0.0")) + rnd.randrange(1 << 16)
    return IPv4Address(start), IPv4Address(start + rnd.randrange(1, 300))


def _ports(rnd: Random, most: int) -> tuple[tuple[int, int], ...]:
    ports = []
    for _ in range(rnd.randint(0, most)):
        start = rnd.choice([22, 53, 80, 443, 5432, 8000, rnd.randrange(1024, 60000)])
        ports.append((start, start + rnd.choice([0, 0, 0, 10, 80])))
    return tuple(ports)


def _protocols(rnd: Random, most: int) -> tuple[int, ...]:
    return tuple(rnd.sample([6, 17, 1], rnd.randint(0, most)))


def build(
    users: int, devices: int, groups: int, rules: int, dual_stack: bool, seed: int
) -> Scenario:
    rnd = Random(seed)
    address = (ip_interface("10.0.0.1/16"),)
    if dual_stack:
        address += (ip_interface("fd00::1/64"),)
    location = LegacyLocation(1, "HQ", address, acl_enabled=True, acl_default_allow=False)

    user_rows = tuple(LegacyUser(u, is_active=rnd.random() > 0.02) for u in range(1, users + 1))
    owners = list(range(1, users + 1)) + [rnd.randint(1, users) for _ in range(devices - users)]
    rnd.shuffle(owners)  # devices are addressed in creation order, users enrol at random times
    v4, v6 = int(IPv4Address("10.0.0.2")), int(IPv6Address("fd00::2"))

    def ips(k: int) -> dict[int, tuple[Address, ...]]:
        values: tuple[Address, ...] = (IPv4Address(v4 + k),)
        if dual_stack:
            values += (IPv6Address(v6 + k),)
        return {1: values}

    device_rows = [
        LegacyDevice(k + 1, owner, DeviceType.USER, True, ips(k)) for k, owner in enumerate(owners)
    ]
    network_ids = []
    for n in range(50):
        network_ids.append(devices + n + 1)
        device_rows.append(
            LegacyDevice(devices + n + 1, 1, DeviceType.NETWORK, n % 10 != 0, ips(60000 + n))
        )
    members: dict[int, set[int]] = {g: set() for g in range(1, groups + 1)}
    for u in range(1, users + 1):
        for g in rnd.sample(range(1, groups + 1), rnd.randint(1, 3)):
            members[g].add(u)
    directory = LegacyDirectory(
        user_rows, {g: frozenset(m) for g, m in members.items()}, tuple(device_rows)
    )

    components = [
        LegacyAlias(
            10_000 + i,
            f"component-{i}",
            AliasKind.COMPONENT,
            destination=tuple(_inet(rnd) for _ in range(rnd.randint(0, 2))),
            ports=_ports(rnd, 2),
            protocols=_protocols(rnd, 1),
        )
        for i in range(100)
    ]
    destinations = [
        LegacyAlias(
            20_000 + i,
            f"destination-{i}",
            AliasKind.DESTINATION,
            destination=tuple(_inet(rnd) for _ in range(rnd.randint(1, 4))),
            ranges=tuple(_range(rnd) for _ in range(rnd.randint(0, 1))),
            ports=_ports(rnd, 2),
            protocols=_protocols(rnd, 2),
        )
        for i in range(100)
    ]

    def ids(pool: range | list[int], low: int, high: int) -> frozenset[int]:
        return frozenset(rnd.sample(pool, rnd.randint(low, high)))

    user_ids, group_ids = range(1, users + 1), range(1, groups + 1)
    rule_rows = []
    for r in range(1, rules + 1):
        src: dict[str, object] = {}
        kind = rnd.random()
        if kind < 0.15:
            src = {"allow_all_users": True}
        elif kind < 0.30:
            src = {"allow_all_users": True, "denied_users": ids(user_ids, 1, 5)}
        elif kind < 0.35:
            src = {"allow_all_users": True, "denied_groups": ids(group_ids, 1, 3)}
        elif kind < 0.70:
            src = {"allowed_groups": ids(group_ids, 1, 5)}
            if rnd.random() < 0.3:
                src["denied_users"] = ids(user_ids, 1, 3)
        elif kind < 0.90:
            src = {"allowed_users": ids(user_ids, 1, 30)}
        else:
            if rnd.random() < 0.5:
                src = {"allow_all_network_devices": True}
            else:
                src = {"allowed_devices": ids(network_ids, 1, 5)}
            src["allowed_users"] = ids(user_ids, 0, 5)
        dst: dict[str, object] = {}
        shape = rnd.random()
        if shape < 0.75:  # manual, or manual with destination aliases
            if shape >= 0.10:
                dst["destination"] = tuple(_inet(rnd) for _ in range(rnd.randint(1, 5)))
                dst["ranges"] = tuple(_range(rnd) for _ in range(rnd.randint(0, 1)))
                dst["ports"] = _ports(rnd, 3)
                dst["protocols"] = _protocols(rnd, 2)
            aliases = rnd.sample(components, rnd.randint(0 if shape >= 0.10 else 1, 2))
            if shape >= 0.60:
                aliases += rnd.sample(destinations, rnd.randint(1, 3))
        else:  # driven only by destination aliases
            aliases = rnd.sample(destinations, rnd.randint(1, 3))
        rule_rows.append(
            LegacyRule(r, f"rule-{r}", all_networks=True, aliases=tuple(aliases), **src, **dst)  # type: ignore[arg-type]
        )
    return Scenario(location, rule_rows, directory)


# ---------------------------------------------------------------- timing


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def median_of(runs: int, fn: Callable[[], object]) -> float:
    return statistics.median(timed(fn)[0] for _ in range(runs))


def changed_rule(rule: RuleSpec, k: int) -> RuleSpec:
    """Alternately change a rule's sources and its manual destination's ports."""
    if k % 2 == 0 or rule.manual is None:
        return dataclasses.replace(rule, allowed_groups=rule.allowed_groups ^ {k % 500 + 1})
    return dataclasses.replace(
        rule,
        manual=dataclasses.replace(
            rule.manual, ports=(*rule.manual.ports, (1000 + k, 1000 + k)), any_port=False
        ),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--devices", type=int, default=20_000)
    parser.add_argument("--groups", type=int, default=500)
    parser.add_argument("--rules", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--baseline-runs", type=int, default=1)
    parser.add_argument("--dual-stack", action="store_true")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    console = Console()

    scenario = build(args.users, args.devices, args.groups, args.rules, args.dual_stack, args.seed)
    location, rules, directory = upgrade(
        scenario.location, scenario.rules, scenario.directory, now=NOW
    )

    baseline = median_of(
        args.baseline_runs,
        lambda: compile_legacy(scenario.location, scenario.rules, scenario.directory, now=NOW),
    )
    legacy_config = compile_legacy(scenario.location, scenario.rules, scenario.directory, now=NOW)

    full = median_of(args.runs, lambda: compile_location(location, rules, directory))
    config = compile_location(location, rules, directory)
    assert config is not None
    identical = semantic_rules(config) == semantic_rules(legacy_config)

    compiler = LocationCompiler()
    cold, _ = timed(lambda: compiler.compile(location, rules, directory))
    current = list(rules)
    rule_times, recompiled = [], []
    for k in range(args.runs):
        i = (k * 7919) % len(current)
        current[i] = changed_rule(current[i], k)
        seconds, incremental = timed(lambda: compiler.compile(location, current, directory))
        rule_times.append(seconds)
        recompiled.append(compiler.stats.rules_compiled)
        assert incremental == compile_location(location, current, directory)

    # the loader builds fresh, equal specs and directory on every reload
    reload_times = []
    for k in range(args.runs):
        _, reloaded, reloaded_directory = upgrade(
            scenario.location, scenario.rules, scenario.directory, now=NOW
        )
        reloaded[k] = changed_rule(reloaded[k], k)
        reload_times.append(
            timed(lambda r=reloaded, d=reloaded_directory: compiler.compile(location, r, d))[0]
        )

    device_times = []
    moved = directory
    for k in range(args.runs):
        user = 1 + (k * 104729) % args.users
        extra = IPv4Address(int(IPv4Address("10.0.250.0")) + k)
        moved = dataclasses.replace(
            moved,
            user_addresses={**moved.user_addresses, user: (*moved.user_addresses[user], extra)},
        )
        device_times.append(timed(lambda m=moved: compiler.compile(location, current, m))[0])

    final = compiler.compile(location, current, moved)
    json_time = median_of(args.runs, lambda: config_to_json(final))

    rows = [
        ("1.6.6 semantics, direct (baseline)", baseline, args.baseline_runs),
        ("full compile (compile_location)", full, args.runs),
        ("LocationCompiler, cold", cold, 1),
        ("recompile after one rule changed", statistics.median(rule_times), args.runs),
        ("same, all specs freshly reloaded", statistics.median(reload_times), args.runs),
        ("recompile after one user's new device", statistics.median(device_times), args.runs),
        ("preview JSON of the config", json_time, args.runs),
    ]
    table = Table(
        title=(
            f"Firewall compile: {args.users:,} users, {args.devices:,} devices, "
            f"{args.groups} groups, {len(rules):,} rules"
            f"{', dual stack' if args.dual_stack else ''}"
        )
    )
    table.add_column("measurement")
    table.add_column("median", justify="right")
    table.add_column("runs", justify="right")
    table.add_column("baseline / this", justify="right")
    for name, seconds, runs in rows:
        ratio = "1.0x" if seconds is baseline else f"{baseline / seconds:,.0f}x"
        table.add_row(name, f"{seconds * 1000:,.1f} ms", str(runs), ratio)
    console.print(table)
    assert isinstance(config, FirewallConfig)
    console.print(
        f"firewall rules: {len(config.rules):,} "
        f"(allow {sum(r.verdict.value == 'allow' for r in config.rules):,}); "
        f"rules re-done per one-rule change: {max(recompiled)}; "
        f"same firewall as the 1.6.6 semantics (ids and comments aside): "
        f"{'yes' if identical else 'NO'}"
    )


if __name__ == "__main__":
    main()
