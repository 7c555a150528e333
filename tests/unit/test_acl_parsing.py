"""The ACL destination strings: what parses, what is refused, and that errors name the token."""

from __future__ import annotations

from ipaddress import IPv4Interface, ip_address, ip_network

import pytest

from defguard.core.acl.explain import parse_flow
from defguard.core.acl.parsing import (
    ParseError,
    address_bounds,
    format_addresses,
    format_ports,
    loaded_address,
    parse_addresses,
    parse_ports,
    parse_protocols,
    stored_address,
)
from defguard.core.errors import ApiError


def test_addresses_split_into_ips_networks_and_ranges():
    parsed = parse_addresses("10.0.0.1, 10.1.0.0/16, 10.2.0.1-10.2.0.9, fd00::1, fd00:1::/64")
    assert parsed.addresses == (
        ip_address("10.0.0.1"),
        ip_network("10.1.0.0/16"),
        ip_address("fd00::1"),
        ip_network("fd00:1::/64"),
    )
    assert parsed.ranges == ((ip_address("10.2.0.1"), ip_address("10.2.0.9")),)


def test_empty_and_blank_tokens_are_ignored():
    assert parse_addresses("").empty
    assert parse_addresses(None).empty
    assert parse_addresses(" , ").empty
    assert parse_ports("80,,443,") == ((80, 80), (443, 443))


def test_cidr_with_host_bits_is_normalised_to_its_network():
    assert parse_addresses("10.1.2.3/16").addresses == (ip_network("10.1.0.0/16"),)


def test_full_length_prefix_is_a_plain_address():
    assert parse_addresses("10.0.0.1/32, fd00::1/128").addresses == (
        ip_address("10.0.0.1"),
        ip_address("fd00::1"),
    )


def test_ipv6_range():
    assert parse_addresses("fd00::1-fd00::9").ranges == (
        (ip_address("fd00::1"), ip_address("fd00::9")),
    )


def test_ports_and_ranges_are_inclusive():
    assert parse_ports("80, 443, 8000-8080, 0, 65535") == (
        (80, 80),
        (443, 443),
        (8000, 8080),
        (0, 0),
        (65535, 65535),
    )
    assert parse_ports(" 8000 - 8080 ") == ((8000, 8080),)


@pytest.mark.parametrize(
    ("text", "token"),
    [
        ("80, 65536", "65536"),
        ("70000-70001", "70000-70001"),
        ("200-100", "200-100"),
        ("100-100", "100-100"),
        ("1-2-3", "1-2-3"),
        ("http", "http"),
        ("-5", "-5"),
        ("80, 8o", "8o"),
        ("1.5", "1.5"),
    ],
)
def test_bad_ports_name_the_token(text, token):
    with pytest.raises(ParseError) as err:
        parse_ports(text)
    assert err.value.token == token
    assert repr(token) in str(err.value)
    assert str(err.value).startswith("ports: ")


@pytest.mark.parametrize(
    ("text", "token"),
    [
        ("10.0.0.0/255.255.255.0", "10.0.0.0/255.255.255.0"),
        ("10.0.0.1-fd00::1", "10.0.0.1-fd00::1"),
        ("10.0.0.9-10.0.0.1", "10.0.0.9-10.0.0.1"),
        ("10.0.0.1-10.0.0.1", "10.0.0.1-10.0.0.1"),
        ("10.0.0.1-10.0.0.2-10.0.0.3", "10.0.0.1-10.0.0.2-10.0.0.3"),
        ("10.0.0.0/24-10.0.1.0", "10.0.0.0/24-10.0.1.0"),
        ("10.0.0.1, not-an-ip", "not-an-ip"),
        ("garbage", "garbage"),
        ("10.0.0.256", "10.0.0.256"),
        ("10.0.0.0/33", "10.0.0.0/33"),
        ("10.0.0.0/", "10.0.0.0/"),
        ("fe80::1%eth0", "fe80::1%eth0"),
        ("10.1", "10.1"),
    ],
)
def test_bad_addresses_name_the_token(text, token):
    with pytest.raises(ParseError) as err:
        parse_addresses(text)
    assert err.value.token == token
    assert repr(token) in str(err.value)
    assert str(err.value).startswith("addresses: ")


def test_protocols_are_checked_and_deduplicated():
    assert parse_protocols([6, 17, 6, 1]) == (6, 17, 1)
    with pytest.raises(ParseError) as err:
        parse_protocols([6, 99])
    assert err.value.token == "99"


def test_round_trip_to_text():
    parsed = parse_addresses("10.0.0.1, 10.1.0.0/16, 10.2.0.1-10.2.0.9")
    stored = [stored_address(a) for a in parsed.addresses]
    assert stored[1] == IPv4Interface("10.1.0.0/16")
    assert format_addresses(stored, parsed.ranges) == "10.0.0.1, 10.1.0.0/16, 10.2.0.1-10.2.0.9"
    assert format_ports(parse_ports("80, 443, 8000-8080")) == "80, 443, 8000-8080"


def test_loaded_values_become_inclusive_bounds():
    assert address_bounds(loaded_address(IPv4Interface("10.1.0.0/16"))) == (
        ip_address("10.1.0.0"),
        ip_address("10.1.255.255"),
    )
    assert address_bounds(loaded_address("10.0.0.1")) == (
        ip_address("10.0.0.1"),
        ip_address("10.0.0.1"),
    )


# -- explain's flow syntax ------------------------------------------------------------


def test_flow_forms():
    f = parse_flow("10.0.5.5:443/tcp")
    assert (str(f.destination), f.port, f.protocols) == ("10.0.5.5", 443, (6,))
    f = parse_flow("10.0.5.5:53")
    assert (f.port, f.protocols) == (53, (6, 17))
    f = parse_flow("10.0.5.5")
    assert (f.port, f.protocols) == (None, (6, 17, 1))
    f = parse_flow("10.0.5.5/icmp")
    assert (f.port, f.protocols) == (None, (1,))
    f = parse_flow("[fd00::5]:443/UDP")
    assert (str(f.destination), f.port, f.protocols) == ("fd00::5", 443, (17,))
    f = parse_flow("fd00::5")
    assert (str(f.destination), f.port) == ("fd00::5", None)


@pytest.mark.parametrize(
    "text",
    ["10.0.5.5:99999", "10.0.5.5/sctp", "nothing", "10.0.5.5:443/icmp", "[fd00::5", "10.0.5.5:x"],
)
def test_bad_flows_are_400_naming_the_input(text):
    with pytest.raises(ApiError) as err:
        parse_flow(text)
    assert err.value.status == 400
    assert repr(text) in err.value.msg
