"""The public enrollment and password-reset routes, answered on Core.

Each handler runs inside the Edge request's transaction (see
`edge_requests.dispatch`): it raises `EdgeError` with the exact public message
for a refusal, which rolls back everything it wrote, and returns an
`EdgeResult` whose effects commit together with the stored answer.

Choices the contract leaves open:
- Tokens are locked (`SELECT .. FOR UPDATE`) for the request, so two Cores
  cannot redeem the same token at once.
- An enrollment token is spent by `activate_user`; a desktop-activation token
  of an already enrolled user by `create_device` or `network_info` (the last
  step of adding an instance), otherwise also by `activate_user`.
- `register_mobile` (biometric / mobile-approve MFA) is not offered: this
  implementation has no mobile-app key store, so the route refuses with 400
  rather than accept a key it would never use.
- `mfa_required` is a hint for the client's steps; `activate_user` does not
  re-check it, as upstream Defguard does not.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import any_, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from defguard.core.activity.service import record
from defguard.core.auth.mfa import (
    email_code,
    generate_recovery_codes,
    hash_recovery_code,
    new_totp_secret,
    reconcile_mfa,
    totp_secret_base32,
    verify_email_code,
    verify_totp,
)
from defguard.core.auth.passwords import hash_password
from defguard.core.auth.service import delete_sessions, user_with_groups
from defguard.core.devices.models import Device, DeviceType
from defguard.core.devices.service import NewUserDevice, add_user_devices, device_locations
from defguard.core.edge_requests.dispatch import EdgeCall, EdgeError, EdgeResult, edge_handler
from defguard.core.enrollment import configs
from defguard.core.enrollment.models import Token, TokenKind
from defguard.core.enrollment.schemas import (
    AdminInfo,
    DeviceConfigResponse,
    EnrollmentStartResponse,
    InitialUserInfo,
    MfaFinishResponse,
    MfaStartResponse,
    PasswordResetStartResponse,
)
from defguard.core.enrollment.service import (
    ENROLLMENT_KINDS,
    RESET_KINDS,
    TokenRejected,
    check_session,
    find_token,
    open_session,
    replace_polling_token,
)
from defguard.core.errors import ApiError
from defguard.core.locations.access import allowed_locations_of_users, id_array
from defguard.core.locations.models import Location, LocationMfaMode
from defguard.core.mail.service import queue_mail
from defguard.core.settings.models import Settings
from defguard.core.settings.service import get_settings_row
from defguard.core.users.models import MfaMethod, User
from defguard.core.users.service import request_password_reset
from defguard.core.users.validation import (
    FieldError,
    check_password_strength,
    check_phone,
    normalize_phone,
)
from defguard.db.base import utcnow
from defguard.edge import routes
from defguard.wireguard.keys import is_valid_key

MODULE = "enrollment"
INTERNAL_ERROR = "Internal server error"
# The `method` names of the two register-mfa routes (MfaMethod enum names on the wire).
MFA_METHODS = {"Totp": MfaMethod.ONE_TIME_PASSWORD, "Email": MfaMethod.EMAIL}
MOBILE_NOT_OFFERED = "biometric and mobile-approve MFA are not offered by this server"


# --- shared steps ------------------------------------------------------------------


def _rejected(exc: TokenRejected) -> EdgeError:
    return EdgeError(exc.status, exc.message)


def _from_api_error(exc: ApiError) -> EdgeError:
    """A service refusal in the Edge's vocabulary (which has no 409)."""
    if exc.status in (400, 401, 403, 404):
        return EdgeError(exc.status, exc.msg)
    if exc.status == 409:
        return EdgeError(400, exc.msg)
    return EdgeError(500, INTERNAL_ERROR)


async def _session_token(call: EdgeCall, kinds: frozenset[TokenKind]) -> Token:
    """The token of the route's cookie, with its session still open."""
    token_id = call.session_token
    if token_id is None:
        raise EdgeError(401, "Missing authorization header")
    try:
        return check_session(await find_token(call.db, token_id), kinds, utcnow())
    except TokenRejected as exc:
        raise _rejected(exc) from None


