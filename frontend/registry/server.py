"""The registry process: worker leases and the table of live instances.

Sockets (see ``frontend.protocol.registry`` for the messages):
    recv_from_workers  ROUTER  bind    ``--registry-endpoint`` (tcp)   Register / Heartbeat / Unregister -> Ack
    send_to_gateways   XPUB    bind    ipc in the run directory        Snapshot on change, every second, and at
                                                                        once to a gateway that subscribes

A lease lasts ``--lease-ttl-s`` seconds from the last heartbeat; an expired instance is dropped and the new
table published, so gateways stop routing to it and a model whose last instance went away disappears. A gateway
process that starts (a Granian worker, a respawned one) gets the table as soon as it subscribes, so it never
answers "model not found" for a model the other processes serve.

With ``--discovery-backend etcd`` the process binds no worker socket: ``etcd_watch.py`` publishes the same
Snapshots from what the workers wrote to etcd.
"""

from __future__ import annotations

import logging
import time
from multiprocessing.connection import Connection
from typing import Iterable

import msgspec
import zmq

from ..config.etcd_settings import EtcdSettings
from ..config.sections import NamespaceFilter
from ..config.topology import Endpoints
from ..protocol import registry as wire
from ..transport.sockets import open_socket

log = logging.getLogger(__name__)

PUBLISH_INTERVAL_S = 1.0


def card_conflict(instances: Iterable[wire.Instance], instance_id: str, card: wire.ModelCard) -> str | None:
    """Why ``card`` may not join ``instances``: its role is unknown, or another instance serves its name with a
    different card."""
    if card.disaggregation_mode not in wire.DISAGGREGATION_MODES:
        return (f"model {card.name!r}: unknown disaggregation mode {card.disaggregation_mode!r} "
                f"({' | '.join(wire.DISAGGREGATION_MODES)}); refusing the new worker")
    for other in instances:
        if other.instance_id == instance_id or other.card.name != card.name:
            continue
        differences = card.differences(other.card)
        if differences:
            return (f"model {card.name!r} is already served with a different model card "
                    f"({', '.join(differences)} differ from instance {other.instance_id}); "
                    f"refusing the new worker")
    return None


class Leases:
    """Live instances keyed by id, with their lease deadlines; pure logic, no sockets."""

    def __init__(self, namespaces: NamespaceFilter, ttl_s: float) -> None:
        self.namespaces = namespaces
        self.ttl_s = ttl_s
        self.instances: dict[str, wire.Instance] = {}
        self.deadlines: dict[str, float] = {}
        self.version = 0

    def register(self, message: wire.Register, now: float) -> wire.Ack:
        if not self.namespaces.accepts(message.namespace):
            return wire.Ack(ok=False, error=f"namespace {message.namespace!r} is not served here "
                                            f"(this frontend serves {self.namespaces.describe()})")
        conflict = card_conflict(self.instances.values(), message.instance_id, message.card)
        if conflict:
            return wire.Ack(ok=False, error=conflict)
        known = self.instances.get(message.instance_id)
        instance = wire.Instance(message.instance_id, message.endpoint, message.card)
        self.instances[message.instance_id] = instance
        self.deadlines[message.instance_id] = now + self.ttl_s
        if known != instance:
            self.version += 1
            log.info("instance registered", extra={"instance": message.instance_id, "model": message.card.name,
                                                   "endpoint": message.endpoint})
        return wire.Ack(ok=True, lease_ttl_s=self.ttl_s)

    def heartbeat(self, message: wire.Heartbeat, now: float) -> wire.Ack:
        if message.instance_id not in self.instances:
            return wire.Ack(ok=False, error="unknown instance", unknown_instance=True)
        self.deadlines[message.instance_id] = now + self.ttl_s
        return wire.Ack(ok=True, lease_ttl_s=self.ttl_s)

    def drain(self, instance_id: str) -> wire.Ack:
        instance = self.instances.get(instance_id)
        if instance is None:
            return wire.Ack(ok=False, error="unknown instance", unknown_instance=True)
        if not instance.draining:
            self.instances[instance_id] = msgspec.structs.replace(instance, draining=True)
            self.version += 1
            log.info("instance draining", extra={"instance": instance_id})
        return wire.Ack(ok=True, lease_ttl_s=self.ttl_s)

    def unregister(self, instance_id: str) -> wire.Ack:
        if self.instances.pop(instance_id, None) is not None:
            self.deadlines.pop(instance_id, None)
            self.version += 1
            log.info("instance unregistered", extra={"instance": instance_id})
        return wire.Ack(ok=True)

    def expire(self, now: float) -> list[str]:
        expired = [iid for iid, deadline in self.deadlines.items() if deadline < now]
        for instance_id in expired:
            del self.instances[instance_id]
            del self.deadlines[instance_id]
            log.warning("instance lease expired", extra={"instance": instance_id})
        if expired:
            self.version += 1
        return expired

    def snapshot(self) -> wire.Snapshot:
        return wire.Snapshot(self.version, list(self.instances.values()))


