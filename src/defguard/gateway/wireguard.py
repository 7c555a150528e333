"""The WireGuard data plane: one interface, changed one peer at a time.

Two backends share everything but the way WireGuard itself is configured:

* `UserspaceBackend` runs `wireguard-go <ifname>` (daemonised: it keeps running
  whatever happens to Core connections, and even to this process) and talks to
  its UAPI socket `/var/run/wireguard/<ifname>.sock` directly. One peer change
  is one short `set=1` transaction on an open socket, which is what keeps a
  single change in the low milliseconds and a 10,000-peer state in one write.
* `KernelBackend` creates the interface with `ip link add <ifname> type
  wireguard` and configures it through `wg addconf` / `wg set`, which speak
  netlink to the kernel. It is deliberately small: the machines this project
  is developed and tested on have no WireGuard module, so only its
  configuration commands are exercised (against a wireguard-go interface,
  where `wg` speaks UAPI instead), never its interface creation.

Neither backend ever replaces the peer list or restarts the interface:
`wg addconf` and UAPI `set=1` without `replace_peers` leave every peer they do
not name untouched, so other peers keep their sessions, handshakes and counters.
Addresses and MTU go through `ip`, the same for both.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from defguard.gateway.state import (
    ZERO_KEY,
    InterfaceChange,
    InterfaceSpec,
    PeerChange,
    PeerSpec,
    Plan,
)
from defguard.logs import get_logger

log = get_logger(__name__)

UAPI_DIR = Path("/var/run/wireguard")
COMMAND_TIMEOUT = 60.0
# Peers removed per `wg set` command line, far below the kernel's argument-size limits.
REMOVE_CHUNK = 256
# What `ip addr del` says, depending on its version, when the address is not there.
ADDRESS_ABSENT = ("Address not found", "Cannot assign requested address")


class WireGuardError(RuntimeError):
    pass


@dataclass(frozen=True)
class PeerStats:
    public_key: str
    endpoint: str
    rx_bytes: int
    tx_bytes: int
    latest_handshake: int
    allowed_ips: tuple[str, ...]


@dataclass(frozen=True)
class DeviceDump:
    """What the device reports: its own settings and each peer with counters."""

    private_key: str
    listen_port: int
    fwmark: int
    peers: tuple[tuple[PeerSpec, PeerStats], ...]


async def run(*args: str, input_text: str | None = None, check: bool = True) -> str:
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.PIPE if input_text is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(
            proc.communicate(input_text.encode() if input_text is not None else None),
            COMMAND_TIMEOUT,
        )
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise WireGuardError(f"{args[0]} timed out") from None
    if check and proc.returncode != 0:
        raise WireGuardError(
            f"{' '.join(args[:4])} failed ({proc.returncode}): {err.decode(errors='replace').strip()}"
        )
    return out.decode()


def key_to_hex(key: str) -> str:
    return base64.b64decode(key).hex()


def hex_to_key(value: str) -> str:
    return base64.b64encode(bytes.fromhex(value)).decode()


ZERO_HEX = "0" * 64


class WireGuardBackend(ABC):
    kind: str

    def __init__(self, ifname: str) -> None:
        self.ifname = ifname

    # ------------------------------------------------------------ interface

    async def link(self) -> dict[str, object] | None:
        """`ip -d -j link show` of the interface, or None when it does not exist."""
        out = await run("ip", "-d", "-j", "link", "show", "dev", self.ifname, check=False)
        try:
            links = json.loads(out) if out.strip() else []
        except json.JSONDecodeError:
            return None
        return links[0] if links else None

    async def ifindex(self) -> int | None:
        link = await self.link()
        return int(link["ifindex"]) if link else None  # type: ignore[call-overload]

    async def create(self) -> None:
        """Create the interface and bring it up, replacing a same-named link this backend cannot drive."""
        if await self.link() is not None:
            log.warning("removing unusable interface", interface=self.ifname)
            await run("ip", "link", "del", "dev", self.ifname, check=False)
        await self._create()
        await self.up()
        log.info("interface created", interface=self.ifname, backend=self.kind)

    async def up(self) -> None:
        await run("ip", "link", "set", "dev", self.ifname, "up")

    async def remove(self) -> None:
        if await self.link() is not None:
            await run("ip", "link", "del", "dev", self.ifname)
        log.info("interface removed", interface=self.ifname)

    async def addresses(self) -> tuple[str, ...]:
        out = await run("ip", "-j", "addr", "show", "dev", self.ifname)
        result: list[str] = []
        for link in json.loads(out):
            for info in link.get("addr_info", []):
                if info.get("scope") == "link":
                    continue
                result.append(f"{info['local']}/{info['prefixlen']}")
        return tuple(result)

    # ------------------------------------------------------------ configuration

    async def apply(self, plan: Plan) -> None:
        """Apply the WireGuard and address part of `plan` (the firewall is not ours)."""
        change = plan.interface
        if (
            change.private_key is not None
            or change.listen_port is not None
            or change.fwmark is not None
            or plan.peers_changed
        ):
            await self._configure(change, plan.add_peers, plan.change_peers, plan.remove_peers)
        for address in change.remove_addresses:
            try:
                await run("ip", "addr", "del", address, "dev", self.ifname)
            except WireGuardError as exc:
                # Already gone (removed by hand, or the interface was recreated) is the goal.
                if not any(text in str(exc) for text in ADDRESS_ABSENT):
                    raise
        for address in change.add_addresses:
            await run("ip", "addr", "replace", address, "dev", self.ifname)
        if change.mtu is not None:
            await run("ip", "link", "set", "dev", self.ifname, "mtu", str(change.mtu))

    async def read_state(self) -> tuple[InterfaceSpec | None, dict[str, PeerSpec]]:
        """The interface and peers as the device holds them, for adopting an existing interface."""
        dump = await self.dump()
        link = await self.link()
        interface = None
        if dump.private_key:
            interface = InterfaceSpec(
                private_key=dump.private_key,
                listen_port=dump.listen_port,
                addresses=await self.addresses(),
                mtu=int(link["mtu"]) if link else 0,  # type: ignore[call-overload]
                fwmark=dump.fwmark,
            )
        return interface, {spec.public_key: spec for spec, _ in dump.peers}

    async def peer_stats(self) -> list[PeerStats]:
        return [stats for _, stats in (await self.dump()).peers]

    @abstractmethod
    async def usable(self) -> bool:
        """Whether an interface of this name exists and this backend can configure it."""

    @abstractmethod
    async def _create(self) -> None: ...

    @abstractmethod
    async def _configure(
        self,
        interface: InterfaceChange,
        add: Sequence[PeerSpec],
        change: Sequence[PeerChange],
        remove: Sequence[str],
    ) -> None: ...

    @abstractmethod
    async def dump(self) -> DeviceDump: ...

    async def close(self) -> None:  # noqa: B027 - most backends hold no connection
        """Release connections to the device; the device itself stays."""


# ---------------------------------------------------------------- userspace


def _uapi_peer(new: PeerSpec, old: PeerSpec | None) -> list[str]:
    """UAPI lines for one peer; an existing peer gets only the fields that differ."""
    lines = [f"public_key={key_to_hex(new.public_key)}"]
    if old is None or old.allowed_ips != new.allowed_ips:
        lines.append("replace_allowed_ips=true")
        lines.extend(f"allowed_ip={ip}" for ip in new.allowed_ips)
    if new.preshared_key != (old.preshared_key if old else ""):
        psk = new.preshared_key
        lines.append(f"preshared_key={key_to_hex(psk) if psk else ZERO_HEX}")
    if new.keepalive_interval != (old.keepalive_interval if old else 0):
        lines.append(f"persistent_keepalive_interval={new.keepalive_interval}")
    return lines


def render_uapi_set(
    interface: InterfaceChange,
    add: Iterable[PeerSpec],
    change: Iterable[PeerChange],
    remove: Iterable[str],
) -> str:
    """One UAPI `set=1` transaction; pure, so what reaches the device is testable."""
    lines = ["set=1"]
    if interface.private_key is not None:
        lines.append(f"private_key={key_to_hex(interface.private_key)}")
    if interface.listen_port is not None:
        lines.append(f"listen_port={interface.listen_port}")
    if interface.fwmark is not None:
        lines.append(f"fwmark={interface.fwmark}")
    for key in remove:
        lines.append(f"public_key={key_to_hex(key)}")
        lines.append("remove=true")
    for peer in add:
        lines.extend(_uapi_peer(peer, None))
    for item in change:
        lines.extend(_uapi_peer(item.new, item.old))
    return "\n".join(lines) + "\n\n"


def parse_uapi_get(lines: Iterable[str]) -> DeviceDump:
    private_key = ""
    listen_port = 0
    fwmark = 0
    peers: list[tuple[PeerSpec, PeerStats]] = []
    current: dict[str, object] | None = None

    def finish() -> None:
        if current is None:
            return
        allowed = tuple(sorted(current["allowed"]))  # type: ignore[call-overload]
        key = str(current["public_key"])
        peers.append(
            (
                PeerSpec(
                    public_key=key,
                    allowed_ips=allowed,
                    preshared_key=str(current["psk"]),
                    keepalive_interval=int(current["keepalive"]),  # type: ignore[call-overload]
                ),
                PeerStats(
                    public_key=key,
                    endpoint=str(current["endpoint"]),
                    rx_bytes=int(current["rx"]),  # type: ignore[call-overload]
                    tx_bytes=int(current["tx"]),  # type: ignore[call-overload]
                    latest_handshake=int(current["handshake"]),  # type: ignore[call-overload]
                    allowed_ips=allowed,
                ),
            )
        )

    for line in lines:
        name, _, value = line.partition("=")
        if name == "public_key":
            finish()
            current = {
                "public_key": hex_to_key(value),
                "allowed": [],
                "psk": "",
                "keepalive": 0,
                "endpoint": "",
                "rx": 0,
                "tx": 0,
                "handshake": 0,
            }
        elif current is None:
            if name == "private_key":
                private_key = hex_to_key(value)
            elif name == "listen_port":
                listen_port = int(value)
            elif name == "fwmark":
                fwmark = int(value)
        elif name == "allowed_ip":
            current["allowed"].append(value)  # type: ignore[attr-defined]
        elif name == "preshared_key":
            current["psk"] = "" if value == ZERO_HEX else hex_to_key(value)
        elif name == "persistent_keepalive_interval":
            current["keepalive"] = int(value)
        elif name == "endpoint":
            current["endpoint"] = value
        elif name == "rx_bytes":
            current["rx"] = int(value)
        elif name == "tx_bytes":
            current["tx"] = int(value)
        elif name == "last_handshake_time_sec":
            current["handshake"] = int(value)
    finish()
    return DeviceDump(private_key, listen_port, fwmark, tuple(peers))


class UapiClient:
    """One open connection to a wireguard-go control socket, reopened when it breaks."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = asyncio.Lock()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_unix_connection(
                str(self.path), limit=256 * 1024 * 1024
            )
        return self._reader, self._writer

    async def request(self, text: str) -> list[str]:
        """Send one operation and return its response lines without the final `errno`."""
        async with self._lock:
            for attempt in (1, 2):
                try:
                    reader, writer = await self._connect()
                    writer.write(text.encode())
                    await writer.drain()
                    raw = await asyncio.wait_for(reader.readuntil(b"\n\n"), COMMAND_TIMEOUT)
                    break
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                    await self.close()
                    # A set is not retried: part of it may already have been applied.
                    if attempt == 2 or not text.startswith("get=1"):
                        raise WireGuardError(f"UAPI {self.path}: {exc}") from exc
        lines = raw.decode().splitlines()
        errno = 0
        if lines and lines[-1].startswith("errno="):
            errno = int(lines.pop().partition("=")[2])
        if errno:
            raise WireGuardError(f"UAPI {self.path}: errno={errno}")
        return lines

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()


