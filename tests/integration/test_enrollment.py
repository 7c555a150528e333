"""Enrollment: issuing tokens (REST) and redeeming them through the Edge's requests.

Edge requests go through `dispatch`, exactly as a Core answers them for an
Edge, with the spec's JSON shapes, error strings and cookie metadata.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyotp
import pytest
from sqlalchemy import func, select, text, update

from defguard.config import CoreSettings
from defguard.core.activity.models import ActivityLogEvent
from defguard.core.auth.mfa import hash_recovery_code, totp_secret_base32, verify_email_code
from defguard.core.auth.passwords import verify_password_sync
from defguard.core.devices.models import Device, DeviceLocation
from defguard.core.edge_requests.handlers import dispatch
from defguard.core.edge_requests.models import EdgeRequest
from defguard.core.enrollment.models import PollingToken, Token, TokenKind
from defguard.core.settings.models import Settings
from defguard.core.users.models import MfaMethod, User
from defguard.db.base import utcnow
from defguard.db.engine import Database
from defguard.edge import routes
from defguard.proto import edge_pb2
from defguard.wireguard.keys import generate_keypair
from tests.conftest import USER_AGENT, make_user
from tests.integration.test_locations import create_location

STRONG = "S3cure!Passw0rd"
_ids = itertools.count()

START_KEYS = {
    "admin",
    "user",
    "deadline_timestamp",
    "final_page_content",
    "instance",
    "settings",
}
USER_KEYS = {
    "first_name",
    "last_name",
    "login",
    "email",
    "phone_number",
    "is_active",
    "device_names",
    "enrolled",
    "is_admin",
}
INSTANCE_KEYS = {
    "id",
    "name",
    "url",
    "proxy_url",
    "username",
    "enterprise_enabled",
    "disable_all_traffic",
    "openid_display_name",
    "client_traffic_policy",
}
DEVICE_CONFIG_KEYS = {
    "network_id",
    "network_name",
    "config",
    "endpoint",
    "assigned_ip",
    "pubkey",
    "allowed_ips",
    "dns",
    "mfa_enabled",
    "keepalive_interval",
    "location_mfa_mode",
    "service_location_mode",
}


# --- helpers shared by the Edge-side test modules -----------------------------------------


@dataclass
class Answer:
    status: int
    body: bytes
    metadata: dict[str, str]

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> str:
        return self.json["error"]


def request(
    method: str,
    body: dict[str, Any],
    *,
    session: str | None = None,
    request_id: str | None = None,
    client_version: str | None = None,
    os_family: str | None = None,
) -> Any:
    metadata = {}
    if session is not None:
        metadata[routes.META_SESSION_TOKEN] = session
    if client_version is not None:
        metadata[routes.META_CLIENT_VERSION] = client_version
    if os_family is not None:
        metadata[routes.META_CLIENT_OS] = os_family
    return edge_pb2.EdgeRequest(
        request_id=request_id or f"req-{next(_ids)}",
        method=method,
        body=json.dumps(body).encode(),
        client_ip="203.0.113.7",
        user_agent=USER_AGENT,
        metadata=metadata,
    )


async def edge(db: Database, settings: CoreSettings, method: str, body: dict[str, Any], **kw: Any):
    response = await dispatch(db, settings, request(method, body, **kw))
    meta = {k: v for k, v in response.metadata.items() if k != routes.META_CORE_VERSION}
    return Answer(status=response.status, body=response.body, metadata=meta)


async def mails(db: Database, template: str | None = None) -> list[dict[str, Any]]:
    """Queued `send_mail` jobs' arguments (`to`, `template`, `context`), oldest first."""
    async with db.session() as s:
        rows = await s.execute(
            text(
                "SELECT args FROM procrastinate_jobs"
                " WHERE task_name = 'defguard:send_mail' ORDER BY id"
            )
        )
        found = [row[0] for row in rows]
    return [m for m in found if template is None or m["template"] == template]


async def events(db: Database, name: str) -> list[ActivityLogEvent]:
    async with db.session() as s:
        rows = await s.execute(
            select(ActivityLogEvent)
            .where(ActivityLogEvent.event == name)
            .order_by(ActivityLogEvent.id)
        )
        return list(rows.scalars())


async def get_user(db: Database, username: str) -> User:
    async with db.session() as s:
        return (await s.execute(select(User).where(User.username == username))).scalar_one()


async def get_token(db: Database, token_id: str) -> Token | None:
    async with db.session() as s:
        return await s.get(Token, token_id)


