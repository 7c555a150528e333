"""Locations (WireGuard networks) under their legacy table name `wireguard_network`."""

from __future__ import annotations

import enum
from datetime import datetime
from ipaddress import IPv4Interface, IPv6Interface

from sqlalchemy import BigInteger, Column, ForeignKey, Table, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from defguard.core.groups.models import Group
from defguard.db.base import Base
from defguard.db.types import INET_ARRAY, pg_enum


class LocationMfaMode(enum.Enum):
    DISABLED = "disabled"
    INTERNAL = "internal"
    EXTERNAL = "external"


class ServiceLocationMode(enum.Enum):
    DISABLED = "disabled"
    PRELOGON = "prelogon"
    ALWAYSON = "alwayson"


location_allowed_group = Table(
    "wireguard_network_allowed_group",
    Base.metadata,
    Column("network_id", BigInteger, ForeignKey("wireguard_network.id", ondelete="CASCADE")),
    Column("group_id", BigInteger, ForeignKey("group.id", ondelete="CASCADE")),
    UniqueConstraint("network_id", "group_id", name="network_group_unique"),
)

Interface = IPv4Interface | IPv6Interface


class Location(Base):
    __tablename__ = "wireguard_network"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    # The gateway's own VPN addresses; each prefix is a VPN subnet.
    address: Mapped[list[Interface]] = mapped_column(INET_ARRAY)
    port: Mapped[int] = mapped_column()
    pubkey: Mapped[str] = mapped_column(Text)
    prvkey: Mapped[str] = mapped_column(Text)
    endpoint: Mapped[str] = mapped_column(Text)
    dns: Mapped[str | None] = mapped_column(Text)
    allowed_ips: Mapped[list[Interface]] = mapped_column(INET_ARRAY)
    connected_at: Mapped[datetime | None] = mapped_column()
    keepalive_interval: Mapped[int] = mapped_column(default=25)
    peer_disconnect_threshold: Mapped[int] = mapped_column(default=300)
    acl_enabled: Mapped[bool] = mapped_column(default=False)
    acl_default_allow: Mapped[bool] = mapped_column(default=False)
    location_mfa_mode: Mapped[LocationMfaMode] = mapped_column(
        pg_enum(LocationMfaMode, "location_mfa_mode"), default=LocationMfaMode.DISABLED
    )
    service_location_mode: Mapped[ServiceLocationMode] = mapped_column(
        pg_enum(ServiceLocationMode, "service_location_mode"),
        default=ServiceLocationMode.DISABLED,
    )
    mtu: Mapped[int] = mapped_column(default=1420)
    fwmark: Mapped[int] = mapped_column(BigInteger, default=0)
    allow_all_groups: Mapped[bool] = mapped_column(default=False)
    # Grows in the same transaction as every change that affects this location's
    # gateways, so each gateway can apply a change once and detect gaps.
    config_revision: Mapped[int] = mapped_column(BigInteger, default=0)

    allowed_groups: Mapped[list[Group]] = relationship(
        secondary=location_allowed_group, order_by="Group.name"
    )
