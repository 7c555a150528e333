"""The clients and the killer: what the Cores go through, and what the clients saw."""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import itertools
import json
import math
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pyotp

from tests.chaos.cluster import UA, Cluster, CoreNode, MfaUser
from tests.chaos.options import ChaosOptions

USER_PASSWORD = "Chaos!Us3rPassw0rd"
TOTP_STEP = 30
# A TOTP code is checked against the step in which Core runs the request
# (`valid_window=0`), and the Edge gives up after 5 s: a code is only sent
# with at least this much of its step left, so a slow answer is never a
# code that expired on the way.
TOTP_MARGIN = 6.0
POLL_KIND = "poll"


@dataclass
class Outcome:
    kind: str
    edge: int
    started: float
    ended: float
    status: int  # 0: no HTTP answer at all; -1: a 200 with the wrong answer
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def ms(self) -> float:
        return (self.ended - self.started) * 1000


@dataclass
class Kill:
    core: str
    at: float  # monotonic
    wall: float
    ready_after: float | None = None  # seconds from the kill until linked again


@dataclass
class Enrolled:
    username: str
    email: str
    pubkey: str
    polling_token: str


@dataclass
class Authorized:
    user_id: int
    pubkey: str
    preshared_key: str


@dataclass
class Ledger:
    """What the clients saw: every request, and every effect they were promised."""

    outcomes: list[Outcome] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)
    kills_postponed: int = 0
    enrolled: list[Enrolled] = field(default_factory=list)
    authorized: list[Authorized] = field(default_factory=list)
    admin_calls: int = 0
    admin_retries: int = 0
    load_started: float = 0.0
    load_ended: float = 0.0


class Abort(Exception):
    """A flow cannot go on (a step failed); the failure is already in the ledger."""


