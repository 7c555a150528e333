"""The sign-in page. Signing in and out are the REST API's `/auth` endpoints."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from defguard.core.webui.pages import render

router = APIRouter()


def safe_next(value: str | None) -> str:
    """Only a path on this site: a redirect elsewhere would help phishing."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, next: str | None = None) -> HTMLResponse:
    return render(request, "login.html", None, next_url=safe_next(next), not_admin="")
