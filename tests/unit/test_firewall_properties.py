"""Property tests: the compiled firewall decides every flow as the spec's rules say it should.

The oracle below reads the ACL rules directly, following spec/acl.md step by
step (who is a source, what a destination covers, which families a destination
yields, ALLOW-then-DENY order) without touching the compiler's internals; the
property is that `decide(compile_location(...), flow)` agrees with it.
"""

from __future__ import annotations

import dataclasses
import itertools
from ipaddress import IPv4Address, IPv6Address, ip_interface, ip_network, summarize_address_range
from random import Random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from defguard.core.firewall import (
    Address,
    AddressRange,
    DestinationSpec,
    Directory,
    FirewallConfig,
    LocationCompiler,
    LocationSpec,
    RuleSpec,
    Verdict,
    address_strings,
    compile_location,
    decide,
)

V4_BASE = int(IPv4Address("10.0.0.0"))
V6_BASE = int(IPv6Address("fd00::"))
MAX_FLOWS = 400
POOL = 16  # addresses per family; small so that sources, destinations and flows collide
PORT_PROTOCOLS = {6, 17}
USER_IDS = [1, 2, 3, 4, 5, 6]
GROUP_IDS = [10, 11, 12, 13]
DEVICE_IDS = [100, 101, 102]

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def address(family: int, offset: int) -> Address:
    return IPv4Address(V4_BASE + offset) if family == 4 else IPv6Address(V6_BASE + offset)


families = st.sampled_from([4, 6])
addresses = st.builds(address, families, st.integers(0, POOL - 1))


@st.composite
def address_ranges(draw: st.DrawFn) -> AddressRange:
    family = draw(families)
    start = draw(st.integers(0, POOL + 4))
    end = draw(st.integers(start, start + 6))
    return address(family, start), address(family, end)


port_ranges = st.integers(0, 12).flatmap(
    lambda s: st.tuples(st.just(s), st.integers(s, s + 3))
) | st.just((65535, 65535))


@st.composite
def destination_specs(draw: st.DrawFn, destination_id: int | None) -> DestinationSpec:
    return DestinationSpec(
        addresses=tuple(draw(st.lists(address_ranges(), max_size=3))),
        ports=tuple(draw(st.lists(port_ranges, max_size=2))),
        protocols=tuple(draw(st.lists(st.sampled_from([1, 6, 17]), max_size=3))),
        any_address=draw(st.booleans()),
        any_port=draw(st.booleans()),
        any_protocol=draw(st.booleans()),
        destination_id=destination_id,
        destination_name=None if destination_id is None else f"d{destination_id}",
    )


def id_sets(ids: list[int]) -> st.SearchStrategy[frozenset[int]]:
    # an id the directory does not know (99) must be harmless
    return st.frozensets(st.sampled_from([*ids, 99]), max_size=3)


@st.composite
def rule_specs(draw: st.DrawFn, rule_id: int) -> RuleSpec:
    flag = st.sampled_from([False, False, True])
    manual = draw(st.none() | destination_specs(None))
    n_dest = draw(st.integers(0, 2))
    return RuleSpec(
        id=rule_id,
        name=f"r{rule_id}",
        allow_all_users=draw(flag),
        deny_all_users=draw(flag),
        allow_all_groups=draw(flag),
        deny_all_groups=draw(flag),
        allow_all_network_devices=draw(flag),
        deny_all_network_devices=draw(flag),
        allowed_users=draw(id_sets(USER_IDS)),
        denied_users=draw(id_sets(USER_IDS)),
        allowed_groups=draw(id_sets(GROUP_IDS)),
        denied_groups=draw(id_sets(GROUP_IDS)),
        allowed_network_devices=draw(id_sets(DEVICE_IDS)),
        denied_network_devices=draw(id_sets(DEVICE_IDS)),
        manual=manual,
        destinations=tuple(draw(destination_specs(50 + i)) for i in range(n_dest)),
    )


