"""Bringing one WireGuard tunnel up and down with `ip`, `wg` and, without the kernel module, `wireguard-go`.

Every command line is built by a pure function so that what the client does
to the machine can be read and tested without root; `Runner` is the only
place that executes anything. The sequence mirrors `wg-quick`: create the
link, `wg setconf` with the config stripped to what `wg` accepts, addresses,
link up, routes. A default route (all traffic) uses wg-quick's policy
routing: the tunnel's own packets carry a firewall mark and skip the tunnel's
table, so the encrypted packets to the endpoint still leave by the old route.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from defguard.client.api import DeviceConfig

FULL_TUNNEL_TABLE = "51820"
FULL_TUNNEL_MARK = "51820"
UAPI_DIR = Path("/var/run/wireguard")
COMMAND_TIMEOUT = 30.0
SRC_VALID_MARK = Path("/proc/sys/net/ipv4/conf/all/src_valid_mark")

# The keys `wg setconf` understands; everything else in a wg-quick file is for wg-quick.
_WG_KEYS = {
    "interface": {"privatekey", "listenport", "fwmark"},
    "peer": {"publickey", "presharedkey", "allowedips", "endpoint", "persistentkeepalive"},
}


# A base64 WireGuard key (private, public or preshared): 32 bytes are 43 characters and `=`.
_KEY = re.compile(r"[A-Za-z0-9+/]{43}=")


class TunnelError(Exception):
    pass


def redact(text: str) -> str:
    """`wg` quotes a key it cannot parse; error messages must not carry private keys or PSKs."""
    return _KEY.sub("(key)", text)


Command = list[str]


# ------------------------------------------------------------------ pure


def host_address(address: str) -> str:
    """A bare tunnel address as a host route (`10.0.0.7` → `10.0.0.7/32`, IPv6 → /128)."""
    address = address.strip()
    if "/" in address:
        return str(ipaddress.ip_interface(address))
    ip = ipaddress.ip_address(address)
    return f"{ip}/{ip.max_prefixlen}"


def family_flag(cidr: str) -> str:
    return "-6" if ":" in cidr else "-4"


def is_default_route(cidr: str) -> bool:
    return ipaddress.ip_network(cidr, strict=False).prefixlen == 0


def tunnel_networks(config: DeviceConfig, *, all_traffic: bool) -> list[str]:
    """The peer's AllowedIPs: the location's networks, or everything when routing all traffic.

    IPv6 default routing only when the device has an IPv6 tunnel address:
    otherwise it would only black-hole the machine's IPv6 traffic.
    """
    if not all_traffic:
        return [str(ipaddress.ip_network(n, strict=False)) for n in config.allowed_networks]
    nets = ["0.0.0.0/0"]
    if any(":" in a for a in config.addresses):
        nets.append("::/0")
    return nets


def render_config(
    config: DeviceConfig,
    private_key: str,
    *,
    preshared_key: str | None = None,
    all_traffic: bool = False,
) -> str:
    """The wg-quick file for one location, as the desktop client would write it."""
    lines = [
        "[Interface]",
        f"PrivateKey = {private_key}",
        f"Address = {', '.join(host_address(a) for a in config.addresses)}",
    ]
    if config.dns and config.dns.strip():
        lines.append(f"DNS = {config.dns.strip()}")
    lines += ["", "[Peer]", f"PublicKey = {config.pubkey}"]
    if preshared_key:
        lines.append(f"PresharedKey = {preshared_key}")
    networks = tunnel_networks(config, all_traffic=all_traffic)
    if networks:
        lines.append(f"AllowedIPs = {', '.join(networks)}")
    lines.append(f"Endpoint = {config.endpoint}")
    if config.keepalive_interval:
        lines.append(f"PersistentKeepalive = {config.keepalive_interval}")
    return "\n".join(lines)


def strip_config(text: str) -> str:
    """What `wg-quick strip` prints: the config without Address, DNS, MTU and hooks."""
    out: list[str] = []
    section: str | None = None
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip().lower()
            out.append(line)
            continue
        key = line.split("=", 1)[0].strip().lower()
        if section in _WG_KEYS and key in _WG_KEYS[section]:
            out.append(line)
    return "\n".join(out) + "\n"


def kernel_link_command(ifname: str) -> Command:
    return ["ip", "link", "add", "dev", ifname, "type", "wireguard"]


def userspace_command(ifname: str) -> Command:
    return ["wireguard-go", ifname]


def setconf_command(ifname: str) -> Command:
    return ["wg", "setconf", ifname, "/dev/stdin"]


def up_commands(ifname: str, addresses: Sequence[str], routes: Sequence[str]) -> list[Command]:
    """Addresses, link up, routes; default routes through the tunnel's own table."""
    commands: list[Command] = []
    for address in addresses:
        cidr = host_address(address)
        commands.append(["ip", family_flag(cidr), "address", "add", cidr, "dev", ifname])
    commands.append(["ip", "link", "set", "dev", ifname, "up"])
    defaults = [r for r in routes if is_default_route(r)]
    for route in routes:
        if not is_default_route(route):
            commands.append(["ip", family_flag(route), "route", "replace", route, "dev", ifname])
    if defaults:
        commands.append(["wg", "set", ifname, "fwmark", FULL_TUNNEL_MARK])
    for route in defaults:
        flag = family_flag(route)
        commands += [
            ["ip", flag, "route", "add", route, "dev", ifname, "table", FULL_TUNNEL_TABLE],
            [
                "ip",
                flag,
                "rule",
                "add",
                "not",
                "fwmark",
                FULL_TUNNEL_MARK,
                "table",
                FULL_TUNNEL_TABLE,
            ],
            ["ip", flag, "rule", "add", "table", "main", "suppress_prefixlength", "0"],
        ]
    return commands


