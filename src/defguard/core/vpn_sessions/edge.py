"""`client-mfa/start` and `client-mfa/finish`: MFA before a VPN connection (spec sequence 4(c)).

`start` checks that the device may use the location with the chosen method,
opens a pending session and hands out a token naming it; `finish` checks the
code and turns the session into the device's active one, whose fresh
preshared key makes the device a peer on the location's gateways. Both may
run on different Cores: the token is signed with the shared secret and the
session lives in PostgreSQL.

These are the busiest writes a deployment has, so each step is two round
trips over `Database.direct`: one statement reads everything the checks
need, then one SQL function (`client_mfa_open`, `client_mfa_authorize`,
migration 0007) takes the locks, re-checks what may have changed meanwhile,
writes and stores the answer in a single transaction. The decisions that
need Python (the method, the code, the token) are made in between.

Wrong codes are counted per device and per client address with the login
throttle, and the count commits with the stored 401, so a retry of the same
request on another Core neither counts it twice nor lets it slip.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from defguard.core.activity.service import describe_agent
from defguard.core.auth import throttle
from defguard.core.auth.mfa import (
    current_totp_step,
    email_code,
    verify_email_code,
    verify_totp,
)
from defguard.core.devices.models import DeviceType
from defguard.core.edge_requests.dispatch import (
    REQUEST_LOCK_NAMESPACE,
    DirectCall,
    EdgeError,
    EdgeResult,
    direct_handler,
    encode,
    error_body,
)
from defguard.core.locations.access import publish_committed
from defguard.core.locations.models import LocationMfaMode
from defguard.core.mail.service import queue_mail
from defguard.core.vpn_sessions import service, tokens
from defguard.db.base import utcnow
from defguard.db.direct import DirectConnection
from defguard.db.engine import Database
from defguard.edge import routes

_BIGINT_MAX = 2**63 - 1


class ClientMfaMethod(enum.IntEnum):
    """The clients' `MfaMethod` numbers."""

    TOTP = 0
    EMAIL = 1
    OIDC = 2
    BIOMETRIC = 3
    MOBILE_APPROVE = 4


# What each location mode admits, and of that what this Core can verify:
# biometric and mobile approval need the mobile app's signing keys, and
# external MFA needs an OpenID provider, neither of which this Core has.
LOCATION_METHODS = {
    LocationMfaMode.INTERNAL: frozenset(
        {
            ClientMfaMethod.TOTP,
            ClientMfaMethod.EMAIL,
            ClientMfaMethod.BIOMETRIC,
            ClientMfaMethod.MOBILE_APPROVE,
        }
    ),
    LocationMfaMode.EXTERNAL: frozenset({ClientMfaMethod.OIDC}),
}
OFFERED = frozenset({ClientMfaMethod.TOTP, ClientMfaMethod.EMAIL})

NOT_AVAILABLE = "selected MFA method not available"
UNAUTHORIZED = "unauthorized"
TOO_MANY = "too many attempts"
SESSION_NOT_FOUND = "login session not found"


def _bad(message: str) -> EdgeError:
    return EdgeError(400, message)


def _method(value: int, mode: LocationMfaMode) -> ClientMfaMethod:
    try:
        method = ClientMfaMethod(value)
    except ValueError:
        raise _bad("invalid MFA method selected") from None
    if method not in LOCATION_METHODS.get(mode, frozenset()):
        raise _bad("selected MFA method not supported by location")
    if method not in OFFERED:
        raise _bad(NOT_AVAILABLE)
    return method


def _throttle_keys(call: DirectCall, device_id: int) -> list[str]:
    keys = [f"client-mfa:device:{device_id}"]
    if call.client_ip:
        keys.append(f"client-mfa:ip:{call.client_ip}")
    return keys


def _locks(call: DirectCall, location_id: int, device_id: int, keys: list[str]) -> dict[str, Any]:
    """The function's locks, in the order every path takes them: the request, the
    device in the location, the device's throttle key (the address's key is
    only checked: locking it would make every client behind one NAT address
    pass MFA one at a time)."""
    return {
        "lock_spaces": [REQUEST_LOCK_NAMESPACE, service.LOCK_NAMESPACE, throttle.LOCK_NAMESPACE],
        "lock_keys": [
            call.request_id,
            service.device_lock_key(location_id, device_id),
            keys[0],
        ],
        "throttle_keys": keys,
    }


