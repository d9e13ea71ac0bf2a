"""Dynamo's nvext on chat and completions (greed_sampling, use_raw_prompt, token_data, backend_instance_id,
annotations, extra_fields, the deprecated nvext copies of root fields), the root-level vLLM-style sampling
fields end to end, and --disable-nvext / DYN_DISABLE_FRONTEND_NVEXT."""

from __future__ import annotations

import json
import time

import pytest
from e2e_support import EXTRA_MODELS, MODEL, error_of
from scripted_support import script_file

MESSAGES = [{"role": "user", "content": "Tell me about harbors."}]
CHATML = "<|im_start|>user\nTell me about harbors.<|im_end|>\n<|im_start|>assistant\n"


def chat(daemon, **body) -> dict:
    response = daemon.http.post("/v1/chat/completions", json={"model": MODEL, "messages": MESSAGES, **body})
    assert response.status_code == 200, response.text
    return response.json()


def content(body: dict, index: int = 0) -> str:
    return body["choices"][index]["message"]["content"]


def sse_blocks(daemon, path: str, body: dict) -> list[tuple[str | None, object]]:
    """(event name or None, decoded data) of every SSE block, in order; [DONE] as the string."""
    with daemon.http.stream("POST", path, json=body) as response:
        assert response.status_code == 200
        text = response.read().decode()
    blocks = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        event, data = None, None
        for line in block.split("\n"):
            field, _, value = line.partition(": ")
            if field == "event":
                event = value
            elif field == "data":
                data = value if value == "[DONE]" else json.loads(value)
        blocks.append((event, data))
    return blocks


def instance_ids(daemon, model: str = MODEL) -> list[str]:
    return [i["instance_id"] for i in daemon.http.get("/health").json()["instances"] if i["model"] == model]


# ---- sampling and prompt -------------------------------------------------------------------------------------


def test_greed_sampling_overrides_temperature(daemon):
    greedy = [content(chat(daemon, temperature=1.8, max_tokens=12, nvext={"greed_sampling": True}))
              for _ in range(3)]
    assert len(set(greedy)) == 1
    assert greedy[0] == content(chat(daemon, temperature=0, max_tokens=12))


def test_use_raw_prompt_skips_the_chat_template(daemon, tok):
    raw = chat(daemon, messages=[{"role": "user", "content": CHATML}], temperature=0, max_tokens=10,
               nvext={"use_raw_prompt": True})
    templated = chat(daemon, temperature=0, max_tokens=10)
    assert raw["usage"]["prompt_tokens"] == len(tok.encode(CHATML, add_special_tokens=False).ids)
    assert raw["usage"]["prompt_tokens"] == templated["usage"]["prompt_tokens"]
    assert content(raw) == content(templated)  # the same prompt tokens, so the same greedy answer
    plain = chat(daemon, messages=[{"role": "user", "content": "Hello"}], max_tokens=3,
                 nvext={"use_raw_prompt": True})
    assert plain["usage"]["prompt_tokens"] == len(tok.encode("Hello", add_special_tokens=False).ids)


def test_use_raw_prompt_on_completions(daemon, tok):
    response = daemon.http.post("/v1/completions", json={"model": MODEL, "prompt": "Hello there", "max_tokens": 3,
                                                         "nvext": {"use_raw_prompt": True}})
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["prompt_tokens"] == len(tok.encode("Hello there", add_special_tokens=False).ids)


def test_token_data_is_the_prompt(daemon, tok):
    ids = tok.encode(CHATML, add_special_tokens=False).ids
    given = chat(daemon, messages=[{"role": "user", "content": "ignored"}], temperature=0, max_tokens=10,
                 nvext={"token_data": ids})
    assert given["usage"]["prompt_tokens"] == len(ids)
    assert content(given) == content(chat(daemon, temperature=0, max_tokens=10))
    completion = daemon.http.post("/v1/completions", json={"model": MODEL, "prompt": "ignored", "temperature": 0,
                                                           "max_tokens": 10, "nvext": {"token_data": ids}}).json()
    assert completion["choices"][0]["text"] == content(given)


@pytest.mark.parametrize("nvext, param", [
    ({"token_data": [10**6]}, "nvext.token_data"),
    ({"token_data": []}, "nvext.token_data"),
    ({"max_thinking_tokens": -1}, "nvext.max_thinking_tokens"),
    ({"annotations": "request_id"}, "nvext.annotations"),
    ({"greed_sampling": "yes"}, "nvext.greed_sampling"),
])
def test_bad_nvext_is_a_400(daemon, nvext, param):
    for path, body in (("/v1/chat/completions", {"messages": MESSAGES}), ("/v1/completions", {"prompt": "x"})):
        response = daemon.http.post(path, json={"model": MODEL, "nvext": nvext, **body})
        assert response.status_code == 400, response.text
        assert error_of(response)["param"] == param


