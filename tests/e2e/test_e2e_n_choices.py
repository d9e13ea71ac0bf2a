"""Several choices: ``n > 1`` on chat and completions, batched completion prompts, per-choice seeds and
finish reasons, usage over all choices, streamed choice indices, and aborting every choice on disconnect."""

from __future__ import annotations

import time
from collections import defaultdict

import httpx
import pytest
from e2e_support import MODEL, sse_events
from scripted_support import QWEN, TOOLS, start_scripted_models

MESSAGES = [{"role": "user", "content": "Tell me about rivers."}]
PROMPTS = ["Once upon a time", "The harbor at dawn"]


def chat_unary(client, **kwargs):
    return client.chat.completions.create(model=MODEL, messages=MESSAGES, **kwargs)


def by_index(chunks) -> dict[int, list]:
    """Streamed choices grouped by index, in arrival order."""
    grouped = defaultdict(list)
    for chunk in chunks:
        for choice in chunk.choices:
            grouped[choice.index].append(choice)
    return grouped


# ---- chat ---------------------------------------------------------------------------------------------------


def test_chat_n_unary_choices_and_usage(client):
    response = chat_unary(client, n=3, seed=21, max_tokens=12, logprobs=True)
    assert [c.index for c in response.choices] == [0, 1, 2]
    single = chat_unary(client, seed=21, max_tokens=12)
    assert response.usage.prompt_tokens == single.usage.prompt_tokens  # the prompt counts once
    tokens = [len(c.logprobs.content) for c in response.choices]
    assert response.usage.completion_tokens == sum(tokens)
    assert response.usage.total_tokens == response.usage.prompt_tokens + sum(tokens)


def test_chat_choice_i_is_the_request_with_seed_plus_i(client):
    several = chat_unary(client, n=3, seed=100, max_tokens=15, temperature=0.9)
    for i, choice in enumerate(several.choices):
        alone = chat_unary(client, seed=100 + i, max_tokens=15, temperature=0.9).choices[0]
        assert choice.message.content == alone.message.content
        assert choice.finish_reason == alone.finish_reason
    assert len({c.message.content for c in several.choices}) > 1


def test_greedy_choices_are_identical(client):
    response = chat_unary(client, n=3, temperature=0, max_tokens=10)
    assert len({c.message.content for c in response.choices}) == 1


def test_finish_reason_per_choice(client):
    response = chat_unary(client, n=8, seed=5, max_tokens=133, logprobs=True)
    reasons = set()
    for choice in response.choices:
        length = len(choice.logprobs.content)
        assert choice.finish_reason == ("length" if length == 133 else "stop"), (length, choice.finish_reason)
        reasons.add(choice.finish_reason)
    assert reasons == {"stop", "length"}  # these seeds start paragraphs both shorter and longer than 133


def test_chat_n_streamed_equals_unary(client):
    kwargs = dict(n=3, seed=7, max_tokens=20, temperature=0.8)
    unary = chat_unary(client, **kwargs)
    chunks = list(chat_unary(client, stream=True, stream_options={"include_usage": True}, **kwargs))
    assert chunks[-1].choices == [] and chunks[-1].usage == unary.usage
    grouped = by_index(chunks[:-1])
    assert sorted(grouped) == [0, 1, 2]
    for index, pieces in grouped.items():
        assert pieces[0].delta.role == "assistant"  # every choice opens with its role
        assert [p.finish_reason for p in pieces if p.finish_reason] == [unary.choices[index].finish_reason]
        assert pieces[-1].finish_reason is not None
        assert "".join(p.delta.content or "" for p in pieces) == unary.choices[index].message.content
    assert all(len(chunk.choices) == 1 for chunk in chunks[:-1])


def test_sdk_stream_accumulator_with_several_choices(client):
    kwargs = dict(model=MODEL, messages=MESSAGES, n=2, seed=8, max_tokens=300)  # the helper refuses "length"
    unary = client.chat.completions.create(**kwargs)
    with client.chat.completions.stream(**kwargs) as stream:
        final = stream.get_final_completion()
    assert [c.message.content for c in final.choices] == [c.message.content for c in unary.choices]
    assert [c.finish_reason for c in final.choices] == [c.finish_reason for c in unary.choices]


def test_n_with_stop_strings_and_structured_output(client):
    response = chat_unary(client, n=3, seed=2, max_tokens=40, stop=[" the "],
                          extra_body={"guided_choice": ["alpha", "beta", "gamma"]})
    assert {c.message.content for c in response.choices} <= {"alpha", "beta", "gamma"}
    assert all(c.finish_reason == "stop" for c in response.choices)


