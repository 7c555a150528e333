"""One-time tokens: enrollment, desktop activation and password reset."""

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