async def edit_token(db: Database, token_id: str, **values: Any) -> None:
    async with db.transaction() as s:
        await s.execute(update(Token).where(Token.id == token_id).values(**values))


async def edit_settings(db: Database, **values: Any) -> None:
    async with db.transaction() as s:
        await s.execute(update(Settings).where(Settings.id == 1).values(**values))


async def edit_user(db: Database, username: str, **values: Any) -> None:
    async with db.transaction() as s:
        await s.execute(update(User).where(User.username == username).values(**values))


async def count(db: Database, model: type) -> int:
    async with db.session() as s:
        return (await s.execute(select(func.count()).select_from(model))).scalar_one()


async def enrollment_token(admin_client, db: Database, username: str = "anna") -> str:
    """A fresh, not enrolled user and the enrollment token an admin issued for them."""
    await make_user(db, username, password=None)
    r = await admin_client.post(f"/user/{username}/start_enrollment", json={})
    assert r.status_code == 201, r.text
    return r.json()["enrollment_token"]


async def desktop_token(admin_client, username: str) -> str:
    r = await admin_client.post(f"/user/{username}/start_desktop", json={})
    assert r.status_code == 201, r.text
    return r.json()["enrollment_token"]


async def started(db: Database, settings: CoreSettings, token: str) -> Answer:
    answer = await edge(db, settings, "enrollment.start", {"token": token})
    assert answer.status == 200, answer.body
    return answer


def new_key() -> str:
    return generate_keypair().public


def _unix(value: datetime) -> int:
    return int(value.replace(tzinfo=UTC).timestamp())


# --- admin REST: start_enrollment / start_desktop ------------------------------------------


async def test_start_enrollment_issues_a_token_and_mails_it(with_smtp, admin_client, db):
    await make_user(db, "anna", password=None)
    r = await admin_client.post(
        "/user/anna/start_enrollment",
        json={
            "email": "anna.private@example.org",
            "send_enrollment_notification": True,
            "token_expiration_time": "1h 30m",
        },
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"enrollment_token", "enrollment_url"}
    assert body["enrollment_url"] == "http://localhost:8080/"
    token_id = body["enrollment_token"]
    assert len(token_id) == 32 and token_id.isalnum() and token_id.isascii()

    token = await get_token(db, token_id)
    assert token is not None and token.kind is TokenKind.ENROLLMENT
    assert token.email == "anna.private@example.org"
    assert token.admin_id == (await get_user(db, "admin")).id
    assert timedelta(minutes=89) < token.expires_at - utcnow() <= timedelta(minutes=90)
    assert (await get_user(db, "anna")).enrollment_pending is True
    (mail,) = await mails(db)
    assert mail["to"] == "anna.private@example.org"
    assert mail["template"] == "enrollment"
    assert mail["context"]["token"] == token_id
    assert mail["context"]["url"] == "http://localhost:8080/"
    assert mail["context"]["first_name"] == "Anna"
    assert mail["context"]["expires"].endswith("UTC")
    (event,) = await events(db, "enrollment_token_added")
    assert event.username == "admin" and "anna" in (event.description or "")


async def test_a_new_token_replaces_unused_ones_and_defaults_to_settings(admin_client, db):
    first = await enrollment_token(admin_client, db)
    r = await admin_client.post("/user/anna/start_enrollment", json={})
    assert r.status_code == 201
    second = r.json()["enrollment_token"]
    assert await get_token(db, first) is None
    token = await get_token(db, second)
    assert token is not None
    assert timedelta(hours=23, minutes=59) < token.expires_at - utcnow() <= timedelta(hours=24)
    assert await mails(db) == []  # no notification asked for


async def test_public_proxy_url_setting_wins_and_gets_a_trailing_slash(admin_client, db):
    await edit_settings(db, public_proxy_url="https://enroll.acme.test")
    await make_user(db, "anna", password=None)
    r = await admin_client.post("/user/anna/start_enrollment", json={})
    assert r.json()["enrollment_url"] == "https://enroll.acme.test/"


