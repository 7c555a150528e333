"""The client `.conf` text, byte for byte as the REST contract shows it."""

from __future__ import annotations

from ipaddress import ip_address, ip_network
from typing import Any

from defguard.wireguard.conf import format_endpoint, render_client_config

SERVER_KEY = "G9YFPqYAJ1SKJi6ujjfQNuZ9PJ6ajxWErspDogqJaiQ="

SPEC_EXAMPLE = """[Interface]
PrivateKey = YOUR_PRIVATE_KEY
Address = 10.10.0.2
DNS = 10.10.0.53

[Peer]
PublicKey = G9YFPqYAJ1SKJi6ujjfQNuZ9PJ6ajxWErspDogqJaiQ=
AllowedIPs = 10.10.0.0/24,192.168.50.0/24
Endpoint = vpn.example.com:51820
PersistentKeepalive = 25"""


def render(**overrides: Any) -> str:
    args = {
        "addresses": [ip_address("10.10.0.2")],
        "server_pubkey": SERVER_KEY,
        "endpoint": "vpn.example.com",
        "port": 51820,
        "allowed_ips": [ip_network("10.10.0.0/24"), ip_network("192.168.50.0/24")],
        "dns": "10.10.0.53",
        "keepalive_interval": 25,
    }
    args.update(overrides)
    return render_client_config(**args)


def test_spec_example():
    assert render() == SPEC_EXAMPLE
    assert not render().endswith("\n")


def test_without_dns_the_line_stays_empty():
    expected = SPEC_EXAMPLE.replace("DNS = 10.10.0.53", "")
    assert render(dns=None) == expected
    assert render(dns="") == expected
    assert "Address = 10.10.0.2\n\n\n[Peer]" in expected


def test_without_allowed_ips_the_line_is_omitted():
    text = render(allowed_ips=[])
    assert "AllowedIPs" not in text
    assert "PublicKey = G9YFPqYAJ1SKJi6ujjfQNuZ9PJ6ajxWErspDogqJaiQ=\nEndpoint" in text


def test_dual_stack_and_host_routes():
    text = render(
        addresses=[ip_address("10.1.1.2"), ip_address("fc00::2")],
        allowed_ips=[ip_address("10.0.0.5"), ip_network("::/0")],
    )
    assert "\nAddress = 10.1.1.2,fc00::2\n" in text
    assert "\nAllowedIPs = 10.0.0.5/32,::/0\n" in text


def test_private_key_can_be_filled_in():
    assert "PrivateKey = abc=\n" in render(private_key="abc=")


def test_endpoint_formatting():
    assert format_endpoint("vpn.example.com", 51820) == "vpn.example.com:51820"
    assert format_endpoint("203.0.113.5", 1) == "203.0.113.5:1"
    assert format_endpoint("2001:db8::1", 51820) == "[2001:db8::1]:51820"
