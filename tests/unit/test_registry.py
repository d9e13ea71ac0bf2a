"""Unit tests for frontend.registry.server: the lease table, the message handler and the process loop."""

from __future__ import annotations

import multiprocessing

import msgspec
import pytest
import zmq

from frontend.config.sections import NamespaceFilter
from frontend.config.topology import Endpoints
from frontend.protocol import registry as wire
from frontend.registry.server import Leases, handle, run

NS = "dynamo"
TTL = 10.0


def card(name: str = "tiny", **overrides) -> wire.ModelCard:
    return wire.ModelCard(name=name, model_path=overrides.pop("model_path", f"/models/{name}"), **overrides)


def register(instance_id: str = "w1", *, namespace: str = NS, endpoint: str = "tcp://127.0.0.1:6001",
             model: wire.ModelCard | None = None) -> wire.Register:
    return wire.Register(instance_id, namespace, endpoint, model or card())


def encode(message) -> bytes:
    return wire.encoder.encode(message)


@pytest.fixture
def leases() -> Leases:
    return Leases(NamespaceFilter(NS), TTL)


# ---- register ------------------------------------------------------------------------------------


def test_register_adds_instance(leases):
    ack = leases.register(register("w1"), now=100.0)
    assert ack == wire.Ack(ok=True, lease_ttl_s=TTL)
    assert list(leases.instances) == ["w1"]
    assert leases.instances["w1"] == wire.Instance("w1", "tcp://127.0.0.1:6001", card())
    assert leases.deadlines["w1"] == 110.0
    assert leases.version == 1


def test_snapshot_reflects_table(leases):
    assert leases.snapshot() == wire.Snapshot(0, [])
    leases.register(register("w1"), now=0.0)
    leases.register(register("w2", endpoint="tcp://127.0.0.1:6002"), now=0.0)
    snapshot = leases.snapshot()
    assert snapshot.version == 2
    assert [i.instance_id for i in snapshot.instances] == ["w1", "w2"]
    # The snapshot survives the wire.
    assert wire.snapshot_decoder.decode(encode(snapshot)) == snapshot


def test_identical_reregister_keeps_version_but_renews_lease(leases):
    leases.register(register("w1"), now=0.0)
    ack = leases.register(register("w1"), now=5.0)
    assert ack.ok
    assert leases.version == 1
    assert leases.deadlines["w1"] == 15.0


def test_reregister_with_new_endpoint_bumps_version(leases):
    leases.register(register("w1"), now=0.0)
    leases.register(register("w1", endpoint="tcp://127.0.0.1:7000"), now=1.0)
    assert leases.version == 2
    assert leases.instances["w1"].endpoint == "tcp://127.0.0.1:7000"


def test_sole_instance_may_reregister_with_new_card(leases):
    leases.register(register("w1"), now=0.0)
    ack = leases.register(register("w1", model=card(kv_block_size=64)), now=1.0)
    assert ack.ok
    assert leases.instances["w1"].card.kv_block_size == 64
    assert leases.version == 2


def test_drain_keeps_the_instance_marked_until_it_unregisters(leases):
    leases.register(register("w1"), now=0.0)
    ack = handle(leases, encode(wire.Drain("w1")), now=1.0)
    assert ack.ok and leases.version == 2
    assert leases.instances["w1"].draining
    assert handle(leases, encode(wire.Drain("w1")), now=1.5).ok and leases.version == 2  # idempotent
    assert leases.heartbeat(wire.Heartbeat("w1"), now=2.0).ok  # its lease runs on while it drains
    decoded = wire.snapshot_decoder.decode(encode(leases.snapshot()))
    assert decoded.instances[0].draining
    leases.unregister("w1")
    assert leases.instances == {}


def test_drain_of_an_unknown_instance_says_so(leases):
    ack = handle(leases, encode(wire.Drain("ghost")), now=0.0)
    assert not ack.ok and ack.unknown_instance


def test_namespace_mismatch_refused(leases):
    ack = leases.register(register("w1", namespace="other"), now=0.0)
    assert ack.ok is False
    assert "'other'" in ack.error and repr(NS) in ack.error
    assert leases.instances == {}
    assert leases.version == 0


@pytest.mark.parametrize("namespaces, accepted, refused", [
    (NamespaceFilter(), ["dynamo", "other", ""], []),  # --namespace unset: every namespace, as in Dynamo
    (NamespaceFilter("ns"), ["ns"], ["ns-1", "other"]),
    (NamespaceFilter("ignored", "ns"), ["ns", "ns-abc123"], ["ignored", "other"]),  # the prefix wins
])
def test_namespace_filter(namespaces, accepted, refused):
    leases = Leases(namespaces, TTL)
    for index, namespace in enumerate(accepted):
        assert leases.register(register(f"w{index}", namespace=namespace), now=0.0).ok, namespace
    for namespace in refused:
        ack = leases.register(register("x", namespace=namespace), now=0.0)
        assert not ack.ok and namespaces.describe() in ack.error, namespace


