"""Hand-worked cases for the ACL firewall compiler (spec/acl.md, "Compilation, for one location")."""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_interface, ip_network

import pytest

from defguard.core.firewall import (
    Address,
    AddressRange,
    DestinationSpec,
    Directory,
    FirewallCompileError,
    FirewallConfig,
    FirewallRule,
    LocationCompiler,
    LocationSpec,
    RuleSpec,
    Verdict,
    address_strings,
    compile_location,
    config_to_json,
    decide,
    merge_address_ranges,
    merge_port_ranges,
)
from tests.acl_example import SPEC_EXAMPLE_FIREWALL

TCP, UDP, ICMP = 6, 17, 1


def ip(text: str) -> Address:
    return ip_address(text)


def r(text: str) -> AddressRange:
    """`"10.0.0.1"`, `"10.0.0.0/24"` or `"10.0.0.5-10.0.0.9"` as one inclusive range."""
    if "-" in text:
        start, end = text.split("-")
        return ip(start), ip(end)
    if "/" in text:
        net = ip_network(text)
        return net.network_address, net.broadcast_address
    return ip(text), ip(text)


def addrs(*texts: str) -> tuple[AddressRange, ...]:
    return tuple(r(t) for t in texts)


def dest(
    *addresses: str,
    ports: tuple[tuple[int, int], ...] = (),
    protocols: tuple[int, ...] = (),
    any_address: bool = False,
    any_port: bool = False,
    any_protocol: bool = False,
    destination_id: int | None = None,
    destination_name: str | None = None,
) -> DestinationSpec:
    return DestinationSpec(
        addresses=addrs(*addresses),
        ports=ports,
        protocols=protocols,
        any_address=any_address,
        any_port=any_port,
        any_protocol=any_protocol,
        destination_id=destination_id,
        destination_name=destination_name,
    )


ANY = dest(any_address=True, any_port=True, any_protocol=True)


def location(*subnets: str, enabled: bool = True, default_allow: bool = False) -> LocationSpec:
    return LocationSpec(
        id=1,
        name="HQ",
        acl_enabled=enabled,
        acl_default_allow=default_allow,
        subnets=tuple(ip_interface(s) for s in subnets),
    )


V4 = location("10.0.0.1/16")
V6 = location("fd00::1/64")
DUAL = location("10.0.0.1/16", "fd00::1/64")


def directory(
    users: dict[int, tuple[str, ...]],
    *,
    inactive: frozenset[int] = frozenset(),
    groups: dict[int, frozenset[int]] | None = None,
    network_devices: dict[int, tuple[str, ...]] | None = None,
) -> Directory:
    return Directory(
        users={u: u not in inactive for u in users},
        group_members=groups or {},
        user_addresses={u: tuple(ip(a) for a in a_) for u, a_ in users.items()},
        network_device_addresses={
            d: tuple(ip(a) for a in a_) for d, a_ in (network_devices or {}).items()
        },
    )


def rule(rule_id: int = 1, name: str = "web", **kwargs: object) -> RuleSpec:
    for key in (
        "allowed_users",
        "denied_users",
        "allowed_groups",
        "denied_groups",
        "allowed_network_devices",
        "denied_network_devices",
    ):
        if key in kwargs:
            kwargs[key] = frozenset(kwargs[key])  # type: ignore[arg-type]
    return RuleSpec(id=rule_id, name=name, **kwargs)  # type: ignore[arg-type]


def compiled(loc: LocationSpec, rules: list[RuleSpec], d: Directory) -> FirewallConfig:
    config = compile_location(loc, rules, d)
    assert config is not None
    return config


def summary(config: FirewallConfig) -> list[tuple[str, int, list[str], list[str]]]:
    """(verdict, family, sources, destinations) per rule, rendered like the preview."""
    return [
        (x.verdict.value, x.ip_version, address_strings(x.sources), address_strings(x.destinations))
        for x in config.rules
    ]


def allowed_sources(config: FirewallConfig) -> list[list[str]]:
    return [address_strings(x.sources) for x in config.rules if x.verdict is Verdict.ALLOW]


# ---------------------------------------------------------------- the spec's example


