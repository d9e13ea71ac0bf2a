"""External workers: a killed worker disappears, client disconnects abort the worker's request, and a model
card conflict is refused. One daemon without built-in workers; every test uses its own model name."""

from __future__ import annotations

import re
import signal
import threading
import time

import httpx
import openai
import pytest
from e2e_support import Daemon, error_of, hang_up_after_sending, sse_events, wait_routing_load_released, wait_until

LEASE_TTL_S = 2.0
MESSAGES = [{"role": "user", "content": "Go on for a long time."}]


@pytest.fixture(scope="module")
def bare():
    server = Daemon(mock_workers=0, lease_ttl_s=str(LEASE_TTL_S))
    try:
        server.wait_ready()
        yield server
    finally:
        server.close()


def short_request(server: Daemon, model: str, timeout: float = 20.0) -> tuple[float, httpx.Response]:
    start = time.monotonic()
    response = server.http.post("/v1/chat/completions", timeout=timeout,
                                json={"model": model, "messages": MESSAGES, "max_tokens": 5})
    return time.monotonic() - start, response


def long_body(model: str, stream: bool) -> dict:
    # ~20000 decode steps of >= 5.7 ms each: minutes of work for a worker that is never told to stop
    return {"model": model, "messages": MESSAGES, "max_tokens": 20000, "ignore_eos": True, "stream": stream}


def test_killed_worker_disappears_and_its_model_is_404(bare):
    victim = bare.start_mocker("--model-name", "victim")
    bare.wait_model("victim")
    elapsed, response = short_request(bare, "victim")
    assert response.status_code == 200, response.text

    victim.kill()  # SIGKILL: no unregister, only the lease can tell
    took = bare.wait_model("victim", present=False, timeout=LEASE_TTL_S + 8)
    assert took <= LEASE_TTL_S + 4, f"victim still listed {took:.1f} s after SIGKILL (lease {LEASE_TTL_S} s)"
    assert not any(i["model"] == "victim" for i in bare.http.get("/health").json()["instances"])

    with bare.client() as sdk, pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(model="victim", messages=MESSAGES, max_tokens=5)


def test_requests_in_flight_on_a_killed_worker_fail_cleanly(bare):
    """A worker that dies mid-generation: the streamed and the unary request end with an error, not a hang."""
    victim = bare.start_mocker("--model-name", "victim2", speedup="1")
    bare.wait_model("victim2")
    unary: dict = {}

    def run_unary() -> None:
        try:
            unary["response"] = httpx.post(bare.base_url + "/v1/chat/completions",
                                           json=long_body("victim2", False), timeout=20)
        except httpx.HTTPError as exc:  # reported by the assertion below, not as a thread crash
            unary["response"] = exc

    thread = threading.Thread(target=run_unary)
    thread.start()
    with httpx.Client(base_url=bare.base_url, timeout=15) as other:
        with other.stream("POST", "/v1/chat/completions", json=long_body("victim2", True)) as stream:
            assert stream.status_code == 200
            lines = stream.iter_lines()
            seen = []
            for line in lines:
                seen.append(line)
                if len([x for x in seen if x.startswith("data:")]) >= 5:
                    break
            victim.kill()
            killed_at = time.monotonic()
            seen.extend(lines)  # read to the end of the stream
            ended_after = time.monotonic() - killed_at
    thread.join(30)
    assert not thread.is_alive()
    assert ended_after <= LEASE_TTL_S + 6, ended_after
    events, _ = sse_events(seen)
    errors = [e["error"] for e in events if "error" in e]
    assert len(errors) == 1, events[-3:]
    assert errors[0]["type"] and errors[0]["message"]
    assert not any(e.get("choices") and e["choices"][0].get("finish_reason") in ("stop", "length") for e in events)
    response = unary["response"]
    assert isinstance(response, httpx.Response), f"the unary request did not end: {response!r}"
    assert 500 <= response.status_code < 600 and response.status_code != 500, response.text
    error_of(response)


