"""The registry process with ``--discovery-backend etcd``: the instance table from etcd, published to the gateways.

Sockets:
    send_to_gateways   XPUB    bind    ipc in the run directory        Snapshot on change, every second, and at
                                                                        once to a gateway that subscribes
etcd (``frontend/transport/etcd_client.py``):
    range ``ROOT`` (every instance key, ``frontend/transport/etcd_keys.py``), then watch it from the range's
    revision + 1: the table follows every put and delete (a lease that expires deletes its worker's key).

The gateways see the same ``Snapshot`` as from the embedded registry, plus ``discovery`` (``etcd``, connected
or not). A probe reads etcd every ``PROBE_INTERVAL_S``: while it fails the last table stays published, marked
not connected (``/health``, ``discovery_connected``); when it answers again the table is ranged afresh (a
compacted or cancelled watch ranges again too). Namespaces this frontend does not serve are left out
(``NamespaceFilter``); of two instances of one model name with different cards, the one whose key was created
first is served and the other is logged and left out until the first is gone (``card_conflict``).
"""

from __future__ import annotations

import asyncio
import logging
from multiprocessing.connection import Connection
from typing import Any, Iterable, NamedTuple

import zmq

from ..config.etcd_settings import EtcdSettings
from ..config.sections import NamespaceFilter
from ..config.topology import Endpoints
from ..protocol import registry as wire
from ..transport.etcd_client import (CALL_TIMEOUT_S, DELETE, ETCD_ERRORS, EtcdUnauthenticatedError, authenticate,
                                     open_client, prefix_range_end, watch_prefix)
from ..transport.etcd_keys import ROOT, decode_instance, parse_instance_key
from ..transport.sockets import open_socket
from ..transport.zmqloop import SocketDrainer
from .server import PUBLISH_INTERVAL_S, card_conflict

log = logging.getLogger(__name__)

PROBE_INTERVAL_S = 0.5
RETRY_S = 0.5  # after a failed range or watch
ROOT_KEY = ROOT.encode()


class Found(NamedTuple):
    """One instance key seen in etcd."""

    create_revision: int
    namespace: str
    instance: wire.Instance


class EtcdTable:
    """The instances under ``ROOT`` and the table published from them; pure logic, no etcd or sockets."""

    def __init__(self, namespaces: NamespaceFilter) -> None:
        self.namespaces = namespaces
        self.found: dict[bytes, Found] = {}
        self.accepted: list[wire.Instance] = []
        self.connected = False
        self.version = 0
        self._refused: set[tuple[str, str]] = set()  # (instance id, reason) already logged

    def reset(self, kvs: Iterable[Any]) -> None:
        """Replace everything with a range's key-values (``key``, ``value``, ``create_revision``)."""
        self.found = {}
        for kv in kvs:
            self._store(kv.key, kv.value, kv.create_revision)
        self._rebuild()

    def put(self, key: bytes, value: bytes, create_revision: int) -> None:
        self._store(key, value, create_revision)
        self._rebuild()

    def delete(self, key: bytes) -> None:
        if self.found.pop(key, None) is not None:
            self._rebuild()

    def set_connected(self, connected: bool) -> bool:
        """Record whether etcd answers; whether that changed."""
        if connected == self.connected:
            return False
        self.connected = connected
        self.version += 1
        return True

    def snapshot(self) -> wire.Snapshot:
        return wire.Snapshot(self.version, list(self.accepted), wire.DiscoveryState("etcd", self.connected))

    def _store(self, key: bytes, value: bytes, create_revision: int) -> None:
        where = parse_instance_key(key)
        instance = decode_instance(value) if where is not None else None
        if where is None or instance is None or instance.instance_id != where.instance_id:
            log.warning("ignoring a key that is not an instance", extra={"key": key.decode("utf-8", "replace")})
            self.found.pop(key, None)
            return
        self.found[key] = Found(create_revision, where.namespace, instance)

    def _rebuild(self) -> None:
        """The served instances: this frontend's namespaces; of conflicting cards, the first created."""
        accepted: list[wire.Instance] = []
        for found in sorted(self.found.values(), key=lambda f: (f.create_revision, f.instance.instance_id)):
            if not self.namespaces.accepts(found.namespace):
                continue
            conflict = card_conflict(accepted, found.instance.instance_id, found.instance.card)
            if conflict is None:
                accepted.append(found.instance)
            elif (found.instance.instance_id, conflict) not in self._refused:
                self._refused.add((found.instance.instance_id, conflict))
                log.error("instance refused", extra={"instance": found.instance.instance_id, "error": conflict})
        if accepted != self.accepted:
            self.accepted = accepted
            self.version += 1


