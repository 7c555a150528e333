"""Signing in to the console with a password and TOTP, in Chromium."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import System, login

pytestmark = pytest.mark.browser


def test_login_with_totp_and_wrong_codes(page: Page, system: System, shots) -> None:
    code = system.admin_totp()
    page.goto(f"{system.console}/?from=mail")
    assert "/login?next=/%3Ffrom%3Dmail" in page.url
    shots(page, "login", phone=True)
    page.fill("#login-form input[name=username]", "admin")
    page.fill("#login-form input[name=password]", "not the password")
    page.click("#login-form button[type=submit]")
    expect(page.locator("#login-form .form-error")).to_contain_text("Invalid")

    page.fill(
        "#login-form input[name=password]", system.core.env["DEFGUARD_DEFAULT_ADMIN_PASSWORD"]
    )
    page.click("#login-form button[type=submit]")
    expect(page.locator("#totp-form")).to_be_visible()
    page.fill("#totp-form input[name=code]", "000000" if code != "000000" else "111111")
    page.click("#totp-form button[type=submit]")
    expect(page.locator("#totp-form .form-error")).to_have_text("Invalid TOTP code")
    # Still not signed in: the console sends the browser back to the login page.
    assert page.context.request.get(f"{system.console}/").url.endswith("/login?next=/")

    page.fill("#totp-form input[name=code]", code)
    page.click("#totp-form button[type=submit]")
    page.wait_for_url(f"{system.console}/?from=mail")


def test_logout_ends_the_session(page: Page, system: System) -> None:
    login(page, system)
    page.click("header button:has-text('Log out')")
    page.wait_for_url("**/login")
    page.goto(f"{system.console}/")
    assert "/login" in page.url