@pytest.mark.parametrize("different", [
    {"kv_block_size": 32},
    {"model_path": "/elsewhere/tiny"},
    {"context_length": 4096},
    {"model_types": ["chat"]},
])
def test_same_name_different_card_refused(leases, different):
    leases.register(register("w1"), now=0.0)
    ack = leases.register(register("w2", endpoint="tcp://127.0.0.1:6002", model=card(**different)), now=1.0)
    assert ack.ok is False
    assert "'tiny'" in ack.error
    assert "w1" in ack.error
    assert list(leases.instances) == ["w1"]
    assert "w2" not in leases.deadlines
    assert leases.version == 1


def test_same_name_same_card_accepted(leases):
    leases.register(register("w1"), now=0.0)
    ack = leases.register(register("w2", endpoint="tcp://127.0.0.1:6002"), now=1.0)
    assert ack.ok
    assert sorted(leases.instances) == ["w1", "w2"]
    assert leases.version == 2


def test_runtime_config_difference_is_not_a_conflict(leases):
    leases.register(register("w1", model=card(runtime_config={"a": 1})), now=0.0)
    ack = leases.register(register("w2", model=card(runtime_config={"a": 2})), now=0.0)
    assert ack.ok


def test_prefill_and_decode_workers_serve_one_model_and_an_unknown_role_is_refused(leases):
    assert leases.register(register("w1", model=card(disaggregation_mode="prefill")), now=0.0).ok
    assert leases.register(register("w2", model=card(disaggregation_mode="decode")), now=0.0).ok
    ack = leases.register(register("w3", model=card(disaggregation_mode="x" * 10_000)), now=0.0)
    assert not ack.ok and "unknown disaggregation mode" in ack.error and "w3" not in leases.instances


def test_different_models_coexist(leases):
    leases.register(register("w1", model=card("a", kv_block_size=16)), now=0.0)
    ack = leases.register(register("w2", model=card("b", kv_block_size=64)), now=0.0)
    assert ack.ok
    assert leases.version == 2


def test_conflicting_card_accepted_after_old_instance_leaves(leases):
    leases.register(register("w1"), now=0.0)
    leases.unregister("w1")
    ack = leases.register(register("w2", model=card(kv_block_size=32)), now=1.0)
    assert ack.ok


# ---- heartbeat -----------------------------------------------------------------------------------


def test_heartbeat_extends_lease_without_version_change(leases):
    leases.register(register("w1"), now=0.0)
    ack = leases.heartbeat(wire.Heartbeat("w1"), now=8.0)
    assert ack == wire.Ack(ok=True, lease_ttl_s=TTL)
    assert leases.deadlines["w1"] == 18.0
    assert leases.version == 1
    assert leases.expire(now=15.0) == []


def test_heartbeat_unknown_instance(leases):
    ack = leases.heartbeat(wire.Heartbeat("ghost"), now=0.0)
    assert ack.ok is False
    assert ack.unknown_instance is True
    assert leases.instances == {} and leases.deadlines == {}
    assert leases.version == 0


# ---- unregister ------------------------------------------------------------------------------------


def test_unregister_removes_and_bumps_version(leases):
    leases.register(register("w1"), now=0.0)
    assert leases.unregister("w1") == wire.Ack(ok=True)
    assert leases.instances == {} and leases.deadlines == {}
    assert leases.version == 2


def test_unregister_unknown_is_ok_without_change(leases):
    leases.register(register("w1"), now=0.0)
    assert leases.unregister("ghost").ok
    assert leases.version == 1
    assert list(leases.instances) == ["w1"]


# ---- expire ----------------------------------------------------------------------------------------


def test_expire_drops_only_stale_instances(leases):
    leases.register(register("w1"), now=0.0)
    leases.register(register("w2"), now=5.0)
    assert leases.expire(now=10.0) == []  # a deadline equal to now is still alive
    assert leases.version == 2
    assert leases.expire(now=10.5) == ["w1"]
    assert list(leases.instances) == ["w2"]
    assert list(leases.deadlines) == ["w2"]
    assert leases.version == 3
    assert leases.expire(now=12.0) == []
    assert leases.version == 3
    assert leases.expire(now=100.0) == ["w2"]
    assert leases.version == 4
    assert leases.snapshot().instances == []


def test_expire_many_at_once_is_one_version(leases):
    for i in range(3):
        leases.register(register(f"w{i}"), now=0.0)
    assert sorted(leases.expire(now=11.0)) == ["w0", "w1", "w2"]
    assert leases.version == 4


def test_heartbeat_after_expiry_is_unknown_then_reregister(leases):
    leases.register(register("w1"), now=0.0)
    leases.expire(now=20.0)
    ack = leases.heartbeat(wire.Heartbeat("w1"), now=20.0)
    assert ack.unknown_instance
    assert leases.register(register("w1"), now=20.0).ok
    assert leases.deadlines["w1"] == 30.0
    assert leases.version == 3


# ---- handle ----------------------------------------------------------------------------------------


