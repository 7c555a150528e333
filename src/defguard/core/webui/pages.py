"""What every console page needs: the signed-in admin, the CSRF token and rendering.

Pages read through the same services as the REST API; every change goes through
the REST API itself (see `defguard/web/static/forms.js`), so validation and
errors are the API's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from defguard.core.auth.deps import SESSION_COOKIE
from defguard.core.auth.models import Session
from defguard.core.context import DbSession
from defguard.core.settings.service import get_settings_row
from defguard.core.users.models import User
from defguard.db.base import utcnow
from defguard.web import csrf
from defguard.web.templating import make_templates

templates = make_templates(Path(__file__).parent / "templates")

# Scripts and styles come only from /static: an injected tag or attribute does not run.
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# Pages show one-time secrets (a new device's private key, an enrollment token)
# after API calls: no copy may come back from the back-forward cache or a shared cache.
PAGE_HEADERS = {"cache-control": "no-store", "content-security-policy": PAGE_CSP}


class LoginRequired(Exception):
    """Raised by page dependencies; answered with a redirect to the login page."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


class AdminRequired(Exception):
    """A signed-in user who is not an admin (or is disabled) asked for a console page."""

    def __init__(self, user: User) -> None:
        super().__init__(user.username)
        self.user = user


@dataclass
class PageUser:
    user: User
    session: Session
    csrf_token: str


async def secret_key(request: Request, db: AsyncSession) -> str:
    """The shared secret; read once per process (it never changes)."""
    cached = getattr(request.app.state, "secret_key", None)
    if cached is None:
        cached = (await get_settings_row(db)).secret_key
        request.app.state.secret_key = cached
    return cached


async def _signed_in(request: Request, db: DbSession) -> PageUser:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    session_id = request.cookies.get(SESSION_COOKIE)
    session = await db.get(Session, session_id) if session_id else None
    if session is None or session.expires <= utcnow():
        raise LoginRequired(target)
    user = (
        await db.execute(
            select(User).where(User.id == session.user_id).options(selectinload(User.groups))
        )
    ).scalar_one_or_none()
    if user is None or (user.mfa_enabled and not session.mfa_verified):
        raise LoginRequired(target)
    if not user.is_admin or not user.is_active:
        raise AdminRequired(user)
    return PageUser(
        user=user,
        session=session,
        csrf_token=csrf.token_for(await secret_key(request, db), session.id),
    )


Admin = Annotated[PageUser, Depends(_signed_in)]


def render(
    request: Request,
    template: str,
    admin: PageUser | None,
    *,
    section: str = "",
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    """`section` marks the navigation entry of the page."""
    return templates.TemplateResponse(
        request,
        template,
        {
            "admin": admin,
            "csrf_token": admin.csrf_token if admin else "",
            "section": section,
            **context,
        },
        status_code=status_code,
        headers=PAGE_HEADERS,
    )


def login_url(next_url: str) -> str:
    return "/login?next=" + quote(next_url, safe="/")