class Load:
    """Clients of the Edges, round-robin over them, writing everything they saw to the ledger."""

    def __init__(self, cluster: Cluster, ledger: Ledger, options: ChaosOptions) -> None:
        self.cluster = cluster
        self.ledger = ledger
        self.options = options
        self.http: aiohttp.ClientSession | None = None
        self._edges = itertools.cycle(range(len(cluster.edges)))
        self._names = itertools.count()
        self._rng = random.Random(options.seed)
        self._mfa_queue = collections.deque(cluster.mfa_users)
        self.poll_tokens = list(cluster.poll_tokens)
        self.in_flight = 0  # client requests sent and not yet answered

    # -- one request ---------------------------------------------------------------

    async def edge_call(
        self,
        kind: str,
        body: dict[str, Any],
        cookie: str | None = None,
        check: Callable[[Any], str | None] | None = None,
    ) -> tuple[Any, str | None]:
        """POST to the next Edge; the JSON answer and any `Set-Cookie` value, or Abort.

        `check` looks at a 200's answer and names what is wrong with it, if anything.
        """
        assert self.http is not None
        edge = next(self._edges)
        url = f"{self.cluster.edges[edge].public_url}/api/v1/{kind}"
        headers = {"Cookie": cookie} if cookie else {}
        started = time.monotonic()
        self.in_flight += 1
        try:
            async with self.http.post(url, json=body, headers=headers) as r:
                text = await r.text()
                status = r.status
                set_cookie = r.headers.get("Set-Cookie")
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.ledger.outcomes.append(
                Outcome(kind, edge, started, time.monotonic(), 0, f"{type(exc).__name__}: {exc}")
            )
            raise Abort() from None
        finally:
            self.in_flight -= 1
        ended = time.monotonic()
        answer = _json(text) if status == 200 else None
        wrong = check(answer) if check is not None and status == 200 else None
        if status != 200 or wrong:
            detail = wrong or text[:500]
            self.ledger.outcomes.append(
                Outcome(kind, edge, started, ended, -1 if wrong else status, detail)
            )
            raise Abort()
        self.ledger.outcomes.append(Outcome(kind, edge, started, ended, status))
        return answer, (set_cookie.split(";")[0] if set_cookie else None)

    async def admin(self, path: str, body: dict[str, Any], accept: Sequence[int]) -> Any:
        """An admin REST call as a load balancer in front of the Cores makes it.

        A Core killed mid-request drops the connection; the call goes to
        another Core. Admin calls are not client requests through an Edge:
        their retries are counted, not judged.
        """
        assert self.http is not None
        self.ledger.admin_calls += 1
        headers = {"Cookie": f"defguard_session={self.cluster.admin_cookie}", **UA}
        for attempt in range(100):
            live = [c for c in self.cluster.cores if c.linked] or self.cluster.cores
            core = self._rng.choice(live)
            try:
                async with self.http.post(f"{core.api}{path}", json=body, headers=headers) as r:
                    text = await r.text()
                    if r.status in accept:
                        return _json(text), r.status, attempt
                    if r.status < 500:
                        raise AssertionError(f"admin {path}: {r.status} {text}")
            except (aiohttp.ClientError, TimeoutError):
                pass
            self.ledger.admin_retries += 1
            await asyncio.sleep(0.1)
        raise AssertionError(f"admin {path}: no Core answered")

    # -- flows ---------------------------------------------------------------------------

    async def enroll(self) -> None:
        n = next(self._names)
        username = f"enr{n}"
        email = f"{username}@example.com"
        user = {"username": username, "first_name": "En", "last_name": str(n), "email": email}
        _, status, attempt = await self.admin("/user", user, accept=(201, 400))
        if status == 400 and attempt == 0:
            raise AssertionError(f"could not create {username}")
        answer, _, _ = await self.admin(
            f"/user/{username}/start_enrollment",
            {"send_enrollment_notification": False},
            accept=(201,),
        )
        try:
            _, cookie = await self.edge_call(
                "enrollment/start", {"token": answer["enrollment_token"]}
            )
            if cookie is None:
                raise AssertionError("enrollment/start set no cookie")
            pubkey = base64.b64encode(secrets.token_bytes(32)).decode()
            device, _ = await self.edge_call(
                "enrollment/create_device", {"name": "laptop", "pubkey": pubkey}, cookie
            )
            await self.edge_call("enrollment/activate_user", {"password": USER_PASSWORD}, cookie)
        except Abort:
            return
        assert device is not None
        token = device["token"]
        self.ledger.enrolled.append(Enrolled(username, email, pubkey, token))
        self.poll_tokens.append((token, pubkey))

    async def _next_mfa_user(self) -> MfaUser:
        """A user who has not passed MFA in this TOTP step, with enough of the step left."""
        while True:
            now = time.time()
            step = int(now // TOTP_STEP)
            if (step + 1) * TOTP_STEP - now >= TOTP_MARGIN:
                for _ in range(len(self._mfa_queue)):
                    user = self._mfa_queue.popleft()
                    self._mfa_queue.append(user)
                    if user.last_step < step and not user.busy:
                        user.last_step = step
                        user.busy = True
                        return user
            await asyncio.sleep((step + 1) * TOTP_STEP - now + 0.05)

    async def mfa(self) -> None:
        user = await self._next_mfa_user()
        try:
            started, _ = await self.edge_call(
                "client-mfa/start",
                {"location_id": self.cluster.location_id, "pubkey": user.pubkey, "method": 0},
            )
            assert started is not None
            now = time.time()
            step = int(now // TOTP_STEP)
            if (step + 1) * TOTP_STEP - now < TOTP_MARGIN:
                # The start took long enough that the code would be cut short; use the next one.
                await asyncio.sleep((step + 1) * TOTP_STEP - now + 0.05)
            user.last_step = int(time.time() // TOTP_STEP)
            code = pyotp.TOTP(user.secret).now()
            finished, _ = await self.edge_call(
                "client-mfa/finish", {"token": started["token"], "code": code}
            )
        except Abort:
            return
        finally:
            user.busy = False
        assert finished is not None
        self.ledger.authorized.append(
            Authorized(user.user_id, user.pubkey, finished["preshared_key"])
        )

    async def poll(self) -> None:
        token, pubkey = self._rng.choice(self.poll_tokens)

        def same_device(answer: Any) -> str | None:
            got = answer["device_config"]["device"]["pubkey"]
            return None if got == pubkey else f"poll answered for {got}, expected {pubkey}"

        with contextlib.suppress(Abort):
            await self.edge_call(POLL_KIND, {"token": token}, check=same_device)

    # -- pacing --------------------------------------------------------------------------

    async def lanes(self, rate: float, flow: Callable[[], Awaitable[None]], until: float) -> None:
        """`rate` flows per second over as many lanes as that takes, each lane one at a time."""
        if rate <= 0:
            return
        # One flow per lane per second at most: a flow that takes longer (a
        # kill, a slow password hash) delays its own lane, not the rate.
        lanes = max(2, math.ceil(rate))
        period = lanes / rate

        async def lane(offset: float) -> None:
            due = time.monotonic() + offset
            while True:
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                if time.monotonic() >= until:
                    return
                await flow()
                due = max(due + period, time.monotonic() - period)

        await asyncio.gather(*(lane(i * period / lanes) for i in range(lanes)))

    async def run(self, seconds: float) -> None:
        timeout = aiohttp.ClientTimeout(total=40)
        connector = aiohttp.TCPConnector(limit=200)
        async with aiohttp.ClientSession(
            timeout=timeout, connector=connector, cookie_jar=aiohttp.DummyCookieJar()
        ) as http:
            self.http = http
            self.ledger.load_started = time.monotonic()
            until = self.ledger.load_started + seconds
            await asyncio.gather(
                self.lanes(self.options.enroll_rate, self.enroll, until),
                self.lanes(self.options.mfa_rate, self.mfa, until),
                self.lanes(self.options.poll_rate, self.poll, until),
            )
            self.ledger.load_ended = time.monotonic()


def _json(text: str) -> Any:
    return json.loads(text) if text else None


async def killer(
    cluster: Cluster, ledger: Ledger, options: ChaosOptions, until: float, load: Load
) -> None:
    """SIGKILL a random running Core every few seconds, start it again after `down_for`.

    The victim is a Core linked to every Edge (with `kill_starting`, any
    running Core, even one still starting up), as long as another one stays
    linked, so some Core can always take over a request whose Core died. The
    moment is chosen, within a second, when at least `kill_in_flight` client
    requests are in flight: a kill between requests tests nothing but the
    restart.
    """
    rng = random.Random(options.seed)
    restarts: dict[str, asyncio.Task[None]] = {}

    async def restart(core: CoreNode, kill: Kill) -> None:
        await asyncio.sleep(options.down_for)
        core.spawn()
        while not core.linked:
            if not core.alive:
                raise AssertionError(f"{core.name} exited after a restart:\n{core.tail()}")
            await asyncio.sleep(0.1)
        kill.ready_after = time.monotonic() - kill.at

    def candidates() -> list[CoreNode]:
        return [
            core
            for core in cluster.cores
            if (core.linked or (options.kill_starting and core.alive))
            and any(other.linked for other in cluster.cores if other is not core)
        ]

    while True:
        await asyncio.sleep(rng.uniform(*options.kill_every))
        if time.monotonic() >= until:
            break
        if not candidates():
            ledger.kills_postponed += 1
        while not candidates() and time.monotonic() < until:
            await asyncio.sleep(0.1)
        wait_until = min(time.monotonic() + 1.0, until)
        while load.in_flight < options.kill_in_flight and time.monotonic() < wait_until:
            await asyncio.sleep(0.002)
        choice = candidates()
        if not choice:
            break
        victim = rng.choice(choice)
        pending = restarts.pop(victim.name, None)
        if pending is not None:  # killed again while starting up
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pending
        kill = Kill(victim.name, time.monotonic(), time.time())
        await asyncio.to_thread(victim.kill)
        ledger.kills.append(kill)
        restarts[victim.name] = asyncio.create_task(restart(victim, kill))
    await asyncio.gather(*restarts.values())
