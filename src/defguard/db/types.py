"""Column helpers for PostgreSQL types the schema relies on."""

from __future__ import annotations

import enum

from sqlalchemy import Enum
from sqlalchemy.dialects.postgresql import ARRAY, INET


def pg_enum(cls: type[enum.Enum], name: str) -> Enum:
    """Map a Python enum onto an existing PostgreSQL enum type by label (never by number)."""
    return Enum(
        cls,
        name=name,
        values_callable=lambda e: [m.value for m in e],
        create_type=False,
        validate_strings=True,
    )


INET_ARRAY = ARRAY(INET)
