"""Chaos benchmark: Cores killed with SIGKILL every few seconds under steady client load.

The long form of `tests/e2e/test_chaos.py`, with the same harness
(`tests/chaos.py`): an embedded PostgreSQL started for the run, `--cores`
`defguard core` and `--edges` `defguard edge` processes, `--gateways`
`defguard gateway` processes (each in its own network namespace, userspace
WireGuard) serving one location with internal MFA, and an SMTP server that
counts what it receives. For `--seconds`, this script enrolls users (admin
REST for the token, then the three Edge steps), passes VPN-client MFA
(`client-mfa/start` + `finish` with TOTP) and polls configurations through
the Edges in turn, while a random Core linked to every Edge is killed every
`--kill-every` seconds and started again `--down-for` seconds later.

Then it checks, in PostgreSQL and on the Gateways: every client request
answered 200; each device, MFA session, stored Edge result, job and e-mail
exists as often as the successful requests say; each Gateway showed only
peer states the database wanted within the last 2 s.

Prints requests served per kind, kills, failures, duplicates found, latency
overall and of requests in flight at the moment of a kill, and the Gateways'
apply lag. Exits 1 if any check failed.

Needs root, wireguard-go, wg, ip and nft for the Gateways (`--gateways 0`
runs without them and without the Gateway check). From the repository root:

    sudo .venv/bin/python bench/bench_chaos.py [--seconds 300] [--gateways 1]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import psycopg
from psycopg import sql
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.chaos import ChaosOptions, ChaosResult, run_chaos, running_cluster
from tests.wgtools import gateway_in_namespace

from defguard.db.embedded import ensure_server
from defguard.db.migrate import upgrade


def parse_args() -> argparse.Namespace:
    defaults = ChaosOptions()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--cores", type=int, default=defaults.cores)
    parser.add_argument("--edges", type=int, default=defaults.edges)
    parser.add_argument("--gateways", type=int, default=defaults.gateways)
    parser.add_argument("--poll-rate", type=float, default=defaults.poll_rate)
    parser.add_argument("--mfa-rate", type=float, default=defaults.mfa_rate)
    parser.add_argument("--enroll-rate", type=float, default=defaults.enroll_rate)
    parser.add_argument(
        "--mfa-users",
        type=int,
        default=None,
        help="Users with TOTP (default: enough for --mfa-rate, each passing MFA once per step).",
    )
    parser.add_argument(
        "--kill-every", default="3,5", help="Seconds between kills: MIN,MAX (uniform)."
    )
    parser.add_argument("--down-for", type=float, default=defaults.down_for)
    parser.add_argument(
        "--kill-in-flight",
        type=int,
        default=defaults.kill_in_flight,
        help="A kill waits (up to 1 s) for this many client requests in flight.",
    )
    parser.add_argument(
        "--kill-starting",
        action="store_true",
        help="Also kill Cores that are still starting up, not only linked ones.",
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--keep",
        action="store_true",
        help="Keep the working directory (process logs) even when every check passed.",
    )
    return parser.parse_args()


def options_from(args: argparse.Namespace) -> ChaosOptions:
    low, high = (float(x) for x in args.kill_every.split(","))
    return ChaosOptions(
        seconds=args.seconds,
        cores=args.cores,
        edges=args.edges,
        gateways=args.gateways,
        mfa_users=args.mfa_users or max(60, int(args.mfa_rate * 30 * 1.5)),
        poll_rate=args.poll_rate,
        mfa_rate=args.mfa_rate,
        enroll_rate=args.enroll_rate,
        kill_every=(low, high),
        down_for=args.down_for,
        kill_in_flight=args.kill_in_flight,
        kill_starting=args.kill_starting,
        seed=args.seed,
    )


def report(result: ChaosResult) -> None:
    console = Console()
    options = result.options
    table = Table(
        title=(
            f"{options.cores} Cores, {options.edges} Edges, {options.gateways} Gateway(s);"
            f" a Core killed every {options.kill_every[0]:g}–{options.kill_every[1]:g} s"
        )
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    for name, value in result.summary().items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        table.add_row(name, str(value))
    console.print(table)
    console.print("slowest requests:")
    for line in result.slowest():
        console.print(f"  {line}", markup=False)
    problems = result.problems
    if problems:
        console.print(f"[bold red]{len(problems)} problem(s):[/]")
        for problem in problems[:50]:
            console.print(f"  {problem}", markup=False)
    else:
        synced = ", gateways in sync" if options.gateways else ""
        console.print(f"[bold green]no failed request, no duplicated effect{synced}[/]")


def main() -> int:
    args = parse_args()
    options = options_from(args)
    workdir = Path(tempfile.mkdtemp(prefix="defguard-bench-chaos-"))
    server = ensure_server(workdir / "pg")
    keep = args.keep
    try:
        admin = server.get_uri("postgres")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier("chaos")))
        url = make_url(admin).set(drivername="postgresql+psycopg", database="chaos")
        upgrade(url)
        with ExitStack() as stack:
            gateways = [
                stack.enter_context(gateway_in_namespace(workdir)) for _ in range(options.gateways)
            ]
            cluster, mail = stack.enter_context(running_cluster(url, workdir, options, gateways))
            print("pids:", {node.name: node.pid for node in cluster.logs()}, flush=True)
            print(f"load for {options.seconds:g} s; logs in {workdir}", flush=True)
            result = asyncio.run(run_chaos(cluster, mail, options))
        report(result)
        keep = keep or bool(result.problems)
        return 1 if result.problems else 0
    except BaseException:
        keep = True
        raise
    finally:
        server.cleanup()
        if keep:
            print(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
