"""The single settings row; it also holds the secret every Core signs with."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Text
from sqlalchemy.orm import Mapped, mapped_column

from defguard.db.base import Base


class Settings(Base):
    __tablename__ = "settings"

    id: Mapped[int] = mapped_column(primary_key=True, default=1)
    secret_key: Mapped[str] = mapped_column(Text)
    authentication_period_days: Mapped[int] = mapped_column(default=7)
    enrollment_token_timeout_hours: Mapped[int] = mapped_column(default=24)
    password_reset_token_timeout_hours: Mapped[int] = mapped_column(default=24)
    mfa_code_timeout_seconds: Mapped[int] = mapped_column(default=60)
    public_proxy_url: Mapped[str | None] = mapped_column(Text)
    initialized_at: Mapped[datetime | None] = mapped_column()
