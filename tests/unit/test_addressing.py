"""Address parsing, allocation and re-addressing (pure, no database)."""

from __future__ import annotations

import time
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv6Address,
    IPv6Interface,
    ip_address,
    ip_interface,
    ip_network,
)
from itertools import islice

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from defguard.wireguard.addressing import (
    Address,
    AddressError,
    Interface,
    IpProblem,
    NetworkFull,
    allocate,
    allocate_devices,
    classify_ip,
    first_overfull,
    format_cidr,
    is_host_address,
    iter_free,
    parse_allowed_ips,
    parse_host,
    parse_location_addresses,
    plan_location,
    split_ip,
)

# -- parsing -------------------------------------------------------------------


def test_parse_location_addresses():
    assert parse_location_addresses(" 10.1.1.1/24 , fc00::1/112,") == [
        ip_interface("10.1.1.1/24"),
        ip_interface("fc00::1/112"),
    ]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "at least one"),
        (" , ", "at least one"),
        ("10.0.0.1/0", "invalid prefix"),
        ("10.0.0.1/33", "invalid prefix"),
        ("fc00::1/129", "invalid prefix"),
        ("10.0.0.1/x", "invalid prefix"),
        ("10.0.0.256/24", "not a valid address"),
        ("hello", "not a valid address"),
        ("10.0.0.0/24", "network address"),
        ("10.0.0.255/24", "broadcast address"),
        ("10.0.0.1/32", "network address"),
        ("fe80::1%eth0/64", "scoped"),
        ("10.0.0.1/24,10.0.0.2/25", "overlaps"),
    ],
)
def test_parse_location_addresses_rejects(text, fragment):
    with pytest.raises(AddressError, match=fragment):
        parse_location_addresses(text)


def test_parse_allowed_ips_strips_host_bits_and_drops_invalid():
    assert parse_allowed_ips("10.1.1.7/24, junk,10.1.1.0/24, ::/0, 1.2.3.4") == [
        ip_network("10.1.1.0/24"),
        ip_network("::/0"),
        ip_network("1.2.3.4/32"),
    ]
    assert parse_allowed_ips(None) == [] and parse_allowed_ips("") == []


def test_parse_host_reads_postgres_inet_text():
    assert parse_host("10.0.0.5") == ip_address("10.0.0.5")
    assert parse_host("10.0.0.5/24") == ip_address("10.0.0.5")
    assert parse_host("fd00::2") == ip_address("fd00::2")
    assert parse_host("::ffff:1.2.3.4") == ip_address("::ffff:1.2.3.4")
    for bad in ("10.1", "10.0.0.256", "junk", ""):
        with pytest.raises(ValueError):
            parse_host(bad)


def test_format_cidr_keeps_prefix():
    assert format_cidr(ip_address("10.0.0.5")) == "10.0.0.5/32"
    assert format_cidr(ip_network("10.0.0.0/8")) == "10.0.0.0/8"
    assert format_cidr(ip_interface("fc00::1/112")) == "fc00::1/112"


def test_classify_ip():
    subnets = [ip_interface("10.0.0.1/24")]
    used = {ip_address("10.0.0.7")}
    assert classify_ip(ip_address("10.0.0.8"), subnets, used) == (0, None)
    assert classify_ip(ip_address("10.0.0.7"), subnets, used) == (0, IpProblem.TAKEN)
    assert classify_ip(ip_address("10.0.0.0"), subnets, used) == (0, IpProblem.NETWORK)
    assert classify_ip(ip_address("10.0.0.255"), subnets, used) == (0, IpProblem.BROADCAST)
    assert classify_ip(ip_address("10.0.0.1"), subnets, used) == (0, IpProblem.GATEWAY)
    assert classify_ip(ip_address("10.0.1.1"), subnets, used) == (None, IpProblem.OUTSIDE)
    assert classify_ip(ip_address("::1"), subnets, used) == (None, IpProblem.OUTSIDE)


