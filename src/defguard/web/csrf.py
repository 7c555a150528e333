"""Per-session CSRF tokens for the admin console's forms.

The token is an HMAC of the session id under a key every Core derives from the
shared secret in PostgreSQL, so any Core checks a token another Core issued and
nothing is stored. Scripts send it in `X-CSRF-Token`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

HEADER = "x-csrf-token"


def _key(secret_key: str) -> bytes:
    return hashlib.sha256(b"defguard-csrf\x00" + secret_key.encode()).digest()


def token_for(secret_key: str, session_id: str) -> str:
    mac = hmac.new(_key(secret_key), session_id.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def valid(secret_key: str, session_id: str, token: str | None) -> bool:
    if not token:
        return False
    return hmac.compare_digest(token_for(secret_key, session_id), token)