def test_spec_example_verbatim() -> None:
    d = directory({1: ("10.0.1.1", "10.0.1.2"), 2: ("10.0.2.1", "10.0.2.2")})
    # the loader merges alias "dns-host" (10.0.5.5) into the manual destination
    web = rule(
        1,
        "web",
        allow_all_users=True,
        manual=dest("192.168.1.0/24", "10.0.5.5", ports=((443, 443), (80, 80)), protocols=(TCP,)),
    )
    assert config_to_json(compile_location(V4, [web], d)) == SPEC_EXAMPLE_FIREWALL


# ---------------------------------------------------------------- location-level


def test_acl_disabled_gives_none() -> None:
    d = directory({1: ("10.0.0.2",)})
    off = location("10.0.0.1/16", enabled=False)
    assert compile_location(off, [rule(allow_all_users=True, manual=ANY)], d) is None
    assert config_to_json(None) is None
    assert LocationCompiler().compile(off, [], d) is None


@pytest.mark.parametrize(("allow", "policy"), [(True, "allow"), (False, "deny")])
def test_default_policy(allow: bool, policy: str) -> None:
    loc = location("10.0.0.1/16", default_allow=allow)
    config = compiled(loc, [], directory({}))
    assert config.rules == ()
    assert config.default_policy is Verdict(policy)
    assert config_to_json(config) == {"default_policy": policy, "rules": []}


# ---------------------------------------------------------------- families


def test_ipv4_location_any_address() -> None:
    d = directory({1: ("10.0.0.2",)})
    config = compiled(V4, [rule(allow_all_users=True, manual=ANY)], d)
    assert summary(config) == [("allow", 4, ["10.0.0.2"], []), ("deny", 4, [], [])]


def test_ipv6_location_any_address() -> None:
    d = directory({1: ("fd00::2",)})
    config = compiled(V6, [rule(allow_all_users=True, manual=ANY)], d)
    assert summary(config) == [("allow", 6, ["fd00::2"], []), ("deny", 6, [], [])]


def test_dual_stack_any_address_gives_both_families_ipv4_first() -> None:
    d = directory({1: ("10.0.0.2", "fd00::2")})
    config = compiled(DUAL, [rule(allow_all_users=True, manual=ANY)], d)
    assert summary(config) == [
        ("allow", 4, ["10.0.0.2"], []),
        ("allow", 6, ["fd00::2"], []),
        ("deny", 4, [], []),
        ("deny", 6, [], []),
    ]


def test_ipv4_destination_never_opens_ipv6() -> None:
    d = directory({1: ("10.0.0.2", "fd00::2")})
    config = compiled(
        DUAL, [rule(allow_all_users=True, manual=dest("192.168.0.1", any_port=True))], d
    )
    assert {x.ip_version for x in config.rules} == {4}
    # an IPv6 flow is not matched by anything: the default policy decides
    assert decide(config, ip("fd00::2"), ip("fd00::9"), 80, TCP) == (Verdict.DENY, None)


def test_ipv6_destination_never_opens_ipv4() -> None:
    d = directory({1: ("10.0.0.2", "fd00::2")})
    config = compiled(DUAL, [rule(allow_all_users=True, manual=dest("fd01::/64"))], d)
    assert summary(config) == [
        ("allow", 6, ["fd00::2"], ["fd01::/64"]),
        ("deny", 6, [], ["fd01::/64"]),
    ]


def test_mixed_destination_splits_by_family() -> None:
    d = directory({1: ("10.0.0.2", "fd00::2")})
    config = compiled(
        DUAL, [rule(allow_all_users=True, manual=dest("fd01::1", "192.168.0.0/24"))], d
    )
    assert summary(config) == [
        ("allow", 4, ["10.0.0.2"], ["192.168.0.0/24"]),
        ("allow", 6, ["fd00::2"], ["fd01::1"]),
        ("deny", 4, [], ["192.168.0.0/24"]),
        ("deny", 6, [], ["fd01::1"]),
    ]


def test_explicit_address_of_a_family_the_location_lacks() -> None:
    # spec step 4: explicit addresses yield their family regardless of the location;
    # with no source of that family only the DENY remains, which opens nothing
    d = directory({1: ("10.0.0.2",)})
    config = compiled(V4, [rule(allow_all_users=True, manual=dest("fd01::1"))], d)
    assert summary(config) == [("deny", 6, [], ["fd01::1"])]


def test_any_address_in_location_without_subnets_yields_nothing() -> None:
    config = compiled(location(), [rule(allow_all_users=True, manual=ANY)], directory({}))
    assert config.rules == ()