def test_split_ip_matches_upstream_examples():
    cases = [
        ("192.168.3.1", "192.168.3.1/30", "192.168.3.", "1", "30"),
        ("192.168.5.7", "192.168.3.1/24", "192.168.5.", "7", "24"),
        (
            "2001:0db8:85a3::8a2e:0370:7334",
            "2001:0db8:85a3::8a2e:0370:7334/64",
            "2001:0db8:85a3:0000:",
            "0000:8a2e:0370:7334",
            "64",
        ),
        (
            "2001:0db8::0010:8a2e:0370:aaaa",
            "2001:db8::10:8a2e:370:aaa8/125",
            "2001:0db8:0000:0000:0010:8a2e:0370:",
            "aaaa",
            "125",
        ),
    ]
    for ip, net, network_part, modifiable, prefix in cases:
        split = split_ip(ip_address(ip), ip_interface(net))
        assert (split.network_part, split.modifiable_part, split.network_prefix) == (
            network_part,
            modifiable,
            prefix,
        )
        assert split.ip == str(ip_address(ip))


# -- allocation examples ---------------------------------------------------------


def test_first_device_in_slash_24_gets_dot_two():
    assert allocate(ip_interface("10.1.1.1/24"), set()) == [ip_address("10.1.1.2")]


def test_gateway_in_the_middle_is_skipped():
    got = allocate(ip_interface("10.1.1.3/29"), set(), 5)
    assert [str(a) for a in got] == ["10.1.1.1", "10.1.1.2", "10.1.1.4", "10.1.1.5", "10.1.1.6"]
    with pytest.raises(NetworkFull):
        allocate(ip_interface("10.1.1.3/29"), set(), 6)


def test_last_ipv6_address_is_skipped():
    got = list(iter_free(ip_network("fc00::/126"), [ip_address("fc00::1")], set()))
    assert got == [ip_address("fc00::2")]


def test_huge_subnets_are_walked_lazily():
    start = time.perf_counter()
    v4 = list(islice(iter_free(ip_network("10.0.0.0/8"), [ip_address("10.0.0.1")], set()), 3))
    v6 = allocate(ip_interface("fd00::1/64"), {ip_address("fd00::2")}, 2)
    assert [str(a) for a in v4] == ["10.0.0.2", "10.0.0.3", "10.0.0.4"]
    assert [str(a) for a in v6] == ["fd00::3", "fd00::4"]
    assert time.perf_counter() - start < 0.1


def test_allocate_devices_one_address_per_subnet():
    subnets = [ip_interface("10.1.1.1/24"), ip_interface("fc00::1/112")]
    got = allocate_devices(subnets, {ip_address("10.1.1.2")}, 2)
    assert got == [
        (ip_address("10.1.1.3"), ip_address("fc00::2")),
        (ip_address("10.1.1.4"), ip_address("fc00::3")),
    ]


def test_first_overfull():
    assert first_overfull([ip_interface("10.0.0.1/30")], 1) is None
    assert first_overfull([ip_interface("10.0.0.1/30")], 2) == ip_interface("10.0.0.1/30")
    assert first_overfull([ip_interface("fc00::1/126")], 2) is None
    assert first_overfull([ip_interface("fc00::1/126")], 3) is not None


def test_plan_keeps_fitting_addresses_and_fills_new_subnets():
    """The spec example: adding fc00::1/112 keeps 10.1.1.2 and adds fc00::2."""
    subnets = [ip_interface("10.1.1.1/24"), ip_interface("fc00::1/112")]
    plan = plan_location(subnets, {7: (ip_address("10.1.1.2"),)}, [7])
    assert plan.assign == {7: (ip_address("10.1.1.2"), ip_address("fc00::2"))}
    assert plan.remove == []


def test_plan_removes_disallowed_and_adds_new():
    subnets = [ip_interface("10.1.1.1/24")]
    current = {1: (ip_address("10.1.1.2"),), 2: (ip_address("10.1.1.3"),)}
    plan = plan_location(subnets, current, [2, 3])
    assert plan.remove == [1]
    # Device 1's address is free again and goes to the new device.
    assert plan.assign == {3: (ip_address("10.1.1.2"),)}


def test_plan_unchanged_location_is_empty():
    subnets = [ip_interface("10.1.1.1/24"), ip_interface("fc00::1/112")]
    current = {1: (ip_address("fc00::9"), ip_address("10.1.1.9"))}
    plan = plan_location(subnets, current, [1])
    assert not plan.changed


def test_plan_moves_device_off_new_gateway_address():
    subnets = [ip_interface("10.1.1.2/24")]
    plan = plan_location(subnets, {1: (ip_address("10.1.1.2"),)}, [1])
    assert plan.assign == {1: (ip_address("10.1.1.1"),)}


