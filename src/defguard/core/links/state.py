"""A location's desired gateway configuration, rebuilt from the database by any Core.

Nothing here is cached in a Core's memory: a gateway that reconnects to
another Core, or asks for the full state, gets the same answer from each.

Revisions and content: the revision is read *before* the content it labels,
so (in READ COMMITTED) the content is at least as new as its label. A
gateway that receives content newer than the label later receives the next
revision again; re-applying an upsert or a removal changes nothing, so it
converges on the database's state either way.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from ipaddress import IPv4Address

from sqlalchemy import Text, and_, any_, bindparam, cast, or_, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from defguard.core.acl.loader import load_location_inputs
from defguard.core.devices.models import Device, DeviceLocation, DeviceType
from defguard.core.errors import not_found
from defguard.core.firewall import FirewallConfig, Verdict, compile_location
from defguard.core.gateways.models import PeerChange
from defguard.core.locations.models import Location, LocationMfaMode
from defguard.core.vpn_sessions.models import VpnClientSession
from defguard.proto import gateway_pb2 as pb
from defguard.wireguard.addressing import format_cidr, parse_host


def host_route(text: str) -> str:
    """A device address as the CIDR host route WireGuard routes to the peer."""
    address = parse_host(text)
    return f"{address}/{32 if isinstance(address, IPv4Address) else 128}"


async def desired_peers(
    db: AsyncSession, location_id: int, public_keys: Collection[str] | None = None
) -> list[pb.PeerConfig]:
    """The peers a location's gateways must have (optionally only among `public_keys`).

    The one place that decides who is a peer, so a full state and a diff can
    never disagree: one peer per configured device that holds addresses in
    the location, and, where the location requires MFA, only while the
    device has an active VPN session, whose preshared key the peer carries.
    Network devices (routers, servers an admin added) are exempt from MFA:
    nobody is there to type a code, and the admin's adding them is the
    authorisation.
    One query whatever the number of peers (the session join uses the
    partial unique index of active sessions).
    """
    query = (
        select(
            Device.wireguard_pubkey,
            cast(DeviceLocation.wireguard_ips, ARRAY(Text)),
            Location.keepalive_interval,
            VpnClientSession.preshared_key,
        )
        .join(DeviceLocation, DeviceLocation.device_id == Device.id)
        .join(Location, Location.id == DeviceLocation.wireguard_network_id)
        .outerjoin(
            VpnClientSession,
            and_(
                VpnClientSession.location_id == DeviceLocation.wireguard_network_id,
                VpnClientSession.device_id == Device.id,
                VpnClientSession.authorized_at.is_not(None),
                VpnClientSession.ended_at.is_(None),
                Location.location_mfa_mode != LocationMfaMode.DISABLED,
            ),
        )
        .where(
            DeviceLocation.wireguard_network_id == location_id,
            Device.configured,
            or_(
                Location.location_mfa_mode == LocationMfaMode.DISABLED,
                Device.device_type == DeviceType.NETWORK,
                VpnClientSession.id.is_not(None),
            ),
        )
        .order_by(Device.wireguard_pubkey)
    )
    if public_keys is not None:
        if not public_keys:
            return []
        keys = bindparam(None, sorted(public_keys), type_=ARRAY(Text))
        query = query.where(Device.wireguard_pubkey == any_(keys))
    return [
        pb.PeerConfig(
            public_key=key,
            allowed_ips=[host_route(ip) for ip in ips or ()],
            preshared_key=psk or "",
            keepalive_interval=keepalive,
        )
        for key, ips, keepalive, psk in await db.execute(query)
    ]


def interface_config(location: Location) -> pb.InterfaceConfig:
    return pb.InterfaceConfig(
        private_key=location.prvkey,
        listen_port=location.port,
        addresses=[format_cidr(a) for a in location.address],
        mtu=location.mtu,
        fwmark=location.fwmark,
    )


def _verdict(verdict: Verdict) -> int:
    return pb.FirewallVerdict.Value(f"FIREWALL_VERDICT_{verdict.name}")


def firewall_message(config: FirewallConfig) -> pb.FirewallConfig:
    return pb.FirewallConfig(
        default_policy=_verdict(config.default_policy),
        rules=[
            pb.FirewallRule(
                id=rule.id,
                verdict=_verdict(rule.verdict),
                ip_version=rule.ip_version,
                sources=[pb.AddressRange(start=str(a), end=str(b)) for a, b in rule.sources],
                destinations=[
                    pb.AddressRange(start=str(a), end=str(b)) for a, b in rule.destinations
                ],
                ports=[pb.PortRange(start=a, end=b) for a, b in rule.ports],
                protocols=list(rule.protocols),
                comment=rule.comment,
            )
            for rule in config.rules
        ],
    )


async def location_firewall(db: AsyncSession, location_id: int) -> pb.FirewallConfig | None:
    """None when the location's ACL is off: the gateway then manages no firewall."""
    config = compile_location(*await load_location_inputs(db, location_id))
    return None if config is None else firewall_message(config)


async def _location(db: AsyncSession, location_id: int) -> Location:
    location = (
        await db.execute(
            select(Location)
            .where(Location.id == location_id)
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    if location is None:
        raise not_found(f"Network {location_id} not found")
    return location


async def location_state(db: AsyncSession, location_id: int) -> pb.LocationState:
    """The whole desired state of one location at its current revision."""
    location = await _location(db, location_id)
    state = pb.LocationState(
        location_id=location.id,
        location_name=location.name,
        revision=location.config_revision,
        interface=interface_config(location),
        peers=await desired_peers(db, location_id),
    )
    firewall = await location_firewall(db, location_id)
    if firewall is not None:
        state.firewall.CopyFrom(firewall)
    return state


async def changed_keys(db: AsyncSession, location_id: int, revision: int) -> Sequence[str]:
    query = (
        select(PeerChange.public_key)
        .where(PeerChange.location_id == location_id, PeerChange.revision == revision)
        .distinct()
        .order_by(PeerChange.public_key)
    )
    return list((await db.execute(query)).scalars())


async def location_update(db: AsyncSession, location_id: int, revision: int) -> pb.LocationUpdate:
    """The diff from `revision - 1` to `revision`: every peer that revision touched.

    A touched peer that is still desired is sent whole (upsert), one that is
    not is removed; the interface and firewall are always included, since a
    revision may have changed only them.
    """
    location = await _location(db, location_id)
    keys = await changed_keys(db, location_id, revision)
    upserts = await desired_peers(db, location_id, keys)
    kept = {peer.public_key for peer in upserts}
    update = pb.LocationUpdate(
        location_id=location_id,
        base_revision=revision - 1,
        revision=revision,
        interface=interface_config(location),
        upsert_peers=upserts,
        remove_peers=[key for key in keys if key not in kept],
    )
    firewall = await location_firewall(db, location_id)
    if firewall is not None:
        update.firewall.CopyFrom(firewall)
    else:
        update.firewall_disabled = True
    return update
