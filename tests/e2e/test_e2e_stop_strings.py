"""Stop strings that span several tokens: the text ends right before them, unary and streamed."""

from __future__ import annotations

import pytest
from e2e_support import MODEL

MESSAGES = [{"role": "user", "content": "Say something about trains."}]
PROMPT = "Once upon a time"
SEED = 777


def pick_multitoken_stop(tok, text: str) -> tuple[str, str]:
    """A 3-word substring from the middle of ``text`` covering several tokens; returns (stop, text before it).

    The span is checked against the tokenization of the text itself: it must cover more than one token and
    start in the middle of the text, so that the stop string is assembled across token boundaries.
    """
    words = text.split(" ")
    assert len(words) >= 12, text
    encoding = tok.encode(text, add_special_tokens=False)
    for start in range(len(words) // 3, len(words) - 4):
        stop = " " + " ".join(words[start:start + 3])
        index = text.find(stop)
        if index <= 0 or "\n" in stop:
            continue
        end = index + len(stop)
        covering = [i for i, (a, b) in enumerate(encoding.offsets) if a < end and b > index]
        if len(covering) >= 3:
            return stop, text[:index]
    raise AssertionError(f"no multi-token stop string found in {text!r}")


@pytest.fixture(scope="module")
def chat_case(client, tok):
    text = client.chat.completions.create(model=MODEL, messages=MESSAGES, seed=SEED).choices[0].message.content
    stop, before = pick_multitoken_stop(tok, text)
    return text, stop, before


@pytest.fixture(scope="module")
def completion_case(client, tok):
    text = client.completions.create(model=MODEL, prompt=PROMPT, seed=SEED).choices[0].text
    stop, before = pick_multitoken_stop(tok, text)
    return text, stop, before


def test_chat_stop_string_unary(client, chat_case):
    text, stop, before = chat_case
    response = client.chat.completions.create(model=MODEL, messages=MESSAGES, seed=SEED, stop=[stop])
    choice = response.choices[0]
    assert choice.message.content == before
    assert stop not in choice.message.content
    assert choice.finish_reason == "stop"
    assert response.usage.completion_tokens < len(text)  # generation ended at the stop string


def test_chat_stop_string_streamed(client, chat_case):
    _, stop, before = chat_case
    chunks = list(client.chat.completions.create(model=MODEL, messages=MESSAGES, seed=SEED, stop=[stop],
                                                 stream=True))
    pieces = [c.choices[0].delta.content or "" for c in chunks]
    assert "".join(pieces) == before
    assert not any(stop in piece for piece in pieces)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_completion_stop_string_unary_and_streamed(client, completion_case):
    _, stop, before = completion_case
    unary = client.completions.create(model=MODEL, prompt=PROMPT, seed=SEED, stop=stop)
    assert unary.choices[0].text == before
    assert unary.choices[0].finish_reason == "stop"
    chunks = list(client.completions.create(model=MODEL, prompt=PROMPT, seed=SEED, stop=[stop], stream=True))
    streamed = "".join(c.choices[0].text for c in chunks)
    assert streamed == before
    assert stop not in streamed
    assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] == ["stop"]


def test_include_stop_str_in_output(client, chat_case):
    _, stop, before = chat_case
    response = client.chat.completions.create(model=MODEL, messages=MESSAGES, seed=SEED, stop=[stop],
                                              extra_body={"include_stop_str_in_output": True})
    assert response.choices[0].message.content == before + stop


def test_stop_string_streamed_token_by_token(client, slow_model, tok):
    """On a realistic-speed worker every token is its own SSE chunk, so the stop string is split over chunks
    and the frontend must hold back the partial match instead of streaming it."""
    text = client.chat.completions.create(model=slow_model, messages=MESSAGES, seed=SEED).choices[0].message.content
    stop, before = pick_multitoken_stop(tok, text)
    chunks = list(client.chat.completions.create(model=slow_model, messages=MESSAGES, seed=SEED, stop=[stop],
                                                 stream=True))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    before_tokens = len(tok.encode(before, add_special_tokens=False).ids)
    assert len(pieces) >= before_tokens // 2, (len(pieces), before_tokens)  # really streamed in small pieces
    assert "".join(pieces) == before
    assert not any(stop in piece for piece in pieces)
    # nothing that is only a partial stop string leaks at the end either
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_two_stop_strings_first_completed_wins(client, chat_case):
    text, stop, before = chat_case
    later = " " + text[len(before) + len(stop):].split(" ", 3)[1]  # a word after the first stop string
    response = client.chat.completions.create(model=MODEL, messages=MESSAGES, seed=SEED, stop=[later, stop])
    # the stop string whose first occurrence is completed first wins (ties: the longer one)
    found = [(text.find(s) + len(s), -len(s), text.find(s)) for s in (later, stop) if text.find(s) >= 0]
    assert response.choices[0].message.content == text[:min(found)[2]]
    assert response.choices[0].finish_reason == "stop"


def test_stop_string_at_the_very_start_gives_empty_text(client, chat_case):
    text, _, _ = chat_case
    first_word = text.split(" ")[0]
    response = client.chat.completions.create(model=MODEL, messages=MESSAGES, seed=SEED, stop=[first_word])
    assert response.choices[0].message.content == ""
    assert response.choices[0].finish_reason == "stop"
    chunks = list(client.chat.completions.create(model=MODEL, messages=MESSAGES, seed=SEED, stop=[first_word],
                                                 stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == ""
    assert chunks[-1].choices[0].finish_reason == "stop"


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "streamed"])
def test_partial_stop_string_at_the_end_is_released(client, stream):
    """Text held back because it might start a stop string is released when generation ends without a match."""
    kwargs = dict(model=MODEL, prompt=PROMPT, seed=SEED, max_tokens=30, extra_body={"ignore_eos": True})
    text = client.completions.create(**kwargs).choices[0].text
    stop = text[-6:] + "\u2603never"  # the text ends with a proper prefix of the stop string
    if stream:
        chunks = list(client.completions.create(**kwargs, stop=[stop], stream=True))
        got = "".join(c.choices[0].text for c in chunks)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason]
    else:
        response = client.completions.create(**kwargs, stop=[stop])
        got, finish = response.choices[0].text, [response.choices[0].finish_reason]
    assert got == text
    assert finish == ["length"]
