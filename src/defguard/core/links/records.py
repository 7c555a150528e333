"""Link state in `gateway_link` and `proxy_link`: what every Core's API shows about each link.

Times come from the database clock, so Cores with skewed clocks still agree
on which links are live. Writes for a row that is gone (deleted while its
link was still winding down) change nothing instead of failing.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import BigInteger, TextClause, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY

from defguard.db.engine import Database


class LinkRecords:
    """The statements for one link table; `table` is `gateway` or `proxy`."""

    def __init__(self, table: str, *, reset: tuple[str, ...] = ()) -> None:
        """`reset`: columns of what the previous connection learnt, cleared on reconnect."""
        self.table = table
        links, key = f"{table}_link", f"{table}_id"
        cleared = "".join(f", {column} = NULL" for column in reset)
        self._connected = text(
            f"""
            INSERT INTO {links} ({key}, core_id, connected_at, disconnected_at, last_seen, version)
            SELECT :target_id, :core_id, now_utc, NULL, now_utc, :version
            FROM timezone('utc', now()) AS now_utc
            WHERE EXISTS (SELECT 1 FROM {table} WHERE id = :target_id)
            ON CONFLICT ({key}, core_id) DO UPDATE SET
                connected_at = EXCLUDED.connected_at, disconnected_at = NULL,
                last_seen = EXCLUDED.last_seen, version = EXCLUDED.version{cleared}
            """  # noqa: S608 - table and column names are constants of this module
        )
        self._disconnected = text(
            f"""
            UPDATE {links} SET disconnected_at = now_utc, last_seen = now_utc
            FROM timezone('utc', now()) AS now_utc
            WHERE {key} = :target_id AND core_id = :core_id AND disconnected_at IS NULL
            """  # noqa: S608
        )
        self._all_disconnected = text(
            f"""
            UPDATE {links} SET disconnected_at = now_utc, last_seen = now_utc
            FROM timezone('utc', now()) AS now_utc
            WHERE core_id = :core_id AND disconnected_at IS NULL
            """  # noqa: S608
        )
        self._heartbeat: TextClause = text(
            f"""
            UPDATE {links} SET last_seen = timezone('utc', now())
            WHERE core_id = :core_id AND {key} = ANY(:ids) AND disconnected_at IS NULL
            """  # noqa: S608
        ).bindparams(bindparam("ids", type_=ARRAY(BigInteger)))

    async def connected(self, db: Database, target_id: int, core_id: str, version: str) -> None:
        async with db.transaction() as s:
            await s.execute(
                self._connected, {"target_id": target_id, "core_id": core_id, "version": version}
            )

    async def disconnected(self, db: Database, target_id: int, core_id: str) -> None:
        async with db.transaction() as s:
            await s.execute(self._disconnected, {"target_id": target_id, "core_id": core_id})

    async def core_disconnected(self, db: Database, core_id: str) -> None:
        """A Core shutting down cleanly closes all its links at once."""
        async with db.transaction() as s:
            await s.execute(self._all_disconnected, {"core_id": core_id})

    async def heartbeat(self, db: Database, core_id: str, target_ids: Collection[int]) -> None:
        if target_ids:
            async with db.transaction() as s:
                await s.execute(self._heartbeat, {"core_id": core_id, "ids": sorted(target_ids)})


gateways = LinkRecords("gateway", reset=("applied_revision",))
proxies = LinkRecords("proxy")

_APPLIED = text(
    """
    UPDATE gateway_link SET applied_revision = :revision, last_seen = timezone('utc', now())
    WHERE gateway_id = :gateway_id AND core_id = :core_id
    """
)


async def link_applied(db: Database, gateway_id: int, core_id: str, revision: int) -> None:
    async with db.transaction() as s:
        await s.execute(
            _APPLIED, {"gateway_id": gateway_id, "core_id": core_id, "revision": revision}
        )