def test_sigterm_drains_the_worker_before_it_unregisters(bare):
    """The worker reports its own load (running requests, KV blocks in use). SIGTERM: it is shown draining and routed nothing new, its stream in flight finishes with every token,
    then it unregisters and exits 0."""
    worker = bare.start_mocker("--model-name", "drainee", "--log-level", "info", speedup="1")
    bare.wait_model("drainee")
    instance = next(i["instance_id"] for i in bare.http.get("/health").json()["instances"] if i["model"] == "drainee")
    body = {"model": "drainee", "messages": MESSAGES, "max_tokens": 600, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}  # >= 600 decode steps of >= 5.7 ms: seconds in flight
    with httpx.Client(base_url=bare.base_url, timeout=30) as http:
        with http.stream("POST", "/v1/chat/completions", json=body) as stream:
            lines = stream.iter_lines()
            seen = [next(lines)]

            def engine_load() -> dict:
                entry = next(i for i in bare.http.get("/health").json()["instances"] if i["instance_id"] == instance)
                return entry["load"]

            wait_until(lambda: engine_load()["engine_running_requests"] == 1, 3.0, "the worker's own load report")
            assert engine_load()["engine_kv_blocks_used"] >= 1
            worker.process.send_signal(signal.SIGTERM)

            def draining() -> bool:
                entry = next(i for i in bare.http.get("/health").json()["instances"] if i["instance_id"] == instance)
                return entry["draining"]

            wait_until(draining, 3.0, "the worker to be shown draining")
            refused = bare.http.post("/v1/chat/completions", json={**body, "stream": False, "max_tokens": 2})
            assert refused.status_code == 503 and "no live worker" in error_of(refused)["message"]
            seen.extend(lines)
    events, done = sse_events(seen)
    assert done and events[-1]["usage"]["completion_tokens"] == 600
    assert worker.process.wait(15) == 0, worker.describe()
    assert "msg=draining" in worker.log_text() and "in_flight=1" in worker.log_text(), worker.describe()
    bare.wait_model("drainee", present=False)


@pytest.fixture(scope="module")
def single_slot(bare):
    """A realistic-speed worker that runs one sequence at a time: an unaborted request blocks the next."""
    bare.start_mocker("--model-name", "abortee", "--max-num-seqs", "1", speedup="1")
    bare.wait_model("abortee")
    return "abortee"


def assert_slot_free(server: Daemon, model: str, what: str) -> None:
    try:
        elapsed, response = short_request(server, model)
    except httpx.ReadTimeout:
        pytest.fail(f"a 5-token request got no answer in 20 s: {what} kept the worker busy")
    assert response.status_code == 200, response.text
    assert elapsed < 8, f"the next request took {elapsed:.1f} s: {what} kept the worker busy"


def test_stream_disconnect_aborts_the_worker_request(bare, single_slot):
    elapsed, response = short_request(bare, "abortee")
    assert response.status_code == 200 and elapsed < 5, (elapsed, response.text)

    with httpx.Client(base_url=bare.base_url, timeout=30) as other:
        with other.stream("POST", "/v1/chat/completions", json=long_body("abortee", True)) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.iter_lines()  # keep a reference: dropping the iterator closes the connection
            content_chunks = 0
            for line in lines:
                if '"content":"' in line and '"content":""' not in line:
                    content_chunks += 1
                    if content_chunks >= 3:
                        break
            # Precondition: with one sequence slot, the worker is busy; a second request cannot start now.
            with pytest.raises(httpx.ReadTimeout):
                short_request(bare, "abortee", timeout=1.5)
    # The connection is closed. Unless the frontend aborted the worker's request, the slot stays taken for
    # minutes and this request times out.
    assert_slot_free(bare, single_slot, "the abandoned stream")


def test_unary_disconnect_aborts_the_worker_request(bare, single_slot):
    assert_slot_free(bare, single_slot, "an earlier request")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(bare.base_url + "/v1/chat/completions", json=long_body(single_slot, False), timeout=1.5)
    assert_slot_free(bare, single_slot, "the abandoned unary request")


