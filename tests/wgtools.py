"""Real WireGuard checks for tests: load a config into a `wireguard-go` interface in a namespace."""

from __future__ import annotations

import base64
import contextlib
import itertools
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

_ids = itertools.count()


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
