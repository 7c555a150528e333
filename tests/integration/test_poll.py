"""Config polling by the desktop client, and the config builders behind every device answer."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import select, text, update

from defguard.config import CoreSettings
from defguard.core.enrollment import configs
from defguard.core.enrollment.models import PollingToken
from defguard.core.locations.models import Location
from defguard.core.settings.models import Settings
from defguard.db.engine import Database
from tests.conftest import make_user
from tests.integration.test_enrollment import (
    DEVICE_CONFIG_KEYS,
    INSTANCE_KEYS,
    desktop_token,
    edge,
    edit_settings,
    edit_user,
    new_key,
    started,
)
from tests.integration.test_locations import create_location


async def enrolled_device(admin_client, db: Database, settings: CoreSettings) -> dict[str, Any]:
    """`jdoe` adds a device through desktop activation; the create_device answer."""
    await make_user(db, "jdoe")
    token = await desktop_token(admin_client, "jdoe")
    await started(db, settings, token)
    answer = await edge(
        db,
        settings,
        "enrollment.create_device",
        {"name": "jdoe-pc", "pubkey": new_key()},
        session=token,
    )
    assert answer.status == 200, answer.body
    return answer.json


async def poll(db: Database, settings: CoreSettings, token: str, **kw: Any):
    return await edge(db, settings, "poll", {"token": token}, **kw)


async def test_poll_answers_the_current_config_without_a_token(admin_client, db, settings):
    location = await create_location(admin_client)
    created = await enrolled_device(admin_client, db, settings)
    answer = await poll(db, settings, created["token"])
    assert answer.status == 200, answer.body
    body = answer.json
    assert set(body) == {"device_config"}
    config = body["device_config"]
    assert set(config) == {"device", "configs", "instance", "token"}
    assert config["token"] is None
    assert config["device"] == created["device"]
    assert config["configs"] == created["configs"]
    assert set(config["configs"][0]) == DEVICE_CONFIG_KEYS
    assert set(config["instance"]) == INSTANCE_KEYS
    assert config["configs"][0]["network_id"] == location["id"]

    # Polling changes nothing: the same token keeps working.
    async with db.session() as s:
        stored = (await s.execute(select(PollingToken.token))).scalar_one()
    assert stored == created["token"]
    assert (await poll(db, settings, created["token"])).status == 200


async def test_poll_survives_a_dropped_database_connection(admin_client, db, settings):
    """Polls use their own pooled connections; one that PostgreSQL dropped (a restart,
    a failover) must cost the client nothing."""
    await create_location(admin_client)
    created = await enrolled_device(admin_client, db, settings)
    assert (await poll(db, settings, created["token"])).status == 200
    async with db.session() as s:
        dropped = (
            (
                await s.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE application_name = 'defguard-direct'"
                        " AND datname = current_database()"
                    )
                )
            )
            .scalars()
            .all()
        )
    assert dropped and all(dropped)
    answer = await poll(db, settings, created["token"])
    assert answer.status == 200, answer.body
    assert answer.json["device_config"]["device"] == created["device"]


async def test_poll_follows_location_changes(admin_client, db, settings):
    await create_location(admin_client)
    created = await enrolled_device(admin_client, db, settings)
    await create_location(admin_client, name="Branch", address="10.30.0.1/24", dns=None)
    names = [
        c["network_name"]
        for c in (await poll(db, settings, created["token"])).json["device_config"]["configs"]
    ]
    assert names == ["HQ", "Branch"]


async def test_poll_refusals(admin_client, db, settings):
    await create_location(admin_client)
    created = await enrolled_device(admin_client, db, settings)
    unknown = await poll(db, settings, "q" * 32)
    assert (unknown.status, unknown.json) == (403, {"error": "invalid token"})
    await edit_user(db, "jdoe", is_active=False)
    inactive = await poll(db, settings, created["token"])
    assert (inactive.status, inactive.error) == (403, "user inactive")


async def test_config_without_dns_or_allowed_ips(admin_client, db, settings):
    location = await create_location(admin_client)
    async with db.transaction() as s:
        await s.execute(
            update(Location).where(Location.id == location["id"]).values(dns=None, allowed_ips=[])
        )
    created = await enrolled_device(admin_client, db, settings)
    (config,) = (await poll(db, settings, created["token"])).json["device_config"]["configs"]
    assert config["dns"] is None
    assert config["allowed_ips"] == ""
    assert config["config"] == (
        "[Interface]\nPrivateKey = YOUR_PRIVATE_KEY\nAddress = 10.10.0.2\n\n\n"
        f"[Peer]\nPublicKey = {location['pubkey']}\n"
        "Endpoint = vpn.example.com:51820\nPersistentKeepalive = 25"
    )


@pytest.mark.parametrize(
    ("version", "os_family", "shown"),
    [
        (None, None, False),
        ("1.6.0", "windows", True),
        ("1.7.2", "Windows", True),
        ("1.5.9", "windows", False),
        ("1.6.0-beta.1", "windows", False),
        ("1.6.3", "linux", False),
        ("garbage", "windows", False),
    ],
)
async def test_service_locations_only_for_capable_clients(
    admin_client, db, settings, version, os_family, shown
):
    await create_location(admin_client)
    await create_location(
        admin_client, name="Svc", address="10.40.0.1/24", service_location_mode="prelogon"
    )
    created = await enrolled_device(admin_client, db, settings)
    answer = await poll(db, settings, created["token"], client_version=version, os_family=os_family)
    modes = {
        c["network_name"]: c["service_location_mode"]
        for c in answer.json["device_config"]["configs"]
    }
    assert modes == ({"HQ": 1, "Svc": 2} if shown else {"HQ": 1})


async def test_traffic_policy_reaches_the_instance(admin_client, db, settings):
    await create_location(admin_client)
    created = await enrolled_device(admin_client, db, settings)
    await edit_settings(db, client_traffic_policy=1, instance_name="Acme")
    instance = (await poll(db, settings, created["token"])).json["device_config"]["instance"]
    assert instance["disable_all_traffic"] is True
    assert instance["client_traffic_policy"] == 1
    assert instance["name"] == "Acme"
    assert instance["username"] == "jdoe"


# --- pure builders --------------------------------------------------------------------------------


def test_instance_info_urls_end_with_a_slash() -> None:
    row = Settings(
        instance_id=uuid.UUID("0b6f0c3e-5d0a-4a53-9d0e-2f6f1b7c9a10"),
        instance_name="Acme",
        public_proxy_url=None,
        client_traffic_policy=2,
    )
    core = CoreSettings(url="https://defguard.acme.test", enrollment_url="https://enroll.acme.test")
    assert configs.instance_info(row, core, "jdoe") == {
        "id": "0b6f0c3e-5d0a-4a53-9d0e-2f6f1b7c9a10",
        "name": "Acme",
        "url": "https://defguard.acme.test/",
        "proxy_url": "https://enroll.acme.test/",
        "username": "jdoe",
        "enterprise_enabled": True,
        "disable_all_traffic": False,
        "openid_display_name": None,
        "client_traffic_policy": 2,
    }
    row.public_proxy_url = "https://vpn.acme.test/"
    assert configs.instance_info(row, core, "jdoe")["proxy_url"] == "https://vpn.acme.test/"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.6.0", (1, 6, 0, True)),
        ("v1.6.3", (1, 6, 3, True)),
        ("1.6.0-rc1", (1, 6, 0, False)),
        ("1.6.0+build5", (1, 6, 0, True)),
        ("1.6", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_version(text: str | None, expected: object) -> None:
    assert configs.parse_version(text) == expected


async def test_direct_statements_use_indexes_planned_on_empty_tables(db):
    """Plans on the direct connections are cached for the connection's life. One made
    while a table was empty must still find rows by index when the table has grown."""
    async with db.session() as s:
        await s.execute(text("ANALYZE vpn_client_session"))
        await s.commit()
    async with db.direct.connection() as conn:
        rows = await conn.fetchall(
            "EXPLAIN SELECT id FROM vpn_client_session"
            " WHERE location_id = %s AND device_id = %s AND ended_at IS NULL",
            (1, 1),
        )
    plan = "\n".join(row[0] for row in rows)
    assert "Index" in plan and "Seq Scan" not in plan, plan
