"""The Gateway's applied state and what to do with each state message from a Core.

Pure: no I/O, no clock. Every Core connected to a Gateway pushes the same
revisions, so most messages a Gateway sees are duplicates; the decision of
whether a message is old, the next step, or evidence of a gap lives here, where
it can be tested exhaustively without WireGuard.

A message that is applied becomes a `Plan`: the smallest set of changes that
turns the current state into the desired one (peers to add, change and remove,
the interface fields that differ, whether the firewall differs). A full
`LocationState` is applied by diffing it against the current state, never by
rebuilding, so a Core reconnecting with its full state disturbs nothing that
already matches.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from defguard.proto import gateway_pb2
from defguard.wireguard.keys import decode_key


class InvalidMessage(ValueError):
    """A state message that cannot be applied at all (bad key, bad CIDR, contradictions)."""


@dataclass(frozen=True)
class InterfaceSpec:
    """The interface settings of a location.

    `mtu == 0` and `listen_port == 0` mean "not managed": the Gateway leaves the
    current value alone rather than resetting it to an arbitrary default.
    """

    private_key: str
    listen_port: int = 0
    addresses: tuple[str, ...] = ()
    mtu: int = 0
    fwmark: int = 0


@dataclass(frozen=True)
class PeerSpec:
    """One peer as WireGuard holds it; allowed IPs are canonical networks, sorted."""

    public_key: str
    allowed_ips: tuple[str, ...] = ()
    preshared_key: str = ""
    keepalive_interval: int = 0


@dataclass(frozen=True)
class GatewayState:
    """What the Gateway has applied (or found on an existing interface at start-up).

    `revision == 0` means "not known to match any revision": after start-up or
    after a failed application. A state in that condition applies the next full
    state whatever its revision, and asks for full state on any update.
    `firewall_known` is False when the firewall on the host may differ from
    `firewall` (start-up, failure), so that the next full state re-applies it.
    """

    location_id: int = 0
    location_name: str = ""
    revision: int = 0
    interface: InterfaceSpec | None = None
    peers: Mapping[str, PeerSpec] = field(default_factory=lambda: MappingProxyType({}))
    firewall: gateway_pb2.FirewallConfig | None = None
    firewall_known: bool = False


@dataclass(frozen=True)
class InterfaceChange:
    """Interface fields to set; None means unchanged."""

    private_key: str | None = None
    listen_port: int | None = None
    fwmark: int | None = None
    mtu: int | None = None
    add_addresses: tuple[str, ...] = ()
    remove_addresses: tuple[str, ...] = ()

    @property
    def changed_fields(self) -> frozenset[str]:
        names = {
            name
            for name in ("private_key", "listen_port", "fwmark", "mtu")
            if getattr(self, name) is not None
        }
        if self.add_addresses or self.remove_addresses:
            names.add("addresses")
        return frozenset(names)

    @property
    def is_empty(self) -> bool:
        return not self.changed_fields


@dataclass(frozen=True)
class PeerChange:
    """A peer that exists and differs; both halves are kept so only differing fields are written."""

    old: PeerSpec
    new: PeerSpec


@dataclass(frozen=True)
class Plan:
    location_id: int
    revision: int
    interface: InterfaceChange
    add_peers: tuple[PeerSpec, ...]
    change_peers: tuple[PeerChange, ...]
    remove_peers: tuple[str, ...]
    firewall_changed: bool
    # The desired firewall; meaningful only when `firewall_changed`.
    firewall: gateway_pb2.FirewallConfig | None
    result: GatewayState

    @property
    def peers_changed(self) -> int:
        return len(self.add_peers) + len(self.change_peers) + len(self.remove_peers)

    @property
    def is_noop(self) -> bool:
        return self.interface.is_empty and not self.peers_changed and not self.firewall_changed


@dataclass(frozen=True)
class Ignore:
    reason: str


@dataclass(frozen=True)
class RequestFullState:
    reason: str


@dataclass(frozen=True)
class Apply:
    plan: Plan


Decision = Ignore | RequestFullState | Apply

ZERO_KEY = "A" * 43 + "="


# ---------------------------------------------------------------- parsing


def _key(value: str, what: str, *, allow_empty: bool = False) -> str:
    if allow_empty and value == "":
        return ""
    if decode_key(value) is None:
        raise InvalidMessage(f"{what} is not a valid WireGuard key")
    return value


def _interface_address(value: str) -> str:
    try:
        return str(ipaddress.ip_interface(value.strip()))
    except ValueError as exc:
        raise InvalidMessage(f"invalid interface address {value!r}") from exc


def _network(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value.strip(), strict=False))
    except ValueError as exc:
        raise InvalidMessage(f"invalid allowed IP {value!r}") from exc


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def parse_interface(msg: gateway_pb2.InterfaceConfig) -> InterfaceSpec:
    if msg.listen_port > 65535:
        raise InvalidMessage(f"listen port {msg.listen_port} out of range")
    return InterfaceSpec(
        private_key=_key(msg.private_key, "interface private key"),
        listen_port=msg.listen_port,
        addresses=_unique(_interface_address(a) for a in msg.addresses),
        mtu=msg.mtu,
        fwmark=msg.fwmark,
    )


def parse_peer(msg: gateway_pb2.PeerConfig) -> PeerSpec:
    if msg.keepalive_interval > 65535:
        raise InvalidMessage(f"keepalive {msg.keepalive_interval} out of range")
    psk = _key(msg.preshared_key, "preshared key", allow_empty=True)
    return PeerSpec(
        public_key=_key(msg.public_key, "peer public key"),
        allowed_ips=tuple(sorted(set(_network(a) for a in msg.allowed_ips))),
        preshared_key="" if psk == ZERO_KEY else psk,
        keepalive_interval=msg.keepalive_interval,
    )


def _parse_peers(msgs: Iterable[gateway_pb2.PeerConfig]) -> dict[str, PeerSpec]:
    peers: dict[str, PeerSpec] = {}
    for msg in msgs:
        peer = parse_peer(msg)
        if peer.public_key in peers:
            raise InvalidMessage(f"peer {peer.public_key} listed twice")
        peers[peer.public_key] = peer
    return peers


def _copy_firewall(msg: gateway_pb2.FirewallConfig) -> gateway_pb2.FirewallConfig:
    copy = gateway_pb2.FirewallConfig()
    copy.CopyFrom(msg)
    return copy


# ---------------------------------------------------------------- diffing


def diff_interface(current: InterfaceSpec | None, desired: InterfaceSpec) -> InterfaceChange:
    """The fields of `desired` that differ from `current` (all of them when nothing is known)."""
    old_addresses = set(current.addresses) if current else set()
    new_addresses = set(desired.addresses)

    private_key = (
        desired.private_key
        if current is None or current.private_key != desired.private_key
        else None
    )
    listen_port = (
        desired.listen_port
        if desired.listen_port and (current is None or current.listen_port != desired.listen_port)
        else None
    )
    mtu = desired.mtu if desired.mtu and (current is None or current.mtu != desired.mtu) else None
    # A new interface starts without a firewall mark, so 0 needs no write.
    fwmark = desired.fwmark if (current.fwmark if current else 0) != desired.fwmark else None
    return InterfaceChange(
        private_key=private_key,
        listen_port=listen_port,
        fwmark=fwmark,
        mtu=mtu,
        add_addresses=tuple(a for a in desired.addresses if a not in old_addresses),
        remove_addresses=tuple(
            a for a in (current.addresses if current else ()) if a not in new_addresses
        ),
    )


def _merged_interface(current: InterfaceSpec | None, desired: InterfaceSpec) -> InterfaceSpec:
    """What the interface holds after applying `desired`: unmanaged fields keep their value."""
    if current is None:
        return desired
    return InterfaceSpec(
        private_key=desired.private_key,
        listen_port=desired.listen_port or current.listen_port,
        addresses=desired.addresses,
        mtu=desired.mtu or current.mtu,
        fwmark=desired.fwmark,
    )


def _plan(
    current: GatewayState,
    *,
    location_id: int,
    location_name: str,
    revision: int,
    interface: InterfaceSpec | None,
    upsert: Mapping[str, PeerSpec],
    remove: Iterable[str],
    firewall_given: bool,
    firewall: gateway_pb2.FirewallConfig | None,
) -> Plan:
    iface_change = (
        diff_interface(current.interface, interface) if interface is not None else InterfaceChange()
    )
    add: list[PeerSpec] = []
    change: list[PeerChange] = []
    for key, peer in upsert.items():
        old = current.peers.get(key)
        if old is None:
            add.append(peer)
        elif old != peer:
            change.append(PeerChange(old=old, new=peer))
    removed = tuple(key for key in _unique(remove) if key in current.peers)

    peers = dict(current.peers)
    for key in removed:
        del peers[key]
    peers.update(upsert)

    if firewall_given:
        firewall_changed = not current.firewall_known or current.firewall != firewall
        new_firewall = _copy_firewall(firewall) if firewall is not None else None
    else:
        firewall_changed = False
        new_firewall = current.firewall

    result = GatewayState(
        location_id=location_id,
        location_name=location_name,
        revision=revision,
        interface=(
            _merged_interface(current.interface, interface)
            if interface is not None
            else current.interface
        ),
        peers=MappingProxyType(peers),
        firewall=new_firewall,
        firewall_known=current.firewall_known or firewall_given,
    )
    return Plan(
        location_id=location_id,
        revision=revision,
        interface=iface_change,
        add_peers=tuple(add),
        change_peers=tuple(change),
        remove_peers=removed,
        firewall_changed=firewall_changed,
        firewall=new_firewall,
        result=result,
    )


# ---------------------------------------------------------------- decisions


def decide_full_state(current: GatewayState, msg: gateway_pb2.LocationState) -> Decision:
    """Apply a full state unless the Gateway already holds this location at this revision or later.

    A full state for another location (the Gateway was moved) or arriving while
    the revision is unknown is always applied, as a diff. Raises
    `InvalidMessage` for a message that cannot be applied.
    """
    if msg.location_id == 0:
        raise InvalidMessage("full state without a location id")
    if not msg.HasField("interface"):
        raise InvalidMessage("full state without an interface")
    same_location = current.location_id == msg.location_id
    if same_location and current.revision and msg.revision <= current.revision:
        return Ignore(
            f"full state at revision {msg.revision}; already at revision {current.revision}"
        )
    interface = parse_interface(msg.interface)
    desired = _parse_peers(msg.peers)
    return Apply(
        _plan(
            current,
            location_id=msg.location_id,
            location_name=msg.location_name,
            revision=msg.revision,
            interface=interface,
            upsert={k: p for k, p in desired.items() if current.peers.get(k) != p},
            remove=[k for k in current.peers if k not in desired],
            firewall_given=True,
            firewall=msg.firewall if msg.HasField("firewall") else None,
        )
    )


def decide_update(current: GatewayState, msg: gateway_pb2.LocationUpdate) -> Decision:
    """Apply an update that starts exactly where the Gateway is; ignore old ones; otherwise ask.

    An absent `firewall` in an update means "unchanged" unless
    `firewall_disabled` says the location's ACL was turned off (remove it).
    """
    if msg.revision <= msg.base_revision:
        raise InvalidMessage(
            f"update from revision {msg.base_revision} to {msg.revision} does not move forward"
        )
    if current.location_id != msg.location_id or not current.revision:
        held = (
            f"location {current.location_id} at revision {current.revision}"
            if current.location_id
            else "no location"
        )
        return RequestFullState(
            f"update for location {msg.location_id} (revision {msg.revision}) but holding {held}"
        )
    if msg.revision <= current.revision:
        return Ignore(f"update to revision {msg.revision}; already at revision {current.revision}")
    if msg.base_revision != current.revision:
        return RequestFullState(
            f"gap: at revision {current.revision}, update is from {msg.base_revision} to {msg.revision}"
        )
    upsert = _parse_peers(msg.upsert_peers)
    remove = [_key(k, "removed peer key") for k in msg.remove_peers]
    both = upsert.keys() & set(remove)
    if both:
        raise InvalidMessage(f"peers both upserted and removed: {sorted(both)}")
    return Apply(
        _plan(
            current,
            location_id=msg.location_id,
            location_name=current.location_name,
            revision=msg.revision,
            interface=parse_interface(msg.interface) if msg.HasField("interface") else None,
            upsert=upsert,
            remove=remove,
            firewall_given=msg.HasField("firewall") or msg.firewall_disabled,
            firewall=msg.firewall if msg.HasField("firewall") else None,
        )
    )


def unknown_revision(state: GatewayState) -> GatewayState:
    """The same knowledge with the revision forgotten, so the next full state is applied as a diff."""
    return GatewayState(
        location_id=state.location_id,
        location_name=state.location_name,
        revision=0,
        interface=state.interface,
        peers=state.peers,
        firewall=state.firewall,
        firewall_known=False,
    )
