"""`client-mfa/start` and `client-mfa/finish`: MFA before a VPN connection (spec sequence 4(c)).

`start` checks that the device may use the location with the chosen method,
opens a pending session and hands out a token naming it; `finish` checks the
code and turns the session into the device's active one, whose fresh
preshared key makes the device a peer on the location's gateways. Both may
run on different Cores: the token is signed with the shared secret and the
session lives in PostgreSQL.

These are the busiest writes a deployment has, so they go over
`Database.direct` to SQL functions (migration 0007) that take the locks,
check, write and store the answer in the single transaction of one
statement. `start` is one call of `client_mfa_open`, which applies the
checks in the order of their answers; Python signs the token from what it
returns (a retried request gets the same session and so the same token).
`finish` needs the user's secret to check the code in Python: one statement
reads it with everything else, then `client_mfa_authorize` re-checks what may
have changed since and writes. A Core keeps what `start` returned for a TOTP
attempt, so when the same Core gets the attempt's first `finish` (always,
with one Core) the read is skipped and `finish` is one round trip too; since
the function re-checks everything the read would have established, the two
paths answer alike.

A pending attempt is the one write whose loss in a database crash costs only
a new `start`, so its transaction commits without waiting for the WAL flush
(migration 0009); an authorisation waits, as everything else does.

Wrong codes are counted per device and per client address with the login
throttle, and the count commits with the stored 401, so a retry of the same
request on another Core neither counts it twice nor lets it slip.
"""

from __future__ import annotations

import enum
import time
import weakref
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

from defguard.bounded import OneUseMap
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
MFA_DISABLED = "MFA not enabled for location"
_UNAUTHORIZED_BODY = error_body(UNAUTHORIZED)


def _bad(message: str) -> EdgeError:
    return EdgeError(400, message)


def _method_facts(value: int) -> dict[str, Any]:
    """What the request alone says of its method, for `client_mfa_open` to check in
    order with what only the database knows."""
    try:
        method = ClientMfaMethod(value)
    except ValueError:
        return {"method": -1, "method_valid": False, "method_modes": "", "method_offered": False}
    modes = ",".join(mode.value for mode, methods in LOCATION_METHODS.items() if method in methods)
    return {
        "method": int(method),
        "method_valid": True,
        "method_modes": modes,
        "method_offered": method in OFFERED,
    }


# Failures count per device and per client address (a format for Python's `%`
# and SQL's `format`).
DEVICE_THROTTLE_FORMAT = "client-mfa:device:%s"


def _locks(call: DirectCall) -> dict[str, Any]:
    """The lock namespaces and keys both functions take (see the migration)."""
    return {
        "request_lock": REQUEST_LOCK_NAMESPACE,
        "request_id": call.request_id,
        "session_lock": service.LOCK_NAMESPACE,
        "throttle_lock": throttle.LOCK_NAMESPACE,
        "address_key": f"client-mfa:ip:{call.client_ip}" if call.client_ip else None,
    }


def _replayed(status: int, body: bytes) -> EdgeResult:
    """The answer a first attempt of this request stored (the Edge retried it)."""
    return EdgeResult(body=bytes(body), status=status)


# -- what a Core keeps between start and finish ----------------------------------------


@dataclass(frozen=True, slots=True)
class Attempt:
    """A pending attempt as `finish` checks it: the session, the device, and the
    owner's secret for the attempt's method."""

    session_id: int
    location_id: int
    pubkey: str
    method: int
    device_id: int
    user_id: int
    device_name: str
    network_device: bool
    location_name: str
    enabled: bool
    secret: bytes | None = field(repr=False)  # never in a log line or traceback
    code_timeout: int


# Per Core (per `Database`): the TOTP attempts it opened, by token, with their expiry.
# An attempt not found here is read from the database instead.
_KEPT_ATTEMPTS = 20_000
_opened: weakref.WeakKeyDictionary[Database, OneUseMap[str, tuple[float, Attempt]]] = (
    weakref.WeakKeyDictionary()
)


def _kept(database: Database) -> OneUseMap[str, tuple[float, Attempt]]:
    kept = _opened.get(database)
    if kept is None:
        kept = _opened[database] = OneUseMap(_KEPT_ATTEMPTS)
    return kept


def _recall(database: Database, token: str) -> Attempt | None:
    """The attempt this Core issued exactly this token for, once: a second `finish`
    of the same token (after a wrong code) reads afresh."""
    entry = _kept(database).take(token)
    if entry is None or entry[0] <= time.time():
        return None
    return entry[1]


# -- start ---------------------------------------------------------------------------

