"""Which devices may use a location, and keeping their addresses in step with that.

Contract used by other features (users, groups, devices):

`await resync_locations(db, location_ids=None)` re-derives, inside the caller's
transaction, the allowed device set of the given locations (all when None):
devices no longer allowed lose their address there, newly allowed ones get
addresses, and locations whose peers changed get their `config_revision`
bumped. Returns the ids of the locations that changed. Raises `ApiError` 400
with `code="network_full"` when a location has no free address.

Every function here is set-based: a fixed number of statements whatever the
number of devices, so re-syncing tens of thousands of devices stays a matter
of a few bulk statements plus in-memory planning (`wireguard.addressing`).

Concurrency: everything that hands out or rewrites addresses, or registers a
device key, first takes one transaction-scoped advisory lock
(`lock_addressing`). Two Cores allocating in the same location at once would
otherwise both see the same address as free. These operations are short
admin actions, so serialising them costs nothing noticeable.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Text,
    and_,
    any_,
    bindparam,
    cast,
    column,
    delete,
    func,
    insert,
    select,
    text,
    true,
    union,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, INET
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.selectable import Select, Subquery, TableValuedAlias
from sqlalchemy.types import TypeEngine

from defguard.core.devices.models import Device, DeviceLocation, DeviceType
from defguard.core.errors import ApiError, bad_request
from defguard.core.groups.models import Group, group_user
from defguard.core.locations.models import Location, location_allowed_group
from defguard.core.users.models import User
from defguard.db.engine import Database
from defguard.wireguard.addressing import (
    Address,
    AddressPlan,
    Interface,
    NetworkFull,
    as_interface,
    first_overfull,
    parse_host,
    plan_location,
)

ADDRESSING_LOCK = 0x64670002

_dl = DeviceLocation.__table__
# Addresses are read as text and parsed by `parse_host`, several times faster
# than the driver's generic `inet` loader on tens of thousands of rows.
_TEXTS = ARRAY(Text)


async def lock_addressing(db: AsyncSession) -> None:
    """Serialise address allocation and device-key registration across Cores."""
    await db.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADDRESSING_LOCK})


# -- small SQL helpers ---------------------------------------------------------


def id_array(ids: Iterable[int]) -> ColumnElement[Any]:
    """One array parameter instead of an `IN (...)` list with a parameter per id."""
    return bindparam(None, list(ids), type_=ARRAY(BigInteger))


def unnest_table(
    **columns: tuple[TypeEngine[Any] | type[TypeEngine[Any]], list[Any]],
) -> TableValuedAlias:
    """Parallel Python lists as one derived table, so N rows cost one statement."""
    params = []
    cols = []
    for name, (type_, values) in columns.items():
        params.append(bindparam(None, values, type_=ARRAY(type_)))
        cols.append(column(name, type_))
    return func.unnest(*params).table_valued(*cols).render_derived()


def ips_text(ips: Iterable[Address]) -> str:
    """Address lists travel as comma-joined text and are cast back to `inet[]` in SQL;
    PostgreSQL cannot unnest an array of arrays row by row."""
    return ",".join(str(ip) for ip in ips)


def _inet_array(value: ColumnElement[Any]) -> ColumnElement[Any]:
    return cast(func.string_to_array(value, ","), ARRAY(INET))


# -- reading -------------------------------------------------------------------


def location_subnets(location: Location) -> list[Interface]:
    return [as_interface(a) for a in location.address]


def allowed_pairs(
    *, location_ids: Sequence[int] | None = None, user_ids: Sequence[int] | None = None
) -> Subquery:
    """`(location_id, user_id)` for every active user a location admits.

    A union of three joins (admin groups everywhere, allowed groups, and every
    user where `allow_all_groups`) rather than a per-pair EXISTS: the planner
    hash-joins each branch, so the cost grows with rows, not users x locations.
    The SQL function `device_admitted` (migration 0007) applies the same three
    rules to one pair, for VPN-client MFA: a change here must change it too.
    """
    gu, ag = group_user, location_allowed_group

    def narrow(query: Select[Any], location_col: Any, user_col: Any) -> Select[Any]:
        if location_ids is not None:
            query = query.where(location_col == any_(id_array(location_ids)))
        if user_ids is not None:
            query = query.where(user_col == any_(id_array(user_ids)))
        return query

    admins = narrow(
        select(Location.id.label("location_id"), gu.c.user_id.label("user_id"))
        .select_from(Location)
        .join(gu, true())
        .join(Group, and_(Group.id == gu.c.group_id, Group.is_admin)),
        Location.id,
        gu.c.user_id,
    )
    members = narrow(
        select(ag.c.network_id, gu.c.user_id).join(gu, gu.c.group_id == ag.c.group_id),
        ag.c.network_id,
        gu.c.user_id,
    )
    everyone = narrow(
        select(Location.id, User.id)
        .select_from(Location)
        .join(User, true())
        .where(Location.allow_all_groups),
        Location.id,
        User.id,
    )
    pairs = union(admins, members, everyone).subquery("access")
    return (
        select(pairs.c.location_id, pairs.c.user_id)
        .join(User, User.id == pairs.c.user_id)
        .where(User.is_active)
        .subquery("allowed")
    )


async def allowed_device_ids(db: AsyncSession, location_ids: Sequence[int]) -> dict[int, set[int]]:
    """Per location: user devices of active, allowed users plus its bound network devices."""
    result: dict[int, set[int]] = {lid: set() for lid in location_ids}
    if not location_ids:
        return result
    allowed = allowed_pairs(location_ids=location_ids)
    user_devices = select(allowed.c.location_id, Device.id).join(
        Device,
        and_(Device.user_id == allowed.c.user_id, Device.device_type == DeviceType.USER),
    )
    network_devices = (
        select(DeviceLocation.wireguard_network_id, Device.id)
        .join(Device, Device.id == DeviceLocation.device_id)
        .where(
            DeviceLocation.wireguard_network_id == any_(id_array(location_ids)),
            Device.device_type == DeviceType.NETWORK,
        )
    )
    for query in (user_devices, network_devices):
        for location_id, device_id in await db.execute(query):
            result[location_id].add(device_id)
    return result


async def allowed_locations_of_users(
    db: AsyncSession, user_ids: Iterable[int]
) -> dict[int, set[int]]:
    """Per active user: the locations whose access rules admit them."""
    ids = sorted(set(user_ids))
    result: dict[int, set[int]] = defaultdict(set)
    if not ids:
        return result
    allowed = allowed_pairs(user_ids=ids)
    for location_id, user_id in await db.execute(select(allowed)):
        result[user_id].add(location_id)
    return result


@dataclass(frozen=True)
class Assignment:
    row_id: int
    ips: tuple[Address, ...]


async def load_assignments(
    db: AsyncSession, location_ids: Sequence[int]
) -> dict[int, dict[int, Assignment]]:
    """Per location, per device: its `wireguard_network_device` row."""
    result: dict[int, dict[int, Assignment]] = {lid: {} for lid in location_ids}
    if not location_ids:
        return result
    query = select(
        _dl.c.id, _dl.c.device_id, _dl.c.wireguard_network_id, cast(_dl.c.wireguard_ips, _TEXTS)
    ).where(_dl.c.wireguard_network_id == any_(id_array(location_ids)))
    for row_id, device_id, location_id, ips in await db.execute(query):
        result[location_id][device_id] = Assignment(row_id, tuple(parse_host(ip) for ip in ips))
    return result


async def used_addresses(
    db: AsyncSession, location_ids: Sequence[int], *, except_device: int | None = None
) -> dict[int, set[Address]]:
    """Per location: every address some device holds (optionally ignoring one device)."""
    result: dict[int, set[Address]] = {lid: set() for lid in location_ids}
    if not location_ids:
        return result
    query = select(_dl.c.wireguard_network_id, func.host(func.unnest(_dl.c.wireguard_ips))).where(
        _dl.c.wireguard_network_id == any_(id_array(location_ids))
    )
    if except_device is not None:
        query = query.where(_dl.c.device_id != except_device)
    for location_id, ip in await db.execute(query):
        result[location_id].add(parse_host(ip))
    return result


# -- writing -------------------------------------------------------------------


async def insert_assignments(
    db: AsyncSession, rows: Sequence[tuple[int, int, Sequence[Address]]]
) -> None:
    """Insert `(device_id, location_id, ips)` rows in one statement."""
    if not rows:
        return
    src = unnest_table(
        device_id=(BigInteger, [r[0] for r in rows]),
        location_id=(BigInteger, [r[1] for r in rows]),
        ips=(Text, [ips_text(r[2]) for r in rows]),
    )
    await db.execute(
        insert(_dl).from_select(
            ["device_id", "wireguard_network_id", "wireguard_ips"],
            select(src.c.device_id, src.c.location_id, _inet_array(src.c.ips)),
        )
    )


async def update_assignments(
    db: AsyncSession, rows: Sequence[tuple[int, Sequence[Address]]]
) -> None:
    """Rewrite `(row_id, ips)` in one statement."""
    if not rows:
        return
    src = unnest_table(
        row_id=(BigInteger, [r[0] for r in rows]),
        ips=(Text, [ips_text(r[1]) for r in rows]),
    )
    await db.execute(
        update(_dl).where(_dl.c.id == src.c.row_id).values(wireguard_ips=_inet_array(src.c.ips))
    )


async def delete_assignments(db: AsyncSession, row_ids: Sequence[int]) -> None:
    if row_ids:
        await db.execute(delete(_dl).where(_dl.c.id == any_(id_array(row_ids))))


_BUMP = text(
    """
    WITH bumped AS (
        UPDATE wireguard_network SET config_revision = config_revision + 1
        WHERE id = ANY(:ids) RETURNING id, config_revision
    ), stamped AS (
        UPDATE peer_change SET revision = bumped.config_revision FROM bumped
        WHERE peer_change.location_id = bumped.id AND peer_change.revision IS NULL
    )
    SELECT pg_notify('defguard_location', id || ':' || config_revision) FROM bumped
    """
).bindparams(bindparam("ids", type_=ARRAY(BigInteger)))


async def bump_revisions(db: AsyncSession, location_ids: Iterable[int]) -> None:
    """Tell gateways (through the revision they follow) that these locations changed.

    The new revision also claims the location's pending `peer_change` rows
    (written by triggers in this transaction), which makes it a diff any Core
    can rebuild, and every Core hears of it through NOTIFY once this commits.
    """
    ids = sorted(set(location_ids))
    if ids:
        await db.execute(_BUMP, {"ids": ids})


# Like _BUMP, but only where something is still unclaimed: concurrent MFA
# successes claim each other's changes, and an empty revision costs every
# gateway link a round of work for nothing. Sent over `Database.direct`: it
# follows every MFA success.
_BUMP_PENDING = """
WITH bumped AS (
    UPDATE wireguard_network SET config_revision = config_revision + 1
    WHERE id = ANY(%(ids)s::bigint[]) AND EXISTS (
        SELECT 1 FROM peer_change p
        WHERE p.location_id = wireguard_network.id AND p.revision IS NULL
    )
    RETURNING id, config_revision
), stamped AS (
    UPDATE peer_change SET revision = bumped.config_revision FROM bumped
    WHERE peer_change.location_id = bumped.id AND peer_change.revision IS NULL
)
SELECT pg_notify('defguard_location', id || ':' || config_revision) FROM bumped
"""

_PENDING_LOCATIONS = text(
    """
    SELECT DISTINCT location_id FROM peer_change
    WHERE revision IS NULL AND created_at < timezone('utc', now()) - make_interval(secs => :age)
    """
)


async def bump_committed(db: Database, location_ids: Iterable[int]) -> None:
    """A revision for changes that already committed, in a transaction of its own.

    For the hottest change, a VPN-client MFA success: bumping inside the
    request's transaction would hold the location row, and so serialise
    every MFA of that location, for the whole rest of the request. Here the
    row is held for one statement. Should the Core die between the commit and
    this, `sweep_pending` bumps the forgotten rows within seconds.
    """
    ids = sorted(set(location_ids))
    if ids:
        # One statement, atomic by itself: no BEGIN/COMMIT round trips around it.
        async with db.direct.connection() as conn:
            await conn.fetchall(_BUMP_PENDING, {"ids": ids})


class _Publisher:
    """One `bump_committed` at a time per process; callers meanwhile join the next one.

    Under load many MFA successes per second land in the same location: one
    bump claims every change committed before it, so a caller that arrives
    while a bump runs only needs the one after it. Each caller still returns
    only once a bump that started after its commit is done.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self.pending: set[int] = set()
        self.waiters: list[asyncio.Future[None]] = []
        self.running: asyncio.Task[None] | None = None

    async def publish(self, location_ids: Iterable[int]) -> None:
        done = asyncio.get_running_loop().create_future()
        self.pending.update(location_ids)
        self.waiters.append(done)
        if self.running is None or self.running.done():
            self.running = asyncio.ensure_future(self._run())
        await done

    async def _run(self) -> None:
        while self.waiters:
            ids, waiters = self.pending, self.waiters
            self.pending, self.waiters = set(), []
            try:
                await bump_committed(self.db, ids)
            except Exception as exc:
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(exc)
            else:
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)


