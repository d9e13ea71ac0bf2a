"""API keys end to end (--api-key, --api-key-file): one daemon with keys from a flag and a file, the HTTP front
door through the official openai and anthropic SDKs and raw httpx (401 shapes, open paths), and the KServe gRPC
front door through tritonclient (metadata keys, UNAUTHENTICATED, open health RPCs)."""

from __future__ import annotations

import queue

import anthropic
import httpx
import openai
import pytest
from e2e_support import MODEL
from grpc_support import GrpcDaemon, inputs, is_final, text_of
from tritonclient.utils import InferenceServerException

FLAG_KEY = "sk-e2e-flag-key"
OTHER_FLAG_KEY = "sk-e2e-second-key"
FILE_KEY = "sk-e2e-file-key"
WRONG_KEY = "sk-e2e-wrong-key"
EMBED_MODEL = "tiny-embed"
HELLO = [{"role": "user", "content": "Hello!"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    key_file = tmp_path_factory.mktemp("keys") / "keys.txt"
    key_file.write_text(f"# e2e keys\n\n{FILE_KEY}\n", encoding="utf-8")
    # GrpcDaemon passes --mock-extra-models none; the later flag brings the embedding model back
    daemon = GrpcDaemon("--api-key", FLAG_KEY, "--api-key", OTHER_FLAG_KEY, "--api-key-file", str(key_file),
                        "--log-level", "info", "--mock-extra-models", "embedding", mock_workers=1,
                        extra_models=("embedding",), api_key=FLAG_KEY)
    try:
        daemon.wait_ready()
        daemon.wait_grpc_model(MODEL)  # ModelReady needs no key
        yield daemon
    finally:
        daemon.close()


def sdk(server: GrpcDaemon, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=key, max_retries=0, timeout=60.0)


def claude(server: GrpcDaemon, **auth: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.base_url, max_retries=0, timeout=60.0, **auth)


OPENAI_CALLS = {
    "chat": lambda client: client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=5),
    "chat_stream": lambda client: list(client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=5,
                                                                      stream=True)),
    "completions": lambda client: client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=5),
    "embeddings": lambda client: client.embeddings.create(model=EMBED_MODEL, input=["A cat sat."]),
    "responses": lambda client: client.responses.create(model=MODEL, input="Hello!", max_output_tokens=5),
    "models": lambda client: client.models.list(),
}


# ---- HTTP: OpenAI routes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("call", OPENAI_CALLS)
def test_openai_sdk_with_a_configured_key(server, call):
    for key in (FLAG_KEY, OTHER_FLAG_KEY, FILE_KEY):
        with sdk(server, key) as client:
            assert OPENAI_CALLS[call](client)


@pytest.mark.parametrize("call", OPENAI_CALLS)
def test_openai_sdk_with_a_wrong_key(server, call):
    with sdk(server, WRONG_KEY) as client, pytest.raises(openai.AuthenticationError) as info:
        OPENAI_CALLS[call](client)
    assert info.value.status_code == 401
    assert info.value.code == "invalid_api_key"
    assert WRONG_KEY not in str(info.value)


def test_openai_sdk_without_a_key(server):
    def drop_key(request: httpx.Request) -> None:  # the SDK itself refuses to send no key
        del request.headers["authorization"]

    http_client = httpx.Client(event_hooks={"request": [drop_key]})
    with openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0,
                       http_client=http_client) as client:
        for call in ("chat", "completions", "embeddings", "responses"):
            with pytest.raises(openai.AuthenticationError, match="didn't provide an API key"):
                OPENAI_CALLS[call](client)


def test_raw_401_in_openai_shape(server):
    for headers in ({}, {"authorization": f"Bearer {WRONG_KEY}"}, {"x-api-key": FLAG_KEY},
                    {"authorization": FLAG_KEY}):
        response = httpx.post(server.base_url + "/v1/chat/completions", headers=headers,
                              json={"model": MODEL, "messages": HELLO, "max_tokens": 5}, timeout=30)
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"] == "Bearer"
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", None, "invalid_api_key")
        assert WRONG_KEY not in response.text and FLAG_KEY not in response.text
    # the key is checked before the body is read or decoded: a wrong key on a broken body is still a 401
    response = httpx.post(server.base_url + "/v1/completions", content=b"{not json", timeout=30)
    assert response.status_code == 401
    assert httpx.get(server.base_url + "/no/such/path", timeout=30).status_code == 401
    assert server.http.get("/no/such/path").status_code == 404


