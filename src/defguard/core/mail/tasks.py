"""The `send_mail` job: render a template and deliver it, retried while SMTP fails.

SMTP settings are read when the job runs, not when it is queued, so mail
queued before the admin fixed a wrong password goes out on the next attempt.
A template or context error is not retried: another attempt would fail the
same way, so the job fails at once and stays visible in the queue.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import aiosmtplib
import procrastinate
import structlog

from defguard.core.jobs import database_of, tasks
from defguard.core.mail.sender import SmtpConfig, SmtpNotConfigured, build_message, send_message
from defguard.core.mail.templates import render
from defguard.core.settings.service import get_settings_row

log = structlog.get_logger("defguard.core.mail")

TASK_NAME = "defguard:send_mail"

# 2, 4, 8 ... 4096 s between attempts: about two hours and a quarter in all,
# enough to ride out an SMTP outage or a fix of the settings.
RETRY = procrastinate.RetryStrategy(
    max_attempts=12,
    exponential_wait=2,
    retry_exceptions={SmtpNotConfigured, aiosmtplib.SMTPException, OSError, TimeoutError},
)


@tasks.task(name="send_mail", queue="mail", pass_context=True, retry=RETRY)
async def send_mail(
    job_context: procrastinate.JobContext, to: str, template: str, context: dict[str, Any]
) -> None:
    async with database_of(job_context).session() as db:
        config = SmtpConfig.from_settings(await get_settings_row(db))
    job_id = job_context.job.id if job_context.job is not None else None
    message = build_message(
        config, to, render(template, context), message_key=f"job-{job_id}" if job_id else None
    )
    try:
        await send_message(config, message)
    except Exception as exc:
        # The exception text is the server's reply or the connection error,
        # never the message or the password.
        log.warning(
            "mail not delivered", to=to, template=template, error=f"{type(exc).__name__}: {exc}"
        )
        raise
    log.info("mail delivered", to=to, template=template)


class RedactMailArgs(logging.Filter):
    """Keeps the job's arguments (reset links, one-time codes) out of the queue's log lines.

    The worker logs every job as `task[id](arg=value, ...)` and attaches the
    job's fields to the record; for `send_mail` only the recipient and
    template remain.
    """

    _CALL = re.compile(re.escape(TASK_NAME) + r"\[(\d+)\]\(.*\)", re.DOTALL)

    def filter(self, record: logging.LogRecord) -> bool:
        job = getattr(record, "job", None)
        if isinstance(job, dict) and job.get("task_name") == TASK_NAME:
            kwargs = job.get("task_kwargs") or {}
            to, template = kwargs.get("to"), kwargs.get("template")
            safe = f"{TASK_NAME}[{job.get('id')}](to={to!r}, template={template!r})"
            record.msg = record.getMessage().replace(str(job.get("call_string")), safe)
            record.job = {
                **job,
                "task_kwargs": {"to": to, "template": template},
                "call_string": safe,
            }
        else:
            message = record.getMessage()
            if TASK_NAME not in message:
                return True
            # A line without the job attached (a shutdown notice): drop every argument.
            record.msg = self._CALL.sub(lambda m: f"{TASK_NAME}[{m.group(1)}](...)", message)
        record.args = None
        return True


# Filters see only records created on their own logger: the worker logs on
# `procrastinate.worker` and on a child named after the worker ("worker"
# unless the Core names it).
for _name in ("procrastinate.worker", "procrastinate.worker.worker"):
    logging.getLogger(_name).addFilter(RedactMailArgs())
