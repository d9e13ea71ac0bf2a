"""The frontend in front of real vLLM engines: ``python -m frontend.vllm`` on vLLM's CPU build, no mock between.

One daemon (``--router-mode kv``, KV events on) and two vLLM workers on a tiny random-weight Qwen2 serve the
whole module; the last tests kill one worker's engine and drain the other, so they run last, in file order.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import threading
import time
from collections.abc import Iterator

import httpx
import jsonschema
import pytest
from e2e_support import Daemon, VllmWorker, error_of, free_port, sse_events, wait_until
from test_e2e_lifecycle import _comm, descendants
from tokenizers import Tokenizer
from vllm_support import make_tiny_model, require_vllm, vllm_greedy

require_vllm()

MODEL = "tiny-llm"
WORKER_START_S = 300.0
# the streams in flight when a worker is stopped or its engine killed (the tests freeze the engine core first)
DRAINED_TOKENS, DRAINED_STREAMS, DRAINED_CHOICES = 500, 3, 4
STREAMS_DONE_S = 300  # they take a few seconds here; a slower machine gets time (the drain's limit too)
COMPACT_JSON = '{"backend": "xgrammar", "disable_any_whitespace": true}'


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_tiny_model(str(tmp_path_factory.mktemp("vllm-model") / MODEL))


@pytest.fixture(scope="module")
def frontend(model_dir):
    # a 10 s lease: two vLLM engines and the tests share 2 cores; every departure below is an explicit unregister
    daemon = Daemon("--router-mode", "kv", "--router-pending-ttl-s", "0.01", mock_workers=0, lease_ttl_s="10")
    ports = [free_port(), free_port()]  # each worker's own /metrics (--system-port): its requests in flight
    workers = [VllmWorker(daemon.registry_endpoint, model_dir, "--structured-outputs-config", COMPACT_JSON,
                          "--drain-timeout-s", str(STREAMS_DONE_S), "--system-port", str(port))
               for port in ports]
    for worker, port in zip(workers, ports):
        worker.system_port = port
    try:
        daemon.wait_ready()
        wait_until(lambda: _instances(daemon) == 2 or _dead(workers), WORKER_START_S, "2 vLLM workers to register",
                   interval=0.5, on_timeout=lambda: "\n".join(w.describe() for w in workers))
        if _dead(workers):
            raise AssertionError("a vLLM worker exited during start-up\n" + "\n".join(w.describe() for w in workers))
        daemon.workers = workers
        yield daemon
    finally:
        for worker in workers:
            worker.close()
        daemon.close()


def _dead(workers: list[VllmWorker]) -> bool:
    return any(not worker.alive() for worker in workers)


def _health(daemon: Daemon) -> dict:
    return daemon.http.get("/health").json()


def _instances(daemon: Daemon) -> int:
    response = daemon.http.get("/health")
    return len([i for i in response.json()["instances"] if i["model"] == MODEL]) if response.status_code == 200 else 0


def _load(daemon: Daemon, instance_id: str) -> dict:
    return next(i["load"] for i in _health(daemon)["instances"] if i["instance_id"] == instance_id)


def _worker_instance(daemon: Daemon, worker: VllmWorker) -> str:
    return next(i["instance_id"] for i in _health(daemon)["instances"] if i["instance_id"].startswith(f"{worker.pid}-"))


# ---- the API through vLLM ----------------------------------------------------------------------------------


def test_chat_and_completions_unary_and_streamed_with_usage(frontend):
    client = frontend.client()
    chat = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hello!"}],
                                          max_tokens=8, temperature=0, extra_body={"ignore_eos": True})
    assert chat.choices[0].finish_reason == "length" and chat.choices[0].message.content
    assert chat.usage.completion_tokens == 8 and chat.usage.prompt_tokens > 0

    completion = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=6,
                                           extra_body={"ignore_eos": True})
    assert completion.choices[0].finish_reason == "length" and completion.usage.completion_tokens == 6

    chunks = list(client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Stream, please."}], max_tokens=10, stream=True,
        stream_options={"include_usage": True}, extra_body={"ignore_eos": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and chunks[-1].usage.completion_tokens == 10
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"

    streamed = list(client.completions.create(model=MODEL, prompt="A", max_tokens=5, stream=True,
                                              stream_options={"include_usage": True},
                                              extra_body={"ignore_eos": True}))
    assert streamed[-1].usage.completion_tokens == 5


def test_greedy_tokens_equal_vllm_run_directly(frontend, model_dir):
    """The prompt ids the frontend sent (nvext token_ids annotation) and vLLM's own greedy output for them."""
    max_tokens = 12
    prompts, texts, logprobs = [], [], []
    for content in ("Tell me a story about a lighthouse.", "def fibonacci(n):"):
        with frontend.http.stream("POST", "/v1/chat/completions", json={
                "model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
                "temperature": 0, "ignore_eos": True, "stream": True, "logprobs": True,
                "nvext": {"annotations": ["token_ids"]}}) as response:
            assert response.status_code == 200
            lines = list(response.iter_lines())
        prompt_ids = json.loads(next(line for i, line in enumerate(lines)
                                     if i and lines[i - 1] == "event: token_ids")[len("data:"):])
        events, done = sse_events(lines)
        assert done
        chunks = [e for e in events if isinstance(e, dict) and e.get("choices")]
        texts.append("".join(c["choices"][0]["delta"].get("content") or "" for c in chunks))
        logprobs.append([entry["logprob"] for c in chunks if c["choices"][0].get("logprobs")
                         for entry in c["choices"][0]["logprobs"]["content"]])
        prompts.append(prompt_ids)
    reference = vllm_greedy(model_dir, prompts, max_tokens)
    tokenizer = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    for expected, text, got_logprobs in zip(reference, texts, logprobs):
        assert len(expected["token_ids"]) == max_tokens
        assert text == tokenizer.decode(expected["token_ids"], skip_special_tokens=True)
        assert got_logprobs == pytest.approx(expected["logprobs"], abs=1e-3)


