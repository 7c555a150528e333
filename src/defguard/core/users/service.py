"""User accounts: creation (single and bulk), edits, removal, passwords.

Service functions work inside the caller's transaction and never commit: the
API handler commits once the whole change, activity events included, is in
place, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import asyncio
import secrets
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Text,
    any_,
    bindparam,
    cast,
    delete,
    exists,
    func,
    insert,
    literal,
    select,
)
from sqlalchemy.dialects.postgresql import INET
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.sql.selectable import TableValuedAlias

from defguard.core.acl.service import mark_users_changed
from defguard.core.activity.models import ActivityLogEvent
from defguard.core.activity.service import describe_agent, record
from defguard.core.auth.mfa import configured_methods
from defguard.core.auth.passwords import hash_password, verify_password
from defguard.core.auth.service import delete_sessions
from defguard.core.context import RequestContext
from defguard.core.devices.info import user_devices
from defguard.core.devices.models import Device, DeviceLocation
from defguard.core.enrollment.models import Token, TokenKind
from defguard.core.errors import ApiError, bad_request, conflict, not_found
from defguard.core.groups.models import Group, group_user
from defguard.core.locations import access
from defguard.core.mail.service import queue_mail
from defguard.core.settings.service import get_settings_row
from defguard.core.users.models import MfaMethod, User
from defguard.core.users.schemas import UserInfo, UserInfoUpdate
from defguard.core.users.validation import (
    FieldError,
    check_password_strength,
    check_phone,
    check_username,
    normalize_phone,
)
from defguard.db.base import utcnow

TOKEN_ALPHABET = string.ascii_letters + string.digits
TOKEN_LENGTH = 32
_TEXT_ARRAY = ARRAY(Text)


def _invalid(exc: FieldError) -> ApiError:
    return bad_request(str(exc))


def user_not_found(username: str) -> ApiError:
    return not_found(f"user {username} not found")


# --- reading ---------------------------------------------------------------


async def find_user(db: AsyncSession, username: str) -> User | None:
    """The user with its groups loaded (every caller needs `is_admin` or `groups`)."""
    return (
        await db.execute(
            select(User).where(User.username == username).options(selectinload(User.groups))
        )
    ).scalar_one_or_none()


async def require_user(db: AsyncSession, username: str) -> User:
    user = await find_user(db, username)
    if user is None:
        raise user_not_found(username)
    return user


async def user_infos(db: AsyncSession, users: Sequence[User]) -> list[UserInfo]:
    """UserInfo for many users with one devices query; `groups` must already be loaded."""
    devices = await user_devices(db, [u.id for u in users])
    return [
        UserInfo(
            id=u.id,
            username=u.username,
            first_name=u.first_name,
            last_name=u.last_name,
            name=u.full_name,
            email=u.email,
            phone=u.phone,
            mfa_enabled=u.mfa_enabled,
            totp_enabled=u.totp_enabled,
            email_mfa_enabled=u.email_mfa_enabled,
            mfa_method=u.mfa_method.api_name,  # type: ignore[arg-type]
            groups=[g.name for g in u.groups],
            authorized_apps=[],
            is_active=u.is_active,
            enrolled=u.enrolled,
            is_admin=u.is_admin,
            ldap_pass_requires_change=u.ldap_pass_randomized,
            devices=devices.get(u.id, []),
        )
        for u in users
    ]


async def user_info(db: AsyncSession, user: User) -> UserInfo:
    return (await user_infos(db, [user]))[0]


async def list_users(db: AsyncSession, *, offset: int, limit: int) -> tuple[int, list[User]]:
    total = (await db.execute(select(func.count()).select_from(User))).scalar_one()
    users = (
        (
            await db.execute(
                select(User)
                .options(selectinload(User.groups))
                .order_by(User.id)
                .offset(offset)
                .limit(limit)
            )
        )
        .scalars()
        .all()
    )
    return total, list(users)


# --- invariants shared with groups ----------------------------------------


async def ensure_admin_remains(db: AsyncSession) -> None:
    """Refuse a change that would leave nobody able to administer Defguard.

    Runs after the change is applied in the session (autoflush makes it
    visible) and before commit, so the check sees the state being committed.
    """
    query = select(
        exists()
        .where(group_user.c.user_id == User.id)
        .where(group_user.c.group_id == Group.id)
        .where(Group.is_admin, User.is_active)
    )
    if not (await db.execute(query)).scalar_one():
        raise bad_request("at least one active admin must remain")


# --- creation ----------------------------------------------------------------


@dataclass(frozen=True)
class NewUser:
    """One account to create; without a password the user starts not enrolled."""

    username: str
    first_name: str
    last_name: str
    email: str
    phone: str | None = None
    password: str | None = None


def _validate_batch(specs: Sequence[NewUser]) -> None:
    """Field rules and duplicates inside the batch, before any database work."""
    usernames: set[str] = set()
    emails: set[str] = set()
    for spec in specs:
        try:
            check_username(spec.username)
            phone = normalize_phone(spec.phone)
            if phone is not None:
                check_phone(phone)
            if spec.password is not None:
                check_password_strength(spec.password)
        except FieldError as exc:
            raise _invalid(exc) from None
        if spec.username in usernames:
            raise conflict(f"username {spec.username} already exists")
        usernames.add(spec.username)
        email = spec.email.lower()
        if email in emails:
            raise conflict(f"email {spec.email} already in use")
        emails.add(email)


async def _check_batch_against_db(db: AsyncSession, specs: Sequence[NewUser]) -> None:
    """One query for the whole batch: usernames and (case-insensitive) e-mails already taken."""
    names = [s.username for s in specs]
    emails = [s.email.lower() for s in specs]
    taken = (
        await db.execute(
            select(User.username, User.email).where(
                (User.username == any_(bindparam("names", names, type_=_TEXT_ARRAY)))
                | (func.lower(User.email) == any_(bindparam("emails", emails, type_=_TEXT_ARRAY)))
            )
        )
    ).all()
    if not taken:
        return
    wanted_names = set(names)
    for username, _ in taken:
        if username in wanted_names:
            raise conflict(f"username {username} already exists")
    raise conflict(f"email {taken[0].email} already in use")


def _unnest(columns: dict[str, list[str | None]], prefix: str) -> TableValuedAlias:
    """`unnest(array, array, ...) AS t(col, col, ...)`: many rows in a few parameters."""
    arrays = [
        bindparam(f"{prefix}_{name}", values, type_=_TEXT_ARRAY) for name, values in columns.items()
    ]
    return func.unnest(*arrays).table_valued(*columns).render_derived()


async def _insert_users(db: AsyncSession, columns: dict[str, list[str | None]]) -> list[User]:
    source = _unnest(columns, "new")
    stmt = (
        insert(User)
        .from_select(list(columns), select(*(source.c[name] for name in columns)))
        .returning(User)
    )
    users = list((await db.execute(stmt)).scalars())
    for user in users:
        # New accounts have no groups; saying so spares a lazy load that async cannot do.
        set_committed_value(user, "groups", [])
    return users


async def _record_user_added(
    db: AsyncSession, users: Sequence[User], *, actor: User, ctx: RequestContext
) -> None:
    """One `user_added` event per account, inserted as a single statement.

    The rows carry exactly what `activity.service.record` would write; going
    through one INSERT instead of one ORM object per event is what keeps
    imports of tens of thousands of accounts within a second or two.
    """
    events = _unnest({"description": [f"Added user {u.username}" for u in users]}, "event")
    await db.execute(
        insert(ActivityLogEvent).from_select(
            ["user_id", "username", "ip", "event", "module", "device", "description"],
            select(
                literal(actor.id, BigInteger),
                literal(actor.username, Text),
                cast(literal(ctx.ip, Text), INET),
                literal("user_added", Text),
                literal("defguard", Text),
                literal(describe_agent(ctx.user_agent), Text),
                events.c.description,
            ),
        )
    )


async def create_users(
    db: AsyncSession, specs: Sequence[NewUser], *, actor: User, ctx: RequestContext
) -> list[User]:
    """Create accounts in the current transaction; all or none. Returns them in `specs` order.

    Built for bulk imports as much as for `POST /user`: validation runs in
    Python, one query checks the batch for taken names and e-mails, and the
    rows and their `user_added` events go in with one statement each.
    Passwords are hashed in worker threads so the event loop keeps serving
    other requests. New users belong to no group and have no devices, so no
    location access changes. The returned users have `groups` loaded (empty).
    """
    if not specs:
        return []
    _validate_batch(specs)
    await _check_batch_against_db(db, specs)
    to_hash = [(i, s.password) for i, s in enumerate(specs) if s.password is not None]
    hashes: dict[int, str] = {}
    if to_hash:
        digests = await asyncio.gather(*(hash_password(p) for _, p in to_hash))
        hashes = {i: h for (i, _), h in zip(to_hash, digests, strict=True)}
    columns: dict[str, list[str | None]] = {
        "username": [s.username for s in specs],
        "first_name": [s.first_name for s in specs],
        "last_name": [s.last_name for s in specs],
        "email": [s.email for s in specs],
        "phone": [normalize_phone(s.phone) for s in specs],
        "password_hash": [hashes.get(i) for i in range(len(specs))],
    }
    by_name = {u.username: u for u in await _insert_users(db, columns)}
    users = [by_name[s.username] for s in specs]
    await _record_user_added(db, users, actor=actor, ctx=ctx)
    return users


# --- edits -------------------------------------------------------------------


async def _username_taken(db: AsyncSession, username: str, exclude_id: int) -> bool:
    query = select(exists().where(User.username == username, User.id != exclude_id))
    return bool((await db.execute(query)).scalar_one())


async def _email_taken(db: AsyncSession, email: str, exclude_id: int) -> bool:
    query = select(
        exists().where(func.lower(User.email) == func.lower(email), User.id != exclude_id)
    )
    return bool((await db.execute(query)).scalar_one())


def _check_mfa_method(user: User, name: str) -> MfaMethod:
    method = MfaMethod.from_api(name)
    if method == user.mfa_method:
        return method
    configured = configured_methods(user)
    if method is MfaMethod.NONE:
        if configured:
            raise bad_request(
                "mfa_method: None is not allowed while MFA factors are configured; "
                "disable MFA instead"
            )
    elif method not in configured:
        raise bad_request(f"mfa_method: {name} is not configured for this user")
    return method


async def _sync_groups(db: AsyncSession, user: User, names: Iterable[str]) -> bool:
    """Set membership to exactly the listed existing groups; unknown names are ignored."""
    wanted = set(names)
    groups = (
        (await db.execute(select(Group).where(Group.name.in_(wanted)).order_by(Group.id)))
        .scalars()
        .all()
        if wanted
        else []
    )
    if {g.id for g in groups} == {g.id for g in user.groups}:
        return False
    user.groups = list(groups)
    return True


async def update_user(
    db: AsyncSession,
    user: User,
    body: UserInfoUpdate,
    *,
    actor: User,
    actor_is_admin: bool,
    ctx: RequestContext,
) -> None:
    """Apply `PUT /user/{username}`: which fields count depends on who edits whom.

    Identity fields, groups and status are admin-only; phone is always applied;
    the preferred MFA method only when editing oneself. Everything is checked
    before the first field changes.
    """
    editing_self = actor.id == user.id
    phone = normalize_phone(body.phone)
    try:
        if phone is not None:
            check_phone(phone)
        if actor_is_admin and body.username != user.username:
            check_username(body.username)
    except FieldError as exc:
        raise _invalid(exc) from None
    method = _check_mfa_method(user, body.mfa_method) if editing_self else user.mfa_method
    if actor_is_admin:
        if body.username != user.username and await _username_taken(db, body.username, user.id):
            raise conflict(f"username {body.username} already exists")
        if body.email.lower() != user.email.lower() and await _email_taken(db, body.email, user.id):
            raise conflict(f"email {body.email} already in use")
        if editing_self and not body.is_active:
            raise bad_request("is_active: an admin cannot deactivate their own account")

    old_name = user.username
    user.phone = phone
    user.mfa_method = method
    groups_changed = status_changed = False
    if actor_is_admin:
        user.username = body.username
        user.first_name = body.first_name
        user.last_name = body.last_name
        user.email = body.email
        status_changed = body.is_active != user.is_active
        user.is_active = body.is_active
        groups_changed = await _sync_groups(db, user, body.groups)
        if status_changed and not user.is_active:
            await delete_sessions(db, user.id)
    if groups_changed or status_changed:
        await ensure_admin_remains(db)
        bumped = await access.resync_locations(db)
        # ACL rules may name the user or their groups: their sources changed too.
        await mark_users_changed(db, [user.id], already_bumped=bumped)
    record(db, ctx, actor, "user_modified", f"Modified user {old_name}")
    if groups_changed:
        names = ", ".join(g.name for g in user.groups) or "none"
        record(db, ctx, actor, "user_groups_modified", f"Groups of {user.username}: {names}")
    await db.flush()


async def delete_user(db: AsyncSession, user: User, *, actor: User, ctx: RequestContext) -> None:
    """Remove the account; its devices, sessions, tokens and memberships go with it.

    The devices' rows disappear through foreign-key cascades, which a re-sync
    cannot see afterwards, so the locations they had addresses in are noted
    first and get a new configuration revision for their gateways.
    """
    if user.id == actor.id:
        raise bad_request("cannot delete your own account")
    affected = set(
        (
            await db.execute(
                select(DeviceLocation.wireguard_network_id)
                .join(Device, Device.id == DeviceLocation.device_id)
                .where(Device.user_id == user.id)
                .distinct()
            )
        )
        .scalars()
        .all()
    )
    username = user.username
    await db.execute(delete(User).where(User.id == user.id))
    db.expunge(user)
    await ensure_admin_remains(db)
    bumped = await access.resync_locations(db)
    await access.bump_revisions(db, affected - bumped)
    record(db, ctx, actor, "user_removed", f"Removed user {username}")
    await db.flush()


# --- passwords -----------------------------------------------------------------


async def change_own_password(
    db: AsyncSession,
    user: User,
    old_password: str,
    new_password: str,
    *,
    ctx: RequestContext,
) -> None:
    if not await verify_password(user.password_hash, old_password):
        raise bad_request("old_password: incorrect password")
    try:
        check_password_strength(new_password, "new_password")
    except FieldError as exc:
        raise _invalid(exc) from None
    user.password_hash = await hash_password(new_password)
    record(db, ctx, user, "password_changed", "Changed own password")
    await db.flush()


async def set_password_by_admin(
    db: AsyncSession, user: User, new_password: str, *, actor: User, ctx: RequestContext
) -> None:
    if user.id == actor.id:
        raise bad_request("use PUT /user/change_password to change your own password")
    try:
        check_password_strength(new_password, "new_password")
    except FieldError as exc:
        raise _invalid(exc) from None
    user.password_hash = await hash_password(new_password)
    user.ldap_pass_randomized = False
    record(db, ctx, actor, "password_changed_by_admin", f"Changed password of {user.username}")
    await db.flush()


def new_token_id() -> str:
    return "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(TOKEN_LENGTH))


async def request_password_reset(
    db: AsyncSession,
    user: User,
    *,
    actor: User | None,
    ctx: RequestContext,
    edge_url: str,
) -> Token:
    """Replace the user's unused reset tokens with a fresh one and mail the link.

    `actor` is the admin who asked, or None when the user asked through the
    Edge's public form. `edge_url` is the public Edge URL (trailing `/`): the
    link opens the Edge's reset page, which redeems the token. The mail is
    queued in this transaction, so it goes out only if the token is stored.
    """
    if actor is not None and user.id == actor.id:
        raise bad_request("cannot reset your own password this way")
    settings = await get_settings_row(db)
    await db.execute(
        delete(Token).where(
            Token.user_id == user.id,
            Token.kind == TokenKind.PASSWORD_RESET,
            Token.used_at.is_(None),
        )
    )
    now = utcnow()
    token = Token(
        id=new_token_id(),
        kind=TokenKind.PASSWORD_RESET,
        user_id=user.id,
        admin_id=actor.id if actor is not None else None,
        email=user.email,
        created_at=now,
        expires_at=now + timedelta(hours=settings.password_reset_token_timeout_hours),
    )
    db.add(token)
    await queue_mail(
        db,
        to=user.email,
        template="password_reset",
        context={
            "first_name": user.first_name,
            "link": f"{edge_url}password-reset?token={token.id}",
        },
    )
    if actor is None:
        record(
            db,
            ctx,
            user,
            "password_reset_requested",
            "Requested a password reset",
            module="enrollment",
        )
    else:
        record(db, ctx, actor, "password_reset_requested", f"Password reset for {user.username}")
    await db.flush()
    return token
