"""Bodies of `/settings` and `/mail/test`.

The settings row's `secret_key` never leaves the server, and the SMTP password
is write-only: a client learns only whether one is set.
"""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from defguard.core.timefmt import Timestamp

SmtpEncryptionName = Literal["None", "StartTls", "ImplicitTls"]


class SettingsOut(BaseModel):
    authentication_period_days: int
    enrollment_token_timeout_hours: int
    password_reset_token_timeout_hours: int
    mfa_code_timeout_seconds: int
    public_proxy_url: str | None
    initialized_at: Timestamp | None
    instance_id: uuid.UUID
    instance_name: str
    smtp_server: str | None
    smtp_port: int | None
    smtp_encryption: SmtpEncryptionName
    smtp_user: str | None
    smtp_password_set: bool = Field(description="whether an SMTP password is stored")
    smtp_sender: str | None
    enrollment_vpn_step_optional: bool
    enrollment_welcome_message: str
    enrollment_welcome_email_subject: str
    enrollment_welcome_email: str
    enrollment_use_welcome_message_as_email: bool
    enrollment_only_client_activation: bool
    enrollment_admin_device_management: bool
    client_traffic_policy: int = Field(
        description="0 none, 1 disable all traffic, 2 force all traffic"
    )


class SettingsPatch(BaseModel):
    """PATCH body: every field optional; only the fields sent change.

    `null` clears the optional SMTP fields and `public_proxy_url`; it is
    rejected for the others. An empty `smtp_password` keeps the stored one.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    authentication_period_days: int | None = None
    enrollment_token_timeout_hours: int | None = None
    password_reset_token_timeout_hours: int | None = None
    mfa_code_timeout_seconds: int | None = None
    public_proxy_url: str | None = None
    instance_name: str | None = None
    smtp_server: str | None = None
    smtp_port: int | None = Field(None, description="1-65535")
    smtp_encryption: SmtpEncryptionName | None = None
    smtp_user: str | None = None
    smtp_password: str | None = Field(
        None, description='write-only; `""` keeps the stored password, `null` removes it'
    )
    smtp_sender: str | None = Field(None, description="an e-mail address")
    enrollment_vpn_step_optional: bool | None = None
    enrollment_welcome_message: str | None = None
    enrollment_welcome_email_subject: str | None = None
    enrollment_welcome_email: str | None = None
    enrollment_use_welcome_message_as_email: bool | None = None
    enrollment_only_client_activation: bool | None = None
    enrollment_admin_device_management: bool | None = None
    client_traffic_policy: int | None = Field(None, description="0, 1 or 2")


class MailTestRequest(BaseModel):
    to: str = Field(description="recipient address")
