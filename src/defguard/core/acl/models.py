"""ACL rules, aliases and destinations on the upgraded 1.x tables (`aclrule`, `aclalias`, ...).

The tables keep their legacy names and the 2.0 columns added by migration
0002, so an upgraded 1.6 database is read as it is. Aliases and Destinations
share `aclalias` and differ only by `kind`.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Dialect,
    ForeignKey,
    Integer,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import ARRAY, INET, INT4RANGE, Range
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from defguard.core.acl.parsing import PortRange, StoredAddress
from defguard.db.base import Base, utcnow
from defguard.db.types import INET_ARRAY, pg_enum


class RuleState(enum.Enum):
    APPLIED = "applied"
    NEW = "new"
    MODIFIED = "modified"
    DELETED = "deleted"
    EXPIRED = "expired"

    @property
    def api_name(self) -> str:
        return self.value.capitalize()


PENDING_RULE_STATES = (RuleState.NEW, RuleState.MODIFIED, RuleState.DELETED)


class AliasState(enum.Enum):
    APPLIED = "applied"
    MODIFIED = "modified"

    @property
    def api_name(self) -> str:
        return self.value.capitalize()


class AliasKind(enum.Enum):
    DESTINATION = "destination"
    COMPONENT = "component"

    @property
    def api_name(self) -> str:
        return self.value.capitalize()


class PortRanges(TypeDecorator[list[PortRange]]):
    """`int4range[]` as inclusive `(start, end)` pairs.

    PostgreSQL keeps integer ranges canonical (`[80,81)` for port 80); the
    application speaks inclusive ranges, so the conversion lives here and
    nowhere else.
    """

    impl = ARRAY(INT4RANGE)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> list[Range[int]] | None:
        if value is None:
            return None
        return [Range(start, end + 1, bounds="[)") for start, end in value]

    def process_result_value(self, value: Any, dialect: Dialect) -> list[PortRange] | None:
        if value is None:
            return None
        result: list[PortRange] = []
        for item in value:
            lower = item.lower if item.bounds[0] == "[" else item.lower + 1
            upper = item.upper - 1 if item.bounds[1] == ")" else item.upper
            result.append((lower, upper))
        return result


_BOUNDED = CheckConstraint("all_ranges_bounded(ports)", name="bounded_ports")


class AclRule(Base):
    __tablename__ = "aclrule"
    __table_args__ = (UniqueConstraint("parent_id", name="unique_parent_id"), _BOUNDED)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    allow_all_users: Mapped[bool] = mapped_column(Boolean)
    deny_all_users: Mapped[bool] = mapped_column(Boolean)
    all_locations: Mapped[bool] = mapped_column(Boolean)
    addresses: Mapped[list[StoredAddress]] = mapped_column(INET_ARRAY, default=list)
    ports: Mapped[list[PortRange]] = mapped_column(PortRanges, default=list)
    protocols: Mapped[list[int]] = mapped_column(ARRAY(Integer), default=list)
    expires: Mapped[datetime | None] = mapped_column()
    enabled: Mapped[bool] = mapped_column(default=True)
    state: Mapped[RuleState] = mapped_column(
        pg_enum(RuleState, "aclrule_state"), default=RuleState.NEW
    )
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("aclrule.id", name="parent_id_fkey"))
    allow_all_network_devices: Mapped[bool] = mapped_column(default=False)
    deny_all_network_devices: Mapped[bool] = mapped_column(default=False)
    any_address: Mapped[bool] = mapped_column(default=False)
    any_port: Mapped[bool] = mapped_column(default=False)
    any_protocol: Mapped[bool] = mapped_column(default=False)
    use_manual_destination_settings: Mapped[bool] = mapped_column(default=True)
    allow_all_groups: Mapped[bool] = mapped_column(default=False)
    deny_all_groups: Mapped[bool] = mapped_column(default=False)
    modified_at: Mapped[datetime] = mapped_column(default=utcnow)
    # No default in the schema: every write names the admin responsible.
    modified_by: Mapped[str] = mapped_column(Text)


class AclAlias(Base):
    __tablename__ = "aclalias"
    __table_args__ = (UniqueConstraint("parent_id", name="alias_unique_parent_id"), _BOUNDED)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    addresses: Mapped[list[StoredAddress]] = mapped_column(INET_ARRAY, default=list)
    ports: Mapped[list[PortRange]] = mapped_column(PortRanges, default=list)
    protocols: Mapped[list[int]] = mapped_column(ARRAY(Integer), default=list)
    state: Mapped[AliasState] = mapped_column(
        pg_enum(AliasState, "aclalias_state"), default=AliasState.APPLIED
    )
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("aclalias.id", name="alias_parent_id_fkey")
    )
    kind: Mapped[AliasKind] = mapped_column(pg_enum(AliasKind, "aclalias_kind"))
    any_address: Mapped[bool] = mapped_column(default=False)
    any_port: Mapped[bool] = mapped_column(default=False)
    any_protocol: Mapped[bool] = mapped_column(default=False)
    modified_at: Mapped[datetime] = mapped_column(default=utcnow)
    modified_by: Mapped[str] = mapped_column(Text)


def _link(name: str, target: str, column: str, unique: str, *, allow: bool) -> Table:
    columns: list[Any] = [
        Column("id", BigInteger, primary_key=True),
        Column("rule_id", BigInteger, ForeignKey("aclrule.id", ondelete="CASCADE"), nullable=False),
        Column(column, BigInteger, ForeignKey(f"{target}.id", ondelete="CASCADE"), nullable=False),
    ]
    keys = ["rule_id", column]
    if allow:
        columns.append(Column("allow", Boolean, nullable=False))
        keys.append("allow")
    return Table(name, Base.metadata, *columns, UniqueConstraint(*keys, name=unique))


acl_rule_network = _link(
    "aclrulenetwork", "wireguard_network", "network_id", "rule_network", allow=False
)
acl_rule_user = _link("aclruleuser", "user", "user_id", "rule_user", allow=True)
acl_rule_group = _link("aclrulegroup", "group", "group_id", "rule_group", allow=True)
acl_rule_device = _link("aclruledevice", "device", "device_id", "rule_device", allow=True)
acl_rule_alias = _link("aclrulealias", "aclalias", "alias_id", "rule_alias", allow=False)


def _range_table(name: str, owner: str, owner_table: str) -> Table:
    return Table(
        name,
        Base.metadata,
        Column("id", BigInteger, primary_key=True),
        Column(
            owner, BigInteger, ForeignKey(f"{owner_table}.id", ondelete="CASCADE"), nullable=False
        ),
        Column("start", INET, nullable=False),
        Column("end", INET, nullable=False),
        CheckConstraint(
            'host("start")::inet = "start" AND host("end")::inet = "end"', name="no_networks"
        ),
        CheckConstraint('"start" < "end"', name="range_order"),
    )


acl_rule_range = _range_table("aclruledestinationrange", "rule_id", "aclrule")
acl_alias_range = _range_table("aclaliasdestinationrange", "alias_id", "aclalias")
