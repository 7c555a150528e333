"""What every link of a Core has in common, whatever it links to.

A link is its own task that survives anything its peer does: it connects,
converses until the stream breaks, records the disconnection, waits and
tries again, forever. Gateway links and Edge links differ only in the
conversation, so the life around it is written once here: both log each
attempt the same way (`Connecting to gateway` / `Connecting to proxy`),
back off the same way from a peer whose version will not change by itself,
and keep their row in `gateway_link` / `proxy_link` the same way.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar, Protocol

import grpc
import structlog

from defguard.config import CoreSettings
from defguard.core.links.records import LinkRecords
from defguard.db.engine import Database

log = structlog.get_logger("defguard.core.links")

HELLO_TIMEOUT = 10.0
# An incompatible peer will not change by itself; ask less often.
INCOMPATIBLE_BACKOFF = 6


class LinkClosed(Exception):
    """The peer ended the stream or broke the protocol; reconnect after the usual delay."""


class IncompatibleVersion(Exception):
    """One side cannot talk to the other; retry, but rarely."""


async def cancel_and_wait(task: asyncio.Task[None]) -> None:
    """Cancel a task and wait for it to finish.

    `asyncio.wait` rather than awaiting the task under `suppress(CancelledError)`:
    the latter would also swallow a cancellation of the *caller*, which then
    keeps running after it was told to stop.
    """
    task.cancel()
    await asyncio.wait([task])


class Target(Protocol):
    """The fields of a link's row that every link uses."""

    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def address(self) -> str: ...
    @property
    def port(self) -> int: ...


class Link:
    """One Core's link to one peer; subclasses hold the conversation (`_session`)."""

    kind: ClassVar[str]  # "gateway" or "proxy": the log's words and the link table
    link_records: ClassVar[LinkRecords]

    def __init__(
        self, target: Target, *, db: Database, settings: CoreSettings, core_id: str
    ) -> None:
        self.target = target
        self.db = db
        self.settings = settings
        self.core_id = core_id
        self.connected = False
        self._task: asyncio.Task[None] | None = None

    @property
    def log(self) -> Any:
        return log.bind(
            **{self.kind: self.target.name, f"{self.kind}_id": self.target.id},
            address=f"{self.target.address}:{self.target.port}",
        )

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"{self.kind}-link-{self.target.id}")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    async def _run(self) -> None:
        """Connect, converse until it breaks, clean up, wait, again; forever."""
        logger, retry = self.log, self.settings.link_retry_seconds
        while True:
            logger.info(f"Connecting to {self.kind}")
            delay = retry
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except IncompatibleVersion as exc:
                logger.error(f"{self.kind} version is incompatible", reason=str(exc))
                delay = retry * INCOMPATIBLE_BACKOFF
            except grpc.aio.AioRpcError as exc:
                logger.warning(
                    f"{self.kind} link failed", code=exc.code().name, details=exc.details()
                )
            except (LinkClosed, TimeoutError) as exc:
                logger.warning(f"{self.kind} link closed", reason=str(exc) or type(exc).__name__)
            except Exception:
                logger.exception(f"{self.kind} link failed")
            finally:
                await self._closed()
            await asyncio.sleep(delay)

    async def _session(self) -> None:
        raise NotImplementedError

    async def _connected(self, version: str, **details: Any) -> None:
        """The peer said hello and is compatible: record the link as up."""
        await self.link_records.connected(self.db, self.target.id, self.core_id, version)
        self.connected = True
        self.log.info(f"{self.kind} connected", version=version, **details)

    async def _closed(self) -> None:
        if self.connected:
            self.connected = False
            self.log.info(f"{self.kind} disconnected")
            try:
                await self.link_records.disconnected(self.db, self.target.id, self.core_id)
            except Exception:
                self.log.exception(f"could not record the {self.kind}'s disconnection")
