"""Groups and membership.

Membership decides both who is an admin and which locations a user's devices
may use, so every change here ends with two steps inside the same
transaction: a check that some active admin remains, and a re-sync of
location access. Nothing commits here; the API handler does, once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import delete as sql_delete
from sqlalchemy import exists, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from defguard.core.acl.service import mark_users_changed
from defguard.core.activity.service import record
from defguard.core.context import RequestContext
from defguard.core.errors import ApiError, bad_request, conflict, not_found
from defguard.core.groups.models import Group, group_user
from defguard.core.groups.schemas import EditGroupInfo, GroupInfo
from defguard.core.locations import access
from defguard.core.locations.models import Location, location_allowed_group
from defguard.core.users.models import User
from defguard.core.users.service import ensure_admin_remains, user_not_found


def group_not_found(group_id: int) -> ApiError:
    return not_found(f"Group {group_id} not found")


async def find_group(db: AsyncSession, group_id: int) -> Group | None:
    query = select(Group).where(Group.id == group_id).options(selectinload(Group.members))
    return (await db.execute(query)).scalar_one_or_none()


async def require_group(db: AsyncSession, group_id: int, message: str | None = None) -> Group:
    group = await find_group(db, group_id)
    if group is None:
        raise not_found(message) if message else group_not_found(group_id)
    return group


async def list_group_names(db: AsyncSession, *, offset: int, limit: int) -> tuple[int, list[str]]:
    total = (await db.execute(select(func.count()).select_from(Group))).scalar_one()
    names = (
        await db.execute(select(Group.name).order_by(Group.id).offset(offset).limit(limit))
    ).scalars()
    return total, list(names)


async def _explicit_locations(db: AsyncSession, group_ids: Sequence[int]) -> dict[int, list[str]]:
    rows = await db.execute(
        select(location_allowed_group.c.group_id, Location.name)
        .join(Location, Location.id == location_allowed_group.c.network_id)
        .where(location_allowed_group.c.group_id.in_(group_ids))
        .order_by(Location.name)
    )
    result: dict[int, list[str]] = {gid: [] for gid in group_ids}
    for group_id, name in rows:
        result[group_id].append(name)
    return result


def _info(group: Group, locations: Iterable[str]) -> GroupInfo:
    return GroupInfo(
        id=group.id,
        name=group.name,
        members=sorted(u.username for u in group.members),
        vpn_locations=sorted(set(locations)),
        is_admin=group.is_admin,
    )


async def group_info(db: AsyncSession, group: Group) -> GroupInfo:
    """One group, counting locations open to all groups as its locations too."""
    explicit = (await _explicit_locations(db, [group.id]))[group.id]
    open_to_all = (
        await db.execute(select(Location.name).where(Location.allow_all_groups))
    ).scalars()
    return _info(group, [*explicit, *open_to_all])


async def all_group_infos(db: AsyncSession) -> list[GroupInfo]:
    """Every group with only the locations that name it explicitly."""
    groups = (
        (await db.execute(select(Group).options(selectinload(Group.members)).order_by(Group.id)))
        .scalars()
        .all()
    )
    explicit = await _explicit_locations(db, [g.id for g in groups])
    return [_info(g, explicit[g.id]) for g in groups]


# --- checks ---------------------------------------------------------------------


def _check_name(name: str) -> None:
    if not name.strip():
        raise bad_request("name: must not be empty")


async def _name_taken(db: AsyncSession, name: str, exclude_id: int | None = None) -> bool:
    condition = [Group.name == name]
    if exclude_id is not None:
        condition.append(Group.id != exclude_id)
    return bool((await db.execute(select(exists().where(*condition)))).scalar_one())


async def _other_admin_group_exists(db: AsyncSession, group_id: int) -> bool:
    query = select(exists().where(Group.is_admin, Group.id != group_id))
    return bool((await db.execute(query)).scalar_one())


async def _users_by_name(db: AsyncSession, names: Iterable[str]) -> dict[str, User]:
    wanted = set(names)
    if not wanted:
        return {}
    users = (await db.execute(select(User).where(User.username.in_(wanted)))).scalars()
    return {u.username: u for u in users}


async def _membership_changed(
    db: AsyncSession, *, check_admins: bool, user_ids: Iterable[int] = ()
) -> None:
    """`user_ids` are the users whose memberships changed: ACL rules may name their groups."""
    if check_admins:
        await ensure_admin_remains(db)
    bumped = await access.resync_locations(db)
    await mark_users_changed(db, user_ids, already_bumped=bumped)


# --- changes --------------------------------------------------------------------


async def create_group(
    db: AsyncSession, body: EditGroupInfo, *, actor: User, ctx: RequestContext
) -> Group:
    """Everything is checked before the row is added: an unknown member leaves no group."""
    _check_name(body.name)
    if await _name_taken(db, body.name):
        raise conflict(f"group {body.name} already exists")
    users = await _users_by_name(db, body.members)
    for username in body.members:
        if username not in users:
            raise not_found(f"Failed to find user {username}")
    group = Group(
        name=body.name,
        is_admin=body.is_admin,
        members=sorted(users.values(), key=lambda u: u.id),
    )
    db.add(group)
    await db.flush()
    if users:
        await _membership_changed(db, check_admins=False, user_ids=[u.id for u in users.values()])
    record(db, ctx, actor, "group_added", f"Added group {group.name}")
    await db.flush()
    return group


async def update_group(
    db: AsyncSession, group: Group, body: EditGroupInfo, *, actor: User, ctx: RequestContext
) -> None:
    """Rename, set the admin flag and sync members to the list (unknown names ignored)."""
    _check_name(body.name)
    if body.name != group.name and await _name_taken(db, body.name, group.id):
        raise conflict(f"group {body.name} already exists")
    if group.is_admin and not body.is_admin and not await _other_admin_group_exists(db, group.id):
        raise bad_request("is_admin: cannot clear the flag of the only admin group")
    old_name = group.name
    admin_changed = group.is_admin != body.is_admin
    group.name = body.name
    group.is_admin = body.is_admin
    users = await _users_by_name(db, body.members)
    changed_members = {u.id for u in users.values()} ^ {u.id for u in group.members}
    members_changed = bool(changed_members)
    if members_changed:
        group.members = sorted(users.values(), key=lambda u: u.id)
    await db.flush()
    if members_changed or admin_changed:
        await _membership_changed(
            db, check_admins=group.is_admin or admin_changed, user_ids=changed_members
        )
    description = f"Modified group {old_name}"
    if old_name != group.name:
        description += f" (renamed to {group.name})"
    record(db, ctx, actor, "group_modified", description)
    await db.flush()


async def delete_group(db: AsyncSession, group: Group, *, actor: User, ctx: RequestContext) -> None:
    if group.is_admin and not await _other_admin_group_exists(db, group.id):
        raise bad_request("cannot delete the only admin group")
    sole_group_of = (
        (
            await db.execute(
                select(Location.name)
                .join(location_allowed_group, location_allowed_group.c.network_id == Location.id)
                .where(~Location.allow_all_groups)
                .group_by(Location.id, Location.name)
                .having(func.count() == 1)
                .having(func.bool_or(location_allowed_group.c.group_id == group.id))
                .order_by(Location.name)
            )
        )
        .scalars()
        .all()
    )
    if sole_group_of:
        raise bad_request(
            f"group {group.name} is the only allowed group of location(s): "
            + ", ".join(sole_group_of)
        )
    name, was_admin = group.name, group.is_admin
    member_ids = [m.id for m in group.members]
    await db.execute(sql_delete(Group).where(Group.id == group.id))
    db.expunge(group)
    await _membership_changed(db, check_admins=was_admin, user_ids=member_ids)
    record(db, ctx, actor, "group_removed", f"Removed group {name}")
    await db.flush()


async def add_member(
    db: AsyncSession, group: Group, username: str, *, actor: User, ctx: RequestContext
) -> None:
    users = await _users_by_name(db, [username])
    user = users.get(username)
    if user is None:
        raise user_not_found(username)
    if any(m.id == user.id for m in group.members):
        return
    group.members.append(user)
    await db.flush()
    await _membership_changed(db, check_admins=False, user_ids=[user.id])
    record(db, ctx, actor, "group_member_added", f"Added {username} to group {group.name}")
    await db.flush()


async def remove_member(
    db: AsyncSession, group: Group, username: str, *, actor: User, ctx: RequestContext
) -> None:
    """Removing a user who is not a member changes nothing and is not an error."""
    users = await _users_by_name(db, [username])
    user = users.get(username)
    if user is None:
        raise user_not_found(username)
    remaining = [m for m in group.members if m.id != user.id]
    if len(remaining) == len(group.members):
        return
    group.members = remaining
    await db.flush()
    await _membership_changed(db, check_admins=group.is_admin, user_ids=[user.id])
    record(db, ctx, actor, "group_member_removed", f"Removed {username} from group {group.name}")
    await db.flush()


async def assign_groups(
    db: AsyncSession,
    group_names: Sequence[str],
    user_ids: Sequence[int],
    *,
    actor: User,
    ctx: RequestContext,
) -> None:
    """Add every listed user to every listed group (existing memberships are kept)."""
    found_groups = await db.execute(
        select(Group.name, Group.id).where(Group.name.in_(set(group_names)))
    )
    groups: dict[str, int] = {name: gid for name, gid in found_groups}
    missing_groups = sorted(set(group_names) - groups.keys())
    if missing_groups:
        raise bad_request("groups: unknown group(s): " + ", ".join(missing_groups))
    found = set((await db.execute(select(User.id).where(User.id.in_(set(user_ids))))).scalars())
    missing_users = sorted(set(user_ids) - found)
    if missing_users:
        raise bad_request("users: unknown user id(s): " + ", ".join(map(str, missing_users)))
    rows = [{"group_id": gid, "user_id": uid} for gid in groups.values() for uid in found]
    if rows:
        await db.execute(insert(group_user).values(rows).on_conflict_do_nothing())
        await _membership_changed(db, check_admins=False, user_ids=found)
    record(
        db,
        ctx,
        actor,
        "groups_bulk_assigned",
        f"Assigned {len(found)} user(s) to group(s): {', '.join(sorted(groups))}",
    )
    await db.flush()
