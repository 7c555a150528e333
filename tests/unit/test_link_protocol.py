"""What Core accepts from a gateway's hello, and how it dials one."""

from __future__ import annotations

import pytest

from defguard.core.gateways.service import normalize_host
from defguard.core.gateways.stats import endpoint_host
from defguard.core.links.protocol import compatible, grpc_target
from defguard.core.links.state import host_route


@pytest.mark.parametrize(
    ("ours", "theirs", "ok"),
    [
        ("2.0.1", "2.0.0", True),
        ("2.0.1", "2.7.3", True),
        ("2.0.1", "2.1.0-rc1+build5", True),
        ("2.0.1", "1.6.0", False),
        ("2.0.1", "3.0.0", False),
        ("0.4.0", "0.4.2", True),
        ("0.4.0", "0.5.0", False),
        ("2.0.1", "", False),
        ("2.0.1", "banana", False),
    ],
)
def test_version_compatibility(ours: str, theirs: str, ok: bool) -> None:
    assert compatible(ours, theirs) is ok


def test_grpc_target_brackets_ipv6() -> None:
    assert grpc_target("gw.example.com", 50066) == "gw.example.com:50066"
    assert grpc_target("10.0.0.1", 1) == "10.0.0.1:1"
    assert grpc_target("fd00::1", 50066) == "[fd00::1]:50066"


def test_host_routes_and_endpoints() -> None:
    assert host_route("10.1.1.2") == "10.1.1.2/32"
    assert host_route("fd00::2/128") == "fd00::2/128"
    assert endpoint_host("203.0.113.9:51820") == "203.0.113.9"
    assert endpoint_host("[2001:db8::1]:51820") == "2001:db8::1"
    assert endpoint_host("") is None


@pytest.mark.parametrize(
    ("value", "host"),
    [
        ("gw.example.com", "gw.example.com"),
        ("HTTPS://GW.Example.COM", "gw.example.com"),
        ("http://10.0.0.1", "10.0.0.1"),
        ("[fd00::1]", "fd00::1"),
        ("fd00::1", "fd00::1"),
        (" gw ", "gw"),
    ],
)
def test_gateway_hosts(value: str, host: str) -> None:
    assert normalize_host(value) == host
