"""`defguard client ...`: enroll this machine, connect to a location (with MFA), status, disconnect.

Exit status: 0 success, 1 the Edge or the system refused (wrong code, expired
token, `ip` failed), 2 bad input (unknown location, nothing enrolled, a name
that is taken, a weak password given on the command line).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn, TypeVar

import click
import pyotp
import typer

from defguard.client import api
from defguard.client.api import EdgeClient, EdgeError
from defguard.client.state import (
    Instance,
    Location,
    StateError,
    StateStore,
    Tunnel,
    check_ifname,
    default_state_dir,
    find_in,
)
from defguard.client.tunnel import Runner, TunnelError, render_config, tunnel_networks
from defguard.core.users.validation import FieldError, check_password_strength, check_phone
from defguard.wireguard.keys import generate_keypair

client_app = typer.Typer(
    help="Command-line VPN client: enroll this machine, connect to a location (with MFA).",
    no_args_is_help=True,
)

T = TypeVar("T")

CODE_ATTEMPTS = 3
OIDC_POLL_INTERVAL = 5.0
OIDC_WAIT = 300.0
CODE_COMMAND_TIMEOUT = 60.0

StateDir = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        envvar="DEFGUARD_CLIENT_DIR",
        help="Where enrollments, keys and tunnel configs are kept "
        "(default: /var/lib/defguard-client for root, else the user's config directory).",
    ),
]
Ifname = Annotated[
    str,
    typer.Option("--ifname", envvar="DEFGUARD_CLIENT_IFNAME", help="WireGuard interface name."),
]
InstanceOption = Annotated[
    str | None,
    typer.Option("--instance", help="Instance id or name, when several are enrolled."),
]


def fail(message: str) -> NoReturn:
    """Bad input: the same shape and exit status as the rest of the `defguard` command."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def die(message: str) -> NoReturn:
    """The Edge or the system said no: exit status 1."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def note(message: str) -> None:
    typer.echo(message, err=True)


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except StateError as exc:
        fail(str(exc))
    except EdgeError as exc:
        die(str(exc))
    except TunnelError as exc:
        die(str(exc))


def _store(state_dir: Path | None) -> StateStore:
    return StateStore(state_dir or default_state_dir())


def _mfa_method(name: str, option: str) -> int:
    methods = {"totp": api.MFA_TOTP, "email": api.MFA_EMAIL}
    if name.lower() not in methods:
        fail(f"{option}: {name!r} is not one of: totp, email")
    return methods[name.lower()]


# ------------------------------------------------------------------ codes


def run_code_command(command: str, env_extra: dict[str, str]) -> str:
    """A one-time code from a command's standard output (for unattended machines)."""
    env = {**os.environ, **env_extra}
    try:
        result = subprocess.run(  # noqa: S603 - the user's own command, run by their shell
            ["/bin/sh", "-c", command],
            capture_output=True,
            text=True,
            env=env,
            timeout=CODE_COMMAND_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        fail("the code command did not finish within 60 s")
    if result.returncode != 0:
        fail(f"the code command failed ({result.returncode}): {result.stderr.strip()}")
    code = result.stdout.strip()
    if not code:
        fail("the code command printed nothing")
    return code


def ask_code(label: str, command: str | None, env_extra: dict[str, str] | None = None) -> str:
    if command:
        return run_code_command(command, env_extra or {})
    try:
        code = typer.prompt(label).strip()
    except click.exceptions.Abort:
        fail("no code was given (standard input closed)")
    if not code:
        fail("the code is empty")
    return code


def with_code_attempts(
    attempts: int,
    label: str,
    command: str | None,
    submit: Callable[[str], T],
    *,
    retry_on: tuple[int, ...],
    env_extra: dict[str, str] | None = None,
) -> T:
    """Ask for a code and submit it; a rejected code may be retried while attempts remain."""
    for attempt in range(1, attempts + 1):
        code = ask_code(label, command, env_extra)
        try:
            return submit(code)
        except EdgeError as exc:
            if exc.status not in retry_on or attempt == attempts:
                die(f"code rejected: {exc.message or exc}")
            note(f"code rejected: {exc.message or exc}; try again")
    raise AssertionError("unreachable")


# ------------------------------------------------------------------ enroll


def _checked_password(value: str) -> str:
    try:
        check_password_strength(value)
    except FieldError as exc:
        fail(str(exc))
    return value


def _prompt_password() -> str:
    for _ in range(CODE_ATTEMPTS):
        try:
            value = typer.prompt("New password", hide_input=True, confirmation_prompt=True)
        except click.exceptions.Abort:
            fail("--password: no password given (standard input closed)")
        try:
            check_password_strength(value)
        except FieldError as exc:
            note(str(exc))
            continue
        return value
    fail("--password: no acceptable password given")


def _save_response(
    store: StateStore,
    edge_url: str,
    response: api.DeviceConfigResponse,
    private_key: str | None,
    previous: Instance | None = None,
) -> Instance:
    device = response.device or (previous.device if previous else None)
    if device is None:
        raise EdgeError(200, "the Edge returned no device")
    instance = Instance(
        edge_url=edge_url,
        info=response.instance,
        device=device,
        polling_token=response.token or (previous.polling_token if previous else None),
        configs=response.configs,
    )
    store.save_instance(instance, private_key)
    return instance


def _register_mfa(
    edge: EdgeClient, start: api.EnrollmentStart, method: int, command: str | None
) -> None:
    try:
        secret = edge.register_mfa_start(method)
    except EdgeError as exc:
        if exc.status == 400 and "already enabled" in exc.message.lower():
            note("MFA is already set up for this account")
            return
        raise
    env: dict[str, str] = {}
    if method == api.MFA_TOTP:
        if not secret:
            raise EdgeError(200, "the Edge returned no TOTP secret")
        uri = pyotp.TOTP(secret).provisioning_uri(
            name=start.user.login, issuer_name=start.instance.name
        )
        typer.echo("Set up TOTP in your authenticator app:")
        typer.echo(f"  secret: {secret}")
        typer.echo(f"  URI:    {uri}")
        env["DEFGUARD_TOTP_SECRET"] = secret
    else:
        typer.echo(f"A code was sent to {start.user.email}.")
    codes = with_code_attempts(
        CODE_ATTEMPTS,
        "MFA code",
        command,
        lambda code: edge.register_mfa_finish(method, code),
        retry_on=(400,),
        env_extra=env,
    )
    typer.echo("Recovery codes (each works once if you lose the authenticator; keep them safe):")
    for code in codes:
        typer.echo(f"  {code}")


def _summary(instance: Instance) -> None:
    typer.echo(
        f"Device {instance.device.name} (id {instance.device.id}) is enrolled in "
        f"{instance.info.name} as {instance.info.username}."
    )
    if not instance.configs:
        typer.echo("No locations are available to this device yet.")
    for config in instance.configs:
        typer.echo(f"  location {config.network_id} {config.network_name}: {_mfa_label(config)}")


@client_app.command()
def enroll(
    url: Annotated[str, typer.Argument(help="The Edge's public URL (the enrollment link's host).")],
    token: Annotated[str, typer.Argument(help="Enrollment or desktop-activation token.")],
    name: Annotated[
        str | None, typer.Option("--name", help="Device name (default: the host name).")
    ] = None,
    password: Annotated[
        str | None,
        typer.Option(
            "--password",
            envvar="DEFGUARD_CLIENT_PASSWORD",
            help="Password for an account that is not enrolled yet (prompted for when omitted).",
        ),
    ] = None,
    phone: Annotated[str | None, typer.Option("--phone", help="Phone number to store.")] = None,
    mfa_method: Annotated[
        str | None,
        typer.Option(
            "--mfa-method",
            help="Set up MFA with 'totp' or 'email' (TOTP is set up anyway when a location requires MFA).",
        ),
    ] = None,
    mfa_code_command: Annotated[
        str | None,
        typer.Option(
            "--mfa-code-command",
            envvar="DEFGUARD_CLIENT_MFA_CODE_COMMAND",
            help="Shell command printing the MFA code instead of prompting; "
            "it gets the new TOTP secret in $DEFGUARD_TOTP_SECRET.",
        ),
    ] = None,
    state_dir: StateDir = None,
) -> None:
    """Enroll this machine: create its WireGuard key pair and register the device.

    A new account also gets its password (and MFA when required) here; for an
    account that is already enrolled (a desktop-activation token) only the
    device is added, or refreshed if this machine already holds it.
    """
    store = _store(state_dir)
    try:
        edge_url = api.normalize_url(url)
    except ValueError as exc:
        fail(f"URL: {exc}")
    if name is not None and not name.strip():
        fail("--name: must not be empty")
    device_name = (name or socket.gethostname()).strip()
    if phone:
        try:
            check_phone(phone, "--phone")
        except FieldError as exc:
            fail(str(exc))
    if password is not None:
        _checked_password(password)
    method = _mfa_method(mfa_method, "--mfa-method") if mfa_method else None

    with _errors(), EdgeClient(edge_url) as edge:
        start = edge.enrollment_start(token)
        enrolled = start.user.enrolled
        previous = store.load_instance(start.instance.id)
        if method == api.MFA_EMAIL and not start.settings.smtp_configured:
            fail("--mfa-method: e-mail codes are not available on this instance")
        adds_device = previous is None and not start.settings.admin_device_management
        if adds_device and device_name in start.user.device_names:
            fail(f"--name: {start.user.login} already has a device named {device_name!r}")
        if not enrolled and password is None:
            password = _prompt_password()

        if previous is not None:
            # This machine already holds a device here: fetch its configs and a new polling token.
            response = edge.network_info(previous.device.pubkey)
            instance = _save_response(store, edge_url, response, None, previous)
            typer.echo(f"Refreshed the configuration of {instance.info.name}.")
        elif start.settings.admin_device_management:
            if enrolled:
                die("only administrators may add devices on this instance")
            instance = None
            note("Only administrators may add devices on this instance: no device was created.")
        else:
            keys = generate_keypair()
            response = edge.create_device(device_name, keys.public)
            instance = _save_response(store, edge_url, response, keys.private)

        if not enrolled:
            if start.settings.mfa_required or method is not None:
                _register_mfa(edge, start, method or api.MFA_TOTP, mfa_code_command)
            assert password is not None
            edge.activate_user(password, phone)
            typer.echo(f"Account {start.user.login} is activated.")
            if start.final_page_content.strip():
                typer.echo(start.final_page_content.strip())
        if instance is not None:
            _summary(instance)


# ------------------------------------------------------------------ connect


def _mfa_label(config: api.DeviceConfig) -> str:
    return {
        api.MFA_MODE_INTERNAL: "MFA (TOTP or e-mail code)",
        api.MFA_MODE_EXTERNAL: "MFA (external identity provider)",
    }.get(config.mfa_mode, "no MFA")


def _refresh(store: StateStore, instances: list[Instance]) -> list[Instance]:
    """Fresh configs where the Edge answers; the stored ones where it does not."""
    fresh = []
    for instance in instances:
        if not instance.polling_token:
            fresh.append(instance)
            continue
        try:
            with EdgeClient(instance.edge_url, timeout=api.POLL_TIMEOUT) as edge:
                response = edge.poll(instance.polling_token)
        except EdgeError as exc:
            note(
                f"warning: could not refresh {instance.info.name} from {instance.edge_url} "
                f"({exc}); using the stored configuration"
            )
            fresh.append(instance)
            continue
        fresh.append(_save_response(store, instance.edge_url, response, None, instance))
    return fresh


def _pick_location(pool: list[Location], query: str) -> Location:
    matches = find_in(pool, query)
    if not matches:
        known = ", ".join(f"{loc.config.network_id} {loc.config.network_name}" for loc in pool)
        fail(f"unknown location {query!r}" + (f"; known: {known}" if known else "; none known"))
    if len(matches) > 1:
        which = ", ".join(
            f"{loc.config.network_name} in {loc.instance.info.name}" for loc in matches
        )
        fail(f"location {query!r} is ambiguous ({which}); choose one with --instance")
    return matches[0]


def _instances(store: StateStore, instance: str | None) -> list[Instance]:
    instances = store.instances()
    if not instances:
        fail(f"nothing is enrolled in {store.root}; run `defguard client enroll URL TOKEN` first")
    if instance is not None:
        instances = [i for i in instances if instance in (i.id, i.info.name)]
        if not instances:
            fail(f"--instance: no enrolled instance {instance!r}")
    return instances


def _internal_mfa(
    edge: EdgeClient, location: Location, method: int, code: str | None, command: str | None
) -> str:
    config, device = location.config, location.instance.device
    start = edge.client_mfa_start(config.network_id, device.pubkey, method)
    if method == api.MFA_EMAIL:
        note("A code was sent by e-mail.")

    def submit(value: str) -> str:
        return edge.client_mfa_finish(start.token, value).preshared_key

    if code is not None:
        try:
            return submit(code)
        except EdgeError as exc:
            die(f"code rejected: {exc.message or exc}")
    return with_code_attempts(CODE_ATTEMPTS, "MFA code", command, submit, retry_on=(401,))


def _external_mfa(edge: EdgeClient, location: Location) -> str:
    config, instance = location.config, location.instance
    start = edge.client_mfa_start(config.network_id, instance.device.pubkey, api.MFA_OIDC)
    link = f"{api.normalize_url(instance.info.proxy_url)}openid/mfa?token={start.token}"
    typer.echo("Sign in with your identity provider in a browser (on any machine):")
    typer.echo(f"  {link}")
    deadline = time.monotonic() + OIDC_WAIT
    while True:
        try:
            return edge.client_mfa_finish(start.token).preshared_key
        except EdgeError as exc:
            if exc.status != 428:
                raise
        if time.monotonic() > deadline:
            die("the sign-in was not completed within 5 minutes")
        time.sleep(OIDC_POLL_INTERVAL)


@client_app.command()
def connect(
    location: Annotated[str, typer.Argument(help="Location name or id.")],
    code: Annotated[
        str | None, typer.Option("--code", help="MFA code (prompted for when needed and omitted).")
    ] = None,
    method: Annotated[
        str, typer.Option("--method", help="MFA method for internal MFA: totp or email.")
    ] = "totp",
    code_command: Annotated[
        str | None,
        typer.Option(
            "--code-command",
            envvar="DEFGUARD_CLIENT_MFA_CODE_COMMAND",
            help="Shell command printing the MFA code instead of prompting.",
        ),
    ] = None,
    ifname: Ifname = "dg0",
    instance: InstanceOption = None,
    all_traffic: Annotated[
        bool, typer.Option("--all-traffic", help="Route all traffic through the tunnel.")
    ] = False,
    userspace: Annotated[
        bool,
        typer.Option(
            "--userspace",
            envvar="DEFGUARD_CLIENT_USERSPACE",
            help="Use wireguard-go even when the kernel has WireGuard.",
        ),
    ] = False,
    state_dir: StateDir = None,
) -> None:
    """Bring up the tunnel to a location, asking for an MFA code when the location requires one."""
    store = _store(state_dir)
    mfa_method = _mfa_method(method, "--method")
    with _errors():
        check_ifname(ifname)
        instances = _refresh(store, _instances(store, instance))
        pool = [Location(i, c) for i in instances for c in i.configs]
        target = _pick_location(pool, location)
        config, inst = target.config, target.instance
        tunnels = store.tunnels()
        for tunnel in tunnels:
            if tunnel.ifname == ifname:
                fail(f"{ifname} is already connected to {tunnel.location_name}; disconnect first")
            if tunnel.instance_id == inst.id and tunnel.location_id == config.network_id:
                fail(f"{config.network_name} is already connected on {tunnel.ifname}")
        policy = inst.info.traffic_policy
        if all_traffic and policy == api.TRAFFIC_DISABLE_ALL:
            fail("--all-traffic: this instance does not allow routing all traffic")
        full = all_traffic or policy == api.TRAFFIC_FORCE_ALL
        if full and any(t.full_tunnel for t in tunnels):
            fail("another tunnel already routes all traffic")
        private_key = store.private_key(inst.id)

        psk: str | None = None
        if config.mfa_mode in (api.MFA_MODE_INTERNAL, api.MFA_MODE_EXTERNAL):
            with EdgeClient(inst.edge_url) as edge:
                if config.mfa_mode == api.MFA_MODE_INTERNAL:
                    psk = _internal_mfa(edge, target, mfa_method, code, code_command)
                else:
                    psk = _external_mfa(edge, target)

        text = render_config(config, private_key, preshared_key=psk, all_traffic=full)
        routes = tunnel_networks(config, all_traffic=full)
        runner = Runner()
        backend = runner.bring_up(ifname, text, config.addresses, routes, userspace=userspace)
        record = Tunnel(
            ifname=ifname,
            instance_id=inst.id,
            location_id=config.network_id,
            location_name=config.network_name,
            backend=backend,
            addresses=config.addresses,
            routes=routes,
            full_tunnel=full,
            mfa=psk is not None,
            connected_at=int(time.time()),
        )
        try:
            store.save_tunnel(record, text)
        except OSError as exc:
            runner.tear_down(ifname, routes)
            store.forget_tunnel(ifname)
            die(f"cannot save the tunnel's state: {exc}")
    typer.echo(
        f"Connected to {config.network_name} on {ifname} "
        f"({', '.join(config.addresses)}; routes: {', '.join(routes) or 'none'})."
    )
    if config.dns:
        note(f"DNS is not changed by this client; the location's DNS servers are {config.dns}.")


# ------------------------------------------------------------------ status / disconnect


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"


def _ago(timestamp: int, now: float) -> str:
    if timestamp <= 0:
        return "never"
    return f"{max(0, int(now - timestamp))} s ago"


@client_app.command()
def status(state_dir: StateDir = None) -> None:
    """Enrolled instances, this device, its locations and the tunnels that are up."""
    store = _store(state_dir)
    with _errors():
        instances = store.instances()
        tunnels = store.tunnels()
    if not instances:
        typer.echo(f"Nothing is enrolled (state directory {store.root}).")
        return
    by_location = {(t.instance_id, t.location_id): t for t in tunnels}
    for inst in instances:
        info = inst.info
        typer.echo(f"Instance {info.name} ({info.id}), Edge {inst.edge_url}, user {info.username}")
        typer.echo(
            f"  device {inst.device.name} (id {inst.device.id}), public key {inst.device.pubkey}"
        )
        if not inst.configs:
            typer.echo("  no locations")
        for config in inst.configs:
            tunnel = by_location.get((inst.id, config.network_id))
            state = f"connected on {tunnel.ifname}" if tunnel else "disconnected"
            typer.echo(
                f"  location {config.network_id} {config.network_name}: {config.assigned_ip} "
                f"via {config.endpoint}, {_mfa_label(config)}, {state}"
            )
    runner = Runner()
    now = time.time()
    for tunnel in tunnels:
        head = f"{tunnel.ifname}: {tunnel.location_name}, {tunnel.backend} WireGuard"
        try:
            peers = runner.peers(tunnel.ifname)
        except TunnelError:
            typer.echo(f"{head}, interface is gone (run `defguard client disconnect`)")
            continue
        for peer in peers:
            typer.echo(
                f"{head}, endpoint {peer.endpoint or 'unknown'}, "
                f"latest handshake {_ago(peer.latest_handshake, now)}, "
                f"received {_size(peer.rx_bytes)}, sent {_size(peer.tx_bytes)}"
            )
        if not peers:
            typer.echo(f"{head}, no peer configured")


@client_app.command()
def disconnect(
    location: Annotated[
        str | None, typer.Argument(help="Location name or id (default: every tunnel).")
    ] = None,
    ifname: Annotated[
        str | None, typer.Option("--ifname", help="Only the tunnel on this interface.")
    ] = None,
    state_dir: StateDir = None,
) -> None:
    """Bring tunnels down and delete their configs."""
    store = _store(state_dir)
    with _errors():
        tunnels = store.tunnels()
        if ifname is not None:
            check_ifname(ifname)
            tunnels = [t for t in tunnels if t.ifname == ifname]
        if location is not None:
            pool = [Location(i, c) for i in store.instances() for c in i.configs]
            known = find_in(pool, location)
            wanted = {(loc.instance.id, loc.config.network_id) for loc in known}
            by_name = [t for t in tunnels if t.location_name == location]
            if not known and not by_name:
                fail(f"unknown location {location!r}")
            tunnels = [
                t for t in tunnels if (t.instance_id, t.location_id) in wanted or t in by_name
            ]
        if not tunnels:
            typer.echo("Not connected.")
            return
        runner = Runner()
        for tunnel in tunnels:
            runner.tear_down(tunnel.ifname, tunnel.routes)
            store.forget_tunnel(tunnel.ifname)
            typer.echo(f"Disconnected {tunnel.location_name} ({tunnel.ifname}).")
