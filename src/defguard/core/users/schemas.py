"""Request and response bodies of the users API (field names are the REST contract)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

MfaMethodName = Literal["None", "OneTimePassword", "Webauthn", "Email"]


class AuthorizedApp(BaseModel):
    oauth2client_id: int
    oauth2client_name: str


class UserInfo(BaseModel):
    id: int
    username: str
    first_name: str
    last_name: str
    name: str = Field(description='`first_name + " " + last_name`')
    email: str
    phone: str | None
    mfa_enabled: bool
    totp_enabled: bool
    email_mfa_enabled: bool
    mfa_method: MfaMethodName
    groups: list[str] = Field(description="group names")
    authorized_apps: list[AuthorizedApp]
    is_active: bool
    enrolled: bool
    is_admin: bool = Field(description="derived from the groups")
    ldap_pass_requires_change: bool
    devices: list[dict[str, Any]] = Field(
        description="user-type devices ordered by id (UserDevice objects)"
    )


class UserInfoUpdate(BaseModel):
    """`PUT /user/{username}`: a complete UserInfo, typically the `user` of a GET.

    Derived fields (`name`, `is_admin`, `enrolled`, ...) must be present but are
    ignored; which of the others apply depends on who edits whom.
    """

    id: int
    username: str
    first_name: str
    last_name: str
    name: str
    email: str
    phone: str | None = None
    mfa_enabled: bool
    totp_enabled: bool
    email_mfa_enabled: bool
    mfa_method: MfaMethodName
    groups: list[str]
    authorized_apps: list[AuthorizedApp]
    is_active: bool
    enrolled: bool
    is_admin: bool
    ldap_pass_requires_change: bool
    devices: list[Any]


class SecurityKey(BaseModel):
    id: int
    name: str


class UserDetails(BaseModel):
    user: UserInfo
    security_keys: list[SecurityKey]
    biometric_enabled_devices: list[int]


class AddUserRequest(BaseModel):
    username: str
    first_name: str
    last_name: str
    email: str
    phone: str | None = None
    password: str | None = None


class UsernameRequest(BaseModel):
    username: str


class ChangePasswordRequest(BaseModel):
    old_password: str
    new_password: str


class NewPasswordRequest(BaseModel):
    new_password: str
