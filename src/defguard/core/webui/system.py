"""Console pages: Edges, gateways, the activity log and the instance settings.

Reads go through what the `/proxy`, `/gateway`, `/activity_log` and
`/settings` handlers use, so a page shows exactly what the API would answer;
every change is a call of those endpoints from the page (forms.js).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import func, select

from defguard.core.activity.api import list_activity
from defguard.core.activity.service import MODULES
from defguard.core.auth.deps import Caller
from defguard.core.context import DbSession
from defguard.core.errors import ApiError
from defguard.core.gateways.service import gateway_infos
from defguard.core.pagination import PageParams
from defguard.core.proxies import service as proxies
from defguard.core.settings.service import get_settings_row, settings_out
from defguard.core.users.models import User
from defguard.core.webui.pages import Admin, PageUser, render

router = APIRouter()

PER_PAGE_CHOICES = (25, 50, 100)
TRAFFIC_POLICIES = [
    (0, "None: clients decide"),
    (1, "Disable all traffic: only the location's allowed IPs"),
    (2, "Force all traffic through the VPN"),
]
SMTP_ENCRYPTIONS = [
    ("None", "None (plain SMTP)"),
    ("StartTls", "STARTTLS"),
    ("ImplicitTls", "Implicit TLS (SMTPS)"),
]
# The event names of spec §8, grouped as the spec lists them. The log is not
# indexed by event, so offering the known names beats a DISTINCT over the table.
EVENT_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "Authentication",
        (
            "user_login",
            "user_login_failed",
            "user_mfa_login",
            "user_mfa_login_failed",
            "recovery_code_used",
            "user_logout",
        ),
    ),
    (
        "MFA management",
        (
            "mfa_disabled",
            "user_mfa_disabled",
            "mfa_totp_disabled",
            "mfa_totp_enabled",
            "mfa_email_disabled",
            "mfa_email_enabled",
            "mfa_security_key_added",
            "mfa_security_key_removed",
        ),
    ),
    (
        "Users",
        (
            "user_added",
            "user_removed",
            "user_modified",
            "user_groups_modified",
            "password_changed",
            "password_changed_by_admin",
            "password_reset",
        ),
    ),
    (
        "Devices",
        (
            "device_added",
            "device_removed",
            "device_modified",
            "network_device_added",
            "network_device_removed",
            "network_device_modified",
        ),
    ),
    (
        "Log streams and client configuration",
        (
            "activity_log_stream_created",
            "activity_log_stream_modified",
            "activity_log_stream_removed",
            "client_configuration_token_added",
        ),
    ),
    (
        "OpenID",
        (
            "open_id_app_added",
            "open_id_app_removed",
            "open_id_app_modified",
            "open_id_app_state_changed",
            "open_id_provider_removed",
            "open_id_provider_modified",
        ),
    ),
    ("VPN locations", ("vpn_location_added", "vpn_location_removed", "vpn_location_modified")),
    (
        "VPN client",
        (
            "vpn_client_connected",
            "vpn_client_disconnected",
            "vpn_client_mfa_connected",
            "vpn_client_mfa_disconnected",
            "vpn_client_mfa_success",
            "vpn_client_mfa_failed",
        ),
    ),
    (
        "Enrollment and password reset",
        (
            "enrollment_token_added",
            "enrollment_started",
            "enrollment_device_added",
            "enrollment_completed",
            "password_reset_requested",
            "password_reset_started",
            "password_reset_completed",
        ),
    ),
    ("API tokens", ("api_token_added", "api_token_removed", "api_token_renamed")),
    (
        "Settings",
        ("settings_updated", "settings_updated_partial", "settings_default_branding_restored"),
    ),
    (
        "Groups",
        (
            "groups_bulk_assigned",
            "group_added",
            "group_modified",
            "group_removed",
            "group_member_added",
            "group_member_removed",
            "group_members_modified",
        ),
    ),
    (
        "Webhooks",
        ("web_hook_added", "web_hook_modified", "web_hook_removed", "web_hook_state_changed"),
    ),
    (
        "Authentication keys",
        (
            "authentication_key_added",
            "authentication_key_removed",
            "authentication_key_renamed",
        ),
    ),
    (
        "SNAT bindings",
        (
            "user_snat_binding_added",
            "user_snat_binding_removed",
            "user_snat_binding_modified",
        ),
    ),
    (
        "Edges and gateways",
        ("proxy_modified", "proxy_deleted", "gateway_modified", "gateway_deleted"),
    ),
)


def _not_found(request: Request, admin: PageUser, section: str, message: str) -> HTMLResponse:
    return render(
        request, "not_found.html", admin, section=section, status_code=404, message=message
    )


# -- Edges -----------------------------------------------------------------------------


@router.get("/edges", response_class=HTMLResponse)
async def edges_page(request: Request, admin: Admin, db: DbSession) -> HTMLResponse:
    return render(
        request, "edges.html", admin, section="edges", edges=await proxies.proxy_infos(db)
    )


@router.get("/edges/{edge_id}", response_class=HTMLResponse)
async def edge_page(edge_id: str, request: Request, admin: Admin, db: DbSession) -> HTMLResponse:
    # Text, not int: `/edges/abc` gets the 404 page rather than a JSON 422.
    proxy = (
        await proxies.find_proxy(db, int(edge_id))
        if edge_id.isdigit() and len(edge_id) < 19
        else None
    )
    if proxy is None:
        return _not_found(request, admin, "edges", f"There is no Edge with id {edge_id}.")
    link = (await proxies.link_views(db, [proxy.id]))[proxy.id]
    return render(
        request,
        "edges_detail.html",
        admin,
        section="edges",
        edge=await proxies.proxy_out(db, proxy),
        connected=link.connected,
        saved=request.query_params.get("saved") == "1",
    )


# -- Gateways --------------------------------------------------------------------------


@router.get("/gateways", response_class=HTMLResponse)
async def gateways_page(request: Request, admin: Admin, db: DbSession) -> HTMLResponse:
    return render(
        request, "gateways.html", admin, section="gateways", gateways=await gateway_infos(db)
    )


# -- Activity log ----------------------------------------------------------------------


@dataclass
class ActivityFilters:
    """The page's GET query, as typed by the admin (empty means "any")."""

    user: str
    event: str
    module: str
    location: str
    search: str
    date_from: str
    date_to: str
    page: int
    per_page: int

    @classmethod
    def from_query(cls, request: Request) -> ActivityFilters:
        q = request.query_params

        def number(name: str, default: int) -> int:
            value = q.get(name, "").strip()
            return int(value) if value.isdigit() and len(value) < 9 else default

        per_page = number("per_page", 50)
        return cls(
            user=q.get("user", "").strip(),
            event=q.get("event", "").strip(),
            module=q.get("module", "").strip(),
            location=q.get("location", "").strip(),
            search=q.get("search", "").strip(),
            date_from=q.get("from", "").strip(),
            date_to=q.get("to", "").strip(),
            page=max(number("page", 1), 1),
            per_page=per_page if per_page in PER_PAGE_CHOICES else 50,
        )

    @property
    def active(self) -> bool:
        chosen = (self.user, self.event, self.module, self.location, self.search)
        return any(chosen) or bool(self.date_from or self.date_to)

    def query(self, **changes: Any) -> str:
        """This page's URL query with `changes` applied (for pagination links)."""
        values = {
            "user": self.user,
            "event": self.event,
            "module": self.module,
            "location": self.location,
            "search": self.search,
            "from": self.date_from,
            "to": self.date_to,
            "per_page": self.per_page if self.per_page != 50 else "",
            "page": self.page,
            **changes,
        }
        if values["page"] == 1:
            values["page"] = ""
        return urlencode({k: v for k, v in values.items() if v not in ("", None)})


