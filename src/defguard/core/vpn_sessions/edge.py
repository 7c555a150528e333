"""`client-mfa/start` and `client-mfa/finish`: MFA before a VPN connection (spec sequence 4(c)).

`start` checks that the device may use the location with the chosen method,
opens a pending session and hands out a token naming it; `finish` checks the
code and turns the session into the device's active one, whose fresh
preshared key makes the device a peer on the location's gateways. Both may
run on different Cores: the token is signed with the shared secret and the
session lives in PostgreSQL.

Wrong codes are counted per device and per client address with the login
throttle, and the count commits with the 401 so a retry of the same request
on another Core neither counts it twice nor lets it slip.
"""

from __future__ import annotations

import enum

from sqlalchemy import select

from defguard.core.activity.service import record
from defguard.core.auth import throttle
from defguard.core.auth.mfa import (
    claim_totp_step,
    current_totp_step,
    email_code,
    verify_email_code,
    verify_totp,
)
from defguard.core.devices.models import Device, DeviceType
from defguard.core.edge_requests.dispatch import EdgeCall, EdgeError, EdgeResult, edge_handler
from defguard.core.locations.access import bump_committed, device_admitted
from defguard.core.locations.models import Location, LocationMfaMode
from defguard.core.mail.service import queue_mail
from defguard.core.settings.models import Settings
from defguard.core.settings.service import get_settings_row
from defguard.core.users.models import User
from defguard.core.vpn_sessions import service, tokens
from defguard.core.vpn_sessions.models import VpnClientSession
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


def _configured(user: User, method: ClientMfaMethod) -> bool:
    if method is ClientMfaMethod.TOTP:
        return user.totp_enabled and user.totp_secret is not None
    return user.email_mfa_enabled and user.email_mfa_secret is not None


async def _may_use(call: EdgeCall, device: Device, location_id: int) -> bool:
    """The same rule that gives the device an address there: no address, no peer, no MFA.

    A user device also needs its owner admitted right now (active, in an
    allowed group); a network device is bound to the location by its address.
    """
    return await device_admitted(
        call.db,
        device_id=device.id,
        user_id=device.user_id,
        location_id=location_id,
        network_device=device.device_type is DeviceType.NETWORK,
    )


def _throttle_keys(call: EdgeCall, device_id: int) -> list[str]:
    keys = [f"client-mfa:device:{device_id}"]
    if call.client_ip:
        keys.append(f"client-mfa:ip:{call.client_ip}")
    return keys


async def _guard(call: EdgeCall, keys: list[str]) -> None:
    """The device's key is serialised (exact counting); the address's is only checked.

    Locking the address key would make every client behind one NAT address
    pass MFA one at a time; its count may be off by a few concurrent failures.
    """
    device_key = keys[0]
    await call.db.execute(throttle.lock_statement(), {"key": device_key})
    if await throttle.any_blocked(call.db, keys):
        raise EdgeError(429, "too many attempts")


@edge_handler("client_mfa.start")
async def start(call: EdgeCall) -> EdgeResult:
    body: routes.ClientMfaStart = call.body
    db = call.db
    location_id = body.location_id if 0 < body.location_id <= _BIGINT_MAX else 0
    # One round trip for everything the checks below read.
    found = (
        await db.execute(
            select(Settings, Location, Device, User)
            .select_from(Settings)
            .outerjoin(Location, Location.id == location_id)
            .outerjoin(Device, Device.wireguard_pubkey == body.pubkey)
            .outerjoin(User, User.id == Device.user_id)
            .where(Settings.id == 1)
            .order_by(Device.id)
            .limit(1)
        )
    ).one()
    settings, location, device, user = found
    if location is None:
        raise _bad("location not found")
    if location.location_mfa_mode is LocationMfaMode.DISABLED:
        raise _bad("MFA not enabled for location")
    if device is None:
        raise _bad("device not found")
    if user is None:
        raise _bad("user not found")
    method = _method(body.method, location.location_mfa_mode)
    if not _configured(user, method):
        raise _bad(NOT_AVAILABLE)
    if not await _may_use(call, device, location.id):
        raise EdgeError(401, UNAUTHORIZED)
    # The device lock before the throttle's, in the same order as `finish`.
    await service.lock_device_location(db, location.id, device.id)
    await _guard(call, _throttle_keys(call, device.id))
    attempt = await service.open_attempt(
        db, location_id=location.id, device_id=device.id, user_id=user.id, method=int(method)
    )
    if method is ClientMfaMethod.EMAIL and user.email_mfa_secret is not None:
        await queue_mail(
            db,
            to=user.email,
            template="mfa_code",
            context={
                "first_name": user.first_name,
                "code": email_code(
                    user.email_mfa_secret, interval=settings.mfa_code_timeout_seconds
                ),
                "purpose": f"connecting to VPN location {location.name}",
            },
        )
    token = tokens.issue(
        settings.secret_key,
        tokens.MfaClaims(
            session_id=attempt.id, location_id=location.id, pubkey=device.wireguard_pubkey
        ),
    )
    return EdgeResult(body={"token": token, "challenge": None})