async def _user(db: AsyncSession, user_id: int) -> User:
    user = await user_with_groups(db, user_id)
    if user is None:  # the token row would have gone with the user (cascade)
        raise EdgeError(401, "invalid token")
    return user


def _session_metadata(token: Token) -> dict[str, str]:
    assert token.session_deadline is not None
    return {
        routes.META_SET_SESSION: token.id,
        routes.META_SESSION_EXPIRES: str(configs.unix_seconds(token.session_deadline)),
    }


def _spend_desktop_token(token: Token, user: User) -> None:
    if token.kind is TokenKind.DESKTOP and user.enrolled:
        token.used_at = utcnow()


async def _device_response(
    call: EdgeCall, row: Settings, user: User, device: Device, token: str | None
) -> tuple[DeviceConfigResponse, list[str]]:
    """The client's view of the device, and the names of all its locations (for e-mails)."""
    locations = await device_locations(call.db, device.id)
    service_ok = configs.supports_service_locations(call.client_version, call.client_os_family)
    response = configs.device_config_response(
        device,
        configs.device_configs(locations, service_locations=service_ok),
        configs.instance_info(row, call.settings, user.username),
        token,
    )
    return response, [location.name for location, _ in locations]


async def _mfa_required(db: AsyncSession, user: User) -> bool:
    """Some location the user may use enforces internal MFA, so the MFA step is mandatory."""
    allowed = (await allowed_locations_of_users(db, [user.id])).get(user.id, set())
    if not allowed:
        return False
    query = select(
        exists().where(
            Location.id == any_(id_array(allowed)),
            Location.location_mfa_mode == LocationMfaMode.INTERNAL,
        )
    )
    return bool((await db.execute(query)).scalar_one())


async def _device_names(db: AsyncSession, user_id: int) -> list[str]:
    query = (
        select(Device.name)
        .where(Device.user_id == user_id, Device.device_type == DeviceType.USER)
        .order_by(Device.id)
    )
    return list((await db.execute(query)).scalars())


async def _open_token(
    call: EdgeCall, kinds: Collection[TokenKind]
) -> tuple[Token, User, datetime, bool]:
    """The start step of enrollment and password reset: redeem the token, open its session.

    Returns the token, its user, the session deadline and whether the session
    was already open (starting again keeps the deadline).
    """
    token = await find_token(call.db, call.body.token)
    if token is None:
        raise EdgeError(401, "invalid token")
    if token.kind not in kinds:
        raise EdgeError(403, "invalid token")
    already_open = token.session_deadline is not None
    try:
        deadline = open_session(token, utcnow())
    except TokenRejected as exc:
        raise _rejected(exc) from None
    return token, await _user(call.db, token.user_id), deadline, already_open


# --- enrollment ----------------------------------------------------------------------


@edge_handler("enrollment.start")
async def enrollment_start(call: EdgeCall) -> EdgeResult:
    db = call.db
    token, user, deadline, already_open = await _open_token(call, ENROLLMENT_KINDS)
    if not user.is_active:
        raise EdgeError(403, "user is disabled")
    row = await get_settings_row(db)
    admin = await db.get(User, token.admin_id) if token.admin_id is not None else None
    admin_info: AdminInfo | None = None
    if admin is not None:
        admin_info = {"name": admin.full_name, "phone_number": admin.phone, "email": admin.email}
    user_info: InitialUserInfo = {
        "first_name": user.first_name,
        "last_name": user.last_name,
        "login": user.username,
        "email": user.email,
        "phone_number": user.phone,
        "is_active": user.is_active,
        "device_names": await _device_names(db, user.id),
        "enrolled": user.enrolled,
        "is_admin": user.is_admin,
    }
    body: EnrollmentStartResponse = {
        "admin": admin_info,
        "user": user_info,
        "deadline_timestamp": configs.unix_seconds(deadline),
        "final_page_content": row.enrollment_welcome_message,
        "instance": configs.instance_info(row, call.settings, user.username),
        "settings": {
            "vpn_setup_optional": row.enrollment_vpn_step_optional,
            "only_client_activation": row.enrollment_only_client_activation,
            "admin_device_management": row.enrollment_admin_device_management,
            "smtp_configured": row.smtp_configured,
            "mfa_required": await _mfa_required(db, user),
        },
    }
    if not already_open:
        record(db, call.ctx, user, "enrollment_started", "Started enrollment", module=MODULE)
    return EdgeResult(body=body, metadata=_session_metadata(token))