@st.composite
def rule_lists(draw: st.DrawFn) -> list[RuleSpec]:
    ids = draw(st.lists(st.integers(1, 30), unique=True, max_size=5))
    return [draw(rule_specs(i)) for i in ids]


@st.composite
def directories(draw: st.DrawFn) -> Directory:
    users = draw(st.lists(st.sampled_from(USER_IDS), unique=True, min_size=2, max_size=6))
    device_addresses = st.lists(addresses, min_size=1, max_size=3).map(tuple) | st.just(())
    return Directory(
        users={u: draw(st.booleans()) for u in users},
        group_members={
            g: draw(st.frozensets(st.sampled_from([*USER_IDS, 7]), max_size=4))
            for g in draw(st.lists(st.sampled_from(GROUP_IDS), unique=True, max_size=4))
        },
        user_addresses={u: draw(device_addresses) for u in users},
        network_device_addresses={
            d: draw(device_addresses)
            for d in draw(st.lists(st.sampled_from(DEVICE_IDS), unique=True, max_size=3))
        },
    )


@st.composite
def locations(draw: st.DrawFn) -> LocationSpec:
    subnets = draw(st.sets(st.sampled_from(["10.0.0.1/24", "fd00::1/64"])))
    return LocationSpec(
        id=1,
        name="L",
        acl_enabled=draw(st.sampled_from([True, True, True, False])),
        acl_default_allow=draw(st.booleans()),
        subnets=tuple(ip_interface(s) for s in sorted(subnets)),
    )


Flow = tuple[Address, Address, int | None, int]


def candidate_flows(rules: list[RuleSpec], directory: Directory) -> list[Flow]:
    """Flows at every boundary the rules and directory define, plus outsiders.

    Sources: every held address and one unheld address per family.
    Destinations: each range's ends and their neighbours, plus pool ends.
    Services: each port range's ends and neighbours under TCP, UDP, ICMP and
    an unsupported protocol, plus port-less flows.
    """
    specs = [
        spec
        for rule in rules
        for spec in ([rule.manual] if rule.manual is not None else []) + list(rule.destinations)
    ]
    held = {a for group in directory.user_addresses.values() for a in group}
    held |= {a for group in directory.network_device_addresses.values() for a in group}
    sources = sorted(held | {address(4, POOL + 1), address(6, POOL + 1)}, key=_order)
    destinations: dict[int, set[Address]] = {
        f: {address(f, 0), address(f, POOL + 12)} for f in (4, 6)
    }
    for spec in specs:
        for start, end in spec.addresses:
            for value in (int(start) - 1, int(start), int(end), int(end) + 1):
                destinations[start.version].add(type(start)(value))
    ports: set[int | None] = {None, 0, 65535}
    for spec in specs:
        for low, high in spec.ports:
            ports.update(p for p in (low - 1, low, high, high + 1) if 0 <= p <= 65535)
    services = [(p, proto) for p in ports for proto in (1, 6, 17, 47)]
    return [
        (src, dst, port, proto)
        for src in sources
        for dst in sorted(destinations[src.version], key=_order)
        for port, proto in sorted(services, key=lambda s: (s[0] is None, s[0] or 0, s[1]))
    ]


def _order(a: Address) -> tuple[int, int]:
    return a.version, int(a)


# ---------------------------------------------------------------- the oracle


