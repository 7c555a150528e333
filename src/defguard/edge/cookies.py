"""Session cookies: a token sealed with AES-GCM under the key every Edge gets from Core.

The token inside must be neither readable nor forgeable by the client, and
any Edge serving the same Core must open a cookie another Edge set; the key
comes from Core (derived from the secret in PostgreSQL), so every Edge and
every restart agree on it. The cookie name is bound into the seal as
associated data, so an enrollment cookie cannot be replayed as a
password-reset cookie.
"""

from __future__ import annotations

import base64
import binascii
import os
from datetime import UTC, datetime
from email.utils import format_datetime

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12


def seal(key: bytes, name: str, token: str) -> str:
    nonce = os.urandom(NONCE_BYTES)
    sealed = AESGCM(key).encrypt(nonce, token.encode(), name.encode())
    return base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")


def unseal(key: bytes, name: str, value: str) -> str | None:
    """The token, or None for anything that was not sealed by us under this name."""
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        if len(raw) <= NONCE_BYTES:
            return None
        plain = AESGCM(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], name.encode())
        return plain.decode()
    except (InvalidTag, binascii.Error, ValueError, UnicodeDecodeError):
        return None


def parse_cookie_header(header: str | None) -> dict[str, str]:
    """Lenient: the desktop client sends a whole `Set-Cookie` string back as `Cookie`.

    Pieces without `=` (`HttpOnly`) and attribute names (`Path`, `Expires`)
    are simply unknown names to the caller, which looks up only its own.
    The first occurrence of a name wins.
    """
    cookies: dict[str, str] = {}
    for piece in (header or "").split(";"):
        name, sep, value = piece.strip().partition("=")
        if sep and name and name not in cookies:
            cookies[name] = value.strip().strip('"')
    return cookies


def _http_date(ts: float) -> str:
    return format_datetime(datetime.fromtimestamp(ts, UTC), usegmt=True)


def set_cookie(name: str, value: str, *, path: str, expires: int, secure: bool) -> str:
    parts = [f"{name}={value}", "HttpOnly", "SameSite=Strict"]
    if secure:
        parts.append("Secure")
    parts += [f"Path={path}", f"Expires={_http_date(expires)}"]
    return "; ".join(parts)


def clear_cookie(name: str, *, path: str, secure: bool) -> str:
    parts = [f"{name}=", "HttpOnly", "SameSite=Strict"]
    if secure:
        parts.append("Secure")
    parts += [f"Path={path}", "Max-Age=0", f"Expires={_http_date(0)}"]
    return "; ".join(parts)