def test_structured_output_through_vllm(frontend):
    client = frontend.client()
    choice = client.completions.create(model=MODEL, prompt="Pick one:", max_tokens=10,
                                       extra_body={"guided_choice": ["alpha", "beta", "gamma"]})
    assert choice.choices[0].text in ("alpha", "beta", "gamma")
    regex = client.completions.create(model=MODEL, prompt="A code:", max_tokens=20,
                                      extra_body={"guided_regex": r"[0-9]{3}-[a-z]{2}"})
    assert re.fullmatch(r"[0-9]{3}-[a-z]{2}", regex.choices[0].text), regex.choices[0].text
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}, "grade": {"enum": ["a", "b", "c"]},
                                               "tag": {"type": "string", "maxLength": 6}},
              "required": ["ok", "grade", "tag"], "additionalProperties": False}  # bounded: the model is random
    chat = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "JSON please"}], max_tokens=100,
        response_format={"type": "json_schema", "json_schema": {"name": "record", "schema": schema}})
    assert chat.choices[0].finish_reason == "stop", chat.choices[0].message.content
    jsonschema.validate(json.loads(chat.choices[0].message.content), schema)


def test_value_vllm_refuses_is_a_400_with_its_reason(frontend):
    response = frontend.http.post("/v1/completions", json={"model": MODEL, "prompt": "hi", "max_tokens": 3,
                                                           "top_p": 0})
    assert response.status_code == 400
    error = error_of(response)
    assert error["type"] == "invalid_request_error" and "top_p" in error["message"], error


# ---- KV routing on vLLM's own events -----------------------------------------------------------------------


def test_shared_prefix_goes_to_the_worker_vllm_says_holds_it(frontend):
    """Predictions expire after 10 ms (--router-pending-ttl-s), so only vLLM's BlockStored events steer."""
    for topic in ("harbour", "orchard", "glacier", "canyon"):
        prefix = " ".join(f"{topic}{i}" for i in range(150))  # > 8 blocks of 32 tokens
        first = _completion_with_worker(frontend, prefix + " first question")
        instance = first["nvext"]["worker_id"]["decode_worker_id"]
        wait_until(lambda: _blocks_mapped(frontend).get(instance, 0) >= 8, 10.0,
                   f"vLLM's KV events for {instance} to reach the index")
        second = _completion_with_worker(frontend, prefix + " second question")
        assert second["nvext"]["worker_id"]["decode_worker_id"] == instance, topic
        assert second["usage"]["prompt_tokens_details"]["cached_tokens"] >= 8 * 32


def test_a_restarted_indexer_gets_the_blocks_back_from_vllms_replay_buffer(frontend):
    """The indexer dies; its successor asks each vLLM engine for its whole replay buffer when it learns of the
    worker, so it maps every block again with no new request (no next event) to show them."""
    _completion_with_worker(frontend, " ".join(f"lantern{i}" for i in range(150)))  # blocks, whatever ran before
    time.sleep(0.5)  # the events of that request reach the index
    before = _blocks_mapped(frontend)
    assert sum(before.values()) >= 8, before
    def indexers() -> list[int]:  # the restarted one is the child of the daemon's watcher thread
        return [pid for pid in descendants(frontend.pid) if _comm(pid) == "dyn-indexer"]

    [indexer] = indexers()
    os.kill(indexer, signal.SIGKILL)
    wait_until(lambda: indexers() not in ([], [indexer]), 20.0, "the indexer to be restarted")
    wait_until(lambda: _blocks_mapped(frontend) == before, 20.0, "the restarted indexer to map every block again",
               on_timeout=lambda: f"before the kill {before}, now {_blocks_mapped(frontend)}")


