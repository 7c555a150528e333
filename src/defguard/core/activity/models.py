"""The activity log: who did what, when and from where."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Text
from sqlalchemy.dialects.postgresql import INET
from sqlalchemy.orm import Mapped, mapped_column

from defguard.db.base import Base, utcnow


class ActivityLogEvent(Base):
    __tablename__ = "activity_log_event"

    id: Mapped[int] = mapped_column(primary_key=True)
    timestamp: Mapped[datetime] = mapped_column(default=utcnow)
    user_id: Mapped[int] = mapped_column()
    username: Mapped[str] = mapped_column(Text)
    location: Mapped[str | None] = mapped_column(Text)
    ip: Mapped[str | None] = mapped_column(INET)
    event: Mapped[str] = mapped_column(Text)
    module: Mapped[str] = mapped_column(Text)
    device: Mapped[str] = mapped_column(Text, default="")
    description: Mapped[str | None] = mapped_column(Text)
