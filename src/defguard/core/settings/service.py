"""Reading the settings row; it is created once, by whichever Core starts first."""

from __future__ import annotations

import secrets

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from defguard.core.settings.models import Settings


async def ensure_settings(db: AsyncSession) -> Settings:
    await db.execute(
        insert(Settings)
        .values(id=1, secret_key=secrets.token_urlsafe(48))
        .on_conflict_do_nothing(index_elements=["id"])
    )
    return (await db.execute(select(Settings).where(Settings.id == 1))).scalar_one()


async def get_settings_row(db: AsyncSession) -> Settings:
    row = await db.get(Settings, 1)
    if row is None:
        row = await ensure_settings(db)
    return row