# ---------------------------------------------------------------- destinations


def test_any_flags_clear_their_dimension() -> None:
    d = directory({1: ("10.0.0.2",)})
    values = {"ports": ((22, 22),), "protocols": (UDP,)}
    for flag, field in (
        ("any_address", "destinations"),
        ("any_port", "ports"),
        ("any_protocol", "protocols"),
    ):
        spec = dest("192.168.0.1", **values, **{flag: True})  # type: ignore[arg-type]
        allow = compiled(V4, [rule(allow_all_users=True, manual=spec)], d).rules[0]
        assert getattr(allow, field) == (), flag
        others = {"destinations", "ports", "protocols"} - {field}
        assert all(getattr(allow, f) != () for f in others), flag


def test_any_address_ignores_listed_addresses() -> None:
    d = directory({1: ("10.0.0.2",)})
    spec = dest("192.168.0.1", "fd01::1", any_address=True)
    config = compiled(V4, [rule(allow_all_users=True, manual=spec)], d)
    assert summary(config) == [("allow", 4, ["10.0.0.2"], []), ("deny", 4, [], [])]


def test_destination_without_addresses_or_any_address_yields_nothing() -> None:
    # a rule whose aliases bring only ports must not become an allow-all rule
    d = directory({1: ("10.0.0.2",)})
    spec = dest(ports=((443, 443),), protocols=(TCP,))
    assert compiled(V4, [rule(allow_all_users=True, manual=spec)], d).rules == ()


def test_empty_ports_and_protocols_without_flags_mean_any() -> None:
    d = directory({1: ("10.0.0.2",)})
    allow = compiled(V4, [rule(allow_all_users=True, manual=dest("192.168.0.1"))], d).rules[0]
    assert (allow.ports, allow.protocols) == ((), ())


def test_aliases_merged_into_manual_destination() -> None:
    # rule 192.168.1.0/25 + alias 192.168.1.128/25 and 192.168.1.7 (inside), ports from both
    d = directory({1: ("10.0.0.2",)})
    spec = dest(
        "192.168.1.0/25",
        "192.168.1.128/25",
        "192.168.1.7",
        ports=((8000, 8080), (80, 80), (8081, 8081)),
        protocols=(TCP, UDP, TCP),
    )
    allow = compiled(V4, [rule(allow_all_users=True, manual=spec)], d).rules[0]
    assert address_strings(allow.destinations) == ["192.168.1.0/24"]
    assert allow.ports == ((80, 80), (8000, 8081))
    assert allow.protocols == (TCP, UDP)
    preview = config_to_json(compiled(V4, [rule(allow_all_users=True, manual=spec)], d))
    assert preview is not None
    assert preview["rules"][0]["ports"] == [80, "8000-8081"]


def test_destinations_compile_separately_in_link_order() -> None:
    d = directory({1: ("10.0.0.2",)})
    postgres = dest(
        "10.1.0.5",
        ports=((5432, 5432),),
        protocols=(TCP,),
        destination_id=3,
        destination_name="postgres",
    )
    dns = dest(
        "10.1.0.53",
        protocols=(UDP,),
        any_port=True,
        destination_id=2,
        destination_name="dns",
    )
    web = rule(
        7,
        "web",
        allow_all_users=True,
        manual=dest("10.1.0.80", ports=((80, 80),), protocols=(TCP,)),
        destinations=(postgres, dns),
    )
    config = compiled(V4, [web], d)
    assert [(x.id, x.comment) for x in config.rules] == [
        (1, "RULE 7 - web ALLOW"),
        (2, "RULE 7 - web, DESTINATION 3 - postgres ALLOW"),
        (3, "RULE 7 - web, DESTINATION 2 - dns ALLOW"),
        (4, "RULE 7 - web DENY"),
        (5, "RULE 7 - web, DESTINATION 3 - postgres DENY"),
        (6, "RULE 7 - web, DESTINATION 2 - dns DENY"),
    ]
    assert [(x.ports, x.protocols) for x in config.rules[:3]] == [
        (((80, 80),), (TCP,)),
        (((5432, 5432),), (TCP,)),
        ((), (UDP,)),
    ]
    # one destination's values never leak into another's rules
    assert [address_strings(x.destinations) for x in config.rules[3:]] == [
        ["10.1.0.80"],
        ["10.1.0.5"],
        ["10.1.0.53"],
    ]