def test_each_choice_has_its_own_parsers(daemon, client):
    """Tool calls and reasoning are parsed per choice (parsers keep state), numbered per choice."""
    start_scripted_models(daemon)
    kwargs = dict(model=QWEN, messages=[{"role": "user", "content": "What is the weather in Paris?"}], tools=TOOLS,
                  n=2, max_tokens=200)
    unary = client.chat.completions.create(**kwargs)
    for choice in unary.choices:
        assert choice.finish_reason == "tool_calls"
        assert [c.function.name for c in choice.message.tool_calls] == ["get_weather"]
        assert choice.message.reasoning_content == "I should call the weather tool."
    calls = defaultdict(list)
    for chunk in client.chat.completions.create(stream=True, **kwargs):
        for choice in chunk.choices:
            calls[choice.index] += [call.index for call in choice.delta.tool_calls or []]
    assert calls == {0: [0, 0], 1: [0, 0]}


# ---- completions ----------------------------------------------------------------------------------------------


def test_completion_batch_numbering_and_usage(client, tok):
    response = client.completions.create(model=MODEL, prompt=PROMPTS, n=2, seed=30, max_tokens=10, echo=True)
    assert [c.index for c in response.choices] == [0, 1, 2, 3]
    for choice in response.choices:
        prompt = PROMPTS[choice.index // 2]
        assert choice.text.startswith(prompt)
        alone = client.completions.create(model=MODEL, prompt=prompt, seed=30 + choice.index % 2, max_tokens=10)
        assert choice.text == prompt + alone.choices[0].text
    prompt_tokens = sum(len(tok.encode(p, add_special_tokens=True).ids) for p in PROMPTS)
    assert response.usage.prompt_tokens == prompt_tokens


def test_completion_token_id_batch(client, tok):
    ids = [tok.encode(p, add_special_tokens=False).ids for p in PROMPTS]
    by_ids = client.completions.create(model=MODEL, prompt=ids, temperature=0, max_tokens=8)
    by_text = client.completions.create(model=MODEL, prompt=PROMPTS, temperature=0, max_tokens=8)
    assert [c.text for c in by_ids.choices] == [c.text for c in by_text.choices]
    assert by_ids.usage.prompt_tokens == sum(len(i) for i in ids)


def test_completion_batch_streamed_equals_unary(client):
    kwargs = dict(model=MODEL, prompt=PROMPTS, n=2, seed=41, max_tokens=12, echo=True, logprobs=1)
    unary = client.completions.create(**kwargs)
    chunks = list(client.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs))
    assert chunks[-1].usage == unary.usage
    grouped = by_index(chunks[:-1])
    assert sorted(grouped) == [0, 1, 2, 3]
    for index, pieces in grouped.items():
        expected = unary.choices[index]
        assert "".join(p.text for p in pieces) == expected.text
        assert [p.finish_reason for p in pieces if p.finish_reason] == [expected.finish_reason]
        offsets = [o for p in pieces if p.logprobs for o in p.logprobs.text_offset]
        assert offsets == expected.logprobs.text_offset  # offsets run on per choice, after its echo


def test_too_many_choices_is_a_400(daemon):
    response = daemon.http.post("/v1/completions", json={"model": MODEL, "prompt": ["a"] * 20, "n": 60})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "n"


# ---- leaving early ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_slots(daemon):
    """A realistic-speed worker that runs at most two sequences: unaborted choices block the next request."""
    daemon.start_mocker("--model-name", "tiny-two-slots", "--max-num-seqs", "2", speedup="1")
    daemon.wait_model("tiny-two-slots")
    return "tiny-two-slots"


def _quick(daemon, model: str) -> float:
    start = time.monotonic()
    response = daemon.http.post("/v1/chat/completions", timeout=20, json={
        "model": model, "messages": MESSAGES, "max_tokens": 3, "n": 2})
    assert response.status_code == 200, response.text
    return time.monotonic() - start


def test_leaving_a_several_choice_stream_aborts_every_choice(daemon, two_slots):
    assert _quick(daemon, two_slots) < 5
    body = {"model": two_slots, "messages": MESSAGES, "max_tokens": 20000, "ignore_eos": True, "stream": True,
            "n": 2}
    with httpx.Client(base_url=daemon.base_url, timeout=30) as other:
        with other.stream("POST", "/v1/chat/completions", json=body) as stream:
            lines = stream.iter_lines()
            seen: set[int] = set()
            for line in lines:
                events, _ = sse_events([line])
                for event in events:
                    if event["choices"] and event["choices"][0]["delta"].get("content"):
                        seen.add(event["choices"][0]["index"])
                if seen == {0, 1}:
                    break
            with pytest.raises(httpx.ReadTimeout):  # both slots are taken now
                daemon.http.post("/v1/chat/completions", timeout=1.5, json={
                    "model": two_slots, "messages": MESSAGES, "max_tokens": 3})
    elapsed = _quick(daemon, two_slots)  # both choices were aborted: both slots are free again
    assert elapsed < 8, f"the next request took {elapsed:.1f} s: an abandoned choice kept its slot"
