"""Field rules for user accounts, kept pure so that the API, bulk imports and tests share them.

Each check raises `FieldError` whose message starts with the field name, which
is what the API returns in `{"msg": ...}` so a client knows what to fix.
"""

from __future__ import annotations

import re
import string

USERNAME_MAX = 63
PASSWORD_MIN = 8
PASSWORD_MAX = 128

# ASCII only: usernames end up in LDAP DNs, WireGuard config comments and shell
# scripts, where look-alike Unicode letters would be a trap.
_USERNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*", re.ASCII)
# The contract's pattern, anchored with fullmatch so that a trailing newline
# cannot slip through the way it would with `$`.
_PHONE_RE = re.compile(
    r"(\+?\d{1,3}\s?)?(\(\d{1,3}\)|\d{1,3})[-\s]?\d{1,4}[-\s]?\d{1,4}?", re.ASCII
)
_PUNCTUATION = frozenset(string.punctuation)


class FieldError(ValueError):
    """A rejected field value; `str()` gives `"<field>: <problem>"`."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def check_username(value: str, field: str = "username") -> None:
    if not 1 <= len(value) <= USERNAME_MAX:
        raise FieldError(field, f"must be 1-{USERNAME_MAX} characters long")
    if not _USERNAME_RE.fullmatch(value):
        raise FieldError(
            field,
            "may contain only ASCII letters, digits, '.', '-' and '_', "
            "and must start with a letter or digit",
        )


def is_valid_username(value: str) -> bool:
    try:
        check_username(value)
    except FieldError:
        return False
    return True


def check_password_strength(value: str, field: str = "password") -> None:
    if not PASSWORD_MIN <= len(value) <= PASSWORD_MAX:
        raise FieldError(field, f"must be {PASSWORD_MIN}-{PASSWORD_MAX} characters long")
    missing = []
    if not any(c in _PUNCTUATION for c in value):
        missing.append("a special character")
    if not any("0" <= c <= "9" for c in value):
        missing.append("a digit")
    if not any("a" <= c <= "z" for c in value):
        missing.append("a lowercase letter")
    if not any("A" <= c <= "Z" for c in value):
        missing.append("an uppercase letter")
    if missing:
        raise FieldError(field, "must contain " + ", ".join(missing))


def check_phone(value: str, field: str = "phone") -> None:
    if not _PHONE_RE.fullmatch(value):
        raise FieldError(field, f"{value!r} is not a valid phone number")


def normalize_phone(value: str | None) -> str | None:
    """An empty or blank phone means "no phone": forms send "" for a cleared field."""
    if value is None or not value.strip():
        return None
    return value
