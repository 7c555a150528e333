"""Explaining a flow through the compiled firewall, by API and by CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.integration.test_acl_api import apply_rules
from tests.integration.test_acl_firewall import setup_example
from tests.integration.test_locations import create_location


async def explain(client, location_id: int, user: str, to: str):
    return await client.get(
        f"/network/{location_id}/firewall/explain", params={"user": user, "to": to}
    )


async def test_explain_via_api(admin_client, db):
    setup = await setup_example(admin_client, db)
    location_id = setup["location"]["id"]
    await apply_rules(admin_client, setup["rule"]["id"])

    r = await explain(admin_client, location_id, "u1", "10.0.5.5:443/tcp")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["location"] == "office"
    assert body["user"] == "u1"
    assert (body["destination"], body["port"], body["protocols"]) == ("10.0.5.5", 443, [6])
    assert body["acl_enabled"] is True
    assert body["default_policy"] == "deny"
    assert [
        (x["source"], x["verdict"], x["rule_id"], x["decided_by"]) for x in body["results"]
    ] == [
        ("10.0.1.1", "allow", 1, "RULE 1 - web ALLOW"),
        ("10.0.1.2", "allow", 1, "RULE 1 - web ALLOW"),
    ]
    assert [x["device_id"] for x in body["results"]] == setup["devices"]["u1"]

    # A port the rule does not open: the rule's DENY decides.
    r = await explain(admin_client, location_id, "u2", "192.168.1.10:22/tcp")
    results = r.json()["results"]
    assert {(x["verdict"], x["decided_by"]) for x in results} == {("deny", "RULE 1 - web DENY")}

    # Outside every rule: the location's default policy decides.
    r = await explain(admin_client, location_id, "u2", "8.8.8.8:53")
    results = r.json()["results"]
    assert len(results) == 4  # two devices x (TCP, UDP)
    assert {(x["protocol"], x["verdict"], x["rule_id"], x["decided_by"]) for x in results} == {
        (6, "deny", None, "default policy"),
        (17, "deny", None, "default policy"),
    }


async def test_explain_without_acl_and_errors(admin_client, db):
    location = await create_location(admin_client, acl_enabled=False)
    r = await explain(admin_client, location["id"], "admin", "10.0.0.1:80/tcp")
    assert r.status_code == 200
    assert r.json()["acl_enabled"] is False
    assert r.json()["default_policy"] is None
    assert r.json()["results"] == []  # admin has no devices

    r = await explain(admin_client, location["id"], "nobody", "10.0.0.1")
    assert r.status_code == 404
    assert "nobody" in r.json()["msg"]
    r = await explain(admin_client, 999, "admin", "10.0.0.1")
    assert r.status_code == 404
    r = await explain(admin_client, location["id"], "admin", "10.0.0.1:http")
    assert r.status_code == 400
    assert "10.0.0.1:http" in r.json()["msg"]
    r = await admin_client.get(f"/network/{location['id']}/firewall/explain?user=admin")
    assert r.status_code == 422


def _cli(url, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEFGUARD_")}
    env["DEFGUARD_DATABASE_URL"] = url.render_as_string(hide_password=False)
    return subprocess.run(
        [sys.executable, "-m", "defguard", "acl", "explain", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


async def test_explain_via_cli(admin_client, db, fresh_db_url):
    setup = await setup_example(admin_client, db)
    await apply_rules(admin_client, setup["rule"]["id"])
    location_id = str(setup["location"]["id"])

    r = _cli(fresh_db_url, "--location", "office", "--user", "u1", "--to", "10.0.5.5:443/tcp")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0] == "location office (id 1): ACL enabled, default policy deny"
    assert lines[1:] == [
        "u1-dev0 10.0.1.1 -> 10.0.5.5:443/tcp: ALLOW (rule 1: RULE 1 - web ALLOW)",
        "u1-dev1 10.0.1.2 -> 10.0.5.5:443/tcp: ALLOW (rule 1: RULE 1 - web ALLOW)",
    ]

    r = _cli(
        fresh_db_url, "--location", location_id, "--user", "u2", "--to", "8.8.8.8/icmp", "--json"
    )
    assert r.returncode == 0, r.stderr
    body = json.loads(r.stdout)
    assert [(x["verdict"], x["decided_by"]) for x in body["results"]] == [
        ("deny", "default policy"),
        ("deny", "default policy"),
    ]

    for args, message in [
        (("--location", "office", "--user", "ghost", "--to", "10.0.5.5"), "user ghost not found"),
        (("--location", "nowhere", "--user", "u1", "--to", "10.0.5.5"), "'nowhere' not found"),
        (("--location", "42", "--user", "u1", "--to", "10.0.5.5"), "location 42 not found"),
        (("--location", "office", "--user", "u1", "--to", "10.0.5.5:99999"), "invalid port"),
        (("--location", "office", "--user", "u1", "--to", "bogus"), "invalid IP address"),
    ]:
        r = _cli(fresh_db_url, *args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert message in r.stderr, (args, r.stderr)
        assert r.stderr.strip().splitlines()[-1].startswith("error: ")


def test_cli_help(fresh_db_url):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEFGUARD_")}
    for cmd in (["acl", "--help"], ["acl", "explain", "--help"]):
        r = subprocess.run(
            [sys.executable, "-m", "defguard", *cmd], capture_output=True, text=True, env=env
        )
        assert r.returncode == 0, r.stderr
        assert "Usage" in r.stdout
