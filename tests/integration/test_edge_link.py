"""A real Edge (HTTP + gRPC server) and real Core links to it, in one event loop.

Covers the Edge's conventions (headers, body errors, 503 before a Core
connects) and the Core side of the link (registration through rows, settings
push, request dispatch, retries answered from stored results).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import func, select

from defguard import __version__
from defguard.config import CoreSettings, EdgeSettings
from defguard.core.edge_requests import dispatch as dispatch_module
from defguard.core.edge_requests.dispatch import DirectCall, EdgeCall, EdgeError, EdgeResult
from defguard.core.edge_requests.models import EdgeRequest
from defguard.core.links.manager import LinkManager
from defguard.core.proxies.models import Proxy, ProxyLink
from defguard.db.engine import Database
from defguard.edge import cookies, routes
from defguard.edge.main import serve
from tests.conftest import make_user
from tests.integration.test_client_mfa import enable_totp, jdoe_device, mfa_location, totp_code


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RunningEdge:
    http: httpx.AsyncClient
    grpc_port: int
    stop: asyncio.Event
    task: asyncio.Task[None]


@contextlib.asynccontextmanager
async def running_edge(**tls: object) -> AsyncIterator[RunningEdge]:
    http_port, grpc_port = free_port(), free_port()
    settings = EdgeSettings(
        proxy_http_port=http_port,
        http_bind_address="127.0.0.1",
        proxy_grpc_port=grpc_port,
        grpc_bind_address="127.0.0.1",
        **tls,  # type: ignore[arg-type]
    )
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}/api/v1") as http:
        for _ in range(200):
            with contextlib.suppress(httpx.TransportError):
                await http.get("/health")
                break
            await asyncio.sleep(0.02)
        try:
            yield RunningEdge(http, grpc_port, stop, task)
        finally:
            stop.set()
            await task


async def add_proxy(db: Database, port: int, name: str = "edge-1") -> int:
    async with db.transaction() as s:
        proxy = Proxy(name=name, address="127.0.0.1", port=port, modified_by="test")
        s.add(proxy)
        await s.flush()
        return proxy.id


@contextlib.asynccontextmanager
async def core_links(db: Database, **overrides: object) -> AsyncIterator[LinkManager]:
    settings = CoreSettings(link_retry_seconds=0.2, **overrides)  # type: ignore[arg-type]
    manager = LinkManager(db, settings, heartbeat_seconds=0.5)
    await manager.start()
    try:
        await asyncio.wait_for(manager.listening(), 10)
        yield manager
    finally:
        await manager.stop()


async def wait_until(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def provisioned(edge: RunningEdge) -> bool:
    return (await edge.http.get("/info")).json()["server_state"] == "connected"


@contextlib.asynccontextmanager
async def two_cores(
    db: Database, edge: RunningEdge
) -> AsyncIterator[tuple[LinkManager, LinkManager]]:
    """Two Cores (two `Database` objects on one URL) with their links to `edge` up."""
    await add_proxy(db, edge.grpc_port)
    second_db = Database(db.url)
    try:
        async with core_links(db) as first, core_links(second_db) as second:
            await wait_until(lambda: provisioned(edge))

            async def both() -> bool:
                return all(
                    link.connected for m in (first, second) for link in m.edge_links.values()
                )

            await wait_until(both)
            yield first, second
    finally:
        await second_db.dispose()


# A handler standing in for a feature: it writes a row-free effect we can count.
CALLS: list[str] = []


@pytest.fixture
def counting_handler():  # type: ignore[no-untyped-def]
    """Temporarily route `poll` to a handler that records each execution."""
    original = dispatch_module.DIRECT_HANDLERS.get("poll")

    async def handler(call: DirectCall) -> EdgeResult:
        CALLS.append(call.body.token)
        if call.body.token == "bad":
            raise EdgeError(403, "invalid token")
        if call.body.token == "slow":
            await asyncio.sleep(2)
        return EdgeResult(
            body={"echo": call.body.token, "ip": call.client_ip, "os": call.client_os_family},
            metadata={},
        )

    dispatch_module.DIRECT_HANDLERS["poll"] = handler
    CALLS.clear()
    yield CALLS
    if original is None:
        dispatch_module.DIRECT_HANDLERS.pop("poll", None)
    else:
        dispatch_module.DIRECT_HANDLERS["poll"] = original


async def test_edge_before_any_core() -> None:
    async with running_edge() as edge:
        health = await edge.http.get("/health")
        assert health.status_code == 200 and health.text == "alive"
        assert health.headers["defguard-component-version"] == __version__
        assert health.headers["defguard-core-connected"] == "false"
        assert health.headers["x-powered-by"] == "Defguard"
        assert health.headers["x-frame-options"] == "DENY"
        assert health.headers["cache-control"] == "no-store"
        assert "strict-transport-security" not in health.headers
        grpc_health = await edge.http.get("/health-grpc")
        assert grpc_health.status_code == 503
        assert grpc_health.text == "Not connected to Defguard Core"
        assert (await edge.http.get("/info")).json() == {
            "version": __version__,
            "server_state": "setup",
        }
        # Not provisioned: 503 with an empty body on every other API route.
        poll = await edge.http.post("/poll", json={"token": "x"})
        assert poll.status_code == 503 and poll.content == b""
        assert (await edge.http.get("/poll")).status_code == 405
        missing = await edge.http.post("/nope", json={})
        assert missing.status_code == 404 and missing.text == "Not found"


async def test_core_connects_and_serves_requests(db: Database, counting_handler) -> None:  # type: ignore[no-untyped-def]
    async with running_edge() as edge:
        proxy_id = await add_proxy(db, edge.grpc_port)
        async with core_links(db) as manager:
            await wait_until(lambda: provisioned(edge))
            link = manager.edge_links[proxy_id]
            assert link.connected

            async def link_recorded() -> bool:
                async with db.session() as s:
                    row = await s.get(ProxyLink, (proxy_id, manager.core_id))
                    return row is not None and row.disconnected_at is None

            await wait_until(link_recorded)

            answer = await edge.http.post(
                "/poll",
                json={"token": "abc"},
                headers={
                    "X-Forwarded-For": "198.51.100.1, 203.0.113.9",
                    "defguard-client-platform": "Cgd3aW5kb3dzEgdXaW5kb3dzGgoxMSAoMjI2MzEpMgY2NC1iaXQ6Bng4Nl82NA==",
                },
            )
            assert answer.status_code == 200
            assert answer.json() == {"echo": "abc", "ip": "203.0.113.9", "os": "windows"}
            assert answer.headers["defguard-core-connected"] == "true"
            assert answer.headers["defguard-core-version"] == __version__

            denied = await edge.http.post("/poll", json={"token": "bad"})
            assert denied.status_code == 403
            assert denied.json() == {"error": "invalid token"}

            # Body-level failures never reach Core and are plain text.
            before = len(counting_handler)
            assert (await edge.http.post("/poll", content=b"{}")).status_code == 415
            bad_json = await edge.http.post(
                "/poll", content=b"{", headers={"content-type": "application/json"}
            )
            assert bad_json.status_code == 400
            mistyped = await edge.http.post("/poll", json={"token": 5})
            assert mistyped.status_code == 422 and "token" in mistyped.text
            huge = await edge.http.post("/poll", json={"token": "x" * (300 * 1024)})
            assert huge.status_code == 413
            assert len(counting_handler) == before

            # Disabling the row stops the link without a restart.
            async with db.transaction() as s:
                (await s.get(Proxy, proxy_id)).enabled = False  # type: ignore[union-attr]

            async def gone() -> bool:
                return (await edge.http.get("/health-grpc")).status_code == 503

            await wait_until(gone)
            down = await edge.http.post("/poll", json={"token": "abc"})
            assert down.status_code == 503


async def test_session_cookie_round_trip(db: Database) -> None:
    """Core names a token; the Edge seals it into the cookie and opens it on the next call."""
    seen: list[str | None] = []

    async def start(call: EdgeCall) -> EdgeResult:
        return EdgeResult(
            body={"deadline_timestamp": 1767226200},
            metadata={routes.META_SET_SESSION: "T" * 32, routes.META_SESSION_EXPIRES: "1767226200"},
        )

    async def reset(call: EdgeCall) -> EdgeResult:
        seen.append(call.session_token)
        return EdgeResult(metadata={routes.META_CLEAR_SESSION: "1"})

    saved = {
        k: dispatch_module.HANDLERS.get(k) for k in ("password_reset.start", "password_reset.reset")
    }
    dispatch_module.HANDLERS["password_reset.start"] = start
    dispatch_module.HANDLERS["password_reset.reset"] = reset
    try:
        async with running_edge() as edge:
            await add_proxy(db, edge.grpc_port)
            async with core_links(db):
                await wait_until(lambda: provisioned(edge))
                started = await edge.http.post("/password-reset/start", json={"token": "t"})
                assert started.status_code == 200
                set_cookie = started.headers.get_list("set-cookie")
                assert len(set_cookie) == 1
                header = set_cookie[0]
                assert header.startswith("defguard_proxy_password_reset=")
                assert "HttpOnly" in header and "SameSite=Strict" in header
                assert "Path=/api/v1/password-reset" in header
                assert "Expires=Thu, 01 Jan 2026 00:10:00 GMT" in header
                assert "T" * 32 not in header  # sealed, not readable
                # The desktop client sends the whole Set-Cookie string back verbatim.
                done = await edge.http.post(
                    "/password-reset/reset", json={"password": "x"}, headers={"cookie": header}
                )
                assert done.status_code == 200 and done.content == b""
                assert seen == ["T" * 32]
                cleared = done.headers["set-cookie"]
                assert cleared.startswith("defguard_proxy_password_reset=;")
                assert "Max-Age=0" in cleared
                # A forged or foreign cookie is no token at all.
                value = header.split(";")[0].split("=", 1)[1]
                forged = await edge.http.post(
                    "/password-reset/reset",
                    json={"password": "x"},
                    headers={"cookie": f"defguard_proxy_password_reset={value[:-2]}AA"},
                )
                assert forged.status_code == 200
                assert seen[-1] is None
    finally:
        for key, handler in saved.items():
            if handler is None:
                dispatch_module.HANDLERS.pop(key, None)
            else:
                dispatch_module.HANDLERS[key] = handler


def test_cookie_seal_is_bound_to_its_name() -> None:
    key = bytes(range(32))
    sealed = cookies.seal(key, routes.ENROLLMENT_COOKIE, "tok")
    assert cookies.unseal(key, routes.ENROLLMENT_COOKIE, sealed) == "tok"
    assert cookies.unseal(key, routes.PASSWORD_RESET_COOKIE, sealed) is None
    assert cookies.unseal(bytes(32), routes.ENROLLMENT_COOKIE, sealed) is None
    assert cookies.unseal(key, routes.ENROLLMENT_COOKIE, "!!!") is None


async def test_two_cores_share_requests_and_a_killed_core_loses_none(
    db: Database, counting_handler
) -> None:  # type: ignore[no-untyped-def]
    """Requests spread over both Cores; a Core stopped mid-request has them re-sent."""
    async with running_edge() as edge, two_cores(db, edge) as (first, second):
        answers = await asyncio.gather(
            *(edge.http.post("/poll", json={"token": f"t{i}"}) for i in range(40))
        )
        assert all(a.status_code == 200 for a in answers)
        served = [link.served for m in (first, second) for link in m.edge_links.values()]
        assert all(n > 0 for n in served), served

        # A slow request is in flight on some Core when that Core's links stop.
        slow = asyncio.create_task(edge.http.post("/poll", json={"token": "slow"}))
        await asyncio.sleep(0.5)
        busy = first if any(t for t in _in_flight(first)) else second
        await busy.stop()
        answer = await slow
        assert answer.status_code == 200 and answer.json()["echo"] == "slow"


def _in_flight(manager: LinkManager) -> list[object]:
    return [task for link in manager.edge_links.values() for task in link._requests]


async def test_retried_request_is_answered_from_the_stored_result(db: Database) -> None:
    """Same request id twice: the handler runs once, the second answer is the stored one."""
    from defguard.proto import edge_pb2

    runs: list[int] = []

    async def handler(call: EdgeCall) -> EdgeResult:
        runs.append(1)
        return EdgeResult(body={"n": len(runs)})

    saved = dispatch_module.HANDLERS.get("enrollment.create_device")
    dispatch_module.HANDLERS["enrollment.create_device"] = handler
    try:
        request = edge_pb2.EdgeRequest(
            request_id="req-1",
            method="enrollment.create_device",
            body=json.dumps({"name": "laptop", "pubkey": "k"}).encode(),
            client_ip="203.0.113.5",
        )
        settings = CoreSettings()
        other_core = Database(db.url)
        try:
            first, again = await asyncio.gather(
                dispatch_module.dispatch(db, settings, request),
                dispatch_module.dispatch(other_core, settings, request),
            )
        finally:
            await other_core.dispose()
        assert runs == [1]
        assert json.loads(first.body) == json.loads(again.body) == {"n": 1}
        async with db.session() as s:
            count = await s.scalar(select(func.count()).select_from(EdgeRequest))
        assert count == 1
    finally:
        if saved is None:
            dispatch_module.HANDLERS.pop("enrollment.create_device", None)
        else:
            dispatch_module.HANDLERS["enrollment.create_device"] = saved


async def test_core_verifies_the_edge_with_its_ca(db: Database, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """DEFGUARD_PROXY_GRPC_CERT/KEY on the Edge, DEFGUARD_PROXY_GRPC_CA on Core: TLS."""
    from tests.integration.test_gateway_links import _certificates

    certs = _certificates(tmp_path)
    async with running_edge(
        proxy_grpc_cert=certs["gateway_cert"], proxy_grpc_key=certs["gateway_key"]
    ) as edge:
        await add_proxy(db, edge.grpc_port)
        # A Core without the CA does not get through (plain gRPC to a TLS port).
        async with core_links(db):
            await asyncio.sleep(1.5)
            assert (await edge.http.get("/info")).json()["server_state"] == "setup"
        async with core_links(db, proxy_grpc_ca=certs["ca"]):
            await wait_until(lambda: provisioned(edge))


async def test_mfa_finish_goes_to_the_core_that_served_its_start(
    admin_client, db: Database, counting_handler
) -> None:  # type: ignore[no-untyped-def]
    """The Core that served `start` keeps the attempt in memory, so the Edge sends the
    `finish` there, even while another Core has fewer requests in flight."""
    location = await mfa_location(admin_client)
    await make_user(db, "jdoe")
    secret = await enable_totp(db, "jdoe")
    device = await jdoe_device(admin_client, db)
    async with running_edge() as edge, two_cores(db, edge) as (first, second):

        def served() -> list[int]:
            return [sum(link.served for link in m.edge_links.values()) for m in (first, second)]

        before = served()
        started = await edge.http.post(
            "/client-mfa/start",
            json={"location_id": location["id"], "pubkey": device["wireguard_pubkey"], "method": 0},
        )
        assert started.status_code == 200, started.text
        after_start = served()
        [starter] = [i for i in (0, 1) if after_start[i] > before[i]]
        # The starting Core gets a slow request; by load alone the next
        # request would now go to the other one.
        slow = asyncio.create_task(edge.http.post("/poll", json={"token": "slow"}))

        async def starter_busy() -> bool:
            return bool(_in_flight((first, second)[starter]))

        await wait_until(starter_busy)
        finished = await edge.http.post(
            "/client-mfa/finish",
            json={"token": started.json()["token"], "code": totp_code(secret)},
        )
        assert finished.status_code == 200, finished.text
        assert len(base64.b64decode(finished.json()["preshared_key"])) == 32
        assert served()[1 - starter] == after_start[1 - starter]
        assert (await slow).status_code == 200
