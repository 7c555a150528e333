"""`UserInfo.devices`: a user's devices with their per-location state.

Contract: `await user_devices(db, user_ids)` returns, for each user id, the list
of `UserDevice` dicts (user-type devices only, ordered by id) as described in
the REST spec §6. The dicts are JSON-ready (timestamps and IPs already in
their REST string form), so callers can embed them in any response model.

One query for any number of users. Until VPN sessions are recorded,
`is_active` is false and `last_connected_*` are null.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Text, any_, cast, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from defguard.core.devices.models import Device, DeviceLocation, DeviceType
from defguard.core.locations.access import id_array
from defguard.core.locations.models import Location
from defguard.core.timefmt import format_timestamp
from defguard.wireguard.addressing import parse_host

# Plain columns and dicts rather than ORM entities and models: a user list may
# carry every device. The dict keys are those of `schemas.UserDevice`, which a
# test checks, and which documents them in OpenAPI.
_DEVICE_COLUMNS = (
    Device.id,
    Device.name,
    Device.wireguard_pubkey,
    Device.user_id,
    Device.created,
    Device.device_type,
    Device.description,
    Device.configured,
)


async def user_devices(
    db: AsyncSession, user_ids: Iterable[int]
) -> dict[int, list[dict[str, Any]]]:
    ids = list(dict.fromkeys(user_ids))
    result: dict[int, list[dict[str, Any]]] = {uid: [] for uid in ids}
    if not ids:
        return result
    query = (
        select(
            *_DEVICE_COLUMNS,
            Location.id,
            Location.name,
            Location.endpoint,
            Location.location_mfa_mode,
            cast(DeviceLocation.wireguard_ips, ARRAY(Text)),
        )
        .outerjoin(DeviceLocation, DeviceLocation.device_id == Device.id)
        .outerjoin(Location, Location.id == DeviceLocation.wireguard_network_id)
        .where(Device.user_id == any_(id_array(ids)), Device.device_type == DeviceType.USER)
        .order_by(Device.id, Location.id)
    )
    devices: dict[int, dict[str, Any]] = {}
    for (
        device_id, name, pubkey, user_id, created, device_type, description, configured,
        loc_id, loc_name, endpoint, mfa_mode, ips,
    ) in await db.execute(query):  # fmt: skip
        entry = devices.get(device_id)
        if entry is None:
            entry = {
                "id": device_id,
                "name": name,
                "wireguard_pubkey": pubkey,
                "user_id": user_id,
                "created": format_timestamp(created),
                "device_type": device_type.value,
                "description": description,
                "configured": configured,
                "networks": [],
            }
            devices[device_id] = entry
            result[user_id].append(entry)
        if loc_id is not None:
            entry["networks"].append(
                {
                    "network_id": loc_id,
                    "network_name": loc_name,
                    "network_gateway_ip": endpoint,
                    "device_wireguard_ips": [str(parse_host(ip)) for ip in ips],
                    "last_connected_ip": None,
                    "last_connected_at": None,
                    "is_active": False,
                    "location_mfa_mode": mfa_mode.value,
                }
            )
    return result
