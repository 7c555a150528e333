"""`/api/v1/poll`: a device's current configuration, answered in one round trip.

Polls are most of the Edges' traffic, so the handler reads the device, its
owner, the settings and every location the device is in with one prepared
statement over `Database.direct`, and feeds the rows to the same pure
builders (`configs`) that answer enrollment: the client sees one picture of
its locations whichever route it came from. A poll changes nothing, so a
retry on another Core simply runs it again.
"""

from __future__ import annotations

from typing import Any

from defguard.core.devices.models import Device
from defguard.core.edge_requests.dispatch import DirectCall, EdgeError, EdgeResult, direct_handler
from defguard.core.enrollment import configs
from defguard.core.enrollment.schemas import PollResponse
from defguard.core.locations.models import Location, LocationMfaMode, ServiceLocationMode
from defguard.core.settings.models import Settings
from defguard.wireguard.addressing import as_address

# The attributes the builders read, loaded into transient model objects.
DEVICE_COLUMNS = ("id", "name", "wireguard_pubkey", "user_id", "created")
SETTINGS_COLUMNS = ("instance_id", "instance_name", "public_proxy_url", "client_traffic_policy")
LOCATION_COLUMNS = (
    "id",
    "name",
    "pubkey",
    "endpoint",
    "port",
    "allowed_ips",
    "dns",
    "keepalive_interval",
    "location_mfa_mode",
    "service_location_mode",
)
_D, _S = len(DEVICE_COLUMNS), len(SETTINGS_COLUMNS)
_L = _D + 2 + _S  # where the location's columns start

_POLL = f"""
SELECT {", ".join("d." + c for c in DEVICE_COLUMNS)}, u.username, u.is_active,
       {", ".join("s." + c for c in SETTINGS_COLUMNS)},
       {", ".join("l." + c for c in LOCATION_COLUMNS)}, w.wireguard_ips
FROM polling_token t
JOIN device d ON d.id = t.device_id
JOIN "user" u ON u.id = d.user_id
JOIN settings s ON s.id = 1
LEFT JOIN wireguard_network_device w ON w.device_id = d.id
LEFT JOIN wireguard_network l ON l.id = w.wireguard_network_id
WHERE t.token = %(token)s
ORDER BY l.id
"""  # noqa: S608 - built from the constant column lists above


def _location(values: tuple[Any, ...]) -> Location:
    fields = dict(zip(LOCATION_COLUMNS, values, strict=True))
    fields["location_mfa_mode"] = LocationMfaMode(fields["location_mfa_mode"])
    fields["service_location_mode"] = ServiceLocationMode(fields["service_location_mode"])
    return Location(**fields)


@direct_handler("poll")
async def poll(call: DirectCall) -> EdgeResult:
    """The device's current configuration; the polling token itself stays as it is."""
    async with call.database.direct.connection() as conn:
        rows = await conn.fetchall(_POLL, {"token": call.body.token})
    if not rows:
        raise EdgeError(403, "invalid token")
    first = rows[0]
    username, is_active = first[_D], first[_D + 1]
    if not is_active:
        raise EdgeError(403, "user inactive")
    device = Device(**dict(zip(DEVICE_COLUMNS, first[:_D], strict=True)))
    settings_row = Settings(**dict(zip(SETTINGS_COLUMNS, first[_D + 2 : _L], strict=True)))
    locations = [
        (_location(row[_L:-1]), tuple(as_address(ip) for ip in row[-1]))
        for row in rows
        if row[_L] is not None
    ]
    service_ok = configs.supports_service_locations(call.client_version, call.client_os_family)
    response = configs.device_config_response(
        device,
        configs.device_configs(locations, service_locations=service_ok),
        configs.instance_info(settings_row, call.settings, username),
        None,
    )
    body: PollResponse = {"device_config": response}
    return EdgeResult(body=body)