@pytest.mark.parametrize(
    ("username", "body", "status", "msg"),
    [
        (
            "anna",
            {"send_enrollment_notification": True},
            400,
            "Email notification is enabled, but email was not provided",
        ),
        ("ghost", {}, 404, "user ghost not found"),
        ("jdoe", {}, 400, "User account is already activated"),
        ("off", {}, 401, "Enrollment user is disabled"),
        ("anna", {"token_expiration_time": "soon"}, 400, None),
        ("anna", {"token_expiration_time": "0s"}, 400, None),
    ],
)
async def test_start_enrollment_errors_write_nothing(admin_client, db, username, body, status, msg):
    await make_user(db, "anna", password=None)
    await make_user(db, "jdoe")
    await make_user(db, "off", password=None, active=False)
    r = await admin_client.post(f"/user/{username}/start_enrollment", json=body)
    assert r.status_code == status, r.text
    if msg is not None:
        assert r.json() == {"msg": msg}
    else:
        assert r.json()["msg"].startswith("token_expiration_time:")
    assert await count(db, Token) == 0
    assert (await get_user(db, "anna")).enrollment_pending is False
    assert await events(db, "enrollment_token_added") == []


async def test_start_enrollment_is_admin_only(user_client, db):
    await make_user(db, "anna", password=None)
    r = await user_client.post("/user/anna/start_enrollment", json={})
    assert r.status_code == 403
    assert await count(db, Token) == 0


async def test_start_desktop_for_self_uses_own_address_and_settings_lifetime(
    with_smtp, user_client, db
):
    r = await user_client.post(
        "/user/jdoe/start_desktop",
        json={"send_enrollment_notification": True, "token_expiration_time": "3d"},
    )
    assert r.status_code == 201, r.text
    token = await get_token(db, r.json()["enrollment_token"])
    assert token is not None and token.kind is TokenKind.DESKTOP
    assert timedelta(hours=23, minutes=59) < token.expires_at - utcnow() <= timedelta(hours=24)
    assert (await get_user(db, "jdoe")).enrollment_pending is False
    (mail,) = await mails(db)
    assert mail["template"] == "desktop_activation"
    assert mail["to"] == "jdoe@example.com"
    assert mail["context"] == {
        "first_name": "Jdoe",
        "url": "http://localhost:8080/",
        "token": token.id,
    }


async def test_start_desktop_for_someone_else_needs_admin(user_client, admin_client, db):
    await make_user(db, "anna")
    assert (await user_client.post("/user/anna/start_desktop", json={})).status_code == 403
    assert (await admin_client.post("/user/anna/start_desktop", json={})).status_code == 201
    assert (await admin_client.post("/user/ghost/start_desktop", json={})).status_code == 404


# --- enrollment/start -----------------------------------------------------------------------


async def test_start_answers_the_spec_shape_and_opens_a_session(admin_client, db, settings):
    await edit_settings(
        db,
        instance_name="Acme",
        enrollment_welcome_message="Welcome to Acme VPN.",
        smtp_server="smtp.acme.test",
        smtp_sender="vpn@acme.test",
        enrollment_vpn_step_optional=False,
    )
    await create_location(admin_client, location_mfa_mode="internal")
    token = await enrollment_token(admin_client, db)
    before = utcnow()
    answer = await started(db, settings, token)
    body = answer.json
    assert set(body) == START_KEYS
    admin = await get_user(db, "admin")
    assert body["admin"] == {
        "name": f"{admin.first_name} {admin.last_name}",
        "phone_number": admin.phone,
        "email": admin.email,
    }
    assert body["user"] == {
        "first_name": "Anna",
        "last_name": "Tester",
        "login": "anna",
        "email": "anna@example.com",
        "phone_number": None,
        "is_active": True,
        "device_names": [],
        "enrolled": False,
        "is_admin": False,
    }
    instance_id = str((await _settings_row(db)).instance_id)
    assert body["instance"] == {
        "id": instance_id,
        "name": "Acme",
        "url": "http://localhost:8000/",
        "proxy_url": "http://localhost:8080/",
        "username": "anna",
        "enterprise_enabled": True,
        "disable_all_traffic": False,
        "openid_display_name": None,
        "client_traffic_policy": 0,
    }
    assert body["settings"] == {
        "vpn_setup_optional": False,
        "only_client_activation": False,
        "admin_device_management": False,
        "smtp_configured": True,
        "mfa_required": True,
    }
    assert body["final_page_content"] == "Welcome to Acme VPN."
    deadline = body["deadline_timestamp"]
    assert isinstance(deadline, int)
    expected = before + timedelta(minutes=10)
    assert abs(deadline - _unix(expected)) <= 2
    assert answer.metadata == {
        routes.META_SET_SESSION: token,
        routes.META_SESSION_EXPIRES: str(deadline),
    }
    stored = await get_token(db, token)
    assert stored is not None and stored.session_started_at is not None
    assert len(await events(db, "enrollment_started")) == 1

    again = await started(db, settings, token)
    assert again.json["deadline_timestamp"] == deadline
    assert len(await events(db, "enrollment_started")) == 1


