"""An etcd v3 client connection for discovery, shared by the registry process and the worker SDK.

Imported only with ``--discovery-backend etcd`` (the embedded path never loads it, nor gRPC).

Client library: ``etcd3aio`` (the ``etcd`` extra). Compared:
  - ``etcd3aio``: asyncio over ``grpc.aio`` on the grpcio we already ship (needs grpcio >= 1.67, protobuf >= 5.26:
    our 1.85 / 6), released 2026, typed; TLS and mutual TLS, several endpoints, user/password tokens; returns the
    raw v3 responses, so a range's header revision starts the watch with nothing missed. Its watch resumes by
    itself after a transient error; this code probes etcd separately to know when it is away, and ranges again.
  - ``aetcd`` (1.0, grpc.aio): an insecure channel to one host only (no TLS), and the auth token is fetched once
    and never renewed (etcd's simple tokens expire after 5 minutes).
  - ``etcd-client-py`` (a Rust/tokio binding): no TLS option, prefix reads without the revision (no gap-free
    range-then-watch), and a tokio runtime of its own in every process.
  - etcd's own gRPC API with stubs generated here: the same as etcd3aio's, with etcd's proto files to vendor and
    maintain; the JSON gateway would need an HTTP client the SDK does not ship (httpx is test-only).
Its one quirk: gRPC's ``ipv4:`` target takes addresses, so host names are resolved here (``grpc_target``).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path
from typing import Any, AsyncIterator

import grpc
from etcd3aio import Etcd3Client, EtcdError, EtcdUnauthenticatedError
from etcd3aio.kv import prefix_range_end

from ..config.etcd_settings import EtcdSettings
from .etcd_keys import grpc_target

__all__ = ["CALL_TIMEOUT_S", "ETCD_ERRORS", "EtcdError", "EtcdUnauthenticatedError", "open_client", "authenticate",
           "prefix_range_end", "refresh_lease", "watch_prefix", "PUT", "DELETE"]

CALL_TIMEOUT_S = 2.0  # one etcd call (a lost etcd is noticed within this)
RECONNECT_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 200), ("grpc.min_reconnect_backoff_ms", 200),
                     ("grpc.max_reconnect_backoff_ms", 500)]
PUT, DELETE = 0, 1  # mvccpb.Event.EventType of a watch event
# what an etcd call may raise when etcd is away or refuses (etcd3aio re-raises gRPC's own error for the status
# codes it does not map)
ETCD_ERRORS = (EtcdError, grpc.aio.AioRpcError, OSError, TimeoutError)


def _read(path: str) -> bytes | None:
    return Path(path).read_bytes() if path else None


def _tls_files(settings: EtcdSettings) -> dict[str, bytes | None]:
    """The channel's TLS arguments: the CA (``--etcd-ca-path``, else the system's bundle) and a client pair."""
    ca_path = settings.ca_path or ssl.get_default_verify_paths().cafile or ""
    return {"ca_cert": _read(ca_path), "cert_chain": _read(settings.cert_path), "cert_key": _read(settings.key_path)}


async def open_client(settings: EtcdSettings) -> Etcd3Client:
    """A client whose channel connects on first use (nothing is called here)."""
    logging.getLogger("etcd3aio").setLevel(logging.ERROR)  # its watch logs every retry; callers log state changes
    target = await asyncio.get_running_loop().run_in_executor(None, grpc_target, settings.endpoints)
    tls = _tls_files(settings) if target.tls or settings.ca_path else {}
    client = Etcd3Client(target.addresses, rpc_max_attempts=1, tls_server_name=target.server_name if tls else None,
                         **tls)
    # gRPC waits up to 2 minutes between reconnection attempts after failures: after an outage longer than a
    # lease, the leases would expire before the channel tries again (etcd3aio exposes no argument for it)
    client._manager.grpc_options += RECONNECT_OPTIONS
    await client.connect()
    return client


async def authenticate(client: Etcd3Client, settings: EtcdSettings) -> None:
    """With a user configured: a fresh token for every later call (after a start, or etcd's restart)."""
    if settings.username and client.auth is not None:
        response = await client.auth.authenticate(settings.username, settings.password, timeout=CALL_TIMEOUT_S)
        client.set_token(response.token)


async def refresh_lease(client: Etcd3Client, lease_id: int) -> bool:
    """One keep-alive round trip: whether the lease still lives (False: it expired, or etcd forgot it). An
    unreachable etcd is an ``EtcdError``."""
    assert client.lease is not None
    stream = client.lease.keep_alive(lease_id)
    try:
        async with asyncio.timeout(CALL_TIMEOUT_S):
            async for response in stream:
                return response.TTL > 0
    except grpc.aio.AioRpcError as exc:
        raise EtcdError(f"lease keep-alive failed: {exc.code().name} {exc.details() or ''}") from None
    except TimeoutError:
        raise EtcdError(f"lease keep-alive: no answer in {CALL_TIMEOUT_S} s") from None
    finally:
        stream.cancel()
    return False


async def watch_prefix(client: Etcd3Client, prefix: bytes, start_revision: int) -> AsyncIterator[Any]:
    """etcd's watch responses for the keys under ``prefix`` from ``start_revision`` on (a transient error is
    retried by the client from the next revision; any other is an ``EtcdError``)."""
    assert client.watch is not None
    try:
        async for response in client.watch.watch(prefix, range_end=prefix_range_end(prefix),
                                                  start_revision=start_revision):
            yield response
    except grpc.aio.AioRpcError as exc:
        raise EtcdError(f"watch failed: {exc.code().name} {exc.details() or ''}") from None
