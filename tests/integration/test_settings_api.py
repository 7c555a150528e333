"""`/settings` (read and partial update, admin only) and `/mail/test`."""

from __future__ import annotations

from sqlalchemy import select

from defguard.core.activity.models import ActivityLogEvent
from defguard.core.settings.models import Settings, SmtpEncryption
from tests.integration.test_mail import (
    SMTP_PASSWORD,
    SMTP_USER,
    SmtpServer,
    all_mail_done,
    free_port,
    mail_jobs,
    mail_worker,
    parts,
    wait_until,
)

SMTP = {
    "smtp_server": "mail.example.com",
    "smtp_port": 587,
    "smtp_encryption": "StartTls",
    "smtp_user": "mailer",
    "smtp_password": "Sm7p-Pa55word",
    "smtp_sender": "defguard@example.com",
}


async def stored(db) -> Settings:
    async with db.session() as s:
        return (await s.execute(select(Settings))).scalar_one()


async def events(db, name: str) -> list[str | None]:
    async with db.session() as s:
        rows = await s.execute(
            select(ActivityLogEvent.description)
            .where(ActivityLogEvent.event == name)
            .order_by(ActivityLogEvent.id)
        )
        return list(rows.scalars())


async def test_anonymous_and_non_admin_are_rejected(client, user_client):
    for method, path, body in [
        ("get", "/settings", None),
        ("patch", "/settings", {"instance_name": "X"}),
        ("post", "/mail/test", {"to": "a@example.com"}),
    ]:
        r = await client.request(method, path, json=body)
        assert r.status_code == 401, (method, path)
        r = await user_client.request(method, path, json=body)
        assert r.status_code == 403, (method, path)
        assert r.json() == {"msg": "access denied"}


async def test_get_returns_every_setting_but_the_secrets(admin_client, db):
    r = await admin_client.get("/settings")
    assert r.status_code == 200
    body = r.json()
    assert "secret_key" not in body and "smtp_password" not in body
    assert body["smtp_password_set"] is False
    assert body["instance_name"] == "Defguard"
    assert body["smtp_encryption"] == "StartTls"
    assert body["instance_id"] == str((await stored(db)).instance_id)
    columns = set(Settings.__table__.columns.keys()) - {"id", "secret_key", "smtp_password"}
    assert set(body) == columns | {"smtp_password_set"}


async def test_patch_changes_only_the_fields_sent_and_logs_their_names(admin_client, db):
    r = await admin_client.patch("/settings", json={**SMTP, "instance_name": "  Acme VPN "})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["instance_name"] == "Acme VPN"
    assert body["smtp_server"] == "mail.example.com" and body["smtp_port"] == 587
    assert body["smtp_password_set"] is True and "smtp_password" not in body
    assert body["enrollment_token_timeout_hours"] == 24  # untouched
    row = await stored(db)
    assert row.smtp_password == "Sm7p-Pa55word"
    assert row.smtp_encryption is SmtpEncryption.STARTTLS
    assert (await admin_client.get("/settings")).json() == body

    [description] = await events(db, "settings_updated_partial")
    assert description is not None
    assert "smtp_password" in description and "instance_name" in description
    assert "Sm7p-Pa55word" not in description

    r = await admin_client.patch("/settings", json={"smtp_encryption": "ImplicitTls"})
    assert r.json()["smtp_encryption"] == "ImplicitTls"
    assert r.json()["smtp_server"] == "mail.example.com"


async def test_smtp_password_empty_keeps_null_removes(admin_client, db):
    await admin_client.patch("/settings", json=SMTP)
    r = await admin_client.patch("/settings", json={"smtp_password": "", "smtp_port": 2525})
    assert r.status_code == 200
    assert r.json()["smtp_password_set"] is True
    assert (await stored(db)).smtp_password == "Sm7p-Pa55word"

    r = await admin_client.patch("/settings", json={"smtp_password": "N3w-secret"})
    assert (await stored(db)).smtp_password == "N3w-secret"

    r = await admin_client.patch("/settings", json={"smtp_password": None})
    assert r.json()["smtp_password_set"] is False
    assert (await stored(db)).smtp_password is None


async def test_optional_smtp_fields_are_cleared_by_null_or_empty(admin_client):
    await admin_client.patch("/settings", json=SMTP)
    r = await admin_client.patch("/settings", json={"smtp_user": "", "smtp_port": None})
    assert r.status_code == 200
    assert r.json()["smtp_user"] is None and r.json()["smtp_port"] is None


