"""`defguard edge`: the public HTTP server and the gRPC server Cores connect to, in one process.

The Edge never opens a connection towards Core: it listens, logs that it
awaits a Core, and serves client requests once a Core has connected and sent
its settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import uuid
from typing import Any

import grpc
import structlog
import uvicorn

from defguard import eventloop
from defguard.config import EdgeSettings
from defguard.edge.app import create_edge_app
from defguard.edge.router import CoreRouter
from defguard.edge.service import EdgeService
from defguard.gateway.main import StartupError, add_port, listen_address
from defguard.gateway.tls import TlsConfigError, server_credentials
from defguard.proto import edge_pb2_grpc

log = structlog.get_logger("defguard.edge")

SHUTDOWN_GRACE = 2.0
SERVER_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
    # Notice a vanished Core within ~15 s instead of the TCP timeout, and let
    # Cores ping as often as they do (core/links/protocol.py KEEPALIVE_MS).
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_ping_strikes", 0),
]


async def serve(settings: EdgeSettings, stop: asyncio.Event | None = None) -> None:
    """Run until `stop` is set (or SIGTERM/SIGINT when no event is given)."""
    loop = asyncio.get_running_loop()
    if stop is None:
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    try:
        credentials = server_credentials(
            settings.proxy_grpc_cert,
            settings.proxy_grpc_key,
            settings.proxy_grpc_ca,
            env="DEFGUARD_PROXY_GRPC",
        )
    except TlsConfigError as exc:
        raise StartupError(str(exc)) from exc

    instance_id = str(uuid.uuid4())
    router = CoreRouter()
    service = EdgeService(router, name=socket.gethostname(), instance_id=instance_id)
    log.info("Starting Defguard edge server")
    server = grpc.aio.server(options=SERVER_OPTIONS)
    edge_pb2_grpc.add_EdgeServicer_to_server(service, server)
    grpc_address = listen_address(settings.grpc_bind_address, settings.proxy_grpc_port)
    add_port(server, grpc_address, credentials)
    await server.start()
    mode = "plain" if credentials is None else "mtls" if settings.proxy_grpc_ca else "tls"
    log.info(f"gRPC server is listening on {grpc_address}", transport=mode)

    config = uvicorn.Config(
        create_edge_app(settings, router, instance_id),
        host=settings.http_bind_address,
        port=settings.proxy_http_port,
        log_config=None,
        access_log=False,
        lifespan="off",
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=SHUTDOWN_GRACE,
    )
    http = uvicorn.Server(config)
    http_task = loop.create_task(http.serve())
    try:
        while not http.started:
            if http_task.done():
                raise StartupError(
                    f"cannot listen on {listen_address(settings.http_bind_address, settings.proxy_http_port)}"
                )
            await asyncio.sleep(0.02)
        log.info(
            "Web server is listening on "
            + listen_address(settings.http_bind_address, settings.proxy_http_port)
        )
        log.info("awaiting a connection from Defguard Core")
        stop_task = loop.create_task(stop.wait())
        await asyncio.wait([stop_task, http_task], return_when=asyncio.FIRST_COMPLETED)
        stop_task.cancel()
        log.info("edge stopping")
    finally:
        http.should_exit = True
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await http_task
        await server.stop(SHUTDOWN_GRACE)


def run_edge(settings: EdgeSettings) -> None:
    try:
        eventloop.run(serve(settings))
    except StartupError as exc:
        log.error("edge failed to start", error=str(exc))
        raise SystemExit(1) from exc
