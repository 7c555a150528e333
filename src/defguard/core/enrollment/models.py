"""One-time tokens (enrollment, desktop activation, password reset) and polling tokens."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ForeignKey, Text
from sqlalchemy.orm import Mapped, mapped_column

from defguard.db.base import Base, utcnow
from defguard.db.types import pg_enum


class TokenKind(enum.Enum):
    ENROLLMENT = "enrollment"
    DESKTOP = "desktop"
    PASSWORD_RESET = "password_reset"  # noqa: S105 - an enum label


class Token(Base):
    __tablename__ = "token"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    kind: Mapped[TokenKind] = mapped_column(pg_enum(TokenKind, "token_kind"))
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"))
    admin_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    email: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    used_at: Mapped[datetime | None] = mapped_column()
    # Set when the token is first redeemed on the Edge; later calls must fall before the deadline.
    session_started_at: Mapped[datetime | None] = mapped_column()
    session_deadline: Mapped[datetime | None] = mapped_column()


class PollingToken(Base):
    """The one token a device's client polls its configuration with; replaced, never expired."""

    __tablename__ = "polling_token"

    token: Mapped[str] = mapped_column(Text, primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("device.id", ondelete="CASCADE"), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
