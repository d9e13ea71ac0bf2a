"""Logprobs in OpenAI's exact shapes (raw JSON keys, and the openai SDK's types), unary and streamed, with one
and several choices; completions ``logprobs: N`` with ``echo``."""

from __future__ import annotations

import json

import pytest
from e2e_support import MODEL, error_of, sse_events
from openai.types import Completion as SdkCompletion
from openai.types.chat import ChatCompletion as SdkChatCompletion

MESSAGES = [{"role": "user", "content": "Describe a lighthouse."}]
PROMPT = "A lighthouse keeper"


def post(daemon, path: str, body: dict) -> dict:
    response = daemon.http.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_chat_logprobs_exact_shape(daemon):
    body = post(daemon, "/v1/chat/completions", {"model": MODEL, "messages": MESSAGES, "seed": 3, "max_tokens": 6,
                                                  "logprobs": True, "top_logprobs": 3})
    logprobs = body["choices"][0]["logprobs"]
    assert set(logprobs) == {"content", "refusal"} and logprobs["refusal"] is None
    assert len(logprobs["content"]) == body["usage"]["completion_tokens"] == 6
    for entry in logprobs["content"]:
        assert set(entry) == {"token", "logprob", "bytes", "top_logprobs"}
        assert isinstance(entry["logprob"], float) and entry["logprob"] <= 0
        assert bytes(entry["bytes"]).decode(errors="replace") == entry["token"]
        assert len(entry["top_logprobs"]) == 3
        for alternative in entry["top_logprobs"]:
            assert set(alternative) == {"token", "logprob", "bytes"}
        ranked = [a["logprob"] for a in entry["top_logprobs"]]
        assert ranked == sorted(ranked, reverse=True)
    SdkChatCompletion.model_validate(body)  # the openai SDK's own type reads it


@pytest.mark.parametrize("extra", [{}, {"top_logprobs": 0}])
def test_chat_logprobs_without_alternatives(daemon, extra):
    body = post(daemon, "/v1/chat/completions", {"model": MODEL, "messages": MESSAGES, "seed": 3, "max_tokens": 4,
                                                  "logprobs": True, **extra})
    assert all(entry["top_logprobs"] == [] for entry in body["choices"][0]["logprobs"]["content"])


def test_top_logprobs_needs_logprobs(daemon):
    response = daemon.http.post("/v1/chat/completions", json={"model": MODEL, "messages": MESSAGES,
                                                               "top_logprobs": 2})
    assert response.status_code == 400
    assert error_of(response)["param"] == "top_logprobs"


def test_chat_logprobs_streamed_per_choice(client):
    kwargs = dict(model=MODEL, messages=MESSAGES, seed=12, max_tokens=10, n=2, logprobs=True, top_logprobs=2)
    unary = client.chat.completions.create(**kwargs)
    streamed: dict[int, list] = {0: [], 1: []}
    for chunk in client.chat.completions.create(stream=True, **kwargs):
        for choice in chunk.choices:
            if choice.logprobs is not None:
                streamed[choice.index] += choice.logprobs.content
    for choice in unary.choices:
        assert [(e.token, e.logprob, e.bytes) for e in streamed[choice.index]] == \
            [(e.token, e.logprob, e.bytes) for e in choice.logprobs.content]
        assert "".join(e.token for e in choice.logprobs.content) == choice.message.content


def test_chat_stream_logprob_chunks_raw(daemon):
    with daemon.http.stream("POST", "/v1/chat/completions", json={
            "model": MODEL, "messages": MESSAGES, "seed": 12, "max_tokens": 5, "stream": True, "logprobs": True,
            "top_logprobs": 1}) as response:
        events, done = sse_events(list(response.iter_lines()))
    assert done
    with_logprobs = [e["choices"][0]["logprobs"] for e in events if e["choices"][0]["logprobs"]]
    assert sum(len(lp["content"]) for lp in with_logprobs) == 5
    assert all(set(lp) == {"content", "refusal"} for lp in with_logprobs)
    assert events[-1]["choices"][0]["finish_reason"] == "length" and events[-1]["choices"][0]["logprobs"] is None


def test_non_ascii_token_bytes_join(client):
    """Tokens that are parts of a multi-byte character read as U+FFFD; their bytes put the text back together."""
    response = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=30, logprobs=True,
        extra_body={"guided_choice": ["caf\u00e9 \u4e16\u754c \U0001f389"]})
    content = response.choices[0].logprobs.content
    assert bytes(b for entry in content for b in entry.bytes).decode() == response.choices[0].message.content
    assert any(entry.token == "\ufffd" for entry in content)


def test_completion_logprobs_exact_shape(daemon):
    body = post(daemon, "/v1/completions", {"model": MODEL, "prompt": PROMPT, "seed": 4, "max_tokens": 6,
                                             "logprobs": 2})
    choice = body["choices"][0]
    logprobs = choice["logprobs"]
    assert set(logprobs) == {"tokens", "token_logprobs", "top_logprobs", "text_offset"}
    assert len(logprobs["tokens"]) == len(logprobs["token_logprobs"]) == len(logprobs["top_logprobs"]) == 6
    assert "".join(logprobs["tokens"]) == choice["text"]
    for token, logprob, top in zip(logprobs["tokens"], logprobs["token_logprobs"], logprobs["top_logprobs"]):
        assert top[token] == logprob  # the sampled token is always among them
        assert 1 <= len(top) <= 3  # up to logprobs + 1
    SdkCompletion.model_validate(body)


def test_completion_logprobs_zero_still_gives_the_sampled_token(daemon):
    body = post(daemon, "/v1/completions", {"model": MODEL, "prompt": PROMPT, "seed": 4, "max_tokens": 3,
                                             "logprobs": 0})
    logprobs = body["choices"][0]["logprobs"]
    assert [list(top) for top in logprobs["top_logprobs"]] == [[t] for t in logprobs["tokens"]]


def test_completion_logprobs_with_echo_and_batch(client):
    prompts = [PROMPT, "Rivers run"]
    response = client.completions.create(model=MODEL, prompt=prompts, n=2, seed=9, max_tokens=5, logprobs=1,
                                         echo=True)
    for choice in response.choices:
        prompt = prompts[choice.index // 2]
        lp = choice.logprobs
        assert lp.text_offset[0] == len(prompt)  # generated tokens only, after the echoed prompt
        assert all(choice.text[o:o + len(t)] == t for o, t in zip(lp.text_offset, lp.tokens))
        assert choice.text == prompt + "".join(lp.tokens)


def test_logprobs_range_checked(daemon):
    for path, body in (("/v1/completions", {"prompt": PROMPT, "logprobs": 21}),
                       ("/v1/chat/completions", {"messages": MESSAGES, "logprobs": True, "top_logprobs": 21})):
        response = daemon.http.post(path, content=json.dumps({"model": MODEL, **body}))
        assert response.status_code == 400
        assert "logprobs" in error_of(response)["param"]