async def test_start_reports_no_mfa_requirement_without_internal_mfa_locations(
    admin_client, db, settings
):
    await create_location(admin_client)
    # Internal MFA, but in a location the user may not use.
    await create_location(
        admin_client,
        name="Admins",
        address="10.20.0.1/24",
        location_mfa_mode="internal",
        allow_all_groups=False,
        allowed_groups=["admin"],
    )
    token = await enrollment_token(admin_client, db)
    body = (await started(db, settings, token)).json
    assert body["settings"]["mfa_required"] is False
    assert body["settings"]["smtp_configured"] is False
    assert body["settings"]["vpn_setup_optional"] is True


async def test_session_never_outlives_the_token(admin_client, db, settings):
    token = await enrollment_token(admin_client, db)
    expires = utcnow() + timedelta(minutes=3)
    await edit_token(db, token, expires_at=expires)
    body = (await started(db, settings, token)).json
    assert body["deadline_timestamp"] == _unix(expires)


async def test_start_errors(admin_client, db, settings):
    token = await enrollment_token(admin_client, db)
    await make_user(db, "jdoe")
    reset = (await admin_client.post("/user/jdoe/reset_password")).status_code
    assert reset == 200
    async with db.session() as s:
        reset_token = (
            await s.execute(select(Token.id).where(Token.kind == TokenKind.PASSWORD_RESET))
        ).scalar_one()

    unknown = await edge(db, settings, "enrollment.start", {"token": "x" * 32})
    assert (unknown.status, unknown.json) == (401, {"error": "invalid token"})
    assert unknown.metadata == {}
    wrong_kind = await edge(db, settings, "enrollment.start", {"token": reset_token})
    assert (wrong_kind.status, wrong_kind.error) == (403, "invalid token")

    await edit_user(db, "anna", is_active=False)
    disabled = await edge(db, settings, "enrollment.start", {"token": token})
    assert (disabled.status, disabled.error) == (403, "user is disabled")
    stored = await get_token(db, token)
    assert stored is not None and stored.session_started_at is None  # nothing written
    await edit_user(db, "anna", is_active=True)

    await edit_token(db, token, expires_at=utcnow() - timedelta(seconds=1))
    expired = await edge(db, settings, "enrollment.start", {"token": token})
    assert (expired.status, expired.error) == (401, "token expired")
    assert await events(db, "enrollment_started") == []


async def test_a_session_is_single(admin_client, db, settings):
    token = await enrollment_token(admin_client, db)
    await started(db, settings, token)
    await edit_token(db, token, session_deadline=utcnow() - timedelta(seconds=1))
    again = await edge(db, settings, "enrollment.start", {"token": token})
    assert (again.status, again.error) == (401, "invalid token")


async def test_missing_body_field_is_422(db, settings):
    answer = await edge(db, settings, "enrollment.start", {"tok": "x"})
    assert answer.status == 422


# --- the session of later steps --------------------------------------------------------------


async def test_later_steps_need_an_open_session(admin_client, db, settings):
    token = await enrollment_token(admin_client, db)
    body = {"password": STRONG}
    missing = await edge(db, settings, "enrollment.activate_user", body)
    assert (missing.status, missing.error) == (401, "Missing authorization header")
    unknown = await edge(db, settings, "enrollment.activate_user", body, session="y" * 32)
    assert (unknown.status, unknown.error) == (401, "invalid token")
    not_started = await edge(db, settings, "enrollment.activate_user", body, session=token)
    assert (not_started.status, not_started.error) == (401, "invalid token")

    await started(db, settings, token)
    await edit_token(db, token, session_deadline=utcnow() - timedelta(seconds=1))
    expired = await edge(db, settings, "enrollment.activate_user", body, session=token)
    assert (expired.status, expired.error) == (401, "Session expired")
    assert (await get_user(db, "anna")).password_hash is None


# --- activate_user ----------------------------------------------------------------------------