def _blocks_mapped(daemon: Daemon) -> dict[str, int]:
    """Each worker's blocks in the KV index (a worker the indexer has not reported yet is absent)."""
    return {instance: info.get("blocks_mapped", 0) for instance, info in _health(daemon)["kv_index"]["workers"].items()}


def _completion_with_worker(daemon: Daemon, prompt: str) -> dict:
    response = daemon.http.post("/v1/completions", json={"model": MODEL, "prompt": prompt, "max_tokens": 2,
                                                         "nvext": {"extra_fields": ["worker_id"]}})
    assert response.status_code == 200, response.text
    return response.json()


# ---- cancellation, load, failures --------------------------------------------------------------------------


def test_disconnect_mid_stream_aborts_inside_vllm(frontend):
    """vLLM's own running-request count (the worker's load report) goes to 1 and back to 0 after the client
    leaves, long before max_tokens could have been generated."""
    worker = frontend.workers[0]
    instance = _worker_instance(frontend, worker)
    with httpx.Client(base_url=frontend.base_url, timeout=30) as http:
        with http.stream("POST", "/v1/completions", headers={"x-worker-instance-id": instance}, json={
                "model": MODEL, "prompt": "Go on forever", "max_tokens": 2000, "ignore_eos": True,
                "stream": True}) as response:
            lines = response.iter_lines()
            for _ in range(3):
                next(lines)
            wait_until(lambda: _load(frontend, instance)["engine_running_requests"] == 1, 5.0,
                       "vLLM to report the request running")
    started = time.monotonic()
    wait_until(lambda: _load(frontend, instance)["engine_running_requests"] == 0, 5.0,
               "vLLM to report no running request after the disconnect")
    assert time.monotonic() - started < 5.0


def test_stop_string_match_aborts_inside_vllm(frontend):
    """The frontend matches stop strings; on a match it aborts the request in vLLM (no orphan generation)."""
    instance = _worker_instance(frontend, frontend.workers[0])
    body = {"model": MODEL, "prompt": "Stop me", "temperature": 0, "ignore_eos": True}
    pinned = {"x-worker-instance-id": instance}
    head = frontend.http.post("/v1/completions", headers=pinned, json={**body, "max_tokens": 6}).json()
    stop = head["choices"][0]["text"][-3:]
    assert stop.strip(), head
    response = frontend.http.post("/v1/completions", headers=pinned, json={**body, "max_tokens": 2000,
                                                                             "stop": [stop]})
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "stop" and response.json()["usage"]["completion_tokens"] < 50, choice
    wait_until(lambda: _load(frontend, instance)["engine_running_requests"] == 0, 2.0,
               "vLLM to stop generating after the stop string matched")


def test_engine_death_moves_in_flight_requests_to_the_other_worker(frontend):
    """The engine core of the worker serving a stream is killed: the worker fails the request with a retryable
    error and exits 1; the stream continues on the other worker (migration) and ends with every token."""
    victim, survivor = frontend.workers
    instance = _worker_instance(frontend, victim)
    engine_cores = _engine_cores(victim)
    outcome: dict = {}

    def stream() -> None:
        with httpx.Client(base_url=frontend.base_url, timeout=60) as http:
            with http.stream("POST", "/v1/completions", headers={"x-worker-instance-id": instance}, json={
                    "model": MODEL, "prompt": "Long story", "max_tokens": DRAINED_TOKENS, "ignore_eos": True,
                    "n": DRAINED_CHOICES, "stream": True, "stream_options": {"include_usage": True}}) as response:
                outcome["lines"] = list(response.iter_lines())

    reader = threading.Thread(target=stream)
    with _frozen(engine_cores):  # the request cannot finish before the engine dies, however fast the machine
        reader.start()
        _wait_for_requests(victim, DRAINED_CHOICES)
        for process in engine_cores:
            process.kill()
    reader.join(STREAMS_DONE_S)
    events, done = sse_events(outcome["lines"])
    assert done and not [e for e in events if "error" in e], events[-2:]
    assert events[-1]["usage"]["completion_tokens"] == DRAINED_TOKENS * DRAINED_CHOICES
    metrics = frontend.http.get("/metrics").text
    assert 'reason="engine_error"' in metrics, [line for line in metrics.splitlines() if "migration" in line]
    assert victim.process.wait(60) == 1, victim.describe()
    wait_until(lambda: all(i["instance_id"] != instance for i in _health(frontend)["instances"]), 10.0,
               "the dead worker to leave /health")
    for _ in range(4):
        completion = frontend.client().completions.create(model=MODEL, prompt="Still there?", max_tokens=3)
        assert completion.usage.completion_tokens >= 1
    assert survivor.alive()