@edge_handler("enrollment.activate_user")
async def activate_user(call: EdgeCall) -> EdgeResult:
    db = call.db
    token = await _session_token(call, ENROLLMENT_KINDS)
    user = await _user(db, token.user_id)
    if not user.is_active:
        raise EdgeError(400, "user is disabled")
    if user.enrolled:
        raise EdgeError(400, "user already activated")
    try:
        check_password_strength(call.body.password)
    except FieldError:
        raise EdgeError(400, "password not strong enough") from None
    phone = normalize_phone(call.body.phone_number)
    if phone is not None:
        try:
            check_phone(phone)
        except FieldError:
            raise EdgeError(400, "invalid phone number") from None
        user.phone = phone
    user.password_hash = await hash_password(call.body.password)
    user.ldap_pass_randomized = False
    user.enrollment_pending = False
    token.used_at = utcnow()
    row = await get_settings_row(db)
    message = (
        row.enrollment_welcome_message
        if row.enrollment_use_welcome_message_as_email
        else row.enrollment_welcome_email
    )
    await queue_mail(
        db,
        to=token.email or user.email,
        template="welcome",
        context={
            "first_name": user.first_name,
            "message": message,
            "subject": row.enrollment_welcome_email_subject,
        },
    )
    record(db, call.ctx, user, "enrollment_completed", "Completed enrollment", module=MODULE)
    return EdgeResult(metadata={routes.META_CLEAR_SESSION: "1"})


async def _pubkey_in_use(db: AsyncSession, pubkey: str) -> bool:
    device = select(exists().where(Device.wireguard_pubkey == pubkey))
    location = select(exists().where(Location.pubkey == pubkey))
    return bool(
        (await db.execute(device)).scalar_one() or (await db.execute(location)).scalar_one()
    )


async def _add_device(call: EdgeCall, user: User, name: str, pubkey: str) -> Device:
    """Through the devices service, which addresses it in every location the user may use.

    With no location at all the service refuses (an admin adding a device
    could not use it); a user enrolling before the first location exists
    still gets the device, which locations created later pick up.
    """
    db = call.db
    if (await db.execute(select(exists().where(Location.id.is_not(None))))).scalar_one():
        spec = NewUserDevice(user_id=user.id, name=name, wireguard_pubkey=pubkey)
        try:
            (device,) = await add_user_devices(db, [spec], actor=user, ctx=call.ctx)
        except ApiError as exc:
            raise _from_api_error(exc) from None
        return device
    if name in await _device_names(db, user.id):
        raise EdgeError(400, f"Device with name {name} already exists")
    device = Device(name=name, wireguard_pubkey=pubkey, user_id=user.id, created=utcnow())
    db.add(device)
    await db.flush()
    record(db, call.ctx, user, "device_added", f"Added device {name}")
    return device


