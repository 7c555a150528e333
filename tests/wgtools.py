"""Real WireGuard for tests and benchmarks: namespaces, wireguard-go, ping, and a Gateway with a test Core.

`TestCore` is a test harness standing in for a Core on the Gateway protocol;
`gateway_in_namespace` runs the real `python -m defguard gateway` inside a
network namespace that the test process reaches over a veth pair.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from defguard import __version__
from defguard.proto import common_pb2, gateway_pb2, gateway_pb2_grpc

_ids = itertools.count()
REPO = Path(__file__).resolve().parents[1]


def keypair() -> tuple[str, str]:
    key = X25519PrivateKey.generate()
    private = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(private).decode(), base64.b64encode(public).decode()


def run(*args: str, input: str | None = None) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True, input=input).stdout


@contextlib.contextmanager
def namespace() -> Iterator[str]:
    name = f"dgt{os.getpid() % 100000}n{next(_ids)}"
    run("ip", "netns", "add", name)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


@contextlib.contextmanager
def userspace_interface(ns: str) -> Iterator[str]:
    """A `wireguard-go` interface inside `ns`; names are unique because control sockets are shared."""
    ifname = f"wgt{os.getpid() % 10000}x{next(_ids)}"
    run("ip", "netns", "exec", ns, "wireguard-go", ifname)
    try:
        yield ifname
    finally:
        subprocess.run(
            ["ip", "netns", "exec", ns, "ip", "link", "del", ifname],
            check=False,
            capture_output=True,
        )
        with contextlib.suppress(FileNotFoundError):
            Path(f"/var/run/wireguard/{ifname}.sock").unlink()


def load_client_config(config_text: str, private_key: str) -> dict[str, str]:
    """Feed a device config to real `wg` the way `wg-quick` would, and read back what it holds.

    The config carries the placeholder `YOUR_PRIVATE_KEY`; the user puts their
    key there, and so does this helper. `wg-quick strip` removes the
    wg-quick-only lines (Address, DNS, MTU), and `wg setconf` must accept the rest.
    Returns the peer's fields as `wg show dump` reports them.
    """
    text = config_text.replace("YOUR_PRIVATE_KEY", private_key)
    with tempfile.TemporaryDirectory() as tmp, namespace() as ns, userspace_interface(ns) as ifname:
        conf = Path(tmp) / f"{ifname}.conf"
        conf.write_text(text + "\n")
        conf.chmod(0o600)
        stripped = run("wg-quick", "strip", str(conf))
        wgconf = Path(tmp) / "stripped.conf"
        wgconf.write_text(stripped)
        run("ip", "netns", "exec", ns, "wg", "setconf", ifname, str(wgconf))
        dump = run("ip", "netns", "exec", ns, "wg", "show", ifname, "dump").splitlines()
    iface = dump[0].split("\t")
    peer = dump[1].split("\t")
    return {
        "interface_private_key": iface[0],
        "public_key": peer[0],
        "endpoint": peer[2],
        "allowed_ips": peer[3],
        "persistent_keepalive": peer[7],
    }


# ---------------------------------------------------------------- namespaces, links and traffic


def unique_ifname(prefix: str = "wgt") -> str:
    """An interface name no other test (or test process) uses: userspace sockets share one directory."""
    return f"{prefix}{os.getpid() % 100000}x{next(_ids)}"[:15]


def ns_run(ns: str, *args: str, input: str | None = None, check: bool = True) -> str:
    result = subprocess.run(
        ["ip", "netns", "exec", ns, *args],
        capture_output=True,
        text=True,
        input=input,
        check=False,
        timeout=60,
        cwd=REPO,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} in {ns} failed: {result.stderr.strip()}")
    return result.stdout


def subnet_octets() -> tuple[int, int]:
    """Second and third octets of a 10.x.y.0/24 that this test process alone uses."""
    pid = os.getpid()
    return 200 + pid % 50, (pid // 50 + next(_ids)) % 250


@contextlib.contextmanager
def veth_pair(ns_a: str | None, ns_b: str, addr_a: str, addr_b: str) -> Iterator[tuple[str, str]]:
    """A veth pair between `ns_a` (None: the test's own namespace) and `ns_b`, addressed and up.

    Deleting either namespace deletes the pair; the explicit delete covers `ns_a=None`.
    """
    name_a = unique_ifname("vta")
    name_b = unique_ifname("vtb")
    prefix = ["ip"] if ns_a is None else ["ip", "-n", ns_a]
    run(*prefix, "link", "add", name_a, "type", "veth", "peer", "name", name_b, "netns", ns_b)
    try:
        run(*prefix, "addr", "add", addr_a, "dev", name_a)
        run(*prefix, "link", "set", name_a, "up")
        run("ip", "-n", ns_b, "addr", "add", addr_b, "dev", name_b)
        run("ip", "-n", ns_b, "link", "set", name_b, "up")
        run("ip", "-n", ns_b, "link", "set", "lo", "up")
        yield name_a, name_b
    finally:
        subprocess.run([*prefix, "link", "del", name_a], check=False, capture_output=True)


@contextlib.contextmanager
def wireguard_client(
    ns: str,
    *,
    private_key: str,
    peer_public: str,
    endpoint: str,
    address: str,
    allowed_ips: str,
) -> Iterator[str]:
    """A wireguard-go client interface in `ns` with one peer (a Gateway), addressed and up."""
    ifname = unique_ifname("wgc")
    ns_run(ns, "wireguard-go", ifname)
    try:
        ns_run(ns, "wg", "set", ifname, "private-key", "/dev/stdin", input=private_key)
        ns_run(
            ns,
            "wg",
            "set",
            ifname,
            "peer",
            peer_public,
            "endpoint",
            endpoint,
            "allowed-ips",
            allowed_ips,
        )
        ns_run(ns, "ip", "addr", "add", address, "dev", ifname)
        ns_run(ns, "ip", "link", "set", ifname, "up")
        yield ifname
    finally:
        subprocess.run(["ip", "-n", ns, "link", "del", ifname], check=False, capture_output=True)


def wg_dump(ns: str, ifname: str) -> tuple[list[str], dict[str, list[str]]]:
    """`wg show dump` of an interface: its own fields and each peer's fields by public key."""
    lines = [line.split("\t") for line in ns_run(ns, "wg", "show", ifname, "dump").splitlines()]
    return lines[0], {peer[0]: peer for peer in lines[1:]}


def ifindex(ns: str, ifname: str) -> int:
    return int(ns_run(ns, "cat", f"/sys/class/net/{ifname}/ifindex").strip())


def ping(ns: str, address: str, *, count: int = 3, interval: float = 0.2, wait: float = 2.0) -> int:
    """ICMP echo from inside `ns`; how many replies came back (no `ping` binary needed)."""
    out = ns_run(
        ns,
        sys.executable,
        "-m",
        "tests.wgtools",
        "ping",
        address,
        str(count),
        str(interval),
        str(wait),
        check=False,
    )
    return json.loads(out)["received"] if out.strip() else 0


def start_pinger(ns: str, address: str, interval: float) -> subprocess.Popen[str]:
    """A continuous ping from `ns` until `stop_pinger`: for measuring loss during changes."""
    return subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            ns,
            sys.executable,
            "-m",
            "tests.wgtools",
            "ping",
            address,
            "0",
            str(interval),
            "2.0",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


def stop_pinger(proc: subprocess.Popen[str]) -> dict[str, Any]:
    """Stop a pinger and return {sent, received, lost: [sequence numbers]}."""
    out, _ = proc.communicate("", timeout=30)
    return json.loads(out)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _icmp_ping(address: str, count: int, interval: float, wait: float) -> dict[str, Any]:
    """Echo requests every `interval` s (`count == 0`: until stdin closes), then `wait` s for replies."""
    ident = os.getpid() & 0xFFFF
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.setblocking(False)
    sent: dict[int, float] = {}
    received: set[int] = set()
    stop_at_eof = count == 0
    if stop_at_eof:
        os.set_blocking(sys.stdin.fileno(), False)
    seq = 0
    next_send = time.monotonic()
    deadline: float | None = None
    while True:
        now = time.monotonic()
        if deadline is None:
            finished = seq >= count if not stop_at_eof else False
            if stop_at_eof:
                try:
                    finished = os.read(sys.stdin.fileno(), 4096) == b""
                except BlockingIOError:
                    finished = False
            if finished:
                deadline = now + wait
            elif now >= next_send:
                seq += 1
                header = struct.pack("!BBHHH", 8, 0, 0, ident, seq & 0xFFFF)
                payload = struct.pack("!d", now) + b"defguard-test" * 3
                packet = struct.pack(
                    "!BBHHH", 8, 0, _checksum(header + payload), ident, seq & 0xFFFF
                )
                with contextlib.suppress(OSError):
                    sock.sendto(packet + payload, (address, 0))
                sent[seq & 0xFFFF] = now
                next_send += interval
        if deadline is not None and (now >= deadline or len(received) == len(sent)):
            break
        timeout = max(0.0, min(next_send - now, 0.05)) if deadline is None else 0.05
        readable, _, _ = select.select([sock], [], [], timeout)
        while readable:
            try:
                data = sock.recv(2048)
            except BlockingIOError:
                break
            ihl = (data[0] & 0x0F) * 4
            icmp_type, _, _, rid, rseq = struct.unpack("!BBHHH", data[ihl : ihl + 8])
            if icmp_type == 0 and rid == ident and rseq in sent:
                received.add(rseq)
    lost = sorted(set(sent) - received)
    return {"sent": len(sent), "received": len(received), "lost": lost}


# ---------------------------------------------------------------- a Gateway and a test Core

GRPC_PORT = 50066
_instances = itertools.count(1)


class TestCore:
    """A test harness standing in for a Core: one `Gateway.Connect` stream, recorded replies.

    Stats batches are acknowledged at once unless `auto_ack` is off; every
    other message lands in `inbox` in arrival order.
    """

    __test__ = False

    def __init__(
        self,
        target: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        server_name: str | None = None,
        version: str = __version__,
        component: str = "core",
        auto_ack: bool = True,
    ) -> None:
        self.instance_id = f"test-core-{next(_instances)}"
        self.sender = common_pb2.Peer(
            component=component, version=version, instance_id=self.instance_id
        )
        options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
        if credentials is None:
            self.channel = grpc.aio.insecure_channel(target)
        else:
            self.channel = grpc.aio.secure_channel(target, credentials, options=options)
        self.auto_ack = auto_ack
        self.inbox: asyncio.Queue[gateway_pb2.GatewayToCore] = asyncio.Queue()
        self.stats: asyncio.Queue[gateway_pb2.StatsBatch] = asyncio.Queue()
        self.stats_seen: list[str] = []
        self.closed = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self.status: grpc.StatusCode | None = None
        self._call = gateway_pb2_grpc.GatewayStub(self.channel).Connect()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                msg = await self._call.read()
                if msg is grpc.aio.EOF:
                    break
                if msg.WhichOneof("payload") == "stats":
                    self.stats_seen.append(msg.stats.batch_id)
                    await self.stats.put(msg.stats)
                    if self.auto_ack:
                        await self.send(stats_ack=gateway_pb2.StatsAck(batch_id=msg.stats.batch_id))
                else:
                    await self.inbox.put(msg)
            self.status = await self._call.code()
        except grpc.aio.AioRpcError as exc:
            self.status = exc.code()
        except (asyncio.InvalidStateError, grpc.aio.UsageError):
            pass
        finally:
            self.closed.set()

    async def send(self, **payload: object) -> None:
        # grpc.aio allows one write at a time; the reader task acknowledges stats concurrently.
        async with self._write_lock:
            await self._call.write(gateway_pb2.CoreToGateway(sender=self.sender, **payload))  # type: ignore[arg-type]

    async def expect(self, kind: str, timeout: float = 10.0) -> object:
        """The next non-stats message, which must be of `kind`; returns its payload."""
        msg = await asyncio.wait_for(self.inbox.get(), timeout)
        assert msg.WhichOneof("payload") == kind, f"expected {kind}, got {msg}"
        assert msg.sender.component == "gateway" and msg.sender.version == __version__
        return getattr(msg, kind)

    async def nothing_more(self, wait: float = 0.3) -> None:
        await asyncio.sleep(wait)
        assert self.inbox.empty(), f"unexpected message: {self.inbox.get_nowait()}"

    async def apply_full(self, state: gateway_pb2.LocationState) -> gateway_pb2.Applied:
        await self.send(full_state=state)
        applied = await self.expect("applied")
        assert applied.revision == state.revision, applied  # type: ignore[attr-defined]
        return applied  # type: ignore[return-value]

    async def apply_update(self, update: gateway_pb2.LocationUpdate) -> gateway_pb2.Applied:
        await self.send(update=update)
        applied = await self.expect("applied")
        assert applied.revision == update.revision, applied  # type: ignore[attr-defined]
        return applied  # type: ignore[return-value]

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._call.done_writing()
        self._call.cancel()
        await self.channel.close()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(self._reader, 5)


@contextlib.asynccontextmanager
async def connected(target: str, **kwargs: object) -> AsyncIterator[TestCore]:
    core = TestCore(target, **kwargs)  # type: ignore[arg-type]
    try:
        hello = await core.expect("hello")
        core.hello = hello  # type: ignore[attr-defined]
        yield core
    finally:
        await core.close()


# ---------------------------------------------------------------- gateway processes


@dataclass
class Gateway:
    ns: str
    address: str
    ifname: str
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def target(self) -> str:
        return f"{self.address}:{GRPC_PORT}"

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, sys.executable, "-m", "defguard", "gateway"],
            env=self.env,
            stdout=log,
            stderr=log,
            cwd=REPO,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"gateway exited at start:\n{self.log()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.address, GRPC_PORT), timeout=0.5),
            ):
                return
            time.sleep(0.1)
        raise AssertionError(f"gateway did not start listening:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            # The Gateway bounds its shutdown steps at a few seconds each; the kernel can
            # take long to delete an interface just after traffic went through it.
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"gateway did not stop:\n{self.log()}") from None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        subprocess.run(["ip", "-n", self.ns, "link", "del", self.ifname], capture_output=True)
        with contextlib.suppress(FileNotFoundError):
            Path(f"/var/run/wireguard/{self.ifname}.sock").unlink()