def _code_correct(attempt: service.PendingAttempt, code: str, interval: int) -> bool:
    user = attempt.user
    if attempt.session.method == ClientMfaMethod.TOTP:
        return user.totp_enabled and verify_totp(user.totp_secret, code)
    return user.email_mfa_enabled and verify_email_code(
        user.email_mfa_secret, code, interval=interval
    )


@edge_handler("client_mfa.finish")
async def finish(call: EdgeCall) -> EdgeResult:
    body: routes.ClientMfaFinish = call.body
    db = call.db
    settings = await get_settings_row(db)
    try:
        claims = tokens.verify(settings.secret_key, body.token)
    except tokens.InvalidToken:
        raise _bad("invalid token") from None
    # The session row is what is locked, but the device lock comes first, as
    # in `start`, so the two can never wait on each other in opposite order.
    device_id = await db.scalar(
        select(VpnClientSession.device_id).where(VpnClientSession.id == claims.session_id)
    )
    if device_id is None:
        raise _bad("login session not found")
    await service.lock_device_location(db, claims.location_id, device_id)
    attempt = await service.pending_attempt(
        db, session_id=claims.session_id, location_id=claims.location_id, pubkey=claims.pubkey
    )
    if attempt is None:
        raise _bad("login session not found")
    if attempt.location.location_mfa_mode is LocationMfaMode.DISABLED:
        # Turned off since `start`: the device is a plain peer now.
        raise _bad("MFA not enabled for location")
    method = attempt.session.method
    if method not in (ClientMfaMethod.TOTP, ClientMfaMethod.EMAIL):
        raise _bad(NOT_AVAILABLE)
    if not body.code:
        raise _bad(
            "TOTP code not provided"
            if method == ClientMfaMethod.TOTP
            else "email MFA code not provided"
        )
    keys = _throttle_keys(call, attempt.device.id)
    await _guard(call, keys)

    location, user = attempt.location, attempt.user
    code = body.code.strip()
    correct = _code_correct(attempt, code, settings.mfa_code_timeout_seconds)
    if correct and method == ClientMfaMethod.TOTP:
        # A code is valid for its whole step: one seen over a shoulder must not
        # open a second session.
        correct = await claim_totp_step(db, user.id, current_totp_step())
    if correct and not await _may_use(call, attempt.device, location.id):
        raise EdgeError(401, UNAUTHORIZED)
    if not correct:
        for key in keys:
            await throttle.record_failure(db, key)
        record(
            call.db,
            call.ctx,
            user,
            "vpn_client_mfa_failed",
            f"Failed MFA for device {attempt.device.name} in VPN location {location.name}",
            module="vpn",
            location=location.name,
        )
        await db.flush()
        raise EdgeError(401, UNAUTHORIZED, commit=True)

    psk = await service.authorize(db, attempt.session)
    record(
        db,
        call.ctx,
        user,
        "vpn_client_mfa_success",
        f"Passed MFA for device {attempt.device.name} in VPN location {location.name}",
        module="vpn",
        location=location.name,
    )
    await db.flush()
    location_id = location.id

    async def publish(database: Database) -> None:
        await bump_committed(database, [location_id])

    return EdgeResult(body={"preshared_key": psk, "token": None}, after_commit=[publish])
