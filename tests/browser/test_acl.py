"""ACL in the console: an Alias, a Destination and a rule using both, applied from the rules
page; the compiled firewall preview for the location changes, and explain names the rule."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import System, login
from tests.browser.test_enrollment import LOCATION

pytestmark = pytest.mark.browser

PUBKEY = "n+kAdgrlU77BMy30ywHH/mYAfTI7oMQTzkB+m3CoLo0="


def test_alias_destination_rule_apply_preview_explain(page: Page, system: System, shots) -> None:
    location = system.api.post("/network", json={**LOCATION, "acl_enabled": True}).json()
    r = system.api.post("/device/admin", json={"name": "admin-laptop", "wireguard_pubkey": PUBKEY})
    assert r.status_code == 201, r.text
    page.on("dialog", lambda dialog: dialog.accept())
    login(page, system)
    base = system.console

    page.goto(f"{base}/acl/firewall?location={location['id']}")
    before = page.inner_text("#firewall-preview")
    assert "RULE" not in before

    page.goto(f"{base}/acl/aliases/new")
    page.fill("#alias-form input[name=name]", "dns-host")
    page.fill("#alias-form input[name=addresses]", "10.0.5.5")
    shots(page, "acl-alias-form", phone=True)
    page.click("#alias-submit")
    page.wait_for_url("**/acl/aliases?saved=*")
    expect(page.locator('tr[data-alias="dns-host"]')).to_be_visible()

    page.goto(f"{base}/acl/destinations/new")
    page.fill("#destination-form input[name=name]", "postgres")
    page.fill("#destination-form input[name=addresses]", "10.0.9.9")
    page.fill("#destination-form input[name=ports]", "not a port")
    page.click("#destination-submit")
    expect(page.locator('#destination-form .field-error[data-for="ports"]')).not_to_be_empty()
    page.fill("#destination-form input[name=ports]", "5432")
    page.check('#destination-form input[name=protocols][value="6"]')
    shots(page, "acl-destination-form", phone=True)
    page.click("#destination-submit")
    page.wait_for_url("**/acl/destinations?saved=*")
    expect(page.locator('tr[data-destination="postgres"]')).to_be_visible()

    page.goto(f"{base}/acl/rules/new")
    # Aliases and Destinations are separate parts of the form.
    expect(page.locator("#rule-aliases")).to_be_visible()
    expect(page.locator("#rule-destinations")).to_be_visible()
    page.fill("#rule-form input[name=name]", "web")
    page.check("#rule-form input[name=allow_all_users]")
    page.fill("#rule-form input[name=addresses]", "192.168.1.0/24")
    page.fill("#rule-form input[name=ports]", "443")
    page.check('#rule-form input[name=protocols][value="6"]')
    page.locator("#rule-alias-list label", has_text="dns-host").locator("input").check()
    page.locator("#rule-destination-list label", has_text="postgres").locator("input").check()
    shots(page, "acl-rule-form", phone=True)
    page.click("#rule-submit")
    page.wait_for_url("**/acl?saved=*")
    expect(page.locator('#rules-table tr[data-rule="web"]')).to_have_attribute("data-state", "new")
    shots(page, "acl-pending", phone=True)

    # Pending rules are not in the compiled firewall yet.
    page.goto(f"{base}/acl/firewall?location={location['id']}")
    assert page.inner_text("#firewall-preview") == before
    expect(page.locator("#firewall-pending")).to_be_visible()

    page.goto(f"{base}/acl")
    page.click("#apply-acl")
    page.wait_for_url("**/acl?applied=1")
    expect(page.locator('#rules-table tr[data-rule="web"]')).to_have_attribute(
        "data-state", "applied"
    )

    page.goto(f"{base}/acl/firewall?location={location['id']}")
    after = page.inner_text("#firewall-preview")
    assert after != before
    assert "web" in after and "postgres" in after
    assert "192.168.1.0/24" in after and "10.0.5.5" in after
    shots(page, "acl-firewall-applied", phone=True)

    page.goto(f"{base}/acl/explain")
    page.fill("#explain-form input[name=user]", "admin")
    page.fill("#explain-form input[name=to]", "192.168.1.10")
    page.fill("#explain-form input[name=port]", "443")
    page.select_option("#explain-form select[name=protocol]", "tcp")
    page.click("#explain-submit")
    expect(page.locator("#explain-result #explain-summary")).to_be_visible()
    expect(page.locator("#explain-result")).to_contain_text("web")
    shots(page, "acl-explain", phone=True)
