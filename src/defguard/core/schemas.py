"""Bodies shared by every feature's API: the empty success body and the error body."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class Empty(BaseModel):
    """The `{}` success body."""

    model_config = ConfigDict(extra="forbid")


class ErrorBody(BaseModel):
    """Every error: `{"msg": ...}` naming the field or the object, plus `code` for a full network."""

    msg: str
    code: str | None = None


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses an endpoint can answer with."""
    return {status: {"model": ErrorBody} for status in statuses}
