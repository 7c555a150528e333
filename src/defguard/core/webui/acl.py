"""Console pages: ACL rules, Aliases, Destinations, the compiled firewall and explain.

Reads go through the ACL service, as the `/acl/...` handlers do; every change
(create, edit, delete, apply) is a call of those endpoints from the page
(forms.js), so staging, validation and messages are the API's own. Aliases and
Destinations share one table but get separate pages, because the ADR gives
them different roles: an Alias is merged into a rule's manual destination, a
Destination is a complete destination of its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from defguard.core.acl import service
from defguard.core.acl.explain import compile_for
from defguard.core.acl.models import (
    PENDING_RULE_STATES,
    AclAlias,
    AclRule,
    AliasKind,
    AliasState,
)
from defguard.core.acl.schemas import Alias, Destination, EditDestination, EditRule, Rule
from defguard.core.context import DbSession
from defguard.core.devices.models import Device, DeviceLocation, DeviceType
from defguard.core.errors import ApiError
from defguard.core.firewall import config_to_json
from defguard.core.groups.models import Group
from defguard.core.locations.models import Location
from defguard.core.users.models import User
from defguard.core.webui.pages import Admin, PageUser, render

router = APIRouter()

PER_PAGE = 100
# Far above any real ACL setup: the pickers and name lookups list everything.
ALL = 100_000
PROTOCOLS: list[tuple[int, str]] = [(6, "TCP"), (17, "UDP"), (1, "ICMP")]
PROTOCOL_NAMES = dict(PROTOCOLS)


@dataclass(frozen=True)
class Kind:
    """What differs between the Alias and the Destination pages."""

    kind: AliasKind
    segment: str  # API path segment and apply-body key stem
    path: str  # console path
    word: str
    plural: str
    form_id: str
    explanation: str


ALIAS = Kind(
    AliasKind.COMPONENT,
    "alias",
    "/acl/aliases",
    "Alias",
    "Aliases",
    "alias-form",
    "A reusable fragment (addresses, ports or protocols) merged into the manual "
    "destination of each rule that links it.",
)
DESTINATION = Kind(
    AliasKind.DESTINATION,
    "destination",
    "/acl/destinations",
    "Destination",
    "Destinations",
    "destination-form",
    "A complete predefined destination; each one a rule links becomes its own set of "
    "firewall rules, next to the rule's manual destination.",
)


def parse_id(value: str | None) -> int | None:
    """Ids arrive as text so that `/acl/rules/abc` gets the 404 page, not a 422."""
    return int(value) if value and value.isdigit() and len(value) < 19 else None


def protocol_text(protocols: list[int]) -> str:
    return ", ".join(PROTOCOL_NAMES.get(p, str(p)) for p in protocols)


def destination_text(
    addresses: str,
    ports: str,
    protocols: list[int],
    any_address: bool = False,
    any_port: bool = False,
    any_protocol: bool = False,
) -> str:
    """One line an admin can read: "10.0.0.0/24 · ports 443 · TCP"; "any …" where a flag says so."""
    parts = [
        "any address" if any_address else addresses,
        "any port" if any_port else (f"ports {ports}" if ports else ""),
        "any protocol" if any_protocol else protocol_text(protocols),
    ]
    return " · ".join(p for p in parts if p) or "—"


# -- choices and names ---------------------------------------------------------


@dataclass
class Option:
    id: int
    label: str
    hint: str = ""


@dataclass
class LocationOption:
    id: int
    name: str
    acl_enabled: bool
    acl_default_allow: bool


@dataclass
class Choices:
    """Everything a rule can point at, and the names of every id a rule may hold."""

    locations: list[Option]
    users: list[Option]
    groups: list[Option]
    network_devices: list[Option]
    aliases: list[Option]  # applied only: rules may link nothing else
    destinations: list[Option]
    names: dict[str, dict[int, str]] = field(default_factory=dict)

    def name(self, what: str, item_id: int) -> str:
        return self.names[what].get(item_id, f"#{item_id}")


async def location_options(db: AsyncSession) -> list[LocationOption]:
    rows = await db.execute(
        select(
            Location.id, Location.name, Location.acl_enabled, Location.acl_default_allow
        ).order_by(func.lower(Location.name), Location.id)
    )
    return [LocationOption(*row) for row in rows]


async def alias_list(db: AsyncSession, kind: AliasKind) -> list[Any]:
    _, views = await service.list_aliases(db, kind, offset=0, limit=ALL)
    return views


def _alias_option(view: Alias | Destination) -> Option:
    flags = (
        (view.any_address, view.any_port, view.any_protocol)
        if isinstance(view, Destination)
        else (False, False, False)
    )
    return Option(
        view.id, view.name, destination_text(view.addresses, view.ports, view.protocols, *flags)
    )


async def choices(db: AsyncSession) -> Choices:
    locations = await location_options(db)
    users = await db.execute(
        select(User.id, User.username, User.first_name, User.last_name, User.is_active).order_by(
            func.lower(User.username)
        )
    )
    groups = await db.execute(select(Group.id, Group.name).order_by(func.lower(Group.name)))
    devices = await db.execute(
        select(Device.id, Device.name, func.min(Location.name))
        .outerjoin(DeviceLocation, DeviceLocation.device_id == Device.id)
        .outerjoin(Location, Location.id == DeviceLocation.wireguard_network_id)
        .where(Device.device_type == DeviceType.NETWORK)
        .group_by(Device.id, Device.name)
        .order_by(func.lower(Device.name), Device.id)
    )
    aliases = await alias_list(db, AliasKind.COMPONENT)
    destinations = await alias_list(db, AliasKind.DESTINATION)
    out = Choices(
        locations=[
            Option(loc.id, loc.name, "" if loc.acl_enabled else "ACL off") for loc in locations
        ],
        users=[
            Option(uid, username, f"{first} {last}" + ("" if active else " (disabled)"))
            for uid, username, first, last, active in users
        ],
        groups=[Option(gid, name) for gid, name in groups],
        network_devices=[Option(did, name, location or "") for did, name, location in devices],
        aliases=[_alias_option(a) for a in aliases if a.state == "Applied"],
        destinations=[_alias_option(d) for d in destinations if d.state == "Applied"],
    )
    out.names = {
        "location": {o.id: o.label for o in out.locations},
        "user": {o.id: o.label for o in out.users},
        "group": {o.id: o.label for o in out.groups},
        "device": {o.id: o.label for o in out.network_devices},
        "alias": {a.id: a.name for a in aliases},
        "destination": {d.id: d.name for d in destinations},
    }
    return out


# -- rule summaries ------------------------------------------------------------


@dataclass
class RuleRow:
    rule: Rule
    locations: str
    allowed: list[str]
    denied: list[str]
    manual: str | None  # None when the rule uses only its Destinations
    aliases: list[str]
    destinations: list[str]
    pending_child: Child | None


@dataclass
class Child:
    """The pending change (`Modified`) or deletion (`Deleted`) staged for an applied rule."""

    id: int
    state: str


def _sources(rule: Rule, names: Choices, allow: bool) -> list[str]:
    side, prefix = ("allow", "allowed") if allow else ("deny", "denied")
    out: list[str] = []
    for what, label, field_name in (
        ("user", "users", "users"),
        ("group", "groups", "groups"),
        ("device", "network devices", "network_devices"),
    ):
        ids: list[int] = getattr(rule, f"{prefix}_{field_name}")
        if getattr(rule, f"{side}_all_{field_name}"):
            out.append(f"all {label}")
        elif ids:
            out.append(f"{label}: " + ", ".join(names.name(what, i) for i in ids))
    return out


def rule_row(rule: Rule, names: Choices, children: dict[int, Child]) -> RuleRow:
    return RuleRow(
        rule=rule,
        locations="all locations"
        if rule.all_locations
        else ", ".join(names.name("location", i) for i in rule.locations) or "none",
        allowed=_sources(rule, names, True),
        denied=_sources(rule, names, False),
        manual=destination_text(
            rule.addresses,
            rule.ports,
            rule.protocols,
            rule.any_address,
            rule.any_port,
            rule.any_protocol,
        )
        if rule.use_manual_destination_settings
        else None,
        aliases=[names.name("alias", i) for i in rule.aliases],
        destinations=[names.name("destination", i) for i in rule.destinations],
        pending_child=children.get(rule.id),
    )


async def pending_rule_ids(db: AsyncSession) -> list[int]:
    """All pending rules, not only the shown page: "apply" means every staged change."""
    query = select(AclRule.id).where(AclRule.state.in_(PENDING_RULE_STATES)).order_by(AclRule.id)
    return list((await db.execute(query)).scalars())


async def pending_alias_ids(db: AsyncSession, kind: AliasKind) -> list[int]:
    query = (
        select(AclAlias.id)
        .where(AclAlias.kind == kind, AclAlias.state == AliasState.MODIFIED)
        .order_by(AclAlias.id)
    )
    return list((await db.execute(query)).scalars())


def _not_found(request: Request, admin: PageUser, message: str) -> HTMLResponse:
    return render(request, "not_found.html", admin, section="acl", status_code=404, message=message)


# -- rules ---------------------------------------------------------------------


@router.get("/acl", response_class=HTMLResponse)
async def rules_page(request: Request, admin: Admin, db: DbSession) -> HTMLResponse:
    page = parse_id(request.query_params.get("page")) or 1
    total, rules = await service.list_rules(db, offset=(page - 1) * PER_PAGE, limit=PER_PAGE)
    names = await choices(db)
    # A pending child may sit on another page than its parent; look them up directly.
    rows = await db.execute(
        select(AclRule.parent_id, AclRule.id, AclRule.state).where(AclRule.parent_id.is_not(None))
    )
    children = {parent: Child(cid, state.api_name) for parent, cid, state in rows}
    return render(
        request,
        "acl.html",
        admin,
        section="acl",
        tab="rules",
        rows=[rule_row(r, names, children) for r in rules],
        counts=await service.count_rules(db),
        pending=await pending_rule_ids(db),
        pending_aliases=len(await pending_alias_ids(db, AliasKind.COMPONENT)),
        pending_destinations=len(await pending_alias_ids(db, AliasKind.DESTINATION)),
        page=page,
        pages=max(1, -(-total // PER_PAGE)),
        total=total,
        saved=parse_id(request.query_params.get("saved")),
        applied=request.query_params.get("applied") == "1",
        removed=request.query_params.get("removed") == "1",
    )


def expires_value(value: datetime | None) -> str:
    """The `datetime-local` value of a naive UTC time (seconds only when there are any)."""
    if value is None:
        return ""
    return value.strftime("%Y-%m-%dT%H:%M" if value.second == 0 else "%Y-%m-%dT%H:%M:%S")


def _rule_form(
    request: Request,
    admin: PageUser,
    names: Choices,
    values: EditRule,
    *,
    rule: Rule | None,
    parent: Rule | None,
    child: Rule | None,
) -> HTMLResponse:
    return render(
        request,
        "acl_rule.html",
        admin,
        section="acl",
        tab="rules",
        rule=rule,
        parent=parent,
        child=child,
        values=values,
        expires=expires_value(values.expires),
        choices=names,
        protocols=PROTOCOLS,
        alias_kind=ALIAS,
        destination_kind=DESTINATION,
    )


@router.get("/acl/rules/new", response_class=HTMLResponse)
async def new_rule_page(request: Request, admin: Admin, db: DbSession) -> HTMLResponse:
    # The API's defaults, except that a new rule starts out for every location.
    values = EditRule(name="", all_locations=True)
    return _rule_form(request, admin, await choices(db), values, rule=None, parent=None, child=None)


@router.get("/acl/rules/{rule_id}", response_class=HTMLResponse)
async def rule_page(rule_id: str, request: Request, admin: Admin, db: DbSession) -> HTMLResponse:
    rid = parse_id(rule_id)
    try:
        if rid is None:
            raise service.rule_not_found(0)
        rule = await service.rule_view(db, await service.get_rule(db, rid))
    except ApiError:
        return _not_found(request, admin, f"There is no ACL rule with id {rule_id}.")
    parent = (
        await service.rule_view(db, await service.get_rule(db, rule.parent_id))
        if rule.parent_id is not None
        else None
    )
    child_row = (
        await db.execute(select(AclRule).where(AclRule.parent_id == rule.id).limit(1))
    ).scalar_one_or_none()
    child = await service.rule_view(db, child_row) if child_row is not None else None
    return _rule_form(
        request, admin, await choices(db), rule, rule=rule, parent=parent, child=child
    )


# -- aliases and destinations --------------------------------------------------


async def _alias_list_page(
    request: Request, admin: PageUser, db: AsyncSession, kind: Kind
) -> HTMLResponse:
    return render(
        request,
        "acl_aliases.html",
        admin,
        section="acl",
        tab=kind.segment,
        kind=kind,
        items=await alias_list(db, kind.kind),
        pending=await pending_alias_ids(db, kind.kind),
        rule_names=await _rule_names(db),
        protocol_text=protocol_text,
        saved=parse_id(request.query_params.get("saved")),
        applied=request.query_params.get("applied") == "1",
    )


async def _rule_names(db: AsyncSession) -> dict[int, str]:
    return {rid: name for rid, name in await db.execute(select(AclRule.id, AclRule.name))}


async def _alias_form_page(
    request: Request, admin: PageUser, db: AsyncSession, kind: Kind, alias_id: str | None
) -> HTMLResponse:
    item: Any = None
    parent: Any = None
    child: Any = None
    if alias_id is None:
        values: Any = EditDestination(name="")
    else:
        aid = parse_id(alias_id)
        try:
            if aid is None:
                raise service.alias_not_found(kind.kind, 0)
            item = await service.alias_view(db, await service.get_alias(db, kind.kind, aid))
        except ApiError:
            return _not_found(request, admin, f"There is no {kind.word} with id {alias_id}.")
        values = item
        if item.parent_id is not None:
            parent = await service.alias_view(
                db, await service.get_alias(db, kind.kind, item.parent_id)
            )
        child_row = (
            await db.execute(select(AclAlias).where(AclAlias.parent_id == item.id).limit(1))
        ).scalar_one_or_none()
        if child_row is not None:
            child = await service.alias_view(db, child_row)
    return render(
        request,
        "acl_alias.html",
        admin,
        section="acl",
        tab=kind.segment,
        kind=kind,
        item=item,
        parent=parent,
        child=child,
        values=values,
        protocols=PROTOCOLS,
        rule_names=await _rule_names(db),
    )


@router.get("/acl/aliases", response_class=HTMLResponse)
async def aliases_page(request: Request, admin: Admin, db: DbSession) -> HTMLResponse:
    return await _alias_list_page(request, admin, db, ALIAS)


@router.get("/acl/aliases/new", response_class=HTMLResponse)
async def new_alias_page(request: Request, admin: Admin, db: DbSession) -> HTMLResponse:
    return await _alias_form_page(request, admin, db, ALIAS, None)


@router.get("/acl/aliases/{alias_id}", response_class=HTMLResponse)
async def alias_page(alias_id: str, request: Request, admin: Admin, db: DbSession) -> HTMLResponse:
    return await _alias_form_page(request, admin, db, ALIAS, alias_id)


@router.get("/acl/destinations", response_class=HTMLResponse)
async def destinations_page(request: Request, admin: Admin, db: DbSession) -> HTMLResponse:
    return await _alias_list_page(request, admin, db, DESTINATION)


@router.get("/acl/destinations/new", response_class=HTMLResponse)
async def new_destination_page(request: Request, admin: Admin, db: DbSession) -> HTMLResponse:
    return await _alias_form_page(request, admin, db, DESTINATION, None)


@router.get("/acl/destinations/{destination_id}", response_class=HTMLResponse)
async def destination_page(
    destination_id: str, request: Request, admin: Admin, db: DbSession
) -> HTMLResponse:
    return await _alias_form_page(request, admin, db, DESTINATION, destination_id)


# -- firewall preview and explain ----------------------------------------------


def _list_text(values: list[Any]) -> str:
    return ", ".join(str(v) for v in values) if values else "any"


def firewall_text(preview: dict[str, Any]) -> str:
    """The preview JSON as an admin reads a firewall: policy, then each rule in order."""
    lines = [
        f"default policy: {preview['default_policy'].upper()}"
        " (for traffic that no rule below matches)",
        f"{len(preview['rules'])} rule(s), evaluated top to bottom; the first match decides",
    ]
    for r in preview["rules"]:
        lines += [
            "",
            f"[{r['id']}] {r['verdict'].upper()} IPv{r['ip_version']}  # {r['comment']}",
            f"    sources:      {_list_text(r['sources'])}",
            f"    destinations: {_list_text(r['destinations'])}",
            f"    ports:        {_list_text(r['ports'])}",
            f"    protocols:    {protocol_text(r['protocols']) if r['protocols'] else 'any'}",
        ]
    return "\n".join(lines)


@router.get("/acl/firewall", response_class=HTMLResponse)
async def firewall_page(request: Request, admin: Admin, db: DbSession) -> HTMLResponse:
    locations = await location_options(db)
    chosen = parse_id(request.query_params.get("location"))
    if chosen is None and locations:
        # Without a choice, the first location whose gateways actually get a firewall.
        chosen = next((loc.id for loc in locations if loc.acl_enabled), locations[0].id)
    location = next((loc for loc in locations if loc.id == chosen), None)
    preview: dict[str, Any] | None = None
    error = ""
    if location is not None:
        try:
            _, config = await compile_for(db, location.id)
            preview = config_to_json(config)
        except ApiError as exc:
            error = exc.msg
    elif chosen is not None:
        error = f"There is no location with id {chosen}."
    return render(
        request,
        "acl_firewall.html",
        admin,
        section="acl",
        tab="firewall",
        locations=locations,
        location=location,
        preview=preview,
        text=firewall_text(preview) if preview is not None else "",
        raw=json.dumps(preview, indent=2) if preview is not None else "",
        error=error,
        pending=len(await pending_rule_ids(db)),
    )


@router.get("/acl/explain", response_class=HTMLResponse)
async def explain_page(request: Request, admin: Admin, db: DbSession) -> HTMLResponse:
    locations = await location_options(db)
    chosen = parse_id(request.query_params.get("location"))
    if chosen is None:
        chosen = next((loc.id for loc in locations if loc.acl_enabled), None)
    usernames = list(
        (await db.execute(select(User.username).order_by(func.lower(User.username)))).scalars()
    )
    return render(
        request,
        "acl_explain.html",
        admin,
        section="acl",
        tab="explain",
        locations=locations,
        chosen=chosen,
        usernames=usernames,
        user=request.query_params.get("user", ""),
    )
