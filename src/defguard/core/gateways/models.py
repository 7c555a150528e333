"""Gateways, each Core's link to them, the peer change log and peer statistics."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from defguard.db.base import Base, utcnow


class Gateway(Base):
    __tablename__ = "gateway"
    __table_args__ = (UniqueConstraint("address", "port", name="gateway_address_port_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    location_id: Mapped[int] = mapped_column(ForeignKey("wireguard_network.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(Text)
    address: Mapped[str] = mapped_column(Text)
    port: Mapped[int] = mapped_column()
    certificate_serial: Mapped[str | None] = mapped_column(Text)
    certificate_expiry: Mapped[datetime | None] = mapped_column()
    enabled: Mapped[bool] = mapped_column(default=True)
    modified_at: Mapped[datetime] = mapped_column(default=utcnow)
    modified_by: Mapped[str] = mapped_column(Text)


class GatewayLink(Base):
    """What one Core process knows of its link to one gateway.

    Rows of a Core that died stay behind with an old `last_seen`; readers
    judge liveness by that heartbeat, so nothing has to clean up after it.
    """

    __tablename__ = "gateway_link"

    gateway_id: Mapped[int] = mapped_column(
        ForeignKey("gateway.id", ondelete="CASCADE"), primary_key=True
    )
    core_id: Mapped[str] = mapped_column(Text, primary_key=True)
    connected_at: Mapped[datetime] = mapped_column()
    disconnected_at: Mapped[datetime | None] = mapped_column()
    last_seen: Mapped[datetime] = mapped_column()
    version: Mapped[str | None] = mapped_column(Text)
    applied_revision: Mapped[int | None] = mapped_column(BigInteger)


class PeerChange(Base):
    """ "The peer with this key in this location may have changed" (written by triggers)."""

    __tablename__ = "peer_change"

    id: Mapped[int] = mapped_column(primary_key=True)
    location_id: Mapped[int] = mapped_column(BigInteger)
    public_key: Mapped[str] = mapped_column(Text)
    revision: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PeerStats(Base):
    """One peer in one stats batch of one gateway; counters are cumulative."""

    __tablename__ = "peer_stats"
    __table_args__ = (UniqueConstraint("batch_id", "public_key", name="peer_stats_batch_peer_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    batch_id: Mapped[str] = mapped_column(Text)
    gateway_id: Mapped[int] = mapped_column(BigInteger)
    location_id: Mapped[int] = mapped_column(ForeignKey("wireguard_network.id", ondelete="CASCADE"))
    device_id: Mapped[int | None] = mapped_column(ForeignKey("device.id", ondelete="CASCADE"))
    public_key: Mapped[str] = mapped_column(Text)
    collected_at: Mapped[datetime] = mapped_column()
    endpoint: Mapped[str | None] = mapped_column(Text)
    upload: Mapped[int] = mapped_column(BigInteger)
    download: Mapped[int] = mapped_column(BigInteger)
    latest_handshake: Mapped[datetime | None] = mapped_column()
    allowed_ips: Mapped[str | None] = mapped_column(Text)