def test_sigterm_drains_then_unregisters(frontend):
    """Streams in flight when the worker gets SIGTERM finish normally; then the worker leaves and exits 0.
    (That it is shown draining and routed nothing meanwhile is tested with the mock worker, whose pace is
    known.)"""
    worker = frontend.workers[1]
    # pinned: the KV router would send equal prompts to whichever worker holds their prefix, maybe the other one
    pin = {"x-worker-instance-id": _worker_instance(frontend, worker)}
    outcomes: list[list[str]] = []

    def stream() -> None:
        with httpx.Client(base_url=frontend.base_url, timeout=90, headers=pin) as http:
            with http.stream("POST", "/v1/completions", json={
                    "model": MODEL, "prompt": "Finish this", "max_tokens": DRAINED_TOKENS, "ignore_eos": True,
                    "n": DRAINED_CHOICES, "stream": True, "stream_options": {"include_usage": True}}) as response:
                outcomes.append(list(response.iter_lines()))

    readers = [threading.Thread(target=stream) for _ in range(DRAINED_STREAMS)]
    with _frozen(_engine_cores(worker)):  # the streams are surely in flight when SIGTERM lands
        for reader in readers:
            reader.start()
        _wait_for_requests(worker, DRAINED_STREAMS * DRAINED_CHOICES)
        os.kill(worker.pid, signal.SIGTERM)
        wait_until(lambda: re.search(r"msg=draining .*in_flight=[1-9]", worker.log_text(10**7)), 30.0,
                   "the worker to start draining", on_timeout=lambda: _our_log_lines(worker))
    for reader in readers:
        reader.join(STREAMS_DONE_S)
    assert len(outcomes) == DRAINED_STREAMS
    for lines in outcomes:
        events, done = sse_events(lines)
        assert done and events[-1]["usage"]["completion_tokens"] == DRAINED_TOKENS * DRAINED_CHOICES, (
            _our_log_lines(worker) + "\n" + _our_log_lines(frontend))
    assert worker.process.wait(60) == 0, worker.describe()
    wait_until(lambda: frontend.http.get("/health").status_code == 503, 10.0, "the worker to unregister",
               on_timeout=lambda: f"/health: {frontend.http.get('/health').text}\n{worker.describe()}\n"
                                  f"{frontend.describe()}")


def _engine_cores(worker: VllmWorker) -> list:
    """The worker's vLLM engine core processes (its children that run the model)."""
    import psutil

    children = psutil.Process(worker.pid).children(recursive=True)
    cores = [p for p in children if "EngineCore" in p.name() or "EngineCore" in " ".join(p.cmdline())]
    assert cores, [(p.pid, p.name()) for p in children]
    return cores


@contextlib.contextmanager
def _frozen(engine_cores: list) -> Iterator[None]:
    """Stop the engine core processes (SIGSTOP) for the block: requests reach the worker, none progresses."""
    for process in engine_cores:
        process.suspend()
    try:
        yield
    finally:
        for process in engine_cores:
            if process.is_running():
                process.resume()


def _wait_for_requests(worker: VllmWorker, count: int) -> None:
    """Wait until ``count`` generation requests are in flight on the worker (its own /metrics)."""
    def active() -> float:
        text = httpx.get(f"http://127.0.0.1:{worker.system_port}/metrics", timeout=10).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("worker_active_requests{"))
    wait_until(lambda: active() >= count, 30.0, f"{count} requests in flight on the worker",
               on_timeout=lambda: _our_log_lines(worker))


def _our_log_lines(process) -> str:
    """This project's own log lines of a process (vLLM's are many and long)."""
    return "\n".join(line for line in process.log_text(10**7).splitlines() if " msg=" in line)


def test_a_worker_whose_engine_cannot_start_exits_2_with_the_reason(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    worker = VllmWorker("tcp://127.0.0.1:9", str(tmp_path))
    try:
        assert worker.process.wait(120) == 2, worker.describe()
        assert "vLLM failed to start" in worker.log_text(), worker.describe()
    finally:
        worker.close()
