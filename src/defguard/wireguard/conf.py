"""The client `.conf` text a user downloads for one device in one location.

The layout is part of the REST contract (clients and the web UI parse it), so
it is reproduced exactly: `\\n` separators, no trailing newline, an empty line
where DNS would go when there is none, no MTU and no PresharedKey.
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import ip_address

from defguard.wireguard.addressing import Address, Interface, Network, format_cidr

PRIVATE_KEY_PLACEHOLDER = "YOUR_PRIVATE_KEY"


def format_endpoint(host: str, port: int) -> str:
    """`host:port`, bracketing a bare IPv6 literal so `wg` can split it."""
    try:
        is_v6 = ip_address(host).version == 6
    except ValueError:
        is_v6 = False
    return f"[{host}]:{port}" if is_v6 else f"{host}:{port}"


def render_client_config(
    *,
    addresses: Sequence[Address],
    server_pubkey: str,
    endpoint: str,
    port: int,
    allowed_ips: Sequence[Network | Interface | Address],
    dns: str | None,
    keepalive_interval: int,
    private_key: str = PRIVATE_KEY_PLACEHOLDER,
) -> str:
    dns_text = (dns or "").strip()
    lines = [
        "[Interface]",
        f"PrivateKey = {private_key}",
        f"Address = {','.join(str(a) for a in addresses)}",
        f"DNS = {dns_text}" if dns_text else "",
        "",
        "[Peer]",
        f"PublicKey = {server_pubkey}",
    ]
    if allowed_ips:
        lines.append(f"AllowedIPs = {','.join(format_cidr(n) for n in allowed_ips)}")
    lines.append(f"Endpoint = {format_endpoint(endpoint, port)}")
    lines.append(f"PersistentKeepalive = {keepalive_interval}")
    return "\n".join(lines)
