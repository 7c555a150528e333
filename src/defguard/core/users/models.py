"""The user table (legacy `"user"` name and columns kept for the 1.x upgrade path)."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from sqlalchemy import BigInteger, Text
from sqlalchemy.dialects.postgresql import ARRAY, BYTEA
from sqlalchemy.orm import Mapped, mapped_column, relationship

from defguard.db.base import Base
from defguard.db.types import pg_enum

if TYPE_CHECKING:
    from defguard.core.devices.models import Device
    from defguard.core.groups.models import Group


class MfaMethod(enum.Enum):
    NONE = "none"
    ONE_TIME_PASSWORD = "one_time_password"  # noqa: S105 - an enum label
    WEBAUTHN = "webauthn"
    EMAIL = "email"

    @property
    def api_name(self) -> str:
        return {
            "none": "None",
            "one_time_password": "OneTimePassword",
            "webauthn": "Webauthn",
            "email": "Email",
        }[self.value]

    @classmethod
    def from_api(cls, name: str) -> MfaMethod:
        for member in cls:
            if member.api_name == name:
                return member
        raise ValueError(name)


class User(Base):
    __tablename__ = "user"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(Text, unique=True)
    password_hash: Mapped[str | None] = mapped_column(Text)
    last_name: Mapped[str] = mapped_column(Text)
    first_name: Mapped[str] = mapped_column(Text)
    email: Mapped[str] = mapped_column(Text)
    phone: Mapped[str | None] = mapped_column(Text)
    totp_enabled: Mapped[bool] = mapped_column(default=False)
    totp_secret: Mapped[bytes | None] = mapped_column(BYTEA)
    mfa_method: Mapped[MfaMethod] = mapped_column(
        pg_enum(MfaMethod, "mfa_method"), default=MfaMethod.NONE
    )
    recovery_codes: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list)
    mfa_enabled: Mapped[bool] = mapped_column(default=False)
    email_mfa_enabled: Mapped[bool] = mapped_column(default=False)
    email_mfa_secret: Mapped[bytes | None] = mapped_column(BYTEA)
    is_active: Mapped[bool] = mapped_column(default=True)
    openid_sub: Mapped[str | None] = mapped_column(Text)
    from_ldap: Mapped[bool] = mapped_column(default=False)
    ldap_pass_randomized: Mapped[bool] = mapped_column(default=False)
    ldap_rdn: Mapped[str | None] = mapped_column(Text)
    ldap_user_path: Mapped[str | None] = mapped_column(Text)
    enrollment_pending: Mapped[bool] = mapped_column(default=False)
    ldap_remote_enrollment_completed: Mapped[bool] = mapped_column(default=False)
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)

    groups: Mapped[list[Group]] = relationship(
        secondary="group_user", back_populates="members", order_by="Group.id"
    )
    devices: Mapped[list[Device]] = relationship(
        back_populates="user", order_by="Device.id", passive_deletes=True
    )

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}"

    @property
    def is_admin(self) -> bool:
        """Admin is any *active* user in a group flagged `is_admin`."""
        return self.is_active and any(g.is_admin for g in self.groups)

    @property
    def enrolled(self) -> bool:
        if self.enrollment_pending:
            return False
        return self.password_hash is not None or self.openid_sub is not None or self.from_ldap
