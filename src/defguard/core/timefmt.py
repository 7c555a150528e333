"""Timestamps as the REST contract writes them: naive UTC, fraction of 0, 3 or 6 digits."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import PlainSerializer


def format_timestamp(value: datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    base = value.strftime("%Y-%m-%dT%H:%M:%S")
    micro = value.microsecond
    if micro == 0:
        return base
    if micro % 1000 == 0:
        return f"{base}.{micro // 1000:03d}"
    return f"{base}.{micro:06d}"


Timestamp = Annotated[datetime, PlainSerializer(format_timestamp, return_type=str)]
