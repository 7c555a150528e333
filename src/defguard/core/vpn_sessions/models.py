"""A client-MFA attempt, and the VPN session it becomes once MFA succeeds."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, SmallInteger, Text
from sqlalchemy.orm import Mapped, mapped_column

from defguard.db.base import Base, utcnow


class VpnClientSession(Base):
    """Pending while `authorized_at` is null; active until `ended_at` is set.

    At most one active session per device and location (a partial unique
    index); the active session's `preshared_key` is what the gateways give
    the device's peer.
    """

    __tablename__ = "vpn_client_session"

    id: Mapped[int] = mapped_column(primary_key=True)
    location_id: Mapped[int] = mapped_column(ForeignKey("wireguard_network.id", ondelete="CASCADE"))
    device_id: Mapped[int] = mapped_column(ForeignKey("device.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"))
    # The client's MfaMethod number (0 TOTP, 1 e-mail, ...).
    method: Mapped[int] = mapped_column(SmallInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    preshared_key: Mapped[str | None] = mapped_column(Text)
    authorized_at: Mapped[datetime | None] = mapped_column()
    connected_at: Mapped[datetime | None] = mapped_column()
    last_handshake: Mapped[datetime | None] = mapped_column()
    ended_at: Mapped[datetime | None] = mapped_column()
    end_reason: Mapped[str | None] = mapped_column(Text)
