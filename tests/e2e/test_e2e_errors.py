"""Errors: OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``, the right status, never a 500."""

from __future__ import annotations

import json
import threading

import httpx
import openai
import pytest
from e2e_support import MODEL, Daemon, error_of, wait_until

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
MESSAGES = [{"role": "user", "content": "hello"}]


def chat_body(**fields) -> dict:
    return {"model": MODEL, "messages": MESSAGES, "max_tokens": 5, **fields}


def post_raw(daemon, path: str, content: bytes, content_type: str = "application/json") -> httpx.Response:
    return daemon.http.post(path, content=content, headers={"content-type": content_type})


# ---- 400: bad input ---------------------------------------------------------------------------------------

BAD_BODIES = {
    "malformed json": b'{"model": "tiny", "messages": [',
    "not json at all": b"hello world",
    "empty body": b"",
    "json array": b"[]",
    "json null": b"null",
    "non-utf8 bytes": b'{"model": "tiny", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
    "temperature 5": json.dumps(chat_body(temperature=5)).encode(),
    "messages not a list": json.dumps({"model": MODEL, "messages": "hello"}).encode(),
    "missing model": json.dumps({"messages": MESSAGES}).encode(),
    "model not a string": json.dumps(chat_body(model=7)).encode(),
    "empty messages": json.dumps(chat_body(messages=[])).encode(),
    "unknown role": json.dumps(chat_body(messages=[{"role": "robot", "content": "x"}])).encode(),
    "max_tokens 0": json.dumps(chat_body(max_tokens=0)).encode(),
    "max_tokens string": json.dumps(chat_body(max_tokens="ten")).encode(),
    "top_p 2": json.dumps(chat_body(top_p=2)).encode(),
    "stream not bool": json.dumps(chat_body(stream="yes")).encode(),
    "n=129": json.dumps(chat_body(n=129)).encode(),
    "n=0": json.dumps(chat_body(n=0)).encode(),
    "top_logprobs without logprobs": json.dumps(chat_body(top_logprobs=2)).encode(),
    "top_logprobs 21": json.dumps(chat_body(logprobs=True, top_logprobs=21)).encode(),
    "min_tokens over max_tokens": json.dumps(chat_body(min_tokens=10, max_tokens=5)).encode(),
    "over the context window": json.dumps(chat_body(max_tokens=40000)).encode(),
    "huge max_tokens": json.dumps(chat_body(max_tokens=10**30)).encode(),
    "float overflow": b'{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "temperature": 1e400}',
}


@pytest.mark.parametrize("name", list(BAD_BODIES))
def test_bad_chat_request_is_400(daemon, name):
    response = post_raw(daemon, CHAT, BAD_BODIES[name])
    assert response.status_code == 400, (response.status_code, response.text)
    error = error_of(response)
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize("field,param", [("temperature", "temperature"), ("messages", "messages"),
                                         ("n", "n"), ("max_tokens", "messages")])
def test_400_names_the_field(daemon, field, param):
    body = {"temperature": chat_body(temperature=5), "messages": {"model": MODEL, "messages": "hi"},
            "n": chat_body(n=129), "max_tokens": chat_body(max_tokens=40000)}[field]
    error = error_of(daemon.http.post(CHAT, json=body))
    assert error["param"] == param, error


def test_context_length_error(daemon, client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=40000)
    assert caught.value.status_code == 400
    assert caught.value.code == "context_length_exceeded"
    assert "32768" in caught.value.message
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=MODEL, prompt="hello", max_tokens=40000)


def test_context_window_boundary(client):
    prompt_tokens = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=1).usage.prompt_tokens
    fits = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=32768 - prompt_tokens)
    assert fits.choices[0].finish_reason == "stop"  # exactly the window is allowed
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=32768 - prompt_tokens + 1)
    assert caught.value.code == "context_length_exceeded"


@pytest.mark.parametrize("body", [
    {"model": MODEL, "prompt": ""},
    {"model": MODEL, "prompt": []},
    {"model": MODEL, "prompt": ["a", ""]},  # a batch with an empty prompt
    {"model": MODEL, "prompt": "x", "best_of": 2},
    {"model": MODEL, "prompt": "x", "suffix": "y"},
    {"model": MODEL, "prompt": "x", "logprobs": 21},
    {"model": MODEL, "prompt": "x", "echo": "yes"},
    {"model": MODEL},
], ids=["empty prompt", "empty list", "batch with an empty prompt", "best_of", "suffix", "logprobs 21",
         "echo not bool", "no prompt"])
def test_bad_completion_request_is_400(daemon, body):
    response = daemon.http.post(COMPLETIONS, json=body)
    assert response.status_code == 400, response.text
    error_of(response)


@pytest.mark.parametrize("content", [
    b'{"model": "tiny", "prompt": "\xff\xfe", "max_tokens": 3}',
    b'{"model": "tiny", "prompt": "hi", "stop": ["\xc3"], "max_tokens": 3}',
    b'\xff\xfe{"model": "tiny", "prompt": "hi"}',
], ids=["in the prompt", "in a stop string", "before the object"])
def test_invalid_utf8_completion_body_is_400(daemon, content):
    response = post_raw(daemon, COMPLETIONS, content)
    assert response.status_code == 400, (response.status_code, response.text)
    error_of(response)


def test_sdk_raises_bad_request(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, temperature=5)
    assert caught.value.status_code == 400
    assert caught.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, n=129)
    assert caught.value.body["param"] == "n"


