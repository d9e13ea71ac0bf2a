"""etcd discovery without etcd: key layout, value encoding, the registry's table (namespaces, conflicts, the
connected flag), the options and worker flags, and that the embedded path loads no etcd client."""

from __future__ import annotations

import argparse
import subprocess
import sys
from types import SimpleNamespace

import msgspec
import pytest

from frontend.config.etcd_settings import EtcdSettings
from frontend.config.options import OPTIONS_BY_NAME
from frontend.config.sections import NamespaceFilter
from frontend.engines.mocker import main as mocker_main
from frontend.protocol import registry as wire
from frontend.protocol.errors import ConfigError
from frontend.registry import etcd_watch
from frontend.registry.etcd_watch import EtcdTable
from frontend.transport.etcd_keys import (ROOT, InstanceKey, decode_instance, encode_instance, grpc_target,
                                          instance_key, parse_instance_key)
from frontend.worker.cli import add_flags, runtime_kwargs
from frontend.worker.etcd_lease import EtcdLease

CARD = wire.ModelCard("tiny", "/models/tiny", checksum="abc")


def instance(instance_id: str, card: wire.ModelCard = CARD, draining: bool = False) -> wire.Instance:
    return wire.Instance(instance_id, f"tcp://127.0.0.1:{5000 + len(instance_id)}", card, draining)


def kv(namespace: str, item: wire.Instance, revision: int) -> SimpleNamespace:
    """A range result's key-value as etcd3aio returns it."""
    return SimpleNamespace(key=instance_key(namespace, item.instance_id).encode(), value=encode_instance(item),
                           create_revision=revision)


# ---- key layout and values -------------------------------------------------------------------------------------


def test_instance_keys_round_trip():
    key = instance_key("prod", "123-abcd")
    assert key == f"{ROOT}prod/instances/123-abcd" == "/dynamo-py-frontend/v1/prod/instances/123-abcd"
    assert parse_instance_key(key.encode()) == InstanceKey("prod", "123-abcd")


@pytest.mark.parametrize("key", [b"/other/prod/instances/1", ROOT.encode() + b"prod/models/1",
                                 ROOT.encode() + b"prod/instances/", ROOT.encode() + b"prod/instances/1/x",
                                 ROOT.encode() + b"/instances/1"])
def test_other_keys_are_not_instances(key):
    assert parse_instance_key(key) is None


@pytest.mark.parametrize("namespace, instance_id", [("a/b", "1"), ("", "1"), ("ns", "x/y")])
def test_a_segment_with_a_slash_or_empty_is_refused(namespace, instance_id):
    with pytest.raises(ValueError, match="etcd key segment"):
        instance_key(namespace, instance_id)


def test_values_are_the_registry_instance_in_json():
    item = instance("1", draining=True)
    value = encode_instance(item)
    assert msgspec.json.decode(value)["card"]["name"] == "tiny"
    assert decode_instance(value) == item
    assert decode_instance(b"not json") is None and decode_instance(b'{"instance_id": 1}') is None


def test_leases_are_whole_seconds():
    assert [EtcdLease(EtcdSettings(), "ns", ttl).ttl_s for ttl in (0.2, 2.0, 2.5)] == [1, 2, 3]


def test_grpc_target_resolves_names_and_keeps_the_tls_server_name():
    target = grpc_target("http://127.0.0.1:2379, http://127.0.0.2:2380")
    assert target == (["127.0.0.1:2379", "127.0.0.2:2380"], False, "127.0.0.1")
    target = grpc_target("https://localhost:2379")
    assert target.tls and target.server_name == "localhost" and target.addresses == ["127.0.0.1:2379"]


# ---- the registry's table ----------------------------------------------------------------------------------------


def test_table_follows_puts_and_deletes_and_filters_namespaces():
    table = EtcdTable(NamespaceFilter(prefix="prod"))
    table.reset([kv("prod", instance("a"), 5), kv("staging", instance("b"), 6), kv("prod-eu", instance("c"), 7)])
    assert [i.instance_id for i in table.accepted] == ["a", "c"]
    version = table.version
    table.put(*_put("prod", instance("d"), 8))
    assert [i.instance_id for i in table.accepted] == ["a", "c", "d"] and table.version == version + 1
    table.put(*_put("prod", instance("d", draining=True), 8))  # drain: the same key rewritten
    assert table.accepted[-1].draining
    table.delete(instance_key("prod", "a").encode())
    assert [i.instance_id for i in table.accepted] == ["c", "d"]
    table.delete(instance_key("prod", "gone").encode())  # unknown: nothing changes
    assert [i.instance_id for i in table.accepted] == ["c", "d"]
    version = table.version
    table.put(*_put("staging", instance("e"), 9))  # another namespace: the table does not change
    assert table.version == version


def _put(namespace: str, item: wire.Instance, revision: int) -> tuple[bytes, bytes, int]:
    found = kv(namespace, item, revision)
    return found.key, found.value, found.create_revision


