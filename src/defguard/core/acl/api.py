"""REST endpoints of ACL 2.0 (`/acl/rule`, `/acl/alias`, `/acl/destination`) and the firewall preview.

Admin only. Literal segments (`count`, `apply`) are declared before the
`{id}` routes so they are never parsed as ids. Aliases and Destinations
share one table and one set of handlers, built once per kind.

This module deliberately has no `from __future__ import annotations`: the
per-kind handlers are built in a function, and FastAPI must see their body
and response types as objects, not as names to resolve later.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, status

from defguard.core.acl import service
from defguard.core.acl.explain import compile_for, explain_flow
from defguard.core.acl.models import AliasKind
from defguard.core.acl.schemas import (
    Alias,
    AliasCount,
    ApplyAliases,
    ApplyDestinations,
    ApplyRules,
    Destination,
    EditAlias,
    EditDestination,
    EditRule,
    ExplainOut,
    FirewallOut,
    Rule,
    RuleCount,
)
from defguard.core.auth.deps import AdminCaller
from defguard.core.context import AuditCtx, DbSession
from defguard.core.firewall import config_to_json
from defguard.core.pagination import PageParams, Paginated
from defguard.core.schemas import Empty, error_responses

router = APIRouter(tags=["acl"])

Page = Annotated[PageParams, Depends()]
_READ = error_responses(401, 403)
_ONE = error_responses(400, 401, 403, 404)
_WRITE = error_responses(400, 401, 403, 404, 409, 422)


# -- rules -----------------------------------------------------------------------


@router.get("/acl/rule", response_model=Paginated[Rule], responses=_READ)
async def list_rules(_: AdminCaller, db: DbSession, page: Page) -> Paginated[Rule]:
    """Every rule in any state, by id."""
    total, rules = await service.list_rules(db, offset=page.offset, limit=page.per_page)
    return Paginated[Rule](data=rules, pagination=page.meta(total))


@router.get("/acl/rule/count", response_model=RuleCount, responses=_READ)
async def count_rules(_: AdminCaller, db: DbSession) -> RuleCount:
    return await service.count_rules(db)


@router.put("/acl/rule/apply", response_model=Empty, responses=_WRITE)
async def apply_rules(body: ApplyRules, caller: AdminCaller, ctx: AuditCtx, db: DbSession) -> Empty:
    """Apply pending rules in one transaction; one unknown or non-pending id applies nothing."""
    await service.apply_rules(db, body.rules, actor=caller.user, ctx=ctx)
    await db.commit()
    return Empty()


@router.get("/acl/rule/{rule_id}", response_model=Rule, responses=_ONE)
async def get_rule(rule_id: int, _: AdminCaller, db: DbSession) -> Rule:
    return await service.rule_view(db, await service.get_rule(db, rule_id))


@router.post(
    "/acl/rule", response_model=Rule, status_code=status.HTTP_201_CREATED, responses=_WRITE
)
async def create_rule(body: EditRule, caller: AdminCaller, ctx: AuditCtx, db: DbSession) -> Rule:
    """A new rule is `New`: it reaches gateways only once applied."""
    rule = await service.create_rule(db, body, actor=caller.user, ctx=ctx)
    view = await service.rule_view(db, rule)
    await db.commit()
    return view


@router.put("/acl/rule/{rule_id}", response_model=Rule, responses=_WRITE)
async def update_rule(
    rule_id: int, body: EditRule, caller: AdminCaller, ctx: AuditCtx, db: DbSession
) -> Rule:
    """Editing an applied rule returns its new pending child (`Modified`, `parent_id` set)."""
    rule = await service.update_rule(db, rule_id, body, actor=caller.user, ctx=ctx)
    view = await service.rule_view(db, rule)
    await db.commit()
    return view


@router.delete("/acl/rule/{rule_id}", response_model=Empty, responses=_ONE)
async def delete_rule(rule_id: int, caller: AdminCaller, ctx: AuditCtx, db: DbSession) -> Empty:
    """A pending rule is removed; an applied one gets a `Deleted` child to apply."""
    await service.delete_rule(db, rule_id, actor=caller.user, ctx=ctx)
    await db.commit()
    return Empty()


# -- aliases and destinations ----------------------------------------------------------


def _alias_routes(
    kind: AliasKind,
    segment: str,
    edit_model: type[EditAlias],
    out_model: type[Alias] | type[Destination],
    apply_model: type[ApplyAliases] | type[ApplyDestinations],
    apply_field: str,
) -> None:
    base = f"/acl/{segment}"
    word = "Destination" if kind is AliasKind.DESTINATION else "Alias"

    async def list_(_: AdminCaller, db: DbSession, page: Page) -> Any:
        total, views = await service.list_aliases(db, kind, offset=page.offset, limit=page.per_page)
        return {"data": views, "pagination": page.meta(total)}

    async def count(_: AdminCaller, db: DbSession) -> AliasCount:
        return await service.count_aliases(db, kind)

    async def apply(body: apply_model, caller: AdminCaller, ctx: AuditCtx, db: DbSession) -> Empty:  # type: ignore[valid-type]
        ids = getattr(body, apply_field)
        await service.apply_aliases(db, kind, ids, actor=caller.user, ctx=ctx)
        await db.commit()
        return Empty()

    async def get(alias_id: int, _: AdminCaller, db: DbSession) -> Any:
        return await service.alias_view(db, await service.get_alias(db, kind, alias_id))

    async def create(body: edit_model, caller: AdminCaller, ctx: AuditCtx, db: DbSession) -> Any:  # type: ignore[valid-type]
        alias = await service.create_alias(db, kind, body, actor=caller.user, ctx=ctx)
        view = await service.alias_view(db, alias)
        await db.commit()
        return view

    async def update(
        alias_id: int,
        body: edit_model,  # type: ignore[valid-type]
        caller: AdminCaller,
        ctx: AuditCtx,
        db: DbSession,
    ) -> Any:
        alias = await service.update_alias(db, kind, alias_id, body, actor=caller.user, ctx=ctx)
        view = await service.alias_view(db, alias)
        await db.commit()
        return view

    async def remove(alias_id: int, caller: AdminCaller, ctx: AuditCtx, db: DbSession) -> Empty:
        await service.delete_alias(db, kind, alias_id, actor=caller.user, ctx=ctx)
        await db.commit()
        return Empty()

    lower = segment
    router.add_api_route(
        base,
        list_,
        methods=["GET"],
        response_model=Paginated[out_model],  # type: ignore[valid-type]
        responses=_READ,
        name=f"list_{lower}",
        summary=f"List {word}s",
    )
    router.add_api_route(
        f"{base}/count",
        count,
        methods=["GET"],
        response_model=AliasCount,
        responses=_READ,
        name=f"count_{lower}",
        summary=f"Count {word}s",
    )
    router.add_api_route(
        f"{base}/apply",
        apply,
        methods=["PUT"],
        response_model=Empty,
        responses=_WRITE,
        name=f"apply_{lower}",
        summary=f"Apply modified {word}s",
        description="Every rule link moves from each parent to its applied version.",
    )
    router.add_api_route(
        f"{base}/{{alias_id}}",
        get,
        methods=["GET"],
        response_model=out_model,
        responses=_ONE,
        name=f"get_{lower}",
        summary=f"Get a {word}",
    )
    router.add_api_route(
        base,
        create,
        methods=["POST"],
        response_model=out_model,
        status_code=status.HTTP_201_CREATED,
        responses=_WRITE,
        name=f"create_{lower}",
        summary=f"Create a {word}",
        description=f"A {word} is applied on creation.",
    )
    router.add_api_route(
        f"{base}/{{alias_id}}",
        update,
        methods=["PUT"],
        response_model=out_model,
        responses=_WRITE,
        name=f"update_{lower}",
        summary=f"Modify a {word}",
        description="Editing an applied one returns its new `Modified` child.",
    )
    router.add_api_route(
        f"{base}/{{alias_id}}",
        remove,
        methods=["DELETE"],
        response_model=Empty,
        responses=_ONE,
        name=f"delete_{lower}",
        summary=f"Delete a {word}",
        description="Refused (400) while any rule links it.",
    )


_alias_routes(AliasKind.COMPONENT, "alias", EditAlias, Alias, ApplyAliases, "aliases")
_alias_routes(
    AliasKind.DESTINATION,
    "destination",
    EditDestination,
    Destination,
    ApplyDestinations,
    "destinations",
)


# -- firewall preview ---------------------------------------------------------------


@router.get(
    "/network/{network_id}/firewall",
    response_model=FirewallOut | None,
    responses=error_responses(401, 403, 404, 409),
)
async def firewall_preview(network_id: int, _: AdminCaller, db: DbSession) -> Any:
    """The compiled firewall of a location as its gateways get it; `null` when ACL is disabled."""
    _, config = await compile_for(db, network_id)
    return config_to_json(config)


@router.get(
    "/network/{network_id}/firewall/explain",
    response_model=ExplainOut,
    responses=error_responses(400, 401, 403, 404, 409),
)
async def firewall_explain(
    network_id: int,
    _: AdminCaller,
    db: DbSession,
    user: Annotated[str, Query(description="username")],
    to: Annotated[str, Query(description="ADDR[:PORT][/tcp|udp|icmp]; IPv6 as [ADDR]:PORT")],
) -> ExplainOut:
    """Which firewall rule decides a flow from each of the user's devices in the location."""
    return await explain_flow(db, network_id, user, to)