_publishers: weakref.WeakKeyDictionary[Database, _Publisher] = weakref.WeakKeyDictionary()


async def publish_committed(db: Database, location_ids: Iterable[int]) -> None:
    """`bump_committed`, coalesced with this process's concurrent callers."""
    publisher = _publishers.get(db)
    if publisher is None:
        publisher = _publishers[db] = _Publisher(db)
    await publisher.publish(location_ids)


async def sweep_pending(db: Database, older_than_seconds: float) -> list[int]:
    """Bump locations whose committed peer changes no revision has claimed yet."""
    async with db.session() as s:
        ids = list((await s.execute(_PENDING_LOCATIONS, {"age": older_than_seconds})).scalars())
    await bump_committed(db, ids)
    return ids


# -- errors --------------------------------------------------------------------


def network_full(location_name: str, subnet: Interface) -> ApiError:
    return bad_request(
        f"Network {subnet.network} is full, no free address left in location {location_name}",
        code="network_full",
    )


CAPACITY_MSG = "Network address space cannot fit all devices"


# -- re-sync -------------------------------------------------------------------


@dataclass(frozen=True)
class SyncTarget:
    """A location as the re-sync sees it; `subnets` may be a not-yet-committed new value."""

    id: int
    name: str
    subnets: list[Interface]