def test_handle_dispatches_every_message(leases):
    assert handle(leases, encode(register("w1")), 0.0).ok
    assert "w1" in leases.instances
    assert handle(leases, encode(wire.Heartbeat("w1")), 4.0).ok
    assert leases.deadlines["w1"] == 14.0
    assert handle(leases, encode(wire.Heartbeat("nope")), 4.0).unknown_instance
    assert handle(leases, encode(wire.Unregister("w1")), 5.0).ok
    assert leases.instances == {}


def test_handle_refusals_travel_as_acks(leases):
    ack = handle(leases, encode(register("w1", namespace="elsewhere")), 0.0)
    assert ack.ok is False and "elsewhere" in ack.error
    # The ack survives the wire with its error.
    assert wire.ack_decoder.decode(encode(ack)) == ack


@pytest.mark.parametrize("payload", [
    b"",
    b"\xc1",  # never-used MessagePack byte
    b"not msgpack at all",
    msgspec.msgpack.encode({"type": "register"}),  # missing fields
    msgspec.msgpack.encode({"type": "launch_missiles", "instance_id": "x"}),  # unknown tag
    msgspec.msgpack.encode({"type": "heartbeat", "instance_id": 42}),  # wrong field type
    msgspec.msgpack.encode(["heartbeat", "w1"]),
    msgspec.msgpack.encode(wire.Ack(ok=True)),  # a valid message, but not one workers send
    msgspec.json.encode(wire.Heartbeat("w1")),  # JSON instead of MessagePack
])
def test_handle_malformed_payload_is_an_error_ack(leases, payload):
    ack = handle(leases, payload, 0.0)
    assert isinstance(ack, wire.Ack)
    assert ack.ok is False
    assert ack.error.startswith("malformed registry message")
    assert leases.version == 0


# ---- the process loop over real sockets -----------------------------------------------------------


def _poll_recv(sock: zmq.Socket, timeout_ms: int = 5000) -> list[bytes]:
    assert sock.poll(timeout_ms), "no answer from the registry process"
    return sock.recv_multipart()


def test_run_serves_registrations_and_publishes_snapshots(tmp_path):
    endpoints = Endpoints(registry=f"ipc://{tmp_path}/registry", registry_pub=f"ipc://{tmp_path}/registry-pub",
                          tokenizers=[], indexer_routed=f"ipc://{tmp_path}/routed",
                          indexer_status=f"ipc://{tmp_path}/status", kv_index_name="unused")
    spawn = multiprocessing.get_context("spawn")
    parent_end, child_end = spawn.Pipe()
    process = spawn.Process(target=run, args=(NamespaceFilter(NS), 0.5, endpoints, None, 0.0, child_end), daemon=True)
    process.start()
    context = zmq.Context()
    worker = context.socket(zmq.DEALER)
    sub = context.socket(zmq.SUB)
    try:
        assert parent_end.poll(20), "registry process did not start"
        assert parent_end.recv() == "ready"
        for sock in (worker, sub):
            sock.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(endpoints.registry_pub)
        worker.connect(endpoints.registry)
        # The empty table is republished every second: once one arrives, the subscription is live.
        assert wire.snapshot_decoder.decode(_poll_recv(sub, 3000)[0]).instances == []
        # A subscriber that joins gets the table at once, not at the next periodic publish (four in a row
        # within half the period: by chance alone, one run in sixteen).
        for _ in range(4):
            late = context.socket(zmq.SUB)
            late.setsockopt(zmq.LINGER, 0)
            late.setsockopt(zmq.SUBSCRIBE, b"")
            late.connect(endpoints.registry_pub)
            try:
                assert wire.snapshot_decoder.decode(_poll_recv(late, 500)[0]).instances == []
            finally:
                late.close()

        worker.send(encode(register("w1")))
        ack = wire.ack_decoder.decode(_poll_recv(worker)[0])
        assert ack == wire.Ack(ok=True, lease_ttl_s=0.5)

        # A garbage frame is answered, not fatal.
        worker.send(b"\xc1garbage")
        bad = wire.ack_decoder.decode(_poll_recv(worker)[0])
        assert bad.ok is False and "malformed" in bad.error
        # A message of the wrong frame count gets no answer; the process keeps serving.
        worker.send_multipart([b"a", b"b"])
        worker.send(encode(wire.Heartbeat("w1")))
        assert wire.ack_decoder.decode(_poll_recv(worker)[0]).ok

        # Snapshots arrive (at least once a second); the instance shows up, then expires without heartbeats.
        seen_instance = seen_empty_after = False
        for _ in range(40):
            snapshot = wire.snapshot_decoder.decode(_poll_recv(sub, 3000)[0])
            ids = [i.instance_id for i in snapshot.instances]
            if ids == ["w1"]:
                seen_instance = True
            elif seen_instance and ids == []:
                seen_empty_after = True
                break
        assert seen_instance and seen_empty_after
        assert process.is_alive()

        worker.send(encode(wire.Heartbeat("w1")))
        assert wire.ack_decoder.decode(_poll_recv(worker)[0]).unknown_instance
    finally:
        worker.close()
        sub.close()
        context.term()
        process.terminate()
        process.join(5)
        parent_end.close()