_OPEN = """
SELECT outcome, session_id, issued_at, secret_key, location_name, email, first_name,
       email_secret, code_timeout, device_id, user_id, device_name, network_device, totp_secret
FROM client_mfa_open(
    p_request_lock => %(request_lock)s::integer, p_request_id => %(request_id)s::text,
    p_session_lock => %(session_lock)s::integer,
    p_session_key_format => %(session_key_format)s::text,
    p_throttle_lock => %(throttle_lock)s::integer,
    p_device_key_format => %(device_key_format)s::text,
    p_address_key => %(address_key)s::text,
    p_location_id => %(location_id)s::bigint, p_pubkey => %(pubkey)s::text,
    p_method => %(method)s::smallint, p_method_valid => %(method_valid)s::boolean,
    p_method_modes => %(method_modes)s::text, p_method_offered => %(method_offered)s::boolean,
    p_now => %(now)s::timestamp, p_max_failures => %(max_failures)s::integer,
    p_window => %(window)s::interval, p_block => %(block)s::interval)
"""

_START_REFUSALS = {
    "no_location": (400, "location not found"),
    "mfa_disabled": (400, MFA_DISABLED),
    "no_device": (400, "device not found"),
    "no_user": (400, "user not found"),
    "invalid_method": (400, "invalid MFA method selected"),
    "unsupported": (400, "selected MFA method not supported by location"),
    "not_available": (400, NOT_AVAILABLE),
    "unauthorized": (401, UNAUTHORIZED),
    "blocked": (429, TOO_MANY),
}


def open_params(call: DirectCall) -> dict[str, Any]:
    """`_OPEN`'s parameters for a `start` request."""
    body: routes.ClientMfaStart = call.body
    return {
        **_locks(call),
        "session_key_format": service.DEVICE_LOCK_FORMAT,
        "device_key_format": DEVICE_THROTTLE_FORMAT,
        "location_id": body.location_id if 0 < body.location_id <= _BIGINT_MAX else 0,
        "pubkey": body.pubkey,
        **_method_facts(body.method),
        **throttle.policy(utcnow()),
    }


@direct_handler("client_mfa.start")
async def start(call: DirectCall) -> EdgeResult:
    """One round trip: every check and the write are `client_mfa_open`'s."""
    body: routes.ClientMfaStart = call.body
    params = open_params(call)
    if params["method"] == ClientMfaMethod.EMAIL:
        # The code's e-mail is queued in the same transaction as the attempt.
        async with call.database.transaction() as db:
            conn = await db.connection()
            row = (await conn.exec_driver_sql(_OPEN, params)).one()
            if row.outcome == "ok":
                await queue_mail(
                    db,
                    to=row.email,
                    template="mfa_code",
                    context={
                        "first_name": row.first_name,
                        "code": email_code(row.email_secret, interval=row.code_timeout),
                        "purpose": f"connecting to VPN location {row.location_name}",
                    },
                )
    else:
        async with call.database.direct.connection() as direct:
            row = await _fetch(direct, _OPEN, params)
    (
        outcome,
        session_id,
        issued_at,
        secret_key,
        location_name,
        _email,
        _first_name,
        _email_secret,
        code_timeout,
        device_id,
        user_id,
        device_name,
        network_device,
        totp_secret,
    ) = row
    if outcome not in ("ok", "replayed"):
        status, message = _START_REFUSALS[outcome]
        raise EdgeError(status, message)
    # A replay signs the same claims at the same time: the same token again.
    issued_at = issued_at.replace(tzinfo=UTC)
    token = tokens.issue(
        secret_key,
        tokens.MfaClaims(
            session_id=session_id, location_id=params["location_id"], pubkey=body.pubkey
        ),
        now=issued_at,
    )
    if outcome == "ok" and params["method"] == ClientMfaMethod.TOTP:
        _kept(call.database).put(
            token,
            (
                issued_at.timestamp() + tokens.TOKEN_LIFETIME.total_seconds(),
                Attempt(
                    session_id=session_id,
                    location_id=params["location_id"],
                    pubkey=body.pubkey,
                    method=ClientMfaMethod.TOTP,
                    device_id=device_id,
                    user_id=user_id,
                    device_name=device_name,
                    network_device=network_device,
                    location_name=location_name,
                    enabled=True,
                    secret=totp_secret,
                    code_timeout=code_timeout,
                ),
            ),
        )
        # The Edge sends this token's `finish` here while this Core is connected.
        return EdgeResult(
            body={"token": token, "challenge": None}, metadata={routes.META_AFFINITY: token}
        )
    return EdgeResult(body={"token": token, "challenge": None})


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
    p_request_lock => %(request_lock)s::integer, p_request_id => %(request_id)s::text,
    p_session_lock => %(session_lock)s::integer, p_session_key => %(session_key)s::text,
    p_throttle_lock => %(throttle_lock)s::integer, p_device_key => %(device_key)s::text,
    p_address_key => %(address_key)s::text,
    p_session_id => %(session_id)s::bigint, p_location_id => %(location_id)s::bigint,
    p_device_id => %(device_id)s::bigint, p_user_id => %(user_id)s::bigint,
    p_pubkey => %(pubkey)s::text, p_network_device => %(network_device)s::boolean, p_method => %(method)s::smallint,
    p_correct => %(correct)s::boolean, p_secret => %(secret)s::bytea,
    p_totp_step => %(totp_step)s::bigint, p_psk => %(psk)s::text,
    p_ok_body => %(ok_body)s::bytea, p_fail_body => %(fail_body)s::bytea,
    p_now => %(now)s::timestamp, p_max_failures => %(max_failures)s::integer,
    p_window => %(window)s::interval,
    p_block => %(block)s::interval, p_keep => %(keep)s::interval,
    p_event_ip => %(event_ip)s::inet, p_event_agent => %(event_agent)s::text,
    p_location_name => %(location_name)s::text, p_ok_text => %(ok_text)s::text,
    p_fail_text => %(fail_text)s::text, p_replaced => %(replaced)s::text)
