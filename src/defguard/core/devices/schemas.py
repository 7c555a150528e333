"""Request and response bodies of `/device` (REST spec §6)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from defguard.core.devices.models import Device, DeviceType
from defguard.core.locations.models import LocationMfaMode, ServiceLocationMode
from defguard.core.timefmt import Timestamp


class DeviceOut(BaseModel):
    id: int
    name: str
    wireguard_pubkey: str
    user_id: int
    created: Timestamp
    device_type: DeviceType
    description: str | None
    configured: bool

    @classmethod
    def of(cls, device: Device) -> DeviceOut:
        return cls(
            id=device.id,
            name=device.name,
            wireguard_pubkey=device.wireguard_pubkey,
            user_id=device.user_id,
            created=device.created,
            device_type=device.device_type,
            description=device.description,
            configured=device.configured,
        )


class AddDevice(BaseModel):
    name: str
    wireguard_pubkey: str = Field(description="base64 x25519 public key (32 bytes)")
    description: str | None = None


class ModifyDevice(BaseModel):
    name: str
    wireguard_pubkey: str
    description: str | None = None


class DeviceConfig(BaseModel):
    """Everything a client needs for one location, including the ready `.conf` text."""

    network_id: int
    network_name: str
    config: str = Field(description="WireGuard config text with a YOUR_PRIVATE_KEY placeholder")
    address: list[str] = Field(description="the device's bare IPs in this location")
    endpoint: str = Field(description="host:port")
    allowed_ips: list[str]
    pubkey: str = Field(description="the location's public key")
    dns: str | None
    keepalive_interval: int
    location_mfa_mode: LocationMfaMode
    service_location_mode: ServiceLocationMode


class AddDeviceResult(BaseModel):
    device: DeviceOut
    configs: list[DeviceConfig]


class DeviceLocationConfig(BaseModel):
    network_id: int
    network_name: str
    config: str
    location_mfa_mode: LocationMfaMode


class DeviceNetworkInfo(BaseModel):
    """One location of a user device, inside `UserInfo.devices[].networks`."""

    network_id: int
    network_name: str
    network_gateway_ip: str = Field(description="the location's endpoint")
    device_wireguard_ips: list[str]
    last_connected_ip: str | None
    last_connected_at: Timestamp | None
    is_active: bool
    location_mfa_mode: LocationMfaMode


class UserDevice(DeviceOut):
    networks: list[DeviceNetworkInfo]


class SplitIpOut(BaseModel):
    network_part: str
    modifiable_part: str
    network_prefix: str
    ip: str


class NetworkDeviceLocation(BaseModel):
    id: int
    name: str


class NetworkDeviceInfo(BaseModel):
    id: int
    name: str
    assigned_ips: list[str]
    description: str | None
    added_by: str = Field(description="username of the admin who added the device")
    added_date: Timestamp
    location: NetworkDeviceLocation
    wireguard_pubkey: str
    configured: bool
    split_ips: list[SplitIpOut]


class AddNetworkDevice(BaseModel):
    name: str
    description: str | None = None
    location_id: int
    assigned_ips: list[str]
    wireguard_pubkey: str


class AddNetworkDeviceResult(BaseModel):
    config: DeviceConfig
    device: NetworkDeviceInfo


class ModifyNetworkDevice(BaseModel):
    name: str
    description: str | None = None
    assigned_ips: list[str]


class IpAvailabilityCheck(BaseModel):
    ips: list[str]
    device_id: int | None = Field(None, description="ignore this device's own addresses")


class IpAvailability(BaseModel):
    available: bool
    valid: bool