def test_destinations_only_when_manual_settings_off() -> None:
    d = directory({1: ("10.0.0.2",)})
    db = dest("10.1.0.5", any_port=True, any_protocol=True, destination_id=3, destination_name="db")
    config = compiled(V4, [rule(allow_all_users=True, manual=None, destinations=(db,))], d)
    assert [x.comment for x in config.rules] == [
        "RULE 1 - web, DESTINATION 3 - db ALLOW",
        "RULE 1 - web, DESTINATION 3 - db DENY",
    ]


def test_deny_carries_no_sources_ports_or_protocols() -> None:
    d = directory({1: ("10.0.0.2",)})
    spec = dest("192.168.0.1", ports=((22, 22),), protocols=(TCP,))
    deny = compiled(V4, [rule(allow_all_users=True, manual=spec)], d).rules[1]
    assert deny.verdict is Verdict.DENY
    assert (deny.sources, deny.ports, deny.protocols) == ((), (), ())
    assert deny.destinations == addrs("192.168.0.1")


def test_all_allows_before_all_denies_in_rule_id_order() -> None:
    d = directory({1: ("10.0.0.2",)})
    rules = [
        rule(3, "c", allow_all_users=True, manual=dest("192.168.0.3")),
        rule(1, "a", allow_all_users=True, manual=dest("192.168.0.1")),
        rule(2, "b", deny_all_users=True, allow_all_users=True, manual=dest("192.168.0.2")),
    ]
    config = compiled(V4, rules, d)
    assert [(x.id, x.comment) for x in config.rules] == [
        (1, "RULE 1 - a ALLOW"),
        (2, "RULE 3 - c ALLOW"),
        (3, "RULE 1 - a DENY"),
        (4, "RULE 2 - b DENY"),
        (5, "RULE 3 - c DENY"),
    ]
    assert len({x.id for x in config.rules}) == len(config.rules)


# ---------------------------------------------------------------- sources


D = directory(
    {
        1: ("10.0.0.1",),
        2: ("10.0.0.2",),
        3: ("10.0.0.3",),
        4: ("10.0.0.4",),
        5: ("10.0.0.5",),  # inactive
        6: ("10.0.0.6",),  # in no group
    },
    inactive=frozenset({5}),
    groups={10: frozenset({1, 2, 5}), 20: frozenset({3}), 30: frozenset({4})},
    network_devices={100: ("10.0.0.100",), 101: ("10.0.0.101",)},
)


def sources_of(**kwargs: object) -> tuple[AddressRange, ...]:
    config = compiled(V4, [rule(manual=dest("192.168.0.1"), **kwargs)], D)
    assert config.rules[-1].verdict is Verdict.DENY  # the DENY is there with or without sources
    allows = [x for x in config.rules if x.verdict is Verdict.ALLOW]
    return allows[0].sources if allows else ()


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"allowed_users": {1, 3}}, ["10.0.0.1", "10.0.0.3"]),
        ({"allowed_users": {1, 5}}, ["10.0.0.1"]),  # inactive excluded
        ({"allowed_users": {1, 99}}, ["10.0.0.1"]),  # unknown ignored
        ({"allowed_users": {1, 2}, "denied_users": {2}}, ["10.0.0.1"]),  # deny wins
        ({"allowed_groups": {10}}, ["10.0.0.1-10.0.0.2"]),  # inactive member excluded
        ({"allowed_groups": {10, 20}, "denied_users": {1}}, ["10.0.0.2-10.0.0.3"]),
        ({"allowed_groups": {10}, "allowed_users": {6}}, ["10.0.0.1-10.0.0.2", "10.0.0.6"]),
        ({"allowed_users": {1, 3}, "denied_groups": {10}}, ["10.0.0.3"]),
        ({"allow_all_groups": True}, ["10.0.0.1-10.0.0.4"]),  # user 6 is in no group
        ({"allow_all_groups": True, "allowed_users": {6}}, ["10.0.0.1-10.0.0.4", "10.0.0.6"]),
        ({"allow_all_users": True}, ["10.0.0.1-10.0.0.4", "10.0.0.6"]),
        (
            {"allow_all_users": True, "denied_users": {2}},
            ["10.0.0.1", "10.0.0.3-10.0.0.4", "10.0.0.6"],
        ),
        ({"allow_all_users": True, "deny_all_groups": True}, ["10.0.0.6"]),
        ({"allow_all_users": True, "denied_groups": {10, 30}}, ["10.0.0.3", "10.0.0.6"]),
        ({"allow_all_users": True, "deny_all_users": True}, []),
        ({"allow_all_groups": True, "deny_all_groups": True, "allowed_users": {6}}, ["10.0.0.6"]),
        (
            {"allow_all_groups": True, "allowed_users": {6}, "denied_users": {6, 1}},
            ["10.0.0.2-10.0.0.4"],
        ),
        ({"allowed_network_devices": {100}}, ["10.0.0.100"]),
        ({"allowed_network_devices": {100, 999}}, ["10.0.0.100"]),
        ({"allow_all_network_devices": True}, ["10.0.0.100-10.0.0.101"]),
        ({"allow_all_network_devices": True, "denied_network_devices": {101}}, ["10.0.0.100"]),
        ({"allow_all_network_devices": True, "deny_all_network_devices": True}, []),
        ({"allowed_network_devices": {100}, "denied_network_devices": {100}}, []),
        ({"allowed_users": {1}, "allowed_network_devices": {101}}, ["10.0.0.1", "10.0.0.101"]),
        # denying users never removes network devices and vice versa
        (
            {"allow_all_users": True, "deny_all_users": True, "allow_all_network_devices": True},
            ["10.0.0.100-10.0.0.101"],
        ),
        ({"allowed_users": {1}, "deny_all_network_devices": True}, ["10.0.0.1"]),
        ({}, []),
    ],
)
def test_sources(kwargs: dict[str, object], expected: list[str]) -> None:
    assert sources_of(**kwargs) == addrs(*expected)


