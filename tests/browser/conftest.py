"""Browser tests: Debian's Chromium driven by Playwright against real Core and Edge processes.

Each test gets a fresh database, a `defguard core` and a `defguard edge` linked
over gRPC, and an API client logged in as admin for set-up and for checking
what the browser did. Screenshots go to `DEFGUARD_SCREENSHOT_DIR` when it is
set (`scripts/screenshots` points it at docs/screenshots), else to the test's
temporary directory.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pyotp
import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, sync_playwright
from sqlalchemy.engine import URL

from tests.conftest import require_tools
from tests.processes import ADMIN_PASSWORD, CoreProcess, EdgeProcess, wait_for

CHROMIUM = "/usr/bin/chromium"
# The machine has no route to the internet: without these Chromium keeps
# trying to reach Google's services and logs refusals.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


@dataclass
class System:
    core: CoreProcess
    edge: EdgeProcess
    api: httpx.Client
    totp_secret: str | None = None
    last_step: int = -1

    @property
    def console(self) -> str:
        return f"http://127.0.0.1:{self.core.port}"

    @property
    def edge_url(self) -> str:
        return self.edge.public_url

    def admin_totp(self) -> str:
        """Turns on TOTP for admin (once) and returns a code of a step not used yet.

        Core accepts each 30 s step once, so this may wait for the next step.
        """
        if self.totp_secret is None:
            secret = self.api.post("/auth/totp/init").json()["secret"]
            self.last_step = int(time.time()) // 30
            r = self.api.post("/auth/totp", json={"code": pyotp.TOTP(secret).now()})
            assert r.status_code == 200, r.text
            self.totp_secret = secret
        while int(time.time()) // 30 <= self.last_step:
            time.sleep(0.5)
        self.last_step = int(time.time()) // 30
        return pyotp.TOTP(self.totp_secret).now()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Per module: Playwright's sync API runs an event loop on this thread while it is
    open, and the async tests of the other folders need the thread's loop free."""
    if shutil.which(CHROMIUM) is None:
        require_tools("chromium")
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture
def system(fresh_db_url: URL, tmp_path: Path) -> Iterator[System]:
    edge = EdgeProcess("127.0.0.1", tmp_path / "edge.log")
    core = CoreProcess(fresh_db_url, tmp_path / "core.log")
    core.env.update(
        DEFGUARD_URL=f"http://127.0.0.1:{core.port}",
        DEFGUARD_PROXY_URL=edge.grpc_url,
        DEFGUARD_ENROLLMENT_URL=edge.public_url,
    )
    edge.start()
    core.start()
    api = core.client()
    try:
        wait_for(
            lambda: (
                httpx.get(f"{edge.public_url}/api/v1/health-grpc", timeout=1).status_code == 200
            ),
            30,
            "the Core to link to the Edge",
        )
        yield System(core=core, edge=edge, api=api)
    finally:
        api.close()
        core.stop()
        edge.stop()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """Fails the test when the Content-Security-Policy blocked anything on any of its
    pages: Chromium reports that only as a console error, which no test step notices."""
    ctx = browser.new_context(viewport=DESKTOP, accept_downloads=True)
    ctx.set_default_timeout(20_000)
    blocked: list[str] = []

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error" and "Content Security Policy" in msg.text:
            blocked.append(f"{msg.page.url if msg.page else '?'}: {msg.text}")

    ctx.on("console", on_console)
    try:
        yield ctx
    finally:
        ctx.close()
    assert not blocked, blocked


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


@pytest.fixture
def shots(tmp_path: Path):
    """`shots(page, "users")` saves the desktop and the phone-width view of the page."""
    target = Path(os.environ.get("DEFGUARD_SCREENSHOT_DIR") or tmp_path / "screenshots")
    target.mkdir(parents=True, exist_ok=True)

    def take(page: Page, name: str, *, phone: bool = False, full_page: bool = True) -> None:
        page.screenshot(path=str(target / f"{name}.png"), full_page=full_page)
        if phone:
            size = page.viewport_size
            page.set_viewport_size(PHONE)
            page.screenshot(path=str(target / f"{name}-phone.png"), full_page=full_page)
            if size:
                page.set_viewport_size(size)

    return take


def login(page: Page, system: System, *, code: str | None = None) -> None:
    """Signs in through the login page; with `code`, passes the TOTP step too."""
    page.goto(f"{system.console}/")
    page.fill("#login-form input[name=username]", "admin")
    page.fill("#login-form input[name=password]", ADMIN_PASSWORD)
    page.click("#login-form button[type=submit]")
    if code is not None:
        page.wait_for_selector("#totp-form:not([hidden])")
        page.fill("#totp-form input[name=code]", code)
        page.click("#totp-form button[type=submit]")
    page.wait_for_url(f"{system.console}/")
