"""The Edge's gRPC service: Cores connect here and serve the requests the Edge receives."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc
import structlog

from defguard import __version__
from defguard.core.links.protocol import Batcher, compatible
from defguard.edge.router import CoreConnection, CoreRouter
from defguard.proto import common_pb2, edge_pb2, edge_pb2_grpc

log = structlog.get_logger("defguard.edge")

COMPONENT = "edge"
INCOMPATIBLE_VERSION = "incompatible_version"
WRITER_DRAIN_TIMEOUT = 2.0
# Requests sent together in one message when several are queued.
MAX_BATCH = 64


class EdgeService(edge_pb2_grpc.EdgeServicer):
    def __init__(self, router: CoreRouter, *, name: str, instance_id: str) -> None:
        self.router = router
        self.name = name
        self.sender = common_pb2.Peer(
            component=COMPONENT, version=__version__, instance_id=instance_id
        )

    def _message(self, **payload: object) -> edge_pb2.EdgeToCore:
        return edge_pb2.EdgeToCore(sender=self.sender, **payload)  # type: ignore[arg-type]

    async def _writer(self, connection: CoreConnection, context: grpc.aio.ServicerContext) -> None:
        """The only task that writes to the stream: grpc.aio allows one write at a time."""
        batcher = Batcher()
        try:
            while True:
                message = await connection.queue.get()
                if message is None:
                    return
                if message.WhichOneof("payload") != "request":
                    await context.write(message)
                    continue
                batch = [message.request]
                await batcher.pause()
                after: edge_pb2.EdgeToCore | None = None
                ended = False
                while len(batch) < MAX_BATCH and not connection.queue.empty():
                    queued = connection.queue.get_nowait()
                    if queued is not None and queued.WhichOneof("payload") == "request":
                        batch.append(queued.request)
                        continue
                    after, ended = queued, queued is None
                    break
                if len(batch) == 1:
                    await context.write(message)
                else:
                    await context.write(
                        self._message(requests=edge_pb2.EdgeRequestBatch(requests=batch))
                    )
                batcher.sent()
                if after is not None:
                    await context.write(after)
                if ended:
                    return
        except (grpc.RpcError, grpc.aio.UsageError, RuntimeError) as exc:
            log.debug("writing to Core failed", core=connection.address, error=str(exc))
            self.router.remove(connection)

    async def Connect(
        self,
        request_iterator: AsyncIterator[edge_pb2.CoreToEdge],
        context: grpc.aio.ServicerContext,
    ) -> None:
        connection = CoreConnection(address=context.peer())
        log.info("RPC client connected from: " + connection.address, core=connection.address)
        writer = asyncio.get_running_loop().create_task(self._writer(connection, context))
        connection.send(self._message(hello=edge_pb2.EdgeHello(name=self.name)))
        reason = "stream closed by Core"
        try:
            async for message in request_iterator:
                if not connection.core_id:
                    if message.sender.component != "core" or not compatible(
                        __version__, message.sender.version
                    ):
                        reason = (
                            f"incompatible peer {message.sender.component} {message.sender.version}"
                        )
                        connection.send(
                            self._message(
                                error=common_pb2.ProtocolError(
                                    code=INCOMPATIBLE_VERSION,
                                    message=f"edge {__version__} cannot serve core {message.sender.version}",
                                )
                            )
                        )
                        log.warning("rejecting Core", core=connection.address, reason=reason)
                        break
                    connection.core_id = message.sender.instance_id
                    connection.version = message.sender.version
                kind = message.WhichOneof("payload")
                if kind == "response":
                    connection.resolve(message.response)
                elif kind == "responses":
                    for response in message.responses.responses:
                        connection.resolve(response)
                elif kind == "settings":
                    first = not self.router.provisioned
                    self.router.apply_settings(connection, message.settings)
                    if connection.link_id not in self.router.connections:
                        self.router.add(connection)
                        log.info(
                            "Core ready",
                            core=connection.address,
                            instance=connection.core_id,
                            version=connection.version,
                            cores_connected=len(self.router.connections),
                        )
                    if first:
                        log.info("provisioned by Core: serving client requests")
                elif kind == "error":
                    log.warning(
                        "Core reported an error",
                        core=connection.address,
                        code=message.error.code,
                        message=message.error.message,
                    )
                    if message.error.code == INCOMPATIBLE_VERSION:
                        reason = message.error.code
                        break
            connection.queue.put_nowait(None)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer, WRITER_DRAIN_TIMEOUT)
        except asyncio.CancelledError:
            reason = "stream cancelled"
            raise
        except Exception as exc:
            reason = f"stream error: {exc}"
        finally:
            self.router.remove(connection)
            writer.cancel()
            log.info(
                "Core disconnected",
                core=connection.address,
                reason=reason,
                cores_connected=len(self.router.connections),
            )
