"""REST endpoints of the Edges feature (`/proxy`, spec §7), admin only.

Unknown ids answer 404 with the body `null`, as the spec records for every
`/proxy/{id}` endpoint. `POST /proxy` registers an Edge by address (the spec's
SSE adoption flow is not offered); the Cores connect to it once it commits.
"""

from __future__ import annotations

from fastapi import APIRouter, status
from fastapi.responses import JSONResponse

from defguard.core.auth.deps import AdminCaller
from defguard.core.context import AuditCtx, DbSession
from defguard.core.proxies import service
from defguard.core.proxies.schemas import ProxyCreate, ProxyInfo, ProxyOut, ProxyUpdate
from defguard.core.schemas import Empty, error_responses

router = APIRouter(tags=["proxies"])

_AUTH_ERRORS = error_responses(401, 403)
_NULL_404 = {404: {"description": "unknown id; the body is `null`"}}


def _null_404() -> JSONResponse:
    return JSONResponse(None, status_code=status.HTTP_404_NOT_FOUND)


@router.get("/proxy", response_model=list[ProxyInfo], responses=_AUTH_ERRORS)
async def list_proxies(_: AdminCaller, db: DbSession) -> list[ProxyInfo]:
    """Every Edge with its link state as seen by any live Core, by id."""
    return await service.proxy_infos(db)


@router.post(
    "/proxy",
    response_model=ProxyOut,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(400, 401, 403, 409),
)
async def create_proxy(body: ProxyCreate, caller: AdminCaller, db: DbSession) -> ProxyOut:
    proxy = await service.create_proxy(db, body, actor=caller.user)
    out = await service.proxy_out(db, proxy)
    await db.commit()
    return out


@router.get("/proxy/{proxy_id}", response_model=ProxyOut, responses={**_AUTH_ERRORS, **_NULL_404})
async def get_proxy(proxy_id: int, _: AdminCaller, db: DbSession) -> ProxyOut | JSONResponse:
    proxy = await service.find_proxy(db, proxy_id)
    if proxy is None:
        return _null_404()
    return await service.proxy_out(db, proxy)


@router.put(
    "/proxy/{proxy_id}",
    response_model=ProxyOut,
    responses={**error_responses(400, 401, 403), **_NULL_404},
)
async def update_proxy(
    proxy_id: int, body: ProxyUpdate, caller: AdminCaller, ctx: AuditCtx, db: DbSession
) -> ProxyOut | JSONResponse:
    """Rename, enable or disable; disabling makes every Core drop its link to the Edge."""
    proxy = await service.find_proxy(db, proxy_id, for_update=True)
    if proxy is None:
        return _null_404()
    await service.update_proxy(db, proxy, body, actor=caller.user, ctx=ctx)
    out = await service.proxy_out(db, proxy)
    await db.commit()
    return out


@router.delete("/proxy/{proxy_id}", response_model=Empty, responses={**_AUTH_ERRORS, **_NULL_404})
async def delete_proxy(
    proxy_id: int, caller: AdminCaller, ctx: AuditCtx, db: DbSession
) -> Empty | JSONResponse:
    proxy = await service.find_proxy(db, proxy_id, for_update=True)
    if proxy is None:
        return _null_404()
    await service.delete_proxy(db, proxy, actor=caller.user, ctx=ctx)
    await db.commit()
    return Empty()
