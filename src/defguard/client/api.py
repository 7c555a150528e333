"""The public Edge API as the desktop client uses it: enrollment, client MFA and polling.

Everything the Edge returns is validated into the models below on arrival, so
the rest of the client works with typed values and a malformed answer fails
here with a message naming the route, not later with a `KeyError`.
"""

from __future__ import annotations

import base64
import platform
import sys
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from defguard import __version__

TIMEOUT = 15.0
POLL_TIMEOUT = 5.0

# `LocationMfaMode`
MFA_MODE_UNSPECIFIED = 0
MFA_MODE_DISABLED = 1
MFA_MODE_INTERNAL = 2
MFA_MODE_EXTERNAL = 3

# `MfaMethod` numbers for client MFA, and the names `register-mfa` takes instead.
MFA_TOTP = 0
MFA_EMAIL = 1
MFA_OIDC = 2
REGISTER_MFA_NAMES = {MFA_TOTP: "Totp", MFA_EMAIL: "Email"}

# `ClientTrafficPolicy`
TRAFFIC_NONE = 0
TRAFFIC_DISABLE_ALL = 1
TRAFFIC_FORCE_ALL = 2


class EdgeError(Exception):
    """A failed Edge call: `status` is the HTTP status (0 when the Edge was not reached)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def __str__(self) -> str:
        if self.status == 0:
            return self.message
        return f"{self.message or 'no message'} (HTTP {self.status})"


class _Model(BaseModel):
    # Newer Edges add fields; clients ignore what they do not know.
    model_config = ConfigDict(extra="ignore")


class Device(_Model):
    id: int
    name: str
    pubkey: str
    user_id: int
    created_at: int


class DeviceConfig(_Model):
    network_id: int
    network_name: str
    config: str = ""
    endpoint: str
    assigned_ip: str
    pubkey: str
    allowed_ips: str = ""
    dns: str | None = None
    mfa_enabled: bool = False
    keepalive_interval: int = 25
    location_mfa_mode: int | None = None
    service_location_mode: int | None = None

    @property
    def mfa_mode(self) -> int:
        """Older Edges send only the deprecated boolean, which meant internal MFA."""
        if self.location_mfa_mode:
            return self.location_mfa_mode
        return MFA_MODE_INTERNAL if self.mfa_enabled else MFA_MODE_DISABLED

    @property
    def addresses(self) -> list[str]:
        return [a for a in self.assigned_ip.split(",") if a]

    @property
    def allowed_networks(self) -> list[str]:
        return [n.strip() for n in self.allowed_ips.split(",") if n.strip()]


class InstanceInfo(_Model):
    id: str
    name: str
    url: str
    proxy_url: str
    username: str
    enterprise_enabled: bool = False
    disable_all_traffic: bool = False
    openid_display_name: str | None = None
    client_traffic_policy: int | None = None

    @property
    def traffic_policy(self) -> int:
        if self.client_traffic_policy is not None:
            return self.client_traffic_policy
        return TRAFFIC_DISABLE_ALL if self.disable_all_traffic else TRAFFIC_NONE


class DeviceConfigResponse(_Model):
    device: Device | None = None
    configs: list[DeviceConfig]
    instance: InstanceInfo
    token: str | None = None


class EnrollmentUser(_Model):
    first_name: str
    last_name: str
    login: str
    email: str
    phone_number: str | None = None
    is_active: bool = True
    device_names: list[str] = []
    enrolled: bool
    is_admin: bool = False


class EnrollmentSettings(_Model):
    vpn_setup_optional: bool = False
    only_client_activation: bool = False
    admin_device_management: bool = False
    smtp_configured: bool = False
    mfa_required: bool = False


class EnrollmentStart(_Model):
    user: EnrollmentUser
    deadline_timestamp: int
    final_page_content: str = ""
    instance: InstanceInfo
    settings: EnrollmentSettings


class ClientMfaStart(_Model):
    token: str
    challenge: str | None = None


class ClientMfaFinish(_Model):
    preshared_key: str
    token: str | None = None


_M = TypeVar("_M", bound=_Model)


# ------------------------------------------------------------------ platform header


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_platform_info(
    os_family: str,
    os_type: str,
    version: str,
    *,
    edition: str | None = None,
    codename: str | None = None,
    bitness: str | None = None,
    architecture: str | None = None,
) -> bytes:
    """Protobuf `ClientPlatformInfo`: every field is a string, so the wire format is just
    tag, length and UTF-8 bytes per field, in field order (what protobuf itself emits)."""
    fields = (os_family, os_type, version, edition, codename, bitness, architecture)
    out = bytearray()
    for number, value in enumerate(fields, start=1):
        if value is None:
            continue
        data = value.encode()
        out += _varint(number << 3 | 2) + _varint(len(data)) + data
    return bytes(out)


def platform_header(**fields: Any) -> str:
    return base64.b64encode(encode_platform_info(**fields)).decode("ascii")


def parse_os_release(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith("#"):
            values[key] = value.strip().strip("\"'")
    return values


def local_platform(os_release: Path = Path("/etc/os-release")) -> dict[str, Any]:
    """This machine, described the way the Edge expects (it only acts on `os_family`)."""
    try:
        release = parse_os_release(os_release.read_text())
    except OSError:
        release = {}
    return {
        "os_family": "linux",
        "os_type": release.get("NAME") or platform.system() or "Linux",
        "version": release.get("VERSION_ID") or platform.release(),
        "codename": release.get("VERSION_CODENAME") or None,
        "bitness": "64-bit" if sys.maxsize > 2**32 else "32-bit",
        "architecture": platform.machine() or None,
    }


# ------------------------------------------------------------------ HTTP


def normalize_url(url: str) -> str:
    """`https://vpn.example.com` → `https://vpn.example.com/`; routes are appended to it
    without a separator, exactly as the desktop client does with `proxy_url`."""
    url = url.strip()
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"URL must start with http:// or https://: {url!r}")
    if url.endswith("/api/v1") or url.endswith("/api/v1/"):
        url = url[: url.rindex("/api/v1")]
    return url.rstrip("/") + "/"


def error_message(response: httpx.Response) -> str:
    """The `error` of a JSON error body; the plain-text body the Edge sends for body errors."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500]
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"]
    return response.text.strip()[:500]


