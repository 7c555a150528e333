from defguard.proto import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CoreToEdge(_message.Message):
    __slots__ = ("sender", "response", "settings", "error", "responses")
    SENDER_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    sender: _common_pb2.Peer
    response: CoreResponse
    settings: EdgeSettings
    error: _common_pb2.ProtocolError
    responses: CoreResponseBatch
    def __init__(self, sender: _Optional[_Union[_common_pb2.Peer, _Mapping]] = ..., response: _Optional[_Union[CoreResponse, _Mapping]] = ..., settings: _Optional[_Union[EdgeSettings, _Mapping]] = ..., error: _Optional[_Union[_common_pb2.ProtocolError, _Mapping]] = ..., responses: _Optional[_Union[CoreResponseBatch, _Mapping]] = ...) -> None: ...

class EdgeToCore(_message.Message):
    __slots__ = ("sender", "hello", "request", "error", "requests")
    SENDER_FIELD_NUMBER: _ClassVar[int]
    HELLO_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    sender: _common_pb2.Peer
    hello: EdgeHello
    request: EdgeRequest
    error: _common_pb2.ProtocolError
    requests: EdgeRequestBatch
    def __init__(self, sender: _Optional[_Union[_common_pb2.Peer, _Mapping]] = ..., hello: _Optional[_Union[EdgeHello, _Mapping]] = ..., request: _Optional[_Union[EdgeRequest, _Mapping]] = ..., error: _Optional[_Union[_common_pb2.ProtocolError, _Mapping]] = ..., requests: _Optional[_Union[EdgeRequestBatch, _Mapping]] = ...) -> None: ...

class EdgeRequestBatch(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[EdgeRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[EdgeRequest, _Mapping]]] = ...) -> None: ...

class CoreResponseBatch(_message.Message):
    __slots__ = ("responses",)
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    responses: _containers.RepeatedCompositeFieldContainer[CoreResponse]
    def __init__(self, responses: _Optional[_Iterable[_Union[CoreResponse, _Mapping]]] = ...) -> None: ...

class EdgeHello(_message.Message):
    __slots__ = ("name", "public_url")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_URL_FIELD_NUMBER: _ClassVar[int]
    name: str
    public_url: str
    def __init__(self, name: _Optional[str] = ..., public_url: _Optional[str] = ...) -> None: ...

class EdgeRequest(_message.Message):
    __slots__ = ("request_id", "method", "body", "client_ip", "user_agent", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    CLIENT_IP_FIELD_NUMBER: _ClassVar[int]
    USER_AGENT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    method: str
    body: bytes
    client_ip: str
    user_agent: str
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, request_id: _Optional[str] = ..., method: _Optional[str] = ..., body: _Optional[bytes] = ..., client_ip: _Optional[str] = ..., user_agent: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class CoreResponse(_message.Message):
    __slots__ = ("request_id", "status", "body", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    status: int
    body: bytes
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, request_id: _Optional[str] = ..., status: _Optional[int] = ..., body: _Optional[bytes] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class EdgeSettings(_message.Message):
    __slots__ = ("cookie_key", "instance_url", "values")
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    COOKIE_KEY_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_URL_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    cookie_key: bytes
    instance_url: str
    values: _containers.ScalarMap[str, str]
    def __init__(self, cookie_key: _Optional[bytes] = ..., instance_url: _Optional[str] = ..., values: _Optional[_Mapping[str, str]] = ...) -> None: ...
