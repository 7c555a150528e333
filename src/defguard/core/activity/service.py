"""Writing activity-log events in the same transaction as the change they describe.

An event is added to the caller's session, so it commits with the change or
not at all: the log never shows an action that did not happen.
"""

from __future__ import annotations

import re
from functools import lru_cache

from sqlalchemy.ext.asyncio import AsyncSession

from defguard.core.activity.models import ActivityLogEvent
from defguard.core.context import RequestContext
from defguard.core.users.models import User

MODULES = ("defguard", "client", "vpn", "enrollment")

_BROWSERS = (
    ("Edg/", "Edge"),
    ("OPR/", "Opera"),
    ("Firefox/", "Firefox"),
    ("Chrome/", "Chrome"),
    ("Version/", "Safari"),
    ("curl/", "curl"),
    ("python-httpx/", "python-httpx"),
)
_SYSTEMS = (
    ("Android", "Android"),
    ("iPhone", "iOS"),
    ("iPad", "iOS"),
    ("Mac OS X", "Mac OS X"),
    ("Windows", "Windows"),
    ("Linux", "Linux"),
)


@lru_cache(maxsize=1024)
def describe_agent(user_agent: str | None) -> str:
    """A short "Browser major, OS: system" label for the activity log's `device` column."""
    if not user_agent:
        return ""
    browser = None
    for token, name in _BROWSERS:
        match = re.search(re.escape(token) + r"(\d+)", user_agent)
        if match:
            browser = f"{name} {match.group(1)}"
            break
    system = next((name for token, name in _SYSTEMS if token in user_agent), None)
    if browser is None:
        browser = user_agent.split(" ", 1)[0][:64]
    return f"{browser}, OS: {system}" if system else browser


def record(
    db: AsyncSession,
    ctx: RequestContext,
    actor: User,
    event: str,
    description: str | None = None,
    *,
    module: str = "defguard",
    location: str | None = None,
) -> ActivityLogEvent:
    if module not in MODULES:
        raise ValueError(f"unknown activity module {module!r}")
    entry = ActivityLogEvent(
        user_id=actor.id,
        username=actor.username,
        location=location,
        ip=ctx.ip,
        event=event,
        module=module,
        device=describe_agent(ctx.user_agent),
        description=description,
    )
    db.add(entry)
    return entry
