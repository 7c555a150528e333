"""The Core FastAPI application: every feature's router under `/api/v1`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.orm import configure_mappers

import defguard.core.acl.tasks  # registers the periodic rule-expiry job
import defguard.core.mail.tasks  # registers the send_mail job
import defguard.core.vpn_sessions.tasks  # registers the periodic VPN session expiry job
import defguard.db.models  # noqa: F401 - registers every mapper
from defguard import __version__
from defguard.config import CoreSettings
from defguard.core.acl.api import router as acl_router
from defguard.core.activity.api import router as activity_router
from defguard.core.auth.api import router as auth_router
from defguard.core.devices.api import router as devices_router
from defguard.core.enrollment.api import router as enrollment_router
from defguard.core.errors import install_error_handlers
from defguard.core.gateways.api import router as gateways_router
from defguard.core.groups.api import router as groups_router
from defguard.core.locations.api import router as locations_router
from defguard.core.middleware import install_middleware
from defguard.core.proxies.api import router as proxies_router
from defguard.core.settings.api import router as settings_router
from defguard.core.system_api import router as system_router
from defguard.core.users.api import router as users_router
from defguard.core.webui.routes import install_console
from defguard.db.engine import Database

API_PREFIX = "/api/v1"


def create_app(settings: CoreSettings, db: Database, *, own_db: bool = False) -> FastAPI:
    """Build the app around an existing database handle.

    `own_db` makes the app dispose of the engine on shutdown (the `defguard
    core` process); tests keep ownership of their own handle.
    """
    configure_mappers()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if own_db:
            await db.dispose()

    app = FastAPI(
        title="Defguard Core",
        version=__version__,
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.db = db
    install_error_handlers(app)
    install_middleware(app)

    for router in (
        system_router,
        auth_router,
        users_router,
        enrollment_router,
        groups_router,
        # Before locations: `/network/stats` and `/network/gateways` would
        # otherwise match `/network/{network_id}`.
        gateways_router,
        locations_router,
        devices_router,
        activity_router,
        acl_router,
        settings_router,
        proxies_router,
    ):
        app.include_router(router, prefix=API_PREFIX)
    install_console(app)
    return app