def test_stop_string_match_aborts_the_worker_request(bare, single_slot):
    """The engine knows nothing of stop strings; once the frontend matched one it must stop the worker."""
    assert_slot_free(bare, single_slot, "an earlier request")
    natural = bare.http.post("/v1/chat/completions", json={"model": single_slot, "messages": MESSAGES, "seed": 3,
                                                          "max_tokens": 40}).json()["choices"][0]["message"]
    stop = " " + " ".join(natural["content"].split(" ")[5:7])
    response = bare.http.post("/v1/chat/completions", json={**long_body(single_slot, False), "seed": 3,
                                                           "stop": [stop]})
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["message"]["content"] == natural["content"][:natural["content"].find(stop)]
    assert choice["finish_reason"] == "stop"
    assert_slot_free(bare, single_slot, "the request that matched a stop string")


FRONT_DOORS = {
    "chat": ("/v1/chat/completions", lambda model: long_body(model, True)),
    "completions": ("/v1/completions", lambda model: {"model": model, "prompt": "Go on.", "max_tokens": 20000,
                                                      "ignore_eos": True, "stream": True}),
    "responses": ("/v1/responses", lambda model: {"model": model, "input": "Go on.", "max_output_tokens": 20000,
                                                  "stream": True, "store": False}),
    "messages": ("/v1/messages", lambda model: {"model": model, "max_tokens": 20000, "stream": True,
                                                "messages": MESSAGES}),
}


@pytest.mark.parametrize("door", sorted(FRONT_DOORS))
def test_client_gone_before_the_first_byte_releases_everything(bare, single_slot, door):
    """The client sends a streamed request and hangs up at once: whatever the front door was doing when it
    noticed, the worker's request is aborted and the routing load counters are back to 0."""
    assert_slot_free(bare, single_slot, "an earlier request")
    path, body = FRONT_DOORS[door]
    hang_up_after_sending(bare, path, {**body(single_slot), "ignore_eos": True})
    wait_routing_load_released(bare, single_slot, f"requests abandoned before the first byte ({door})")
    assert_slot_free(bare, single_slot, f"requests abandoned before the first byte ({door})")


def test_model_card_conflict_is_refused(bare):
    first = bare.start_mocker("--model-name", "twin", "--kv-block-size", "16")
    bare.wait_model("twin")
    second = bare.start_mocker("--model-name", "twin", "--kv-block-size", "32")
    wait_until(lambda: not second.alive(), 20.0, "the conflicting worker to exit", on_timeout=second.describe)
    assert second.process.returncode != 0
    log = second.log_text()
    assert "twin" in log, log
    assert re.search(r"conflict|already served|different model card", log, re.IGNORECASE), log

    # the first worker keeps serving, alone; a worker with the same card may join it
    instances = [i for i in bare.http.get("/health").json()["instances"] if i["model"] == "twin"]
    assert len(instances) == 1, instances
    assert first.alive()
    bare.start_mocker("--model-name", "twin", "--kv-block-size", "16")
    bare.wait_model("twin", instances=2)
    _, response = short_request(bare, "twin")
    assert response.status_code == 200, response.text


def test_busy_threshold_follows_the_load_the_worker_reports(start_daemon):
    """One long generation fills the engine's KV cache while the routers' own count stays at its 1-block prompt:
    the worker's report makes it busy (529, Dynamo's overload status), and once the engine frees its blocks requests go through again."""
    server = start_daemon("--active-decode-blocks-threshold", "0.5", mock_workers=0)
    server.start_mocker("--model-name", "filler", "--num-gpu-blocks", "40", "--kv-block-size", "16", speedup="1")
    server.wait_model("filler")
    body = {"model": "filler", "prompt": "Fill the cache", "max_tokens": 600, "ignore_eos": True}

    def engine_blocks() -> int:
        return next(i for i in server.http.get("/health").json()["instances"])["load"]["engine_kv_blocks_used"]

    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        with http.stream("POST", "/v1/completions", json={**body, "stream": True}) as stream:
            lines = stream.iter_lines()
            next(lines)
            wait_until(lambda: engine_blocks() > 20, 10.0, "the engine to report more than half its blocks used")
            busy = server.http.post("/v1/completions", json={**body, "max_tokens": 2})
            assert busy.status_code == 529 and "busy" in error_of(busy)["message"], busy.text
            list(lines)
    wait_until(lambda: engine_blocks() <= 20, 5.0, "the engine to report its blocks freed")
    assert server.http.post("/v1/completions", json={**body, "max_tokens": 2}).status_code == 200