class EtcdRegistry:
    """Keeps an ``EtcdTable`` in step with etcd and publishes it on the XPUB."""

    def __init__(self, namespaces: NamespaceFilter, settings: EtcdSettings, publish: zmq.Socket) -> None:
        self.table = EtcdTable(namespaces)
        self.settings = settings
        self._pub = publish
        self._published = -1  # the version sent last; -1 until the first range (or its failure)
        self._resync = asyncio.Event()
        self._client: Any = None
        self._subscriptions: SocketDrainer | None = None

    async def serve(self) -> None:
        """Range, watch, probe and publish until cancelled (then close the XPUB)."""
        self._subscriptions = SocketDrainer(asyncio.get_running_loop(), self._pub, self.on_subscription)
        self._client = await open_client(self.settings)
        try:
            await asyncio.gather(self._sync_loop(), self._probe_loop(), self._publish_loop())
        finally:
            self._subscriptions.close()
            await self._client.close()

    def on_subscription(self, frames: list[bytes]) -> None:
        """A gateway subscribed: send it the table at once (once there is one)."""
        if frames[-1][:1] == b"\x01" and self._published >= 0:
            self.publish()

    def publish(self) -> None:
        self._pub.send(wire.encoder.encode(self.table.snapshot()))
        self._published = self.table.version
        if self._subscriptions is not None:
            self._subscriptions.after_send()  # the socket's FD is edge-triggered: look for subscriptions now

    async def _publish_loop(self) -> None:
        """The table on change (within 50 ms) and every ``PUBLISH_INTERVAL_S``."""
        since = 0.0
        while True:
            await asyncio.sleep(0.05)
            since += 0.05
            if self._published >= 0 and (self.table.version != self._published or since >= PUBLISH_INTERVAL_S):
                self.publish()
                since = 0.0

    async def _sync_loop(self) -> None:
        while True:
            try:
                await authenticate(self._client, self.settings)
                found = await self._client.kv.get(ROOT_KEY, range_end=prefix_range_end(ROOT_KEY),
                                                  timeout=CALL_TIMEOUT_S)
                self.table.reset(found.kvs)
                self._connected(True)
                self._published = max(self._published, 0)
                await self._watch(found.header.revision + 1)
            except ETCD_ERRORS as exc:
                self._connected(False, str(exc))
                self._published = max(self._published, 0)  # publish the (possibly empty) table as not connected
                await asyncio.sleep(RETRY_S)

    async def _watch(self, revision: int) -> None:
        """Apply the watch's events until a resync is asked for (etcd came back, the watch was compacted)."""
        self._resync.clear()
        watching = asyncio.ensure_future(self._apply_events(revision))
        resync = asyncio.ensure_future(self._resync.wait())
        try:
            await asyncio.wait([watching, resync], return_when=asyncio.FIRST_COMPLETED)
        finally:
            resync.cancel()
            watching.cancel()
        if watching.done() and not watching.cancelled() and watching.exception() is not None:
            raise watching.exception()  # type: ignore[misc]

    async def _apply_events(self, revision: int) -> None:
        async for response in watch_prefix(self._client, ROOT_KEY, revision):
            if response.compact_revision or response.canceled:
                log.warning("etcd watch compacted or cancelled; ranging again",
                            extra={"compact_revision": response.compact_revision})
                return
            for event in response.events:
                if event.type == DELETE:
                    self.table.delete(event.kv.key)
                else:
                    self.table.put(event.kv.key, event.kv.value, event.kv.create_revision)

    async def _probe_loop(self) -> None:
        """Whether etcd answers; when it answers again after a failure, range afresh."""
        while True:
            await asyncio.sleep(PROBE_INTERVAL_S)
            try:
                await self._client.kv.get(ROOT_KEY, count_only=True, timeout=min(CALL_TIMEOUT_S, 1.0))
            except EtcdUnauthenticatedError:
                self._resync.set()  # etcd restarted and forgot the token: the sync loop authenticates again
            except ETCD_ERRORS as exc:
                self._connected(False, str(exc))
            else:
                if not self.table.connected:
                    self._resync.set()

    def _connected(self, connected: bool, error: str = "") -> None:
        if self.table.set_connected(connected):
            if connected:
                (log.warning if self._published >= 0 else log.info)(
                    "etcd reachable; instance table in sync", extra={"instances": len(self.table.accepted)})
            else:
                log.warning("etcd unreachable; serving the last instance table",
                            extra={"instances": len(self.table.accepted), "error": error})


def run_etcd(namespaces: NamespaceFilter, endpoints: Endpoints, settings: EtcdSettings, ready: Connection) -> None:
    """Process entry (from ``server.run``): publish etcd's instance table until terminated."""
    asyncio.run(_serve(namespaces, endpoints, settings, ready))


async def _serve(namespaces: NamespaceFilter, endpoints: Endpoints, settings: EtcdSettings,
                 ready: Connection) -> None:
    context = zmq.Context()
    send_to_gateways = open_socket(context, zmq.XPUB, bind=endpoints.registry_pub)
    send_to_gateways.setsockopt(zmq.XPUB_VERBOSE, 1)  # every subscriber's subscription, not only the first
    registry = EtcdRegistry(namespaces, settings, send_to_gateways)
    ready.send("ready")
    ready.close()
    try:
        await registry.serve()
    finally:
        context.term()
