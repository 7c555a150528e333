"""Devices and their per-location addresses (`wireguard_network_device`)."""

from __future__ import annotations

import enum
from datetime import datetime
from ipaddress import IPv4Address, IPv6Address
from typing import TYPE_CHECKING

from sqlalchemy import ForeignKey, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from defguard.db.base import Base, utcnow
from defguard.db.types import INET_ARRAY, pg_enum

if TYPE_CHECKING:
    from defguard.core.locations.models import Location
    from defguard.core.users.models import User


class DeviceType(enum.Enum):
    USER = "user"
    NETWORK = "network"


class Device(Base):
    __tablename__ = "device"
    __table_args__ = (UniqueConstraint("name", "user_id", "device_type", name="name_user"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    wireguard_pubkey: Mapped[str] = mapped_column(Text)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"))
    created: Mapped[datetime] = mapped_column(default=utcnow)
    device_type: Mapped[DeviceType] = mapped_column(
        pg_enum(DeviceType, "device_type"), default=DeviceType.USER
    )
    description: Mapped[str | None] = mapped_column(Text)
    configured: Mapped[bool] = mapped_column(default=True)

    user: Mapped[User] = relationship(back_populates="devices")


class DeviceLocation(Base):
    """A device's addresses in one location: one address per location subnet."""

    __tablename__ = "wireguard_network_device"
    __table_args__ = (UniqueConstraint("device_id", "wireguard_network_id", name="device_network"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("device.id", ondelete="CASCADE"))
    wireguard_network_id: Mapped[int] = mapped_column(
        ForeignKey("wireguard_network.id", ondelete="CASCADE")
    )
    wireguard_ips: Mapped[list[IPv4Address | IPv6Address]] = mapped_column(INET_ARRAY, default=list)

    device: Mapped[Device] = relationship()
    location: Mapped[Location] = relationship()
