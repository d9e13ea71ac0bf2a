"""Disaggregated prefill/decode through the frontend, on mock workers with the two roles.

A model whose workers include prefill workers (``--disaggregation-mode prefill``) is served in two legs: the
prompt is prefilled on a prefill worker picked by the KV router, then decoded on a decode worker picked by
decode load, which receives the prompt's KV (the mock simulates the transfer and counts the tokens by source on
its ``--system-port`` /metrics). The vLLM version of these checks is ``test_e2e_vllm_disagg.py``.
"""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from collections import Counter

import httpx
import pytest
from e2e_support import FAST, Daemon, free_port, wait_until

SESSIONS = 6
TURNS = 3
WORKER_IDS = {"nvext": {"extra_fields": ["worker_id"]}}


def _system_prompt(index: int) -> str:
    words = "river lamp harbor circuit garden signal orbit engine ledger meadow".split()
    return f"Session {index}. " + " ".join(words[(index * 7 + i) % len(words)] + str(i % 13) for i in range(300))


def _roles(daemon: Daemon) -> dict[str, str]:
    return {i["instance_id"]: i["disaggregation_mode"] for i in daemon.http.get("/health").json()["instances"]}


def _worker_metric(port: int, source: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    match = re.search(rf'worker_prompt_tokens_total\{{worker_id="[^"]+",source="{source}"\}} (\S+)', text)
    assert match, text
    return float(match.group(1))


class Workers:
    """External mock workers of both roles, each with its status port."""

    def __init__(self, daemon: Daemon, prefill: int, decode: int, speedup: str = FAST) -> None:
        self.daemon = daemon
        self.speedup = speedup
        self.ports: dict[str, int] = {}  # role + index -> status port
        for role, count in (("prefill", prefill), ("decode", decode)):
            for index in range(count):
                self.start(f"{role}{index}", role)
        daemon.wait_model(daemon.model, instances=prefill + decode)

    def start(self, key: str, role: str) -> None:
        port = free_port()
        self.ports[key] = port
        self.daemon.start_mocker("--disaggregation-mode", role, "--system-port", str(port), speedup=self.speedup)

    def total(self, role: str, source: str) -> float:
        return sum(_worker_metric(port, source) for key, port in self.ports.items() if key.startswith(role))


def _chat(daemon: Daemon, content: str, system: str = "", max_tokens: int = 4) -> dict:
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": content}]
    response = daemon.http.post("/v1/chat/completions", json={
        "model": daemon.model, "max_tokens": max_tokens, "ignore_eos": True, "messages": messages, **WORKER_IDS})
    assert response.status_code == 200, response.text
    return response.json()


def test_prefill_follows_the_prefix_and_decode_takes_the_transferred_kv(start_daemon):
    daemon = start_daemon("--router-mode", "kv", mock_workers=0)
    workers = Workers(daemon, prefill=2, decode=2)
    roles = _roles(daemon)
    prefill_ids = {i for i, role in roles.items() if role == "prefill"}
    decode_ids = {i for i, role in roles.items() if role == "decode"}
    assert len(prefill_ids) == 2 and len(decode_ids) == 2
    systems = [_system_prompt(i) for i in range(SESSIONS)]
    prefill_of: dict[int, set[str]] = {i: set() for i in range(SESSIONS)}
    hits, prompt_tokens = [], 0
    for turn in range(TURNS):
        for index, system in enumerate(systems):  # interleaved: only prefix-aware routing keeps each session's cache
            body = _chat(daemon, f"turn {turn}", system)
            worker = body["nvext"]["worker_id"]
            assert worker["prefill_worker_id"] in prefill_ids and worker["decode_worker_id"] in decode_ids, worker
            prefill_of[index].add(worker["prefill_worker_id"])
            usage = body["usage"]
            prompt_tokens += usage["prompt_tokens"]
            if turn:  # the prefill side's cache hit, as the decode worker reports it (as vLLM does)
                hits.append((usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0) / usage["prompt_tokens"])
    print(f"prefill cached-token ratio after the first turn: {sum(hits) / len(hits):.3f} (min {min(hits):.3f})")
    assert min(hits) > 0.85, hits
    assert all(len(chosen) == 1 for chosen in prefill_of.values()), prefill_of  # each session kept its prefill worker
    assert len(set().union(*prefill_of.values())) == 2  # and the sessions were spread over both
    requests = SESSIONS * TURNS
    assert daemon.counter("disagg_transfers_total", model=daemon.model) == requests
    # every prompt token reached a decode worker by transfer (or its own cache), none was computed there
    assert workers.total("decode", "local_compute") == 0
    assert workers.total("decode", "external_kv_transfer") + workers.total("decode", "local_cache_hit") == prompt_tokens
    assert workers.total("prefill", "local_compute") + workers.total("prefill", "local_cache_hit") == prompt_tokens
    assert workers.total("prefill", "local_cache_hit") > prompt_tokens / 2


def test_decode_legs_are_balanced_by_decode_load(start_daemon):
    daemon = start_daemon("--router-mode", "kv", mock_workers=0)
    Workers(daemon, prefill=1, decode=2, speedup="1")  # realistic pace: 300 tokens take about 2 s
    decode_workers: list[str] = []

    def stream(index: int) -> None:
        with httpx.stream("POST", f"{daemon.base_url}/v1/completions", timeout=60, json={
                "model": daemon.model, "prompt": f"Story {index}: " + _system_prompt(100 + index)[:300],
                "max_tokens": 300, "ignore_eos": True, "stream": True, **WORKER_IDS}) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("data: {") and '"worker_id"' in line:  # the final chunk
                    decode_workers.append(json.loads(line[6:])["nvext"]["worker_id"]["decode_worker_id"])

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
        time.sleep(0.05)  # one at a time, so each sees the load of those before
    for thread in threads:
        thread.join(60)
    counts = Counter(decode_workers)
    assert len(decode_workers) == 8 and len(counts) == 2 and max(counts.values()) <= 5, counts


def test_a_killed_prefill_worker_costs_no_request_and_is_replaced(start_daemon):
    daemon = start_daemon("--router-mode", "kv", mock_workers=0)
    workers = Workers(daemon, prefill=1, decode=1)
    prefill = daemon.mockers[0]
    failures, served = [], Counter()
    stop = threading.Event()

    def loop(index: int) -> None:
        client = httpx.Client(base_url=daemon.base_url, timeout=30)
        turn = 0
        while not stop.is_set() and turn < 2000:
            turn += 1
            response = client.post("/v1/chat/completions", json={
                "model": daemon.model, "max_tokens": 8, "ignore_eos": True, **WORKER_IDS,
                "messages": [{"role": "user", "content": _system_prompt(index)[:400] + f" turn {turn}"}]})
            if response.status_code != 200:
                failures.append(response.text)
                continue
            worker = response.json()["nvext"]["worker_id"]
            served["whole" if worker["prefill_worker_id"] == worker["decode_worker_id"] else "disaggregated"] += 1
        client.close()

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: served["disaggregated"] >= 20, 20, "disaggregated requests")
        prefill.process.send_signal(signal.SIGKILL)
        before = sum(served.values())
        wait_until(lambda: served["whole"] >= 20, 20, "requests served whole after the prefill worker died")
        assert sum(served.values()) > before
        workers.start("prefill-new", "prefill")
        daemon.wait_model(daemon.model, instances=2)
        again = served["disaggregated"]
        wait_until(lambda: served["disaggregated"] >= again + 20, 20, "disaggregated requests on the new prefill worker")
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert failures == []
    fallbacks = (daemon.counter("disagg_fallbacks_total", model=daemon.model, reason="no_prefill_worker")
                 + daemon.counter("disagg_fallbacks_total", model=daemon.model, reason="prefill_failed"))
    assert fallbacks >= 20


