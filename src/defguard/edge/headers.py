"""What the Edge reads from client request headers: address, agent, client version and platform."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re

_HTML = re.compile(r"<\s*/?\s*[a-zA-Z!]")


def _address(text: str) -> str | None:
    text = text.strip().strip('"')
    if text.startswith("["):  # [v6]:port
        text = text[1 : text.find("]")] if "]" in text else text
    elif text.count(":") == 1:  # v4:port
        text = text.split(":")[0]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def client_ip(forwarded_for: str | None, forwarded: str | None, peer: str | None) -> str | None:
    """The right-most forwarded address (the one our reverse proxy appended), else the TCP peer.

    A client can prepend anything to `X-Forwarded-For`; only the last hop's
    entry was written by a proxy we run.
    """
    if forwarded_for:
        last = forwarded_for.split(",")[-1]
        address = _address(last)
        if address:
            return address
    if forwarded:
        last = forwarded.split(",")[-1]
        for pair in last.split(";"):
            key, _, value = pair.strip().partition("=")
            if key.lower() == "for":
                address = _address(value)
                if address:
                    return address
    return _address(peer) if peer else None


def user_agent(value: str | None) -> str:
    """Dropped when it looks like markup: it ends up in e-mails and the activity log."""
    if not value or _HTML.search(value):
        return ""
    return value[:512]


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def platform_fields(header: str | None) -> dict[int, str]:
    """String fields of a base64 protobuf `ClientPlatformInfo`; {} for anything undecodable.

    The message has only string fields, so reading length-delimited fields
    by number is all a decoder has to do; anything else means a malformed
    header, which the spec says to ignore.
    """
    if not header:
        return {}
    try:
        data = base64.b64decode(header, validate=True)
        fields: dict[int, str] = {}
        pos = 0
        while pos < len(data):
            key, pos = _varint(data, pos)
            number, wire = key >> 3, key & 7
            if wire != 2:
                return {}
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                return {}
            fields[number] = data[pos : pos + length].decode()
            pos += length
        return fields
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return {}


_SEMVER = re.compile(r"^\d+\.\d+\.\d+([-+][0-9A-Za-z.+-]*)?$")


def client_version(value: str | None) -> str:
    return value.strip() if value and _SEMVER.match(value.strip()) else ""
