"""Peer statistics reported by gateways: idempotent intake, retention, and the §5 stats views.

Counters are stored as gateways report them (cumulative per gateway and
peer); transfer is the difference between consecutive samples of the same
gateway and key, computed when read. A counter that went down (the
interface was recreated) starts a new series: its value is the transfer.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import procrastinate
import structlog
from sqlalchemy import BigInteger, Text, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from defguard.core.jobs import database_of, tasks
from defguard.core.vpn_sessions.service import record_handshakes
from defguard.db.base import utcnow
from defguard.proto import gateway_pb2 as pb

log = structlog.get_logger("defguard.core.gateways.stats")

STATS_RETENTION = timedelta(days=30)
PEER_CHANGE_RETENTION = timedelta(days=1)
LINK_RETENTION = timedelta(days=1)

_STORE = text(
    """
    INSERT INTO peer_stats (batch_id, gateway_id, location_id, device_id, public_key,
                            collected_at, endpoint, upload, download, latest_handshake,
                            allowed_ips)
    SELECT :batch_id, :gateway_id, :location_id, known.device_id, s.public_key,
           to_timestamp(:collected_at) AT TIME ZONE 'utc', NULLIF(s.endpoint, ''),
           s.upload, s.download,
           CASE WHEN s.handshake > 0 THEN to_timestamp(s.handshake) AT TIME ZONE 'utc' END,
           NULLIF(s.allowed_ips, '')
    FROM unnest(:keys, :endpoints, :uploads, :downloads, :handshakes, :allowed)
        AS s(public_key, endpoint, upload, download, handshake, allowed_ips)
    LEFT JOIN (
        SELECT d.id AS device_id, d.wireguard_pubkey
        FROM device d JOIN wireguard_network_device w ON w.device_id = d.id
        WHERE w.wireguard_network_id = :location_id
    ) known ON known.wireguard_pubkey = s.public_key
    WHERE EXISTS (SELECT 1 FROM wireguard_network WHERE id = :location_id)
    ON CONFLICT (batch_id, public_key) DO NOTHING
    """
).bindparams(
    bindparam("keys", type_=ARRAY(Text)),
    bindparam("endpoints", type_=ARRAY(Text)),
    bindparam("uploads", type_=ARRAY(BigInteger)),
    bindparam("downloads", type_=ARRAY(BigInteger)),
    bindparam("handshakes", type_=ARRAY(BigInteger)),
    bindparam("allowed", type_=ARRAY(Text)),
)


async def store_stats_batch(
    db: AsyncSession, *, gateway_id: int, location_id: int, batch: pb.StatsBatch
) -> int:
    """Store one batch; a batch already stored (re-sent to another Core) adds nothing.

    The location is the one the link serves, not what the batch claims, so a
    misconfigured gateway cannot write another location's stats.
    """
    peers = list(batch.peers)
    if not peers:
        return 0
    result = await db.execute(
        _STORE,
        {
            "batch_id": batch.batch_id,
            "gateway_id": gateway_id,
            "location_id": location_id,
            "collected_at": batch.collected_at,
            "keys": [p.public_key for p in peers],
            "endpoints": [p.endpoint for p in peers],
            "uploads": [p.upload for p in peers],
            "downloads": [p.download for p in peers],
            "handshakes": [p.latest_handshake for p in peers],
            "allowed": [",".join(p.allowed_ips) for p in peers],
        },
    )
    # MFA sessions end when their device stops handshaking, so each batch
    # also moves their handshake times (idempotent for a re-sent batch).
    await record_handshakes(
        db, location_id, [p.public_key for p in peers], [p.latest_handshake for p in peers]
    )
    return result.rowcount or 0  # type: ignore[attr-defined]


# -- retention ---------------------------------------------------------------------


async def purge(db: AsyncSession, now: datetime | None = None) -> dict[str, int]:
    """Drop old samples, old change-log rows and links of Cores long gone.

    The newest link row of each gateway is kept whatever its age, so the API
    can still say when a gateway was last connected.
    """
    now = now or utcnow()
    counts = {}
    counts["peer_stats"] = (
        await db.execute(
            text("DELETE FROM peer_stats WHERE collected_at < :before"),
            {"before": now - STATS_RETENTION},
        )
    ).rowcount  # type: ignore[attr-defined]
    counts["peer_change"] = (
        await db.execute(
            text("DELETE FROM peer_change WHERE created_at < :before"),
            {"before": now - PEER_CHANGE_RETENTION},
        )
    ).rowcount  # type: ignore[attr-defined]
    counts["gateway_link"] = (
        await db.execute(
            text(
                """
                DELETE FROM gateway_link l
                WHERE l.last_seen < :before AND EXISTS (
                    SELECT 1 FROM gateway_link n
                    WHERE n.gateway_id = l.gateway_id AND n.last_seen > l.last_seen)
                """
            ),
            {"before": now - LINK_RETENTION},
        )
    ).rowcount  # type: ignore[attr-defined]
    return counts


@tasks.periodic(cron="17 * * * *", periodic_id="purge-stats")
@tasks.task(name="purge_stats", queue="maintenance", pass_context=True, queueing_lock="purge-stats")
async def purge_stats(context: procrastinate.JobContext, timestamp: int) -> dict[str, int]:
    del timestamp
    async with database_of(context).transaction() as db:
        counts = await purge(db)
    log.info("purged old statistics", **counts)
    return counts


# -- reading -----------------------------------------------------------------------

# Samples before the window are read too, so the first sample inside it has a
# predecessor to subtract from (gateways report every 30 s by default).
LOOKBEHIND = timedelta(minutes=10)
# Series are capped like upstream's (six hours of minutes).
SERIES_LIMIT = 6 * 60


def aggregation(since: datetime, now: datetime) -> str:
    return "hour" if now - since >= timedelta(hours=6) else "minute"


_TRANSFER = """
    WITH samples AS (
        SELECT s.device_id, s.collected_at,
               s.upload, s.upload - lag(s.upload) OVER w AS du,
               s.download, s.download - lag(s.download) OVER w AS dd
        FROM peer_stats s
        WHERE s.collected_at >= :lookbehind AND s.device_id IS NOT NULL {where}
        WINDOW w AS (PARTITION BY s.gateway_id, s.public_key ORDER BY s.collected_at)
    )
    SELECT device_id, date_trunc(:agg, collected_at) AS bucket,
           sum(CASE WHEN du IS NULL THEN 0 WHEN du < 0 THEN upload ELSE du END)::bigint,
           sum(CASE WHEN dd IS NULL THEN 0 WHEN dd < 0 THEN download ELSE dd END)::bigint
    FROM samples WHERE collected_at >= :since
    GROUP BY 1, 2