async def test_activate_user_sets_password_and_spends_the_token(
    with_smtp, admin_client, db, settings
):
    await edit_settings(db, enrollment_welcome_message="Hi from Acme")
    token = await enrollment_token(admin_client, db)
    await started(db, settings, token)
    answer = await edge(
        db,
        settings,
        "enrollment.activate_user",
        {"password": STRONG, "phone_number": "+48600100200", "token": "ignored"},
        session=token,
    )
    assert answer.status == 200, answer.body
    assert answer.body == b""
    assert answer.metadata == {routes.META_CLEAR_SESSION: "1"}

    user = await get_user(db, "anna")
    assert verify_password_sync(user.password_hash, STRONG)
    assert user.password_hash != STRONG
    assert user.phone == "+48600100200"
    assert user.enrollment_pending is False
    stored = await get_token(db, token)
    assert stored is not None and stored.used_at is not None
    (welcome,) = await mails(db, "welcome")
    assert welcome["to"] == "anna@example.com"
    assert welcome["context"]["message"] == "Hi from Acme"
    (event,) = await events(db, "enrollment_completed")
    assert event.username == "anna" and event.module == "enrollment"

    # Single use: neither a later step nor a new start accepts the token again.
    reused = await edge(
        db, settings, "enrollment.activate_user", {"password": STRONG}, session=token
    )
    assert (reused.status, reused.error) == (401, "invalid token")
    restart = await edge(db, settings, "enrollment.start", {"token": token})
    assert (restart.status, restart.error) == (401, "invalid token")


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"password": "Sh0rt!"}, "password not strong enough"),
        ({"password": "alllowercase1!"}, "password not strong enough"),
        ({"password": STRONG, "phone_number": "202.555.0173"}, "invalid phone number"),
    ],
)
async def test_activate_user_validation_writes_nothing(admin_client, db, settings, body, error):
    token = await enrollment_token(admin_client, db)
    await started(db, settings, token)
    answer = await edge(db, settings, "enrollment.activate_user", body, session=token)
    assert (answer.status, answer.json) == (400, {"error": error})
    user = await get_user(db, "anna")
    assert user.password_hash is None and user.phone is None and user.enrollment_pending
    stored = await get_token(db, token)
    assert stored is not None and stored.used_at is None
    assert await mails(db) == []


async def test_activate_user_refuses_enrolled_and_disabled_users(admin_client, db, settings):
    await make_user(db, "jdoe")
    token = await desktop_token(admin_client, "jdoe")
    await started(db, settings, token)
    body = {"password": STRONG}
    enrolled = await edge(db, settings, "enrollment.activate_user", body, session=token)
    assert (enrolled.status, enrolled.error) == (400, "user already activated")
    await edit_user(db, "jdoe", is_active=False)
    disabled = await edge(db, settings, "enrollment.activate_user", body, session=token)
    assert (disabled.status, disabled.error) == (400, "user is disabled")


# --- create_device ---------------------------------------------------------------------------


async def test_create_device_returns_configs_and_a_polling_token(
    with_smtp, admin_client, db, settings
):
    location = await create_location(admin_client)
    token = await enrollment_token(admin_client, db)
    await started(db, settings, token)
    pubkey = new_key()
    answer = await edge(
        db,
        settings,
        "enrollment.create_device",
        {"name": "anna-laptop", "pubkey": pubkey},
        session=token,
    )
    assert answer.status == 200, answer.body
    body = answer.json
    assert set(body) == {"device", "configs", "instance", "token"}
    async with db.session() as s:
        device = (await s.execute(select(Device))).scalar_one()
        ips = (
            await s.execute(
                select(DeviceLocation.wireguard_ips).where(DeviceLocation.device_id == device.id)
            )
        ).scalar_one()
        polling = (await s.execute(select(PollingToken))).scalar_one()
    user = await get_user(db, "anna")
    assert body["device"] == {
        "id": device.id,
        "name": "anna-laptop",
        "pubkey": pubkey,
        "user_id": user.id,
        "created_at": _unix(device.created),
    }
    assert [str(ip) for ip in ips] == ["10.10.0.2"]
    assert body["token"] == polling.token and polling.device_id == device.id
    assert len(polling.token) == 32 and polling.token.isalnum()
    (config,) = body["configs"]
    assert set(config) == DEVICE_CONFIG_KEYS
    assert config == {
        "network_id": location["id"],
        "network_name": "HQ",
        "config": (
            "[Interface]\nPrivateKey = YOUR_PRIVATE_KEY\nAddress = 10.10.0.2\nDNS = 10.10.0.53\n\n"
            f"[Peer]\nPublicKey = {location['pubkey']}\n"
            "AllowedIPs = 10.10.0.0/24,192.168.50.0/24\nEndpoint = vpn.example.com:51820\n"
            "PersistentKeepalive = 25"
        ),
        "endpoint": "vpn.example.com:51820",
        "assigned_ip": "10.10.0.2",
        "pubkey": location["pubkey"],
        "allowed_ips": "10.10.0.0/24,192.168.50.0/24",
        "dns": "10.10.0.53",
        "mfa_enabled": False,
        "keepalive_interval": 25,
        "location_mfa_mode": 1,
        "service_location_mode": 1,
    }
    assert set(body["instance"]) == INSTANCE_KEYS and body["instance"]["username"] == "anna"

    (mail,) = await mails(db, "new_device")
    assert mail["to"] == "anna@example.com"
    assert mail["context"]["device_name"] == "anna-laptop"
    assert mail["context"]["pubkey"] == pubkey
    assert mail["context"]["locations"] == ["HQ"]
    assert mail["context"]["ip"] == "203.0.113.7"
    assert len(await events(db, "enrollment_device_added")) == 1
    # An enrollment token stays usable for the remaining steps.
    stored = await get_token(db, token)
    assert stored is not None and stored.used_at is None