def test_no_sources_gives_deny_only() -> None:
    d = directory({1: ("10.0.0.2",)}, inactive=frozenset({1}))
    config = compiled(V4, [rule(allowed_users={1}, manual=dest("192.168.0.1"))], d)
    assert summary(config) == [("deny", 4, [], ["192.168.0.1"])]


def test_sources_only_of_the_rule_family() -> None:
    d = directory({1: ("10.0.0.2",), 2: ("fd00::2",)})
    config = compiled(DUAL, [rule(allow_all_users=True, manual=ANY)], d)
    assert summary(config)[:2] == [("allow", 4, ["10.0.0.2"], []), ("allow", 6, ["fd00::2"], [])]
    config = compiled(DUAL, [rule(allowed_users={2}, manual=ANY)], d)
    assert summary(config) == [
        ("allow", 6, ["fd00::2"], []),
        ("deny", 4, [], []),
        ("deny", 6, [], []),
    ]


def test_shared_address_survives_denial_of_one_holder() -> None:
    # user 2 is denied but user 1 holds the same address: user 1 is still a source
    d = directory({1: ("10.0.0.7",), 2: ("10.0.0.7", "10.0.0.8"), 3: ("10.0.0.9",)})
    config = compiled(V4, [rule(allow_all_users=True, denied_users={2}, manual=ANY)], d)
    assert allowed_sources(config) == [["10.0.0.7", "10.0.0.9"]]


def test_address_shared_by_user_and_network_device() -> None:
    d = directory({1: ("10.0.0.7",)}, network_devices={100: ("10.0.0.7",)})
    config = compiled(
        V4, [rule(allow_all_network_devices=True, deny_all_users=True, manual=ANY)], d
    )
    assert allowed_sources(config) == [["10.0.0.7"]]


# ---------------------------------------------------------------- normalisation


def test_adjacent_and_overlapping_ranges_merge() -> None:
    v4, v6 = merge_address_ranges(
        addrs(
            "10.0.0.10-10.0.0.20",
            "10.0.0.21",
            "10.0.0.5-10.0.0.12",
            "10.0.0.30",
            "fd00::1",
            "fd00::2",
        )
    )
    assert v4 == ((ip("10.0.0.5"), ip("10.0.0.21")), (ip("10.0.0.30"), ip("10.0.0.30")))
    assert v6 == ((ip("fd00::1"), ip("fd00::2")),)
    # the source sweep merges consecutive device addresses the same way
    d = directory({1: ("10.0.0.1", "10.0.0.3"), 2: ("10.0.0.2",), 3: ("10.0.0.5",)})
    config = compiled(V4, [rule(allow_all_users=True, manual=ANY)], d)
    assert config.rules[0].sources == (
        (ip("10.0.0.1"), ip("10.0.0.3")),
        (ip("10.0.0.5"), ip("10.0.0.5")),
    )


