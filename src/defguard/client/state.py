"""What the client keeps between runs: one directory per enrolled instance, and active tunnels.

Layout under the state directory (mode 0700)::

    instances/<instance id>/instance.json   Edge URL, instance info, device, polling token, configs
    instances/<instance id>/private.key     the device's WireGuard private key
    tunnels/<ifname>.json                   what `connect` brought up, so `disconnect` can undo it
    tunnels/<ifname>.conf                   the WireGuard config of that tunnel (private key, PSK)

Every file is written 0600 through a temporary file and a rename, so a crash
or a full disk leaves either the old file or the new one, never half of
either, and secrets are never readable by other users even for a moment.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import platformdirs
from pydantic import BaseModel, ConfigDict, ValidationError

from defguard.client.api import Device, DeviceConfig, InstanceInfo

ROOT_STATE_DIR = Path("/var/lib/defguard-client")
DIR_MODE = 0o700
FILE_MODE = 0o600
# Instance ids are UUIDs; anything else must not become a path component.
_SAFE_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")


class StateError(Exception):
    """Missing or unreadable state: a usage problem (exit status 2), not a server failure."""


def default_state_dir() -> Path:
    """Root's tunnels are a system service's; a user's enrollment lives in their config dir."""
    if os.geteuid() == 0:
        return ROOT_STATE_DIR
    return Path(platformdirs.user_config_dir("defguard-client"))


def ensure_dir(path: Path) -> Path:
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(path, DIR_MODE)
    return path


def write_private(path: Path, text: str) -> None:
    """Atomically replace `path` with `text`, readable by the owner only."""
    ensure_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def check_ifname(name: str) -> str:
    if not _IFNAME.fullmatch(name):
        raise StateError(
            f"--ifname: {name!r} is not a valid interface name "
            "(1-15 letters, digits, '_', '.', '-')"
        )
    return name


class _Stored(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Instance(_Stored):
    """One enrolled instance (a Defguard installation) and this machine's device in it."""

    edge_url: str
    info: InstanceInfo
    device: Device
    polling_token: str | None = None
    configs: list[DeviceConfig] = []

    @property
    def id(self) -> str:
        return self.info.id


class Tunnel(_Stored):
    """A tunnel brought up by `connect`: enough to tear it down and to report on it."""

    ifname: str
    instance_id: str
    location_id: int
    location_name: str
    backend: str  # "kernel" or "userspace"
    addresses: list[str]
    routes: list[str]
    full_tunnel: bool = False
    mfa: bool = False
    connected_at: int


@dataclass(frozen=True)
class Location:
    instance: Instance
    config: DeviceConfig


class StateStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    # -- paths

    @property
    def instances_dir(self) -> Path:
        return self.root / "instances"

    @property
    def tunnels_dir(self) -> Path:
        return self.root / "tunnels"

    def instance_dir(self, instance_id: str) -> Path:
        if not _SAFE_ID.fullmatch(instance_id) or instance_id in (".", ".."):
            raise StateError(f"instance id {instance_id!r} cannot be stored")
        return self.instances_dir / instance_id

    def tunnel_record_path(self, ifname: str) -> Path:
        return self.tunnels_dir / f"{check_ifname(ifname)}.json"

    def tunnel_config_path(self, ifname: str) -> Path:
        return self.tunnels_dir / f"{check_ifname(ifname)}.conf"

    # -- instances

    def save_instance(self, instance: Instance, private_key: str | None = None) -> None:
        """The private key first: an instance file always has its key next to it."""
        ensure_dir(self.root)
        ensure_dir(self.instances_dir)
        directory = ensure_dir(self.instance_dir(instance.id))
        if private_key is not None:
            write_private(directory / "private.key", private_key + "\n")
        write_private(directory / "instance.json", instance.model_dump_json(indent=2) + "\n")

    def load_instance(self, instance_id: str) -> Instance | None:
        path = self.instance_dir(instance_id) / "instance.json"
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"cannot read {path}: {exc.strerror}") from exc
        try:
            return Instance.model_validate_json(text)
        except ValidationError as exc:
            raise StateError(f"{path} is damaged: {exc.errors()[0]['msg']}") from exc

    def instances(self) -> list[Instance]:
        if not self.instances_dir.is_dir():
            return []
        found = []
        for child in sorted(self.instances_dir.iterdir()):
            if child.is_dir() and (child / "instance.json").exists():
                instance = self.load_instance(child.name)
                if instance is not None:
                    found.append(instance)
        return found

    def private_key(self, instance_id: str) -> str:
        path = self.instance_dir(instance_id) / "private.key"
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise StateError(
                f"cannot read the device's private key {path}: {exc.strerror}"
            ) from exc

    # -- tunnels

    def save_tunnel(self, tunnel: Tunnel, config_text: str) -> None:
        ensure_dir(self.root)
        ensure_dir(self.tunnels_dir)
        write_private(self.tunnel_config_path(tunnel.ifname), config_text + "\n")
        write_private(self.tunnel_record_path(tunnel.ifname), tunnel.model_dump_json(indent=2))

    def tunnels(self) -> list[Tunnel]:
        if not self.tunnels_dir.is_dir():
            return []
        found = []
        for path in sorted(self.tunnels_dir.glob("*.json")):
            try:
                found.append(Tunnel.model_validate_json(path.read_text(encoding="utf-8")))
            except (OSError, ValidationError):
                continue
        return found

    def tunnel(self, ifname: str) -> Tunnel | None:
        path = self.tunnel_record_path(ifname)
        try:
            return Tunnel.model_validate_json(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValidationError) as exc:
            raise StateError(f"{path} is damaged or unreadable") from exc

    def forget_tunnel(self, ifname: str) -> None:
        """The config first: it holds the secrets."""
        for path in (self.tunnel_config_path(ifname), self.tunnel_record_path(ifname)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    # -- lookups

    def find_locations(self, query: str, instance: str | None = None) -> list[Location]:
        """Locations named `query` (exactly, else case-insensitively) or with id `query`.

        Ids are per instance, so with several instances a number can match more
        than one location; the caller reports that as ambiguous.
        """
        pool = [
            Location(inst, cfg)
            for inst in self.instances()
            if instance is None or instance in (inst.id, inst.info.name)
            for cfg in inst.configs
        ]
        return find_in(pool, query)


def find_in(pool: list[Location], query: str) -> list[Location]:
    exact = [loc for loc in pool if loc.config.network_name == query]
    if exact:
        return exact
    folded = [loc for loc in pool if loc.config.network_name.casefold() == query.casefold()]
    if folded:
        return folded
    if query.isdigit():
        return [loc for loc in pool if loc.config.network_id == int(query)]
    return []