def _policy(now: datetime) -> dict[str, Any]:
    return {
        "max_failures": throttle.MAX_FAILURES,
        "window": throttle.WINDOW,
        "block": throttle.BLOCK,
        "now": now,
    }


def _replayed(status: int, body: bytes) -> EdgeResult:
    """The answer a first attempt of this request stored (the Edge retried it)."""
    return EdgeResult(body=bytes(body), status=status)


# -- start ---------------------------------------------------------------------------

_START_READ = """
SELECT s.secret_key, s.mfa_code_timeout_seconds,
       l.id, l.name, l.location_mfa_mode,
       d.id, d.wireguard_pubkey,
       u.id, u.email, u.first_name, u.totp_enabled, u.totp_secret,
       u.email_mfa_enabled, u.email_mfa_secret,
       CASE WHEN l.id IS NOT NULL AND u.id IS NOT NULL
            THEN device_admitted(d.id, d.user_id, l.id, d.device_type = 'network') END,
       nextval('vpn_client_session_id_seq')
FROM settings s
LEFT JOIN wireguard_network l ON l.id = %(location_id)s
LEFT JOIN device d ON d.wireguard_pubkey = %(pubkey)s
LEFT JOIN "user" u ON u.id = d.user_id
WHERE s.id = 1
ORDER BY d.id
LIMIT 1
"""

_OPEN = """
SELECT outcome, stored_status, stored_body FROM client_mfa_open(
    p_lock_spaces => %(lock_spaces)s::integer[], p_lock_keys => %(lock_keys)s::text[],
    p_session_id => %(session_id)s::bigint, p_location_id => %(location_id)s::bigint,
    p_device_id => %(device_id)s::bigint, p_user_id => %(user_id)s::bigint,
    p_method => %(method)s::smallint, p_body => %(body)s::bytea,
    p_now => %(now)s::timestamp, p_throttle_keys => %(throttle_keys)s::text[],
    p_max_failures => %(max_failures)s::integer, p_window => %(window)s::interval,
    p_block => %(block)s::interval)
"""


@direct_handler("client_mfa.start")
async def start(call: DirectCall) -> EdgeResult:
    body: routes.ClientMfaStart = call.body
    location_id = body.location_id if 0 < body.location_id <= _BIGINT_MAX else 0
    async with call.database.direct.connection() as conn:
        return await _start(call, conn, location_id)


async def _start(call: DirectCall, conn: DirectConnection, location_id: int) -> EdgeResult:
    body: routes.ClientMfaStart = call.body
    row = await conn.fetchone(_START_READ, {"location_id": location_id, "pubkey": body.pubkey})
    if row is None:
        raise EdgeError(500, "settings missing")
    (
        secret_key,
        code_timeout,
        found_location,
        location_name,
        mode,
        device_id,
        pubkey,
        user_id,
        email,
        first_name,
        totp_enabled,
        totp_secret,
        email_mfa_enabled,
        email_mfa_secret,
        admitted,
        session_id,
    ) = row
    if found_location is None:
        raise _bad("location not found")
    mode = LocationMfaMode(mode)
    if mode is LocationMfaMode.DISABLED:
        raise _bad("MFA not enabled for location")
    if device_id is None:
        raise _bad("device not found")
    if user_id is None:
        raise _bad("user not found")
    method = _method(body.method, mode)
    configured = (
        totp_enabled and totp_secret is not None
        if method is ClientMfaMethod.TOTP
        else email_mfa_enabled and email_mfa_secret is not None
    )
    if not configured:
        raise _bad(NOT_AVAILABLE)
    if not admitted:
        raise EdgeError(401, UNAUTHORIZED)
    # Signed before the session exists: its id was drawn from the sequence above.
    token = tokens.issue(
        secret_key,
        tokens.MfaClaims(session_id=session_id, location_id=location_id, pubkey=pubkey),
    )
    answer = {"token": token, "challenge": None}
    keys = _throttle_keys(call, device_id)
    params = {
        **_locks(call, location_id, device_id, keys),
        **_policy(utcnow()),
        "session_id": session_id,
        "location_id": location_id,
        "device_id": device_id,
        "user_id": user_id,
        "method": int(method),
        "body": encode(answer),
    }
    if method is ClientMfaMethod.EMAIL:
        # The code's e-mail is queued in the same transaction as the attempt.
        async with call.database.transaction() as db:
            conn = await db.connection()
            outcome, status, stored = (await conn.exec_driver_sql(_OPEN, params)).one()
            if outcome == "ok":
                await queue_mail(
                    db,
                    to=email,
                    template="mfa_code",
                    context={
                        "first_name": first_name,
                        "code": email_code(email_mfa_secret, interval=code_timeout),
                        "purpose": f"connecting to VPN location {location_name}",
                    },
                )
    else:
        outcome, status, stored = await _fetch(conn, _OPEN, params)
    if outcome == "replayed":
        return _replayed(status, stored)
    if outcome == "blocked":
        raise EdgeError(429, TOO_MANY)
    return EdgeResult(body=answer)


