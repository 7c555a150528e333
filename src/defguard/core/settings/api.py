"""Admin endpoints for the settings row (`/settings`) and the SMTP test message (`/mail/test`)."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request

from defguard.core.auth.deps import AdminCaller
from defguard.core.context import AuditCtx, DbSession
from defguard.core.errors import bad_request
from defguard.core.mail.addresses import is_email_address
from defguard.core.mail.service import queue_mail
from defguard.core.schemas import Empty, error_responses
from defguard.core.settings import service
from defguard.core.settings.schemas import MailTestRequest, SettingsOut, SettingsPatch

router = APIRouter(tags=["settings"])


@router.get("/settings", response_model=SettingsOut, responses=error_responses(401, 403))
async def get_settings(_: AdminCaller, db: DbSession) -> SettingsOut:
    """Every setting except the signing secret; the SMTP password only as `smtp_password_set`."""
    return service.settings_out(await service.get_settings_row(db))


@router.patch(
    "/settings",
    response_model=SettingsOut,
    responses=error_responses(400, 401, 403),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": SettingsPatch.model_json_schema()}},
        }
    },
)
async def patch_settings(
    request: Request, caller: AdminCaller, ctx: AuditCtx, db: DbSession
) -> SettingsOut:
    """Change only the fields sent; the answer is the full settings as now stored.

    `smtp_password`: a non-empty string replaces the stored password, `null`
    removes it and `""` keeps it. A form that shows `smtp_password_set` but
    never the password itself sends back an empty field when the admin edits
    something else, and that must not wipe the password.

    An unknown or read-only field is a 400 naming it (unlike most bodies,
    where unknown fields are ignored): a typo in a setting's name would
    otherwise look like a successful change.
    """
    try:
        body = json.loads(await request.body())
    except ValueError as exc:
        raise bad_request(f"malformed JSON: {exc}") from None
    patch = service.parse_patch(body)
    row = await service.update_settings(db, patch, actor=caller.user, ctx=ctx)
    out = service.settings_out(row)
    await db.commit()
    return out


@router.post("/mail/test", response_model=Empty, responses=error_responses(400, 401, 403))
async def send_test_mail(body: MailTestRequest, _: AdminCaller, db: DbSession) -> Empty:
    """Queue the `test` message with the saved SMTP settings.

    Delivery happens in the background job, so success here means queued:
    an SMTP failure shows as a failed `send_mail` job, not in this answer.
    """
    to = body.to.strip()
    if not is_email_address(to):
        raise bad_request(f"to: {body.to!r} is not an e-mail address")
    if not (await service.get_settings_row(db)).smtp_configured:
        raise bad_request("SMTP not configured")
    await queue_mail(db, to=to, template="test", context={})
    await db.commit()
    return Empty()
