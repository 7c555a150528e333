"""Running one Core process: database, migrations, first admin, HTTP server."""

from __future__ import annotations

import sys

import structlog
import uvicorn
from sqlalchemy.engine import URL

from defguard import eventloop
from defguard.config import CoreSettings
from defguard.core.app import create_app
from defguard.core.bootstrap import BootstrapResult, bootstrap
from defguard.core.jobs import running_worker
from defguard.core.links.manager import running_links
from defguard.db.engine import Database, resolve_url
from defguard.db.migrate import upgrade

log = structlog.get_logger("defguard.core")


def announce_admin(result: BootstrapResult, settings: CoreSettings) -> None:
    """Print the first admin's login on the console, never through the logger."""
    if not result.admin_created:
        return
    if result.generated_password:
        print(
            "\n  First start: created user 'admin' with a generated password (shown only once):\n"
            f"    username: admin\n    password: {result.generated_password}\n",
            file=sys.stdout,
            flush=True,
        )
    else:
        print(
            "\n  First start: created user 'admin' with the password from "
            "DEFGUARD_DEFAULT_ADMIN_PASSWORD\n",
            file=sys.stdout,
            flush=True,
        )


def prepare_database(settings: CoreSettings) -> URL:
    """Locate (or start) the database and migrate it; safe to run from many Cores at once."""
    url = resolve_url(settings)
    log.info("applying database migrations", database=url.database)
    revision = upgrade(url)
    log.info("database schema ready", revision=revision)
    return url


async def register_proxies(db: Database, settings: CoreSettings) -> None:
    """Rows for the Edges named by DEFGUARD_PROXY_URL (kept if they already exist)."""
    urls = settings.proxy_urls
    if not urls:
        return
    from defguard.core.proxies.service import ensure_proxies

    try:
        async with db.transaction() as s:
            proxies = await ensure_proxies(s, urls, "defguard")
    except ValueError as exc:
        log.error("invalid DEFGUARD_PROXY_URL", error=str(exc))
        raise SystemExit(2) from exc
    for proxy in proxies:
        log.info("proxy registered", proxy=proxy.name, address=f"{proxy.address}:{proxy.port}")


async def serve_core(settings: CoreSettings, url: URL) -> None:
    # Room for the Edge links' concurrent requests plus the API (see links/edge.py).
    db = Database(url, pool_size=16)
    password = settings.default_admin_password
    result = await bootstrap(db, password.get_secret_value() if password else None)
    announce_admin(result, settings)
    await register_proxies(db, settings)
    app = create_app(settings, db, own_db=True)
    config = uvicorn.Config(
        app,
        host=settings.http_bind_address,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        proxy_headers=settings.use_forwarded_for,
    )
    server = uvicorn.Server(config)
    log.info("core listening", address=settings.http_bind_address, port=settings.http_port)
    async with running_worker(url, db), running_links(db, settings):
        await server.serve()


def run_core(settings: CoreSettings) -> None:
    url = prepare_database(settings)
    eventloop.run(serve_core(settings, url))
