"""A Dynamo 1.6.1 frontend command line and environment start this daemon with the same settings; Dynamo's
overload behaviour (529 when every worker is busy, the /busy_threshold admin API) and router modes
(least-loaded, power-of-two, direct) through real clients."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import httpx
import openai
import pytest
from e2e_support import MODEL, REPO, Daemon

# From Dynamo's docs (router guide, TLS and logging pages): flags of ours spelled Dynamo's way, thresholds,
# and flags of Dynamo's we accept and ignore.
DYNAMO_ARGV = [
    "--http-port", "8123", "--router-mode", "kv", "--router-kv-overlap-score-weight", "0.5",
    "--router-temperature", "0.2", "--no-router-kv-events", "--router-ttl-secs", "60", "--router-replica-sync",
    "--active-decode-blocks-threshold", "0.85", "--active-prefill-tokens-threshold", "10000",
    "--active-prefill-tokens-threshold-frac", "1.5", "--kv-cache-block-size", "16", "--namespace", "prod",
    "--migration-limit", "2", "--migration-max-seq-len", "8192", "--metrics-prefix", "dyn",
    "--enable-anthropic-api", "--kserve-grpc-server", "--discovery-backend", "etcd", "--request-plane", "tcp",
    "--router-kv-overlap-score-credit", "0.8", "--no-router-track-active-blocks",
]
DYNAMO_ENV = {"DYN_LOG": "info,dynamo_llm::kv_router=debug", "DYN_LOGGING_JSONL": "1",
              "DYN_HTTP_OVERLOAD_STATUS_CODE": "503", "DYN_HTTP_GRACEFUL_SHUTDOWN_TIMEOUT_SECS": "7",
              "DYN_HTTP_BODY_LIMIT_MB": "64", "DYN_DISABLE_FRONTEND_ADMIN_API": "1"}


def dump(argv: list[str], env: dict[str, str]) -> dict:
    result = subprocess.run([sys.executable, "-m", "frontend", *argv, "--dump-config"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return tomllib.loads(result.stdout)


def test_a_dynamo_command_line_and_environment_resolve_to_the_same_settings(tmp_path):
    tls = ["--tls-cert-path", str(tmp_path / "s.pem"), "--tls-key-path", str(tmp_path / "s.key"),
           "--tls-client-ca-cert-path", str(tmp_path / "ca.pem")]
    config = dump(DYNAMO_ARGV + tls, {"PATH": "/usr/bin:/bin", **DYNAMO_ENV})
    expected = {
        "http_port": 8123, "router_mode": "kv", "kv_overlap_score_weight": 0.5, "router_temperature": 0.2,
        "kv_events": False, "router_ttl_s": 60.0, "active_decode_blocks_threshold": 0.85,
        "active_prefill_tokens_threshold": 10000, "active_prefill_tokens_threshold_frac": 1.5,
        "kv_cache_block_size": 16, "namespace": "prod", "migration_limit": 2, "migration_max_seq_len": 8192,
        "metrics_prefix": "dyn", "enable_anthropic_api": True, "kserve_grpc_server": True,
        "tls_cert_path": str(tmp_path / "s.pem"), "tls_key_path": str(tmp_path / "s.key"),
        "tls_client_ca_path": str(tmp_path / "ca.pem"), "log_level": "info,dynamo_llm::kv_router=debug",
        "log_format": "json", "overload_status_code": 503, "graceful_shutdown_timeout": 7.0,
        "http_body_limit_mb": 64.0, "disable_frontend_admin_api": True, "discovery_backend": "etcd",
    }
    assert {key: config[key] for key in expected} == expected
    assert "request_plane" not in config  # ignored flags are not settings
    # Dynamo's "None" unsets a threshold; its legacy overlap-weight env var still works
    config = dump(["--active-decode-blocks-threshold", "None"], {"DYN_OVERLAP_SCORE_WEIGHT": "2"})
    assert config["active_decode_blocks_threshold"] == 0.0 and config["kv_overlap_score_weight"] == 2.0


def test_unknown_flags_are_still_errors_and_help_names_the_ignored_ones():
    result = subprocess.run([sys.executable, "-m", "frontend", "--no-such-flag"], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and "--no-such-flag" in result.stderr
    help_text = subprocess.run([sys.executable, "-m", "frontend", "--help"], cwd=REPO, capture_output=True,
                               text=True, timeout=60).stdout
    assert "--request-plane" in help_text and "Ignored:" in help_text
    version = subprocess.run([sys.executable, "-m", "frontend", "--version"], cwd=REPO, capture_output=True,
                             text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("dynamo-py-frontend ")


def test_the_daemon_serves_with_a_dynamo_command_line(start_daemon, tmp_path):
    dumped = tmp_path / "config.toml"
    server = start_daemon("--router-mode", "kv", "--router-kv-overlap-score-weight", "0.5", "--no-router-kv-events",
                          "--router-ttl-secs", "60", "--discovery-backend", "mem", "--request-plane", "tcp",
                          "--active-decode-blocks-threshold", "0.9", "--dump-config-to", str(dumped),
                          env={"DYN_LOG": "info,frontend.registry=error", "DYN_LOGGING_JSONL": "1"})
    with server.client() as client:
        reply = client.chat.completions.create(model=MODEL, max_tokens=4,
                                               messages=[{"role": "user", "content": "hello"}])
    assert reply.choices[0].message.content
    config = tomllib.loads(dumped.read_text())
    assert (config["router_mode"], config["router_ttl_s"], config["log_format"]) == ("kv", 60.0, "json")
    lines = [json.loads(line) for line in server.log_text().splitlines() if line.startswith("{")]
    warning = next(line for line in lines if "ignoring NVIDIA Dynamo flags" in line["msg"])
    assert "--request-plane" in warning["flags"] and "--discovery-backend" not in warning["flags"]
    assert not [line for line in lines if line["logger"].startswith("frontend.registry") and line["level"] == "info"]
    assert any(line["level"] == "info" for line in lines)  # DYN_LOG's root level: info


# ---- overload: 529 and the admin API ---------------------------------------------------------------------


def _hold_a_stream(server: Daemon, stop: threading.Event, started: threading.Event, **extra) -> threading.Thread:
    """A long streamed request kept in flight (its prompt holds KV blocks) until ``stop``."""
    def run() -> None:
        with httpx.Client(base_url=server.base_url, timeout=60) as http:
            with http.stream("POST", "/v1/chat/completions", json={
                    "model": MODEL, "max_tokens": 2000, "ignore_eos": True, "stream": True, **extra,
                    "messages": [{"role": "user", "content": "tell me a long story about harbors " * 8}]}) as reply:
                for _ in reply.iter_lines():
                    started.set()
                    if stop.is_set():
                        return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_all_workers_busy_is_529_and_thresholds_change_at_run_time(start_daemon):
    server = start_daemon(mock_workers=1, speedup="1")
    assert server.http.get("/busy_threshold").json() == {"thresholds": [
        {"active_decode_blocks_threshold": 0.0, "active_prefill_tokens_threshold": 0,
         "active_prefill_tokens_threshold_frac": 0.0, "model": MODEL}]}
    # any active KV block makes the worker busy
    answer = server.http.post("/busy_threshold", json={"model": MODEL, "active_decode_blocks_threshold": 1e-7})
    assert answer.status_code == 200 and answer.json()["active_decode_blocks_threshold"] == 1e-7
    assert server.http.post("/busy_threshold", json={"model": "nope"}).status_code == 404
    bad = server.http.post("/busy_threshold", json={"model": MODEL, "active_prefill_tokens_threshold": -1})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "active_prefill_tokens_threshold"
    stop, started = threading.Event(), threading.Event()
    holder = _hold_a_stream(server, stop, started)
    try:
        assert started.wait(30)
        with server.client() as client, pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(model=MODEL, max_tokens=2, messages=[{"role": "user", "content": "hi"}])
        assert info.value.status_code == 529 and "busy" in info.value.message
        assert info.value.response.headers["retry-after"] == "1"
        # the threshold off again (null), through whichever HTTP process: served while the stream still runs
        server.http.post("/busy_threshold", json={"model": MODEL, "active_decode_blocks_threshold": None})
        time.sleep(0.2)  # every process re-reads the thresholds within 100 ms
        with server.client() as client:
            client.chat.completions.create(model=MODEL, max_tokens=2, messages=[{"role": "user", "content": "hi"}])
    finally:
        stop.set()
        holder.join(30)


@pytest.mark.parametrize("body", [
    b"", b"{", b"[]", b'{"model": 7}', b'{"model": "tiny", "active_decode_blocks_threshold": "high"}',
    b'{"model": "tiny", "active_decode_blocks_threshold": NaN}', b'{"model": "tiny", "active_decode_blocks_threshold": 1e999}',
    b'{"model": "tiny", "active_prefill_tokens_threshold": 1.5}', b'{"model": "tiny", "surprise": 1}',
    b'{"model": "tiny", "active_prefill_tokens_threshold": 99999999999999999999999}',
    b'{"model": ' + b"[" * 5000 + b"]" * 5000 + b"}", b'{"model": "' + b"m" * 1_000_000 + b'"}',
])
def test_admin_api_refuses_bad_bodies_with_a_400_or_404(daemon, body):
    """The shared daemon's thresholds stay untouched by anything that is not a well-formed change."""
    before = daemon.http.get("/busy_threshold").json()
    answer = daemon.http.post("/busy_threshold", content=body, headers={"content-type": "application/json"})
    assert answer.status_code in (400, 404) and set(answer.json()) == {"error"}, answer.text[:300]
    assert daemon.http.get("/busy_threshold").json() == before


