"""The single settings row; it also holds the secret every Core signs with."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import SmallInteger, Text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from defguard.db.base import Base
from defguard.db.types import pg_enum


class SmtpEncryption(enum.Enum):
    NONE = "None"
    STARTTLS = "StartTls"
    IMPLICIT_TLS = "ImplicitTls"


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
    # Identifies this deployment to clients (they key instances by it).
    instance_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), default=uuid.uuid4)
    instance_name: Mapped[str] = mapped_column(Text, default="Defguard")
    smtp_server: Mapped[str | None] = mapped_column(Text)
    smtp_port: Mapped[int | None] = mapped_column()
    smtp_encryption: Mapped[SmtpEncryption] = mapped_column(
        pg_enum(SmtpEncryption, "smtp_encryption"), default=SmtpEncryption.STARTTLS
    )
    smtp_user: Mapped[str | None] = mapped_column(Text)
    smtp_password: Mapped[str | None] = mapped_column(Text)
    smtp_sender: Mapped[str | None] = mapped_column(Text)
    enrollment_vpn_step_optional: Mapped[bool] = mapped_column(default=True)
    enrollment_welcome_message: Mapped[str] = mapped_column(Text, default="")
    enrollment_welcome_email_subject: Mapped[str] = mapped_column(
        Text, default="Welcome to Defguard"
    )
    enrollment_welcome_email: Mapped[str] = mapped_column(Text, default="")
    enrollment_use_welcome_message_as_email: Mapped[bool] = mapped_column(default=True)
    enrollment_only_client_activation: Mapped[bool] = mapped_column(default=False)
    enrollment_admin_device_management: Mapped[bool] = mapped_column(default=False)
    # ClientTrafficPolicy number: 0 none, 1 disable all traffic, 2 force all traffic.
    client_traffic_policy: Mapped[int] = mapped_column(SmallInteger, default=0)

    @property
    def smtp_configured(self) -> bool:
        return bool(self.smtp_server and self.smtp_sender)
