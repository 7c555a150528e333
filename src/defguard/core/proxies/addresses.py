"""Where an Edge is reached: a bare host plus a gRPC port, from a form field or a URL.

Hosts are stored the way gateway adoption stores them (domains in lower case,
IP addresses in canonical form, IPv6 without brackets), so that the
(address, port) uniqueness catches the same Edge written two ways.
"""

from __future__ import annotations

import re
from ipaddress import ip_address
from urllib.parse import urlsplit

DEFAULT_GRPC_PORT = 50051

_SCHEME = re.compile(r"^https?://", re.IGNORECASE)
# Underscores are allowed (unlike for gateways): container names such as
# `defguard_edge` are common Edge host names in DEFGUARD_PROXY_URL.
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


def parse_host(value: str) -> str:
    """The bare host of `value`, which may start with http:// or https:// but has no port or path."""
    host = _SCHEME.sub("", value.strip())
    if not host:
        raise ValueError("must not be empty")
    if any(c in host for c in "/?#@") or any(c.isspace() for c in host):
        raise ValueError(f"{value!r} must be a bare host without path or query")
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        return str(ip_address(host[1:-1] if bracketed else host))
    except ValueError:
        pass
    if ":" in host or bracketed:
        raise ValueError(f"{value!r} must not include a port")
    domain = host.lower().rstrip(".")
    if len(domain) > 253 or not all(_LABEL.match(label) for label in domain.split(".")):
        raise ValueError(f"{value!r} is not a valid IP address or domain name")
    return domain


def check_port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise ValueError(f"{port} is not between 1 and 65535")
    return port


def parse_grpc_url(url: str) -> tuple[str, int]:
    """(host, port) of an Edge's gRPC URL: `http://edge:50051`, `edge`, `[::1]:50051`...

    The scheme, when present, must be http or https and is otherwise ignored:
    whether a link uses TLS is decided by the Core's CA setting, not by the URL.
    """
    text = url.strip()
    if not text:
        raise ValueError("empty Edge URL")
    if "://" not in text:
        try:
            # A bare IPv6 address, which urlsplit would read as host:port.
            return str(ip_address(text)), DEFAULT_GRPC_PORT
        except ValueError:
            text = f"//{text}"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"invalid Edge URL {url!r}: {exc}") from None
    if parts.scheme and parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"invalid Edge URL {url!r}: the scheme must be http or https")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"invalid Edge URL {url!r}: must not have a path or query")
    if parts.username is not None or not parts.hostname:
        raise ValueError(f"invalid Edge URL {url!r}: needs a host (and no user)")
    try:
        host = parse_host(parts.hostname)
        return host, check_port(port if port is not None else DEFAULT_GRPC_PORT)
    except ValueError as exc:
        raise ValueError(f"invalid Edge URL {url!r}: {exc}") from None
