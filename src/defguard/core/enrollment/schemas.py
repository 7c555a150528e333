"""Bodies of the enrollment admin API and the public (Edge) answers.

The Edge answers are TypedDicts rather than models: they are built as plain
JSON-ready dicts, and the type lists every key so none can be left out (the
desktop and mobile clients deserialise them with strict generated types that
reject a missing key).
"""

from __future__ import annotations

from typing import TypedDict

from pydantic import BaseModel

# --- admin REST API ----------------------------------------------------------------


class StartEnrollmentRequest(BaseModel):
    send_enrollment_notification: bool = False
    email: str | None = None
    token_expiration_time: str | None = None


class EnrollmentTokenResponse(BaseModel):
    enrollment_token: str
    enrollment_url: str


# --- public API (edge-client-api.md §2, §3) ------------------------------------------


class DeviceInfo(TypedDict):
    id: int
    name: str
    pubkey: str
    user_id: int
    created_at: int


class DeviceConfig(TypedDict):
    network_id: int
    network_name: str
    config: str
    endpoint: str
    assigned_ip: str
    pubkey: str
    allowed_ips: str
    dns: str | None
    mfa_enabled: bool
    keepalive_interval: int
    location_mfa_mode: int | None
    service_location_mode: int | None


class InstanceInfo(TypedDict):
    id: str
    name: str
    url: str
    proxy_url: str
    username: str
    enterprise_enabled: bool
    disable_all_traffic: bool
    openid_display_name: str | None
    client_traffic_policy: int | None


class DeviceConfigResponse(TypedDict):
    device: DeviceInfo | None
    configs: list[DeviceConfig]
    instance: InstanceInfo
    token: str | None


class AdminInfo(TypedDict):
    name: str
    phone_number: str | None
    email: str


class InitialUserInfo(TypedDict):
    first_name: str
    last_name: str
    login: str
    email: str
    phone_number: str | None
    is_active: bool
    device_names: list[str]
    enrolled: bool
    is_admin: bool


class EnrollmentSettings(TypedDict):
    vpn_setup_optional: bool
    only_client_activation: bool
    admin_device_management: bool
    smtp_configured: bool
    mfa_required: bool


class EnrollmentStartResponse(TypedDict):
    admin: AdminInfo | None
    user: InitialUserInfo
    deadline_timestamp: int
    final_page_content: str
    instance: InstanceInfo
    settings: EnrollmentSettings


class PasswordResetStartResponse(TypedDict):
    deadline_timestamp: int


class MfaStartResponse(TypedDict):
    totp_secret: str | None


class MfaFinishResponse(TypedDict):
    recovery_codes: list[str]


class PollResponse(TypedDict):
    device_config: DeviceConfigResponse
