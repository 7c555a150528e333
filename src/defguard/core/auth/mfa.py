"""Second factors: TOTP secrets and codes, recovery codes, and the MFA flags they imply.

Recovery codes are stored as SHA-256 digests (`sha256$<hex>`), not in plain
text: they are as good as a second factor, and a database dump or backup must
not hand them out. A fast hash is enough because each code carries about 82
bits of randomness, far beyond brute force; Argon2 would only slow down the
MFA step. Rows from 1.x hold plain-text codes; those are still accepted (and
consumed) so upgraded users keep their codes.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import string
import time

import pyotp
from sqlalchemy import Text, any_, func, literal, or_, update
from sqlalchemy.ext.asyncio import AsyncSession

from defguard.core.users.models import MfaMethod, User

TOTP_SECRET_BYTES = 20
TOTP_DIGITS = 6
TOTP_INTERVAL = 30
RECOVERY_CODE_COUNT = 8
RECOVERY_CODE_LENGTH = 16
# Upper case only, so a code read aloud or typed on a phone cannot fail on case.
_RECOVERY_ALPHABET = string.ascii_uppercase + string.digits
_HASH_PREFIX = "sha256$"


def new_totp_secret() -> bytes:
    return secrets.token_bytes(TOTP_SECRET_BYTES)


def totp_secret_base32(secret: bytes) -> str:
    """RFC 4648 base32 without padding, the form authenticator apps import."""
    return base64.b32encode(secret).decode("ascii").rstrip("=")


def verify_totp(secret: bytes | None, code: str, now: float | None = None) -> bool:
    """SHA-1, 6 digits, 30 s; only the current step is accepted."""
    if not secret or len(code) != TOTP_DIGITS or not code.isascii() or not code.isdigit():
        return False
    totp = pyotp.TOTP(totp_secret_base32(secret), digits=TOTP_DIGITS, interval=TOTP_INTERVAL)
    return totp.verify(code, for_time=int(time.time() if now is None else now), valid_window=0)


def email_code(secret: bytes, now: float | None = None, *, interval: int) -> str:
    """The one-time code e-mailed to a user: TOTP over `email_mfa_secret`.

    The step is the settings' `mfa_code_timeout_seconds` rather than 30 s, so
    the code lives long enough to arrive by mail and be typed in.
    """
    totp = pyotp.TOTP(totp_secret_base32(secret), digits=TOTP_DIGITS, interval=interval)
    return totp.at(int(time.time() if now is None else now))


def verify_email_code(
    secret: bytes | None, code: str, now: float | None = None, *, interval: int
) -> bool:
    """The current step's code or the previous step's.

    A code mailed just before its step ends would otherwise expire within
    seconds; accepting one step back gives every code at least `interval`
    seconds, at most two.
    """
    if not secret or len(code) != TOTP_DIGITS or not code.isascii() or not code.isdigit():
        return False
    totp = pyotp.TOTP(totp_secret_base32(secret), digits=TOTP_DIGITS, interval=interval)
    at = int(time.time() if now is None else now)
    return any(totp.verify(code, for_time=t, valid_window=0) for t in (at, at - interval))


def current_totp_step(now: float | None = None) -> int:
    return int((time.time() if now is None else now) // TOTP_INTERVAL)


async def claim_totp_step(db: AsyncSession, user_id: int, step: int) -> bool:
    """Record `step` as used, atomically; False when a code of this step was already accepted.

    A TOTP code is valid for its whole 30 s window, so without this an observed
    code could be replayed by someone else within that window.
    """
    claimed = await db.execute(
        update(User)
        .where(
            User.id == user_id,
            or_(User.totp_last_step.is_(None), User.totp_last_step < step),
        )
        .values(totp_last_step=step)
        .returning(User.id)
    )
    return claimed.first() is not None


def generate_recovery_codes() -> list[str]:
    return [
        "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(RECOVERY_CODE_LENGTH))
        for _ in range(RECOVERY_CODE_COUNT)
    ]


def hash_recovery_code(code: str) -> str:
    normalized = code.strip().upper()
    return _HASH_PREFIX + hashlib.sha256(normalized.encode()).hexdigest()


async def consume_recovery_code(db: AsyncSession, user_id: int, code: str) -> bool:
    """Remove a matching code in one statement, so two concurrent uses cannot both succeed."""
    code = code.strip()
    if not code:
        return False
    digest = hash_recovery_code(code)
    stmt = (
        update(User)
        .where(
            User.id == user_id,
            or_(
                literal(digest, Text) == any_(User.recovery_codes),
                literal(code, Text) == any_(User.recovery_codes),
            ),
        )
        .values(
            recovery_codes=func.array_remove(func.array_remove(User.recovery_codes, digest), code)
        )
        .returning(User.id)
        .execution_options(synchronize_session=False)
    )
    remaining = (await db.execute(stmt)).scalar_one_or_none()
    return remaining is not None


def configured_methods(user: User) -> set[MfaMethod]:
    """The factors the user has actually set up (WebAuthn keys are not stored by this Core)."""
    methods = set()
    if user.totp_enabled:
        methods.add(MfaMethod.ONE_TIME_PASSWORD)
    if user.email_mfa_enabled:
        methods.add(MfaMethod.EMAIL)
    return methods


def _preferred(methods: set[MfaMethod]) -> MfaMethod:
    for method in (MfaMethod.ONE_TIME_PASSWORD, MfaMethod.EMAIL):
        if method in methods:
            return method
    return MfaMethod.NONE


def reconcile_mfa(user: User) -> None:
    """Make `mfa_enabled`, `mfa_method` and recovery codes agree with the configured factors.

    Called at login and after a factor is removed, so a stale flag can never
    lock a user out (MFA required with no factor) or let one in without the
    factor they configured.
    """
    methods = configured_methods(user)
    if methods:
        user.mfa_enabled = True
        if user.mfa_method not in methods:
            user.mfa_method = _preferred(methods)
        return
    if user.mfa_enabled or user.mfa_method is not MfaMethod.NONE or user.recovery_codes:
        clear_mfa(user)


def clear_mfa(user: User) -> None:
    """Forget every factor: secrets, recovery codes and the flags."""
    user.totp_enabled = False
    user.totp_secret = None
    user.email_mfa_enabled = False
    user.email_mfa_secret = None
    user.recovery_codes = []
    user.mfa_method = MfaMethod.NONE
    user.mfa_enabled = False
