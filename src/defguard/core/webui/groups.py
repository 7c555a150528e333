"""Console pages: the group list and a group's own page.

Reads go through the groups service (the `GroupInfo` of `/group-info` and
`/group/{id}`); every change is a call of the `/group` endpoints from the page.
Pages address a group by name, the API by id: the page carries the id.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from defguard.core.context import DbSession
from defguard.core.groups.models import Group
from defguard.core.groups.service import all_group_infos, group_info
from defguard.core.locations.models import Location
from defguard.core.users.models import User
from defguard.core.webui.pages import Admin, render

router = APIRouter()

# Up to this many users, member pickers list everyone (check boxes, suggestions);
# beyond it, usernames are typed: a list of every user would weigh megabytes.
PICK_LIST_LIMIT = 300


@dataclass
class Person:
    username: str
    name: str
    is_active: bool


async def all_people(db: DbSession) -> list[Person]:
    rows = await db.execute(
        select(User.username, User.first_name, User.last_name, User.is_active).order_by(
            func.lower(User.username)
        )
    )
    return [Person(u, f"{first} {last}", active) for u, first, last, active in rows]


@router.get("/groups", response_class=HTMLResponse)
async def groups_page(request: Request, admin: Admin, db: DbSession) -> HTMLResponse:
    return render(
        request,
        "groups.html",
        admin,
        section="groups",
        groups=await all_group_infos(db),
        people=people if len(people := await all_people(db)) <= PICK_LIST_LIMIT else None,
    )


# `:path`, because group names are free text and may hold a "/".
@router.get("/groups/{name:path}", response_class=HTMLResponse)
async def group_page(name: str, request: Request, admin: Admin, db: DbSession) -> HTMLResponse:
    group = (
        await db.execute(
            select(Group).where(Group.name == name).options(selectinload(Group.members))
        )
    ).scalar_one_or_none()
    if group is None:
        return render(
            request,
            "not_found.html",
            admin,
            section="groups",
            status_code=404,
            message=f"There is no group {name}.",
        )
    info = await group_info(db, group)
    open_to_all = set(
        (await db.execute(select(Location.name).where(Location.allow_all_groups))).scalars()
    )
    people = await all_people(db)
    members = set(info.members)
    return render(
        request,
        "group_detail.html",
        admin,
        section="groups",
        group=info,
        members=[p for p in people if p.username in members],
        candidates=[p for p in people if p.username not in members][:PICK_LIST_LIMIT],
        explicit_locations=[n for n in info.vpn_locations if n not in open_to_all],
        open_locations=sorted(open_to_all),
        saved=request.query_params.get("saved") == "1",
    )