class UserspaceBackend(WireGuardBackend):
    kind = "userspace"

    def __init__(self, ifname: str, *, uapi_dir: Path = UAPI_DIR) -> None:
        super().__init__(ifname)
        self.socket_path = uapi_dir / f"{ifname}.sock"
        self.uapi = UapiClient(self.socket_path)

    async def usable(self) -> bool:
        link = await self.link()
        if link is None or not self.socket_path.exists():
            return False
        try:
            await self.uapi.request("get=1\n\n")
        except WireGuardError:
            return False
        return True

    async def _create(self) -> None:
        await self.uapi.close()
        # A wireguard-go whose link was just deleted may still be exiting and hold the socket.
        for _ in range(200):
            if not self.socket_path.exists():
                break
            await asyncio.sleep(0.025)
        env = dict(os.environ)
        # The Debian build refuses to start on kernels with WireGuard unless told so.
        env["WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD"] = "1"
        env.pop("WG_PROCESS_FOREGROUND", None)
        proc = await asyncio.create_subprocess_exec(
            "wireguard-go",
            self.ifname,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), COMMAND_TIMEOUT)
        if proc.returncode != 0:
            raise WireGuardError(f"wireguard-go {self.ifname} failed: {out.decode().strip()}")
        await self.uapi.close()

    async def _configure(
        self,
        interface: InterfaceChange,
        add: Sequence[PeerSpec],
        change: Sequence[PeerChange],
        remove: Sequence[str],
    ) -> None:
        await self.uapi.request(render_uapi_set(interface, add, change, remove))

    async def dump(self) -> DeviceDump:
        return parse_uapi_get(await self.uapi.request("get=1\n\n"))

    async def remove(self) -> None:
        await self.uapi.close()
        await super().remove()

    async def close(self) -> None:
        await self.uapi.close()