# -- finish --------------------------------------------------------------------------

# Every join is on a primary key alone, and the session's state is checked in
# the select list: with conditions on other columns in the join, the planner
# may take a partial index of the location's open sessions and read them all.
_FINISH_READ = """
SELECT st.secret_key, st.mfa_code_timeout_seconds,
       s.id, s.location_id = %(location_id)s AND s.authorized_at IS NULL AND s.ended_at IS NULL,
       s.method, s.device_id, s.user_id,
       d.wireguard_pubkey = %(pubkey)s, d.name, d.device_type,
       l.name, l.location_mfa_mode,
       u.totp_enabled, u.totp_secret, u.email_mfa_enabled, u.email_mfa_secret,
       e.status, e.body
FROM settings st
LEFT JOIN edge_request e ON e.request_id = %(request_id)s
LEFT JOIN vpn_client_session s ON s.id = %(session_id)s
LEFT JOIN device d ON d.id = s.device_id
LEFT JOIN wireguard_network l ON l.id = s.location_id
LEFT JOIN "user" u ON u.id = s.user_id
WHERE st.id = 1
"""

_AUTHORIZE = """
SELECT outcome, stored_status, stored_body FROM client_mfa_authorize(
    p_lock_spaces => %(lock_spaces)s::integer[], p_lock_keys => %(lock_keys)s::text[],
    p_session_id => %(session_id)s::bigint, p_location_id => %(location_id)s::bigint,
    p_device_id => %(device_id)s::bigint, p_user_id => %(user_id)s::bigint,
    p_network_device => %(network_device)s::boolean, p_method => %(method)s::smallint,
    p_correct => %(correct)s::boolean, p_secret => %(secret)s::bytea,
    p_totp_step => %(totp_step)s::bigint, p_psk => %(psk)s::text,
    p_ok_body => %(ok_body)s::bytea, p_fail_body => %(fail_body)s::bytea,
    p_now => %(now)s::timestamp, p_throttle_keys => %(throttle_keys)s::text[],
    p_max_failures => %(max_failures)s::integer, p_window => %(window)s::interval,
    p_block => %(block)s::interval, p_keep => %(keep)s::interval,
    p_event_ip => %(event_ip)s::inet, p_event_agent => %(event_agent)s::text,
    p_location_name => %(location_name)s::text, p_ok_text => %(ok_text)s::text,
    p_fail_text => %(fail_text)s::text, p_replaced => %(replaced)s::text)
"""


@direct_handler("client_mfa.finish")
async def finish(call: DirectCall) -> EdgeResult:
    body: routes.ClientMfaFinish = call.body
    try:
        claims = tokens.peek(body.token)
    except tokens.InvalidToken:
        raise _bad("invalid token") from None
    async with call.database.direct.connection() as conn:
        return await _finish(call, conn, claims)