@edge_handler("enrollment.create_device")
async def create_device(call: EdgeCall) -> EdgeResult:
    db = call.db
    token = await _session_token(call, ENROLLMENT_KINDS)
    user = await _user(db, token.user_id)
    if not user.is_active:
        raise EdgeError(400, "can't add device to disabled user")
    row = await get_settings_row(db)
    if row.enrollment_admin_device_management and not user.is_admin:
        raise EdgeError(403, "only admin users can manage devices")
    name = call.body.name.strip()
    if not name:
        raise EdgeError(400, "device name must not be empty")
    pubkey = call.body.pubkey
    if not is_valid_key(pubkey):
        raise EdgeError(400, "invalid pubkey")
    if await _pubkey_in_use(db, pubkey):
        raise EdgeError(400, "invalid key")
    device = await _add_device(call, user, name, pubkey)
    polling_token = await replace_polling_token(db, device.id)
    _spend_desktop_token(token, user)
    response, location_names = await _device_response(call, row, user, device, polling_token)
    await queue_mail(
        db,
        to=user.email,
        template="new_device",
        context={
            "first_name": user.first_name,
            "device_name": device.name,
            "pubkey": device.wireguard_pubkey,
            "locations": location_names,
            "ip": call.client_ip,
            "user_agent": call.user_agent or "",
        },
    )
    record(
        db,
        call.ctx,
        user,
        "enrollment_device_added",
        f"Added device {device.name} during enrollment",
        module=MODULE,
    )
    return EdgeResult(body=response)


@edge_handler("enrollment.network_info")
async def network_info(call: EdgeCall) -> EdgeResult:
    db = call.db
    token = await _session_token(call, ENROLLMENT_KINDS)
    pubkey = call.body.pubkey
    if not is_valid_key(pubkey):
        raise EdgeError(400, "invalid pubkey")
    device = (
        await db.execute(
            select(Device).where(
                Device.wireguard_pubkey == pubkey, Device.device_type == DeviceType.USER
            )
        )
    ).scalar_one_or_none()
    if device is None:
        raise EdgeError(404, "device not found")
    if device.user_id != token.user_id:
        raise EdgeError(401, "enrollment token is not valid for specified device")
    user = await _user(db, token.user_id)
    if not user.is_active:
        raise EdgeError(403, "user is disabled")
    polling_token = await replace_polling_token(db, device.id)
    _spend_desktop_token(token, user)
    row = await get_settings_row(db)
    response, _ = await _device_response(call, row, user, device, polling_token)
    return EdgeResult(body=response)


async def _mfa_user(call: EdgeCall, method_name: str) -> tuple[User, MfaMethod]:
    token = await _session_token(call, ENROLLMENT_KINDS)
    method = MFA_METHODS.get(method_name)
    if method is None:
        raise EdgeError(400, "Method not supported.")
    user = await _user(call.db, token.user_id)
    if not user.is_active:
        raise EdgeError(403, "user is disabled")
    if user.enrolled:
        raise EdgeError(403, "User is already enrolled")
    return user, method


@edge_handler("enrollment.register_mfa_start")
async def register_mfa_start(call: EdgeCall) -> EdgeResult:
    db = call.db
    user, method = await _mfa_user(call, call.body.method)
    if method is MfaMethod.ONE_TIME_PASSWORD:
        if user.totp_enabled:
            raise EdgeError(400, "Method already enabled")
        secret = new_totp_secret()
        user.totp_secret = secret
        body: MfaStartResponse = {"totp_secret": totp_secret_base32(secret)}
        return EdgeResult(body=body)
    if user.email_mfa_enabled:
        raise EdgeError(400, "Method already enabled")
    row = await get_settings_row(db)
    if not row.smtp_configured:
        raise EdgeError(500, INTERNAL_ERROR)
    secret = new_totp_secret()
    user.email_mfa_secret = secret
    code = email_code(secret, interval=row.mfa_code_timeout_seconds)
    await queue_mail(
        db,
        to=user.email,
        template="mfa_code",
        context={"first_name": user.first_name, "code": code, "purpose": "setting up e-mail MFA"},
    )
    body = {"totp_secret": None}
    return EdgeResult(body=body)


