"""Health and version endpoints."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel
from sqlalchemy import exists, select

from defguard import __version__
from defguard.core.auth.deps import CurrentCaller
from defguard.core.context import DbSession
from defguard.core.locations.models import Location
from defguard.core.settings.service import get_settings_row

router = APIRouter(tags=["system"])


class LdapInfo(BaseModel):
    enabled: bool
    ad: bool


class AppInfo(BaseModel):
    version: str
    network_present: bool
    smtp_enabled: bool
    ldap_info: LdapInfo
    external_openid_enabled: bool


@router.get("/health", response_class=PlainTextResponse)
async def health() -> str:
    return "alive"


@router.get("/info", response_model=AppInfo)
async def info(_: CurrentCaller, db: DbSession) -> AppInfo:
    present = (await db.execute(select(exists().where(Location.id.is_not(None))))).scalar_one()
    return AppInfo(
        version=__version__,
        network_present=present,
        smtp_enabled=(await get_settings_row(db)).smtp_configured,
        ldap_info=LdapInfo(enabled=False, ad=False),
        external_openid_enabled=False,
    )