def test_unknown_nvext_fields_are_ignored(daemon):
    chat(daemon, max_tokens=2, nvext={"agent_hints": {"priority": 3}, "session_control": {"session_id": "s"}})


# ---- routing ------------------------------------------------------------------------------------------------------


def test_backend_instance_id_pins_and_the_header_wins(daemon):
    instances = instance_ids(daemon)
    assert len(instances) >= 2
    for instance in instances:
        served = {chat(daemon, max_tokens=2, nvext={"backend_instance_id": instance,
                                                    "extra_fields": ["worker_id"]})["nvext"]["worker_id"]
                  ["decode_worker_id"] for _ in range(4)}
        assert served == {instance}
    response = daemon.http.post("/v1/chat/completions", headers={"x-worker-instance-id": instances[1]}, json={
        "model": MODEL, "messages": MESSAGES, "max_tokens": 2,
        "nvext": {"backend_instance_id": instances[0], "extra_fields": ["worker_id"]}})
    assert response.json()["nvext"]["worker_id"]["decode_worker_id"] == instances[1]


def test_unknown_pinned_instance_is_a_503(daemon):
    response = daemon.http.post("/v1/chat/completions", json={"model": MODEL, "messages": MESSAGES,
                                                               "nvext": {"backend_instance_id": 12345}})
    assert response.status_code == 503
    assert "12345" in error_of(response)["message"]


# ---- annotations and extra_fields ------------------------------------------------------------------------------


def test_annotations_on_a_chat_stream(daemon, tok):
    blocks = sse_blocks(daemon, "/v1/chat/completions", {
        "model": MODEL, "messages": MESSAGES, "max_tokens": 12, "seed": 3, "stream": True,
        "stream_options": {"include_usage": True},
        "nvext": {"annotations": ["request_id", "formatted_prompt", "token_ids", "llm_metrics", "unknown"]}})
    names = [name for name, _ in blocks]
    assert names[:3] == ["request_id", "formatted_prompt", "token_ids"]  # before the first chunk
    assert names[3] is None and blocks[3][1]["choices"][0]["delta"]["role"] == "assistant"
    request_id, prompt, ids = (data for _, data in blocks[:3])
    first_chunk = blocks[3][1]
    assert first_chunk["id"] == "chatcmpl-" + request_id
    assert prompt == CHATML and ids == tok.encode(CHATML, add_special_tokens=False).ids
    usage = blocks[-2][1]["usage"]
    metrics = [(i, data) for i, (name, data) in enumerate(blocks) if name == "llm_metrics"]
    assert metrics
    for i, data in metrics:  # each describes the data event right after it
        assert blocks[i + 1][0] is None and blocks[i + 1][1]["choices"]
        assert data["input_tokens"] == usage["prompt_tokens"]
    assert metrics[-1][1]["output_tokens"] == usage["completion_tokens"] == 12
    assert sum(data["chunk_tokens"] for _, data in metrics) == 12
    assert blocks[-1] == (None, "[DONE]")


def test_annotations_on_a_completion_batch(daemon, tok):
    prompts = ["One harbor", "Two rivers flow"]
    blocks = sse_blocks(daemon, "/v1/completions", {"model": MODEL, "prompt": prompts, "max_tokens": 3,
                                                    "stream": True, "nvext": {"annotations": ["token_ids"]}})
    token_ids = [data for name, data in blocks if name == "token_ids"]
    assert token_ids == [tok.encode(p, add_special_tokens=True).ids for p in prompts]
    assert all(name is None for name, _ in blocks[2:])


def test_annotations_leave_unary_answers_alone(daemon):
    body = chat(daemon, max_tokens=3, nvext={"annotations": ["request_id", "llm_metrics"]})
    assert body["object"] == "chat.completion" and "nvext" not in body


def test_extra_fields_worker_id_and_timing(daemon):
    before_ms = time.time() * 1000
    body = chat(daemon, max_tokens=8, nvext={"extra_fields": ["worker_id", "timing", "engine_data"]})
    nvext = body["nvext"]
    assert set(nvext) == {"worker_id", "timing"}
    worker = nvext["worker_id"]
    assert worker["decode_worker_id"] == worker["prefill_worker_id"] in instance_ids(daemon)
    timing = nvext["timing"]
    assert before_ms - 1000 <= timing["request_received_ms"] <= time.time() * 1000
    assert 0 <= timing["ttft_ms"] <= timing["total_time_ms"]
    assert "nvext" not in chat(daemon, max_tokens=2)  # only when asked for


