"""etcd discovery: the key layout and the value encoding (no etcd client imported here).

Key layout, one key per live worker instance, under a root of its own (so an etcd shared with Dynamo or
anything else is left alone)::

    /dynamo-py-frontend/v1/{namespace}/instances/{instance_id}  ->  JSON of protocol.registry.Instance

The key is attached to the worker's lease (``--lease-ttl-s``): a worker that dies without unregistering
disappears when its lease expires. The value is the same ``Instance`` the embedded registry publishes (endpoint,
model card, ``draining``), in JSON so that ``etcdctl get --prefix /dynamo-py-frontend/`` is readable. Frontends
watch the whole root and keep the namespaces they serve (``NamespaceFilter``), as the embedded registry does.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import NamedTuple
from urllib.parse import urlsplit

import msgspec

from ..protocol.registry import Instance

ROOT = "/dynamo-py-frontend/v1/"
INSTANCES = "instances"


class InstanceKey(NamedTuple):
    """Where one instance lives in the key space."""

    namespace: str
    instance_id: str


def instance_key(namespace: str, instance_id: str) -> str:
    """The key of one worker instance (neither part may contain ``/``)."""
    for part, what in ((namespace, "namespace"), (instance_id, "instance id")):
        if not part or "/" in part:
            raise ValueError(f"{what} {part!r} cannot be an etcd key segment (empty or containing '/')")
    return f"{ROOT}{namespace}/{INSTANCES}/{instance_id}"


def parse_instance_key(key: bytes) -> InstanceKey | None:
    """The namespace and instance id of a key under ``ROOT``; None for any other key."""
    text = key.decode("utf-8", "replace")
    if not text.startswith(ROOT):
        return None
    parts = text[len(ROOT):].split("/")
    if len(parts) != 3 or parts[1] != INSTANCES or not parts[0] or not parts[2]:
        return None
    return InstanceKey(parts[0], parts[2])


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Instance)


def encode_instance(instance: Instance) -> bytes:
    return _encoder.encode(instance)


def decode_instance(value: bytes) -> Instance | None:
    """The instance a key holds; None for a value that is not one (written by something else)."""
    try:
        return _decoder.decode(value)
    except msgspec.DecodeError:
        return None


class GrpcTarget(NamedTuple):
    """The endpoints as the gRPC channel takes them: ``ip:port`` addresses, TLS or not, the TLS server name."""

    addresses: list[str]
    tls: bool
    server_name: str | None


def grpc_target(endpoints: str) -> GrpcTarget:
    """Resolve ``--etcd-endpoints`` (names to IPv4 addresses: the client balances over an ``ipv4:`` target);
    with TLS the certificate is checked against the first host given (a name or an address)."""
    addresses, server_name, tls = [], None, False
    for item in (item.strip() for item in endpoints.split(",") if item.strip()):
        parts = urlsplit(item)
        host, port = parts.hostname or "", parts.port
        tls, server_name = parts.scheme == "https", server_name or host
        if _is_address(host):
            addresses.append(f"{host}:{port}")
        else:
            infos = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)
            addresses += sorted({f"{info[4][0]}:{port}" for info in infos})
    return GrpcTarget(addresses, tls, server_name)


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
