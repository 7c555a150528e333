"""Request and response bodies of `/acl/rule`, `/acl/alias`, `/acl/destination` and the preview."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from defguard.core.timefmt import Timestamp

RuleStateName = Literal["New", "Modified", "Deleted", "Applied", "Expired"]
AliasStateName = Literal["Applied", "Modified"]
AliasKindName = Literal["Destination", "Component"]

_ADDRESSES = 'IPs, CIDRs and `a-b` ranges, comma-separated, e.g. "10.0.0.1, 10.1.0.0/16"'
_PORTS = 'single ports and `a-b` ranges, comma-separated, e.g. "80, 443, 8000-8080"'
_PROTOCOLS = "IP protocol numbers: 6 TCP, 17 UDP, 1 ICMP"


class EditRule(BaseModel):
    name: str
    all_locations: bool = False
    locations: list[int] = Field(default_factory=list, description="location ids")
    expires: datetime | None = Field(None, description="ISO time; naive means UTC")
    enabled: bool = True
    allow_all_users: bool = False
    deny_all_users: bool = False
    allow_all_groups: bool = False
    deny_all_groups: bool = False
    allow_all_network_devices: bool = False
    deny_all_network_devices: bool = False
    allowed_users: list[int] = Field(default_factory=list)
    denied_users: list[int] = Field(default_factory=list)
    allowed_groups: list[int] = Field(default_factory=list)
    denied_groups: list[int] = Field(default_factory=list)
    allowed_network_devices: list[int] = Field(default_factory=list)
    denied_network_devices: list[int] = Field(default_factory=list)
    use_manual_destination_settings: bool = True
    addresses: str = Field("", description=_ADDRESSES)
    ports: str = Field("", description=_PORTS)
    protocols: list[int] = Field(default_factory=list, description=_PROTOCOLS)
    any_address: bool = False
    any_port: bool = False
    any_protocol: bool = False
    aliases: list[int] = Field(default_factory=list, description="ids of applied Aliases")
    destinations: list[int] = Field(default_factory=list, description="ids of applied Destinations")

    @field_validator("expires")
    @classmethod
    def _naive_utc(cls, value: datetime | None) -> datetime | None:
        """The schema stores naive UTC; an aware time is converted, not reinterpreted."""
        if value is not None and value.tzinfo is not None:
            return value.astimezone(UTC).replace(tzinfo=None)
        return value


class Rule(EditRule):
    id: int
    parent_id: int | None
    state: RuleStateName
    expires: Timestamp | None = None  # type: ignore[assignment]


class EditAlias(BaseModel):
    name: str
    addresses: str = Field("", description=_ADDRESSES)
    ports: str = Field("", description=_PORTS)
    protocols: list[int] = Field(default_factory=list, description=_PROTOCOLS)


class EditDestination(EditAlias):
    any_address: bool = False
    any_port: bool = False
    any_protocol: bool = False


class Alias(EditAlias):
    id: int
    parent_id: int | None
    kind: AliasKindName
    state: AliasStateName
    rules: list[int] = Field(description="ids of the rules that link this alias")


class Destination(EditDestination):
    id: int
    parent_id: int | None
    kind: AliasKindName
    state: AliasStateName
    rules: list[int] = Field(description="ids of the rules that link this destination")


class RuleCount(BaseModel):
    applied: int
    pending: int = Field(description="New, Modified and Deleted rules")


class AliasCount(BaseModel):
    applied: int
    pending: int = Field(description="Modified (not yet applied) versions")


class ApplyRules(BaseModel):
    rules: list[int]


class ApplyAliases(BaseModel):
    aliases: list[int]


class ApplyDestinations(BaseModel):
    destinations: list[int]


# -- firewall preview and explain -----------------------------------------------


class FirewallRuleOut(BaseModel):
    id: int
    verdict: Literal["allow", "deny"]
    ip_version: Literal[4, 6]
    sources: list[str] = Field(description="empty means any")
    destinations: list[str] = Field(description="empty means any")
    ports: list[int | str] = Field(description='80 or "8000-8080"; empty means any')
    protocols: list[int] = Field(description="empty means any")
    comment: str


class FirewallOut(BaseModel):
    default_policy: Literal["allow", "deny"]
    rules: list[FirewallRuleOut]


class ExplainResult(BaseModel):
    device_id: int
    device: str
    source: str = Field(description="the device's address in the location")
    protocol: int
    verdict: Literal["allow", "deny"]
    rule_id: int | None = Field(description="the deciding firewall rule; null for the default")
    decided_by: str = Field(
        description='the deciding rule\'s comment, "default policy" or "ACL disabled"'
    )


class ExplainOut(BaseModel):
    location_id: int
    location: str
    user: str
    destination: str
    port: int | None
    protocols: list[int] = Field(description="the given protocol, or those a flow may use")
    acl_enabled: bool
    default_policy: Literal["allow", "deny"] | None
    results: list[ExplainResult] = Field(
        description="one per address of the user's devices (of the destination's family) "
        "and protocol"
    )
