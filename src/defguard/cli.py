"""The `defguard` command: run the system or one component, migrate, administer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import httpx
import typer

from defguard.config import CoreSettings, LogSettings
from defguard.core.acl.cli import acl_app
from defguard.logs import configure_logging

app = typer.Typer(
    name="defguard",
    help="Identity-aware WireGuard VPN: Core, Edge and Gateway in one command.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
admin_app = typer.Typer(
    help="Administrative commands run against the database.", no_args_is_help=True
)
app.add_typer(admin_app, name="admin")
app.add_typer(acl_app, name="acl")

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar="DEFGUARD_DATA_DIR",
        help="Where the embedded PostgreSQL keeps its data (used when no database is configured).",
    ),
]


def _setup_logging() -> None:
    ls = LogSettings()
    configure_logging(ls.log_level, ls.log_format)


def _core_settings(data_dir: Path | None, **overrides: object) -> CoreSettings:
    values = {k: v for k, v in overrides.items() if v is not None}
    if data_dir is not None:
        values["data_dir"] = data_dir
    try:
        return CoreSettings(**values)
    except ValueError as exc:
        fail(f"invalid settings: {exc}")
        raise


def fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


@app.command()
def core(
    data_dir: DataDir = None,
    port: Annotated[
        int | None,
        typer.Option(
            "--port", help="HTTP port (DEFGUARD_HTTP_PORT, default 8000).", min=1, max=65535
        ),
    ] = None,
    bind: Annotated[
        str | None, typer.Option("--bind", help="Bind address (DEFGUARD_HTTP_BIND_ADDRESS).")
    ] = None,
) -> None:
    """Run one Core: migrate the database, create the first admin, serve the REST API."""
    _setup_logging()
    from defguard.core.server import run_core

    settings = _core_settings(data_dir, http_port=port, http_bind_address=bind)
    run_core(settings)


@app.command()
def gateway() -> None:
    """Run a Gateway: a WireGuard interface and nftables firewall that Cores configure over gRPC.

    Configured by environment (see docs/configuration.md): DEFGUARD_GRPC_PORT,
    DEFGUARD_IFNAME, DEFGUARD_USERSPACE, DEFGUARD_GRPC_CERT/KEY/CA, HEALTH_PORT, ...
    """
    _setup_logging()
    from defguard.config import GatewaySettings
    from defguard.gateway.main import run_gateway

    try:
        settings = GatewaySettings()
    except ValueError as exc:
        fail(f"invalid settings: {exc}")
        raise
    run_gateway(settings)


@app.command()
def edge() -> None:
    """Run an Edge: the public API for enrollment, password reset, VPN-client MFA and polling.

    Configured by environment (see docs/configuration.md): DEFGUARD_PROXY_HTTP_PORT,
    DEFGUARD_PROXY_GRPC_PORT, DEFGUARD_HTTP_BIND_ADDRESS, DEFGUARD_GRPC_BIND_ADDRESS,
    DEFGUARD_PROXY_GRPC_CERT/KEY/CA, DEFGUARD_RATELIMIT_PER_SECOND, ...
    """
    _setup_logging()
    from defguard.config import EdgeSettings
    from defguard.edge.main import run_edge

    try:
        settings = EdgeSettings()
    except ValueError as exc:
        fail(f"invalid settings: {exc}")
        raise
    run_edge(settings)


@app.command()
def migrate(
    data_dir: DataDir = None,
    to: Annotated[
        str,
        typer.Option(
            "--to", help="Target revision: 'head' (default), '2.0', '1.x' or a revision id."
        ),
    ] = "head",
) -> None:
    """Apply database migrations (Core also does this at start-up)."""
    _setup_logging()
    from alembic.util.exc import CommandError

    from defguard.db.engine import resolve_url
    from defguard.db.migrate import upgrade

    settings = _core_settings(data_dir)
    try:
        revision = upgrade(resolve_url(settings), to)
    except CommandError as exc:
        fail(str(exc))
    typer.echo(f"database at revision {revision}")


def _console_db(data_dir: Path | None):
    from defguard.core.server import prepare_database
    from defguard.db.engine import Database

    return Database(prepare_database(_core_settings(data_dir)), pool_size=1)


def _run_console(coro_factory) -> None:
    import asyncio

    from defguard.core.console import ConsoleError

    try:
        asyncio.run(coro_factory())
    except ConsoleError as exc:
        fail(str(exc))


@admin_app.command("create-user")
def admin_create_user(
    username: Annotated[str, typer.Argument(help="Login name (letters, digits, '.', '-', '_').")],
    email: Annotated[str, typer.Option("--email", help="E-mail address (unique).")],
    first_name: Annotated[str, typer.Option("--first-name")] = "",
    last_name: Annotated[str, typer.Option("--last-name")] = "",
    password: Annotated[
        str | None,
        typer.Option(
            "--password",
            envvar="DEFGUARD_NEW_USER_PASSWORD",
            help="Initial password; omit to create the user for enrollment.",
        ),
    ] = None,
    admin: Annotated[
        bool, typer.Option("--admin", help="Add the user to the admin group.")
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Create a user account (optionally an admin)."""
    _setup_logging()
    from defguard.core.console import create_user
    from defguard.core.users.service import NewUser

    spec = NewUser(
        username=username,
        first_name=first_name or username,
        last_name=last_name,
        email=email,
        password=password,
    )

    async def _go() -> None:
        db = _console_db(data_dir)
        try:
            user = await create_user(db, spec, admin=admin)
        finally:
            await db.dispose()
        typer.echo(
            f"created user {user.username} (id {user.id}){' in the admin group' if admin else ''}"
        )

    _run_console(_go)


