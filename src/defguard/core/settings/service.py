"""Reading the settings row; it is created once, by whichever Core starts first."""

from __future__ import annotations

import re
import secrets
from ipaddress import ip_address
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from defguard.core.activity.service import record
from defguard.core.context import RequestContext
from defguard.core.errors import bad_request
from defguard.core.mail.addresses import is_email_address
from defguard.core.settings.models import Settings, SmtpEncryption
from defguard.core.settings.schemas import SettingsOut, SettingsPatch
from defguard.core.users.models import User


async def ensure_settings(db: AsyncSession) -> Settings:
    await db.execute(
        insert(Settings)
        .values(id=1, secret_key=secrets.token_urlsafe(48))
        .on_conflict_do_nothing(index_elements=["id"])
    )
    return (await db.execute(select(Settings).where(Settings.id == 1))).scalar_one()


async def get_settings_row(db: AsyncSession) -> Settings:
    row = await db.get(Settings, 1)
    if row is None:
        row = await ensure_settings(db)
    return row


# -- the settings API ---------------------------------------------------------------

# Fields a client may see but not write, so that sending one back says why it failed.
READ_ONLY = frozenset({"id", "secret_key", "instance_id", "initialized_at", "smtp_password_set"})
# Columns that may be NULL; `null` in a PATCH clears them.
NULLABLE = frozenset(
    {"public_proxy_url", "smtp_server", "smtp_port", "smtp_user", "smtp_password", "smtp_sender"}
)
_POSITIVE = (
    "authentication_period_days",
    "enrollment_token_timeout_hours",
    "password_reset_token_timeout_hours",
    "mfa_code_timeout_seconds",
)
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)", re.ASCII)


def settings_out(row: Settings) -> SettingsOut:
    return SettingsOut(
        authentication_period_days=row.authentication_period_days,
        enrollment_token_timeout_hours=row.enrollment_token_timeout_hours,
        password_reset_token_timeout_hours=row.password_reset_token_timeout_hours,
        mfa_code_timeout_seconds=row.mfa_code_timeout_seconds,
        public_proxy_url=row.public_proxy_url,
        initialized_at=row.initialized_at,
        instance_id=row.instance_id,
        instance_name=row.instance_name,
        smtp_server=row.smtp_server,
        smtp_port=row.smtp_port,
        smtp_encryption=row.smtp_encryption.value,
        smtp_user=row.smtp_user,
        smtp_password_set=bool(row.smtp_password),
        smtp_sender=row.smtp_sender,
        enrollment_vpn_step_optional=row.enrollment_vpn_step_optional,
        enrollment_welcome_message=row.enrollment_welcome_message,
        enrollment_welcome_email_subject=row.enrollment_welcome_email_subject,
        enrollment_welcome_email=row.enrollment_welcome_email,
        enrollment_use_welcome_message_as_email=row.enrollment_use_welcome_message_as_email,
        enrollment_only_client_activation=row.enrollment_only_client_activation,
        enrollment_admin_device_management=row.enrollment_admin_device_management,
        client_traffic_policy=row.client_traffic_policy,
    )


def parse_patch(body: object) -> SettingsPatch:
    """The PATCH body, with every unknown or read-only field named in the error."""
    if not isinstance(body, dict):
        raise bad_request("request body must be a JSON object")
    extra = sorted(set(body) - set(SettingsPatch.model_fields))
    if extra:
        problems = [
            f"{name}: read-only field" if name in READ_ONLY else f"{name}: unknown field"
            for name in extra
        ]
        raise bad_request("; ".join(problems))
    try:
        return SettingsPatch.model_validate(body)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"
            for err in exc.errors()
        ]
        raise bad_request("; ".join(problems)) from None


def _check_host(value: str) -> None:
    try:
        ip_address(value.removeprefix("[").removesuffix("]"))
        return
    except ValueError:
        pass
    labels = value.rstrip(".").split(".")
    if len(value) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise bad_request(
            f"smtp_server: {value!r} must be a host name or IP address, without scheme or port"
        )


def _checked(name: str, value: Any) -> Any:
    """The value to store for one field, or a 400 naming the field."""
    if value is None:
        if name not in NULLABLE:
            raise bad_request(f"{name}: must not be null")
        return None
    if name in _POSITIVE and value < 1:
        raise bad_request(f"{name}: must be at least 1")
    if name == "instance_name":
        value = value.strip()
        if not value:
            raise bad_request("instance_name: must not be empty")
    elif name == "smtp_port" and not 1 <= value <= 65535:
        raise bad_request("smtp_port: must be between 1 and 65535")
    elif name == "smtp_encryption":
        return SmtpEncryption(value)
    elif name == "client_traffic_policy" and value not in (0, 1, 2):
        raise bad_request("client_traffic_policy: must be 0, 1 or 2")
    elif name in ("smtp_server", "smtp_user", "smtp_sender", "public_proxy_url"):
        # An emptied form field means "not set".
        value = value.strip() or None
        if value is None:
            return None
        if name == "smtp_server":
            _check_host(value)
        elif name == "smtp_sender" and not is_email_address(value):
            raise bad_request(f"smtp_sender: {value!r} is not an e-mail address")
        elif name == "public_proxy_url":
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise bad_request("public_proxy_url: must be an http:// or https:// URL")
    return value


def settings_changes(patch: SettingsPatch) -> dict[str, Any]:
    """Column values to write: the fields sent, validated; an empty password is left out."""
    changes: dict[str, Any] = {}
    for name in sorted(patch.model_fields_set):
        value = getattr(patch, name)
        if name == "smtp_password" and value == "":
            continue
        changes[name] = _checked(name, value)
    return changes


async def update_settings(
    db: AsyncSession, patch: SettingsPatch, *, actor: User, ctx: RequestContext
) -> Settings:
    """Apply a partial update and log which fields changed (never their values)."""
    changes = settings_changes(patch)
    row = await get_settings_row(db)
    await db.refresh(row, with_for_update=True)
    for name, value in changes.items():
        setattr(row, name, value)
    if changes:
        record(
            db, ctx, actor, "settings_updated_partial", f"Updated settings: {', '.join(changes)}"
        )
    await db.flush()
    return row
