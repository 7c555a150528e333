"""Imports every feature's models so that mappers resolve their string references."""

from defguard.core.acl.models import AclAlias, AclRule
from defguard.core.activity.models import ActivityLogEvent
from defguard.core.auth.models import LoginFailure, Session
from defguard.core.devices.models import Device, DeviceLocation, DeviceType
from defguard.core.edge_requests.models import EdgeRequest
from defguard.core.enrollment.models import PollingToken, Token, TokenKind
from defguard.core.gateways.models import Gateway, GatewayLink, PeerChange, PeerStats
from defguard.core.groups.models import Group, group_user
from defguard.core.locations.models import Location, location_allowed_group
from defguard.core.proxies.models import Proxy, ProxyLink
from defguard.core.settings.models import Settings
from defguard.core.users.models import MfaMethod, User
from defguard.core.vpn_sessions.models import VpnClientSession

__all__ = [
    "AclAlias",
    "AclRule",
    "ActivityLogEvent",
    "Device",
    "DeviceLocation",
    "DeviceType",
    "EdgeRequest",
    "Gateway",
    "GatewayLink",
    "Group",
    "Location",
    "LoginFailure",
    "MfaMethod",
    "PeerChange",
    "PeerStats",
    "PollingToken",
    "Proxy",
    "ProxyLink",
    "Session",
    "Settings",
    "Token",
    "TokenKind",
    "User",
    "VpnClientSession",
    "group_user",
    "location_allowed_group",
]
