"""Request migration: a worker SIGKILLed mid-generation; its requests continue on the other worker.

The daemon's leases are long (30 s), so what this shows is the request plane noticing the lost connection,
not the registry's lease expiry. Every stream, whatever API it came through (raw SSE chat, the openai SDK,
Anthropic's Messages through the anthropic SDK), must end with every requested token and no error.
"""

from __future__ import annotations

import json
import threading

import anthropic
import httpx
import pytest
from e2e_support import Daemon, sse_events, wait_until

MODEL = "migrant"
TOKENS = 300  # about 2-3 s at the mock's realistic pace: the kill lands mid-generation
PROMPT = [{"role": "user", "content": "Tell me a long story."}]


@pytest.fixture(scope="module")
def pair():
    server = Daemon("--log-level", "info", mock_workers=0, lease_ttl_s="30")  # info: migrations are logged
    try:
        server.wait_ready()
        workers = [server.start_mocker("--model-name", MODEL, speedup="1") for _ in range(2)]
        server.wait_model(MODEL, instances=2)
        yield server, workers
    finally:
        server.close()


def _raw_chat(server: Daemon, progress: threading.Event, outcome: dict) -> None:
    body = {"model": MODEL, "messages": PROMPT, "max_tokens": TOKENS, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}
    lines = []
    with httpx.Client(base_url=server.base_url, timeout=60) as http:
        with http.stream("POST", "/v1/chat/completions", json=body) as response:
            for line in response.iter_lines():
                lines.append(line)
                if len(lines) > 40:
                    progress.set()
    events, done = sse_events(lines)
    outcome.update(done=done, errors=[e for e in events if "error" in e],
                   tokens=events[-1]["usage"]["completion_tokens"] if events and events[-1].get("usage") else None)


def _sdk_chat(server: Daemon, progress: threading.Event, outcome: dict) -> None:
    usage, chunks = None, 0
    with server.client(timeout=60) as sdk:
        for chunk in sdk.chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=TOKENS, stream=True,
                                                 stream_options={"include_usage": True},
                                                 extra_body={"ignore_eos": True}):
            chunks += 1
            if chunks > 20:
                progress.set()
            usage = chunk.usage or usage
    outcome.update(done=True, errors=[], tokens=usage.completion_tokens if usage else None)


def _messages(server: Daemon, progress: threading.Event, outcome: dict) -> None:
    with anthropic.Anthropic(base_url=server.base_url, api_key="e2e", max_retries=0, timeout=60.0) as sdk:
        with sdk.messages.stream(model=MODEL, max_tokens=TOKENS, messages=PROMPT,
                                 extra_body={"ignore_eos": True}) as stream:
            for count, _ in enumerate(stream.text_stream):
                if count > 20:
                    progress.set()
            final = stream.get_final_message()
    # Anthropic's API has no ignore_eos: the mock may end the message early, never with an error
    outcome.update(done=final.stop_reason in ("max_tokens", "end_turn"), errors=[], tokens=final.usage.output_tokens)


def _migrations(server: Daemon) -> float:
    text = server.http.get("/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("dynamo_frontend_model_migration_total{"))


def test_streams_on_a_killed_worker_finish_on_the_other(pair):
    server, workers = pair
    clients = [_raw_chat] * 4 + [_sdk_chat] * 2 + [_messages] * 2
    progress = [threading.Event() for _ in clients]
    outcomes: list[dict] = [{} for _ in clients]
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            clients[index](server, progress[index], outcomes[index])
        except BaseException as exc:  # reported by the assertions below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(clients))]
    for thread in threads:
        thread.start()
    for event in progress:
        assert event.wait(60), "a stream did not start"
    workers[0].kill()  # SIGKILL: no unregister; the lease (30 s) outlives the test
    for thread in threads:
        thread.join(90)
    assert not errors, (errors, server.log_text())
    for client, outcome in zip(clients, outcomes):
        if client is _messages:  # may end at the mock's end of text (end_turn), at most at max_tokens
            assert outcome["done"] and not outcome["errors"] and 0 < outcome["tokens"] <= TOKENS, outcome
        else:
            assert outcome == {"done": True, "errors": [], "tokens": TOKENS}, (client.__name__, outcome)
    assert _migrations(server) >= 1, "no stream was on the killed worker"
    assert "request migrated" in server.log_text(10**7)

    # new requests right after the kill all succeed (the dead instance is still registered, not routed to)
    for _ in range(10):
        response = server.http.post("/v1/chat/completions", json={"model": MODEL, "messages": PROMPT,
                                                                  "max_tokens": 3})
        assert response.status_code == 200, response.text
    instances = [i["instance_id"] for i in server.http.get("/health").json()["instances"] if i["model"] == MODEL]
    assert len(instances) == 2  # the registry still lists the killed one: routing skipped it
    wait_until(lambda: workers[1].alive(), 1.0, "the surviving worker")


# ---- an engine error marked retryable: the request continues on another worker ----------------------------------

FAILING_MODEL = "flaky"
FAIL_AFTER = 20


def _failing_script(tmp_path) -> str:
    path = tmp_path / "fails.json"
    story = " ".join(f"word{i}" for i in range(200))
    path.write_text(json.dumps([{"match": "", "output": story, "fail_after_tokens": FAIL_AFTER}]))
    return str(path)


def test_a_retryable_engine_error_moves_the_request_to_another_worker(tmp_path):
    """One worker's engine fails every request after 20 tokens with a retryable error (as vLLM's worker does when
    its engine dies); round-robin sends every other request to it, and each continues on the healthy worker:
    every stream ends with all its tokens and no error, unary answers too."""
    server = Daemon("--router-mode", "round_robin", mock_workers=0, lease_ttl_s="30")
    try:
        server.wait_ready()
        server.start_mocker("--model-name", FAILING_MODEL, "--script", _failing_script(tmp_path))
        server.start_mocker("--model-name", FAILING_MODEL)
        server.wait_model(FAILING_MODEL, instances=2)
        for _ in range(3):
            body = {"model": FAILING_MODEL, "messages": PROMPT, "max_tokens": 60, "ignore_eos": True, "stream": True,
                    "stream_options": {"include_usage": True}}
            with server.http.stream("POST", "/v1/chat/completions", json=body) as response:
                events, done = sse_events(list(response.iter_lines()))
            assert done and not [e for e in events if "error" in e], events[-3:]
            assert events[-1]["usage"]["completion_tokens"] == 60
            with server.client() as sdk:
                answer = sdk.completions.create(model=FAILING_MODEL, prompt="Once", max_tokens=50,
                                                extra_body={"ignore_eos": True})
            assert answer.usage.completion_tokens == 50 and answer.choices[0].finish_reason == "length"
        text = server.http.get("/metrics").text
        moved = [line for line in text.splitlines()
                 if line.startswith("dynamo_frontend_model_migration_total{") and 'reason="engine_error"' in line]
        assert moved and float(moved[0].rsplit(" ", 1)[1]) >= 3, moved
    finally:
        server.close()
