"""Run one Edge request on this Core, exactly once across retries on other Cores.

The Edge re-sends a request (same id) to another Core when the first Core's
stream breaks before the answer. Each attempt takes a transaction-scoped
advisory lock on the request id, then looks for a stored result: a second
attempt waits while the first is still running and then finds its result,
or, if the first Core died, finds nothing (its transaction was rolled back
with the connection) and runs the request itself. The result is stored in
the same transaction as the request's effects, so "committed" and "has a
stored result" are one fact.

Features register handlers with `edge_handler("operation")`. A handler runs
inside the request's transaction and must not commit; it raises `EdgeError`
for the spec's error answers. `EdgeError(commit=True)` keeps what the handler
wrote (a counted failed attempt, for instance) together with the stored
error, so a retry neither counts the failure twice nor lets it slip.

The few operations that make up most of the traffic (polls, VPN-client MFA)
register with `direct_handler` instead: they get no ORM session and talk to
PostgreSQL over `Database.direct` with hand-written statements, keeping the
same exactly-once rule inside the SQL functions they call (the
`edge_request_claim` step is the same one the transactional path uses).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import procrastinate
import psycopg
import structlog
from pydantic import BaseModel, ValidationError
from sqlalchemy import delete, text
from sqlalchemy.ext.asyncio import AsyncSession

from defguard import __version__
from defguard.config import CoreSettings
from defguard.core.context import RequestContext
from defguard.core.edge_requests.models import EdgeRequest
from defguard.core.jobs import database_of, tasks
from defguard.core.locations.access import sweep_pending
from defguard.db.base import utcnow
from defguard.db.engine import Database
from defguard.edge import routes
from defguard.proto import edge_pb2

log = structlog.get_logger("defguard.core.edge")

# First half of the two-key advisory lock: keeps these locks apart from others.
REQUEST_LOCK_NAMESPACE = 0x64670004
# Edges retry within seconds; results are kept far longer than any retry.
KEEP_RESULTS = timedelta(hours=1)


@dataclass
class CallInfo:
    operation: str
    body: Any  # the route's validated request model
    request_id: str
    client_ip: str
    user_agent: str | None
    metadata: Mapping[str, str]
    settings: CoreSettings

    @property
    def session_token(self) -> str | None:
        """The token from the route's cookie, as the Edge decrypted it (None without one)."""
        return self.metadata.get(routes.META_SESSION_TOKEN) or None

    @property
    def client_version(self) -> str | None:
        return self.metadata.get(routes.META_CLIENT_VERSION) or None

    @property
    def client_os_family(self) -> str | None:
        return self.metadata.get(routes.META_CLIENT_OS) or None

    @property
    def ctx(self) -> RequestContext:
        """For the activity log, like an admin API request's context."""
        return RequestContext(ip=self.client_ip, user_agent=self.user_agent)


@dataclass
class EdgeCall(CallInfo):
    """A request handled inside its transaction (`db`), with the stored result around it."""

    db: AsyncSession


@dataclass
class DirectCall(CallInfo):
    """A request whose handler keeps its own exactly-once rule, in SQL (see the module doc)."""

    database: Database


@dataclass
class EdgeResult:
    body: Any = None  # JSON-serialisable, or bytes sent as they are; None is an empty body
    status: int = 200
    metadata: dict[str, str] = field(default_factory=dict)
    # Work to do once the request committed (before answering); a failure is
    # logged, not reported: the request itself succeeded.
    after_commit: list[Callable[[Database], Awaitable[None]]] = field(default_factory=list)


