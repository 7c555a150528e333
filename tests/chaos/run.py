"""One chaos run from start to verdict, and its summary."""

from __future__ import annotations

import asyncio
import bisect
import collections
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tests.chaos.clock import stamp
from tests.chaos.cluster import Cluster, MailSink
from tests.chaos.load import Ledger, Load, Outcome, killer
from tests.chaos.options import ChaosOptions
from tests.chaos.sync import PeerWatch, SyncReport, judge_sync, trace_peer
from tests.chaos.verify import Verdict, mail_settled, verify


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


@dataclass
class ChaosResult:
    options: ChaosOptions
    ledger: Ledger
    verdict: Verdict
    sync: list[SyncReport]
    settle_problems: list[str]

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.ledger.outcomes if not o.ok]

    def overlapping_kills(self) -> list[Outcome]:
        kills = sorted(k.at for k in self.ledger.kills)
        hit = []
        for o in self.ledger.outcomes:
            i = bisect.bisect_left(kills, o.started)
            if i < len(kills) and kills[i] <= o.ended:
                hit.append(o)
        return hit

    def slowest(self, count: int = 5) -> list[str]:
        """The slowest requests, each with the kills around it, to see what held them up."""
        lines = []
        for o in sorted(self.ledger.outcomes, key=lambda o: -o.ms)[:count]:
            near = [
                f"{k.core} killed at {stamp(k.at)}"
                for k in self.ledger.kills
                if o.started - 5 <= k.at <= o.ended
            ]
            lines.append(
                f"{o.kind} via edge{o.edge} at {stamp(o.started)}: {o.ms:.0f} ms"
                f" ({', '.join(near) or 'no kill within 5 s before or during'})"
            )
        return lines

    def during_downtime(self) -> list[Outcome]:
        """Requests that began while a killed Core was down (killed, not yet linked again).

        With one Core behind the Edge, as in Defguard's own design, each of
        these would have failed: its Edge answers 500 after 5 s when its Core
        is gone, and does not retry.
        """
        windows = [(k.at, k.at + k.ready_after) for k in self.ledger.kills if k.ready_after]
        return [o for o in self.ledger.outcomes if any(a <= o.started <= b for a, b in windows)]

    @property
    def problems(self) -> list[str]:
        found = [
            f"{o.kind} via edge{o.edge} at {stamp(o.started)}: {o.status} {o.detail}"
            for o in self.failures
        ]
        found += self.verdict.problems
        for i, report in enumerate(self.sync):
            found += [f"gateway {i}: {v}" for v in report.violations[:20]]
            if len(report.violations) > 20:
                found.append(f"gateway {i}: {len(report.violations) - 20} more sync violations")
            found += [f"gateway {i}, trace of {t}" for t in report.traces]
        found += self.settle_problems
        return found

    def summary(self) -> dict[str, Any]:
        by_kind = collections.Counter(o.kind for o in self.ledger.outcomes if o.ok)
        all_ms = [o.ms for o in self.ledger.outcomes]
        hit_ms = [o.ms for o in self.overlapping_kills()]
        lags = [lag for report in self.sync for lag in report.lags]
        ready = [k.ready_after for k in self.ledger.kills if k.ready_after is not None]
        return {
            "load seconds": round(self.ledger.load_ended - self.ledger.load_started, 1),
            "requests served": sum(by_kind.values()),
            "by kind": dict(sorted(by_kind.items())),
            "enrollments": len(self.ledger.enrolled),
            "MFA connects": len(self.ledger.authorized),
            "failed requests": len(self.failures),
            "kills": len(self.ledger.kills),
            "kills postponed (one Core left)": self.ledger.kills_postponed,
            "Core back after a kill, median s": round(percentile(ready, 0.5), 1),
            "requests in flight at a kill": len(hit_ms),
            "requests begun while a killed Core was down": len(self.during_downtime()),
            "p50 ms": round(percentile(all_ms, 0.5), 1),
            "p99 ms": round(percentile(all_ms, 0.99), 1),
            "max ms": round(max(all_ms, default=float("nan")), 1),
            "p50 ms, in flight at a kill": round(percentile(hit_ms, 0.5), 1),
            "p99 ms, in flight at a kill": round(percentile(hit_ms, 0.99), 1),
            "admin calls (retried)": f"{self.ledger.admin_calls} ({self.ledger.admin_retries})",
            "peer changes seen": sum(r.changes for r in self.sync),
            "gateway apply lag p50/p99/max s": (
                f"{percentile(lags, 0.5):.2f}/{percentile(lags, 0.99):.2f}/{max(lags, default=0):.2f}"
            ),
            "sync violations": sum(len(r.violations) for r in self.sync),
            "slowest wg show, s": round(max((r.slowest_read for r in self.sync), default=0), 2),
            **self.verdict.facts,
        }


async def run_chaos(cluster: Cluster, mail: MailSink, options: ChaosOptions) -> ChaosResult:
    ledger = Ledger()
    load = Load(cluster, ledger, options)
    watch = PeerWatch(cluster.db_url, cluster.location_id, cluster.gateways)
    stop_watch = asyncio.Event()
    try:
        watcher = asyncio.create_task(watch.run(options.sample_every, stop_watch))
        until = time.monotonic() + options.seconds
        await asyncio.gather(
            load.run(options.seconds), killer(cluster, ledger, options, until, load)
        )
        settle = await watch.settled(options.sync_allowance) if cluster.gateways else []
        stop_watch.set()
        await watcher
    finally:
        stop_watch.set()
        await watch.close()
    waited = time.monotonic()
    deadline = waited + options.jobs_grace
    while not mail_settled(cluster.db_url) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    waited = time.monotonic() - waited
    # The last message may still be on its way from the SMTP session to the sink.
    await asyncio.sleep(0.5)
    verdict = verify(cluster, ledger, mail)
    verdict.facts["seconds waited for e-mail after the load"] = round(waited, 1)
    if not mail_settled(cluster.db_url):
        verdict.problems.append(f"e-mail jobs still pending {options.jobs_grace} s after the load")
    sync = [judge_sync(watch.desired, applied, options.sync_allowance) for applied in watch.applied]
    for report, applied in zip(sync, watch.applied, strict=True):
        report.traces = [
            trace_peer(cluster.db_url, key, watch.desired, applied, watch.revisions)
            for key in report.violating_keys[:5]
        ]
    return ChaosResult(options, ledger, verdict, sync, settle)
