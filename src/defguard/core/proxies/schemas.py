"""Request and response bodies of `/proxy` (spec §7, "Proxy")."""

from __future__ import annotations

from pydantic import BaseModel, Field

from defguard.core.timefmt import Timestamp


class ProxyCreate(BaseModel):
    name: str
    address: str = Field(description="host name or IP; a leading http(s):// is dropped")
    port: int = Field(description="the Edge's gRPC port, 1-65535")


class ProxyUpdate(BaseModel):
    name: str
    enabled: bool


class ProxyBase(BaseModel):
    id: int
    name: str
    address: str
    port: int
    connected_at: Timestamp | None = Field(
        description="start of the current link (or of the last one) to any live Core"
    )
    disconnected_at: Timestamp | None
    version: str | None = Field(description="the Edge's version as its last hello stated")
    enabled: bool
    certificate_serial: str | None
    certificate_expiry: Timestamp | None
    modified_at: Timestamp
    modified_by: str


class ProxyOut(ProxyBase):
    """Details, PUT and POST responses."""

    core_client_cert_expiry: Timestamp | None = None


class ProxyInfo(ProxyBase):
    """List form: whether any live Core holds a link to the Edge."""

    connected: bool
