"""Alembic, driven from code: at Core start-up and by `defguard migrate`.

Several Cores may start at once against one database; a PostgreSQL advisory
lock makes exactly one of them migrate while the others wait and then find
nothing left to do.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Connection

MIGRATIONS = Path(__file__).parent / "migrations"
MIGRATION_LOCK = 0x64656667  # "defg"

# Friendly names accepted by `defguard migrate --to`.
ALIASES = {"1.x": "0001_legacy_1x", "2.0": "0002_upgrade_2_0"}


LEGACY_LAST_SQLX = 20251119122424  # the last migration of every Defguard 1.6.x release


class UnsupportedDatabase(RuntimeError):
    """The database holds a schema this version cannot upgrade."""


def _adopt_upstream_1x(conn: Connection, cfg: Config) -> None:
    """Recognise a database written by upstream Defguard 1.6 and stamp it as the legacy layout.

    Upstream tracks its schema in `_sqlx_migrations`; our history starts with a
    revision that *is* that layout, so such a database continues from there.
    """
    has_alembic = conn.execute(text("SELECT to_regclass('alembic_version')")).scalar()
    has_sqlx = conn.execute(text("SELECT to_regclass('_sqlx_migrations')")).scalar()
    if has_alembic or not has_sqlx:
        return
    last = conn.execute(text("SELECT max(version) FROM _sqlx_migrations WHERE success")).scalar()
    if last != LEGACY_LAST_SQLX:
        raise UnsupportedDatabase(
            f"this database was written by a Defguard release whose last migration is {last}; "
            f"upgrade it to 1.6.x (last migration {LEGACY_LAST_SQLX}) first"
        )
    command.stamp(cfg, "0001_legacy_1x")
    conn.commit()


def alembic_config(url: URL) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["url"] = url
    return cfg


def upgrade(url: URL, target: str = "head") -> str | None:
    """Bring the schema to `target`; returns the revision the database is at."""
    target = ALIASES.get(target, target)
    engine = create_engine(url, poolclass=None)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK})
            conn.commit()
            try:
                cfg = alembic_config(url)
                cfg.attributes["connection"] = conn
                _adopt_upstream_1x(conn, cfg)
                command.upgrade(cfg, target)
                conn.commit()
                return MigrationContext.configure(conn).get_current_revision()
            finally:
                # Session-level advisory locks outlive a rolled-back transaction.
                conn.rollback()
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK})
                conn.commit()
    finally:
        engine.dispose()


def current_revision(url: URL) -> str | None:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def head_revision() -> str:
    script = ScriptDirectory.from_config(alembic_config(URL.create("postgresql+psycopg")))
    head = script.get_current_head()
    assert head is not None
    return head