def test_open_paths_need_no_key(server):
    for path in ("/live", "/health", "/metrics", "/openapi.json", "/docs"):
        response = httpx.get(server.base_url + path, timeout=30)
        assert response.status_code == 200, path
    spec = httpx.get(server.base_url + "/openapi.json", timeout=30).json()
    assert "bearerAuth" in spec["components"]["securitySchemes"]
    page = httpx.get(server.base_url + "/docs", timeout=30).text
    asset = page.split('<script src="', 1)[1].split('"', 1)[0]  # Swagger UI's bundle, under /docs/
    assert httpx.get(server.base_url + "/" + asset, timeout=30).status_code == 200
    assert httpx.get(server.base_url + "/v1/models", timeout=30).status_code == 401


# ---- HTTP: Anthropic routes ---------------------------------------------------------------------------------


def test_anthropic_sdk_with_a_configured_key(server):
    for auth in ({"api_key": FLAG_KEY}, {"api_key": FILE_KEY}, {"auth_token": OTHER_FLAG_KEY}):  # x-api-key, Bearer
        with claude(server, **auth) as client:
            message = client.messages.create(model=MODEL, max_tokens=5, messages=HELLO)
            assert message.type == "message"
            assert client.messages.count_tokens(model=MODEL, messages=HELLO).input_tokens > 0


def test_anthropic_sdk_with_a_wrong_key(server):
    with claude(server, api_key=WRONG_KEY) as client:
        with pytest.raises(anthropic.AuthenticationError) as info:
            client.messages.create(model=MODEL, max_tokens=5, messages=HELLO)
        assert info.value.status_code == 401
        with pytest.raises(anthropic.AuthenticationError):
            client.messages.count_tokens(model=MODEL, messages=HELLO)
        with pytest.raises(anthropic.AuthenticationError):
            with client.messages.stream(model=MODEL, max_tokens=5, messages=HELLO) as stream:
                stream.get_final_message()


def test_raw_401_in_anthropic_shape(server):
    for headers, message in (({}, "x-api-key header is required"), ({"x-api-key": WRONG_KEY}, "invalid x-api-key")):
        response = httpx.post(server.base_url + "/v1/messages", headers=headers, timeout=30,
                              json={"model": MODEL, "max_tokens": 5, "messages": HELLO})
        assert response.status_code == 401
        body = response.json()
        assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
        assert body["error"]["message"].startswith(message)
        assert WRONG_KEY not in response.text


# ---- gRPC -------------------------------------------------------------------------------------------------


def test_grpc_with_a_configured_key(server):
    with server.triton() as client:
        for headers in ({"authorization": f"Bearer {FLAG_KEY}"}, {"x-api-key": FILE_KEY}):
            result = client.infer(MODEL, inputs("Once upon a time", max_tokens=5), headers=headers)
            text, finish = text_of(result)
            assert finish == "length"
            assert client.get_server_metadata(headers=headers).name


def test_grpc_without_or_with_a_wrong_key_is_unauthenticated(server):
    with server.triton() as client:
        for headers in (None, {"authorization": f"Bearer {WRONG_KEY}"}, {"x-api-key": WRONG_KEY}):
            with pytest.raises(InferenceServerException) as info:
                client.infer(MODEL, inputs("Once upon a time", max_tokens=5), headers=headers)
            assert info.value.status() == "StatusCode.UNAUTHENTICATED", headers
            assert WRONG_KEY not in info.value.message()
        with pytest.raises(InferenceServerException) as info:
            client.get_model_metadata(MODEL)
        assert info.value.status() == "StatusCode.UNAUTHENTICATED"


def stream_once(client, headers: dict[str, str] | None) -> tuple[object, InferenceServerException | None]:
    """One request on a ModelStreamInfer stream: (final result, None) or (None, the stream's error)."""
    received: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: received.put((result, error)), headers=headers)
    try:
        try:
            client.async_stream_infer(MODEL, inputs("Once upon a time", max_tokens=5, streaming=True))
        except InferenceServerException:
            pass  # the stream already ended (UNAUTHENTICATED): the callback got the error
        while True:
            result, error = received.get(timeout=30)
            if error is not None or is_final(result):
                return result, error
    finally:
        client.stop_stream()


def test_grpc_stream_needs_the_key(server):
    with server.triton() as client:
        result, error = stream_once(client, {"authorization": f"Bearer {FLAG_KEY}"})
        assert error is None and text_of(result)[1] == "length"
    with server.triton() as client:
        result, error = stream_once(client, None)
        assert error is not None and error.status() == "StatusCode.UNAUTHENTICATED"


def test_grpc_health_rpcs_are_open(server):
    with server.triton() as client:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready(MODEL)


def test_keys_are_not_in_the_logs(server):
    text = server.log_text(limit=10_000_000)
    for key in (FLAG_KEY, OTHER_FLAG_KEY, FILE_KEY, WRONG_KEY):
        assert key not in text