@admin_app.command("reset-password")
def admin_reset_password(
    username: Annotated[str, typer.Argument(help="The account whose password to set.")],
    password: Annotated[
        str | None,
        typer.Option(
            "--password",
            envvar="DEFGUARD_NEW_USER_PASSWORD",
            help="New password; omit to generate one and print it once.",
        ),
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Set a user's password from the console (e.g. a lost admin password)."""
    _setup_logging()
    from defguard.core.auth.passwords import generate_password
    from defguard.core.console import reset_password

    generated = password is None
    new_password = password or generate_password()

    async def _go() -> None:
        db = _console_db(data_dir)
        try:
            await reset_password(db, username, new_password)
        finally:
            await db.dispose()

    _run_console(_go)
    if generated:
        typer.echo(f"new password for {username}: {new_password}")
    else:
        typer.echo(f"password of {username} changed")


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=1.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False


@app.command()
def up(
    data_dir: DataDir = None,
    port: Annotated[
        int, typer.Option("--port", envvar="DEFGUARD_HTTP_PORT", min=1, max=65535)
    ] = 8000,
    bind: Annotated[
        str, typer.Option("--bind", envvar="DEFGUARD_HTTP_BIND_ADDRESS", help="Core bind address.")
    ] = "127.0.0.1",
) -> None:
    """Run the whole system on this machine, with an embedded PostgreSQL unless one is configured."""
    _setup_logging()
    import asyncio

    from defguard.core.bootstrap import bootstrap
    from defguard.core.server import prepare_database
    from defguard.db.engine import Database

    settings = _core_settings(data_dir, http_port=port, http_bind_address=bind)
    url = prepare_database(settings)

    async def _boot() -> tuple[bool, str | None]:
        db = Database(url, pool_size=1)
        try:
            pw = settings.default_admin_password
            result = await bootstrap(db, pw.get_secret_value() if pw else None)
            return result.admin_created, result.generated_password
        finally:
            await db.dispose()

    created, generated = asyncio.run(_boot())
    env = dict(os.environ)
    env["DEFGUARD_DATABASE_URL"] = url.render_as_string(hide_password=False)
    env["DEFGUARD_HTTP_PORT"] = str(port)
    env["DEFGUARD_HTTP_BIND_ADDRESS"] = bind
    children = [subprocess.Popen([sys.executable, "-m", "defguard", "core"], env=env)]

    def _stop(*_: object) -> None:
        for child in children:
            if child.poll() is None:
                child.terminate()

    signal.signal(signal.SIGTERM, _stop)
    host = "127.0.0.1" if bind in ("0.0.0.0", "::") else bind  # noqa: S104
    admin_url = f"http://{host}:{port}"
    try:
        if not _wait_healthy(admin_url, children[0]):
            _stop()
            fail("Core did not start; see the log above")
        if generated:
            login = f"admin / {generated}   (generated now; shown only this once)"
        elif created:
            login = "admin / the password in DEFGUARD_DEFAULT_ADMIN_PASSWORD"
        else:
            login = "admin / the password set at first start (reset: defguard admin reset-password admin)"
        typer.echo(
            "\n  Defguard is up.\n"
            f"    Admin API:  {admin_url}/api/v1  (interactive docs: {admin_url}/api/v1/docs)\n"
            f"    Login:      {login}\n"
            f"    Database:   {'embedded PostgreSQL in ' + str(settings.data_dir) if not settings.is_external else 'external PostgreSQL'}\n"
            "  Press Ctrl+C to stop.\n"
        )
        for child in children:
            child.wait()
    except KeyboardInterrupt:
        _stop()
        for child in children:
            child.wait()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