async def test_a_retried_create_device_is_answered_once(with_smtp, admin_client, db, settings):
    await create_location(admin_client)
    token = await enrollment_token(admin_client, db)
    await started(db, settings, token)
    body = {"name": "anna-laptop", "pubkey": new_key()}
    first = await edge(
        db, settings, "enrollment.create_device", body, session=token, request_id="retry-1"
    )
    again = await edge(
        db, settings, "enrollment.create_device", body, session=token, request_id="retry-1"
    )
    assert first.status == again.status == 200
    assert first.body == again.body
    assert await count(db, Device) == 1
    assert await count(db, PollingToken) == 1
    assert len(await mails(db, "new_device")) == 1
    assert await count(db, EdgeRequest) == 2  # the start and the one create_device


async def test_create_device_without_any_location(admin_client, db, settings):
    token = await enrollment_token(admin_client, db)
    await started(db, settings, token)
    answer = await edge(
        db,
        settings,
        "enrollment.create_device",
        {"name": "anna-laptop", "pubkey": new_key()},
        session=token,
    )
    assert answer.status == 200, answer.body
    assert answer.json["configs"] == []
    assert answer.json["device"]["name"] == "anna-laptop"
    assert await count(db, Device) == 1


async def test_create_device_errors_write_nothing(with_smtp, admin_client, db, settings):
    location = await create_location(admin_client)
    token = await enrollment_token(admin_client, db)
    await started(db, settings, token)
    taken = new_key()
    first = await edge(
        db, settings, "enrollment.create_device", {"name": "one", "pubkey": taken}, session=token
    )
    assert first.status == 200
    cases = [
        ({"name": "two", "pubkey": "not-a-key"}, "invalid pubkey"),
        ({"name": "two", "pubkey": taken}, "invalid key"),
        ({"name": "two", "pubkey": location["pubkey"]}, "invalid key"),
        ({"name": "  ", "pubkey": new_key()}, "device name must not be empty"),
        ({"name": "one", "pubkey": new_key()}, "Device with name one already exists"),
    ]
    for body, error in cases:
        answer = await edge(db, settings, "enrollment.create_device", body, session=token)
        assert (answer.status, answer.error) == (400, error), body
    assert await count(db, Device) == 1
    assert await count(db, PollingToken) == 1
    assert len(await mails(db, "new_device")) == 1

    await edit_user(db, "anna", is_active=False)
    disabled = await edge(
        db, settings, "enrollment.create_device", {"name": "x", "pubkey": new_key()}, session=token
    )
    assert (disabled.status, disabled.error) == (400, "can't add device to disabled user")
    assert await count(db, Device) == 1


async def test_admin_device_management_keeps_devices_with_admins(admin_client, db, settings):
    await edit_settings(db, enrollment_admin_device_management=True)
    token = await enrollment_token(admin_client, db)
    answer = await started(db, settings, token)
    assert answer.json["settings"]["admin_device_management"] is True
    refused = await edge(
        db, settings, "enrollment.create_device", {"name": "x", "pubkey": new_key()}, session=token
    )
    assert (refused.status, refused.error) == (403, "only admin users can manage devices")
    assert await count(db, Device) == 0


# --- network_info and desktop activation --------------------------------------------------------


