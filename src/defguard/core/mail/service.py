"""Queueing e-mail in the transaction of the change that causes it."""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from defguard.core.jobs import defer_in
from defguard.core.mail.templates import check_context
from defguard.core.settings.service import get_settings_row

log = structlog.get_logger("defguard.core.mail")


async def queue_mail(db: AsyncSession, *, to: str, template: str, context: dict[str, Any]) -> bool:
    """Send `template` to `to` once this transaction commits (through the `send_mail` job).

    An unknown template or a missing context key raises `TemplateError` here,
    in the caller, rather than failing later in the worker where nobody sees it.

    `context` must be JSON-serialisable: it is stored with the job, so secrets
    placed in it (a reset link, a one-time code) live in the job row until the
    job is done and purged.

    Without SMTP settings nothing is queued (False): a deployment that does
    not use e-mail would otherwise collect failing jobs for every enrollment.
    Callers for which the mail is the point (the test mail, e-mail MFA codes)
    check `smtp_configured` themselves and refuse.
    """
    check_context(template, context)
    if not (await get_settings_row(db)).smtp_configured:
        log.info("e-mail not sent: SMTP is not configured", template=template)
        return False
    await defer_in(db, "send_mail", queue="mail", to=to, template=template, context=context)
    return True