async def test_invalid_values_are_400_naming_the_field_and_change_nothing(admin_client, db):
    await admin_client.patch("/settings", json=SMTP)
    before = (await admin_client.get("/settings")).json()
    cases = [
        ({"smtp_port": 0}, "smtp_port"),
        ({"smtp_port": 65536}, "smtp_port"),
        ({"smtp_port": "25"}, "smtp_port"),
        ({"smtp_encryption": "Ssl"}, "smtp_encryption"),
        ({"smtp_sender": "Defguard"}, "smtp_sender"),
        ({"smtp_sender": "no-reply@"}, "smtp_sender"),
        ({"smtp_server": "smtp://mail.example.com"}, "smtp_server"),
        ({"smtp_server": "mail.example.com:25"}, "smtp_server"),
        ({"instance_name": "   "}, "instance_name"),
        ({"instance_name": None}, "instance_name"),
        ({"enrollment_token_timeout_hours": 0}, "enrollment_token_timeout_hours"),
        ({"client_traffic_policy": 3}, "client_traffic_policy"),
        ({"public_proxy_url": "edge.example.com"}, "public_proxy_url"),
        ({"enrollment_vpn_step_optional": "yes"}, "enrollment_vpn_step_optional"),
        ({"smtp_servr": "mail.example.com"}, "smtp_servr"),
        ({"secret_key": "mine"}, "secret_key"),
        ({"instance_id": "00000000-0000-0000-0000-000000000000"}, "instance_id"),
    ]
    for body, name in cases:
        # A valid field alongside shows that nothing of a rejected body is written.
        r = await admin_client.patch("/settings", json={"instance_name": "Changed", **body})
        assert r.status_code == 400, body
        assert name in r.json()["msg"], (body, r.json())
    assert (await admin_client.get("/settings")).json() == before
    assert len(await events(db, "settings_updated_partial")) == 1

    r = await admin_client.patch("/settings", json={"secret_key": "x", "bogus": 1})
    assert r.json() == {"msg": "bogus: unknown field; secret_key: read-only field"}
    r = await admin_client.patch(
        "/settings", content=b"[1]", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400


async def test_patch_needs_a_user_agent(admin_client):
    r = await admin_client.patch(
        "/settings", json={"instance_name": "X"}, headers={"User-Agent": ""}
    )
    assert r.status_code == 400
    assert r.json() == {"msg": "Missing UserAgent header"}


async def test_info_reports_smtp_once_configured(admin_client):
    assert (await admin_client.get("/info")).json()["smtp_enabled"] is False
    await admin_client.patch("/settings", json={"smtp_server": "mail.example.com"})
    assert (await admin_client.get("/info")).json()["smtp_enabled"] is False  # no sender yet
    await admin_client.patch("/settings", json={"smtp_sender": "defguard@example.com"})
    assert (await admin_client.get("/info")).json()["smtp_enabled"] is True


async def test_mail_test_without_smtp_is_400_and_queues_nothing(admin_client, db):
    r = await admin_client.post("/mail/test", json={"to": "admin@example.com"})
    assert r.status_code == 400
    assert r.json() == {"msg": "SMTP not configured"}
    assert await mail_jobs(db) == []


async def test_mail_test_rejects_a_bad_address(admin_client, db):
    await admin_client.patch("/settings", json=SMTP)
    r = await admin_client.post("/mail/test", json={"to": "not an address"})
    assert r.status_code == 400
    assert "to" in r.json()["msg"]
    assert await mail_jobs(db) == []


async def test_mail_test_delivers_through_the_saved_settings(admin_client, fresh_db_url, db):
    with SmtpServer(free_port(), auth_require_tls=False) as server:
        r = await admin_client.patch(
            "/settings",
            json={
                "smtp_server": "127.0.0.1",
                "smtp_port": server.port,
                "smtp_encryption": "None",
                "smtp_user": SMTP_USER,
                "smtp_password": SMTP_PASSWORD,
                "smtp_sender": "defguard@example.com",
                "instance_name": "Acme VPN",
            },
        )
        assert r.status_code == 200, r.text
        r = await admin_client.post("/mail/test", json={"to": "admin@example.com"})
        assert r.status_code == 200, r.text
        assert r.json() == {}
        async with mail_worker(fresh_db_url, db):
            await wait_until(lambda: all_mail_done(db), what="the test mail")
        [got] = server.received
    assert got.rcpt_tos == ["admin@example.com"]
    assert got.message["Subject"] == "Test message"
    assert got.message["From"].addresses[0].display_name == "Acme VPN"
    assert "test message" in parts(got.message)[0]
