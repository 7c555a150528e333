"""Active-active under fire: Cores die with SIGKILL while clients enroll, pass MFA and poll.

3 Cores, 2 Edges and a Gateway (in its own namespace) on one PostgreSQL. For
40 s, enrollments, MFA connects and polls go through both Edges in turn while
a random Core is killed every 3 to 5 s and started again a second later (one
Core linked to both Edges always stays up). Then, from the database and the
Gateway: no client request failed, nothing happened twice, and the Gateway
followed every change within 2 s. The harness is `tests/chaos.py`, shared
with `bench/bench_chaos.py`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.chaos import ChaosOptions, Cluster, run_chaos, running_cluster
from tests.conftest import require_tools
from tests.wgtools import Gateway, gateway_in_namespace

pytestmark = pytest.mark.e2e


def test_killing_cores_under_load_fails_no_request_and_repeats_no_effect(fresh_db_url, tmp_path):
    require_tools("wireguard-go", "wg", "ip", "nft", root=True)
    options = ChaosOptions(seconds=40)
    with (
        gateway_in_namespace(tmp_path) as gateway,
        running_cluster(fresh_db_url, tmp_path, options, [gateway]) as (cluster, mail),
        _logs_on_failure(cluster, gateway),
    ):
        result = asyncio.run(run_chaos(cluster, mail, options))
        summary = result.summary()
        for name, value in summary.items():
            print(f"{name}: {value}")
        print("slowest requests:", *result.slowest(), sep="\n  ")

        assert result.problems == []
        # The run did what it claims: Cores died under requests, every kind of
        # effect happened, sessions were ended by the job, and the Gateway had
        # changes to follow.
        assert len(result.ledger.kills) >= 6, summary
        assert summary["requests re-sent to another Core"] >= 1, summary
        assert summary["enrollments"] >= 15, summary
        assert summary["MFA connects"] >= 40, summary
        assert summary["by kind"]["poll"] >= 500, summary
        assert summary["sessions ended"].get("never connected", 0) >= 1, summary
        assert summary["peer changes seen"] >= 40, summary
        assert summary["mail delivered"] >= 2 * summary["enrollments"], summary


@contextmanager
def _logs_on_failure(cluster: Cluster, gateway: Gateway) -> Iterator[None]:
    try:
        yield
    except BaseException:
        for node in cluster.logs():
            print(f"\n----- {node.name} -----\n{node.tail()}")
        print(f"\n----- gateway -----\n{gateway.log()}")
        raise
