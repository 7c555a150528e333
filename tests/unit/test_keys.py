"""x25519 keys in WireGuard's base64 form."""

from __future__ import annotations

import base64
import os

from hypothesis import given
from hypothesis import strategies as st

from defguard.wireguard.keys import decode_key, generate_keypair, is_valid_key, public_key


def test_generated_pair_is_consistent_and_unique():
    first, second = generate_keypair(), generate_keypair()
    assert first != second
    assert public_key(first.private) == first.public
    assert is_valid_key(first.private) and is_valid_key(first.public)
    assert len(base64.b64decode(first.public)) == 32


def test_known_vector():
    # RFC 7748 section 6.1, Alice's key pair.
    private = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    public = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    assert public_key(base64.b64encode(private).decode()) == base64.b64encode(public).decode()


def _with_padding_bits(key: str) -> str:
    """The same 32 bytes, but with the two unused low bits of the last symbol set."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    return key[:-2] + alphabet[alphabet.index(key[-2]) | 1] + "="


def test_rejects_malformed_keys():
    good = generate_keypair().public
    assert is_valid_key(good)
    for bad in [
        "",
        "not a key",
        good[:-1],
        good + "=",
        good.rstrip("="),
        " " + good[1:],
        base64.b64encode(os.urandom(31)).decode(),
        base64.b64encode(os.urandom(33)).decode(),
        base64.urlsafe_b64encode(b"\xfb" * 32).decode(),
        _with_padding_bits(good),
        "é" * 44,
    ]:
        assert not is_valid_key(bad), bad
        assert decode_key(bad) is None


@given(st.binary(min_size=32, max_size=32))
def test_every_32_byte_value_round_trips(raw):
    assert decode_key(base64.b64encode(raw).decode()) == raw
