"""An admin creates a user and starts enrollment in the console; the user enrolls on the
Edge's pages in a second browser context (password, TOTP, keys made in the browser) and
downloads a config whose private key matches the device Core registered."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pyotp
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import DESKTOP, System, login
from tests.webforms import location_body

pytestmark = pytest.mark.browser

LOCATION = location_body(name="Branch", address="10.62.0.1/24", allowed_ips="10.62.0.0/24")
PASSWORD = "Enr0ll!Passw0rd"


def public_of(private_b64: str) -> str:
    key = X25519PrivateKey.from_private_bytes(base64.b64decode(private_b64))
    return base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def create_user_in_console(page: Page, system: System) -> None:
    page.goto(f"{system.console}/users")
    form = page.locator("#create-user-form")
    form.locator("[name=username]").fill("Bad Name!")
    form.locator("[name=first_name]").fill("Jane")
    form.locator("[name=last_name]").fill("Roe")
    form.locator("[name=email]").fill("jane@example.test")
    form.locator("button[type=submit]").click()
    expect(form.locator('.field-error[data-for="username"]')).not_to_be_empty()
    form.locator("[name=username]").fill("jroe")
    form.locator("button[type=submit]").click()
    page.wait_for_url(f"{system.console}/users/jroe")


def start_enrollment_in_console(page: Page) -> tuple[str, str]:
    page.click("#start-enrollment")
    expect(page.locator("#enrollment-result")).to_be_visible()
    expect(page.locator("#enrollment-result svg")).to_be_visible()
    token = page.locator("#enrollment-token").inner_text().strip()
    url = page.locator("#enrollment-url").inner_text().strip()
    return token, url


def enroll_on_edge(browser: Browser, system: System, token: str, shots, tmp: Path) -> str:
    """Returns the downloaded config text."""
    context = browser.new_context(viewport=DESKTOP, accept_downloads=True)
    context.set_default_timeout(20_000)
    user = context.new_page()
    try:
        user.goto(f"{system.edge_url}/enrollment?token={token}")
        expect(user.locator("#welcome-step")).to_be_visible()
        # The token does not stay in the address bar (or the browser history).
        assert token not in user.url
        shots(user, "enroll-welcome", phone=True)
        user.click("#welcome-continue")

        user.fill("#password-form [name=password]", "weak")
        user.fill("#password-form [name=password_confirm]", "weak")
        user.click("#password-form button[type=submit]")
        expect(user.locator('#password-form .field-error[data-for="password"]')).not_to_be_empty()
        user.fill("#password-form [name=password]", PASSWORD)
        user.fill("#password-form [name=password_confirm]", PASSWORD)
        user.click("#password-form button[type=submit]")

        user.click("#mfa-totp-start")
        expect(user.locator("#totp-qr svg")).to_be_visible()
        secret = user.locator("#totp-secret").inner_text().strip()
        shots(user, "enroll-totp", phone=True)
        user.fill("#totp-code-form [name=code]", pyotp.TOTP(secret).now())
        user.click("#totp-code-form button[type=submit]")
        expect(user.locator("#recovery-codes li").first).to_be_visible()
        user.click("#mfa-continue")

        user.fill("#device-form [name=name]", "jane-laptop")
        user.click("#generate-keys")
        expect(user.locator("#device-form [name=pubkey]")).to_have_value(re.compile(r"^.{43}=$"))
        user.click("#device-form button[type=submit]")
        download_button = user.locator("#device-config button.config-download").first
        expect(download_button).to_be_visible()
        expect(user.locator("#device-config .qr-box svg").first).to_be_visible()
        shots(user, "enroll-device", phone=True)
        with user.expect_download() as info:
            download_button.click()
        path = tmp / "jane.conf"
        info.value.save_as(path)
        user.click("#device-continue")

        user.click("#finish-enrollment")
        expect(user.locator("#enrollment-done")).to_be_visible()
        shots(user, "enroll-done", phone=True)

        # The same link cannot be used twice.
        user.goto(f"{system.edge_url}/enrollment?token={token}")
        expect(user.locator("#link-error")).to_be_visible()
        shots(user, "enroll-link-used", phone=True)
        return path.read_text()
    finally:
        context.close()


def test_admin_starts_enrollment_user_completes_it_on_the_edge(
    page: Page, browser: Browser, system: System, shots, tmp_path: Path
) -> None:
    assert system.api.post("/network", json=LOCATION).status_code == 201
    login(page, system)
    create_user_in_console(page, system)
    token, url = start_enrollment_in_console(page)
    assert url.startswith(system.edge_url)
    shots(page, "user-enrollment", phone=True)

    config = enroll_on_edge(browser, system, token, shots, tmp_path)

    private = re.search(r"PrivateKey = (\S+)", config)
    assert private is not None and "YOUR_PRIVATE_KEY" not in config
    (device,) = system.api.get("/user/jroe").json()["user"]["devices"]
    assert device["name"] == "jane-laptop"
    assert device["wireguard_pubkey"] == public_of(private.group(1))
    assert re.search(r"Address = 10\.62\.0\.\d+", config)

    # The user can now sign in with the password and TOTP set on the Edge.
    info = system.api.get("/user/jroe").json()["user"]
    assert info["enrolled"] is True and info["mfa_enabled"] is True

    # The console shows the device on the user's page and its config on the device page.
    page.reload()
    expect(page.get_by_text("jane-laptop").first).to_be_visible()
    shots(page, "user", phone=True)
    page.goto(f"{system.console}/devices/{device['id']}")
    expect(page.locator("[data-download-config]").first).to_be_visible()
    shots(page, "device", phone=True)

    # The admin adds a second device for the user with keys made in the console page.
    page.goto(f"{system.console}/users/jroe")
    page.click("#add-device summary")
    page.fill("#add-device-form [name=name]", "jane-phone")
    page.click("#generate-keys")
    expect(page.locator("#add-device-form [name=wireguard_pubkey]")).to_have_value(
        re.compile(r"^.{43}=$")
    )
    page.click("#add-device-submit")
    expect(page.locator("#new-device-result")).to_be_visible()
    expect(page.locator("#new-device-result .qr-box svg").first).to_be_visible()
    shots(page, "user-new-device")
    with page.expect_download() as info:
        page.locator("#new-device-result .download-config").first.click()
    path = tmp_path / "phone.conf"
    info.value.save_as(path)
    phone_private = re.search(r"PrivateKey = (\S+)", path.read_text())
    assert phone_private is not None
    devices = {d["name"]: d for d in system.api.get("/user/jroe").json()["user"]["devices"]}
    assert devices["jane-phone"]["wireguard_pubkey"] == public_of(phone_private.group(1))
    # Shown once: after leaving the page the private key is nowhere in it.
    page.click("#new-device-done")
    expect(page.locator("#new-device-result")).to_be_hidden()
    assert phone_private.group(1) not in page.content()
