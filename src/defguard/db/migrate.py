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
from sqlalchemy.engine import URL

MIGRATIONS = Path(__file__).parent / "migrations"
MIGRATION_LOCK = 0x64656667  # "defg"

# Friendly names accepted by `defguard migrate --to`.
ALIASES = {"1.x": "0001_legacy_1x", "2.0": "0002_upgrade_2_0"}


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
                command.upgrade(cfg, target)
                conn.commit()
                return MigrationContext.configure(conn).get_current_revision()
            finally:
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