async def _finish(call: DirectCall, conn: DirectConnection, claims: tokens.MfaClaims) -> EdgeResult:
    body: routes.ClientMfaFinish = call.body
    row = await conn.fetchone(
        _FINISH_READ,
        {
            "session_id": claims.session_id,
            "location_id": claims.location_id,
            "pubkey": claims.pubkey,
            "request_id": call.request_id,
        },
    )
    if row is None:
        raise EdgeError(500, "settings missing")
    (
        secret_key,
        code_timeout,
        session_id,
        pending,
        method,
        device_id,
        user_id,
        key_matches,
        device_name,
        device_type,
        location_name,
        mode,
        totp_enabled,
        totp_secret,
        email_mfa_enabled,
        email_mfa_secret,
        stored_status,
        stored_body,
    ) = row
    try:
        tokens.verify(secret_key, body.token)
    except tokens.InvalidToken:
        raise _bad("invalid token") from None
    if stored_status is not None:
        # A retry of a request that already committed: its session is no
        # longer pending, but the answer is the first attempt's.
        return _replayed(stored_status, stored_body)
    # The device must still hold the key the token was issued for: a token is
    # bound to a key, not to a device row whose key may since have changed.
    if session_id is None or not pending or not key_matches:
        raise _bad(SESSION_NOT_FOUND)
    if LocationMfaMode(mode) is LocationMfaMode.DISABLED:
        # Turned off since `start`: the device is a plain peer now.
        raise _bad("MFA not enabled for location")
    if method not in (ClientMfaMethod.TOTP, ClientMfaMethod.EMAIL):
        raise _bad(NOT_AVAILABLE)
    if not body.code:
        raise _bad(
            "TOTP code not provided"
            if method == ClientMfaMethod.TOTP
            else "email MFA code not provided"
        )
    code = body.code.strip()
    totp_step: int | None = None
    if method == ClientMfaMethod.TOTP:
        secret = totp_secret
        correct = bool(totp_enabled) and verify_totp(totp_secret, code)
        totp_step = current_totp_step()
    else:
        secret = email_mfa_secret
        correct = bool(email_mfa_enabled) and verify_email_code(
            email_mfa_secret, code, interval=code_timeout
        )
    psk = service.new_preshared_key()
    keys = _throttle_keys(call, device_id)
    outcome, status, stored = await _fetch(
        conn,
        _AUTHORIZE,
        {
            **_locks(call, claims.location_id, device_id, keys),
            **_policy(utcnow()),
            "session_id": session_id,
            "location_id": claims.location_id,
            "device_id": device_id,
            "user_id": user_id,
            "network_device": DeviceType(device_type) is DeviceType.NETWORK,
            "method": method,
            "correct": correct,
            "secret": secret,
            "totp_step": totp_step,
            "psk": psk,
            "ok_body": encode({"preshared_key": psk, "token": None}),
            "fail_body": error_body(UNAUTHORIZED),
            "keep": throttle.KEEP,
            "event_ip": call.client_ip or None,
            "event_agent": describe_agent(call.user_agent),
            "location_name": location_name,
            "ok_text": f"Passed MFA for device {device_name} in VPN location {location_name}",
            "fail_text": f"Failed MFA for device {device_name} in VPN location {location_name}",
            "replaced": service.ENDED_REPLACED,
        },
    )
    if outcome == "replayed":
        return _replayed(status, stored)
    if outcome == "blocked":
        raise EdgeError(429, TOO_MANY)
    if outcome == "gone":
        raise _bad(SESSION_NOT_FOUND)
    if outcome in ("denied", "wrong"):
        raise EdgeError(401, UNAUTHORIZED)
    location_id = claims.location_id

    async def publish(database: Database) -> None:
        await publish_committed(database, [location_id])

    return EdgeResult(body={"preshared_key": psk, "token": None}, after_commit=[publish])


async def _fetch(conn: DirectConnection, statement: str, params: dict[str, Any]) -> tuple[Any, ...]:
    row = await conn.fetchone(statement, params)
    if row is None:  # a function call always answers with one row
        raise RuntimeError("no answer from the database function")
    return row
