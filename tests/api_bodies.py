"""Request bodies for Core's REST API that many tests send, each field set once."""

from __future__ import annotations

from typing import Any


def location_body(**overrides: Any) -> dict[str, Any]:
    """A complete `POST /network` body; `overrides` replace its fields."""
    body: dict[str, Any] = {
        "name": "HQ",
        "address": "10.10.0.1/24",
        "endpoint": "vpn.example.com",
        "port": 51820,
        "allowed_ips": "10.10.0.0/24,192.168.50.0/24",
        "dns": "10.10.0.53",
        "mtu": 1420,
        "fwmark": 0,
        "allow_all_groups": True,
        "allowed_groups": [],
        "keepalive_interval": 25,
        "peer_disconnect_threshold": 300,
        "acl_enabled": False,
        "acl_default_allow": False,
        "location_mfa_mode": "disabled",
        "service_location_mode": "disabled",
    }
    body.update(overrides)
    return body
