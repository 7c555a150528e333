"""ACL rules, Aliases and Destinations: validation, staging and apply, in the caller's transaction.

Nothing here commits; API handlers commit once the whole change (rows,
links, revision bumps, activity events) is in place, so a failed batch leaves
the database untouched.

Lifecycle (spec `acl.md`): a rule is created `New`; editing or deleting an
`Applied` (or `Expired`) rule stages a child (`Modified` / `Deleted`, with
`parent_id`) that replaces any earlier pending child; pending rules are
edited in place (editing a `Deleted` child turns it back into a `Modified`
one) or deleted outright. Apply makes `New`/`Modified` rows `Applied`,
replaces their parent, and removes `Deleted` rows with their parent.
Aliases and Destinations are `Applied` at once; editing an applied one
stages a `Modified` child, and applying it moves every rule link from the
parent to the child.

Firewall freshness contract for other features: `mark_firewall_changed`
bumps the given locations' `config_revision`; `mark_users_changed` bumps the
ACL-enabled locations in which the given users have devices (their source
addresses may now belong to different rules). Both are set-based.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Table,
    any_,
    delete,
    exists,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from defguard.core.acl.loader import load_ranges
from defguard.core.acl.models import (
    PENDING_RULE_STATES,
    AclAlias,
    AclRule,
    AliasKind,
    AliasState,
    RuleState,
    acl_alias_range,
    acl_rule_alias,
    acl_rule_device,
    acl_rule_group,
    acl_rule_network,
    acl_rule_range,
    acl_rule_user,
)
from defguard.core.acl.parsing import (
    AddressRange,
    ParsedAddresses,
    ParseError,
    PortRange,
    format_addresses,
    format_ports,
    parse_addresses,
    parse_ports,
    parse_protocols,
    stored_address,
)
from defguard.core.acl.schemas import (
    Alias,
    AliasCount,
    Destination,
    EditAlias,
    EditDestination,
    EditRule,
    Rule,
    RuleCount,
)
from defguard.core.activity.service import record
from defguard.core.context import RequestContext
from defguard.core.devices.models import Device, DeviceLocation, DeviceType
from defguard.core.errors import ApiError, bad_request, not_found
from defguard.core.groups.models import Group
from defguard.core.locations.access import bump_revisions, id_array, unnest_table
from defguard.core.locations.models import Location
from defguard.core.users.models import User
from defguard.db.base import utcnow

# -- marking locations whose firewall changed --------------------------------------


async def mark_firewall_changed(db: AsyncSession, location_ids: Iterable[int]) -> None:
    """Gateways follow `config_revision`; a bump makes them fetch the new firewall config."""
    await bump_revisions(db, location_ids)


async def rule_locations(db: AsyncSession, rule_ids: Iterable[int]) -> set[int]:
    """ACL-enabled locations where any of these rules applies (by link or `all_locations`).

    Must run before the rules' rows or links are deleted: a modification
    that drops a location still has to reach that location's gateways.
    """
    ids = sorted(set(rule_ids))
    if not ids:
        return set()
    everywhere = exists().where(AclRule.id == any_(id_array(ids)), AclRule.all_locations)
    linked = exists().where(
        acl_rule_network.c.network_id == Location.id,
        acl_rule_network.c.rule_id == any_(id_array(ids)),
    )
    query = select(Location.id).where(Location.acl_enabled, everywhere | linked)
    return set((await db.execute(query)).scalars())


async def users_locations(db: AsyncSession, user_ids: Iterable[int]) -> set[int]:
    """ACL-enabled locations where these users have user devices (their rule sources)."""
    ids = sorted(set(user_ids))
    if not ids:
        return set()
    query = (
        select(DeviceLocation.wireguard_network_id)
        .join(Device, Device.id == DeviceLocation.device_id)
        .join(Location, Location.id == DeviceLocation.wireguard_network_id)
        .where(
            Device.user_id == any_(id_array(ids)),
            Device.device_type == DeviceType.USER,
            Location.acl_enabled,
        )
        .distinct()
    )
    return set((await db.execute(query)).scalars())


async def mark_users_changed(
    db: AsyncSession, user_ids: Iterable[int], *, already_bumped: Iterable[int] = ()
) -> set[int]:
    """After a membership or status change: new firewall configs where these users are sources.

    `already_bumped` are locations the caller bumped in this transaction
    (e.g. by a location re-sync); they are not bumped twice.
    """
    locations = await users_locations(db, user_ids) - set(already_bumped)
    await mark_firewall_changed(db, locations)
    return locations


# -- errors ------------------------------------------------------------------------


def parse_failed(exc: ParseError) -> ApiError:
    return ApiError(422, str(exc))


def rule_not_found(rule_id: int) -> ApiError:
    return not_found(f"ACL rule {rule_id} not found")


def _alias_word(kind: AliasKind) -> str:
    return "Destination" if kind is AliasKind.DESTINATION else "Alias"


def alias_not_found(kind: AliasKind, alias_id: int) -> ApiError:
    return not_found(f"{_alias_word(kind)} {alias_id} not found")


# -- validation --------------------------------------------------------------------


def _unique(ids: Iterable[int]) -> list[int]:
    return list(dict.fromkeys(ids))


@dataclass(frozen=True)
class Destinations:
    addresses: ParsedAddresses
    ports: tuple[PortRange, ...]
    protocols: tuple[int, ...]


def _parse_destination(addresses: str, ports: str, protocols: Sequence[int]) -> Destinations:
    try:
        return Destinations(
            parse_addresses(addresses), parse_ports(ports), parse_protocols(protocols)
        )
    except ParseError as exc:
        raise parse_failed(exc) from None


@dataclass(frozen=True)
class ValidRule:
    body: EditRule
    destination: Destinations
    locations: list[int]
    allowed_users: list[int]
    denied_users: list[int]
    allowed_groups: list[int]
    denied_groups: list[int]
    allowed_devices: list[int]
    denied_devices: list[int]
    # Aliases then Destinations, in the order given: the link order the compiler follows.
    alias_links: list[int]


async def _missing(db: AsyncSession, column: Any, ids: Sequence[int], *where: Any) -> list[int]:
    if not ids:
        return []
    found = set(
        (await db.execute(select(column).where(column == any_(id_array(ids)), *where))).scalars()
    )
    return [i for i in ids if i not in found]


def _unknown(field: str, what: str, ids: Sequence[int]) -> ApiError:
    return bad_request(f"{field}: unknown {what} id(s): {', '.join(map(str, ids))}")


async def validate_rule(db: AsyncSession, body: EditRule) -> ValidRule:
    """Parse errors are 422 naming the token; every other problem is a 400 naming the field."""
    if not body.name.strip():
        raise bad_request("name: must not be empty")
    destination = _parse_destination(body.addresses, body.ports, body.protocols)
    locations = _unique(body.locations)
    users = (_unique(body.allowed_users), _unique(body.denied_users))
    groups = (_unique(body.allowed_groups), _unique(body.denied_groups))
    devices = (_unique(body.allowed_network_devices), _unique(body.denied_network_devices))
    aliases, destinations = _unique(body.aliases), _unique(body.destinations)

    if missing := await _missing(db, Location.id, locations):
        raise _unknown("locations", "location", missing)
    for field, ids in zip(("allowed_users", "denied_users"), users, strict=True):
        if missing := await _missing(db, User.id, ids):
            raise _unknown(field, "user", missing)
    for field, ids in zip(("allowed_groups", "denied_groups"), groups, strict=True):
        if missing := await _missing(db, Group.id, ids):
            raise _unknown(field, "group", missing)
    for field, ids in zip(
        ("allowed_network_devices", "denied_network_devices"), devices, strict=True
    ):
        if missing := await _missing(db, Device.id, ids, Device.device_type == DeviceType.NETWORK):
            raise _unknown(field, "network device", missing)
    component = await _linkable(db, "aliases", AliasKind.COMPONENT, aliases)
    await _linkable(db, "destinations", AliasKind.DESTINATION, destinations)

    if not (
        body.allow_all_users
        or body.allow_all_groups
        or body.allow_all_network_devices
        or users[0]
        or groups[0]
        or devices[0]
    ):
        raise bad_request(
            "sources: allow some users, groups or network devices "
            "(or set allow_all_users, allow_all_groups or allow_all_network_devices)"
        )
    if body.use_manual_destination_settings:
        has_addresses = not destination.addresses.empty or any(
            a.addresses or a.has_ranges for a in component
        )
        has_ports = bool(destination.ports) or any(a.ports for a in component)
        has_protocols = bool(destination.protocols) or any(a.protocols for a in component)
        for dimension, present, flag in (
            ("addresses", has_addresses, body.any_address),
            ("ports", has_ports, body.any_port),
            ("protocols", has_protocols, body.any_protocol),
        ):
            if not present and not flag:
                singular = {"addresses": "address", "ports": "port", "protocols": "protocol"}
                raise bad_request(
                    f"{dimension}: the manual destination needs {dimension} "
                    f"(in the rule or a linked Alias) or any_{singular[dimension]}"
                )
    elif not destinations:
        raise bad_request(
            "destinations: at least one Destination is required "
            "when use_manual_destination_settings is off"
        )
    return ValidRule(
        body=body,
        destination=destination,
        locations=locations,
        allowed_users=users[0],
        denied_users=users[1],
        allowed_groups=groups[0],
        denied_groups=groups[1],
        allowed_devices=devices[0],
        denied_devices=devices[1],
        alias_links=[*aliases, *destinations],
    )


@dataclass(frozen=True)
class _AliasContent:
    addresses: bool
    has_ranges: bool
    ports: bool
    protocols: bool


async def _linkable(
    db: AsyncSession, field: str, kind: AliasKind, ids: Sequence[int]
) -> list[_AliasContent]:
    """Rules may link only applied aliases of the kind the field names."""
    if not ids:
        return []
    has_ranges = exists().where(acl_alias_range.c.alias_id == AclAlias.id)
    rows = {
        row.id: row
        for row in await db.execute(
            select(
                AclAlias.id,
                AclAlias.kind,
                AclAlias.state,
                func.cardinality(AclAlias.addresses).label("n_addresses"),
                func.cardinality(AclAlias.ports).label("n_ports"),
                func.cardinality(AclAlias.protocols).label("n_protocols"),
                has_ranges.label("has_ranges"),
            )
            .where(AclAlias.id == any_(id_array(ids)))
            # Held until commit: a concurrent apply or delete of these aliases
            # waits, or has finished and the rows are gone (then a clear 400).
            .with_for_update(read=True)
        )
    }
    word = _alias_word(kind)
    missing = [i for i in ids if i not in rows or rows[i].kind is not kind]
    if missing:
        raise _unknown(field, word, missing)
    pending = [i for i in ids if rows[i].state is not AliasState.APPLIED]
    if pending:
        raise bad_request(
            f"{field}: {word} id(s) {', '.join(map(str, pending))} have unapplied changes; "
            "rules may link only applied ones"
        )
    return [
        _AliasContent(
            addresses=bool(rows[i].n_addresses),
            has_ranges=bool(rows[i].has_ranges),
            ports=bool(rows[i].n_ports),
            protocols=bool(rows[i].n_protocols),
        )
        for i in ids
    ]


# -- reading rules -----------------------------------------------------------------


async def _rule_links(
    db: AsyncSession, table: Table, column: str, rule_ids: Sequence[int]
) -> dict[int, list[Any]]:
    """Per rule, its link rows in link order (id), as `(target_id[, allow])` tuples."""
    result: dict[int, list[Any]] = defaultdict(list)
    if not rule_ids:
        return result
    cols = [table.c.rule_id, table.c[column]]
    if "allow" in table.c:
        cols.append(table.c.allow)
    query = select(*cols).where(table.c.rule_id == any_(id_array(rule_ids))).order_by(table.c.id)
    for row in await db.execute(query):
        result[row[0]].append(tuple(row[1:]))
    return result


async def rule_views(db: AsyncSession, rules: Sequence[AclRule]) -> list[Rule]:
    """`Rule` bodies for many rules with one query per link table."""
    ids = [r.id for r in rules]
    networks = await _rule_links(db, acl_rule_network, "network_id", ids)
    users = await _rule_links(db, acl_rule_user, "user_id", ids)
    groups = await _rule_links(db, acl_rule_group, "group_id", ids)
    devices = await _rule_links(db, acl_rule_device, "device_id", ids)
    ranges = await load_ranges(db, acl_rule_range, "rule_id", ids)
    links: dict[int, list[tuple[int, AliasKind]]] = defaultdict(list)
    if ids:
        query = (
            select(acl_rule_alias.c.rule_id, acl_rule_alias.c.alias_id, AclAlias.kind)
            .join(AclAlias, AclAlias.id == acl_rule_alias.c.alias_id)
            .where(acl_rule_alias.c.rule_id == any_(id_array(ids)))
            .order_by(acl_rule_alias.c.id)
        )
        for rule_id, alias_id, kind in await db.execute(query):
            links[rule_id].append((alias_id, kind))

    def split(rows: list[tuple[int, bool]], allow: bool) -> list[int]:
        return [target for target, flag in rows if flag is allow]

    return [
        Rule(
            id=r.id,
            parent_id=r.parent_id,
            state=r.state.api_name,  # type: ignore[arg-type]
            name=r.name,
            all_locations=r.all_locations,
            locations=[n for (n,) in networks[r.id]],
            expires=r.expires,
            enabled=r.enabled,
            allow_all_users=r.allow_all_users,
            deny_all_users=r.deny_all_users,
            allow_all_groups=r.allow_all_groups,
            deny_all_groups=r.deny_all_groups,
            allow_all_network_devices=r.allow_all_network_devices,
            deny_all_network_devices=r.deny_all_network_devices,
            allowed_users=split(users[r.id], True),
            denied_users=split(users[r.id], False),
            allowed_groups=split(groups[r.id], True),
            denied_groups=split(groups[r.id], False),
            allowed_network_devices=split(devices[r.id], True),
            denied_network_devices=split(devices[r.id], False),
            use_manual_destination_settings=r.use_manual_destination_settings,
            addresses=format_addresses(r.addresses, ranges[r.id]),
            ports=format_ports(r.ports),
            protocols=list(r.protocols),
            any_address=r.any_address,
            any_port=r.any_port,
            any_protocol=r.any_protocol,
            aliases=[a for a, kind in links[r.id] if kind is AliasKind.COMPONENT],
            destinations=[a for a, kind in links[r.id] if kind is AliasKind.DESTINATION],
        )
        for r in rules
    ]


async def rule_view(db: AsyncSession, rule: AclRule) -> Rule:
    return (await rule_views(db, [rule]))[0]


async def list_rules(db: AsyncSession, *, offset: int, limit: int) -> tuple[int, list[Rule]]:
    total = (await db.execute(select(func.count()).select_from(AclRule))).scalar_one()
    rules = (
        await db.execute(select(AclRule).order_by(AclRule.id).offset(offset).limit(limit))
    ).scalars()
    return total, await rule_views(db, list(rules))


async def count_rules(db: AsyncSession) -> RuleCount:
    applied = func.count().filter(AclRule.state == RuleState.APPLIED)
    pending = func.count().filter(AclRule.state.in_(PENDING_RULE_STATES))
    row = (await db.execute(select(applied, pending))).one()
    return RuleCount(applied=row[0], pending=row[1])


async def get_rule(db: AsyncSession, rule_id: int, *, lock: bool = False) -> AclRule:
    query = select(AclRule).where(AclRule.id == rule_id)
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    rule = (await db.execute(query)).scalar_one_or_none()
    if rule is None:
        raise rule_not_found(rule_id)
    return rule


# -- writing rules -----------------------------------------------------------------


def _fill_rule(rule: AclRule, valid: ValidRule, actor: User) -> None:
    body = valid.body
    rule.name = body.name
    rule.all_locations = body.all_locations
    rule.expires = body.expires
    rule.enabled = body.enabled
    rule.allow_all_users = body.allow_all_users
    rule.deny_all_users = body.deny_all_users
    rule.allow_all_groups = body.allow_all_groups
    rule.deny_all_groups = body.deny_all_groups
    rule.allow_all_network_devices = body.allow_all_network_devices
    rule.deny_all_network_devices = body.deny_all_network_devices
    rule.use_manual_destination_settings = body.use_manual_destination_settings
    rule.addresses = [stored_address(a) for a in valid.destination.addresses.addresses]
    rule.ports = list(valid.destination.ports)
    rule.protocols = list(valid.destination.protocols)
    rule.any_address = body.any_address
    rule.any_port = body.any_port
    rule.any_protocol = body.any_protocol
    rule.modified_by = actor.username
    rule.modified_at = utcnow()


@dataclass(frozen=True)
class RuleLinks:
    """Everything of a rule that lives outside its row."""

    locations: Sequence[int] = ()
    users: Sequence[tuple[int, bool]] = ()
    groups: Sequence[tuple[int, bool]] = ()
    devices: Sequence[tuple[int, bool]] = ()
    aliases: Sequence[int] = ()
    ranges: Sequence[AddressRange] = ()

    @classmethod
    def of(cls, valid: ValidRule) -> RuleLinks:
        return cls(
            locations=valid.locations,
            users=[(u, True) for u in valid.allowed_users]
            + [(u, False) for u in valid.denied_users],
            groups=[(g, True) for g in valid.allowed_groups]
            + [(g, False) for g in valid.denied_groups],
            devices=[(d, True) for d in valid.allowed_devices]
            + [(d, False) for d in valid.denied_devices],
            aliases=valid.alias_links,
            ranges=valid.destination.addresses.ranges,
        )


async def _load_links(db: AsyncSession, rule_id: int) -> RuleLinks:
    ids = [rule_id]
    networks = await _rule_links(db, acl_rule_network, "network_id", ids)
    aliases = await _rule_links(db, acl_rule_alias, "alias_id", ids)
    return RuleLinks(
        locations=[n for (n,) in networks[rule_id]],
        users=(await _rule_links(db, acl_rule_user, "user_id", ids))[rule_id],
        groups=(await _rule_links(db, acl_rule_group, "group_id", ids))[rule_id],
        devices=(await _rule_links(db, acl_rule_device, "device_id", ids))[rule_id],
        aliases=[a for (a,) in aliases[rule_id]],
        ranges=(await load_ranges(db, acl_rule_range, "rule_id", ids))[rule_id],
    )


async def _write_links(db: AsyncSession, rule_id: int, links: RuleLinks) -> None:
    async def put(table: Table, rows: list[dict[str, Any]]) -> None:
        if rows:
            await db.execute(insert(table), rows)

    await put(acl_rule_network, [{"rule_id": rule_id, "network_id": n} for n in links.locations])
    await put(
        acl_rule_user, [{"rule_id": rule_id, "user_id": u, "allow": a} for u, a in links.users]
    )
    await put(
        acl_rule_group, [{"rule_id": rule_id, "group_id": g, "allow": a} for g, a in links.groups]
    )
    await put(
        acl_rule_device,
        [{"rule_id": rule_id, "device_id": d, "allow": a} for d, a in links.devices],
    )
    await put(acl_rule_alias, [{"rule_id": rule_id, "alias_id": a} for a in links.aliases])
    await put(acl_rule_range, [{"rule_id": rule_id, "start": s, "end": e} for s, e in links.ranges])


async def _clear_links(db: AsyncSession, rule_id: int) -> None:
    for table in (
        acl_rule_network,
        acl_rule_user,
        acl_rule_group,
        acl_rule_device,
        acl_rule_alias,
        acl_rule_range,
    ):
        await db.execute(delete(table).where(table.c.rule_id == rule_id))


async def _drop_pending_child(db: AsyncSession, parent_id: int) -> None:
    """An applied rule has at most one pending change; a new one replaces the old."""
    await db.execute(
        delete(AclRule)
        .where(AclRule.parent_id == parent_id)
        .execution_options(synchronize_session=False)
    )


async def create_rule(
    db: AsyncSession, body: EditRule, *, actor: User, ctx: RequestContext
) -> AclRule:
    valid = await validate_rule(db, body)
    rule = AclRule(state=RuleState.NEW)
    _fill_rule(rule, valid, actor)
    db.add(rule)
    await db.flush()
    await _write_links(db, rule.id, RuleLinks.of(valid))
    record(db, ctx, actor, "acl_rule_added", f"Added ACL rule {rule.name} (id {rule.id})")
    await db.flush()
    return rule


async def update_rule(
    db: AsyncSession, rule_id: int, body: EditRule, *, actor: User, ctx: RequestContext
) -> AclRule:
    """Returns the row now holding the edit: the rule itself, or its new pending child."""
    rule = await get_rule(db, rule_id, lock=True)
    valid = await validate_rule(db, body)
    if rule.state in (RuleState.APPLIED, RuleState.EXPIRED):
        await _drop_pending_child(db, rule.id)
        target = AclRule(state=RuleState.MODIFIED, parent_id=rule.id)
        _fill_rule(target, valid, actor)
        db.add(target)
        await db.flush()
        description = f"Modified ACL rule {rule.name} (id {rule.id}), pending as id {target.id}"
    else:
        target = rule
        if target.state is RuleState.DELETED:
            target.state = RuleState.MODIFIED
        _fill_rule(target, valid, actor)
        await _clear_links(db, target.id)
        description = f"Modified ACL rule {target.name} (id {target.id})"
    await _write_links(db, target.id, RuleLinks.of(valid))
    record(db, ctx, actor, "acl_rule_modified", description)
    await db.flush()
    return target


async def delete_rule(db: AsyncSession, rule_id: int, *, actor: User, ctx: RequestContext) -> None:
    rule = await get_rule(db, rule_id, lock=True)
    if rule.state in (RuleState.APPLIED, RuleState.EXPIRED):
        await _drop_pending_child(db, rule.id)
        links = await _load_links(db, rule.id)
        child = AclRule(
            **{
                c.key: getattr(rule, c.key)
                for c in AclRule.__table__.c
                if c.key not in ("id", "state", "parent_id", "modified_by", "modified_at")
            },
            state=RuleState.DELETED,
            parent_id=rule.id,
            modified_by=actor.username,
            modified_at=utcnow(),
        )
        db.add(child)
        await db.flush()
        await _write_links(db, child.id, links)
        description = f"Removed ACL rule {rule.name} (id {rule.id}), pending as id {child.id}"
    else:
        await db.delete(rule)
        description = f"Removed pending ACL rule {rule.name} (id {rule.id})"
    record(db, ctx, actor, "acl_rule_removed", description)
    await db.flush()


async def apply_rules(
    db: AsyncSession, rule_ids: Sequence[int], *, actor: User, ctx: RequestContext
) -> set[int]:
    """Apply pending rules as one change; returns the locations whose firewall was marked.

    Any id that is unknown (404) or not pending (400) fails the whole batch;
    the handler then does not commit, so nothing of it is written.
    """
    ids = _unique(rule_ids)
    if not ids:
        return set()
    rows = {
        r.id: r
        for r in await db.execute(
            select(AclRule.id, AclRule.name, AclRule.state, AclRule.parent_id)
            .where(AclRule.id == any_(id_array(ids)))
            .order_by(AclRule.id)
            .with_for_update()
        )
    }
    for rule_id in ids:
        row = rows.get(rule_id)
        if row is None:
            raise rule_not_found(rule_id)
        if row.state not in PENDING_RULE_STATES:
            raise bad_request(
                f"rules: ACL rule {row.name} (id {rule_id}) is {row.state.value}, not pending; "
                "nothing was applied"
            )
    promoted = [i for i in ids if rows[i].state in (RuleState.NEW, RuleState.MODIFIED)]
    removed = [i for i in ids if rows[i].state is RuleState.DELETED]
    parents = [rows[i].parent_id for i in ids if rows[i].parent_id is not None]
    affected = await rule_locations(db, [*ids, *parents])

    await db.flush()
    if promoted:
        await db.execute(
            update(AclRule)
            .where(AclRule.id == any_(id_array(promoted)))
            .values(
                state=RuleState.APPLIED,
                parent_id=None,
                modified_by=actor.username,
                modified_at=utcnow(),
            )
            .execution_options(synchronize_session=False)
        )
    if removed:
        await db.execute(
            delete(AclRule)
            .where(AclRule.id == any_(id_array(removed)))
            .execution_options(synchronize_session=False)
        )
    if parents:
        await db.execute(
            delete(AclRule)
            .where(AclRule.id == any_(id_array(parents)))
            .execution_options(synchronize_session=False)
        )
    await mark_firewall_changed(db, affected)
    for rule_id in ids:
        row = rows[rule_id]
        if row.state is RuleState.DELETED:
            text = f"Applied removal of ACL rule {row.name} (id {row.parent_id or rule_id})"
        elif row.parent_id is not None:
            text = f"Applied ACL rule {row.name} (id {rule_id}, replacing id {row.parent_id})"
        else:
            text = f"Applied ACL rule {row.name} (id {rule_id})"
        record(db, ctx, actor, "acl_rule_applied", text)
    await db.flush()
    return affected


# -- aliases and destinations --------------------------------------------------------


@dataclass(frozen=True)
class ValidAlias:
    name: str
    destination: Destinations
    any_address: bool
    any_port: bool
    any_protocol: bool


def validate_alias(kind: AliasKind, body: EditAlias | EditDestination) -> ValidAlias:
    if not body.name.strip():
        raise bad_request("name: must not be empty")
    destination = _parse_destination(body.addresses, body.ports, body.protocols)
    has = (
        not destination.addresses.empty,
        bool(destination.ports),
        bool(destination.protocols),
    )
    if kind is AliasKind.COMPONENT:
        if not any(has):
            raise bad_request("an Alias needs at least one of addresses, ports or protocols")
        # A component only contributes what it has; the flags record what it leaves out,
        # as the 2.0 upgrade backfilled them.
        flags = (not has[0], not has[1], not has[2])
    else:
        assert isinstance(body, EditDestination)
        flags = (body.any_address, body.any_port, body.any_protocol)
        for dimension, flag_name, present, flag in zip(
            ("addresses", "ports", "protocols"),
            ("any_address", "any_port", "any_protocol"),
            has,
            flags,
            strict=True,
        ):
            if not present and not flag:
                raise bad_request(f"{dimension}: a Destination needs {dimension} or {flag_name}")
    return ValidAlias(body.name, destination, *flags)


def _fill_alias(alias: AclAlias, valid: ValidAlias, actor: User) -> None:
    alias.name = valid.name
    alias.addresses = [stored_address(a) for a in valid.destination.addresses.addresses]
    alias.ports = list(valid.destination.ports)
    alias.protocols = list(valid.destination.protocols)
    alias.any_address = valid.any_address
    alias.any_port = valid.any_port
    alias.any_protocol = valid.any_protocol
    alias.modified_by = actor.username
    alias.modified_at = utcnow()


async def _write_alias_ranges(
    db: AsyncSession, alias_id: int, ranges: Sequence[AddressRange]
) -> None:
    await db.execute(delete(acl_alias_range).where(acl_alias_range.c.alias_id == alias_id))
    if ranges:
        await db.execute(
            insert(acl_alias_range),
            [{"alias_id": alias_id, "start": s, "end": e} for s, e in ranges],
        )


async def alias_views(db: AsyncSession, aliases: Sequence[AclAlias]) -> list[Any]:
    """`Alias` or `Destination` bodies (by kind) with one query for ranges and one for links."""
    ids = [a.id for a in aliases]
    ranges = await load_ranges(db, acl_alias_range, "alias_id", ids)
    rules: dict[int, list[int]] = defaultdict(list)
    if ids:
        query = (
            select(acl_rule_alias.c.alias_id, acl_rule_alias.c.rule_id)
            .where(acl_rule_alias.c.alias_id == any_(id_array(ids)))
            .order_by(acl_rule_alias.c.rule_id)
        )
        for alias_id, rule_id in await db.execute(query):
            rules[alias_id].append(rule_id)
    views: list[Any] = []
    for a in aliases:
        common: dict[str, Any] = {
            "id": a.id,
            "parent_id": a.parent_id,
            "kind": a.kind.api_name,
            "state": a.state.api_name,
            "name": a.name,
            "addresses": format_addresses(a.addresses, ranges[a.id]),
            "ports": format_ports(a.ports),
            "protocols": list(a.protocols),
            "rules": rules[a.id],
        }
        if a.kind is AliasKind.DESTINATION:
            views.append(
                Destination(
                    **common,
                    any_address=a.any_address,
                    any_port=a.any_port,
                    any_protocol=a.any_protocol,
                )
            )
        else:
            views.append(Alias(**common))
    return views


async def alias_view(db: AsyncSession, alias: AclAlias) -> Alias | Destination:
    return (await alias_views(db, [alias]))[0]


async def list_aliases(
    db: AsyncSession, kind: AliasKind, *, offset: int, limit: int
) -> tuple[int, list[Any]]:
    total = (
        await db.execute(select(func.count()).select_from(AclAlias).where(AclAlias.kind == kind))
    ).scalar_one()
    aliases = (
        await db.execute(
            select(AclAlias)
            .where(AclAlias.kind == kind)
            .order_by(AclAlias.id)
            .offset(offset)
            .limit(limit)
        )
    ).scalars()
    return total, list(await alias_views(db, list(aliases)))


async def count_aliases(db: AsyncSession, kind: AliasKind) -> AliasCount:
    applied = func.count().filter(AclAlias.state == AliasState.APPLIED)
    pending = func.count().filter(AclAlias.state == AliasState.MODIFIED)
    row = (await db.execute(select(applied, pending).where(AclAlias.kind == kind))).one()
    return AliasCount(applied=row[0], pending=row[1])


async def get_alias(
    db: AsyncSession, kind: AliasKind, alias_id: int, *, lock: bool = False
) -> AclAlias:
    query = select(AclAlias).where(AclAlias.id == alias_id, AclAlias.kind == kind)
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    alias = (await db.execute(query)).scalar_one_or_none()
    if alias is None:
        raise alias_not_found(kind, alias_id)
    return alias


def _event(kind: AliasKind, action: str) -> str:
    return f"acl_{'destination' if kind is AliasKind.DESTINATION else 'alias'}_{action}"


async def create_alias(
    db: AsyncSession,
    kind: AliasKind,
    body: EditAlias | EditDestination,
    *,
    actor: User,
    ctx: RequestContext,
) -> AclAlias:
    """Applied at once: nothing links a new alias yet, so no firewall changes."""
    valid = validate_alias(kind, body)
    alias = AclAlias(kind=kind, state=AliasState.APPLIED)
    _fill_alias(alias, valid, actor)
    db.add(alias)
    await db.flush()
    await _write_alias_ranges(db, alias.id, valid.destination.addresses.ranges)
    record(
        db,
        ctx,
        actor,
        _event(kind, "added"),
        f"Added {_alias_word(kind)} {alias.name} (id {alias.id})",
    )
    await db.flush()
    return alias


async def update_alias(
    db: AsyncSession,
    kind: AliasKind,
    alias_id: int,
    body: EditAlias | EditDestination,
    *,
    actor: User,
    ctx: RequestContext,
) -> AclAlias:
    """Editing an applied alias stages a `Modified` child; a pending one changes in place."""
    alias = await get_alias(db, kind, alias_id, lock=True)
    valid = validate_alias(kind, body)
    word = _alias_word(kind)
    if alias.state is AliasState.APPLIED:
        await db.execute(
            delete(AclAlias)
            .where(AclAlias.parent_id == alias.id)
            .execution_options(synchronize_session=False)
        )
        target = AclAlias(kind=kind, state=AliasState.MODIFIED, parent_id=alias.id)
        _fill_alias(target, valid, actor)
        db.add(target)
        await db.flush()
        description = f"Modified {word} {alias.name} (id {alias.id}), pending as id {target.id}"
    else:
        target = alias
        _fill_alias(target, valid, actor)
        description = f"Modified {word} {target.name} (id {target.id})"
    await _write_alias_ranges(db, target.id, valid.destination.addresses.ranges)
    record(db, ctx, actor, _event(kind, "modified"), description)
    await db.flush()
    return target


async def delete_alias(
    db: AsyncSession, kind: AliasKind, alias_id: int, *, actor: User, ctx: RequestContext
) -> None:
    alias = await get_alias(db, kind, alias_id, lock=True)
    word = _alias_word(kind)
    users = list(
        (
            await db.execute(
                select(acl_rule_alias.c.rule_id)
                .where(acl_rule_alias.c.alias_id == alias.id)
                .order_by(acl_rule_alias.c.rule_id)
            )
        ).scalars()
    )
    if users:
        raise bad_request(
            f"{word} {alias.name} (id {alias.id}) is used by ACL rule(s) "
            f"{', '.join(map(str, users))} and cannot be deleted"
        )
    # A pending change of a deleted alias goes with it.
    await db.execute(
        delete(AclAlias)
        .where(AclAlias.parent_id == alias.id)
        .execution_options(synchronize_session=False)
    )
    name = alias.name
    await db.delete(alias)
    record(db, ctx, actor, _event(kind, "removed"), f"Removed {word} {name} (id {alias_id})")
    await db.flush()


async def apply_aliases(
    db: AsyncSession,
    kind: AliasKind,
    alias_ids: Sequence[int],
    *,
    actor: User,
    ctx: RequestContext,
) -> set[int]:
    """Make `Modified` versions current: rule links move from each parent to its child.

    Returns the locations whose firewall was marked (those of every rule that
    linked a replaced parent). All or nothing, like `apply_rules`.
    """
    ids = _unique(alias_ids)
    if not ids:
        return set()
    word = _alias_word(kind)
    rows = {
        r.id: r
        for r in await db.execute(
            select(AclAlias.id, AclAlias.name, AclAlias.state, AclAlias.parent_id, AclAlias.kind)
            .where(AclAlias.id == any_(id_array(ids)))
            .order_by(AclAlias.id)
            .with_for_update()
        )
    }
    for alias_id in ids:
        row = rows.get(alias_id)
        if row is None or row.kind is not kind:
            raise alias_not_found(kind, alias_id)
        if row.state is not AliasState.MODIFIED:
            raise bad_request(
                f"{word} {row.name} (id {alias_id}) is already applied; nothing was applied"
            )
    pairs = [(i, rows[i].parent_id) for i in ids if rows[i].parent_id is not None]
    parents = [p for _, p in pairs]
    if parents:
        # Rules being linked to a parent right now hold it FOR SHARE: wait for
        # them, so that their links are seen (and moved) below, not cascaded away.
        await db.execute(
            select(AclAlias.id).where(AclAlias.id == any_(id_array(parents))).with_for_update()
        )
    linking_rules = (
        list(
            (
                await db.execute(
                    select(acl_rule_alias.c.rule_id)
                    .where(acl_rule_alias.c.alias_id == any_(id_array(parents)))
                    .distinct()
                )
            ).scalars()
        )
        if parents
        else []
    )
    affected = await rule_locations(db, linking_rules)
    await db.flush()
    if pairs:
        moves = unnest_table(
            child=(BigInteger, [c for c, _ in pairs]), parent=(BigInteger, [p for _, p in pairs])
        )
        await db.execute(
            update(acl_rule_alias)
            .where(acl_rule_alias.c.alias_id == moves.c.parent)
            .values(alias_id=moves.c.child)
        )
    await db.execute(
        update(AclAlias)
        .where(AclAlias.id == any_(id_array(ids)))
        .values(
            state=AliasState.APPLIED,
            parent_id=None,
            modified_by=actor.username,
            modified_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
    if parents:
        await db.execute(
            delete(AclAlias)
            .where(AclAlias.id == any_(id_array(parents)))
            .execution_options(synchronize_session=False)
        )
    await mark_firewall_changed(db, affected)
    for alias_id in ids:
        row = rows[alias_id]
        text = f"Applied {word} {row.name} (id {alias_id}"
        text += f", replacing id {row.parent_id})" if row.parent_id is not None else ")"
        record(db, ctx, actor, _event(kind, "applied"), text)
    await db.flush()
    return affected
