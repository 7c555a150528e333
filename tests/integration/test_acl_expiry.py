"""Rule expiry: the periodic job marks due rules `Expired`, once, and bumps their locations."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from types import SimpleNamespace

from sqlalchemy import update

from defguard.core.acl.models import AclRule
from defguard.core.acl.tasks import expire_acl_rules, expire_rules
from defguard.core.jobs import make_job_app, tasks
from defguard.db.base import utcnow
from tests.integration.test_acl_api import apply_rules, create_rule, get_rule
from tests.integration.test_acl_firewall import firewall, setup_example
from tests.integration.test_locations import create_location, revision


async def _make_due(db, rule_id: int) -> None:
    async with db.transaction() as s:
        await s.execute(
            update(AclRule)
            .where(AclRule.id == rule_id)
            .values(expires=utcnow() - timedelta(seconds=1))
        )


async def test_due_rule_expires_and_leaves_the_firewall(admin_client, db):
    setup = await setup_example(admin_client, db)
    location_id = setup["location"]["id"]
    rule_id = setup["rule"]["id"]
    await admin_client.put(
        f"/acl/rule/{rule_id}",
        json={**setup["rule"], "expires": (utcnow() + timedelta(hours=1)).isoformat()},
    )
    await apply_rules(admin_client, rule_id)
    assert len((await firewall(admin_client, location_id))["rules"]) == 2

    async with db.transaction() as s:
        assert await expire_rules(s) == []
    before = await revision(db, location_id)
    await _make_due(db, rule_id)
    async with db.transaction() as s:
        assert await expire_rules(s) == [rule_id]
    assert (await get_rule(admin_client, rule_id)).json()["state"] == "Expired"
    assert await revision(db, location_id) == before + 1
    assert (await firewall(admin_client, location_id))["rules"] == []
    assert (await admin_client.get("/acl/rule/count")).json() == {"applied": 0, "pending": 0}

    # Idempotent: nothing more to do, nothing bumped.
    async with db.transaction() as s:
        assert await expire_rules(s) == []
    assert await revision(db, location_id) == before + 1


async def test_racing_cores_expire_each_rule_once(admin_client, db):
    location = await create_location(admin_client, acl_enabled=True)
    rules = [await create_rule(admin_client, name=f"r{i}") for i in range(3)]
    await apply_rules(admin_client, *(r["id"] for r in rules))
    for r in rules:
        await _make_due(db, r["id"])
    before = await revision(db, location["id"])

    async def one_core() -> list[int]:
        async with db.transaction() as s:
            return await expire_rules(s)

    results = await asyncio.gather(one_core(), one_core())
    assert sorted(results[0] + results[1]) == sorted(r["id"] for r in rules)
    assert [] in results
    assert await revision(db, location["id"]) == before + 1


async def test_expired_rule_can_be_edited_back_into_force(admin_client, db):
    location = await create_location(admin_client, acl_enabled=True)
    rule = await create_rule(admin_client)
    await apply_rules(admin_client, rule["id"])
    await _make_due(db, rule["id"])
    async with db.transaction() as s:
        await expire_rules(s)
    child = (
        await admin_client.put(f"/acl/rule/{rule['id']}", json={**rule, "expires": None})
    ).json()
    assert (child["state"], child["parent_id"]) == ("Modified", rule["id"])
    await apply_rules(admin_client, child["id"])
    assert len((await firewall(admin_client, location["id"]))["rules"]) == 1


async def test_periodic_task_is_registered_and_runs(admin_client, db):
    task = tasks.tasks["expire_acl_rules"]
    assert task.queueing_lock == "acl-expiry"
    app = make_job_app(db.url)
    assert "defguard:expire_acl_rules" in app.tasks
    periodic = [p for p in app.periodic_registry.periodic_tasks.values()]
    assert any(
        p.task.name == "defguard:expire_acl_rules" and p.cron == "* * * * *" for p in periodic
    )

    rule = await create_rule(admin_client)
    await apply_rules(admin_client, rule["id"])
    await _make_due(db, rule["id"])
    context = SimpleNamespace(additional_context={"db": db})
    assert await expire_acl_rules(context, timestamp=0) == 1
    assert (await get_rule(admin_client, rule["id"])).json()["state"] == "Expired"