@pytest.mark.parametrize("body", [
    chat_body(seed=2**64),
    chat_body(seed=-(2**63) - 1),
    chat_body(stop_token_ids=[2**64]),
    chat_body(top_k=2**70),
    {"model": MODEL, "prompt": [2**64], "max_tokens": 5},
], ids=["seed 2^64", "seed -2^63-1", "stop_token_ids 2^64", "top_k 2^70", "prompt token id 2^64"])
def test_out_of_range_integers_are_400_not_500(daemon, body):
    """Integers that do not fit the worker protocol's 64 bits must be rejected as bad input."""
    path = COMPLETIONS if "prompt" in body else CHAT
    response = daemon.http.post(path, json=body)
    assert response.status_code == 400, (response.status_code, response.text)
    error_of(response)


# ---- 404 ----------------------------------------------------------------------------------------------------


def test_unknown_model_is_404(daemon, client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert caught.value.status_code == 404
    assert caught.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="no-such-model", prompt="hi")
    error = error_of(daemon.http.post(CHAT, json=chat_body(model="no-such-model")))
    assert error["param"] == "model"


@pytest.mark.parametrize("method,path", [("GET", "/v1/nothing"), ("POST", "/v1/nothing"), ("GET", "/"),
                                         ("POST", "/v1/audio/speech")])
def test_unknown_route_is_404_json(daemon, method, path):
    response = daemon.http.request(method, path, json={"model": MODEL})
    assert response.status_code == 404
    error_of(response)


@pytest.mark.parametrize("method,path", [("GET", CHAT), ("GET", COMPLETIONS), ("PUT", CHAT), ("POST", "/health"),
                                         ("DELETE", "/v1/models")])
def test_wrong_method_is_405_json(daemon, method, path):
    response = daemon.http.request(method, path)
    assert response.status_code == 405, response.text
    error_of(response)


# ---- 413 and 503 on a daemon with a small body limit and one request at a time --------------------------------


@pytest.fixture(scope="module")
def limited():
    server = Daemon("--http-body-limit-mb", "0.01", "--max-concurrent-requests", "1", mock_workers=1, speedup="1")
    try:
        server.wait_ready()
        yield server
    finally:
        server.close()


def test_body_over_limit_is_413(limited):
    limit = int(0.01 * 1024 * 1024)
    small = limited.http.post(CHAT, json=chat_body(messages=[{"role": "user", "content": "x" * 4000}]))
    assert small.status_code == 200, small.text
    big = chat_body(messages=[{"role": "user", "content": "x" * (limit + 100)}])
    response = limited.http.post(CHAT, json=big)
    assert response.status_code == 413, response.text
    assert error_of(response)["code"] == "payload_too_large"

    def chunked():  # no content-length: the limit must hold while the body streams in
        data = json.dumps(big).encode()
        for i in range(0, len(data), 1024):
            yield data[i:i + 1024]

    response = limited.http.post(CHAT, content=chunked(), headers={"content-type": "application/json"})
    assert response.status_code == 413, response.text
    error_of(response)
    with limited.client() as sdk, pytest.raises(openai.APIStatusError) as caught:
        sdk.chat.completions.create(model=MODEL, messages=big["messages"], max_tokens=5)
    assert caught.value.status_code == 413


def test_over_concurrency_limit_is_503(limited):
    body = chat_body(max_tokens=5000, stream=True, ignore_eos=True)
    with httpx.Client(base_url=limited.base_url, timeout=30) as other:
        with other.stream("POST", CHAT, json=body) as slow:
            assert slow.status_code == 200
            lines = slow.iter_lines()
            assert next(line for line in lines if line.startswith("data:"))  # in flight on the worker
            response = limited.http.post(CHAT, json=chat_body())
            assert response.status_code == 503, response.text
            assert response.headers.get("retry-after")
            error = error_of(response)
            assert error["type"] == "service_unavailable"
            with limited.client() as sdk, pytest.raises(openai.InternalServerError) as caught:
                sdk.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5)
            assert caught.value.status_code == 503
    # the slow stream was abandoned: its slot is released and requests are served again
    wait_until(lambda: limited.http.post(CHAT, json=chat_body()).status_code == 200, 10.0,
               "the concurrency slot to be released after the client left", interval=0.1)


def test_concurrency_limit_holds_while_a_body_is_uploading(limited):
    """With --max-concurrent-requests 1, a request whose body is still arriving and a second request must not
    both be served: one of them gets 503."""
    body = json.dumps(chat_body(max_tokens=3)).encode()
    first_part_sent, release = threading.Event(), threading.Event()

    def slow_body():
        yield body[:20]
        first_part_sent.set()  # httpx asks for the next part once the first one is written
        release.wait(20)
        yield body[20:]

    uploaded: dict = {}

    def upload() -> None:
        uploaded["response"] = httpx.post(limited.base_url + CHAT, content=slow_body(), timeout=30,
                                          headers={"content-type": "application/json"})

    thread = threading.Thread(target=upload)
    thread.start()
    try:
        assert first_part_sent.wait(10)
        with httpx.Client(base_url=limited.base_url, timeout=30) as other:
            with other.stream("POST", CHAT, json=chat_body(max_tokens=3000, stream=True, ignore_eos=True)) as second:
                second_status = second.status_code
                if second_status == 200:
                    lines = second.iter_lines()
                    assert next(line for line in lines if line.startswith("data:"))  # generating now
                release.set()
                thread.join(30)
    finally:
        release.set()
        thread.join(30)
    first_status = uploaded["response"].status_code
    assert sorted([first_status, second_status]) == [200, 503], (
        f"limit 1, yet the uploading request got {first_status} and the concurrent one {second_status}")
    wait_until(lambda: limited.http.post(CHAT, json=chat_body()).status_code == 200, 10.0,
               "the concurrency slot to be released", interval=0.1)
