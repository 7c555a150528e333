"""Client-MFA tokens: signed JWTs that carry a pending session from `start` to `finish`.

The token is the client's only handle on its attempt, and `finish` may run
on another Core than `start`, so it is signed with a key every Core derives
from the settings row's secret (never one held in a Core's memory). It names
the pending session and the device key it was issued for; the session row,
not the token, stays the authority on whether the attempt is still open.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

TOKEN_LIFETIME = timedelta(minutes=5)
_ALGORITHM = "HS256"
_TYPE = "client_mfa"
_BIGINT_MAX = 2**63 - 1


class InvalidToken(Exception):
    """Malformed, forged, expired or of another kind."""


@dataclass(frozen=True)
class MfaClaims:
    session_id: int
    location_id: int
    pubkey: str


@lru_cache(maxsize=4)
def signing_key(secret_key: str) -> bytes:
    """Derived rather than the secret itself, so a token key can never sign anything else."""
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"defguard client mfa token v1"
    ).derive(secret_key.encode())


def issue(secret_key: str, claims: MfaClaims, *, now: datetime | None = None) -> str:
    issued = now or datetime.now(UTC)
    payload = {
        "typ": _TYPE,
        "sub": claims.pubkey,
        "sid": claims.session_id,
        "loc": claims.location_id,
        "iat": issued,
        "exp": issued + TOKEN_LIFETIME,
    }
    return jwt.encode(payload, signing_key(secret_key), algorithm=_ALGORITHM)


def verify(secret_key: str, token: str) -> MfaClaims:
    try:
        payload = jwt.decode(
            token,
            signing_key(secret_key),
            algorithms=[_ALGORITHM],
            options={"require": ["exp", "iat", "sub", "sid", "loc", "typ"]},
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from None
    return _claims(payload)


def peek(token: str) -> MfaClaims:
    """The claims of a token NOT yet verified: only to find the rows (and the
    key) that `verify` then needs; nothing may be decided on them alone."""
    try:
        payload = jwt.decode(
            token,
            options={"verify_signature": False, "require": ["sub", "sid", "loc", "typ"]},
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from None
    return _claims(payload)


def _claims(payload: dict[str, Any]) -> MfaClaims:
    sid, loc, sub = payload["sid"], payload["loc"], payload["sub"]
    if (
        payload["typ"] != _TYPE
        or not isinstance(sid, int)
        or not isinstance(loc, int)
        or not isinstance(sub, str)
        or not 0 < sid <= _BIGINT_MAX
        or not 0 < loc <= _BIGINT_MAX
    ):
        raise InvalidToken("not a client-MFA token")
    return MfaClaims(session_id=sid, location_id=loc, pubkey=sub)