class EdgeClient:
    """One Edge. Holds the enrollment session the way the desktop client does: the whole
    `Set-Cookie` value of `enrollment/start`, attributes included, is sent back verbatim
    as `Cookie` (no cookie jar, so `Secure`/`Path` attributes never drop it)."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = normalize_url(url)
        self.session_cookie: str | None = None
        self._http = httpx.Client(
            timeout=timeout,
            transport=transport,
            headers={
                "User-Agent": f"defguard-client/{__version__} (linux)",
                "defguard-client-version": __version__,
                "defguard-client-platform": platform_header(**local_platform()),
            },
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> EdgeClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _post(
        self,
        route: str,
        body: dict[str, Any],
        *,
        cookie: bool = False,
        timeout: float | None = None,
    ) -> httpx.Response:
        headers = {}
        if cookie and self.session_cookie:
            headers["Cookie"] = self.session_cookie
        url = f"{self.url}api/v1/{route}"
        try:
            response = self._http.post(
                url,
                json=body,
                headers=headers,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.HTTPError as exc:
            raise EdgeError(0, f"cannot reach the Edge at {self.url}: {exc}") from exc
        finally:
            self._http.cookies.clear()
        if response.status_code >= 400:
            raise EdgeError(response.status_code, error_message(response))
        return response

    @staticmethod
    def _parse(response: httpx.Response, model: type[_M], route: str) -> _M:
        try:
            return model.model_validate(response.json())
        except (ValueError, ValidationError) as exc:
            raise EdgeError(
                response.status_code, f"unexpected answer from the Edge to {route}: {exc}"
            ) from exc

    # -- enrollment (cookie session)

    def enrollment_start(self, token: str) -> EnrollmentStart:
        response = self._post("enrollment/start", {"token": token})
        set_cookie = response.headers.get("set-cookie")
        if set_cookie:
            self.session_cookie = set_cookie
        return self._parse(response, EnrollmentStart, "enrollment/start")

    def activate_user(self, password: str, phone_number: str | None = None) -> None:
        body: dict[str, Any] = {"password": password}
        if phone_number:
            body["phone_number"] = phone_number
        self._post("enrollment/activate_user", body, cookie=True)

    def register_mfa_start(self, method: int) -> str | None:
        """The TOTP secret (None for e-mail, whose code is sent now)."""
        response = self._post(
            "enrollment/register-mfa/code/start",
            {"method": REGISTER_MFA_NAMES[method]},
            cookie=True,
        )
        secret = response.json().get("totp_secret") if response.content else None
        return secret if isinstance(secret, str) else None

    def register_mfa_finish(self, method: int, code: str) -> list[str]:
        response = self._post(
            "enrollment/register-mfa/code/finish",
            {"code": code, "method": REGISTER_MFA_NAMES[method]},
            cookie=True,
        )
        codes = response.json().get("recovery_codes") if response.content else None
        return [c for c in codes if isinstance(c, str)] if isinstance(codes, list) else []

    def create_device(self, name: str, pubkey: str) -> DeviceConfigResponse:
        response = self._post(
            "enrollment/create_device", {"name": name, "pubkey": pubkey}, cookie=True
        )
        return self._parse(response, DeviceConfigResponse, "enrollment/create_device")

    def network_info(self, pubkey: str) -> DeviceConfigResponse:
        response = self._post("enrollment/network_info", {"pubkey": pubkey}, cookie=True)
        return self._parse(response, DeviceConfigResponse, "enrollment/network_info")

    # -- client MFA and polling

    def client_mfa_start(self, location_id: int, pubkey: str, method: int) -> ClientMfaStart:
        response = self._post(
            "client-mfa/start",
            {"location_id": location_id, "pubkey": pubkey, "method": method},
        )
        return self._parse(response, ClientMfaStart, "client-mfa/start")

    def client_mfa_finish(self, token: str, code: str | None = None) -> ClientMfaFinish:
        body: dict[str, Any] = {"token": token}
        if code is not None:
            body["code"] = code
        response = self._post("client-mfa/finish", body)
        return self._parse(response, ClientMfaFinish, "client-mfa/finish")

    def poll(self, token: str) -> DeviceConfigResponse:
        response = self._post("poll", {"token": token}, timeout=POLL_TIMEOUT)
        try:
            payload = response.json()["device_config"]
        except (ValueError, KeyError, TypeError) as exc:
            raise EdgeError(
                response.status_code, "unexpected answer from the Edge to poll"
            ) from exc
        try:
            return DeviceConfigResponse.model_validate(payload)
        except ValidationError as exc:
            raise EdgeError(
                response.status_code, f"unexpected answer from the Edge to poll: {exc}"
            ) from exc
