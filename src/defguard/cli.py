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

from defguard.client.cli import client_app
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
app.add_typer(
    client_app,
    name="client",
    help="VPN client for headless machines: enroll, connect (with MFA), status, disconnect.",
)

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
        int,
        typer.Option(
            "--port", envvar="DEFGUARD_HTTP_PORT", min=1, max=65535, help="First Core's HTTP port."
        ),
    ] = 8000,
    bind: Annotated[
        str, typer.Option("--bind", envvar="DEFGUARD_HTTP_BIND_ADDRESS", help="Bind address.")
    ] = "127.0.0.1",
    cores: Annotated[int, typer.Option("--cores", min=1, max=16, help="Core processes.")] = 1,
    edges: Annotated[int, typer.Option("--edges", min=0, max=16, help="Edge processes.")] = 1,
    edge_port: Annotated[
        int, typer.Option("--edge-port", min=1, max=65535, help="First Edge's public HTTP port.")
    ] = 8080,
    edge_grpc_port: Annotated[
        int, typer.Option("--edge-grpc-port", min=1, max=65535, help="First Edge's gRPC port.")
    ] = 50051,
    gateways: Annotated[
        int,
        typer.Option(
            "--gateways",
            min=0,
            max=16,
            help="Gateway processes for the first location (needs root; wireguard-go without the kernel module).",
        ),
    ] = 0,
    gateway_grpc_port: Annotated[
        int,
        typer.Option("--gateway-grpc-port", min=1, max=65535, help="First Gateway's gRPC port."),
    ] = 50066,
) -> None:
    """Run the whole system on this machine, with an embedded PostgreSQL unless one is configured.

    Every Core connects to every Edge, as in a production layout; ports count
    up from the first one of each kind.
    """
    _setup_logging()
    import asyncio

    from defguard.core.bootstrap import bootstrap
    from defguard.core.server import prepare_database
    from defguard.db.engine import Database

    settings = _core_settings(data_dir, http_port=port, http_bind_address=bind)
    if gateways and os.geteuid() != 0:
        fail("--gateways needs root: each gateway creates a WireGuard interface and nftables table")
    for first, count, what in (
        (port, cores, "--port"),
        (edge_port, edges, "--edge-port"),
        (gateway_grpc_port, gateways, "--gateway-grpc-port"),
    ):
        if first + count - 1 > 65535:
            fail(f"{what} {first} leaves no room for {count} processes")
    url = prepare_database(settings)

    async def _boot() -> tuple[bool, str | None, int]:
        from defguard.core.console import ensure_local_gateways

        db = Database(url, pool_size=1)
        try:
            pw = settings.default_admin_password
            result = await bootstrap(db, pw.get_secret_value() if pw else None)
            wg_port = (
                await ensure_local_gateways(db, gateways, gateway_grpc_port) if gateways else 0
            )
            return result.admin_created, result.generated_password, wg_port
        finally:
            await db.dispose()

    created, generated, wg_port = asyncio.run(_boot())
    host = "127.0.0.1" if bind in ("0.0.0.0", "::") else bind  # noqa: S104
    edge_urls = [f"http://{host}:{edge_port + i}" for i in range(edges)]
    grpc_urls = [f"http://{host}:{edge_grpc_port + i}" for i in range(edges)]
    base = dict(os.environ)
    base["DEFGUARD_DATABASE_URL"] = url.render_as_string(hide_password=False)
    base["DEFGUARD_HTTP_BIND_ADDRESS"] = bind
    children: list[tuple[str, str, subprocess.Popen[bytes]]] = []
    envs: list[dict[str, str]] = []
    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True
        for _, _, child in children:
            if child.poll() is None:
                child.terminate()

    def _supervise(
        procs: list[tuple[str, str, subprocess.Popen[bytes]]], environments: list[dict[str, str]]
    ) -> None:
        """Restart a process that dies, as systemd or Kubernetes would; stop on Ctrl+C/SIGTERM."""
        restarts: list[float] = []
        while not stopping:
            time.sleep(0.5)
            for index, (name, where, proc) in enumerate(procs):
                if proc.poll() is None or stopping:
                    continue
                now = time.monotonic()
                restarts[:] = [t for t in restarts if now - t < 60] + [now]
                if len(restarts) > 10:
                    typer.echo(f"error: {name} keeps failing; stopping", err=True)
                    _stop()
                    break
                typer.echo(f"  {name} exited ({proc.returncode}); restarting", err=True)
                command = name.split()[0].lower()
                fresh = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                    [sys.executable, "-m", "defguard", command], env=environments[index]
                )
                procs[index] = (name, where, fresh)
        for _, _, proc in procs:
            proc.wait()

    signal.signal(signal.SIGTERM, _stop)
    try:
        for i in range(edges):
            env = dict(base)
            env["DEFGUARD_PROXY_HTTP_PORT"] = str(edge_port + i)
            env["DEFGUARD_PROXY_GRPC_PORT"] = str(edge_grpc_port + i)
            env["DEFGUARD_GRPC_BIND_ADDRESS"] = bind
            proc = subprocess.Popen([sys.executable, "-m", "defguard", "edge"], env=env)
            children.append((f"Edge {i + 1}", edge_urls[i], proc))
            envs.append(env)
        for i in range(gateways):
            env = dict(base)
            env.pop("DEFGUARD_DATABASE_URL", None)  # a gateway needs no database
            env["DEFGUARD_GRPC_PORT"] = str(gateway_grpc_port + i)
            env["DEFGUARD_GRPC_BIND_ADDRESS"] = "127.0.0.1"
            env["DEFGUARD_IFNAME"] = f"dgup{i + 1}"
            env["DEFGUARD_GATEWAY_NAME"] = f"local-gateway-{i + 1}"
            # Gateways of one location on one host cannot share the WireGuard port.
            env["DEFGUARD_WG_LISTEN_PORT"] = str(wg_port + i)
            proc = subprocess.Popen([sys.executable, "-m", "defguard", "gateway"], env=env)
            children.append(
                (
                    f"Gateway {i + 1}",
                    f"127.0.0.1:{gateway_grpc_port + i} (gRPC), UDP {wg_port + i}",
                    proc,
                )
            )
            envs.append(env)
        for i in range(cores):
            env = dict(base)
            env["DEFGUARD_HTTP_PORT"] = str(port + i)
            env["DEFGUARD_URL"] = env.get("DEFGUARD_URL", f"http://{host}:{port}")
            if edges:
                env["DEFGUARD_PROXY_URL"] = ",".join(grpc_urls)
                env.setdefault("DEFGUARD_ENROLLMENT_URL", edge_urls[0])
            proc = subprocess.Popen([sys.executable, "-m", "defguard", "core"], env=env)
            children.append((f"Core {i + 1}", f"http://{host}:{port + i}", proc))
            envs.append(env)
        for name, where, proc in children:
            if name.startswith("Gateway"):
                continue  # no HTTP endpoint; the supervisor notices an exit
            if not _wait_healthy(where, proc):
                _stop()
                fail("a process did not start; see the log above")
        if generated:
            login = f"admin / {generated}   (generated now; shown only this once)"
        elif created:
            login = "admin / the password in DEFGUARD_DEFAULT_ADMIN_PASSWORD"
        else:
            login = "admin / the password set at first start (reset: defguard admin reset-password admin)"
        admin_url = f"http://{host}:{port}"
        parts = "".join(
            f"    {name + ':':<11} {where}"
            + (f"  (gRPC {grpc_urls[int(name.split()[1]) - 1]})" if name.startswith("Edge") else "")
            + "\n"
            for name, where, _ in children
        )
        database = (
            "embedded PostgreSQL in " + str(settings.data_dir)
            if not settings.is_external
            else "external PostgreSQL"
        )
        typer.echo(
            "\n  Defguard is up.\n"
            f"    Admin console: {admin_url}/\n"
            f"    Admin API:  {admin_url}/api/v1  (interactive docs: {admin_url}/api/v1/docs)\n"
            f"    Login:      {login}\n"
            + (
                f"    Enrollment: {edge_urls[0]}/  (enrollment pages and the public Edge API)\n"
                if edges
                else ""
            )
            + parts
            + f"    Database:   {database}\n"
            "  Press Ctrl+C to stop.\n"
        )
        _supervise(children, envs)
    except KeyboardInterrupt:
        _stop()
        for _, _, child in children:
            child.wait()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
