"""Registered Edges and what each Core process knows of its link to them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from defguard.db.base import Base, utcnow


class Proxy(Base):
    __tablename__ = "proxy"
    __table_args__ = (UniqueConstraint("address", "port", name="proxy_address_port_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    address: Mapped[str] = mapped_column(Text)
    port: Mapped[int] = mapped_column()
    # The Edge's public URL as it reports it in its hello.
    public_url: Mapped[str | None] = mapped_column(Text)
    certificate_serial: Mapped[str | None] = mapped_column(Text)
    certificate_expiry: Mapped[datetime | None] = mapped_column()
    enabled: Mapped[bool] = mapped_column(default=True)
    modified_at: Mapped[datetime] = mapped_column(default=utcnow)
    modified_by: Mapped[str] = mapped_column(Text)


class ProxyLink(Base):
    """One row per (Edge, Core process); liveness is judged by `last_seen`."""

    __tablename__ = "proxy_link"

    proxy_id: Mapped[int] = mapped_column(
        ForeignKey("proxy.id", ondelete="CASCADE"), primary_key=True
    )
    core_id: Mapped[str] = mapped_column(Text, primary_key=True)
    connected_at: Mapped[datetime] = mapped_column()
    disconnected_at: Mapped[datetime | None] = mapped_column()
    last_seen: Mapped[datetime] = mapped_column()
    version: Mapped[str | None] = mapped_column(Text)