@pytest.fixture
def failing_prefill_script(tmp_path):
    path = tmp_path / "script.json"
    path.write_text(json.dumps([{"match": "FAIL-PREFILL", "output": "never sent", "fail_after_tokens": 0}]))
    return str(path)


def test_a_failed_prefill_is_tried_on_the_other_prefill_worker_then_on_the_decode_worker(start_daemon,
                                                                                       failing_prefill_script):
    daemon = start_daemon("--router-mode", "kv", mock_workers=0)
    for index in range(2):  # both prefill workers fail such prompts; the decode worker has no script
        port = free_port()
        daemon.start_mocker("--disaggregation-mode", "prefill", "--system-port", str(port), "--script",
                            failing_prefill_script)
    daemon.start_mocker("--disaggregation-mode", "decode")
    daemon.wait_model(daemon.model, instances=3)
    body = _chat(daemon, "FAIL-PREFILL please", max_tokens=6)
    worker = body["nvext"]["worker_id"]
    assert worker["prefill_worker_id"] == worker["decode_worker_id"]  # served whole by the decode worker
    assert _roles(daemon)[worker["decode_worker_id"]] == "decode"
    assert body["usage"]["completion_tokens"] == 6
    assert daemon.counter("disagg_transfer_failures_total", model=daemon.model, reason="engine_error") == 2
    assert daemon.counter("disagg_fallbacks_total", model=daemon.model, reason="prefill_failed") == 1
    assert _chat(daemon, "a normal prompt")["nvext"]["worker_id"]["prefill_worker_id"] != worker["decode_worker_id"]


