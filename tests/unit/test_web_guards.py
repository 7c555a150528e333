"""The cross-site request guard and the CSRF token: pure decisions on headers."""

from __future__ import annotations

from defguard.web import csrf
from defguard.web.fetchguard import cross_site_reason


def scope(method: str = "POST", **headers: str) -> dict[str, object]:
    return {
        "type": "http",
        "method": method,
        "headers": [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()],
    }


def test_safe_methods_always_pass() -> None:
    assert cross_site_reason(scope("GET", sec_fetch_site="cross-site")) is None


def test_cross_site_browser_post_is_refused() -> None:
    reason = cross_site_reason(scope(sec_fetch_site="cross-site", host="vpn.example"))
    assert reason is not None and "cross-site" in reason
    assert cross_site_reason(scope(sec_fetch_site="same-site", host="vpn.example")) is not None


def test_same_origin_browser_post_passes() -> None:
    assert (
        cross_site_reason(
            scope(sec_fetch_site="same-origin", origin="https://vpn.example", host="vpn.example")
        )
        is None
    )


def test_origin_must_match_host_for_browsers_without_fetch_metadata() -> None:
    assert cross_site_reason(scope(origin="https://evil.example", host="vpn.example")) is not None
    assert (
        cross_site_reason(scope(origin="http://vpn.example:8080", host="vpn.example:8080")) is None
    )
    assert cross_site_reason(scope(origin="null", host="vpn.example")) is not None


def test_programs_without_browser_headers_pass() -> None:
    """The desktop client and curl send neither header."""
    assert cross_site_reason(scope(host="vpn.example")) is None
    assert cross_site_reason(scope(origin="tauri://localhost", host="vpn.example")) is None
    assert cross_site_reason(scope(origin="http://tauri.localhost", host="vpn.example")) is None


def test_a_browser_claiming_the_desktop_origin_is_still_refused() -> None:
    refused = scope(
        origin="http://tauri.localhost", sec_fetch_site="cross-site", host="vpn.example"
    )
    assert cross_site_reason(refused) is not None


def test_csrf_token_is_bound_to_session_and_secret() -> None:
    token = csrf.token_for("secret-a", "session-1")
    assert csrf.valid("secret-a", "session-1", token)
    assert not csrf.valid("secret-a", "session-2", token)
    assert not csrf.valid("secret-b", "session-1", token)
    assert not csrf.valid("secret-a", "session-1", None)
    assert not csrf.valid("secret-a", "session-1", token[:-1])