async def test_desktop_activation_refreshes_an_existing_device(admin_client, db, settings):
    await create_location(admin_client)
    await make_user(db, "jdoe")
    pubkey = new_key()
    r = await admin_client.post("/device/jdoe", json={"name": "laptop", "wireguard_pubkey": pubkey})
    assert r.status_code == 201, r.text

    token = await desktop_token(admin_client, "jdoe")
    start = (await started(db, settings, token)).json
    assert start["user"]["enrolled"] is True and start["user"]["device_names"] == ["laptop"]
    first = await edge(db, settings, "enrollment.network_info", {"pubkey": pubkey}, session=token)
    assert first.status == 200, first.body
    assert first.json["device"]["pubkey"] == pubkey
    assert first.json["configs"][0]["assigned_ip"] == "10.10.0.2"
    old_polling = first.json["token"]

    # The desktop token of an enrolled user is spent by this last step.
    stored = await get_token(db, token)
    assert stored is not None and stored.used_at is not None

    token = await desktop_token(admin_client, "jdoe")
    await started(db, settings, token)
    second = await edge(db, settings, "enrollment.network_info", {"pubkey": pubkey}, session=token)
    assert second.status == 200
    assert second.json["token"] != old_polling
    assert await count(db, PollingToken) == 1
    stale = await edge(db, settings, "poll", {"token": old_polling})
    assert (stale.status, stale.error) == (403, "invalid token")
    fresh = await edge(db, settings, "poll", {"token": second.json["token"]})
    assert fresh.status == 200


async def test_network_info_errors(admin_client, db, settings):
    await create_location(admin_client)
    await make_user(db, "jdoe")
    await make_user(db, "other")
    theirs = new_key()
    r = await admin_client.post("/device/other", json={"name": "pc", "wireguard_pubkey": theirs})
    assert r.status_code == 201
    token = await desktop_token(admin_client, "jdoe")
    await started(db, settings, token)

    bad = await edge(db, settings, "enrollment.network_info", {"pubkey": "x"}, session=token)
    assert (bad.status, bad.error) == (400, "invalid pubkey")
    unknown = await edge(
        db, settings, "enrollment.network_info", {"pubkey": new_key()}, session=token
    )
    assert (unknown.status, unknown.error) == (404, "device not found")
    foreign = await edge(db, settings, "enrollment.network_info", {"pubkey": theirs}, session=token)
    assert (foreign.status, foreign.error) == (
        401,
        "enrollment token is not valid for specified device",
    )
    assert await count(db, PollingToken) == 0


# --- MFA during enrollment ----------------------------------------------------------------------


async def test_totp_registration_returns_recovery_codes(admin_client, db, settings):
    token = await enrollment_token(admin_client, db)
    await started(db, settings, token)
    start = await edge(
        db, settings, "enrollment.register_mfa_start", {"method": "Totp"}, session=token
    )
    assert start.status == 200, start.body
    secret = start.json["totp_secret"]
    assert set(start.json) == {"totp_secret"}
    user = await get_user(db, "anna")
    assert user.totp_secret is not None and totp_secret_base32(user.totp_secret) == secret
    assert user.totp_enabled is False

    finish = "enrollment.register_mfa_finish"
    wrong = await edge(db, settings, finish, {"method": "Totp", "code": "000000"}, session=token)
    if pyotp.TOTP(secret).now() != "000000":
        assert (wrong.status, wrong.error) == (400, "Code invalid")
    code = pyotp.TOTP(secret).now()
    done = await edge(db, settings, finish, {"method": "Totp", "code": code}, session=token)
    assert done.status == 200, done.body
    codes = done.json["recovery_codes"]
    assert set(done.json) == {"recovery_codes"} and len(codes) == 8
    user = await get_user(db, "anna")
    assert user.totp_enabled and user.mfa_enabled
    assert user.mfa_method is MfaMethod.ONE_TIME_PASSWORD
    assert user.recovery_codes == [hash_recovery_code(c) for c in codes]

    twice = await edge(db, settings, finish, {"method": "Totp", "code": code}, session=token)
    assert (twice.status, twice.error) == (400, "Mfa already enabled on the account")
    again = await edge(
        db, settings, "enrollment.register_mfa_start", {"method": "Totp"}, session=token
    )
    assert (again.status, again.error) == (400, "Method already enabled")


