"""Settings for every process, read from `DEFGUARD_*` environment variables.

One class per component so that an Edge in the DMZ never needs (or sees) the
database credentials of Core.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import URL, make_url


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("defguard", appauthor=False))


class LogSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DEFGUARD_", extra="ignore")

    log_level: Literal["debug", "info", "warning", "error", "DEBUG", "INFO", "WARNING", "ERROR"] = (
        "info"
    )
    log_format: Literal["console", "json"] = "console"


class DatabaseSettings(BaseSettings):
    """libpq-style connection settings; none set means "use the embedded server"."""

    model_config = SettingsConfigDict(env_prefix="DEFGUARD_", extra="ignore")

    database_url: SecretStr | None = None
    db_host: str | None = None
    db_port: int = Field(default=5432, ge=1, le=65535)
    db_name: str = "defguard"
    db_user: str = "defguard"
    db_password: SecretStr | None = None
    data_dir: Path = Field(default_factory=default_data_dir)

    @property
    def is_external(self) -> bool:
        configured = {"database_url", "db_host", "db_port", "db_name", "db_user", "db_password"}
        return bool(configured & self.model_fields_set)

    def external_url(self) -> URL:
        """Build the SQLAlchemy URL of an external server.

        `db_host` follows libpq: a value starting with `/` is a Unix socket
        directory and is passed as the `host` query parameter, which psycopg
        hands to libpq unchanged.
        """
        if self.database_url is not None:
            url = make_url(self.database_url.get_secret_value())
            return url.set(drivername="postgresql+psycopg")
        password = self.db_password.get_secret_value() if self.db_password else None
        host = self.db_host or "localhost"
        if host.startswith("/"):
            return URL.create(
                "postgresql+psycopg",
                username=self.db_user,
                password=password,
                database=self.db_name,
                query={"host": host, "port": str(self.db_port)},
            )
        return URL.create(
            "postgresql+psycopg",
            username=self.db_user,
            password=password,
            host=host,
            port=self.db_port,
            database=self.db_name,
        )


class CoreSettings(DatabaseSettings):
    model_config = SettingsConfigDict(env_prefix="DEFGUARD_", extra="ignore")

    http_port: int = Field(default=8000, ge=1, le=65535)
    http_bind_address: str = "0.0.0.0"  # noqa: S104 - the admin API is meant to be reachable
    url: str = "http://localhost:8000"
    enrollment_url: str = "http://localhost:8080"
    default_admin_password: SecretStr | None = None
    cookie_insecure: bool = False
    cookie_domain: str | None = None
    # Behind a trusted reverse proxy the client address comes from X-Forwarded-For.
    use_forwarded_for: bool = False
    # Links to gateways: a failed or broken link is retried after this many seconds.
    link_retry_seconds: float = Field(default=10.0, gt=0)
    # With a CA, gateways are reached over TLS and their certificates verified against it.
    gateway_grpc_ca: Path | None = None
    # Core's own certificate and key, presented to gateways that require mutual TLS.
    core_client_cert: Path | None = None
    core_client_key: Path | None = None
    # Edges registered at start-up: gRPC URLs, comma-separated (`http://edge:50051`).
    proxy_url: str | None = None
    # With a CA, Edges are reached over TLS and their certificates verified against it.
    proxy_grpc_ca: Path | None = None

    @property
    def proxy_urls(self) -> list[str]:
        return [u.strip() for u in (self.proxy_url or "").split(",") if u.strip()]

    @property
    def secure_cookie(self) -> bool:
        return self.url.startswith("https://") and not self.cookie_insecure


class GatewaySettings(BaseSettings):
    """The Gateway: a gRPC server that Cores connect to, a WireGuard interface and nftables."""

    model_config = SettingsConfigDict(env_prefix="DEFGUARD_", extra="ignore")

    grpc_port: int = Field(default=50066, ge=1, le=65535)
    grpc_bind_address: str = "0.0.0.0"  # noqa: S104 - Cores connect from elsewhere
    grpc_cert: Path | None = None
    grpc_key: Path | None = None
    # With a CA, only Cores presenting a certificate it signed may connect (mutual TLS).
    grpc_ca: Path | None = None
    gateway_name: str | None = None
    ifname: str = "wg0"
    # Force wireguard-go even when the kernel has WireGuard.
    userspace: bool = False
    disable_fw_mgmt: bool = False
    # Listen on this WireGuard port instead of the location's: for several gateways of one
    # location on one host (as `defguard up --gateways N` runs them), which cannot share a port.
    wg_listen_port: int | None = Field(default=None, ge=1, le=65535)
    stats_period: float = Field(default=30.0, gt=0)
    # How long a stats batch waits for a Core's acknowledgement before going to another Core.
    stats_ack_timeout: float = Field(default=5.0, gt=0)
    health_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        validation_alias=AliasChoices("HEALTH_PORT", "DEFGUARD_HEALTH_PORT"),
    )
    pre_up: str | None = Field(
        default=None, validation_alias=AliasChoices("PRE_UP", "DEFGUARD_PRE_UP")
    )
    post_up: str | None = Field(
        default=None, validation_alias=AliasChoices("POST_UP", "DEFGUARD_POST_UP")
    )
    pre_down: str | None = Field(
        default=None, validation_alias=AliasChoices("PRE_DOWN", "DEFGUARD_PRE_DOWN")
    )
    post_down: str | None = Field(
        default=None, validation_alias=AliasChoices("POST_DOWN", "DEFGUARD_POST_DOWN")
    )
    # Leave the interface and firewall in place at shutdown (restarts that must not cut tunnels);
    # the next start adopts them.
    keep_interface: bool = False


class EdgeSettings(BaseSettings):
    """The Edge: public HTTP for clients and a gRPC server that Cores connect to."""

    model_config = SettingsConfigDict(env_prefix="DEFGUARD_", extra="ignore")

    proxy_http_port: int = Field(default=8080, ge=1, le=65535)
    http_bind_address: str = "0.0.0.0"  # noqa: S104 - the Edge is the public face
    proxy_grpc_port: int = Field(default=50051, ge=1, le=65535)
    grpc_bind_address: str = "0.0.0.0"  # noqa: S104 - Cores connect from elsewhere
    proxy_grpc_cert: Path | None = None
    proxy_grpc_key: Path | None = None
    # With a CA, only Cores presenting a certificate it signed may connect (mutual TLS).
    proxy_grpc_ca: Path | None = None
    # Per-client-IP limit on API requests; 0 turns it off.
    ratelimit_per_second: int = Field(default=0, ge=0)
    ratelimit_burst: int = Field(default=0, ge=0)
    # A client request's deadline for Core's answer (including re-sending it to another
    # Core when one dies); past it the client gets 500, as Defguard's clients expect.
    core_timeout_seconds: float = Field(default=5.0, gt=0)