class EdgeError(Exception):
    def __init__(self, status: int, message: str, *, commit: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.commit = commit


Handler = Callable[[EdgeCall], Awaitable[EdgeResult]]
DirectHandler = Callable[[DirectCall], Awaitable[EdgeResult]]
HANDLERS: dict[str, Handler] = {}
DIRECT_HANDLERS: dict[str, DirectHandler] = {}


def _check_operation(operation: str) -> None:
    if operation not in routes.BY_OPERATION:
        raise ValueError(f"no public route for operation {operation!r}")


def edge_handler(operation: str) -> Callable[[Handler], Handler]:
    _check_operation(operation)

    def register(fn: Handler) -> Handler:
        HANDLERS[operation] = fn
        return fn

    return register


def direct_handler(operation: str) -> Callable[[DirectHandler], DirectHandler]:
    _check_operation(operation)

    def register(fn: DirectHandler) -> DirectHandler:
        DIRECT_HANDLERS[operation] = fn
        return fn

    return register


def _encode(body: Any) -> bytes:
    if body is None:
        return b""
    if isinstance(body, bytes):  # already encoded (a stored answer)
        return body
    if isinstance(body, BaseModel):
        return body.model_dump_json().encode()
    return json.dumps(body, separators=(",", ":")).encode()


def encode(body: Any) -> bytes:
    """An answer's body as it goes to the Edge (and into `edge_request`)."""
    return _encode(body)


def error_body(message: str) -> bytes:
    return _encode({"error": message})


def _response(request_id: str, status: int, body: bytes, metadata: Mapping[str, str]) -> Any:
    meta = dict(metadata)
    meta[routes.META_CORE_VERSION] = __version__
    return edge_pb2.CoreResponse(request_id=request_id, status=status, body=body, metadata=meta)


def _parse(request: Any) -> tuple[Handler | DirectHandler, BaseModel] | Any:
    """The handler and validated body, or the error response to send instead."""
    route = routes.BY_OPERATION.get(request.method)
    handler = HANDLERS.get(request.method) or DIRECT_HANDLERS.get(request.method)
    if route is None or handler is None:
        return _response(request.request_id, 404, error_body("Not found"), {})
    try:
        body = route.body.model_validate_json(request.body or b"{}")
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        return _response(request.request_id, 422, error_body(f"{where}: {first['msg']}"), {})
    return handler, body


# The request's lock and stored result in one round trip (migration 0007).
_CLAIM = text(
    "SELECT stored, stored_status, stored_body, stored_metadata"
    " FROM edge_request_claim(:lock, :request_id)"
)


def _info(settings: CoreSettings, request: Any, body: BaseModel) -> dict[str, Any]:
    return {
        "operation": request.method,
        "body": body,
        "request_id": request.request_id,
        "client_ip": request.client_ip,
        "user_agent": request.user_agent or None,
        "metadata": dict(request.metadata),
        "settings": settings,
    }


def _store(db: AsyncSession, request: Any, status: int, body: bytes, meta: dict[str, str]) -> None:
    db.add(
        EdgeRequest(
            request_id=request.request_id,
            method=request.method,
            status=status,
            body=body,
            metadata_=meta,
        )
    )


async def dispatch(db: Database, settings: CoreSettings, request: Any) -> Any:
    """Answer one `EdgeRequest` with a `CoreResponse`; never raises for a request's failure."""
    parsed = _parse(request)
    if not isinstance(parsed, tuple):
        return parsed
    handler, body = parsed
    if not request.request_id:
        return _response("", 400, error_body("missing request id"), {})
    if request.method in DIRECT_HANDLERS:
        call = DirectCall(database=db, **_info(settings, request, body))
        return await _dispatch_direct(db, request, DIRECT_HANDLERS[request.method], call)
    async with db.sessionmaker() as session:
        try:
            stored = (
                await session.execute(
                    _CLAIM, {"lock": REQUEST_LOCK_NAMESPACE, "request_id": request.request_id}
                )
            ).one()
            if stored.stored:
                answer = _response(
                    request.request_id,
                    stored.stored_status,
                    stored.stored_body,
                    stored.stored_metadata or {},
                )
                await session.rollback()
                log.info("answered a retried request from its stored result", op=request.method)
                # The first attempt's Core may have died before its follow-ups
                # (publishing peer changes): publish whatever is still pending now.
                try:
                    await sweep_pending(db, 0)
                except Exception:
                    log.exception("publishing pending peer changes failed")
                return answer
            call = EdgeCall(db=session, **_info(settings, request, body))
            try:
                result = await handler(call)  # type: ignore[arg-type]
            except EdgeError as exc:
                payload = error_body(exc.message)
                if exc.commit:
                    _store(session, request, exc.status, payload, {})
                    await session.commit()
                else:
                    await session.rollback()
                return _response(request.request_id, exc.status, payload, {})
            payload = _encode(result.body)
            _store(session, request, result.status, payload, result.metadata)
            await session.commit()
        except Exception:
            await session.rollback()
            log.exception("an Edge request failed", op=request.method)
            return _response(request.request_id, 500, error_body("Internal server error"), {})
    for follow_up in result.after_commit:
        try:
            await follow_up(db)
        except Exception:
            log.exception("follow-up of a committed Edge request failed", op=request.method)
    return _response(request.request_id, result.status, payload, result.metadata)


async def _dispatch_direct(
    db: Database, request: Any, handler: DirectHandler, call: DirectCall
) -> Any:
    try:
        try:
            result = await handler(call)
        except psycopg.OperationalError:
            # Pooled connections that broke (PostgreSQL restarted): the pool
            # drops them, and a direct handler's statements are safe to repeat.
            log.warning("database connection lost; running the request again", op=request.method)
            await db.direct.recover()
            result = await handler(call)
    except EdgeError as exc:
        return _response(request.request_id, exc.status, error_body(exc.message), {})
    except Exception:
        log.exception("an Edge request failed", op=request.method)
        return _response(request.request_id, 500, error_body("Internal server error"), {})
    for follow_up in result.after_commit:
        try:
            await follow_up(db)
        except Exception:
            log.exception("follow-up of a committed Edge request failed", op=request.method)
    return _response(request.request_id, result.status, _encode(result.body), result.metadata)


# -- operations without a feature here -----------------------------------------------


async def _no_openid_provider(call: EdgeCall) -> EdgeResult:
    del call
    raise EdgeError(404, "OpenID provider not configured")


for _operation in ("openid.auth_info", "openid.callback", "openid.callback_mfa"):
    edge_handler(_operation)(_no_openid_provider)


# -- housekeeping ----------------------------------------------------------------------


@tasks.periodic(cron="*/10 * * * *", periodic_id="purge-edge-requests")
@tasks.task(
    name="purge_edge_requests",
    queue="maintenance",
    pass_context=True,
    queueing_lock="purge-edge-requests",
)
async def purge_edge_requests(context: procrastinate.JobContext, timestamp: int) -> int:
    del timestamp
    async with database_of(context).transaction() as s:
        result = await s.execute(
            delete(EdgeRequest).where(EdgeRequest.created_at < utcnow() - KEEP_RESULTS)
        )
        return int(getattr(result, "rowcount", 0) or 0)
