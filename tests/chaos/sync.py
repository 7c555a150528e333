"""Gateways against the database: sampled side by side during the run, judged after."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.engine import URL

from defguard.core.links.state import desired_peers
from defguard.db.engine import Database
from tests.chaos.clock import stamp
from tests.chaos.cluster import sql
from tests.wgtools import Gateway

PeerValue = tuple[str, tuple[str, ...]]  # (preshared key or "(none)", allowed IPs)
Snapshot = tuple[float, dict[str, PeerValue]]
# A Gateway's peers as read by one `wg show`, which ran between the two times.
View = tuple[float, float, dict[str, PeerValue]]


async def wg_peers(gateway: Gateway) -> dict[str, PeerValue]:
    proc = await asyncio.create_subprocess_exec(
        *("ip", "netns", "exec", gateway.ns, "wg", "show", gateway.ifname, "dump"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise AssertionError(f"wg show on {gateway.ifname}: {err.decode().strip()}")
    peers: dict[str, PeerValue] = {}
    for line in out.decode().splitlines()[1:]:
        key, psk, _, allowed, *_ = line.split("\t")
        ips = tuple(sorted(a for a in allowed.split(",") if a and a != "(none)"))
        peers[key] = (psk, ips)
    return peers


class PeerWatch:
    """Samples the database's desired peers and every Gateway's peers, side by side."""

    def __init__(self, db_url: URL, location_id: int, gateways: Sequence[Gateway]) -> None:
        self.db = Database(db_url, pool_size=1)
        self.location_id = location_id
        self.gateways = list(gateways)
        self.desired: list[Snapshot] = []
        self.revisions: list[tuple[float, int]] = []  # the location's config_revision
        self.applied: list[list[View]] = [[] for _ in gateways]

    async def desired_now(self) -> Snapshot:
        at = time.monotonic()
        async with self.db.session() as s:
            peers = await desired_peers(s, self.location_id)
            revision = await s.scalar(
                text("SELECT config_revision FROM wireguard_network WHERE id = :id"),
                {"id": self.location_id},
            )
        self.revisions.append((at, int(revision or 0)))
        return at, {
            p.public_key: (p.preshared_key or "(none)", tuple(sorted(p.allowed_ips))) for p in peers
        }

    async def sample(self) -> None:
        self.desired.append(await self.desired_now())
        for i, gateway in enumerate(self.gateways):
            began = time.monotonic()
            peers = await wg_peers(gateway)
            self.applied[i].append((began, time.monotonic(), peers))

    async def run(self, every: float, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.sample()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)

    async def settled(self, allowance: float, timeout: float = 40.0) -> list[str]:
        """After the load: once the database holds still for `allowance`, each Gateway equals it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            _, before = await self.desired_now()
            await asyncio.sleep(allowance)
            views = [await wg_peers(g) for g in self.gateways]
            _, after = await self.desired_now()
            if before != after:
                continue
            problems = []
            for gateway, view in zip(self.gateways, views, strict=True):
                if view != after:
                    missing = sorted(set(after) - set(view))
                    extra = sorted(set(view) - set(after))
                    wrong = sorted(k for k in set(after) & set(view) if after[k] != view[k])
                    problems.append(
                        f"gateway {gateway.ifname} differs from the database {allowance} s after"
                        f" the last change: missing {missing}, extra {extra}, different {wrong}"
                    )
            return problems
        return [f"the desired peers never held still for {allowance} s"]

    async def close(self) -> None:
        await self.db.dispose()


@dataclass
class SyncReport:
    samples: int = 0
    changes: int = 0
    lags: list[float] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    violating_keys: list[str] = field(default_factory=list)
    traces: list[str] = field(default_factory=list)
    slowest_read: float = 0.0


def judge_sync(
    desired: Sequence[Snapshot], applied: Sequence[View], allowance: float
) -> SyncReport:
    """Each Gateway view may show, per peer, only what the database wanted within `allowance`.

    A view read between times a and b shows the Gateway at some moment r in
    [a, b]. For each peer key, the accepted values are the key's value in the
    last desired snapshot taken at or before a - allowance (the state then),
    in every snapshot taken up to b, and in the first one taken after b (a
    Gateway that applied a commit the moment it happened is ahead of the
    last snapshot; it cannot be ahead of the database); absence is a value
    too. So a Gateway that applies each change within `allowance` passes,
    and one that shows a peer the database stopped wanting (or never
    wanted) longer ago fails.
    Changes are dated by the first snapshot that shows them, so the check's
    resolution is the sampling interval (plus the time one `wg show` takes).

    Also measures, for every change of a peer, the time from the first
    snapshot showing it to the end of the first Gateway read showing it.
    """
    report = SyncReport(samples=len(applied))
    times = [t for t, _ in desired]
    if not times:
        return report
    report.slowest_read = max((b - a for a, b, _ in applied), default=0.0)
    keys = set().union(*(d for _, d in desired), *(v for _, _, v in applied))
    for began, read, view in applied:
        if began < times[0] + allowance:
            continue
        first = max(0, bisect.bisect_right(times, began - allowance) - 1)
        last = bisect.bisect_right(times, read) + 1
        window = [d for _, d in desired[first:last]]
        for key in keys:
            got = view.get(key)
            if all(state.get(key) != got for state in window):
                wanted = window[-1].get(key)
                if key not in report.violating_keys:
                    report.violating_keys.append(key)
                report.violations.append(
                    f"at {stamp(began)} the gateway had {key} = {got},"
                    f" which the database had not wanted for {allowance} s (it wants {wanted})"
                )
    read_times = [b for _, b, _ in applied]
    for key in keys:
        previous: object = object()
        for i, (t, state) in enumerate(desired):
            value = state.get(key)
            if value == previous:
                continue
            previous = value
            if i == 0:
                continue
            report.changes += 1
            start = bisect.bisect_left(read_times, times[i - 1])
            for _, read, view in applied[start:]:
                if view.get(key) == value:
                    report.lags.append(max(0.0, read - t))
                    break
    return report


def trace_peer(
    url: URL,
    key: str,
    desired: Sequence[Snapshot],
    applied: Sequence[View],
    revisions: Sequence[tuple[float, int]],
) -> str:
    """When a peer's changes reached each stage: the database, a revision, the Gateway.

    For a sync violation, this tells a late revision (the change committed,
    but nothing published it) from a late push or apply (the revision was
    there, the Gateway did not have it).
    """
    stages = []
    previous: object = object()
    for t, state in desired:
        if state.get(key) != previous:
            previous = state.get(key)
            shown = next((b for _, b, v in applied if b >= t and v.get(key) == previous), None)
            stages.append(
                f"database wants {'a peer' if previous else 'no peer'} from {stamp(t)},"
                f" gateway from {stamp(shown) if shown is not None else 'never'}"
            )
    for created, revision in sql(
        url,
        """SELECT to_char(created_at, 'HH24:MI:SS.MS'), revision FROM peer_change
           WHERE public_key = %s ORDER BY id""",
        key,
    ):
        seen = next((t for t, r in revisions if revision is not None and r >= revision), None)
        stages.append(
            f"peer change written in a transaction begun at {created}, claimed by revision"
            f" {revision}, which the database had from {stamp(seen) if seen else 'never'}"
        )
    return f"{key}: " + "; ".join(stages)
