"""The life of a VPN client session, kept only in PostgreSQL so any Core can drive it.

A session is pending from `client-mfa/start` until MFA succeeds, then active
(its preshared key makes the device a peer of the location's gateways) until
it ends: replaced by a newer one, idle past the location's
`peer_disconnect_threshold`, or cut off by a change of the location's MFA
mode. Peers follow sessions through the `peer_change` trigger on the table
and the revision bump that every peer-changing function here performs.

Everything is written inside the caller's transaction; nothing commits.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import (
    BigInteger,
    Text,
    bindparam,
    delete,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from defguard.core.activity.service import record
from defguard.core.context import RequestContext
from defguard.core.locations.access import bump_revisions
from defguard.core.users.models import User
from defguard.core.vpn_sessions.models import VpnClientSession
from defguard.core.vpn_sessions.tokens import TOKEN_LIFETIME
from defguard.db.base import utcnow

# First half of the two-key advisory lock: keeps these locks apart from others.
LOCK_NAMESPACE = 0x64670005
PSK_BYTES = 32
# A pending attempt outlives its token a little, so a `finish` sent just
# before the token expired still finds its session rather than a vague error.
PENDING_GRACE = timedelta(seconds=30)
# Gateways' clocks may run behind Core's; a handshake older than the session
# by more than this belongs to a peer of an earlier session.
HANDSHAKE_SKEW = timedelta(seconds=30)
# Nobody is behind a job's activity events; they carry no address or agent.
SYSTEM = RequestContext(ip=None, user_agent=None)

ENDED_REPLACED = "replaced"
ENDED_NEVER_CONNECTED = "never connected"
ENDED_INACTIVE = "inactive"
ENDED_MODE_CHANGED = "location MFA mode changed"


def new_preshared_key() -> str:
    """A WireGuard preshared key: 32 random bytes, base64 as `wg` prints them."""
    return base64.b64encode(secrets.token_bytes(PSK_BYTES)).decode("ascii")


# The advisory lock (in `LOCK_NAMESPACE`) that serialises MFA attempts of one
# device in one location, on every Core: without it two concurrent attempts
# could each replace the other's pending session, or both try to become the
# device's one active session. A format for Python's `%` and SQL's `format`.
DEVICE_LOCK_FORMAT = "vpn-session:%s:%s"


# -- when a location's MFA mode changes ---------------------------------------------

_TOUCH_ALL_PEERS = text(
    """
    INSERT INTO peer_change (location_id, public_key)
    SELECT DISTINCT w.wireguard_network_id, d.wireguard_pubkey
    FROM wireguard_network_device w JOIN device d ON d.id = w.device_id
    WHERE w.wireguard_network_id = :location_id
    """
)


async def mfa_mode_changed(db: AsyncSession, location_id: int) -> None:
    """End every session of the location and mark all its peers changed.

    Turning MFA on must remove every peer that has no session, turning it off
    must add them all back without a preshared key, and a switch between
    internal and external MFA asks everyone to pass the new kind: in each case
    every peer of the location changes, and the caller's revision bump (which
    claims these rows) hands gateways that diff.
    """
    await db.execute(
        delete(VpnClientSession)
        .where(
            VpnClientSession.location_id == location_id,
            VpnClientSession.authorized_at.is_(None),
        )
        .execution_options(synchronize_session=False)
    )
    await db.execute(
        update(VpnClientSession)
        .where(
            VpnClientSession.location_id == location_id,
            VpnClientSession.authorized_at.is_not(None),
            VpnClientSession.ended_at.is_(None),
        )
        .values(ended_at=utcnow(), end_reason=ENDED_MODE_CHANGED)
        .execution_options(synchronize_session=False)
    )
    await db.execute(_TOUCH_ALL_PEERS, {"location_id": location_id})


# -- expiry --------------------------------------------------------------------------

# Locations first, in id order, as a location update takes its row before
# rewriting its sessions, so the two never deadlock; the UPDATE then repeats
# the condition, since a session may have handshaken while this waited.
_LOCK_DUE_LOCATIONS = text(
    """
    SELECT l.id FROM wireguard_network l
    WHERE EXISTS (
        SELECT 1 FROM vpn_client_session s
        WHERE s.location_id = l.id
          AND s.authorized_at IS NOT NULL AND s.ended_at IS NULL
          AND greatest(s.authorized_at, s.last_handshake)
              < :now - make_interval(secs => l.peer_disconnect_threshold))
    ORDER BY l.id
    FOR NO KEY UPDATE
    """
)

_EXPIRE = text(
    """
    UPDATE vpn_client_session s
    SET ended_at = :now,
        end_reason = CASE WHEN s.connected_at IS NULL THEN :never ELSE :inactive END
    FROM wireguard_network l
    WHERE l.id = s.location_id AND l.id = ANY(:locations)
      AND s.authorized_at IS NOT NULL AND s.ended_at IS NULL
      AND greatest(s.authorized_at, s.last_handshake)
          < :now - make_interval(secs => l.peer_disconnect_threshold)
    RETURNING s.id, s.location_id, s.user_id, s.end_reason, l.name,
              (SELECT d.name FROM device d WHERE d.id = s.device_id)
    """
).bindparams(bindparam("locations", type_=ARRAY(BigInteger)))


@dataclass(frozen=True)
class Expiry:
    ended: list[int]
    purged: int


async def expire_sessions(db: AsyncSession, now: datetime | None = None) -> Expiry:
    """Bring sessions to the state they should be in at `now`.

    An active session ends when neither its authorization nor its latest
    handshake is within the location's `peer_disconnect_threshold`: a device
    that never connected, or stopped handshaking, must pass MFA again. Its
    peer leaves the gateways with the revision bump. Pending attempts whose
    token has expired are dropped. Each statement is conditional, so a second
    run (or a second Core racing this one) finds nothing left to do.
    """
    now = now or utcnow()
    locations = list((await db.execute(_LOCK_DUE_LOCATIONS, {"now": now})).scalars())
    rows = []
    if locations:
        rows = (
            await db.execute(
                _EXPIRE,
                {
                    "now": now,
                    "locations": locations,
                    "never": ENDED_NEVER_CONNECTED,
                    "inactive": ENDED_INACTIVE,
                },
            )
        ).all()
    if rows:
        await bump_revisions(db, {row.location_id for row in rows})
        users = {
            user.id: user
            for user in (
                await db.execute(select(User).where(User.id.in_({row.user_id for row in rows})))
            ).scalars()
        }
        for session_id, _, user_id, reason, location, device in rows:
            del session_id
            user = users.get(user_id)
            if user is not None:
                record(
                    db,
                    SYSTEM,
                    user,
                    "vpn_client_mfa_disconnected",
                    f"Device {device} disconnected from VPN location {location} ({reason})",
                    module="vpn",
                    location=location,
                )
        await db.flush()
    purged = await db.execute(
        delete(VpnClientSession)
        .where(
            VpnClientSession.authorized_at.is_(None),
            VpnClientSession.created_at < now - TOKEN_LIFETIME - PENDING_GRACE,
        )
        .execution_options(synchronize_session=False)
    )
    return Expiry(
        ended=sorted(row.id for row in rows),
        purged=int(getattr(purged, "rowcount", 0) or 0),
    )


# -- handshakes from gateway stats ----------------------------------------------------

# One statement per stats batch. `before` is the same row as the target read
# before the update, which tells the first handshake of a session apart and
# logs the connection once (a re-sent batch finds `connected_at` already set).
_HANDSHAKES = text(
    """
    WITH seen AS (
        SELECT u.public_key, to_timestamp(u.handshake) AT TIME ZONE 'utc' AS at
        FROM unnest(:keys, :handshakes) AS u(public_key, handshake)
        WHERE u.handshake > 0
    ), touched AS (
        UPDATE vpn_client_session s
        SET connected_at = coalesce(s.connected_at, seen.at),
            last_handshake = greatest(s.last_handshake, seen.at)
        FROM vpn_client_session before, device d, seen
        WHERE s.location_id = :location_id
          AND s.authorized_at IS NOT NULL AND s.ended_at IS NULL
          AND before.id = s.id AND d.id = s.device_id AND d.wireguard_pubkey = seen.public_key
          AND seen.at >= s.authorized_at - make_interval(secs => :skew)
          AND (s.last_handshake IS NULL OR seen.at > s.last_handshake)
        RETURNING s.user_id, d.name AS device, before.connected_at IS NULL AS first
    )
    INSERT INTO activity_log_event (user_id, username, location, event, module, description)
    SELECT u.id, u.username, l.name, 'vpn_client_mfa_connected', 'vpn',
           'Device ' || t.device || ' connected to VPN location ' || l.name
    FROM touched t
    JOIN "user" u ON u.id = t.user_id
    JOIN wireguard_network l ON l.id = :location_id
    WHERE t.first
    """
).bindparams(
    bindparam("keys", type_=ARRAY(Text)),
    bindparam("handshakes", type_=ARRAY(BigInteger)),
)


async def record_handshakes(
    db: AsyncSession, location_id: int, keys: Sequence[str], handshakes: Sequence[int]
) -> None:
    """Note the latest handshake (Unix seconds, 0 = none) of each key on its active session."""
    if keys:
        await db.execute(
            _HANDSHAKES,
            {
                "location_id": location_id,
                "keys": list(keys),
                "handshakes": list(handshakes),
                "skew": HANDSHAKE_SKEW.total_seconds(),
            },
        )
