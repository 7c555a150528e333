"""Request and response bodies of `/network` (REST spec §5)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from defguard.core.locations.models import Location, LocationMfaMode, ServiceLocationMode
from defguard.core.timefmt import Timestamp
from defguard.wireguard.addressing import format_cidr


class LocationWrite(BaseModel):
    """POST and PUT body; `address` and `allowed_ips` are comma-separated CIDR lists."""

    name: str
    address: str = Field(description="comma-separated CIDRs: the gateway's VPN address(es)")
    endpoint: str = Field(description="public host or IP that clients dial")
    port: int = Field(description="WireGuard listen port, 1-65535")
    allowed_ips: str | None = Field(None, description="comma-separated CIDRs routed to the VPN")
    dns: str | None = None
    mtu: int
    fwmark: int
    allow_all_groups: bool
    allowed_groups: list[str]
    keepalive_interval: int
    peer_disconnect_threshold: int
    acl_enabled: bool
    acl_default_allow: bool
    location_mfa_mode: LocationMfaMode
    service_location_mode: ServiceLocationMode


class LocationOut(BaseModel):
    """A location as POST and PUT return it; the private key is never included."""

    id: int
    name: str
    address: list[str] = Field(description="CIDRs, e.g. 10.1.1.1/24")
    port: int
    pubkey: str
    endpoint: str
    dns: str | None
    mtu: int
    fwmark: int
    allowed_ips: list[str]
    allow_all_groups: bool
    connected_at: Timestamp | None
    acl_enabled: bool
    acl_default_allow: bool
    keepalive_interval: int
    peer_disconnect_threshold: int
    location_mfa_mode: LocationMfaMode
    service_location_mode: ServiceLocationMode

    @classmethod
    def of(cls, location: Location) -> LocationOut:
        return cls(**_location_fields(location))


class LocationInfo(LocationOut):
    """GET form: the location plus its gateways, allowed group names and device presence."""

    gateways: list[dict[str, Any]]
    allowed_groups: list[str]
    has_devices: bool

    @classmethod
    def build(
        cls,
        location: Location,
        *,
        allowed_groups: list[str],
        has_devices: bool,
        gateways: list[dict[str, Any]] | None = None,
    ) -> LocationInfo:
        return cls(
            **_location_fields(location),
            gateways=gateways or [],
            allowed_groups=allowed_groups,
            has_devices=has_devices,
        )


def _location_fields(location: Location) -> dict[str, Any]:
    return {
        "id": location.id,
        "name": location.name,
        "address": [format_cidr(a) for a in location.address],
        "port": location.port,
        "pubkey": location.pubkey,
        "endpoint": location.endpoint,
        "dns": location.dns,
        "mtu": location.mtu,
        "fwmark": location.fwmark,
        "allowed_ips": [format_cidr(a) for a in location.allowed_ips],
        "allow_all_groups": location.allow_all_groups,
        "connected_at": location.connected_at,
        "acl_enabled": location.acl_enabled,
        "acl_default_allow": location.acl_default_allow,
        "keepalive_interval": location.keepalive_interval,
        "peer_disconnect_threshold": location.peer_disconnect_threshold,
        "location_mfa_mode": location.location_mfa_mode,
        "service_location_mode": location.service_location_mode,
    }


class LocationCount(BaseModel):
    count: int


class LocationDisplay(BaseModel):
    id: int
    display: str