async def test_email_mfa_registration(admin_client, db, settings):
    token = await enrollment_token(admin_client, db)
    await started(db, settings, token)
    start = "enrollment.register_mfa_start"
    no_smtp = await edge(db, settings, start, {"method": "Email"}, session=token)
    assert (no_smtp.status, no_smtp.error) == (500, "Internal server error")
    assert (await get_user(db, "anna")).email_mfa_secret is None

    await edit_settings(db, smtp_server="smtp.acme.test", smtp_sender="vpn@acme.test")
    sent = await edge(db, settings, start, {"method": "Email"}, session=token)
    assert (sent.status, sent.json) == (200, {"totp_secret": None})
    (mail,) = await mails(db, "mfa_code")
    assert mail["to"] == "anna@example.com"
    code = mail["context"]["code"]
    user = await get_user(db, "anna")
    assert user.email_mfa_secret is not None and not user.email_mfa_enabled
    assert len(code) == 6 and code.isdigit()
    assert verify_email_code(user.email_mfa_secret, code, interval=60)

    finish = "enrollment.register_mfa_finish"
    wrong_code = "000000" if code != "000000" else "111111"
    wrong = await edge(db, settings, finish, {"method": "Email", "code": wrong_code}, session=token)
    assert (wrong.status, wrong.error) == (400, "Email code invalid")
    done = await edge(db, settings, finish, {"method": "Email", "code": code}, session=token)
    assert done.status == 200, done.body
    user = await get_user(db, "anna")
    assert user.email_mfa_enabled and user.mfa_enabled and user.mfa_method is MfaMethod.EMAIL
    assert len(done.json["recovery_codes"]) == 8


async def test_mfa_registration_refusals(admin_client, db, settings):
    token = await enrollment_token(admin_client, db)
    await started(db, settings, token)
    start = "enrollment.register_mfa_start"
    for method in ("Oidc", "Biometric", "MobileApprove", "totp", ""):
        answer = await edge(db, settings, start, {"method": method}, session=token)
        assert (answer.status, answer.error) == (400, "Method not supported."), method
    number = await edge(db, settings, start, {"method": 0}, session=token)
    assert number.status == 422

    await make_user(db, "jdoe")
    desktop = await desktop_token(admin_client, "jdoe")
    await started(db, settings, desktop)
    enrolled = await edge(db, settings, start, {"method": "Totp"}, session=desktop)
    assert (enrolled.status, enrolled.error) == (403, "User is already enrolled")
    assert (await get_user(db, "jdoe")).totp_secret is None


async def test_register_mobile_is_refused_clearly(admin_client, db, settings):
    token = await enrollment_token(admin_client, db)
    await started(db, settings, token)
    body = {"auth_pub_key": "A" * 43 + "=", "device_pub_key": "A" * 43 + "="}
    no_cookie = await edge(db, settings, "enrollment.register_mobile", body)
    assert (no_cookie.status, no_cookie.error) == (400, "No token present")
    answer = await edge(db, settings, "enrollment.register_mobile", body, session=token)
    assert answer.status == 400
    assert "not offered" in answer.error


# --- the whole desktop enrollment (sequence a) ------------------------------------------------


async def test_full_desktop_enrollment(admin_client, db, settings):
    await create_location(admin_client, location_mfa_mode="internal")
    token = await enrollment_token(admin_client, db)
    start = (await started(db, settings, token)).json
    assert start["settings"]["mfa_required"] is True and start["user"]["enrolled"] is False
    device = await edge(
        db,
        settings,
        "enrollment.create_device",
        {"name": "anna-laptop", "pubkey": new_key()},
        session=token,
    )
    assert device.status == 200
    assert device.json["configs"][0]["mfa_enabled"] is True
    assert device.json["configs"][0]["location_mfa_mode"] == 2
    secret = (
        await edge(db, settings, "enrollment.register_mfa_start", {"method": "Totp"}, session=token)
    ).json["totp_secret"]
    finish = await edge(
        db,
        settings,
        "enrollment.register_mfa_finish",
        {"method": "Totp", "code": pyotp.TOTP(secret).now()},
        session=token,
    )
    assert finish.status == 200
    done = await edge(db, settings, "enrollment.activate_user", {"password": STRONG}, session=token)
    assert done.status == 200
    user = await get_user(db, "anna")
    assert verify_password_sync(user.password_hash, STRONG)
    assert user.mfa_enabled and user.totp_enabled and not user.enrollment_pending
    poll = await edge(db, settings, "poll", {"token": device.json["token"]})
    assert poll.status == 200
    assert poll.json["device_config"]["configs"] == device.json["configs"]


async def _settings_row(db: Database) -> Settings:
    async with db.session() as s:
        row = await s.get(Settings, 1)
        assert row is not None
        return row
