"""Console pages for ACL rules, Aliases, Destinations, the firewall preview and explain.

The rule, alias and destination forms are checked the way a browser uses them:
the controls are read from the page and turned into the JSON body forms.js
would send, which the API must accept.
"""

from __future__ import annotations

import json
import re
from html import unescape
from typing import Any

import httpx
import pytest

from defguard.core.acl.schemas import EditAlias, EditDestination, EditRule
from defguard.db.engine import Database
from tests.conftest import make_user
from tests.integration.test_acl_api import apply_rules, create_alias, create_rule
from tests.integration.test_locations import add_device, create_location
from tests.webforms import body_of, read_form

pytestmark = pytest.mark.asyncio
PAGE = "http://testserver"


def element(html: str, element_id: str) -> str:
    """The opening tag and content of the element with this id, up to its closing tag."""
    match = re.search(rf'<(\w+)[^>]*\bid="{re.escape(element_id)}"', html)
    assert match, f"no #{element_id}"
    tag = match.group(1)
    return html[match.start() : html.index(f"</{tag}>", match.end())]


async def acl_setup(client: httpx.AsyncClient, db: Database) -> dict[str, Any]:
    """An ACL-enabled location with one user device, an Alias, a Destination and a rule using both."""
    location = await create_location(
        client, name="office", address="10.0.0.1/16", acl_enabled=True, acl_default_allow=False
    )
    await make_user(db, "alice")
    device = await add_device(client, "alice", "alice-laptop")
    alias = await create_alias(client, name="dns-host", addresses="10.0.5.5")
    destination = await create_alias(client, "destination", name="postgres", addresses="10.0.9.9")
    rule = await create_rule(
        client,
        name="web",
        allow_all_users=True,
        addresses="192.168.1.0/24",
        ports="443",
        protocols=[6],
        aliases=[alias["id"]],
        destinations=[destination["id"]],
    )
    return {
        "location": location,
        "device": device,
        "alias": alias,
        "destination": destination,
        "rule": rule,
    }


# -- missing objects -----------------------------------------------------------


async def test_unknown_ids_are_404_pages(admin_client: httpx.AsyncClient, db: Database):
    setup = await acl_setup(admin_client, db)
    for path in (
        "/acl/rules/999",
        "/acl/rules/x",
        "/acl/aliases/999",
        "/acl/destinations/abc",
        # The two kinds stay apart: a Destination is not an Alias, and the other way round.
        f"/acl/aliases/{setup['destination']['id']}",
        f"/acl/destinations/{setup['alias']['id']}",
    ):
        r = await admin_client.get(PAGE + path)
        assert r.status_code == 404, path
        assert "Not found" in r.text


# -- rules ---------------------------------------------------------------------


async def test_rules_page_shows_rules_with_state_and_apply(
    admin_client: httpx.AsyncClient, db: Database
):
    empty = await admin_client.get(PAGE + "/acl")
    assert empty.status_code == 200
    assert 'id="rules-empty"' in empty.text
    assert 'id="apply-acl"' not in empty.text
    for href in ("/acl/aliases", "/acl/destinations", "/acl/firewall", "/acl/explain"):
        assert f'href="{href}"' in empty.text

    setup = await acl_setup(admin_client, db)
    rule_id = setup["rule"]["id"]
    page = (await admin_client.get(PAGE + "/acl")).text
    row = element(page, f"rule-{rule_id}")
    assert 'data-rule="web"' in row and 'data-state="new"' in row
    assert ">New</span>" in row
    assert "dns-host" in row and "postgres" in row and "192.168.1.0/24" in row
    apply = re.search(r'<button[^>]*id="apply-acl"[^>]*>', page)
    assert apply is not None
    assert 'data-api="/api/v1/acl/rule/apply"' in apply.group(0)
    assert 'data-method="PUT"' in apply.group(0)
    body = json.loads(unescape(re.search(r"data-body='([^']*)'", apply.group(0)).group(1)))
    assert body == {"rules": [rule_id]}
    # The button's body is a valid apply.
    r = await admin_client.put("/acl/rule/apply", json=body)
    assert r.status_code == 200, r.text

    page = (await admin_client.get(PAGE + "/acl")).text
    assert 'data-state="applied"' in element(page, f"rule-{rule_id}")
    assert 'id="apply-acl"' not in page and 'id="acl-in-sync"' in page

    # Editing the applied rule stages a child; both rows show, and apply is offered again.
    r = await admin_client.put(
        f"/acl/rule/{rule_id}", json={**setup["rule"], "name": "web2", "ports": "8443"}
    )
    assert r.status_code == 200, r.text
    child_id = r.json()["id"]
    page = (await admin_client.get(PAGE + "/acl")).text
    assert 'data-state="modified"' in element(page, f"rule-{child_id}")
    assert f'href="/acl/rules/{child_id}"' in element(page, f"rule-{rule_id}")
    assert 'id="apply-acl"' in page


