from defguard.proto import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FirewallVerdict(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FIREWALL_VERDICT_UNSPECIFIED: _ClassVar[FirewallVerdict]
    FIREWALL_VERDICT_ALLOW: _ClassVar[FirewallVerdict]
    FIREWALL_VERDICT_DENY: _ClassVar[FirewallVerdict]
FIREWALL_VERDICT_UNSPECIFIED: FirewallVerdict
FIREWALL_VERDICT_ALLOW: FirewallVerdict
FIREWALL_VERDICT_DENY: FirewallVerdict

class CoreToGateway(_message.Message):
    __slots__ = ("sender", "full_state", "update", "stats_ack", "error")
    SENDER_FIELD_NUMBER: _ClassVar[int]
    FULL_STATE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    STATS_ACK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    sender: _common_pb2.Peer
    full_state: LocationState
    update: LocationUpdate
    stats_ack: StatsAck
    error: _common_pb2.ProtocolError
    def __init__(self, sender: _Optional[_Union[_common_pb2.Peer, _Mapping]] = ..., full_state: _Optional[_Union[LocationState, _Mapping]] = ..., update: _Optional[_Union[LocationUpdate, _Mapping]] = ..., stats_ack: _Optional[_Union[StatsAck, _Mapping]] = ..., error: _Optional[_Union[_common_pb2.ProtocolError, _Mapping]] = ...) -> None: ...

class GatewayToCore(_message.Message):
    __slots__ = ("sender", "hello", "state_request", "stats", "applied", "error")
    SENDER_FIELD_NUMBER: _ClassVar[int]
    HELLO_FIELD_NUMBER: _ClassVar[int]
    STATE_REQUEST_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    sender: _common_pb2.Peer
    hello: GatewayHello
    state_request: StateRequest
    stats: StatsBatch
    applied: Applied
    error: _common_pb2.ProtocolError
    def __init__(self, sender: _Optional[_Union[_common_pb2.Peer, _Mapping]] = ..., hello: _Optional[_Union[GatewayHello, _Mapping]] = ..., state_request: _Optional[_Union[StateRequest, _Mapping]] = ..., stats: _Optional[_Union[StatsBatch, _Mapping]] = ..., applied: _Optional[_Union[Applied, _Mapping]] = ..., error: _Optional[_Union[_common_pb2.ProtocolError, _Mapping]] = ...) -> None: ...

class GatewayHello(_message.Message):
    __slots__ = ("name", "interface_name", "applied_revision", "location_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INTERFACE_NAME_FIELD_NUMBER: _ClassVar[int]
    APPLIED_REVISION_FIELD_NUMBER: _ClassVar[int]
    LOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    interface_name: str
    applied_revision: int
    location_id: int
    def __init__(self, name: _Optional[str] = ..., interface_name: _Optional[str] = ..., applied_revision: _Optional[int] = ..., location_id: _Optional[int] = ...) -> None: ...

class StateRequest(_message.Message):
    __slots__ = ("applied_revision", "reason")
    APPLIED_REVISION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    applied_revision: int
    reason: str
    def __init__(self, applied_revision: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class Applied(_message.Message):
    __slots__ = ("location_id", "revision")
    LOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    location_id: int
    revision: int
    def __init__(self, location_id: _Optional[int] = ..., revision: _Optional[int] = ...) -> None: ...

class InterfaceConfig(_message.Message):
    __slots__ = ("private_key", "listen_port", "addresses", "mtu", "fwmark")
    PRIVATE_KEY_FIELD_NUMBER: _ClassVar[int]
    LISTEN_PORT_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    MTU_FIELD_NUMBER: _ClassVar[int]
    FWMARK_FIELD_NUMBER: _ClassVar[int]
    private_key: str
    listen_port: int
    addresses: _containers.RepeatedScalarFieldContainer[str]
    mtu: int
    fwmark: int
    def __init__(self, private_key: _Optional[str] = ..., listen_port: _Optional[int] = ..., addresses: _Optional[_Iterable[str]] = ..., mtu: _Optional[int] = ..., fwmark: _Optional[int] = ...) -> None: ...

class PeerConfig(_message.Message):
    __slots__ = ("public_key", "allowed_ips", "preshared_key", "keepalive_interval")
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_IPS_FIELD_NUMBER: _ClassVar[int]
    PRESHARED_KEY_FIELD_NUMBER: _ClassVar[int]
    KEEPALIVE_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    public_key: str
    allowed_ips: _containers.RepeatedScalarFieldContainer[str]
    preshared_key: str
    keepalive_interval: int
    def __init__(self, public_key: _Optional[str] = ..., allowed_ips: _Optional[_Iterable[str]] = ..., preshared_key: _Optional[str] = ..., keepalive_interval: _Optional[int] = ...) -> None: ...

class AddressRange(_message.Message):
    __slots__ = ("start", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: str
    end: str
    def __init__(self, start: _Optional[str] = ..., end: _Optional[str] = ...) -> None: ...

class PortRange(_message.Message):
    __slots__ = ("start", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: int
    end: int
    def __init__(self, start: _Optional[int] = ..., end: _Optional[int] = ...) -> None: ...

class FirewallRule(_message.Message):
    __slots__ = ("id", "verdict", "ip_version", "sources", "destinations", "ports", "protocols", "comment")
    ID_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    IP_VERSION_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    DESTINATIONS_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    PROTOCOLS_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    id: int
    verdict: FirewallVerdict
    ip_version: int
    sources: _containers.RepeatedCompositeFieldContainer[AddressRange]
    destinations: _containers.RepeatedCompositeFieldContainer[AddressRange]
    ports: _containers.RepeatedCompositeFieldContainer[PortRange]
    protocols: _containers.RepeatedScalarFieldContainer[int]
    comment: str
    def __init__(self, id: _Optional[int] = ..., verdict: _Optional[_Union[FirewallVerdict, str]] = ..., ip_version: _Optional[int] = ..., sources: _Optional[_Iterable[_Union[AddressRange, _Mapping]]] = ..., destinations: _Optional[_Iterable[_Union[AddressRange, _Mapping]]] = ..., ports: _Optional[_Iterable[_Union[PortRange, _Mapping]]] = ..., protocols: _Optional[_Iterable[int]] = ..., comment: _Optional[str] = ...) -> None: ...

class FirewallConfig(_message.Message):
    __slots__ = ("default_policy", "rules")
    DEFAULT_POLICY_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    default_policy: FirewallVerdict
    rules: _containers.RepeatedCompositeFieldContainer[FirewallRule]
    def __init__(self, default_policy: _Optional[_Union[FirewallVerdict, str]] = ..., rules: _Optional[_Iterable[_Union[FirewallRule, _Mapping]]] = ...) -> None: ...

class LocationState(_message.Message):
    __slots__ = ("location_id", "location_name", "revision", "interface", "peers", "firewall")
    LOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    LOCATION_NAME_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    INTERFACE_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    FIREWALL_FIELD_NUMBER: _ClassVar[int]
    location_id: int
    location_name: str
    revision: int
    interface: InterfaceConfig
    peers: _containers.RepeatedCompositeFieldContainer[PeerConfig]
    firewall: FirewallConfig
    def __init__(self, location_id: _Optional[int] = ..., location_name: _Optional[str] = ..., revision: _Optional[int] = ..., interface: _Optional[_Union[InterfaceConfig, _Mapping]] = ..., peers: _Optional[_Iterable[_Union[PeerConfig, _Mapping]]] = ..., firewall: _Optional[_Union[FirewallConfig, _Mapping]] = ...) -> None: ...

class LocationUpdate(_message.Message):
    __slots__ = ("location_id", "base_revision", "revision", "interface", "upsert_peers", "remove_peers", "firewall", "firewall_disabled")
    LOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    BASE_REVISION_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    INTERFACE_FIELD_NUMBER: _ClassVar[int]
    UPSERT_PEERS_FIELD_NUMBER: _ClassVar[int]
    REMOVE_PEERS_FIELD_NUMBER: _ClassVar[int]
    FIREWALL_FIELD_NUMBER: _ClassVar[int]
    FIREWALL_DISABLED_FIELD_NUMBER: _ClassVar[int]
    location_id: int
    base_revision: int
    revision: int
    interface: InterfaceConfig
    upsert_peers: _containers.RepeatedCompositeFieldContainer[PeerConfig]
    remove_peers: _containers.RepeatedScalarFieldContainer[str]
    firewall: FirewallConfig
    firewall_disabled: bool
    def __init__(self, location_id: _Optional[int] = ..., base_revision: _Optional[int] = ..., revision: _Optional[int] = ..., interface: _Optional[_Union[InterfaceConfig, _Mapping]] = ..., upsert_peers: _Optional[_Iterable[_Union[PeerConfig, _Mapping]]] = ..., remove_peers: _Optional[_Iterable[str]] = ..., firewall: _Optional[_Union[FirewallConfig, _Mapping]] = ..., firewall_disabled: _Optional[bool] = ...) -> None: ...

class PeerStats(_message.Message):
    __slots__ = ("public_key", "endpoint", "upload", "download", "latest_handshake", "allowed_ips")
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_FIELD_NUMBER: _ClassVar[int]
    DOWNLOAD_FIELD_NUMBER: _ClassVar[int]
    LATEST_HANDSHAKE_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_IPS_FIELD_NUMBER: _ClassVar[int]
    public_key: str
    endpoint: str
    upload: int
    download: int
    latest_handshake: int
    allowed_ips: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, public_key: _Optional[str] = ..., endpoint: _Optional[str] = ..., upload: _Optional[int] = ..., download: _Optional[int] = ..., latest_handshake: _Optional[int] = ..., allowed_ips: _Optional[_Iterable[str]] = ...) -> None: ...

class StatsBatch(_message.Message):
    __slots__ = ("batch_id", "location_id", "collected_at", "peers")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    LOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    COLLECTED_AT_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    location_id: int
    collected_at: int
    peers: _containers.RepeatedCompositeFieldContainer[PeerStats]
    def __init__(self, batch_id: _Optional[str] = ..., location_id: _Optional[int] = ..., collected_at: _Optional[int] = ..., peers: _Optional[_Iterable[_Union[PeerStats, _Mapping]]] = ...) -> None: ...

class StatsAck(_message.Message):
    __slots__ = ("batch_id",)
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    def __init__(self, batch_id: _Optional[str] = ...) -> None: ...
