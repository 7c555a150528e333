"""`GET /activity_log`: filtered, sorted and paginated; non-admins see only their own events."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel
from sqlalchemy import Select, asc, desc, func, or_, select

from defguard.core.activity.models import ActivityLogEvent
from defguard.core.auth.deps import CurrentCaller
from defguard.core.context import DbSession
from defguard.core.errors import bad_request
from defguard.core.pagination import PageParams, Paginated
from defguard.core.timefmt import Timestamp

router = APIRouter(tags=["activity log"])

SortBy = Literal["timestamp", "username", "location", "ip", "event", "module", "device"]


class ActivityLogEventOut(BaseModel):
    id: int
    timestamp: Timestamp
    user_id: int
    username: str
    location: str | None
    ip: str | None
    event: str
    module: str
    device: str
    description: str | None


def _naive_utc(value: str, name: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise bad_request(f"{name}: not an RFC 3339 date-time: {value!r}") from exc
    if parsed.tzinfo is None:
        raise bad_request(f"{name}: RFC 3339 date-time needs an offset, e.g. Z")
    return parsed.astimezone(UTC).replace(tzinfo=None)


def _ip_text(ip: object) -> str | None:
    if ip is None:
        return None
    text = str(ip)
    if "/" not in text:
        text += "/128" if ":" in text else "/32"
    return text


@router.get("/activity_log", response_model=Paginated[ActivityLogEventOut])
async def list_activity(
    caller: CurrentCaller,
    db: DbSession,
    page: Annotated[PageParams, Depends()],
    from_: Annotated[str | None, Query(alias="from")] = None,
    until: str | None = None,
    username: Annotated[list[str] | None, Query()] = None,
    location: Annotated[list[str] | None, Query()] = None,
    event: Annotated[list[str] | None, Query()] = None,
    module: Annotated[list[str] | None, Query()] = None,
    search: str | None = None,
    sort_by: SortBy = "timestamp",
    sort_order: Literal["asc", "desc"] = "desc",
) -> Paginated[ActivityLogEventOut]:
    E = ActivityLogEvent
    query: Select = select(E)
    if from_:
        query = query.where(E.timestamp >= _naive_utc(from_, "from"))
    if until:
        query = query.where(E.timestamp <= _naive_utc(until, "until"))
    for column, values in (
        (E.username, username),
        (E.location, location),
        (E.event, event),
        (E.module, module),
    ):
        if values:
            query = query.where(column.in_(values))
    if search:
        pattern = f"%{search}%"
        query = query.where(
            or_(
                *(
                    col.ilike(pattern)
                    for col in (E.username, E.location, E.module, E.event, E.device, E.description)
                )
            )
        )
    if not caller.is_admin:
        query = query.where(E.user_id == caller.user.id)
    # Counted after the non-admin restriction (upstream counts before it, which
    # leaks how many events other users have).
    total = (await db.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    direction = asc if sort_order == "asc" else desc
    query = query.order_by(direction(getattr(E, sort_by)), direction(E.id))
    rows = (await db.execute(query.offset(page.offset).limit(page.per_page))).scalars().all()
    data = [
        ActivityLogEventOut(
            id=r.id,
            timestamp=r.timestamp,
            user_id=r.user_id,
            username=r.username,
            location=r.location,
            ip=_ip_text(r.ip),
            event=r.event,
            module=r.module,
            device=r.device,
            description=r.description,
        )
        for r in rows
    ]
    return Paginated[ActivityLogEventOut](data=data, pagination=page.meta(total))