async def test_new_rule_form_carries_the_whole_write_body(
    admin_client: httpx.AsyncClient, db: Database
):
    setup = await acl_setup(admin_client, db)
    r = await admin_client.get(PAGE + "/acl/rules/new")
    assert r.status_code == 200
    page = r.text
    form = read_form(page, "rule-form")
    assert form.form["data-api"] == "/api/v1/acl/rule"
    assert form.form["data-method"] == "POST"
    # Aliases and Destinations are separate choices, each with its own explanation.
    aliases, destinations = element(page, "rule-aliases"), element(page, "rule-destinations")
    assert "dns-host" in aliases and "postgres" not in aliases
    assert "postgres" in destinations and "dns-host" not in destinations
    assert "merged into the manual destination" in aliases
    assert "its own set of firewall rules" in destinations

    body = body_of(
        form,
        name="ssh",
        addresses="10.0.7.0/24",
        ports="22",
        allowed_users=[1],
        protocols=[6],
        aliases=[setup["alias"]["id"]],
        destinations=[setup["destination"]["id"]],
        expires="2031-01-02T03:04",
    )
    assert set(body) == set(EditRule.model_fields)
    assert body["all_locations"] is True and body["use_manual_destination_settings"] is True
    assert body["enabled"] is True and body["expires"] == "2031-01-02T03:04:00"
    created = await admin_client.post("/acl/rule", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["state"] == "New"
    assert created.json()["aliases"] == [setup["alias"]["id"]]


async def test_rule_page_form_sent_unchanged_keeps_the_rule(
    admin_client: httpx.AsyncClient, db: Database
):
    setup = await acl_setup(admin_client, db)
    rule = setup["rule"]
    page = (await admin_client.get(PAGE + f"/acl/rules/{rule['id']}")).text
    assert 'data-state="new"' in element(page, "rule-title")
    form = read_form(page, "rule-form")
    assert form.form["data-api"] == f"/api/v1/acl/rule/{rule['id']}"
    assert form.form["data-method"] == "PUT"
    body = body_of(form)
    assert set(body) == set(EditRule.model_fields)
    put = await admin_client.put(f"/acl/rule/{rule['id']}", json=body)
    assert put.status_code == 200, put.text
    assert put.json() == rule
    assert f'data-api="/api/v1/acl/rule/{rule["id"]}" data-method="DELETE"' in page
    assert 'id="apply-rule"' in page


# -- aliases and destinations --------------------------------------------------


async def test_alias_and_destination_pages(admin_client: httpx.AsyncClient, db: Database):
    setup = await acl_setup(admin_client, db)
    alias, destination = setup["alias"], setup["destination"]

    aliases = (await admin_client.get(PAGE + "/acl/aliases")).text
    row = element(aliases, f"alias-{alias['id']}")
    assert 'data-alias="dns-host"' in row and 'data-state="applied"' in row and "10.0.5.5" in row
    assert 'href="/acl/rules/1"' in row  # used by rule "web"
    assert "postgres" not in element(aliases, "alias-table")

    destinations = (await admin_client.get(PAGE + "/acl/destinations")).text
    row = element(destinations, f"destination-{destination['id']}")
    assert 'data-destination="postgres"' in row and "10.0.9.9" in row
    assert "dns-host" not in element(destinations, "destination-table")

    new_alias = read_form((await admin_client.get(PAGE + "/acl/aliases/new")).text, "alias-form")
    assert new_alias.form["data-api"] == "/api/v1/acl/alias"
    assert new_alias.form["data-method"] == "POST"
    body = body_of(new_alias, name="web-ports", ports="80, 443")
    assert set(body) == set(EditAlias.model_fields)
    assert (await admin_client.post("/acl/alias", json=body)).status_code == 201

    new_dest = read_form(
        (await admin_client.get(PAGE + "/acl/destinations/new")).text, "destination-form"
    )
    assert new_dest.form["data-api"] == "/api/v1/acl/destination"
    body = body_of(new_dest, name="anything", any_address=True, any_port=True, any_protocol=True)
    assert set(body) == set(EditDestination.model_fields)
    assert (await admin_client.post("/acl/destination", json=body)).status_code == 201

    page = (await admin_client.get(PAGE + f"/acl/destinations/{destination['id']}")).text
    edit = read_form(page, "destination-form")
    assert edit.form["data-method"] == "PUT"
    put = await admin_client.put(f"/acl/destination/{destination['id']}", json=body_of(edit))
    assert put.status_code == 200, put.text
    staged = put.json()
    assert staged["state"] == "Modified" and staged["addresses"] == "10.0.9.9"

    # The staged change shows as pending, with an apply button for the Destinations.
    destinations = (await admin_client.get(PAGE + "/acl/destinations")).text
    assert 'data-state="modified"' in element(destinations, f"destination-{staged['id']}")
    apply = re.search(r'<button[^>]*id="apply-destinations"[^>]*>', destinations)
    assert apply is not None
    assert 'data-api="/api/v1/acl/destination/apply"' in apply.group(0)
    body = json.loads(unescape(re.search(r"data-body='([^']*)'", apply.group(0)).group(1)))
    assert body == {"destinations": [staged["id"]]}
    # The used alias cannot be deleted: its button is disabled.
    alias_page = (await admin_client.get(PAGE + f"/acl/aliases/{alias['id']}")).text
    assert re.search(r'<button[^>]*id="delete-alias"[^>]*disabled', alias_page)


# -- firewall preview and explain -----------------------------------------------


async def test_firewall_page_shows_the_compiled_config(
    admin_client: httpx.AsyncClient, db: Database
):
    setup = await acl_setup(admin_client, db)
    location_id = setup["location"]["id"]
    off = await create_location(admin_client, name="lab", address="10.50.0.1/24")

    page = (await admin_client.get(PAGE + f"/acl/firewall?location={location_id}")).text
    preview = element(page, "firewall-preview")
    assert "default policy: DENY" in preview
    assert "192.168.1.0/24" not in preview  # the rule is still pending
    assert 'id="firewall-pending"' in page

    await apply_rules(admin_client, setup["rule"]["id"])
    page = (await admin_client.get(PAGE + f"/acl/firewall?location={location_id}")).text
    assert 'id="firewall-pending"' not in page
    preview = element(page, "firewall-preview")
    assert "RULE 1 - web ALLOW" in preview
    assert "RULE 1 - web, DESTINATION 2 - postgres DENY" in preview
    assert "10.0.5.5, 192.168.1.0/24" in preview  # manual destination with the alias merged
    assert "10.0.9.9" in preview
    assert "sources:      10.0.0.2" in preview  # alice's laptop
    api = (await admin_client.get(f"/network/{location_id}/firewall")).json()
    assert json.loads(unescape(element(page, "firewall-json").split(">", 1)[1])) == api

    # Without a choice, the page shows the first location with ACL enabled.
    assert 'id="firewall-preview"' in (await admin_client.get(PAGE + "/acl/firewall")).text
    page = (await admin_client.get(PAGE + f"/acl/firewall?location={off['id']}")).text
    assert 'id="firewall-disabled"' in page and 'id="firewall-preview"' not in page
    page = (await admin_client.get(PAGE + "/acl/firewall?location=999")).text
    assert 'id="firewall-error"' in page


async def test_explain_page_offers_the_explain_form(admin_client: httpx.AsyncClient, db: Database):
    setup = await acl_setup(admin_client, db)
    page = (await admin_client.get(PAGE + "/acl/explain")).text
    form = read_form(page, "explain-form")
    location_id = setup["location"]["id"]
    assert form.form["data-api"] == f"/api/v1/network/{location_id}/firewall/explain"
    assert form.form["data-method"] == "GET"
    assert {c["name"] for c in form.controls} == {"location", "user", "to", "port", "protocol"}
    assert 'id="explain-result"' in page
    assert '<option value="alice">' in page
    # What the page's script asks for is a valid explain call.
    r = await admin_client.get(
        f"/network/{location_id}/firewall/explain",
        params={"user": "alice", "to": "10.0.5.5:443/tcp"},
    )
    assert r.status_code == 200, r.text