# ---------------------------------------------------------------- kernel


def render_addconf(interface: InterfaceChange, peers: Iterable[PeerSpec]) -> str:
    """A `wg addconf` file: it updates the peers it names and leaves every other peer alone.

    Every `[Peer]` section replaces that peer's allowed IPs (that is how `wg`
    parses a section), so each section carries the peer's complete settings.
    """
    lines: list[str] = []
    if (
        interface.private_key is not None
        or interface.listen_port is not None
        or interface.fwmark is not None
    ):
        lines.append("[Interface]")
        if interface.private_key is not None:
            lines.append(f"PrivateKey = {interface.private_key}")
        if interface.listen_port is not None:
            lines.append(f"ListenPort = {interface.listen_port}")
        if interface.fwmark is not None:
            lines.append(f"FwMark = {interface.fwmark or 'off'}")
    for peer in peers:
        lines.append("[Peer]")
        lines.append(f"PublicKey = {peer.public_key}")
        if peer.allowed_ips:
            lines.append(f"AllowedIPs = {', '.join(peer.allowed_ips)}")
        lines.append(f"PresharedKey = {peer.preshared_key or ZERO_KEY}")
        lines.append(f"PersistentKeepalive = {peer.keepalive_interval or 'off'}")
    return "\n".join(lines) + "\n"


