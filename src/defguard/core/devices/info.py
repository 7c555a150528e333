"""`UserInfo.devices`: a user's devices with their per-location state.

Contract: `await user_devices(db, user_ids)` returns, for each user id, the list
of `UserDevice` dicts (user-type devices only, ordered by id) as described in
the REST spec §6.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession


async def user_devices(db: AsyncSession, user_ids: Iterable[int]) -> dict[int, list[dict[str, Any]]]:
    return {uid: [] for uid in user_ids}
