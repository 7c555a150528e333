"""A Gateway with 10,000 peers: full state, single-peer changes, and a live tunnel during changes.

Runs the real `python -m defguard gateway` (userspace wireguard-go, nftables)
in a network namespace and drives it over real gRPC with the test Core harness
of `tests/wgtools.py`; times are measured at the Core, from sending a message
to receiving the Gateway's `Applied`, so they include gRPC and protobuf on both
sides. A real WireGuard client in a second namespace, with a real handshake,
pings the Gateway's VPN address every 10 ms while the single-peer changes are
applied; every echo request must get its reply.

1. full state of 10,000 peers (plus the client) onto an empty interface;
2. the same peers again at a newer revision (a Core reconnecting: a no-op diff);
3. N single-peer changes (half adds, half removes, alternating) under the ping;
4. baselines in the same run, with the stock tools on the same machine:
   `wg setconf` of the same 10,001 peers onto a fresh wireguard-go interface,
   one peer changed with `wg syncconf` of the full config, one peer changed
   with `wg set`, and rebuilding the interface (delete, wireguard-go, setconf,
   address, up) under the same ping, which is what applying a change without
   diffs costs a live tunnel.

Needs root, wireguard-go, wg, ip and nft. Command (from the repository root):

    sudo .venv/bin/python bench/bench_gateway.py [--peers 10000] [--changes 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.wgtools import (
    connected,
    gateway_in_namespace,
    keypair,
    namespace,
    ping,
    start_pinger,
    stop_pinger,
    subnet_octets,
    unique_ifname,
    veth_pair,
    wg_dump,
    wireguard_client,
)

from defguard.proto import gateway_pb2

LISTEN_PORT = 51820
BASELINE_PORT = 51821
VPN_GATEWAY = "10.77.0.1"
VPN_CLIENT = "10.77.0.2"
PING_INTERVAL = 0.01
REBUILDS = 3
# WireGuard re-handshakes 15 s (keepalive + rekey timeout) after replies stop.
REBUILD_RECOVERY = 20.0


def peer_configs(count: int, first: int = 0) -> list[gateway_pb2.PeerConfig]:
    """`count` peers with real keys and one distinct /32 each in 10.128.0.0/9."""
    return [
        gateway_pb2.PeerConfig(
            public_key=keypair()[1],
            allowed_ips=[f"10.{128 + i // 65536}.{i // 256 % 256}.{i % 256}/32"],
        )
        for i in range(first, first + count)
    ]


def wg_config(private_key: str, port: int, peers: list[gateway_pb2.PeerConfig]) -> str:
    lines = ["[Interface]", f"PrivateKey = {private_key}", f"ListenPort = {port}"]
    for p in peers:
        lines += [
            "[Peer]",
            f"PublicKey = {p.public_key}",
            f"AllowedIPs = {', '.join(p.allowed_ips)}",
        ]
    return "\n".join(lines) + "\n"


def run_in(ns: str, *args: str, input_text: str | None = None, check: bool = True) -> None:
    subprocess.run(
        ["ip", "netns", "exec", ns, *args],
        input=input_text,
        text=True,
        check=check,
        capture_output=True,
    )


def timed(ns: str, *args: str, input_text: str | None = None) -> float:
    start = time.perf_counter()
    run_in(ns, *args, input_text=input_text)
    return time.perf_counter() - start


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def bench(peers_count: int, changes: int) -> dict[str, object]:
    results: dict[str, object] = {}
    gw_private, gw_public = keypair()
    client_private, client_public = keypair()
    client_peer = gateway_pb2.PeerConfig(public_key=client_public, allowed_ips=[f"{VPN_CLIENT}/32"])
    started = time.perf_counter()
    peers = peer_configs(peers_count)
    spare = peer_configs(max(changes // 2 + 1, 100), first=peers_count)
    print(f"generated {len(peers) + len(spare)} keys in {time.perf_counter() - started:.1f} s")
    interface = gateway_pb2.InterfaceConfig(
        private_key=gw_private, listen_port=LISTEN_PORT, addresses=[f"{VPN_GATEWAY}/16"]
    )
    second, third = subnet_octets()
    with (
        tempfile.TemporaryDirectory() as tmp,
        gateway_in_namespace(
            Path(tmp), DEFGUARD_STATS_PERIOD="3600", DEFGUARD_LOG_LEVEL="info"
        ) as gateway,
        namespace() as client_ns,
        veth_pair(gateway.ns, client_ns, f"10.{second}.{third}.5/30", f"10.{second}.{third}.6/30"),
        wireguard_client(
            client_ns,
            private_key=client_private,
            peer_public=gw_public,
            endpoint=f"10.{second}.{third}.5:{LISTEN_PORT}",
            address=f"{VPN_CLIENT}/16",
            allowed_ips="10.77.0.0/16",
        ),
    ):
        gateway.start()
        revision = itertools.count(1)
        async with connected(gateway.target) as core:
            state = gateway_pb2.LocationState(
                location_id=1,
                location_name="bench",
                revision=next(revision),
                interface=interface,
                peers=[client_peer, *peers],
            )
            start = time.perf_counter()
            await core.apply_full(state)
            results["full"] = time.perf_counter() - start
            _, on_device = wg_dump(gateway.ns, gateway.ifname)
            assert len(on_device) == peers_count + 1, len(on_device)

            state.revision = next(revision)
            start = time.perf_counter()
            await core.apply_full(state)
            results["full_again"] = time.perf_counter() - start

            assert ping(client_ns, VPN_GATEWAY, count=3) >= 1, "no tunnel"
            session_before = wg_dump(gateway.ns, gateway.ifname)[1][client_public]

            current = state.revision
            adds: list[float] = []
            removes: list[float] = []
            pinger = start_pinger(client_ns, VPN_GATEWAY, PING_INTERVAL)
            await asyncio.sleep(0.5)
            for i in range(changes):
                newcomer = spare[i // 2]
                if i % 2 == 0:
                    update = gateway_pb2.LocationUpdate(
                        location_id=1,
                        base_revision=current,
                        revision=current + 1,
                        interface=interface,
                        upsert_peers=[newcomer],
                    )
                else:
                    update = gateway_pb2.LocationUpdate(
                        location_id=1,
                        base_revision=current,
                        revision=current + 1,
                        interface=interface,
                        remove_peers=[newcomer.public_key],
                    )
                start = time.perf_counter()
                await core.apply_update(update)
                (adds if i % 2 == 0 else removes).append(time.perf_counter() - start)
                current += 1
            await asyncio.sleep(0.5)
            loss = stop_pinger(pinger)
            results["adds"], results["removes"], results["ping"] = adds, removes, loss
            session_after = wg_dump(gateway.ns, gateway.ifname)[1][client_public]
            results["session_kept"] = session_after[4] == session_before[4]

        # Baselines with the stock tools, on an interface of its own in the same namespace.
        config = wg_config(gw_private, BASELINE_PORT, [client_peer, *peers])
        baseline_if = unique_ifname("wgb")
        run_in(gateway.ns, "wireguard-go", baseline_if)
        try:
            results["setconf"] = timed(
                gateway.ns, "wg", "setconf", baseline_if, "/dev/stdin", input_text=config
            )
            syncs = []
            for i in range(20):
                extra = f"[Peer]\nPublicKey = {spare[i].public_key}\nAllowedIPs = 10.99.0.{i}/32\n"
                syncs.append(
                    timed(
                        gateway.ns,
                        "wg",
                        "syncconf",
                        baseline_if,
                        "/dev/stdin",
                        input_text=config + extra,
                    )
                )
            results["syncconf"] = syncs
            results["wg_set"] = [
                timed(
                    gateway.ns,
                    "wg",
                    "set",
                    baseline_if,
                    "peer",
                    spare[i].public_key,
                    "allowed-ips",
                    f"10.98.0.{i}/32",
                )
                for i in range(100)
            ]
        finally:
            run_in(gateway.ns, "ip", "link", "del", baseline_if, check=False)

        # Rebuilding the live interface for a change: what a non-diffing gateway does.
        gateway.stop()
        live_config = wg_config(gw_private, LISTEN_PORT, [client_peer, *peers])

        def rebuild() -> float:
            start = time.perf_counter()
            run_in(gateway.ns, "ip", "link", "del", gateway.ifname, check=False)
            # The old wireguard-go must be gone before a new one can take the name.
            socket_path = Path(f"/var/run/wireguard/{gateway.ifname}.sock")
            while socket_path.exists():
                time.sleep(0.005)
            run_in(gateway.ns, "wireguard-go", gateway.ifname)
            run_in(
                gateway.ns, "wg", "setconf", gateway.ifname, "/dev/stdin", input_text=live_config
            )
            run_in(gateway.ns, "ip", "addr", "add", f"{VPN_GATEWAY}/16", "dev", gateway.ifname)
            run_in(gateway.ns, "ip", "link", "set", gateway.ifname, "up")
            return time.perf_counter() - start

        results["rebuild"] = [rebuild() for _ in range(REBUILDS)]
        # The client still holds a session with the old interface; wait until it handshakes again.
        deadline = time.monotonic() + 40
        while ping(client_ns, VPN_GATEWAY, count=1, wait=1.0) < 1:
            assert time.monotonic() < deadline, "tunnel did not come back after rebuilding"
        pinger = start_pinger(client_ns, VPN_GATEWAY, PING_INTERVAL)
        await asyncio.sleep(0.5)
        rebuild()
        await asyncio.sleep(REBUILD_RECOVERY)
        results["rebuild_ping"] = stop_pinger(pinger)
    return results


def report(results: dict[str, object], peers: int, changes: int) -> None:
    adds: list[float] = results["adds"]  # type: ignore[assignment]
    removes: list[float] = results["removes"]  # type: ignore[assignment]
    ping_stats: dict[str, object] = results["ping"]  # type: ignore[assignment]
    rebuild_ping: dict[str, object] = results["rebuild_ping"]  # type: ignore[assignment]
    syncconf: list[float] = results["syncconf"]  # type: ignore[assignment]
    wg_set: list[float] = results["wg_set"]  # type: ignore[assignment]
    rebuild: list[float] = results["rebuild"]  # type: ignore[assignment]
    full: float = results["full"]  # type: ignore[assignment]
    lost = len(ping_stats["lost"])  # type: ignore[arg-type]

    table = Table(title=f"Gateway with {peers:,} peers (userspace wireguard-go)")
    table.add_column("measure")
    table.add_column("Defguard gateway", justify="right")
    table.add_column("baseline (same run)", justify="right")
    table.add_column("target", justify="right")
    table.add_column("met", justify="center")
    table.add_row(
        "apply full state",
        ms(full),
        f"wg setconf: {ms(results['setconf'])}",  # type: ignore[arg-type]
        "< 5 s",
        "yes" if full < 5 else "NO",
    )
    table.add_row(
        "same full state, newer revision",
        ms(results["full_again"]),  # type: ignore[arg-type]
        "",
        "",
        "",
    )
    add_median, remove_median = statistics.median(adds), statistics.median(removes)
    table.add_row(
        f"add one peer (median of {len(adds)}; p95)",
        f"{ms(add_median)}; {ms(percentile(adds, 0.95))}",
        f"wg set: {ms(statistics.median(wg_set))}; wg syncconf: {ms(statistics.median(syncconf))}",
        "< 20 ms",
        "yes" if add_median < 0.02 else "NO",
    )
    table.add_row(
        f"remove one peer (median of {len(removes)}; p95)",
        f"{ms(remove_median)}; {ms(percentile(removes, 0.95))}",
        "",
        "< 20 ms",
        "yes" if remove_median < 0.02 else "NO",
    )
    table.add_row(
        f"ping every {PING_INTERVAL * 1000:.0f} ms during {changes} changes: lost",
        f"{lost} of {ping_stats['sent']}",
        f"one rebuild ({ms(statistics.median(rebuild))}): "
        f"{len(rebuild_ping['lost'])} of {rebuild_ping['sent']}",  # type: ignore[arg-type]
        "0",
        "yes" if lost == 0 else "NO",
    )
    table.add_row(
        "client handshake kept through all changes",
        "yes" if results["session_kept"] else "NO",
        "",
        "",
        "",
    )
    Console(width=150).print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--peers", type=int, default=10_000)
    parser.add_argument("--changes", type=int, default=1000)
    args = parser.parse_args()
    results = asyncio.run(bench(args.peers, args.changes))
    report(results, args.peers, args.changes)


if __name__ == "__main__":
    main()