def _day_bound(value: str, name: str, *, end: bool) -> str | None:
    """A `YYYY-MM-DD` day (UTC) as the RFC 3339 bound the API takes; `to` is inclusive."""
    if not value:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise ApiError(400, f"{name}: {value!r} is not a date (YYYY-MM-DD)") from None
    return f"{day.isoformat()}T{'23:59:59.999999' if end else '00:00:00'}Z"


async def _usernames(db: DbSession) -> list[str]:
    """Suggestions for the user filter; the filter itself also takes removed users' names."""
    rows = await db.execute(select(User.username).order_by(func.lower(User.username)).limit(500))
    return list(rows.scalars())


@router.get("/activity", response_class=HTMLResponse)
async def activity_page(request: Request, admin: Admin, db: DbSession) -> HTMLResponse:
    filters = ActivityFilters.from_query(request)
    error = ""
    events: list[Any] = []
    total = pages = 0
    try:
        # The REST handler itself, so the page filters and pages exactly as the API does.
        result = await list_activity(
            caller=Caller(session=admin.session, user=admin.user),
            db=db,
            page=PageParams(page=filters.page, per_page=filters.per_page),
            from_=_day_bound(filters.date_from, "from", end=False),
            until=_day_bound(filters.date_to, "to", end=True),
            username=[filters.user] if filters.user else None,
            location=[filters.location] if filters.location else None,
            event=[filters.event] if filters.event else None,
            module=[filters.module] if filters.module else None,
            search=filters.search or None,
            sort_by="timestamp",
            sort_order="desc",
        )
        events = result.data
        total = result.pagination.total_items
        pages = result.pagination.total_pages
    except ApiError as exc:
        error = exc.msg
    return render(
        request,
        "activity.html",
        admin,
        section="activity",
        events=events,
        total=total,
        pages=pages,
        filters=filters,
        error=error,
        usernames=await _usernames(db),
        event_groups=EVENT_GROUPS,
        modules=MODULES,
        per_page_choices=PER_PAGE_CHOICES,
    )


# -- Settings --------------------------------------------------------------------------


@router.get("/settings", response_class=HTMLResponse)
async def settings_page(request: Request, admin: Admin, db: DbSession) -> HTMLResponse:
    # SettingsOut carries `smtp_password_set`, never the password itself.
    settings = settings_out(await get_settings_row(db))
    return render(
        request,
        "settings.html",
        admin,
        section="settings",
        settings=settings,
        smtp_configured=bool(settings.smtp_server and settings.smtp_sender),
        traffic_policies=TRAFFIC_POLICIES,
        smtp_encryptions=SMTP_ENCRYPTIONS,
        test_recipient=admin.user.email or "",
        saved=request.query_params.get("saved", ""),
    )