# -- properties ----------------------------------------------------------------


@st.composite
def v4_subnets(draw: st.DrawFn, min_prefix: int = 24, max_prefix: int = 30) -> IPv4Interface:
    prefix = draw(st.integers(min_prefix, max_prefix))
    base = draw(st.integers(0, 2**32 - 1)) & ~((1 << (32 - prefix)) - 1)
    size = 1 << (32 - prefix)
    gateway = draw(st.integers(base + 1, base + size - 2))
    return ip_interface((IPv4Address(gateway), prefix))


@st.composite
def v6_subnets(draw: st.DrawFn) -> IPv6Interface:
    prefix = draw(st.integers(120, 126))
    base = draw(st.integers(0, 2**128 - 1)) & ~((1 << (128 - prefix)) - 1)
    size = 1 << (128 - prefix)
    gateway = draw(st.integers(base + 1, base + size - 2))
    return ip_interface((IPv6Address(gateway), prefix))


subnets_any = st.one_of(v4_subnets(), v6_subnets())


@st.composite
def subnet_and_used(draw: st.DrawFn) -> tuple[Interface, set[Address]]:
    subnet = draw(subnets_any)
    net = subnet.network
    size = net.num_addresses
    offsets = draw(st.sets(st.integers(0, size - 1), max_size=min(size, 64)))
    used = {net.network_address + o for o in offsets}
    return subnet, used


def _brute_force_free(subnet: Interface, used: set[Address]) -> list[Address]:
    net = subnet.network
    return [
        a
        for a in (net.network_address + i for i in range(net.num_addresses))
        if a not in (net.network_address, net.broadcast_address, subnet.ip) and a not in used
    ]


@settings(max_examples=200, deadline=None)
@given(subnet_and_used(), st.integers(1, 40))
def test_allocation_is_ascending_first_free(data, n):
    subnet, used = data
    expected = _brute_force_free(subnet, used)
    if n > len(expected):
        with pytest.raises(NetworkFull):
            allocate(subnet, used, n)
        return
    got = allocate(subnet, used, n)
    assert got == expected[:n]
    for address in got:
        assert is_host_address(address, subnet)
        assert address not in used
        assert address != subnet.ip


@settings(max_examples=100, deadline=None)
@given(subnet_and_used())
def test_allocating_until_full_never_duplicates(data):
    subnet, used = data
    used = set(used)
    handed_out = []
    while True:
        try:
            (address,) = allocate(subnet, used)
        except NetworkFull:
            break
        assert address not in used
        used.add(address)
        handed_out.append(address)
    assert len(handed_out) == len(set(handed_out))
    assert sorted(handed_out) == handed_out
    assert set(handed_out) == set(_brute_force_free(subnet, data[1]))


@settings(max_examples=150, deadline=None)
@given(
    old=st.lists(v4_subnets(24, 28), min_size=1, max_size=1),
    new=st.lists(subnets_any, min_size=1, max_size=2),
    device_count=st.integers(0, 12),
    keep_fraction=st.floats(0, 1),
)
def test_readdressing_properties(old, new, device_count, keep_fraction):
    assume(not (len(new) == 2 and new[0].network.overlaps(new[1].network)))
    try:
        columns = [allocate(s, set(), device_count) for s in old]
    except NetworkFull:
        assume(False)
    current = {d: tuple(col[d] for col in columns) for d in range(device_count)}
    allowed = [d for d in range(device_count) if d < device_count * keep_fraction] + [100, 101]
    try:
        plan = plan_location(new, current, allowed)
    except NetworkFull:
        room = min(len(_brute_force_free(s, set())) for s in new)
        assert room < len(allowed)
        return
    final = {d: plan.assign.get(d, current.get(d)) for d in allowed}
    assert sorted(plan.remove) == sorted(set(current) - set(allowed))
    every = [ip for ips in final.values() for ip in ips]
    assert len(every) == len(set(every)), "an address was handed out twice"
    for device, ips in final.items():
        assert len(ips) == len(new)
        for subnet in new:
            (mine,) = [ip for ip in ips if ip in subnet.network]
            assert is_host_address(mine, subnet)
        # Every old address that still fits a new subnet is kept.
        for ip in current.get(device, ()):
            if any(is_host_address(ip, s) for s in new):
                assert ip in ips
