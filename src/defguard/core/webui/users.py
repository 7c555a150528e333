"""Console pages: the user list and a user's own page.

Reads go through the users service (`user_infos`, the same `UserInfo` the
`/user` endpoints answer); every change is a call of the REST API from the
page (forms.js), so the rules and messages are the API's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import selectinload

from defguard.core.context import DbSession
from defguard.core.groups.models import Group
from defguard.core.settings.service import get_settings_row
from defguard.core.users.models import User
from defguard.core.users.schemas import UserInfo
from defguard.core.users.service import find_user, user_info, user_infos
from defguard.core.webui.pages import Admin, render

router = APIRouter()

PER_PAGE = 50
# Fields the profile form shows; the rest of the PUT body rides along unchanged.
PROFILE_FIELDS = ("username", "first_name", "last_name", "email", "phone")
MFA_METHODS = {
    "None": "none",
    "OneTimePassword": "authenticator app (TOTP)",
    "Webauthn": "security key",
    "Email": "e-mail code",
}
SAVED_NOTICES = {
    "1": "User saved.",
    "groups": "Group membership saved.",
    "status": "Account status saved.",
    "password": "Password set.",
    "reset": "Password reset e-mail queued.",
    "mfa": "MFA disabled.",
}


def like_pattern(text: str) -> str:
    """A substring pattern in which the admin's `%` and `_` are plain characters."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def search_condition(q: str) -> ColumnElement[bool]:
    pattern = like_pattern(q)
    full_name = func.concat(User.first_name, " ", User.last_name)
    return or_(
        User.username.ilike(pattern, escape="\\"),
        User.email.ilike(pattern, escape="\\"),
        full_name.ilike(pattern, escape="\\"),
    )


def page_number(value: str) -> int:
    """Text, so that `?page=x` shows the first page rather than a JSON 422."""
    value = value.strip()
    return max(int(value), 1) if value.isdigit() and len(value) < 9 else 1


async def search_users(db: DbSession, q: str, page: int) -> tuple[int, list[UserInfo]]:
    """One page of matching users; the REST list has no search, hence the query here."""
    condition = search_condition(q) if q else None
    count = select(func.count()).select_from(User)
    rows = select(User).options(selectinload(User.groups))
    if condition is not None:
        count = count.where(condition)
        rows = rows.where(condition)
    total = (await db.execute(count)).scalar_one()
    users = (
        (
            await db.execute(
                rows.order_by(func.lower(User.username), User.id)
                .offset((page - 1) * PER_PAGE)
                .limit(PER_PAGE)
            )
        )
        .scalars()
        .all()
    )
    return total, await user_infos(db, list(users))


@dataclass
class Listing:
    q: str
    page: int
    total: int
    pages: int

    def query(self, page: int) -> str:
        values: dict[str, Any] = {"q": self.q, "page": page if page > 1 else ""}
        return urlencode({k: v for k, v in values.items() if v})


@router.get("/users", response_class=HTMLResponse)
async def users_page(
    request: Request, admin: Admin, db: DbSession, q: str = "", page: str = "1"
) -> HTMLResponse:
    query = q.strip()[:200]
    number = page_number(page)
    total, users = await search_users(db, query, number)
    pages = math.ceil(total / PER_PAGE)
    if number > pages > 0:
        # Past the end (e.g. a narrower search kept the page): show the last page.
        number = pages
        total, users = await search_users(db, query, number)
    return render(
        request,
        "users.html",
        admin,
        section="users",
        users=users,
        listing=Listing(q=query, page=number, total=total, pages=pages),
        mfa_methods=MFA_METHODS,
    )


async def all_groups(db: DbSession) -> list[tuple[str, bool]]:
    rows = await db.execute(select(Group.name, Group.is_admin).order_by(func.lower(Group.name)))
    return [(name, is_admin) for name, is_admin in rows]


def put_body(info: UserInfo, **changes: Any) -> dict[str, Any]:
    """The complete `PUT /user/{username}` body that leaves the user as it is, plus `changes`.

    `devices` may be empty (the API ignores it), which keeps the page small.
    """
    body = info.model_dump(mode="json")
    body["devices"] = []
    body.update(changes)
    return body


@router.get("/users/{username}", response_class=HTMLResponse)
async def user_page(username: str, request: Request, admin: Admin, db: DbSession) -> HTMLResponse:
    user = await find_user(db, username)
    if user is None:
        return render(
            request,
            "not_found.html",
            admin,
            section="users",
            status_code=404,
            message=f"There is no user {username}.",
        )
    info = await user_info(db, user)
    body = put_body(info)
    return render(
        request,
        "user_detail.html",
        admin,
        section="users",
        user=info,
        body=body,
        hidden_fields={k: v for k, v in body.items() if k not in PROFILE_FIELDS},
        membership_fields={k: v for k, v in body.items() if k != "groups"},
        status_body=put_body(info, is_active=not info.is_active),
        groups=await all_groups(db),
        is_self=user.id == admin.user.id,
        smtp_configured=(await get_settings_row(db)).smtp_configured,
        mfa_methods=MFA_METHODS,
        saved=SAVED_NOTICES.get(request.query_params.get("saved", ""), ""),
    )
