"""Database settings follow libpq: host name, address or Unix socket directory."""

from __future__ import annotations

import pytest

from defguard.config import CoreSettings, DatabaseSettings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    import os

    for key in list(os.environ):
        if key.startswith("DEFGUARD_"):
            monkeypatch.delenv(key)


def test_nothing_set_means_embedded():
    assert DatabaseSettings().is_external is False


def test_host_name_and_port(monkeypatch):
    monkeypatch.setenv("DEFGUARD_DB_HOST", "db.internal")
    monkeypatch.setenv("DEFGUARD_DB_PORT", "6543")
    monkeypatch.setenv("DEFGUARD_DB_PASSWORD", "s3cret")
    s = DatabaseSettings()
    assert s.is_external
    url = s.external_url()
    assert (url.host, url.port, url.database, url.username) == (
        "db.internal",
        6543,
        "defguard",
        "defguard",
    )
    assert url.password == "s3cret"
    assert "s3cret" not in repr(s)


def test_socket_directory_goes_to_libpq_host(monkeypatch):
    monkeypatch.setenv("DEFGUARD_DB_HOST", "/var/run/postgresql")
    url = DatabaseSettings().external_url()
    assert url.host is None
    assert url.query["host"] == "/var/run/postgresql"


def test_database_url_wins(monkeypatch):
    monkeypatch.setenv("DEFGUARD_DATABASE_URL", "postgresql://u:p@h:1/n")
    monkeypatch.setenv("DEFGUARD_DB_HOST", "ignored")
    url = DatabaseSettings().external_url()
    assert (url.drivername, url.host, url.port, url.database) == ("postgresql+psycopg", "h", 1, "n")


def test_out_of_range_port_is_rejected(monkeypatch):
    monkeypatch.setenv("DEFGUARD_HTTP_PORT", "70000")
    with pytest.raises(ValueError, match="http_port"):
        CoreSettings()


def test_secure_cookie_follows_https_url():
    assert CoreSettings(url="https://vpn.example.com").secure_cookie
    assert not CoreSettings(url="http://localhost:8000").secure_cookie
    assert not CoreSettings(url="https://x", cookie_insecure=True).secure_cookie