def test_ranges_do_not_merge_across_families() -> None:
    v4, v6 = merge_address_ranges(addrs("255.255.255.255", "::"))
    assert v4 == addrs("255.255.255.255") and v6 == addrs("::")


def test_ports_merge_overlapping_and_adjacent() -> None:
    assert merge_port_ranges([(443, 443), (85, 100), (80, 80), (81, 90), (0, 0)]) == (
        (0, 0),
        (80, 100),
        (443, 443),
    )
    assert merge_port_ranges([(1, 65535), (22, 22)]) == ((1, 65535),)


@pytest.mark.parametrize(
    ("text", "rendered"),
    [
        ("10.0.0.1", ["10.0.0.1"]),
        ("10.0.0.0/24", ["10.0.0.0/24"]),
        ("10.0.1.1-10.0.1.2", ["10.0.1.1", "10.0.1.2"]),  # no aligned /31 covers .1-.2
        ("10.0.0.5-10.0.0.9", ["10.0.0.5", "10.0.0.6/31", "10.0.0.8/31"]),
        ("10.0.0.0-10.0.1.0", ["10.0.0.0/24", "10.0.1.0"]),
        ("10.0.0.255-10.0.2.0", ["10.0.0.255", "10.0.1.0/24", "10.0.2.0"]),
        ("0.0.0.0-255.255.255.255", ["0.0.0.0/0"]),
        ("fd00::-fd00::ffff", ["fd00::/112"]),
        ("fd00::1-fd00::4", ["fd00::1", "fd00::2/127", "fd00::4"]),
    ],
)
def test_aligned_subnet_rendering(text: str, rendered: list[str]) -> None:
    assert address_strings([r(text)]) == rendered


def test_protocols_sorted_unique() -> None:
    d = directory({1: ("10.0.0.2",)})
    spec = dest("192.168.0.1", protocols=(UDP, ICMP, TCP, UDP))
    allow = compiled(V4, [rule(allow_all_users=True, manual=spec)], d).rules[0]
    assert allow.protocols == (ICMP, TCP, UDP)


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        (dest("192.168.0.1", protocols=(TCP, 47)), "unsupported protocol 47"),
        (dest("192.168.0.1", protocols=(0,)), "unsupported protocol 0"),
        (dest("192.168.0.1", ports=((0, 65536),)), "invalid port range 0-65536"),
        (dest("192.168.0.1", ports=((200, 100),)), "invalid port range 200-100"),
        (dest("192.168.0.1", ports=((-1, 5),)), "invalid port range -1-5"),
        (dest("10.0.0.9-10.0.0.1"), "ends before it starts"),
        (DestinationSpec(addresses=((ip("10.0.0.1"), ip("fd00::1")),)), "mixes IP families"),
    ],
)
def test_invalid_values_rejected(spec: DestinationSpec, fragment: str) -> None:
    d = directory({1: ("10.0.0.2",)})
    with pytest.raises(FirewallCompileError, match=fragment) as err:
        compile_location(V4, [rule(9, "bad", allow_all_users=True, manual=spec)], d)
    assert err.value.rule_id == 9
    assert "RULE 9 - bad" in str(err.value)
    assert isinstance(err.value, ValueError)


def test_invalid_protocol_in_a_destination_is_rejected_with_its_id() -> None:
    bad = dest("10.1.0.5", protocols=(132,), destination_id=4, destination_name="sctp")
    with pytest.raises(FirewallCompileError, match="DESTINATION 4 - sctp") as err:
        compile_location(V4, [rule(allow_all_users=True, destinations=(bad,))], directory({}))
    assert err.value.destination_id == 4


def test_value_cleared_by_its_any_flag_is_not_validated() -> None:
    # it is never sent to a gateway, so stale data there must not block the location
    spec = dest("192.168.0.1", protocols=(47,), ports=((9, 1),), any_protocol=True, any_port=True)
    config = compiled(V4, [rule(allow_all_users=True, manual=spec)], directory({}))
    assert summary(config) == [("deny", 4, [], ["192.168.0.1"])]