def test_without_decode_fallback_a_failed_prefill_fails_the_request(start_daemon, failing_prefill_script):
    daemon = start_daemon("--router-mode", "round_robin", "--no-decode-fallback", mock_workers=0)
    daemon.start_mocker("--disaggregation-mode", "prefill", "--script", failing_prefill_script)
    daemon.start_mocker("--disaggregation-mode", "decode")
    daemon.wait_model(daemon.model, instances=2)
    response = daemon.http.post("/v1/chat/completions", json={
        "model": daemon.model, "max_tokens": 4, "messages": [{"role": "user", "content": "FAIL-PREFILL"}]})
    assert response.status_code == 502, response.text
    assert "scripted" in response.json()["error"]["message"]
    chunks = list(daemon.client().chat.completions.create(
        model=daemon.model, max_tokens=4, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "a normal prompt"}]))
    assert chunks[-1].usage.completion_tokens == 4 and chunks[-2].choices[0].finish_reason == "length"
    assert daemon.counter("disagg_transfers_total", model=daemon.model) == 1


def test_the_daemon_starts_mock_prefill_workers(start_daemon):
    daemon = start_daemon("--mock-prefill-workers", "1", mock_workers=1)
    wait_until(lambda: sorted(_roles(daemon).values()) == ["decode", "prefill"], 10, "one worker of each role")
    client = daemon.client()
    completion = client.completions.create(model=daemon.model, prompt="Once upon a time", max_tokens=5,
                                           extra_body=WORKER_IDS)
    worker = completion.model_extra["nvext"]["worker_id"]
    assert worker["prefill_worker_id"] != worker["decode_worker_id"]
    assert completion.usage.completion_tokens == 5
    metrics = daemon.http.get("/metrics").text
    assert f'dynamo_frontend_model_prefill_workers{{model="{daemon.model}"}} 1' in metrics
    assert daemon.counter("disagg_transfers_total", model=daemon.model) == 1


def test_the_client_can_name_the_prefill_and_the_decode_worker(start_daemon):
    daemon = start_daemon("--router-mode", "kv", mock_workers=0)
    Workers(daemon, prefill=2, decode=2)
    roles = _roles(daemon)
    prefills = sorted(i for i, role in roles.items() if role == "prefill")
    decodes = sorted(i for i, role in roles.items() if role == "decode")
    for prefill, decode in ((prefills[0], decodes[1]), (prefills[1], decodes[0])):
        for how in ("headers", "nvext"):
            body = {"model": daemon.model, "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}],
                    "nvext": {"extra_fields": ["worker_id"]}}
            headers = {}
            if how == "headers":
                headers = {"x-prefill-instance-id": prefill, "x-worker-instance-id": decode}
            else:
                body["nvext"].update(prefill_worker_id=prefill, decode_worker_id=decode)
            response = daemon.http.post("/v1/chat/completions", json=body, headers=headers)
            assert response.status_code == 200, response.text
            assert response.json()["nvext"]["worker_id"] == {"prefill_worker_id": prefill, "decode_worker_id": decode}
    response = daemon.http.post("/v1/chat/completions", headers={"x-prefill-instance-id": decodes[0]}, json={
        "model": daemon.model, "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 503 and decodes[0] in response.json()["error"]["message"]