"""


@dataclass
class Series:
    """Transfer per time bucket (bytes), summed over whatever was added."""

    buckets: dict[datetime, list[int]] = field(default_factory=dict)

    def add(self, bucket: datetime, upload: int, download: int) -> None:
        cell = self.buckets.setdefault(bucket, [0, 0])
        cell[0] += upload
        cell[1] += download

    def merge(self, other: Series) -> None:
        for bucket, (up, down) in other.buckets.items():
            self.add(bucket, up, down)

    @property
    def upload(self) -> int:
        return sum(cell[0] for cell in self.buckets.values())

    @property
    def download(self) -> int:
        return sum(cell[1] for cell in self.buckets.values())

    def rows(self) -> list[dict[str, Any]]:
        ordered = sorted(self.buckets.items())[:SERIES_LIMIT]
        return [
            {"collected_at": bucket, "upload": up, "download": down}
            for bucket, (up, down) in ordered
        ]


async def device_transfer(
    db: AsyncSession,
    *,
    since: datetime,
    now: datetime,
    location_id: int | None = None,
    device_ids: Sequence[int] | None = None,
) -> dict[int, Series]:
    """Per device: transfer per bucket since `since` (in one location, or all)."""
    where = ""
    params: dict[str, Any] = {
        "lookbehind": since - LOOKBEHIND,
        "since": since,
        "agg": aggregation(since, now),
    }
    if location_id is not None:
        where += " AND s.location_id = :location_id"
        params["location_id"] = location_id
    if device_ids is not None:
        where += " AND s.device_id = ANY(:device_ids)"
        params["device_ids"] = list(device_ids)
    query = text(_TRANSFER.format(where=where))
    if device_ids is not None:
        query = query.bindparams(bindparam("device_ids", type_=ARRAY(BigInteger)))
    result: dict[int, Series] = defaultdict(Series)
    for device_id, bucket, up, down in await db.execute(query, params):
        result[device_id].add(bucket, up, down)
    return result


_ACTIVITY = """
    SELECT count(DISTINCT CASE WHEN d.device_type = 'user' THEN d.user_id END),
           count(DISTINCT CASE WHEN d.device_type = 'user' THEN d.id END),
           count(DISTINCT CASE WHEN d.device_type = 'network' THEN d.id END)
    FROM peer_stats s
    JOIN device d ON d.id = s.device_id
    JOIN wireguard_network l ON l.id = s.location_id
    WHERE s.collected_at >= :since AND {handshake} {where}