def oracle_sources(rule: RuleSpec, directory: Directory) -> set[Address]:
    """Step 1 of the spec, as sets of ids."""
    active = {u for u, is_active in directory.users.items() if is_active}

    def users(all_users: bool, explicit: frozenset[int], all_groups: bool, groups: frozenset[int]):
        if all_users:
            return set(active)
        chosen = set(explicit) & active
        for g in directory.group_members if all_groups else groups:
            chosen |= set(directory.group_members.get(g, ())) & active
        return chosen

    source_users = users(
        rule.allow_all_users, rule.allowed_users, rule.allow_all_groups, rule.allowed_groups
    ) - users(rule.deny_all_users, rule.denied_users, rule.deny_all_groups, rule.denied_groups)
    known = set(directory.network_device_addresses)
    allowed = known if rule.allow_all_network_devices else rule.allowed_network_devices & known
    denied = known if rule.deny_all_network_devices else rule.denied_network_devices
    found: set[Address] = set()
    for u in source_users:
        found.update(directory.user_addresses.get(u, ()))
    for d in allowed - denied:
        found.update(directory.network_device_addresses[d])
    return found


def yields_family(spec: DestinationSpec, family: int, location: LocationSpec) -> bool:
    """Step 4: explicit addresses of the family, or any address and a subnet of the family."""
    if spec.any_address:
        return any(s.version == family for s in location.subnets)
    return any(start.version == family for start, _ in spec.addresses)


def covers_address(spec: DestinationSpec, dst: Address) -> bool:
    if spec.any_address:
        return True
    return any(s.version == dst.version and s <= dst <= e for s, e in spec.addresses)


def covers_service(spec: DestinationSpec, port: int | None, protocol: int) -> bool:
    protocols = () if spec.any_protocol else spec.protocols
    if protocols and protocol not in protocols:
        return False
    ports = () if spec.any_port else spec.ports
    if not ports:
        return True
    # a port list only ever matches TCP/UDP packets to one of the ports
    return protocol in PORT_PROTOCOLS and port is not None and any(s <= port <= e for s, e in ports)


def oracle(
    location: LocationSpec,
    rules: list[RuleSpec],
    sources: dict[int, set[Address]],
    flow: Flow,
) -> Verdict:
    """The verdict of spec/acl.md for one flow; `sources` maps rule id to `oracle_sources`."""
    src, dst, port, protocol = flow
    if not location.acl_enabled:
        return Verdict.ALLOW
    family = src.version
    generated = [
        (rule, spec)
        for rule in sorted(rules, key=lambda r: r.id)
        for spec in ([rule.manual] if rule.manual is not None else []) + list(rule.destinations)
        if yields_family(spec, family, location)
    ]
    for rule, spec in generated:
        if (
            src in sources[rule.id]
            and covers_address(spec, dst)
            and covers_service(spec, port, protocol)
        ):
            return Verdict.ALLOW
    for _rule, spec in generated:
        if covers_address(spec, dst):
            return Verdict.DENY
    return Verdict.ALLOW if location.acl_default_allow else Verdict.DENY


# ---------------------------------------------------------------- properties


def check_structure(location: LocationSpec, rules: list[RuleSpec], config: FirewallConfig) -> None:
    assert [r.id for r in config.rules] == list(range(1, len(config.rules) + 1))
    verdicts = [r.verdict for r in config.rules]
    assert verdicts == sorted(verdicts, key=lambda v: v is Verdict.DENY)
    for r in config.rules:
        if r.verdict is Verdict.ALLOW:
            assert r.sources, "an ALLOW without sources would allow everyone"
        else:
            assert (r.sources, r.ports, r.protocols) == ((), (), ())
        for ranges in (r.sources, r.destinations):
            assert all(a.version == b.version == r.ip_version and a <= b for a, b in ranges)
            ints = [(int(a), int(b)) for a, b in ranges]
            assert all(prev[1] + 1 < cur[0] for prev, cur in itertools.pairwise(ints))
        assert all(prev[1] + 1 < cur[0] for prev, cur in zip(r.ports, r.ports[1:], strict=False))
        assert list(r.protocols) == sorted(set(r.protocols))
        if not r.destinations:
            # "any destination" exists only for a family the location has
            assert any(s.version == r.ip_version for s in location.subnets)
    # a destination naming only one family never yields a rule of the other
    for rule in rules:
        for spec in ([rule.manual] if rule.manual else []) + list(rule.destinations):
            if not spec.any_address:
                named = {a.version for a, _ in spec.addresses}
                label = f"RULE {rule.id} - {rule.name}" + (
                    f", DESTINATION {spec.destination_id} - {spec.destination_name}"
                    if spec.destination_id is not None
                    else ""
                )
                made = {r.ip_version for r in config.rules if r.comment.rsplit(" ", 1)[0] == label}
                assert made == named


