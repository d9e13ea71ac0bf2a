"""POST /tokenize and POST /detokenize on the shared daemon (vLLM's shapes), through the openai SDK's generic
``post``: plain prompts, chat messages rendered as a chat request would be, token strings, special tokens,
round trips, and errors."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest
from e2e_support import MODEL
from model_dirs import make_wordy_model

HELLO = [{"role": "user", "content": "Hello there!"}]


def _post(client, daemon, path: str, **body) -> dict:
    return client.post(daemon.base_url + path, cast_to=object, body=body)


def test_tokenize_a_prompt(daemon, client, tok):
    text = "Once upon a time, in a land far away"
    result = _post(client, daemon, "/tokenize", model=MODEL, prompt=text, return_token_strs=True)
    ids = tok.encode(text).ids
    assert result["tokens"] == ids and result["count"] == len(ids) and result["max_model_len"] == 32768
    assert result["token_strs"] == [tok.id_to_token(i) for i in ids]
    plain = _post(client, daemon, "/tokenize", model=MODEL, prompt=text)
    assert "token_strs" not in plain


def test_tokenize_messages_counts_what_a_chat_request_sends(daemon, client):
    result = _post(client, daemon, "/tokenize", model=MODEL, messages=HELLO)
    completion = client.completions.create(model=MODEL, prompt=result["tokens"], max_tokens=1)
    assert completion.usage.prompt_tokens == result["count"]
    rendered = _post(client, daemon, "/detokenize", model=MODEL, tokens=result["tokens"])["prompt"]
    assert "Hello there!" in rendered and rendered.rstrip().endswith("assistant")  # the generation prompt
    no_prompt = _post(client, daemon, "/tokenize", model=MODEL, messages=HELLO, add_generation_prompt=False)
    assert no_prompt["count"] < result["count"]


def test_detokenize_round_trip(daemon, client):
    text = "Byte-level BPE round-trips exactly: café, naïve, 東京."
    tokens = _post(client, daemon, "/tokenize", model=MODEL, prompt=text)["tokens"]
    assert _post(client, daemon, "/detokenize", model=MODEL, tokens=tokens) == {"prompt": text}


def test_special_tokens_follow_add_special_tokens(daemon, client, tmp_path_factory):
    directory = make_wordy_model(Path(tmp_path_factory.mktemp("models")) / "bos-model")
    daemon.start_mocker("--model-path", str(directory), "--model-name", "bos-model")
    daemon.wait_model("bos-model")
    with_bos = _post(client, daemon, "/tokenize", model="bos-model", prompt="the river")
    without = _post(client, daemon, "/tokenize", model="bos-model", prompt="the river", add_special_tokens=False)
    assert with_bos["tokens"] == [1, *without["tokens"]] and with_bos["max_model_len"] == 4096
    assert _post(client, daemon, "/detokenize", model="bos-model", tokens=with_bos["tokens"]) == \
        {"prompt": "<bos> the river"}


@pytest.mark.parametrize("path, body, status, param", [
    ("/tokenize", {"model": MODEL}, 400, "prompt"),
    ("/tokenize", {"model": MODEL, "prompt": "x", "messages": HELLO}, 400, "prompt"),
    ("/tokenize", {"prompt": "x"}, 400, "model"),  # several models have a tokenizer
    ("/tokenize", {"model": "no-such-model", "prompt": "x"}, 404, "model"),
    ("/tokenize", {"model": "tiny-image", "prompt": "x"}, 400, "model"),  # no tokenizer
    ("/tokenize", {"model": MODEL, "messages": HELLO, "add_special_tokens": True}, 400, "add_special_tokens"),
    ("/tokenize", {"model": MODEL, "messages": "Hello"}, 400, "messages"),
    ("/detokenize", {"model": MODEL, "tokens": [10_000_000]}, 400, "tokens"),
    ("/detokenize", {"model": MODEL, "tokens": [-1]}, 400, "tokens[0]"),
    ("/detokenize", {"model": MODEL}, 400, None),
])
def test_bad_requests(daemon, path, body, status, param):
    response = daemon.http.post(path, json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["message"], error


def test_sdk_raises_not_found_for_an_unknown_model(daemon, client):
    with pytest.raises(openai.NotFoundError):
        _post(client, daemon, "/tokenize", model="nope", prompt="x")
