"""Health, info, OpenAPI and the first-admin bootstrap."""

from __future__ import annotations

from sqlalchemy import select

from defguard.core.auth.passwords import verify_password_sync
from defguard.core.bootstrap import bootstrap
from defguard.core.users.models import User
from tests.conftest import ADMIN_PASSWORD


async def test_health_needs_no_auth(client):
    r = await client.get("/health")
    assert r.status_code == 200
    assert r.text == "alive"


async def test_info_requires_session(client, admin_client):
    assert (await client.get("/info")).json() == {"msg": "Session is required"}
    r = await admin_client.get("/info")
    assert r.status_code == 200
    body = r.json()
    assert body["network_present"] is False
    assert set(body) == {
        "version",
        "network_present",
        "smtp_enabled",
        "ldap_info",
        "external_openid_enabled",
    }


async def test_bootstrap_creates_one_admin_once(db):
    async with db.session() as s:
        admin = (
            (await s.execute(select(User).where(User.username == "admin"))).unique().scalar_one()
        )
        assert verify_password_sync(admin.password_hash, ADMIN_PASSWORD)
    again = await bootstrap(db, "Other!Passw0rd1")
    assert again.admin_created is False
    async with db.session() as s:
        assert len((await s.execute(select(User))).scalars().all()) == 1


async def test_bootstrap_generates_password_when_none_given(fresh_db_url):
    from defguard.db.engine import Database

    database = Database(fresh_db_url)
    try:
        result = await bootstrap(database, None)
        assert result.admin_created and result.generated_password
        async with database.session() as s:
            admin = (await s.execute(select(User).where(User.username == "admin"))).scalar_one()
            assert verify_password_sync(admin.password_hash, result.generated_password)
    finally:
        await database.dispose()


async def test_openapi_lists_schemas(client):
    doc = (await client.get("/openapi.json")).json()
    assert "/api/v1/activity_log" in doc["paths"]


async def test_unparsable_path_parameter_is_400_naming_it(admin_client):
    r = await admin_client.get("/group/abc")
    assert r.status_code == 400
    assert "id" in r.json()["msg"]


async def test_oversized_body_is_413(admin_client):
    r = await admin_client.post(
        "/user",
        content=b"{" + b" " * (300 * 1024) + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 413
    assert "msg" in r.json()


async def test_openapi_describes_every_endpoint(client):
    """Every operation documents its success body and, where it takes one, its request body."""
    doc = (await client.get("/openapi.json")).json()
    assert len(doc["paths"]) >= 35
    text_endpoints = {
        ("/api/v1/health", "get"),
        ("/api/v1/network/{network_id}/device/{device_id}/config", "get"),
    }
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            success = [code for code in op["responses"] if code.startswith("2")]
            assert success, (method, path)
            content = op["responses"][success[0]].get("content", {})
            if (path, method) in text_endpoints:
                assert "text/plain" in content, (method, path)
                continue
            schema = content.get("application/json", {}).get("schema")
            assert schema, f"{method.upper()} {path} has no response schema"
            if method in ("post", "put") and "requestBody" in op:
                assert op["requestBody"]["content"]["application/json"]["schema"], (method, path)