def parse_wg_dump(text: str) -> DeviceDump:
    """`wg show <ifname> dump`: the interface line, then one tab-separated line per peer."""
    rows = [line.split("\t") for line in text.splitlines() if line]
    if not rows:
        return DeviceDump("", 0, 0, ())
    head = rows[0]
    peers: list[tuple[PeerSpec, PeerStats]] = []
    for row in rows[1:]:
        key, psk, endpoint, allowed, handshake, rx, tx, keepalive = row[:8]
        allowed_ips = tuple(sorted(a for a in allowed.split(",") if a and a != "(none)"))
        peers.append(
            (
                PeerSpec(
                    public_key=key,
                    allowed_ips=allowed_ips,
                    preshared_key="" if psk == "(none)" else psk,
                    keepalive_interval=0 if keepalive == "off" else int(keepalive),
                ),
                PeerStats(
                    public_key=key,
                    endpoint="" if endpoint == "(none)" else endpoint,
                    rx_bytes=int(rx),
                    tx_bytes=int(tx),
                    latest_handshake=int(handshake),
                    allowed_ips=allowed_ips,
                ),
            )
        )
    return DeviceDump(
        private_key="" if head[0] == "(none)" else head[0],
        listen_port=int(head[2]),
        fwmark=0 if head[3] == "off" else int(head[3], 0),
        peers=tuple(peers),
    )


class KernelBackend(WireGuardBackend):
    """Kernel WireGuard, configured with `wg` (netlink). Not exercised on machines without the module."""

    kind = "kernel"

    async def usable(self) -> bool:
        link = await self.link()
        if link is None:
            return False
        info = link.get("linkinfo") or {}
        return isinstance(info, dict) and info.get("info_kind") == "wireguard"

    async def _create(self) -> None:
        await run("ip", "link", "add", "dev", self.ifname, "type", "wireguard")

    async def _configure(
        self,
        interface: InterfaceChange,
        add: Sequence[PeerSpec],
        change: Sequence[PeerChange],
        remove: Sequence[str],
    ) -> None:
        remove = list(remove)
        for start in range(0, len(remove), REMOVE_CHUNK):
            args: list[str] = []
            for key in remove[start : start + REMOVE_CHUNK]:
                args += ["peer", key, "remove"]
            await run("wg", "set", self.ifname, *args)
        peers = [*add, *(item.new for item in change)]
        if peers or interface.changed_fields - {"addresses", "mtu"}:
            await run(
                "wg",
                "addconf",
                self.ifname,
                "/dev/stdin",
                input_text=render_addconf(interface, peers),
            )

    async def dump(self) -> DeviceDump:
        return parse_wg_dump(await run("wg", "show", self.ifname, "dump"))


def _module_loaded() -> bool:
    return Path("/sys/module/wireguard").exists()


async def kernel_has_wireguard() -> bool:
    """Whether the kernel can create WireGuard links, probed with a throwaway interface."""
    if _module_loaded():
        return True
    probe = f"dgprobe{os.getpid() % 100000}"
    try:
        await run("ip", "link", "add", "dev", probe, "type", "wireguard")
    except (WireGuardError, OSError):
        return False
    await run("ip", "link", "del", "dev", probe, check=False)
    return True


async def select_backend(ifname: str, *, force_userspace: bool) -> WireGuardBackend:
    if force_userspace:
        return UserspaceBackend(ifname)
    kernel = KernelBackend(ifname)
    if await kernel.usable() or await kernel_has_wireguard():
        return kernel
    log.info("kernel has no WireGuard; using wireguard-go", interface=ifname)
    return UserspaceBackend(ifname)
