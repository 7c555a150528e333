"""Groups and membership; `is_admin` groups make their active members admins."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import BigInteger, Column, ForeignKey, Table, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from defguard.db.base import Base

if TYPE_CHECKING:
    from defguard.core.users.models import User

# Legacy table without a primary key; membership is a pure association.
group_user = Table(
    "group_user",
    Base.metadata,
    Column("group_id", BigInteger, ForeignKey("group.id", ondelete="CASCADE")),
    Column("user_id", BigInteger, ForeignKey("user.id", ondelete="CASCADE")),
    UniqueConstraint("group_id", "user_id", name="group_user_unique"),
)


class Group(Base):
    __tablename__ = "group"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)
    is_admin: Mapped[bool] = mapped_column(default=False)

    members: Mapped[list[User]] = relationship(
        secondary=group_user, back_populates="groups", order_by="User.id"
    )