async def sync_locations(
    db: AsyncSession, targets: Sequence[SyncTarget], *, check_capacity: bool = False
) -> set[int]:
    """Re-derive the assignment rows of `targets`; returns the ids whose rows changed.

    Does not take the addressing lock nor bump revisions: callers do both, so a
    location update can bump its revision once for all of its changes.
    """
    ids = [t.id for t in targets]
    allowed = await allowed_device_ids(db, ids)
    current = await load_assignments(db, ids)
    plans: dict[int, AddressPlan] = {}
    for target in targets:
        rows = current[target.id]
        devices = allowed[target.id]
        if check_capacity and first_overfull(target.subnets, len(devices)) is not None:
            raise bad_request(CAPACITY_MSG)
        try:
            plans[target.id] = plan_location(
                target.subnets, {d: a.ips for d, a in rows.items()}, devices
            )
        except NetworkFull as exc:
            raise network_full(target.name, exc.subnet) from None
    await apply_plans(db, plans, current)
    return {lid for lid, plan in plans.items() if plan.changed}


async def apply_plans(
    db: AsyncSession,
    plans: Mapping[int, AddressPlan],
    current: Mapping[int, Mapping[int, Assignment]],
) -> None:
    deletes: list[int] = []
    updates: list[tuple[int, Sequence[Address]]] = []
    inserts: list[tuple[int, int, Sequence[Address]]] = []
    for location_id, plan in plans.items():
        rows = current[location_id]
        deletes.extend(rows[d].row_id for d in plan.remove)
        for device_id, ips in plan.assign.items():
            existing = rows.get(device_id)
            if existing is None:
                inserts.append((device_id, location_id, ips))
            else:
                updates.append((existing.row_id, ips))
    await delete_assignments(db, deletes)
    await update_assignments(db, updates)
    await insert_assignments(db, inserts)


async def _targets(db: AsyncSession, location_ids: Iterable[int] | None) -> list[SyncTarget]:
    query = select(Location.id, Location.name, Location.address).order_by(Location.id)
    if location_ids is not None:
        query = query.where(Location.id == any_(id_array(set(location_ids))))
    rows = await db.execute(query)
    return [
        SyncTarget(lid, name, [as_interface(a) for a in address]) for lid, name, address in rows
    ]


async def resync_locations(db: AsyncSession, location_ids: Iterable[int] | None = None) -> set[int]:
    if location_ids is not None:
        location_ids = list(location_ids)
        if not location_ids:
            return set()
    await db.flush()
    await lock_addressing(db)
    targets = await _targets(db, location_ids)
    changed = await sync_locations(db, targets)
    await bump_revisions(db, changed)
    return changed