"""


async def activity(
    db: AsyncSession, *, since: datetime, location_id: int | None, current: bool
) -> tuple[int, int, int]:
    """(users, user devices, network devices) with a handshake since `since`.

    `current`: a handshake within each location's `peer_disconnect_threshold`
    instead, i.e. connected now.
    """
    params: dict[str, Any] = {"since": since}
    where = ""
    if location_id is not None:
        where = "AND s.location_id = :location_id"
        params["location_id"] = location_id
    if current:
        handshake = (
            "s.latest_handshake >= (now() AT TIME ZONE 'utc')"
            " - make_interval(secs => l.peer_disconnect_threshold)"
        )
    else:
        handshake = "s.latest_handshake >= :since"
    row = (await db.execute(text(_ACTIVITY.format(handshake=handshake, where=where)), params)).one()
    return int(row[0]), int(row[1]), int(row[2])


async def location_stats(
    db: AsyncSession, *, since: datetime, location_id: int | None = None
) -> dict[str, Any]:
    """The body of `GET /network/stats` and `GET /network/{id}/stats`."""
    now = utcnow()
    # Nobody can have handshaken "now" in a sample older than the largest threshold.
    recent = now - timedelta(seconds=await _max_threshold(db, location_id)) - LOOKBEHIND
    current = await activity(db, since=recent, location_id=location_id, current=True)
    total = await activity(db, since=since, location_id=location_id, current=False)
    series = Series()
    for device_series in (
        await device_transfer(db, since=since, now=now, location_id=location_id)
    ).values():
        series.merge(device_series)
    return {
        "current_active_users": current[0],
        "current_active_user_devices": current[1],
        "current_active_network_devices": current[2],
        "active_users": total[0],
        "active_user_devices": total[1],
        "active_network_devices": total[2],
        "upload": series.upload,
        "download": series.download,
        "transfer_series": series.rows(),
    }


async def _max_threshold(db: AsyncSession, location_id: int | None) -> int:
    query = "SELECT coalesce(max(peer_disconnect_threshold), 0) FROM wireguard_network"
    params: dict[str, Any] = {}
    if location_id is not None:
        query += " WHERE id = :location_id"
        params["location_id"] = location_id
    return int((await db.execute(text(query), params)).scalar_one())


# -- connected devices -------------------------------------------------------------


@dataclass
class ConnectedDevice:
    device_id: int
    device_name: str
    user_id: int
    device_type: str
    public_ip: str | None
    vpn_ips: list[str]
    connected_at: datetime
    latest_handshake: datetime


# How far back a connection's start is looked for: a device connected for
# longer shows a start a day ago, and the lookup stays bounded per device.
SESSION_HORIZON = timedelta(days=1)

_CONNECTED = """
    WITH location AS (
        SELECT make_interval(secs => peer_disconnect_threshold) AS threshold
        FROM wireguard_network WHERE id = :location_id
    ), live AS (
        SELECT s.device_id, max(s.latest_handshake) AS latest_handshake
        FROM peer_stats s
        WHERE s.location_id = :location_id AND s.device_id IS NOT NULL
          AND s.collected_at >= :recent
        GROUP BY s.device_id
        HAVING max(s.latest_handshake) >= :now - (SELECT threshold FROM location)
    )
    SELECT d.id, d.name, d.user_id, d.device_type::text, latest.endpoint,
           CAST(w.wireguard_ips AS text[]), started.connected_at, live.latest_handshake
    FROM live
    JOIN device d ON d.id = live.device_id
    LEFT JOIN wireguard_network_device w
        ON w.device_id = d.id AND w.wireguard_network_id = :location_id
    CROSS JOIN LATERAL (
        SELECT s.endpoint FROM peer_stats s
        WHERE s.device_id = live.device_id AND s.location_id = :location_id
          AND s.collected_at >= :recent AND s.latest_handshake IS NOT NULL
        ORDER BY s.latest_handshake DESC, s.collected_at DESC LIMIT 1
    ) latest
    CROSS JOIN LATERAL (
        SELECT max(s.collected_at) AS at FROM peer_stats s
        WHERE s.device_id = live.device_id AND s.location_id = :location_id
          AND s.collected_at >= :horizon
          AND s.latest_handshake < s.collected_at - (SELECT threshold FROM location)
    ) stale
    CROSS JOIN LATERAL (
        SELECT min(s.collected_at) AS connected_at FROM peer_stats s
        WHERE s.device_id = live.device_id AND s.location_id = :location_id
          AND s.collected_at >= :horizon AND s.latest_handshake IS NOT NULL
          AND (stale.at IS NULL OR s.collected_at > stale.at)
    ) started
    ORDER BY d.name, d.id