def handle(leases: Leases, payload: bytes, now: float) -> wire.Ack:
    """Apply one worker message; a malformed frame is answered with an error, never raised."""
    try:
        message = wire.to_registry_decoder.decode(payload)
    except msgspec.DecodeError as exc:
        return wire.Ack(ok=False, error=f"malformed registry message: {exc}")
    if isinstance(message, wire.Register):
        return leases.register(message, now)
    if isinstance(message, wire.Heartbeat):
        return leases.heartbeat(message, now)
    if isinstance(message, wire.Drain):
        return leases.drain(message.instance_id)
    return leases.unregister(message.instance_id)


def _new_subscribers(sock: zmq.Socket) -> bool:
    """Read the XPUB's pending (un)subscription messages; whether any was a subscription."""
    subscribed = False
    while True:
        try:
            message = sock.recv(zmq.NOBLOCK)
        except zmq.Again:
            return subscribed
        subscribed = subscribed or message[:1] == b"\x01"


def run(namespaces: NamespaceFilter, ttl_s: float, endpoints: Endpoints, etcd: EtcdSettings | None, recover_s: float,
        ready: Connection) -> None:
    """Process entry: serve the registry until terminated; with ``etcd`` (``--discovery-backend etcd``), publish
    the instances found in etcd instead (``etcd_watch.py``: no worker socket).

    ``recover_s`` > 0 (the daemon restarted a registry that died): publish nothing for that long, so that the
    gateways keep routing with their last table while the live workers, told "unknown instance" at their next
    heartbeat, register again; publishing the empty table of a fresh start would fail every request in flight.
    """
    if etcd is not None:
        from .etcd_watch import run_etcd  # its etcd client is loaded only in this mode

        run_etcd(namespaces, endpoints, etcd, ready)
        return
    context = zmq.Context()
    recv_from_workers = open_socket(context, zmq.ROUTER, bind=endpoints.registry)
    send_to_gateways = open_socket(context, zmq.XPUB, bind=endpoints.registry_pub)
    send_to_gateways.setsockopt(zmq.XPUB_VERBOSE, 1)  # every subscriber's subscription, not only the first
    leases = Leases(namespaces, ttl_s)
    ready.send("ready")
    ready.close()
    published_version, next_publish = -1, time.monotonic() + recover_s
    if recover_s:
        log.warning("registry restarted; instances re-register before the table is published",
                    extra={"seconds": recover_s})
    poller = zmq.Poller()
    poller.register(recv_from_workers, zmq.POLLIN)
    poller.register(send_to_gateways, zmq.POLLIN)
    while True:
        ready_sockets = dict(poller.poll(250))
        if send_to_gateways in ready_sockets and _new_subscribers(send_to_gateways) and published_version >= 0:
            send_to_gateways.send(wire.encoder.encode(leases.snapshot()))  # not during recovery: see above
        if recv_from_workers in ready_sockets:
            while True:
                try:
                    identity, payload = recv_from_workers.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                except ValueError:
                    continue  # wrong frame count: nothing to answer to
                ack = handle(leases, payload, time.monotonic())
                recv_from_workers.send_multipart([identity, wire.encoder.encode(ack)])
        now = time.monotonic()
        leases.expire(now)
        if now >= next_publish or (leases.version != published_version and published_version >= 0):
            send_to_gateways.send(wire.encoder.encode(leases.snapshot()))
            published_version, next_publish = leases.version, now + PUBLISH_INTERVAL_S
