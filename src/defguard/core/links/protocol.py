"""What both ends of a link agree on: who is speaking, which versions fit, how to dial."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc

from defguard import __version__
from defguard.config import CoreSettings
from defguard.proto import common_pb2

COMPONENT = "core"
INCOMPATIBLE_VERSION = "incompatible_version"

# A dead peer behind a silent network is noticed through HTTP/2 pings. Gateways
# must accept pings this often (server option
# `grpc.http2.min_ping_interval_without_data_ms` at or below this value).
KEEPALIVE_MS = 60_000
KEEPALIVE_TIMEOUT_MS = 20_000


# The one writer of a busy link stream waits this long before sending, so the
# requests (or answers) of the same millisecond travel in one gRPC message:
# each message costs both ends far more than its size. A link that sent
# nothing for BUSY_GAP counts as idle and sends at once.
BATCH_WINDOW = 0.001
BUSY_GAP = 0.005


class Batcher:
    """When a link's writer should send what it has."""

    def __init__(self) -> None:
        self.last_sent = 0.0

    async def pause(self) -> None:
        """Before collecting a batch: a moment when busy, one loop turn when idle."""
        loop = asyncio.get_running_loop()
        busy = loop.time() - self.last_sent < BUSY_GAP
        await asyncio.sleep(BATCH_WINDOW if busy else 0)

    def sent(self) -> None:
        self.last_sent = asyncio.get_running_loop().time()


def sender(core_id: str) -> common_pb2.Peer:
    return common_pb2.Peer(component=COMPONENT, version=__version__, instance_id=core_id)


def _parts(version: str) -> tuple[int, int] | None:
    try:
        major, minor, *_ = (version.split("+")[0].split("-")[0] + ".0.0").split(".")
        return int(major), int(minor)
    except ValueError:
        return None


def compatible(ours: str, theirs: str) -> bool:
    """Semantic versioning: the same major version (and minor, before 1.0) speak the same protocol."""
    a, b = _parts(ours), _parts(theirs)
    if a is None or b is None:
        return False
    if a[0] == 0 or b[0] == 0:
        return a == b
    return a[0] == b[0]


def grpc_target(address: str, port: int) -> str:
    host = f"[{address}]" if ":" in address and not address.startswith("[") else address
    return f"{host}:{port}"


def _read(path: Path | None) -> bytes | None:
    return path.read_bytes() if path is not None else None


def open_channel(
    address: str, port: int, settings: CoreSettings, ca: Path | None
) -> grpc.aio.Channel:
    """Plain gRPC unless a CA or a client certificate is configured; then TLS, mutual with a cert.

    `ca` verifies the server: `DEFGUARD_GATEWAY_GRPC_CA` for gateways,
    `DEFGUARD_PROXY_GRPC_CA` for Edges.
    """
    target = grpc_target(address, port)
    options = [
        ("grpc.keepalive_time_ms", KEEPALIVE_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 0),
        # Each attempt is ours to schedule (and log); no hidden reconnect backoff.
        ("grpc.initial_reconnect_backoff_ms", 1000),
        ("grpc.max_reconnect_backoff_ms", 1000),
    ]
    if ca is None and settings.core_client_cert is None:
        return grpc.aio.insecure_channel(target, options=options)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read(ca),
        private_key=_read(settings.core_client_key),
        certificate_chain=_read(settings.core_client_cert),
    )
    return grpc.aio.secure_channel(target, credentials, options=options)
