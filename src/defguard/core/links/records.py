"""Link state in `gateway_link`: what every Core's API shows about every gateway.

Times come from the database clock, so Cores with skewed clocks still agree
on which links are live. Writes for a gateway row that is gone (deleted while
its link was still winding down) change nothing instead of failing.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import BigInteger, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY

from defguard.db.engine import Database

_CONNECTED = text(
    """
    INSERT INTO gateway_link
        (gateway_id, core_id, connected_at, disconnected_at, last_seen, version, applied_revision)
    SELECT :gateway_id, :core_id, now_utc, NULL, now_utc, :version, NULL
    FROM timezone('utc', now()) AS now_utc
    WHERE EXISTS (SELECT 1 FROM gateway WHERE id = :gateway_id)
    ON CONFLICT (gateway_id, core_id) DO UPDATE SET
        connected_at = EXCLUDED.connected_at, disconnected_at = NULL,
        last_seen = EXCLUDED.last_seen, version = EXCLUDED.version, applied_revision = NULL
    """
)
_DISCONNECTED = text(
    """
    UPDATE gateway_link SET disconnected_at = now_utc, last_seen = now_utc
    FROM timezone('utc', now()) AS now_utc
    WHERE gateway_id = :gateway_id AND core_id = :core_id AND disconnected_at IS NULL
    """
)
_ALL_DISCONNECTED = text(
    """
    UPDATE gateway_link SET disconnected_at = now_utc, last_seen = now_utc
    FROM timezone('utc', now()) AS now_utc
    WHERE core_id = :core_id AND disconnected_at IS NULL
    """
)
_HEARTBEAT = text(
    """
    UPDATE gateway_link SET last_seen = timezone('utc', now())
    WHERE core_id = :core_id AND gateway_id = ANY(:ids) AND disconnected_at IS NULL
    """
).bindparams(bindparam("ids", type_=ARRAY(BigInteger)))
_APPLIED = text(
    """
    UPDATE gateway_link SET applied_revision = :revision, last_seen = timezone('utc', now())
    WHERE gateway_id = :gateway_id AND core_id = :core_id
    """
)


async def link_connected(db: Database, gateway_id: int, core_id: str, version: str) -> None:
    async with db.transaction() as s:
        await s.execute(
            _CONNECTED, {"gateway_id": gateway_id, "core_id": core_id, "version": version}
        )


async def link_disconnected(db: Database, gateway_id: int, core_id: str) -> None:
    async with db.transaction() as s:
        await s.execute(_DISCONNECTED, {"gateway_id": gateway_id, "core_id": core_id})


async def core_disconnected(db: Database, core_id: str) -> None:
    """A Core shutting down cleanly closes all its links at once."""
    async with db.transaction() as s:
        await s.execute(_ALL_DISCONNECTED, {"core_id": core_id})


async def heartbeat(db: Database, core_id: str, gateway_ids: Collection[int]) -> None:
    if gateway_ids:
        async with db.transaction() as s:
            await s.execute(_HEARTBEAT, {"core_id": core_id, "ids": sorted(gateway_ids)})


async def link_applied(db: Database, gateway_id: int, core_id: str, revision: int) -> None:
    async with db.transaction() as s:
        await s.execute(
            _APPLIED, {"gateway_id": gateway_id, "core_id": core_id, "revision": revision}
        )