"""


def endpoint_host(endpoint: str | None) -> str | None:
    """`1.2.3.4:51820` -> `1.2.3.4`, `[fd00::1]:51820` -> `fd00::1`."""
    if not endpoint:
        return None
    if endpoint.startswith("["):
        return endpoint[1:].partition("]")[0]
    host, sep, _ = endpoint.rpartition(":")
    return host if sep and ":" not in host else endpoint


async def connected_devices(db: AsyncSession, location_id: int) -> list[ConnectedDevice]:
    """Devices whose latest handshake in this location is within its disconnect threshold.

    `connected_at` is the first sample after the device's last stale sample
    (one whose handshake was already older than the threshold), so a device
    that dropped and came back counts from its return.
    """
    now = utcnow()
    threshold = timedelta(seconds=await _max_threshold(db, location_id))
    rows = await db.execute(
        text(_CONNECTED),
        {
            "location_id": location_id,
            "now": now,
            "recent": now - threshold - LOOKBEHIND,
            "horizon": now - SESSION_HORIZON,
        },
    )
    return [
        ConnectedDevice(
            device_id=device_id,
            device_name=name,
            user_id=user_id,
            device_type=device_type,
            public_ip=endpoint_host(endpoint),
            vpn_ips=[ip.partition("/")[0] for ip in ips or ()],
            connected_at=connected_at,
            latest_handshake=handshake,
        )
        for device_id, name, user_id, device_type, endpoint, ips, connected_at, handshake in rows
    ]


def device_item(device: ConnectedDevice, series: Series) -> dict[str, Any]:
    return {
        "device_id": device.device_id,
        "device_name": device.device_name,
        "public_ip": device.public_ip,
        "vpn_ips": device.vpn_ips,
        "connected_at": device.connected_at,
        "total_upload": series.upload,
        "total_download": series.download,
        "stats": series.rows(),
    }


async def _transfers(
    db: AsyncSession, location_id: int, since: datetime, devices: Iterable[ConnectedDevice]
) -> dict[int, Series]:
    ids = [d.device_id for d in devices]
    if not ids:
        return {}
    return await device_transfer(
        db, since=since, now=utcnow(), location_id=location_id, device_ids=ids
    )


async def connected_network_devices(
    db: AsyncSession, location_id: int, since: datetime
) -> list[dict[str, Any]]:
    devices = [d for d in await connected_devices(db, location_id) if d.device_type == "network"]
    transfers = await _transfers(db, location_id, since, devices)
    return [device_item(d, transfers.get(d.device_id, Series())) for d in devices]


async def connected_user_devices(
    db: AsyncSession, location_id: int, user_id: int, since: datetime
) -> list[dict[str, Any]]:
    devices = [
        d
        for d in await connected_devices(db, location_id)
        if d.device_type == "user" and d.user_id == user_id
    ]
    transfers = await _transfers(db, location_id, since, devices)
    return [device_item(d, transfers.get(d.device_id, Series())) for d in devices]


async def connected_users(
    db: AsyncSession, location_id: int, since: datetime
) -> list[dict[str, Any]]:
    """One item per user with a connected user device, by full name."""
    devices = [d for d in await connected_devices(db, location_id) if d.device_type == "user"]
    if not devices:
        return []
    transfers = await _transfers(db, location_id, since, devices)
    by_user: dict[int, list[ConnectedDevice]] = defaultdict(list)
    for device in devices:
        by_user[device.user_id].append(device)
    names = {
        uid: (first, last)
        for uid, first, last in await db.execute(
            text('SELECT id, first_name, last_name FROM "user" WHERE id = ANY(:ids)').bindparams(
                bindparam("ids", type_=ARRAY(BigInteger))
            ),
            {"ids": sorted(by_user)},
        )
    }
    items = []
    for user_id, own in by_user.items():
        first, last = names.get(user_id, ("", ""))
        series = Series()
        for device in own:
            series.merge(transfers.get(device.device_id, Series()))
        latest = max(own, key=lambda d: d.latest_handshake)
        items.append(
            {
                "user_id": user_id,
                "first_name": first,
                "last_name": last,
                "full_name": f"{first} {last}",
                "connected_devices_count": len(own),
                "public_ip": latest.public_ip,
                "vpn_ips": [ip for device in own for ip in device.vpn_ips],
                "connected_at": min(d.connected_at for d in own),
                "total_upload": series.upload,
                "total_download": series.download,
                "stats": series.rows(),
            }
        )
    items.sort(key=lambda item: (item["full_name"], item["user_id"]))
    return items
