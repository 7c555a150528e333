"""Settings for every process, read from `DEFGUARD_*` environment variables.

One class per component so that an Edge in the DMZ never needs (or sees) the
database credentials of Core.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import Field, SecretStr
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

    @property
    def secure_cookie(self) -> bool:
        return self.url.startswith("https://") and not self.cookie_insecure
