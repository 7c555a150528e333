"""`defguard gateway`: bring up the interface, serve Cores, stop cleanly.

Start-up: an existing, usable interface of the configured name is adopted as
it is (its peers are read back, so the first full state from a Core changes
nothing that already matches); otherwise PRE_UP runs, the interface is
created, and POST_UP runs. Then the gRPC server, the optional health endpoint
and the stats loop start.

Shutdown (SIGTERM or SIGINT): the gRPC server stops, then PRE_DOWN runs, the
interface and the firewall table are removed, and POST_DOWN runs, the way
`wg-quick down` leaves a host. A stopped Gateway is an admin's decision, and an
interface left behind would keep admitting the peers of its last state (revoked
devices included) with nothing to update it; the next start gets the current
state from a Core. Losing every Core is different: the Gateway keeps running
and keeps the interface, peers and firewall exactly as they are.
`DEFGUARD_KEEP_INTERFACE=true` skips the removal (and the down hooks), for
restarts that must not interrupt tunnels, such as upgrades; the restarted
Gateway adopts the interface.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import uuid
from collections.abc import Awaitable
from typing import Any

import grpc

from defguard.config import GatewaySettings
from defguard.gateway.health import HealthServer
from defguard.gateway.hooks import HookError, run_down_hook, run_hook
from defguard.gateway.nftables import Firewall, FirewallError
from defguard.gateway.server import GatewayService, Synchronizer
from defguard.gateway.state import GatewayState
from defguard.gateway.stats import build_batch, collect_periodically
from defguard.gateway.tls import TlsConfigError, server_credentials
from defguard.gateway.wireguard import WireGuardBackend, WireGuardError, select_backend
from defguard.logs import get_logger
from defguard.proto import gateway_pb2, gateway_pb2_grpc

log = get_logger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
SHUTDOWN_GRACE = 2.0
STEP_LIMIT = 5.0
SERVER_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # Notice a vanished Core (host down, cable cut) within ~15 s instead of the TCP timeout.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_ping_strikes", 0),
    # A second Gateway on the same port must fail to start, not silently share the port.
    ("grpc.so_reuseport", 0),
]


class StartupError(RuntimeError):
    pass


def listen_address(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def add_port(
    server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None
) -> None:
    """Plain or TLS, as configured; a port that cannot be bound stops the start-up."""
    try:
        if credentials is None:
            server.add_insecure_port(address)
        else:
            server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        raise StartupError(f"cannot listen on {address}: {exc}") from exc


def health_host(host: str) -> str:
    return host.strip("[]")


async def prepare_interface(backend: WireGuardBackend, settings: GatewaySettings) -> GatewayState:
    """Adopt a usable interface or create one between the up hooks; the state it holds."""
    if await backend.usable():
        await backend.up()
        interface, peers = await backend.read_state()
        log.info(
            "adopted existing interface",
            interface=backend.ifname,
            backend=backend.kind,
            peers=len(peers),
        )
        return GatewayState(interface=interface, peers=peers)
    await run_hook("PRE_UP", settings.pre_up, backend.ifname)
    await backend.create()
    await run_hook("POST_UP", settings.post_up, backend.ifname)
    return GatewayState()


async def within(seconds: float, step: str, awaitable: Awaitable[object]) -> bool:
    """Await one shutdown step for at most `seconds`; whether it finished."""
    try:
        async with asyncio.timeout(seconds):
            await awaitable
    except TimeoutError:
        log.warning("shutdown step timed out", step=step, seconds=seconds)
        return False
    log.debug("shutdown step done", step=step)
    return True


async def teardown(
    backend: WireGuardBackend, firewall: Firewall, settings: GatewaySettings
) -> None:
    await run_down_hook("PRE_DOWN", settings.pre_down, backend.ifname)
    try:
        await backend.remove()
    except WireGuardError as exc:
        log.error("removing the interface failed", error=str(exc))
    else:
        log.debug("interface removed", interface=backend.ifname)
    try:
        await firewall.remove()
    except FirewallError as exc:
        log.error("removing the firewall failed", error=str(exc))
    await run_down_hook("POST_DOWN", settings.post_down, backend.ifname)


async def serve(settings: GatewaySettings, stop: asyncio.Event | None = None) -> None:
    """Run until `stop` is set (or SIGTERM/SIGINT when no event is given)."""
    loop = asyncio.get_running_loop()
    if stop is None:
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

    try:
        credentials = server_credentials(settings.grpc_cert, settings.grpc_key, settings.grpc_ca)
    except TlsConfigError as exc:
        raise StartupError(str(exc)) from exc
    ifname = settings.ifname
    backend = await select_backend(ifname, force_userspace=settings.userspace)
    firewall = Firewall(ifname, enabled=not settings.disable_fw_mgmt)
    try:
        state = await prepare_interface(backend, settings)
    except (HookError, WireGuardError, OSError) as exc:
        raise StartupError(f"cannot bring up {ifname}: {exc}") from exc

    sync = Synchronizer(backend, firewall, state)
    service = GatewayService(
        sync,
        name=settings.gateway_name or socket.gethostname(),
        ifname=ifname,
        instance_id=str(uuid.uuid4()),
        stats_ack_timeout=settings.stats_ack_timeout,
        listen_port=settings.wg_listen_port,
    )
    server = grpc.aio.server(options=SERVER_OPTIONS)
    gateway_pb2_grpc.add_GatewayServicer_to_server(service, server)
    health: HealthServer | None = None
    tasks: list[asyncio.Task[None]] = []
    try:
        address = listen_address(settings.grpc_bind_address, settings.grpc_port)
        add_port(server, address, credentials)
        await server.start()
        mode = "plain" if credentials is None else "mtls" if settings.grpc_ca else "tls"
        log.info(
            "gateway listening",
            address=address,
            transport=mode,
            interface=ifname,
            backend=backend.kind,
            firewall="disabled" if settings.disable_fw_mgmt else "nftables",
        )
        if settings.health_port:
            health = HealthServer(
                lambda: service.cores_connected,
                health_host(settings.grpc_bind_address),
                settings.health_port,
            )
            try:
                await health.start()
            except OSError as exc:
                raise StartupError(f"cannot serve /health: {exc}") from exc

        async def collect() -> gateway_pb2.StatsBatch | None:
            location_id = sync.state.location_id
            if not location_id:
                return None
            return build_batch(location_id, await backend.peer_stats())

        tasks = [
            loop.create_task(service.dispatcher.run()),
            loop.create_task(
                collect_periodically(settings.stats_period, collect, service.dispatcher)
            ),
        ]
        await stop.wait()
        log.info("gateway stopping")
    finally:
        # Also on a failed start: an interface this run created is not left behind.
        # The steps before teardown are bounded: a stuck one must not keep the interface up.
        await within(SHUTDOWN_GRACE + STEP_LIMIT, "grpc server", server.stop(SHUTDOWN_GRACE))
        for task in tasks:
            task.cancel()
        await within(STEP_LIMIT, "background tasks", asyncio.gather(*tasks, return_exceptions=True))
        if health is not None:
            await within(STEP_LIMIT, "health endpoint", health.stop())
        # Wait for a state being applied to finish, so teardown does not race it.
        locked = await within(STEP_LIMIT, "state in progress", sync.lock.acquire())
        try:
            if settings.keep_interface:
                log.info("keeping the interface and firewall", interface=ifname)
            else:
                # Not bounded here: its hooks and commands each have their own time limit.
                await teardown(backend, firewall, settings)
        finally:
            if locked:
                sync.lock.release()
        await backend.close()
    log.info("gateway stopped")


def run_gateway(settings: GatewaySettings) -> None:
    try:
        asyncio.run(serve(settings))
    except StartupError as exc:
        log.error("gateway failed to start", error=str(exc))
        raise SystemExit(1) from exc
