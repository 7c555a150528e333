"""Request and response bodies of `/gateway`, `/network/{id}/gateways` and the §5 stats."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from defguard.core.timefmt import Timestamp


class AdoptGateway(BaseModel):
    name: str
    ip_or_domain: str = Field(description="host name or IP; a leading http(s):// is dropped")
    grpc_port: int = Field(description="the gateway's gRPC port, 1-65535")


class GatewayUpdate(BaseModel):
    """PUT body; unknown fields are rejected (spec §7)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    enabled: bool


class GatewayBase(BaseModel):
    id: int
    location_id: int
    name: str
    address: str
    port: int
    connected_at: Timestamp | None = Field(
        description="start of the current link (or of the last one) to any live Core"
    )
    disconnected_at: Timestamp | None
    certificate_serial: str | None
    certificate_expiry: Timestamp | None
    version: str | None = Field(description="the gateway's version as its last hello stated")
    enabled: bool
    modified_at: Timestamp
    modified_by: str


class GatewayOut(GatewayBase):
    """Details, PUT and adopt responses."""

    core_client_cert_expiry: Timestamp | None = None


class GatewayInfo(GatewayBase):
    """List form: whether any live Core holds a link to the gateway, and its location's name."""

    connected: bool
    location_name: str


class TransferRow(BaseModel):
    collected_at: Timestamp
    upload: int
    download: int


class LocationStats(BaseModel):
    current_active_users: int
    current_active_user_devices: int
    current_active_network_devices: int
    active_users: int
    active_user_devices: int
    active_network_devices: int
    upload: int
    download: int
    transfer_series: list[TransferRow]


class ConnectedDevice(BaseModel):
    device_id: int
    device_name: str
    public_ip: str | None
    vpn_ips: list[str]
    connected_at: Timestamp
    total_upload: int
    total_download: int
    stats: list[TransferRow]


class ConnectedUser(BaseModel):
    user_id: int
    first_name: str
    last_name: str
    full_name: str
    connected_devices_count: int
    public_ip: str | None
    vpn_ips: list[str]
    connected_at: Timestamp
    total_upload: int
    total_download: int
    stats: list[TransferRow]