@PROPERTY
@given(
    location=locations(),
    rules=rule_lists(),
    directory=directories(),
    rnd=st.randoms(use_true_random=False),
)
def test_decide_agrees_with_the_spec_oracle(
    location: LocationSpec, rules: list[RuleSpec], directory: Directory, rnd: Random
) -> None:
    config = compile_location(location, rules, directory)
    if config is None:
        assert not location.acl_enabled
    else:
        check_structure(location, rules, config)
    sources = {rule.id: oracle_sources(rule, directory) for rule in rules}
    candidates = candidate_flows(rules, directory)
    if len(candidates) > MAX_FLOWS:
        candidates = rnd.sample(candidates, MAX_FLOWS)
    for flow in candidates:
        assert decide(config, *flow)[0] is oracle(location, rules, sources, flow), flow


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    location=locations(),
    before=rule_lists(),
    after=rule_lists(),
    directory=directories(),
    other_directory=directories(),
    keep=st.lists(st.booleans(), min_size=5, max_size=5),
    change_directory=st.booleans(),
)
def test_incremental_equals_fresh_compile(
    location: LocationSpec,
    before: list[RuleSpec],
    after: list[RuleSpec],
    directory: Directory,
    other_directory: Directory,
    keep: list[bool],
    change_directory: bool,
) -> None:
    compiler = LocationCompiler()
    compiler.compile(location, before, directory)
    # keep some rules (same objects), replace others, add new ones
    by_id = {r.id: r for r in after}
    mixed = [r if k else by_id.get(r.id, r) for r, k in zip(before, keep, strict=False)]
    mixed += [r for r in after if r.id not in {m.id for m in mixed}]
    second = other_directory if change_directory else directory
    assert compiler.compile(location, mixed, second) == compile_location(location, mixed, second)
    again = dataclasses.replace(location, acl_default_allow=not location.acl_default_allow)
    assert compiler.compile(again, mixed, second) == compile_location(again, mixed, second)


@settings(max_examples=300, deadline=None)
@given(family=families, start=st.integers(0, 2**32 - 1), length=st.integers(0, 2**20))
def test_rendered_subnets_cover_exactly_the_range(family: int, start: int, length: int) -> None:
    cls = IPv4Address if family == 4 else IPv6Address
    base = 0 if family == 4 else V6_BASE
    end = min(start + length, 2**32 - 1)
    lo, hi = cls(base + start), cls(base + end)
    rendered = [ip_network(s) for s in address_strings([(lo, hi)])]
    assert int(rendered[0].network_address) == int(lo)
    assert int(rendered[-1].broadcast_address) == int(hi)
    for prev, cur in itertools.pairwise(rendered):
        assert int(prev.broadcast_address) + 1 == int(cur.network_address)
        # two equal-size neighbours forming an aligned block would have been one subnet
        if prev.prefixlen == cur.prefixlen:
            assert prev.supernet() != cur.supernet()


@settings(max_examples=300, deadline=None)
@given(family=families, start=st.integers(0, 2**40), length=st.integers(0, 2**24))
def test_rendered_subnets_match_the_standard_library(family: int, start: int, length: int) -> None:
    cls, bits = (IPv4Address, 32) if family == 4 else (IPv6Address, 128)
    start %= 1 << bits
    end = min(start + length, (1 << bits) - 1)
    expected = [
        str(net.network_address) if net.prefixlen == bits else str(net)
        for net in summarize_address_range(cls(start), cls(end))
    ]
    assert address_strings([(cls(start), cls(end))]) == expected
