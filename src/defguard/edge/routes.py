"""The public API's routes and request bodies, shared by the Edge and Core.

The Edge validates a body against its model before forwarding it (so body
errors get the spec's plain-text 400/415/422 without a Core round trip), and
Core validates it again (an Edge sits on the public internet and is not
trusted with Core's invariants). Models are strict: the clients' generated
types never coerce a string into a number, so neither do we.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict


class Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class TokenBody(Body):
    token: str


class ActivateUser(Body):
    password: str
    phone_number: str | None = None


class CreateDevice(Body):
    name: str
    pubkey: str


class NetworkInfo(Body):
    pubkey: str


class RegisterMfaStart(Body):
    # The enum *name* ("Totp", "Email"); a number is a type error (422).
    method: str


class RegisterMfaFinish(Body):
    code: str
    method: str


class RegisterMobile(Body):
    auth_pub_key: str
    device_pub_key: str


class PasswordResetRequest(Body):
    email: str


class PasswordReset(Body):
    password: str


class ClientMfaStart(Body):
    location_id: int
    pubkey: str
    method: int


class ClientMfaFinish(Body):
    token: str
    code: str | None = None
    auth_pub_key: str | None = None


class OpenIdAuthInfo(Body):
    state: str | None = None
    type: str


class OpenIdCallback(Body):
    code: str
    state: str
    type: str


# Which cookie carries a route's session token (None: the route takes none).
ENROLLMENT_COOKIE = "defguard_proxy"
PASSWORD_RESET_COOKIE = "defguard_proxy_password_reset"  # noqa: S105 - a cookie name


@dataclass(frozen=True)
class Route:
    path: str  # under /api/v1
    operation: str  # the name Core dispatches on
    body: type[Body]
    cookie: str | None = None
    cookie_path: str | None = None
    # The body field whose value an earlier answer may have tied to one Core
    # (`META_AFFINITY`); the request then goes to that Core while it is connected.
    affinity_field: str | None = None


ROUTES: tuple[Route, ...] = (
    Route("/enrollment/start", "enrollment.start", TokenBody, ENROLLMENT_COOKIE),
    Route("/enrollment/activate_user", "enrollment.activate_user", ActivateUser, ENROLLMENT_COOKIE),
    Route("/enrollment/create_device", "enrollment.create_device", CreateDevice, ENROLLMENT_COOKIE),
    Route("/enrollment/network_info", "enrollment.network_info", NetworkInfo, ENROLLMENT_COOKIE),
    Route(
        "/enrollment/register-mfa/code/start",
        "enrollment.register_mfa_start",
        RegisterMfaStart,
        ENROLLMENT_COOKIE,
    ),
    Route(
        "/enrollment/register-mfa/code/finish",
        "enrollment.register_mfa_finish",
        RegisterMfaFinish,
        ENROLLMENT_COOKIE,
    ),
    Route(
        "/enrollment/register_mobile",
        "enrollment.register_mobile",
        RegisterMobile,
        ENROLLMENT_COOKIE,
    ),
    Route("/password-reset/request", "password_reset.request", PasswordResetRequest),
    Route("/password-reset/start", "password_reset.start", TokenBody, PASSWORD_RESET_COOKIE),
    Route("/password-reset/reset", "password_reset.reset", PasswordReset, PASSWORD_RESET_COOKIE),
    Route("/client-mfa/start", "client_mfa.start", ClientMfaStart),
    Route("/client-mfa/finish", "client_mfa.finish", ClientMfaFinish, affinity_field="token"),
    Route("/poll", "poll", TokenBody),
    Route("/openid/auth_info", "openid.auth_info", OpenIdAuthInfo),
    Route("/openid/callback", "openid.callback", OpenIdCallback),
    Route("/openid/callback/mfa", "openid.callback_mfa", OpenIdCallback),
)

BY_OPERATION = {route.operation: route for route in ROUTES}

COOKIE_PATHS = {
    ENROLLMENT_COOKIE: "/api/v1/enrollment",
    PASSWORD_RESET_COOKIE: "/api/v1/password-reset",
}

# Metadata keys between Edge and Core (EdgeRequest.metadata / CoreResponse.metadata).
META_SESSION_TOKEN = "session_token"  # noqa: S105 - Edge → Core: the route's cookie, decrypted
META_CLIENT_VERSION = "client_version"  # Edge → Core: defguard-client-version
META_CLIENT_OS = "client_os_family"  # Edge → Core: from defguard-client-platform
META_SET_SESSION = "set_session"  # Core → Edge: token to put in the route's cookie
META_SESSION_EXPIRES = "session_expires"  # Core → Edge: Unix seconds, the cookie's Expires
META_CLEAR_SESSION = "clear_session"  # Core → Edge: "1" clears the route's cookie
META_CORE_VERSION = "core_version"  # Core → Edge
# Core → Edge: a value (a client-MFA token) this Core keeps facts about; a later
# request carrying it in its route's `affinity_field` is best sent to this Core.
# Only a preference: any Core answers it correctly.
META_AFFINITY = "affinity"
