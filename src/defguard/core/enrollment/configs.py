"""What a desktop or mobile client receives about a device and this instance.

`DeviceConfigResponse` answers enrollment's `create_device` / `network_info`
and every `poll`, so the client keeps one picture of its locations whichever
route it came from. The builders are pure apart from
`device_config_response_for`, which only loads the rows.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from defguard.config import CoreSettings
from defguard.core.devices.models import Device
from defguard.core.devices.service import build_config, device_locations
from defguard.core.enrollment.schemas import (
    DeviceConfig,
    DeviceConfigResponse,
    DeviceInfo,
    InstanceInfo,
)
from defguard.core.locations.models import Location, LocationMfaMode, ServiceLocationMode
from defguard.core.settings.models import Settings
from defguard.wireguard.addressing import Address

# Protobuf numbers of the client-visible enums (0 is "unspecified" and never sent).
LOCATION_MFA_MODE = {
    LocationMfaMode.DISABLED: 1,
    LocationMfaMode.INTERNAL: 2,
    LocationMfaMode.EXTERNAL: 3,
}
SERVICE_LOCATION_MODE = {
    ServiceLocationMode.DISABLED: 1,
    ServiceLocationMode.PRELOGON: 2,
    ServiceLocationMode.ALWAYSON: 3,
}
# ClientTrafficPolicy 1: the client may not route all traffic through the VPN.
DISABLE_ALL_TRAFFIC = 1
# Older clients (and non-Windows ones) cannot run service locations and would
# treat one as an ordinary location, so they never see them.
SERVICE_LOCATIONS_SINCE = (1, 6, 0)
SERVICE_LOCATIONS_OS = "windows"

_VERSION_RE = re.compile(r"v?(\d+)\.(\d+)\.(\d+)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?")


def unix_seconds(value: datetime) -> int:
    """Naive UTC (the schema's convention) to Unix seconds."""
    return int(value.replace(tzinfo=UTC).timestamp())


def with_slash(url: str) -> str:
    """The desktop client appends `api/v1/...` to these URLs without a separator."""
    return url if url.endswith("/") else url + "/"


def public_edge_url(row: Settings, core: CoreSettings) -> str:
    """The URL users reach the Edge at, with a trailing `/`.

    The settings row wins over the process setting so that an admin can move
    the public address without restarting every Core.
    """
    return with_slash((row.public_proxy_url or "").strip() or core.enrollment_url)


def instance_info(row: Settings, core: CoreSettings, username: str) -> InstanceInfo:
    """This deployment as the client stores it (keyed by `id`).

    `enterprise_enabled` is always true: this implementation has every
    feature without a licence, and a false value would make clients stop
    polling and hide features that work.
    """
    return {
        "id": str(row.instance_id),
        "name": row.instance_name,
        "url": with_slash(core.url),
        "proxy_url": public_edge_url(row, core),
        "username": username,
        "enterprise_enabled": True,
        "disable_all_traffic": row.client_traffic_policy == DISABLE_ALL_TRAFFIC,
        "openid_display_name": None,
        "client_traffic_policy": row.client_traffic_policy,
    }


def parse_version(text: str | None) -> tuple[int, int, int, bool] | None:
    """`(major, minor, patch, is_release)`; a pre-release sorts below its release."""
    if not text:
        return None
    match = _VERSION_RE.fullmatch(text.strip())
    if match is None:
        return None
    return int(match[1]), int(match[2]), int(match[3]), match[4] is None


def supports_service_locations(client_version: str | None, os_family: str | None) -> bool:
    version = parse_version(client_version)
    if version is None or (os_family or "").strip().lower() != SERVICE_LOCATIONS_OS:
        return False
    return version >= (*SERVICE_LOCATIONS_SINCE, True)


def device_info(device: Device) -> DeviceInfo:
    return {
        "id": device.id,
        "name": device.name,
        "pubkey": device.wireguard_pubkey,
        "user_id": device.user_id,
        "created_at": unix_seconds(device.created),
    }


def device_config(location: Location, ips: Sequence[Address]) -> DeviceConfig:
    """One location of a device; the `config` text is the admin download's (same layout)."""
    base = build_config(location, ips)
    dns = (base.dns or "").strip() or None
    return {
        "network_id": base.network_id,
        "network_name": base.network_name,
        "config": base.config,
        "endpoint": base.endpoint,
        "assigned_ip": ",".join(base.address),
        "pubkey": base.pubkey,
        "allowed_ips": ",".join(base.allowed_ips),
        "dns": dns,
        "mfa_enabled": location.location_mfa_mode is LocationMfaMode.INTERNAL,
        "keepalive_interval": base.keepalive_interval,
        "location_mfa_mode": LOCATION_MFA_MODE[location.location_mfa_mode],
        "service_location_mode": SERVICE_LOCATION_MODE[location.service_location_mode],
    }


def device_configs(
    locations: Sequence[tuple[Location, Sequence[Address]]], *, service_locations: bool
) -> list[DeviceConfig]:
    return [
        device_config(location, ips)
        for location, ips in locations
        if service_locations or location.service_location_mode is ServiceLocationMode.DISABLED
    ]


def device_config_response(
    device: Device | None,
    configs: list[DeviceConfig],
    instance: InstanceInfo,
    token: str | None,
) -> DeviceConfigResponse:
    return {
        "device": device_info(device) if device is not None else None,
        "configs": configs,
        "instance": instance,
        "token": token,
    }


async def device_config_response_for(
    db: AsyncSession,
    *,
    device: Device,
    username: str,
    row: Settings,
    core: CoreSettings,
    client_version: str | None,
    os_family: str | None,
    token: str | None,
) -> DeviceConfigResponse:
    locations = await device_locations(db, device.id)
    configs = device_configs(
        locations, service_locations=supports_service_locations(client_version, os_family)
    )
    return device_config_response(device, configs, instance_info(row, core, username), token)