def test_invalid_value_rejected_even_when_no_family_is_emitted() -> None:
    spec = dest(protocols=(47,))
    with pytest.raises(ValueError, match="unsupported protocol"):
        compile_location(V4, [rule(allow_all_users=True, manual=spec)], directory({}))


# ---------------------------------------------------------------- decide


def test_decide_first_match_then_default() -> None:
    d = directory({1: ("10.0.0.2",), 2: ("10.0.0.3",)})
    ssh = rule(
        1,
        "ssh",
        allowed_users={1},
        manual=dest("192.168.0.0/24", ports=((22, 22),), protocols=(TCP,)),
    )
    config = compiled(location("10.0.0.1/16", default_allow=True), [ssh], d)
    u1, u2, host = ip("10.0.0.2"), ip("10.0.0.3"), ip("192.168.0.9")
    verdict, matched = decide(config, u1, host, 22, TCP)
    assert verdict is Verdict.ALLOW and matched is config.rules[0]
    assert decide(config, u2, host, 22, TCP) == (Verdict.DENY, config.rules[1])
    assert decide(config, u1, host, 23, TCP) == (Verdict.DENY, config.rules[1])
    assert decide(config, u1, host, 22, UDP) == (Verdict.DENY, config.rules[1])
    assert decide(config, u1, ip("192.168.1.1"), 22, TCP) == (Verdict.ALLOW, None)


def test_decide_ports_match_only_tcp_and_udp() -> None:
    d = directory({1: ("10.0.0.2",)})
    web = rule(allow_all_users=True, manual=dest("192.168.0.1", ports=((80, 80),)))
    config = compiled(V4, [web], d)
    src, dst = ip("10.0.0.2"), ip("192.168.0.1")
    assert decide(config, src, dst, 80, TCP)[0] is Verdict.ALLOW
    assert decide(config, src, dst, 80, UDP)[0] is Verdict.ALLOW
    # ICMP carries no port: a port-restricted rule never matches it
    assert decide(config, src, dst, None, ICMP)[1] is config.rules[1]
    assert decide(config, src, dst, 80, ICMP)[1] is config.rules[1]
    # a TCP flow given without a port does not match a port list either
    assert decide(config, src, dst, None, TCP)[1] is config.rules[1]


def test_decide_without_ports_matches_any_protocol_and_port() -> None:
    d = directory({1: ("10.0.0.2",)})
    config = compiled(V4, [rule(allow_all_users=True, manual=dest("192.168.0.1"))], d)
    for port, proto in ((None, ICMP), (5, TCP), (None, 47)):
        assert decide(config, ip("10.0.0.2"), ip("192.168.0.1"), port, proto)[0] is Verdict.ALLOW


def test_decide_port_range_bounds() -> None:
    d = directory({1: ("10.0.0.2",)})
    spec = dest("192.168.0.1", ports=((8000, 8080), (443, 443)), protocols=(TCP,))
    config = compiled(V4, [rule(allow_all_users=True, manual=spec)], d)
    src, dst = ip("10.0.0.2"), ip("192.168.0.1")
    verdicts = {
        p: decide(config, src, dst, p, TCP)[0] for p in (442, 443, 444, 7999, 8000, 8080, 8081)
    }
    assert [p for p, v in verdicts.items() if v is Verdict.ALLOW] == [443, 8000, 8080]


def test_decide_family_must_match() -> None:
    d = directory({1: ("10.0.0.2", "fd00::2")})
    config = compiled(DUAL, [rule(allow_all_users=True, manual=ANY)], d)
    assert decide(config, ip("fd00::2"), ip("fd00::9"), None, ICMP)[1] is config.rules[1]
    assert decide(config, ip("10.0.0.2"), ip("1.1.1.1"), None, ICMP)[1] is config.rules[0]
    with pytest.raises(ValueError, match="mixes IP families"):
        decide(config, ip("10.0.0.2"), ip("fd00::9"), None, ICMP)


def test_decide_acl_disabled_allows() -> None:
    assert decide(None, ip("10.0.0.2"), ip("10.0.0.3"), 22, TCP) == (Verdict.ALLOW, None)