@contextlib.contextmanager
def gateway_in_namespace(tmp: Path, **env: str) -> Iterator[Gateway]:
    """A namespace reachable from the test over a veth pair, and a Gateway (not started) in it."""
    second, third = subnet_octets()
    ours, theirs = f"10.{second}.{third}.1", f"10.{second}.{third}.2"
    with namespace() as ns, veth_pair(None, ns, f"{ours}/30", f"{theirs}/30"):
        ifname = unique_ifname("wgg")
        gateway = Gateway(ns=ns, address=theirs, ifname=ifname, log_path=tmp / f"{ifname}.log")
        gateway.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DEFGUARD_", "HEALTH_"))},
            "DEFGUARD_IFNAME": ifname,
            "DEFGUARD_USERSPACE": "true",
            "DEFGUARD_GRPC_BIND_ADDRESS": theirs,
            "DEFGUARD_GRPC_PORT": str(GRPC_PORT),
            "DEFGUARD_GATEWAY_NAME": f"gw-{ifname}",
            "DEFGUARD_LOG_LEVEL": "debug",
            **env,
        }
        try:
            yield gateway
        finally:
            gateway.cleanup()


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "ping":
        result = _icmp_ping(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]))
        print(json.dumps(result))
    else:
        raise SystemExit("usage: python -m tests.wgtools ping ADDRESS COUNT INTERVAL WAIT")
