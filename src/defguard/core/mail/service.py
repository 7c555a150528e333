"""Queueing e-mail in the transaction of the change that causes it."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from defguard.core.jobs import defer_in


async def queue_mail(db: AsyncSession, *, to: str, template: str, context: dict[str, Any]) -> None:
    """Send `template` to `to` once this transaction commits (through the `send_mail` job).

    `context` must be JSON-serialisable: it is stored with the job, so secrets
    placed in it (a reset link, a one-time code) live in the job row until the
    job is done and purged.
    """
    await defer_in(db, "send_mail", queue="mail", to=to, template=template, context=context)