def test_the_first_card_of_a_name_wins_and_the_other_is_logged(monkeypatch):
    refusals: list[dict] = []  # (not caplog: a test that set up the daemon's logging stops propagation)
    monkeypatch.setattr(etcd_watch.log, "error", lambda msg, extra: refusals.append(extra))
    table = EtcdTable(NamespaceFilter())
    other = msgspec.structs.replace(CARD, context_length=4096)
    table.reset([kv("ns", instance("late", other), 9), kv("ns", instance("early"), 3)])
    assert [i.instance_id for i in table.accepted] == ["early"]
    assert len(refusals) == 1 and refusals[0]["instance"] == "late" and "context length" in refusals[0]["error"]
    table.put(*_put("ns", instance("early2"), 10))  # the same card joins; the refusal is not logged again
    assert [i.instance_id for i in table.accepted] == ["early", "early2"] and len(refusals) == 1
    table.delete(instance_key("ns", "early").encode())
    table.delete(instance_key("ns", "early2").encode())
    assert [i.instance_id for i in table.accepted] == ["late"]  # the first card gone: the other is served


def test_runtime_config_differences_are_no_conflict():
    table = EtcdTable(NamespaceFilter())
    busy = msgspec.structs.replace(CARD, runtime_config={"total_kv_blocks": 7})
    table.reset([kv("ns", instance("a"), 1), kv("ns", instance("b", busy), 2)])
    assert len(table.accepted) == 2


def test_a_key_whose_value_is_not_its_instance_is_ignored():
    table = EtcdTable(NamespaceFilter())
    table.put(instance_key("ns", "a").encode(), encode_instance(instance("b")), 1)
    table.put(instance_key("ns", "c").encode(), b"garbage", 2)
    assert table.accepted == []


def test_connected_flag_is_in_the_snapshot_and_bumps_the_version():
    table = EtcdTable(NamespaceFilter())
    table.reset([kv("ns", instance("a"), 1)])
    assert table.set_connected(True) and not table.set_connected(True)
    version = table.version
    assert table.set_connected(False) and table.version == version + 1
    snapshot = wire.snapshot_decoder.decode(wire.encoder.encode(table.snapshot()))
    assert snapshot.discovery == wire.DiscoveryState("etcd", False)
    assert [i.instance_id for i in snapshot.instances] == ["a"]


def test_an_embedded_snapshot_has_no_discovery_state():
    old = wire.encoder.encode(wire.Snapshot(3, [instance("a")]))
    assert wire.snapshot_decoder.decode(old).discovery is None


# ---- options and worker flags ----------------------------------------------------------------------------------


def test_discovery_backend_values():
    option = OPTIONS_BY_NAME["discovery_backend"]
    assert [option.parse(v, "test") for v in ("embedded", "mem", "file", "etcd")] == ["embedded"] * 3 + ["etcd"]
    with pytest.raises(ConfigError, match="'kubernetes' is not supported: use embedded .* or etcd"):
        option.parse("kubernetes", "env DYN_DISCOVERY_BACKEND")


@pytest.mark.parametrize("value, problem", [("127.0.0.1:2379", "is not http"), ("http://h", "is not http"),
                                            ("http://a:1,https://b:2", "mixes"), (" , ", "at least one"),
                                            ("http://a:1/path", "is not http")])
def test_etcd_endpoints_are_checked(value, problem):
    with pytest.raises(ConfigError, match=problem):
        OPTIONS_BY_NAME["etcd_endpoints"].parse(value, "test")


def test_etcd_password_never_shows():
    option = OPTIONS_BY_NAME["etcd_password"]
    assert option.secret and OPTIONS_BY_NAME["etcd_username"].secret
    assert "***" in repr(mocker_args([], {"ETCD_PASSWORD": "pw-1", "ETCD_USERNAME": "u"}, settings=True))


def mocker_args(argv: list[str], environ: dict[str, str], settings: bool = False):
    parser = argparse.ArgumentParser()
    add_flags(parser, mocker_main.FLAGS, environ)
    args = parser.parse_args(["--discovery-backend", "etcd", *argv] if settings else argv)
    return runtime_kwargs(args)["etcd"] if settings else args


def test_workers_read_dynamo_and_etcd_env_vars():
    args = mocker_args([], {"DYN_DISCOVERY_BACKEND": "etcd", "ETCD_ENDPOINTS": "http://10.0.0.1:2379",
                            "DYN_LEASE_TTL_S": "3", "ETCD_AUTH_CA": "/ca.pem"})
    kwargs = runtime_kwargs(args)
    assert kwargs["lease_ttl_s"] == 3.0
    assert (kwargs["etcd"].endpoints, kwargs["etcd"].ca_path) == ("http://10.0.0.1:2379", "/ca.pem")
    args = mocker_args(["--discovery-backend", "mem"], {"DYN_MOCKER_DISCOVERY_BACKEND": "etcd"})  # flags win
    assert runtime_kwargs(args)["etcd"] is None
    args = mocker_args([], {"DYN_MOCKER_ETCD_ENDPOINTS": "http://a:1", "DYN_ETCD_ENDPOINTS": "http://b:2",
                            "ETCD_ENDPOINTS": "http://c:3"})
    assert args.etcd_endpoints == "http://a:1"  # the command's own env var first, then Dynamo's


def test_the_embedded_path_loads_no_etcd_client_and_no_grpc():
    code = ("import sys; import frontend.engines.mocker.main, frontend.worker.runtime, frontend.registry.server; "
            "print(sorted(m for m in ('grpc', 'etcd3aio', 'frontend.transport.etcd_client') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"
