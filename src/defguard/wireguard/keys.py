"""WireGuard (x25519) keys in the base64 form `wg` prints and reads.

Keys must be canonical standard base64 of exactly 32 bytes: `wg` and every
WireGuard implementation reject anything else, so accepting a sloppier form
here would only move the failure to a gateway or a client.
"""

from __future__ import annotations

import base64
import binascii
from typing import NamedTuple

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

KEY_LEN = 32


class KeyPair(NamedTuple):
    private: str
    public: str


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def decode_key(key: str) -> bytes | None:
    """The 32 raw bytes of a key, or None when `key` is not a canonical encoding."""
    if not isinstance(key, str) or len(key) != 44 or not key.isascii():
        return None
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        return None
    # A non-zero padding remainder decodes fine in Python but not in `wg`.
    if len(raw) != KEY_LEN or _b64(raw) != key:
        return None
    return raw


def is_valid_key(key: str) -> bool:
    return decode_key(key) is not None


def generate_keypair() -> KeyPair:
    private = X25519PrivateKey.generate()
    raw_private = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    raw_public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return KeyPair(_b64(raw_private), _b64(raw_public))


def public_key(private_key: str) -> str:
    """The public half of a base64 private key (what `wg pubkey` prints)."""
    raw = decode_key(private_key)
    if raw is None:
        raise ValueError("not a valid WireGuard private key")
    public = X25519PrivateKey.from_private_bytes(raw).public_key()
    return _b64(public.public_bytes(Encoding.Raw, PublicFormat.Raw))
