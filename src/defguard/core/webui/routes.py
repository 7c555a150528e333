"""Mounts the console on Core's app: pages, static files and the CSRF guards."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from defguard.core.webui import (
    acl,
    auth_pages,
    dashboard,
    groups,
    locations,
    qr_api,
    system,
    users,
)
from defguard.core.webui.csrf_guard import CsrfTokenGuard
from defguard.core.webui.pages import AdminRequired, LoginRequired, login_url, render
from defguard.web.fetchguard import FetchGuard
from defguard.web.templating import static_files

PAGE_ROUTERS = (
    auth_pages.router,
    qr_api.router,
    dashboard.router,
    users.router,
    groups.router,
    locations.router,
    acl.router,
    system.router,
)


def install_console(app: FastAPI) -> None:
    app.mount("/static", static_files(), name="static")
    for router in PAGE_ROUTERS:
        app.include_router(router, include_in_schema=False)

    @app.exception_handler(LoginRequired)
    async def _login(_: Request, exc: LoginRequired) -> Response:
        return RedirectResponse(login_url(exc.next_url), status_code=303)

    @app.exception_handler(AdminRequired)
    async def _admin(request: Request, exc: AdminRequired) -> HTMLResponse:
        return render(request, "forbidden.html", None, status_code=403, username=exc.user.username)

    # Added last, so it runs first: a cross-site request never reaches the token check.
    app.add_middleware(CsrfTokenGuard, fastapi_app=app)
    app.add_middleware(FetchGuard)