@edge_handler("enrollment.register_mfa_finish")
async def register_mfa_finish(call: EdgeCall) -> EdgeResult:
    db = call.db
    user, method = await _mfa_user(call, call.body.method)
    if user.mfa_enabled:
        raise EdgeError(400, "Mfa already enabled on the account")
    code = call.body.code.strip()
    if method is MfaMethod.ONE_TIME_PASSWORD:
        if not verify_totp(user.totp_secret, code):
            raise EdgeError(400, "Code invalid")
        user.totp_enabled = True
        event, description = "mfa_totp_enabled", "Enabled TOTP during enrollment"
    else:
        row = await get_settings_row(db)
        if not verify_email_code(
            user.email_mfa_secret, code, interval=row.mfa_code_timeout_seconds
        ):
            raise EdgeError(400, "Email code invalid")
        user.email_mfa_enabled = True
        event, description = "mfa_email_enabled", "Enabled e-mail MFA during enrollment"
    codes = generate_recovery_codes()
    user.recovery_codes = [hash_recovery_code(c) for c in codes]
    user.mfa_method = method
    reconcile_mfa(user)
    record(db, call.ctx, user, event, description, module=MODULE)
    body: MfaFinishResponse = {"recovery_codes": codes}
    return EdgeResult(body=body)


@edge_handler("enrollment.register_mobile")
async def register_mobile(call: EdgeCall) -> EdgeResult:
    if call.session_token is None:
        raise EdgeError(400, "No token present")
    await _session_token(call, ENROLLMENT_KINDS)
    raise EdgeError(400, MOBILE_NOT_OFFERED)


# --- password reset ---------------------------------------------------------------------


async def _user_by_email(db: AsyncSession, email: str) -> User | None:
    query = (
        select(User)
        .where(func.lower(User.email) == func.lower(email.strip()))
        .order_by(User.id)
        .limit(1)
    )
    return (await db.execute(query)).scalars().first()


@edge_handler("password_reset.request")
async def password_reset_request(call: EdgeCall) -> EdgeResult:
    """Empty 200 whatever the address, so the form does not reveal who has an account."""
    db = call.db
    row = await get_settings_row(db)
    user = await _user_by_email(db, call.body.email)
    if user is not None and user.is_active and user.enrolled:
        edge_url = configs.public_edge_url(row, call.settings)
        await request_password_reset(db, user, actor=None, ctx=call.ctx, edge_url=edge_url)
    return EdgeResult()


@edge_handler("password_reset.start")
async def password_reset_start(call: EdgeCall) -> EdgeResult:
    db = call.db
    token, user, deadline, already_open = await _open_token(call, RESET_KINDS)
    if not user.is_active or not user.enrolled:
        raise EdgeError(403, "user disabled or not yet enrolled")
    if not already_open:
        record(
            db, call.ctx, user, "password_reset_started", "Started password reset", module=MODULE
        )
    body: PasswordResetStartResponse = {"deadline_timestamp": configs.unix_seconds(deadline)}
    return EdgeResult(body=body, metadata=_session_metadata(token))


@edge_handler("password_reset.reset")
async def password_reset(call: EdgeCall) -> EdgeResult:
    """Sets the password and logs the user out everywhere: whoever knew the old one is out."""
    db = call.db
    token = await _session_token(call, RESET_KINDS)
    user = await _user(db, token.user_id)
    if not user.is_active:
        raise EdgeError(403, "user disabled")
    try:
        check_password_strength(call.body.password)
    except FieldError:
        raise EdgeError(400, "password not strong enough") from None
    user.password_hash = await hash_password(call.body.password)
    user.ldap_pass_randomized = False
    token.used_at = utcnow()
    await delete_sessions(db, user.id)
    await queue_mail(
        db, to=user.email, template="password_reset_done", context={"first_name": user.first_name}
    )
    record(db, call.ctx, user, "password_reset_completed", "Reset password", module=MODULE)
    return EdgeResult(metadata={routes.META_CLEAR_SESSION: "1"})