def test_extra_fields_on_streams(daemon, client):
    blocks = sse_blocks(daemon, "/v1/chat/completions", {
        "model": MODEL, "messages": MESSAGES, "max_tokens": 5, "stream": True, "n": 2,
        "nvext": {"extra_fields": ["timing"]}})
    finals = [data for _, data in blocks if isinstance(data, dict) and data["choices"]
              and data["choices"][0]["finish_reason"]]
    assert sorted(f["choices"][0]["index"] for f in finals) == [0, 1]
    assert all("timing" in f["nvext"] for f in finals)  # each choice's final chunk describes that choice
    assert all("nvext" not in data for _, data in blocks if isinstance(data, dict) and data not in finals)
    completion = client.completions.create(model=MODEL, prompt="x", max_tokens=3, stream=True,
                                           extra_body={"nvext": {"extra_fields": ["worker_id"]}})
    last = list(completion)[-1]
    assert last.choices[0].finish_reason and last.nvext["worker_id"]["decode_worker_id"]


# ---- root-level sampling fields and their deprecated nvext copies -------------------------------------------------


def test_root_level_sampling_fields_accepted_and_range_checked(daemon):
    chat(daemon, max_tokens=3, top_k=5, min_p=0.1, repetition_penalty=1.1, min_tokens=1, ignore_eos=True,
         include_stop_str_in_output=True, skip_special_tokens=False, stop_token_ids=[7])
    for field, value in (("top_k", -2), ("min_p", 1.5), ("repetition_penalty", 0), ("repetition_penalty", 2.5),
                         ("min_tokens", -1)):
        response = daemon.http.post("/v1/chat/completions", json={"model": MODEL, "messages": MESSAGES,
                                                                   field: value})
        assert response.status_code == 400, (field, value)
        assert error_of(response)["param"] == field


def test_deprecated_nvext_ignore_eos_and_min_tokens(daemon):
    natural = chat(daemon, seed=11, max_tokens=400)
    assert natural["choices"][0]["finish_reason"] == "stop"
    length = natural["usage"]["completion_tokens"]
    forced = chat(daemon, seed=11, max_tokens=length + 20, nvext={"ignore_eos": True})
    assert forced["choices"][0]["finish_reason"] == "length"
    assert forced["usage"]["completion_tokens"] == length + 20
    longer = chat(daemon, seed=11, max_tokens=400, nvext={"min_tokens": length + 5})
    assert longer["usage"]["completion_tokens"] >= length + 5


def test_deprecated_nvext_include_stop_str_in_output(daemon):
    text = content(chat(daemon, seed=12, max_tokens=30))
    stop = " " + text.split(" ")[4]
    cut = chat(daemon, seed=12, max_tokens=30, stop=[stop], nvext={"include_stop_str_in_output": True})
    assert content(cut) == text[:text.index(stop) + len(stop)]


@pytest.fixture(scope="module")
def special_model(daemon):
    """A scripted worker whose answer holds a special token (<|im_start|>, not an end-of-sequence id)."""
    rules = [{"match": "", "output": "Before <|im_start|> after."}]
    daemon.start_mocker("--model-name", "tiny-special", "--script", script_file("tiny-special", rules))
    daemon.wait_model("tiny-special")
    return "tiny-special"


def test_skip_special_tokens(daemon, special_model):
    kept = chat(daemon, model=special_model, max_tokens=20, skip_special_tokens=False)
    skipped = chat(daemon, model=special_model, max_tokens=20)
    assert content(kept) == "Before <|im_start|> after."
    assert content(skipped) == "Before  after."


# ---- switched off ------------------------------------------------------------------------------------------------


def test_nvext_switched_off_by_dynamo_env_var(start_daemon):
    server = start_daemon("--mock-extra-models", "embedding,images", mock_workers=2,
                          env={"DYN_DISABLE_FRONTEND_NVEXT": "1"})
    instances = instance_ids(server)
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 4, "temperature": 1.5,
            "nvext": {"backend_instance_id": "nope", "extra_fields": ["worker_id"], "token_data": [1],
                      "annotations": ["request_id"]}}
    response = server.http.post("/v1/chat/completions", json=body, headers={"x-worker-instance-id": "nope"})
    assert response.status_code == 200, response.text  # neither the pin nor the header applies
    assert "nvext" not in response.json() and response.json()["usage"]["prompt_tokens"] > 1
    blocks = sse_blocks(server, "/v1/chat/completions", {**body, "stream": True})
    assert all(name is None for name, _ in blocks)
    assert instances
    pin = {"x-worker-instance-id": "nope"}  # every front door ignores it (a pin to an unknown worker is a 503)
    embedded = server.http.post("/v1/embeddings", headers=pin, json={
        "model": EXTRA_MODELS["embedding"], "input": "hello", "nvext": {"backend_instance_id": "nope"}})
    assert embedded.status_code == 200, embedded.text
    image = server.http.post("/v1/images/generations", headers=pin, json={
        "model": EXTRA_MODELS["images"], "prompt": "a harbor", "size": "32x32", "response_format": "b64_json"})
    assert image.status_code == 200, image.text