def test_decide_source_and_destination_ranges() -> None:
    rule_ = FirewallRule(
        1,
        Verdict.ALLOW,
        4,
        addrs("10.0.0.1-10.0.0.3", "10.0.0.9"),
        addrs("192.168.0.0/24"),
        (),
        (),
        "x",
    )
    config = FirewallConfig(Verdict.DENY, (rule_,))
    hits = [
        n
        for n in range(0, 12)
        if decide(config, IPv4Address(f"10.0.0.{n}"), ip("192.168.0.255"), None, 1)[0]
        is Verdict.ALLOW
    ]
    assert hits == [1, 2, 3, 9]
    assert decide(config, ip("10.0.0.1"), ip("192.168.1.0"), None, 1) == (Verdict.DENY, None)


# ---------------------------------------------------------------- incremental compilation


def _rules() -> list[RuleSpec]:
    return [
        rule(1, "a", allow_all_users=True, manual=dest("192.168.0.1", ports=((80, 80),))),
        rule(2, "b", allowed_groups={10}, manual=ANY),
        rule(3, "c", allow_all_users=True, manual=dest("192.168.0.3")),
        rule(
            4,
            "d",
            allowed_users={6},
            destinations=(dest("fd00::5", any_port=True, destination_id=1, destination_name="x"),),
        ),
    ]


def test_incremental_recompiles_only_the_changed_rule() -> None:
    compiler = LocationCompiler()
    rules = _rules()
    first = compiler.compile(DUAL, rules, D)
    assert compiler.stats.rules_compiled == 4
    assert compiler.stats.sources_resolved == 3  # rules 1 and 3 share allow_all_users
    assert compiler.compile(DUAL, rules, D) == first
    assert compiler.stats.rules_compiled == 0 and compiler.stats.sources_resolved == 0

    rules[1] = dataclasses.replace(rules[1], allowed_groups=frozenset({20}))
    again = compiler.compile(DUAL, rules, D)
    assert compiler.stats.rules_compiled == 1
    assert compiler.stats.sources_resolved == 1
    assert again == compile_location(DUAL, rules, D)


def test_incremental_rebuilt_specs_hit_the_cache() -> None:
    compiler = LocationCompiler()
    compiler.compile(DUAL, _rules(), D)
    equal_directory = dataclasses.replace(D, users=dict(D.users))
    config = compiler.compile(DUAL, _rules(), equal_directory)
    assert compiler.stats.rules_compiled == 0
    assert not compiler.stats.directory_indexed
    assert config == compile_location(DUAL, _rules(), D)


def test_incremental_directory_change_re_resolves_sources() -> None:
    compiler = LocationCompiler()
    compiler.compile(DUAL, _rules(), D)
    moved = dataclasses.replace(D, user_addresses={**D.user_addresses, 6: (ip("10.0.0.60"),)})
    config = compiler.compile(DUAL, _rules(), moved)
    assert compiler.stats.directory_indexed
    assert compiler.stats.rules_compiled == 0
    assert config == compile_location(DUAL, _rules(), moved)
    assert "10.0.0.60" in allowed_sources(config)[0]  # type: ignore[arg-type]


def test_incremental_rule_removed_added_and_location_changed() -> None:
    compiler = LocationCompiler()
    rules = _rules()
    compiler.compile(DUAL, rules, D)
    fewer = rules[1:]
    assert compiler.compile(DUAL, fewer, D) == compile_location(DUAL, fewer, D)
    more = [*rules, rule(9, "z", allow_all_network_devices=True, manual=ANY)]
    assert compiler.compile(DUAL, more, D) == compile_location(DUAL, more, D)
    assert compiler.compile(V4, more, D) == compile_location(V4, more, D)
    policy = location("10.0.0.1/16", default_allow=True)
    assert compiler.compile(policy, more, D) == compile_location(policy, more, D)


def test_incremental_failed_compile_leaves_cache_usable() -> None:
    compiler = LocationCompiler()
    rules = _rules()
    good = compiler.compile(DUAL, rules, D)
    broken = [
        *rules[:2],
        rule(3, "c", allow_all_users=True, manual=dest("10.0.0.1", protocols=(99,))),
    ]
    with pytest.raises(FirewallCompileError):
        compiler.compile(DUAL, broken, D)
    assert compiler.compile(DUAL, rules, D) == good


def test_ipv6_addresses_are_reused_not_recreated() -> None:
    a = IPv6Address("fd00::2")
    d = Directory(users={1: True}, user_addresses={1: (a,)})
    config = compiled(V6, [rule(allow_all_users=True, manual=ANY)], d)
    assert config.rules[0].sources[0][0] is a
