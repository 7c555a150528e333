"""The client's side of the Edge wire format: platform header, URLs, cookies, errors, models."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from defguard import __version__
from defguard.client import api
from defguard.client.api import EdgeClient, EdgeError
from defguard.edge.cookies import parse_cookie_header
from defguard.edge.headers import platform_fields

SPEC_EXAMPLE = "Cgd3aW5kb3dzEgdXaW5kb3dzGgoxMSAoMjI2MzEpMgY2NC1iaXQ6Bng4Nl82NA=="

INSTANCE = {
    "id": "0b6f0c3e-5d0a-4a53-9d0e-2f6f1b7c9a10",
    "name": "Acme",
    "url": "https://defguard.acme.test/",
    "proxy_url": "https://enroll.acme.test/",
    "username": "jdoe",
    "enterprise_enabled": True,
    "disable_all_traffic": False,
    "openid_display_name": None,
    "client_traffic_policy": 0,
}
START = {
    "admin": {"name": "Alice Admin", "phone_number": None, "email": "alice@acme.test"},
    "user": {
        "first_name": "John",
        "last_name": "Doe",
        "login": "jdoe",
        "email": "john@acme.test",
        "phone_number": None,
        "is_active": True,
        "device_names": ["old-laptop"],
        "enrolled": False,
        "is_admin": False,
    },
    "deadline_timestamp": 1767226200,
    "final_page_content": "Welcome to Acme VPN.",
    "instance": INSTANCE,
    "settings": {
        "vpn_setup_optional": False,
        "only_client_activation": False,
        "admin_device_management": False,
        "smtp_configured": True,
        "mfa_required": True,
    },
}
CONFIG = {
    "network_id": 1,
    "network_name": "HQ",
    "config": "[Interface]\nPrivateKey = YOUR_PRIVATE_KEY\n...",
    "endpoint": "vpn.acme.test:51820",
    "assigned_ip": "10.10.0.7",
    "pubkey": "qSl+wevyCjR0oXbm2wgNz2G0XF+Ty/biwZMik2o6POA=",
    "allowed_ips": "10.10.0.0/24,192.168.10.0/24",
    "dns": "10.10.0.1",
    "mfa_enabled": True,
    "keepalive_interval": 25,
    "location_mfa_mode": 2,
    "service_location_mode": 1,
}
DEVICE_RESPONSE = {
    "device": {
        "id": 17,
        "name": "john-laptop",
        "pubkey": "n+kAdgrlU77BMy30ywHH/mYAfTI7oMQTzkB+m3CoLo0=",
        "user_id": 5,
        "created_at": 1767225800,
    },
    "configs": [CONFIG],
    "instance": INSTANCE,
    "token": "MdZ3lx1h3sGpXa2JoEPQj354KVypfbip",
}
SET_COOKIE = (
    "defguard_proxy=Qm9vZ3VzX3NlYWxlZF90b2tlbg; HttpOnly; SameSite=Strict; Secure; "
    "Path=/api/v1/enrollment; Expires=Thu, 01 Jan 2026 00:10:00 GMT"
)


# ------------------------------------------------------------------ platform header


def test_platform_encoding_matches_the_spec_example_byte_for_byte():
    encoded = api.encode_platform_info(
        "windows", "Windows", "11 (22631)", bitness="64-bit", architecture="x86_64"
    )
    assert encoded == base64.b64decode(SPEC_EXAMPLE)
    assert (
        api.platform_header(
            os_family="windows",
            os_type="Windows",
            version="11 (22631)",
            bitness="64-bit",
            architecture="x86_64",
        )
        == SPEC_EXAMPLE
    )


def test_linux_platform_header_decodes_on_the_edge_as_linux():
    header = api.platform_header(**api.local_platform())
    fields = platform_fields(header)
    assert fields[1] == "linux"
    assert 2 in fields and 3 in fields
    # Multi-byte lengths and non-ASCII text survive the varint encoding.
    long = "ü" * 200
    assert platform_fields(api.platform_header(os_family="linux", os_type=long, version="1")) == {
        1: "linux",
        2: long,
        3: "1",
    }


def test_os_release_parsing(tmp_path):
    path = tmp_path / "os-release"
    path.write_text(
        'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\n'
        'VERSION_ID="12"\nVERSION_CODENAME=bookworm\n# comment\n'
    )
    info = api.local_platform(path)
    assert info["os_family"] == "linux"
    assert info["os_type"] == "Debian GNU/Linux"
    assert info["version"] == "12"
    assert info["codename"] == "bookworm"
    missing = api.local_platform(tmp_path / "absent")
    assert missing["os_family"] == "linux" and missing["version"]


# ------------------------------------------------------------------ URLs and errors


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://enroll.acme.test", "https://enroll.acme.test/"),
        ("https://enroll.acme.test/", "https://enroll.acme.test/"),
        ("  http://10.0.0.1:8080 ", "http://10.0.0.1:8080/"),
        ("https://acme.test/edge/", "https://acme.test/edge/"),
        ("https://acme.test/api/v1/", "https://acme.test/"),
    ],
)
def test_url_normalisation(given, expected):
    assert api.normalize_url(given) == expected


@pytest.mark.parametrize("bad", ["enroll.acme.test", "ftp://acme.test", ""])
def test_url_without_http_scheme_is_rejected(bad):
    with pytest.raises(ValueError, match="http"):
        api.normalize_url(bad)


def _client(handler) -> EdgeClient:
    return EdgeClient("https://enroll.acme.test", transport=httpx.MockTransport(handler))


def test_error_statuses_keep_the_edge_message():
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/enrollment/start"):
            return httpx.Response(401, json={"error": "token expired"})
        if request.url.path.endswith("/poll"):
            return httpx.Response(422, text="Failed to deserialize the JSON body")
        return httpx.Response(503)

    with _client(handler) as edge:
        with pytest.raises(EdgeError) as info:
            edge.enrollment_start("x")
        assert (info.value.status, info.value.message) == (401, "token expired")
        assert str(info.value) == "token expired (HTTP 401)"
        with pytest.raises(EdgeError) as info:
            edge.poll("t")
        assert info.value.status == 422
        assert "deserialize" in info.value.message
        with pytest.raises(EdgeError) as info:
            edge.client_mfa_start(1, "k", 0)
        assert info.value.status == 503


def test_unreachable_edge_is_status_zero_with_the_url():
    edge = EdgeClient("http://127.0.0.1:9", timeout=2)
    with edge, pytest.raises(EdgeError) as info:
        edge.poll("t")
    assert info.value.status == 0
    assert "http://127.0.0.1:9/" in str(info.value)


def test_malformed_success_body_names_the_route():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"configs": "nope"})

    with _client(handler) as edge, pytest.raises(EdgeError, match="create_device"):
        edge.create_device("box", "k")


# ------------------------------------------------------------------ session cookie


def test_set_cookie_is_sent_back_verbatim_on_enrollment_routes_only():
    seen: list[tuple[str, str | None, dict]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/api/v1/")
        body = json.loads(request.content)
        seen.append((path, request.headers.get("cookie"), dict(request.headers)))
        if path == "enrollment/start":
            return httpx.Response(200, json=START, headers={"Set-Cookie": SET_COOKIE})
        if path == "enrollment/create_device":
            assert body == {"name": "box", "pubkey": "PUB"}
            return httpx.Response(200, json=DEVICE_RESPONSE)
        if path == "client-mfa/start":
            return httpx.Response(200, json={"token": "jwt", "challenge": None})
        return httpx.Response(200)

    # Plain http, yet the cookie says Secure: a cookie jar would drop it, the client must not.
    edge = EdgeClient("http://enroll.acme.test", transport=httpx.MockTransport(handler))
    with edge:
        start = edge.enrollment_start("egs46Coehv9dPpJcqX0j9YyXusrv1XhR")
        assert start.user.device_names == ["old-laptop"]
        assert start.settings.mfa_required is True
        edge.create_device("box", "PUB")
        edge.activate_user("S3cure!Passw0rd", None)
        edge.client_mfa_start(1, "PUB", api.MFA_TOTP)

    paths = [p for p, _, _ in seen]
    assert paths == [
        "enrollment/start",
        "enrollment/create_device",
        "enrollment/activate_user",
        "client-mfa/start",
    ]
    cookies = {p: c for p, c, _ in seen}
    assert cookies["enrollment/start"] is None
    assert cookies["enrollment/create_device"] == SET_COOKIE
    assert cookies["enrollment/activate_user"] == SET_COOKIE
    assert cookies["client-mfa/start"] is None
    # The Edge's lenient parser finds the sealed token among the attributes.
    assert parse_cookie_header(SET_COOKIE)["defguard_proxy"] == "Qm9vZ3VzX3NlYWxlZF90b2tlbg"
    for _, _, headers in seen:
        assert headers["defguard-client-version"] == __version__
        assert platform_fields(headers["defguard-client-platform"])[1] == "linux"


def test_register_mfa_uses_method_names_and_returns_secret_and_codes():
    bodies: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        if request.url.path.endswith("/start"):
            return httpx.Response(200, json={"totp_secret": "JBSWY3DPEHPK3PXP"})
        return httpx.Response(200, json={"recovery_codes": ["3F9K2QX7", "P8WZ1M4D"]})

    with _client(handler) as edge:
        assert edge.register_mfa_start(api.MFA_TOTP) == "JBSWY3DPEHPK3PXP"
        assert edge.register_mfa_finish(api.MFA_TOTP, "123456") == ["3F9K2QX7", "P8WZ1M4D"]
    assert bodies == [{"method": "Totp"}, {"code": "123456", "method": "Totp"}]


# ------------------------------------------------------------------ models


def test_device_config_fields_and_mfa_mode_of_older_edges():
    config = api.DeviceConfig.model_validate(CONFIG)
    assert config.mfa_mode == api.MFA_MODE_INTERNAL
    assert config.addresses == ["10.10.0.7"]
    assert config.allowed_networks == ["10.10.0.0/24", "192.168.10.0/24"]
    older = api.DeviceConfig.model_validate(
        {**CONFIG, "location_mfa_mode": None, "service_location_mode": None}
    )
    assert older.mfa_mode == api.MFA_MODE_INTERNAL
    no_mfa = api.DeviceConfig.model_validate(
        {**CONFIG, "mfa_enabled": False, "location_mfa_mode": None}
    )
    assert no_mfa.mfa_mode == api.MFA_MODE_DISABLED
    external = api.DeviceConfig.model_validate({**CONFIG, "location_mfa_mode": 3})
    assert external.mfa_mode == api.MFA_MODE_EXTERNAL
    assert api.DeviceConfig.model_validate({**CONFIG, "allowed_ips": ""}).allowed_networks == []


def test_poll_response_unwraps_device_config_and_ignores_unknown_fields():
    def handler(request: httpx.Request) -> httpx.Response:
        payload = {**DEVICE_RESPONSE, "token": None, "posture": {"new": 1}}
        return httpx.Response(200, json={"device_config": payload})

    with _client(handler) as edge:
        response = edge.poll("t")
    assert response.token is None
    assert response.configs[0].network_name == "HQ"
    assert response.instance.traffic_policy == api.TRAFFIC_NONE


def test_traffic_policy_falls_back_to_the_deprecated_flag():
    info = api.InstanceInfo.model_validate(
        {**INSTANCE, "client_traffic_policy": None, "disable_all_traffic": True}
    )
    assert info.traffic_policy == api.TRAFFIC_DISABLE_ALL