def down_commands(ifname: str, routes: Sequence[str]) -> list[Command]:
    """Policy rules outlive the link, so they go first; the link takes addresses and routes."""
    commands: list[Command] = []
    for route in routes:
        if is_default_route(route):
            flag = family_flag(route)
            commands += [
                ["ip", flag, "rule", "delete", "table", FULL_TUNNEL_TABLE],
                ["ip", flag, "rule", "delete", "table", "main", "suppress_prefixlength", "0"],
            ]
    commands.append(["ip", "link", "delete", "dev", ifname])
    return commands


def show_dump_command(ifname: str) -> Command:
    return ["wg", "show", ifname, "dump"]


@dataclass(frozen=True)
class PeerStatus:
    public_key: str
    endpoint: str
    latest_handshake: int  # Unix seconds, 0 = never
    rx_bytes: int
    tx_bytes: int


def parse_dump(text: str) -> list[PeerStatus]:
    """The peer lines of `wg show <if> dump` (the first line is the interface and holds its key)."""
    peers = []
    for line in text.splitlines()[1:]:
        fields = line.split("\t")
        if len(fields) < 8:
            continue
        key, _psk, endpoint, _allowed, handshake, rx, tx = fields[:7]
        peers.append(
            PeerStatus(
                public_key=key,
                endpoint="" if endpoint == "(none)" else endpoint,
                latest_handshake=int(handshake),
                rx_bytes=int(rx),
                tx_bytes=int(tx),
            )
        )
    return peers


# ------------------------------------------------------------------ execution


class Runner:
    """Runs the commands above; the only part of the client that changes the machine."""

    def run(self, command: Command, *, input_text: str | None = None) -> str:
        env = dict(os.environ)
        # Debian's wireguard-go refuses to start where the kernel module exists unless told.
        env["WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD"] = "1"
        env.pop("WG_PROCESS_FOREGROUND", None)
        try:
            result = subprocess.run(  # noqa: S603 - fixed argument lists built above
                command,
                input=input_text,
                capture_output=True,
                text=True,
                env=env,
                timeout=COMMAND_TIMEOUT,
                check=False,
            )
        except FileNotFoundError as exc:
            raise TunnelError(f"{command[0]} is not installed") from exc
        except subprocess.TimeoutExpired as exc:
            raise TunnelError(f"{' '.join(command[:3])} did not finish in time") from exc
        if result.returncode != 0:
            detail = redact((result.stderr or result.stdout).strip())
            raise TunnelError(f"{' '.join(command[:4])} failed: {detail}")
        return result.stdout

    def link_exists(self, ifname: str) -> bool:
        try:
            self.run(["ip", "link", "show", "dev", ifname])
        except TunnelError:
            return False
        return True

    def create_interface(self, ifname: str, *, userspace: bool = False) -> str:
        """`kernel` or `userspace`: the kernel module when it is there, else wireguard-go."""
        if not userspace:
            try:
                self.run(kernel_link_command(ifname))
                return "kernel"
            except TunnelError as kernel_error:
                kernel_problem = str(kernel_error)
        else:
            kernel_problem = ""
        socket = UAPI_DIR / f"{ifname}.sock"
        # A wireguard-go whose link was just deleted may still be exiting and hold the socket.
        _wait_gone(socket)
        try:
            self.run(userspace_command(ifname))
        except TunnelError as exc:
            if kernel_problem:
                raise TunnelError(f"{kernel_problem}; and {exc}") from exc
            raise
        return "userspace"

    def bring_up(
        self,
        ifname: str,
        wg_config: str,
        addresses: Sequence[str],
        routes: Sequence[str],
        *,
        userspace: bool = False,
    ) -> str:
        """Up completely or not at all: any failure after the link exists removes it again."""
        if self.link_exists(ifname):
            raise TunnelError(f"interface {ifname} already exists")
        backend = self.create_interface(ifname, userspace=userspace)
        if "0.0.0.0/0" in routes:
            # Replies to marked packets fail reverse-path filtering without it (as in wg-quick).
            with contextlib.suppress(OSError):
                SRC_VALID_MARK.write_text("1\n")
        try:
            self.run(setconf_command(ifname), input_text=strip_config(wg_config))
            for command in up_commands(ifname, addresses, routes):
                self.run(command)
        except TunnelError:
            self.tear_down(ifname, routes)
            raise
        return backend

    def tear_down(self, ifname: str, routes: Sequence[str]) -> bool:
        """Best effort, every step: whatever is already gone is not an error. True if a link was removed."""
        removed = False
        for command in down_commands(ifname, routes):
            try:
                self.run(command)
            except TunnelError:
                continue
            if command[:3] == ["ip", "link", "delete"]:
                removed = True
        socket = UAPI_DIR / f"{ifname}.sock"
        if not _wait_gone(socket):
            with contextlib.suppress(OSError):
                socket.unlink()
        return removed

    def peers(self, ifname: str) -> list[PeerStatus]:
        return parse_dump(self.run(show_dump_command(ifname)))


def _wait_gone(path: Path, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