def test_admin_api_can_be_turned_off(start_daemon):
    server = start_daemon(mock_workers=1, env={"DYN_DISABLE_FRONTEND_ADMIN_API": "true"})
    assert server.http.get("/busy_threshold").status_code == 404
    assert server.http.post("/busy_threshold", json={"model": MODEL}).status_code == 404


# ---- router modes ----------------------------------------------------------------------------------------


def _worker_of(client: openai.OpenAI, **extra) -> str:
    reply = client.chat.completions.create(model=MODEL, max_tokens=1, messages=[{"role": "user", "content": "hi"}],
                                           extra_body={"nvext": {"extra_fields": ["worker_id"]}}, **extra)
    return reply.model_extra["nvext"]["worker_id"]["decode_worker_id"]


@pytest.mark.parametrize("mode", ["least-loaded", "power-of-two"])
def test_load_aware_modes_avoid_the_worker_that_is_busy(start_daemon, mode):
    server = start_daemon("--router-mode", mode, mock_workers=2, speedup="1")
    stop, started = threading.Event(), threading.Event()
    holder = _hold_a_stream(server, stop, started)
    try:
        assert started.wait(30)
        instances = server.http.get("/health").json()["instances"]
        busy = next(i["instance_id"] for i in instances if i["load"]["active_requests"] == 1)
        with server.client() as client:  # one after the other: the idle worker always has fewer requests
            picks = {_worker_of(client) for _ in range(6)}
        assert busy not in picks and len(picks) == 1
    finally:
        stop.set()
        holder.join(30)


def test_direct_mode_serves_only_the_named_worker(start_daemon):
    server = start_daemon("--router-mode", "direct", mock_workers=2)
    instances = [i["instance_id"] for i in server.http.get("/health").json()["instances"]]
    with server.client() as client:
        with pytest.raises(openai.BadRequestError, match="x-worker-instance-id"):
            client.chat.completions.create(model=MODEL, max_tokens=1, messages=[{"role": "user", "content": "hi"}])
        for instance in instances:
            headers = {"x-worker-instance-id": instance}
            assert {_worker_of(client, extra_headers=headers) for _ in range(3)} == {instance}


def test_model_path_serves_a_local_model_directory_under_a_name(start_daemon):
    server = start_daemon("--model-path", str(Path(REPO) / "config" / "models" / "tiny"), "--model-name", "my-tiny",
                          mock_workers=1, model="my-tiny")
    with server.client() as client:
        reply = client.chat.completions.create(model="my-tiny", max_tokens=3,
                                               messages=[{"role": "user", "content": "hi"}])
    assert reply.model == "my-tiny" and reply.usage.completion_tokens == 3
