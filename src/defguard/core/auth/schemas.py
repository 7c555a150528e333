"""Request and response bodies of the auth API (field names are the REST contract)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from defguard.core.users.schemas import MfaMethodName, UserInfo


class LoginRequest(BaseModel):
    username: str = Field(description="username, or the e-mail address (case-insensitive)")
    password: str


class LoginResponse(BaseModel):
    user: UserInfo
    url: str | None = Field(description="OIDC redirect saved by an earlier authorize visit")


class MfaRequired(BaseModel):
    """201 from `POST /auth`: the password was right, a second factor is needed."""

    mfa_method: MfaMethodName
    totp_available: bool
    webauthn_available: bool
    email_available: bool


class SessionInfo(BaseModel):
    authorized: bool
    is_admin: bool
    active_wizard: Literal["none", "initial", "auto_adoption", "migration"] | None
    username: str | None


class TotpSecret(BaseModel):
    secret: str = Field(description="RFC 4648 base32 without padding (32 characters)")


class CodeRequest(BaseModel):
    code: str


class RecoveryCodes(BaseModel):
    codes: list[str] | None = Field(
        description="8 recovery codes when the first factor was enabled, else null"
    )