"""


@direct_handler("client_mfa.finish")
async def finish(call: DirectCall) -> EdgeResult:
    body: routes.ClientMfaFinish = call.body
    kept = _recall(call.database, body.token)
    if kept is not None and body.code:
        async with call.database.direct.connection() as conn:
            return await _authorize(call, conn, kept, body.code)
    try:
        claims = tokens.peek(body.token)
    except tokens.InvalidToken:
        raise _bad("invalid token") from None
    async with call.database.direct.connection() as conn:
        attempt = await _read(call, conn, claims)
        if isinstance(attempt, EdgeResult):
            return attempt
        return await _authorize(call, conn, attempt, body.code)


async def _read(
    call: DirectCall, conn: DirectConnection, claims: tokens.MfaClaims
) -> Attempt | EdgeResult:
    """The attempt the token names, checked; or the stored answer of a retried request."""
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
        raise _bad(MFA_DISABLED)
    if method not in (ClientMfaMethod.TOTP, ClientMfaMethod.EMAIL):
        raise _bad(NOT_AVAILABLE)
    totp = method == ClientMfaMethod.TOTP
    return Attempt(
        session_id=session_id,
        location_id=claims.location_id,
        pubkey=claims.pubkey,
        method=method,
        device_id=device_id,
        user_id=user_id,
        device_name=device_name,
        network_device=DeviceType(device_type) is DeviceType.NETWORK,
        location_name=location_name,
        enabled=bool(totp_enabled if totp else email_mfa_enabled),
        secret=totp_secret if totp else email_mfa_secret,
        code_timeout=code_timeout,
    )


async def _authorize(
    call: DirectCall, conn: DirectConnection, attempt: Attempt, code: str | None
) -> EdgeResult:
    """Check the code against the attempt's secret; `client_mfa_authorize` re-checks
    the rest under its locks and writes."""
    totp = attempt.method == ClientMfaMethod.TOTP
    if not code:
        raise _bad("TOTP code not provided" if totp else "email MFA code not provided")
    code = code.strip()
    totp_step: int | None = None
    if totp:
        correct = attempt.enabled and verify_totp(attempt.secret, code)
        totp_step = current_totp_step()
    else:
        correct = attempt.enabled and verify_email_code(
            attempt.secret, code, interval=attempt.code_timeout
        )
    psk = service.new_preshared_key()
    name, location = attempt.device_name, attempt.location_name
    outcome, status, stored = await _fetch(
        conn,
        _AUTHORIZE,
        {
            **_locks(call),
            "session_key": service.DEVICE_LOCK_FORMAT % (attempt.location_id, attempt.device_id),
            "device_key": DEVICE_THROTTLE_FORMAT % attempt.device_id,
            **throttle.policy(utcnow()),
            "session_id": attempt.session_id,
            "location_id": attempt.location_id,
            "device_id": attempt.device_id,
            "user_id": attempt.user_id,
            "pubkey": attempt.pubkey,
            "network_device": attempt.network_device,
            "method": attempt.method,
            "correct": correct,
            "secret": attempt.secret,
            "totp_step": totp_step,
            "psk": psk,
            "ok_body": encode({"preshared_key": psk, "token": None}),
            "fail_body": _UNAUTHORIZED_BODY,
            "keep": throttle.KEEP,
            "event_ip": call.client_ip or None,
            "event_agent": describe_agent(call.user_agent),
            "location_name": location,
            "ok_text": f"Passed MFA for device {name} in VPN location {location}",
            "fail_text": f"Failed MFA for device {name} in VPN location {location}",
            "replaced": service.ENDED_REPLACED,
        },
    )
    if outcome == "replayed":
        return _replayed(status, stored)
    if outcome == "blocked":
        raise EdgeError(429, TOO_MANY)
    if outcome == "gone":
        raise _bad(SESSION_NOT_FOUND)
    if outcome == "mfa_disabled":
        raise _bad(MFA_DISABLED)
    if outcome in ("denied", "wrong"):
        raise EdgeError(401, UNAUTHORIZED)
    location_id = attempt.location_id

    async def publish(database: Database) -> None:
        await publish_committed(database, [location_id])

    return EdgeResult(body={"preshared_key": psk, "token": None}, after_commit=[publish])


async def _fetch(conn: DirectConnection, statement: str, params: dict[str, Any]) -> tuple[Any, ...]:
    row = await conn.fetchone(statement, params)
    if row is None:  # a function call always answers with one row
        raise RuntimeError("no answer from the database function")
    return row
