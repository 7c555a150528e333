"""What `connect` and `disconnect` would run, and the configs they write, without touching the machine."""

from __future__ import annotations

import pytest

from defguard.client import tunnel
from defguard.client.api import DeviceConfig

PRIVATE = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
PSK = "+m/UmIakOj+Pp6B4ok6SNwy6i9+yvAIk+un6oJKt1mY="
GATEWAY = "qSl+wevyCjR0oXbm2wgNz2G0XF+Ty/biwZMik2o6POA="


def _config(**changes) -> DeviceConfig:
    values = {
        "network_id": 1,
        "network_name": "HQ",
        "endpoint": "vpn.acme.test:51820",
        "assigned_ip": "10.10.0.7",
        "pubkey": GATEWAY,
        "allowed_ips": "10.10.0.0/24,192.168.10.0/24",
        "dns": "10.10.0.1",
        "mfa_enabled": True,
        "keepalive_interval": 25,
        "location_mfa_mode": 2,
        "service_location_mode": 1,
    }
    values.update(changes)
    return DeviceConfig.model_validate(values)


def test_rendered_config_with_psk():
    text = tunnel.render_config(_config(), PRIVATE, preshared_key=PSK)
    assert text == (
        "[Interface]\n"
        f"PrivateKey = {PRIVATE}\n"
        "Address = 10.10.0.7/32\n"
        "DNS = 10.10.0.1\n"
        "\n"
        "[Peer]\n"
        f"PublicKey = {GATEWAY}\n"
        f"PresharedKey = {PSK}\n"
        "AllowedIPs = 10.10.0.0/24, 192.168.10.0/24\n"
        "Endpoint = vpn.acme.test:51820\n"
        "PersistentKeepalive = 25"
    )


def test_rendered_config_without_mfa_dns_or_networks():
    text = tunnel.render_config(
        _config(dns=None, allowed_ips="", keepalive_interval=0, assigned_ip="10.10.0.7,fd00::7"),
        PRIVATE,
    )
    assert "PresharedKey" not in text
    assert "DNS" not in text
    assert "AllowedIPs" not in text
    assert "PersistentKeepalive" not in text
    assert "Address = 10.10.0.7/32, fd00::7/128" in text


def test_all_traffic_replaces_the_location_networks():
    assert tunnel.tunnel_networks(_config(), all_traffic=True) == ["0.0.0.0/0"]
    dual = _config(assigned_ip="10.10.0.7,fd00::7")
    assert tunnel.tunnel_networks(dual, all_traffic=True) == ["0.0.0.0/0", "::/0"]
    # Host bits are cleared the way `wg` would print them back.
    assert tunnel.tunnel_networks(_config(allowed_ips="10.10.0.9/24"), all_traffic=False) == [
        "10.10.0.0/24"
    ]


def test_stripped_config_keeps_only_what_wg_setconf_accepts():
    full = tunnel.render_config(_config(), PRIVATE, preshared_key=PSK)
    full += "\nMTU = 1380\nPostUp = echo hi # hook"
    stripped = tunnel.strip_config(full.replace("[Peer]", "[Interface]\nTable = off\n[Peer]"))
    lines = stripped.splitlines()
    assert lines[0] == "[Interface]"
    assert f"PrivateKey = {PRIVATE}" in lines
    assert not [
        ln for ln in lines if ln.split(" ")[0] in ("Address", "DNS", "MTU", "PostUp", "Table")
    ]
    assert lines[-5:] == [
        f"PublicKey = {GATEWAY}",
        f"PresharedKey = {PSK}",
        "AllowedIPs = 10.10.0.0/24, 192.168.10.0/24",
        "Endpoint = vpn.acme.test:51820",
        "PersistentKeepalive = 25",
    ]


@pytest.mark.parametrize(
    ("address", "expected"),
    [("10.0.0.7", "10.0.0.7/32"), ("fd00::7", "fd00::7/128"), ("10.0.0.7/24", "10.0.0.7/24")],
)
def test_host_address(address, expected):
    assert tunnel.host_address(address) == expected


def test_host_address_rejects_garbage():
    with pytest.raises(ValueError):
        tunnel.host_address("not-an-ip")


def test_creation_commands():
    assert tunnel.kernel_link_command("dg0") == [
        "ip",
        "link",
        "add",
        "dev",
        "dg0",
        "type",
        "wireguard",
    ]
    assert tunnel.userspace_command("dg0") == ["wireguard-go", "dg0"]
    assert tunnel.setconf_command("dg0") == ["wg", "setconf", "dg0", "/dev/stdin"]


def test_up_commands_for_location_networks():
    assert tunnel.up_commands("dg0", ["10.10.0.7", "fd00::7"], ["10.10.0.0/24", "fd00::/64"]) == [
        ["ip", "-4", "address", "add", "10.10.0.7/32", "dev", "dg0"],
        ["ip", "-6", "address", "add", "fd00::7/128", "dev", "dg0"],
        ["ip", "link", "set", "dev", "dg0", "up"],
        ["ip", "-4", "route", "replace", "10.10.0.0/24", "dev", "dg0"],
        ["ip", "-6", "route", "replace", "fd00::/64", "dev", "dg0"],
    ]


def test_up_and_down_commands_for_all_traffic_use_policy_routing():
    up = tunnel.up_commands("dg0", ["10.10.0.7"], ["0.0.0.0/0"])
    assert ["ip", "-4", "route", "replace", "0.0.0.0/0", "dev", "dg0"] not in up
    assert up[2:] == [
        ["wg", "set", "dg0", "fwmark", "51820"],
        ["ip", "-4", "route", "add", "0.0.0.0/0", "dev", "dg0", "table", "51820"],
        ["ip", "-4", "rule", "add", "not", "fwmark", "51820", "table", "51820"],
        ["ip", "-4", "rule", "add", "table", "main", "suppress_prefixlength", "0"],
    ]
    assert tunnel.down_commands("dg0", ["0.0.0.0/0"]) == [
        ["ip", "-4", "rule", "delete", "table", "51820"],
        ["ip", "-4", "rule", "delete", "table", "main", "suppress_prefixlength", "0"],
        ["ip", "link", "delete", "dev", "dg0"],
    ]
    assert tunnel.down_commands("dg0", ["10.0.0.0/8"]) == [["ip", "link", "delete", "dev", "dg0"]]


def test_wg_dump_parsing():
    dump = (
        f"{PRIVATE}\tPUBLIC\t44500\toff\n"
        f"{GATEWAY}\t{PSK}\t198.18.5.2:51820\t10.10.0.0/24\t1767225800\t92\t180\t25\n"
        "OTHER=\t(none)\t(none)\t(none)\t0\t0\t0\toff\n"
    )
    peers = tunnel.parse_dump(dump)
    assert peers == [
        tunnel.PeerStatus(GATEWAY, "198.18.5.2:51820", 1767225800, 92, 180),
        tunnel.PeerStatus("OTHER=", "", 0, 0, 0),
    ]
    assert tunnel.parse_dump("") == []


def test_error_details_never_carry_keys():
    detail = f"Key is not the correct length or format: `{PRIVATE}'"
    redacted = tunnel.redact(detail)
    assert PRIVATE not in redacted
    assert "Key is not the correct length" in redacted
