"""API keys (--api-key, --api-key-file, DYN_API_KEY, --api-key-exempt): parsing, the constant-time check, the
masked --dump-config, the HTTP check in the app's dispatch (before the body) and the gRPC interceptor."""

from __future__ import annotations

import asyncio
import hmac
import json

import grpc
import msgspec
import pytest

from frontend.config.api_keys import configured_keys, exempt_paths, parse_key_file, read_key_file
from frontend.config.loader import dump_toml, load_config
from frontend.config.options import OPTIONS_BY_NAME
from frontend.config.sections import AuthConfig
from frontend.gateway.auth import ApiKeys, bearer_token, key_digest
from frontend.grpc import auth as grpc_auth
from frontend.http import anthropic, app as http_app, routes
from frontend.http.auth import authenticate
from frontend.http.reply import send_error
from frontend.protocol.errors import ConfigError, Unauthorized

SECRET = "sk-very-secret-1"


def load(argv: list[str] | None = None, env: dict[str, str] | None = None):
    config, _ = load_config(argv or [], env or {})
    return config


# ---- where keys come from ----------------------------------------------------------------------------------


def test_no_key_by_default():
    config = load()
    assert config.auth == AuthConfig()
    assert configured_keys(config.auth) == ()
    assert not ApiKeys.from_config(config.auth).enabled


def test_flag_repeated_and_comma_separated():
    config = load(["--api-key", "a1", "--api-key", " b2 , c3,", "--api-key=a1"])
    assert configured_keys(config.auth) == ("a1", "b2", "c3")  # stripped, empty items dropped, each once


def test_env_and_the_flag_replaces_it():
    assert configured_keys(load(env={"DYN_API_KEY": "e1,e2"}).auth) == ("e1", "e2")
    assert configured_keys(load(["--api-key", "f1"], {"DYN_API_KEY": "e1"}).auth) == ("f1",)


def test_config_file_takes_a_string_or_an_array(tmp_path):
    path = tmp_path / "frontend.toml"
    path.write_text('api_key = ["t1", "t2"]\n', encoding="utf-8")
    assert configured_keys(load(["--config", str(path)]).auth) == ("t1", "t2")
    path.write_text('api_key = "t3,t4"\n', encoding="utf-8")
    assert configured_keys(load(["--config", str(path)]).auth) == ("t3", "t4")


def test_key_file_skips_comments_and_blank_lines(tmp_path):
    path = tmp_path / "keys"
    path.write_text("# production\n\n  k-file-1  \n\t\n   # indented comment\nk#2\nk-file-1\n", encoding="utf-8")
    assert read_key_file(str(path)) == ["k-file-1", "k#2", "k-file-1"]
    config = load(["--api-key", "k-flag", "--api-key-file", str(path)])
    assert configured_keys(config.auth) == ("k-flag", "k-file-1", "k#2")  # flag first, then the file, once each
    assert configured_keys(load(env={"DYN_API_KEY_FILE": str(path)}).auth) == ("k-file-1", "k#2")


def test_key_file_problems_name_the_flag_and_never_the_key(tmp_path):
    with pytest.raises(ConfigError, match="--api-key-file: cannot read .*missing"):
        read_key_file(str(tmp_path / "missing"))
    empty = tmp_path / "empty"
    empty.write_text("# nothing yet\n\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="holds no key"):  # would silently turn the check off
        read_key_file(str(empty))
    with pytest.raises(ConfigError, match="line 2: a key may not contain spaces") as info:
        parse_key_file(f"ok\n{SECRET} {SECRET}\n")
    assert SECRET not in str(info.value)
    with pytest.raises(ConfigError, match="line 1: .* commas"):  # one key per line, not a list
        parse_key_file(f"{SECRET},other\n")
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8"):
        read_key_file(str(binary))


@pytest.mark.parametrize("argv, env", [
    (["--api-key", f"{SECRET},with space"], {}),
    ([], {"DYN_API_KEY": f"{SECRET}\x07"}),
    (["--api-key", "***"], {}),
])
def test_bad_keys_are_refused_without_showing_them(argv, env):
    with pytest.raises(ConfigError, match="--api-key") as info:
        load(argv, env)
    assert SECRET not in str(info.value)


def test_wrong_toml_type_of_a_key_is_not_echoed(tmp_path):
    path = tmp_path / "frontend.toml"
    path.write_text("api_key = 123456789\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"expected str, got \*\*\*") as info:
        load(["--config", str(path)])
    assert "123456789" not in str(info.value)


def test_exempt_paths():
    assert exempt_paths(AuthConfig()) == ("/live", "/health", "/metrics", "/docs", "/openapi.json")
    assert exempt_paths(load(["--api-key-exempt", "/live/, /v1/media,"]).auth) == ("/live", "/v1/media")
    assert exempt_paths(load(["--api-key-exempt", ""]).auth) == ()
    with pytest.raises(ConfigError, match="must start with /, not health"):
        load(["--api-key-exempt", "/live,health"])


# ---- --dump-config ----------------------------------------------------------------------------------------


def test_dump_masks_the_keys_and_the_mask_is_not_a_key(tmp_path):
    config = load(["--api-key", SECRET, "--api-key", "sk-other"])
    text = dump_toml(config)
    assert SECRET not in text and "sk-other" not in text
    assert 'api_key = "***"' in text.splitlines()
    path = tmp_path / "dump.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match="mask --dump-config prints"):  # never "***" as a working key
        load(["--config", str(path)])
    assert 'api_key = ""' in dump_toml(load()).splitlines()  # nothing to hide


def test_only_credentials_are_secret():
    assert [name for name, option in OPTIONS_BY_NAME.items() if option.secret] == [
        "api_key", "etcd_username", "etcd_password", "responses_store_url"]


# ---- the check ----------------------------------------------------------------------------------------------


def test_accepts_only_configured_keys():
    keys = ApiKeys.from_keys(["k-one", "k-two"])
    assert keys.enabled
    assert keys.accepts("k-one") and keys.accepts("k-two")
    for wrong in ("k-three", "k-one ", "K-ONE", "k-on", "", None, "\udcff"):
        assert not keys.accepts(wrong), wrong
    assert keys.digests == (key_digest("k-one"), key_digest("k-two"))
    assert "k-one" not in msgspec.json.encode(keys).decode()  # the settings carry digests only


def test_every_digest_is_compared_whichever_matches(monkeypatch):
    calls = []
    real = hmac.compare_digest

    def compare(a: bytes, b: bytes) -> bool:
        calls.append(b)
        return real(a, b)

    monkeypatch.setattr("frontend.gateway.auth.hmac.compare_digest", compare)
    keys = ApiKeys.from_keys(["k1", "k2", "k3"])
    for presented in ("k1", "k3", "nope", "a much longer key than any configured one"):
        calls.clear()
        keys.accepts(presented)
        assert calls == list(keys.digests), presented  # no early exit on a match or a mismatch


def test_is_exempt_covers_the_path_and_below():
    keys = ApiKeys.from_keys(["k"], ("/health", "/docs"))
    assert keys.is_exempt("/health") and keys.is_exempt("/docs/swagger-ui-5.0.0/swagger-ui.css")
    assert not keys.is_exempt("/healthz") and not keys.is_exempt("/v1/models") and not keys.is_exempt("/")


@pytest.mark.parametrize("value, token", [
    ("Bearer abc", "abc"), ("bearer abc", "abc"), ("BEARER  abc ", "abc"), ("Basic abc", None), ("Bearer", None),
    ("Bearer ", None), ("abc", None), ("", None), (None, None),
])
def test_bearer_token(value, token):
    assert bearer_token(value) == token


KEYS = ApiKeys.from_keys(["k-good"])


@pytest.mark.parametrize("auth, headers, ok", [
    ("openai", {"authorization": "Bearer k-good"}, True),
    ("openai", {"x-api-key": "k-good"}, False),  # OpenAI routes: Bearer only
    ("openai", {"authorization": "k-good"}, False),
    ("anthropic", {"x-api-key": "k-good"}, True),
    ("anthropic", {"authorization": "Bearer k-good"}, True),
    ("anthropic", {"x-api-key": "wrong", "authorization": "Bearer k-good"}, True),
    ("anthropic", {"x-api-key": "wrong"}, False),
])
def test_authenticate_headers(auth, headers, ok):
    if ok:
        authenticate(KEYS, headers, auth)
    else:
        with pytest.raises(Unauthorized):
            authenticate(KEYS, headers, auth)


def test_unauthorized_messages_never_echo_the_key():
    with pytest.raises(Unauthorized, match="didn't provide an API key") as info:
        authenticate(KEYS, {}, "openai")
    assert (info.value.status, info.value.code, info.value.error_type) == (401, "invalid_api_key",
                                                                          "invalid_request_error")
    with pytest.raises(Unauthorized, match="Incorrect API key provided") as info:
        authenticate(KEYS, {"authorization": f"Bearer {SECRET}"}, "openai")
    assert SECRET not in info.value.message
    with pytest.raises(Unauthorized, match="x-api-key header is required"):
        authenticate(KEYS, {}, "anthropic")
    with pytest.raises(Unauthorized, match="invalid x-api-key") as info:
        authenticate(KEYS, {"x-api-key": SECRET}, "anthropic")
    assert SECRET not in info.value.message


class FakeProto:
    """What the app writes; reading the body is a test failure (a 401 must not read it)."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, dict[str, str], dict]] = []

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.sent.append((status, dict(headers), json.loads(body)))

    def __call__(self):
        raise AssertionError("the body was read")

    def __aiter__(self):
        raise AssertionError("the body was read")


class FakeScope:
    proto = "http"

    def __init__(self, method: str, path: str, headers: dict[str, str]) -> None:
        self.method, self.path, self.headers = method, path, headers


def dispatch(method: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], dict]:
    gateway_app = http_app.GatewayApp()
    gateway_app.api_keys = ApiKeys.from_keys(["k-good"], ("/live", "/health", "/metrics"))
    proto = FakeProto()
    asyncio.run(gateway_app.__rsgi__(FakeScope(method, path, headers or {}), proto))
    [sent] = proto.sent
    return sent


def test_app_answers_401_before_reading_the_body_in_the_openai_shape():
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses", "/tokenize"):
        status, headers, body = dispatch("POST", path, {"authorization": f"Bearer {SECRET}"})
        assert status == 401 and headers["www-authenticate"] == "Bearer", path
        assert body == {"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error",
                                  "param": None, "code": "invalid_api_key"}}
    status, headers, body = dispatch("GET", "/v1/models")
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    assert "didn't provide an API key" in body["error"]["message"]


def test_app_answers_401_in_anthropic_shape_on_its_routes():
    for path in ("/v1/messages", "/v1/messages/count_tokens"):
        status, headers, body = dispatch("POST", path, {"x-api-key": SECRET})
        assert status == 401 and "www-authenticate" not in headers
        assert body == {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}


def test_app_checks_unknown_paths_and_methods_too():
    assert dispatch("GET", "/no/such/path")[0] == 401  # no probing for endpoints without a key
    assert dispatch("GET", "/no/such/path", {"authorization": "Bearer k-good"})[0] == 404
    assert dispatch("GET", "/v1/messages")[2]["error"]["type"] == "authentication_error"
    assert dispatch("GET", "/v1/messages", {"x-api-key": "k-good"})[0] == 405
    assert dispatch("GET", "/healthz")[0] == 401


def test_paths_under_an_anthropic_route_are_anthropic():
    """/v1/messages/batches (Anthropic's SDK has it; not served here): the key in x-api-key, Anthropic's shapes."""
    status, _, body = dispatch("POST", "/v1/messages/batches")
    assert status == 401 and body["error"]["type"] == "authentication_error"
    status, _, body = dispatch("POST", "/v1/messages/batches", {"x-api-key": "k-good"})
    assert status == 404 and body["type"] == "error" and body["error"]["type"] == "not_found_error"
    status, _, body = dispatch("POST", "/v1/messagesx", {"authorization": "Bearer k-good"})
    assert status == 404 and set(body) == {"error"}  # not under the route: OpenAI's


def test_anthropic_renderer_maps_401():
    proto = FakeProto()
    anthropic.send_error(proto, Unauthorized("invalid x-api-key"))
    assert proto.sent == [(401, {"content-type": "application/json"},
                           {"type": "error", "error": {"type": "authentication_error",
                                                       "message": "invalid x-api-key"}})]
    proto = FakeProto()
    send_error(proto, Unauthorized("no"))
    assert proto.sent[0][1]["www-authenticate"] == "Bearer"


def test_every_route_says_how_it_takes_the_key():
    for route in routes.ROUTES:
        expected = "anthropic" if route.render_error is anthropic.send_error else "openai"
        assert route.auth == expected, route.path


def test_openapi_declares_an_optional_bearer_scheme_and_the_401s():
    spec = json.loads(routes.spec_bytes())
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert {} in spec["security"] and {"bearerAuth": []} in spec["security"]
    assert spec["paths"]["/v1/chat/completions"]["post"]["responses"]["401"] == {
        "$ref": "#/components/responses/Unauthorized"}
    anthropic_401 = spec["paths"]["/v1/messages"]["post"]["responses"]["401"]
    assert anthropic_401["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    assert "401" not in spec["paths"]["/health"]["get"]["responses"]


# ---- gRPC ---------------------------------------------------------------------------------------------------


class Details:
    def __init__(self, method: str, metadata: tuple[tuple[str, object], ...]) -> None:
        self.method, self.invocation_metadata = method, metadata


class Aborted(Exception):
    pass


class FakeContext:
    async def abort(self, code: grpc.StatusCode, message: str) -> None:
        raise Aborted(code, message)


def intercept(method: str, *metadata: tuple[str, object], streaming: bool = False):
    original = (grpc.stream_stream_rpc_method_handler if streaming else grpc.unary_unary_rpc_method_handler)(
        lambda request, context: None)

    async def continuation(details):
        return original

    interceptor = grpc_auth.ApiKeyInterceptor(ApiKeys.from_keys(["k-good"]))
    handler = asyncio.run(interceptor.intercept_service(continuation, Details(grpc_auth.SERVICE + method, metadata)))
    return original, handler


def denial(handler) -> tuple[grpc.StatusCode, str]:
    behaviour = handler.stream_stream if handler.request_streaming else handler.unary_unary
    with pytest.raises(Aborted) as info:
        asyncio.run(behaviour(None, FakeContext()))
    return info.value.args


def test_grpc_interceptor_lets_a_configured_key_through():
    for metadata in (("authorization", "Bearer k-good"), ("x-api-key", "k-good")):
        original, handler = intercept("ModelInfer", ("user-agent", "t"), metadata)
        assert handler is original


def test_grpc_interceptor_answers_unauthenticated():
    _, handler = intercept("ModelInfer")
    assert denial(handler) == (grpc.StatusCode.UNAUTHENTICATED, grpc_auth.MISSING)
    _, handler = intercept("ModelStreamInfer", ("authorization", f"Bearer {SECRET}"), streaming=True)
    assert handler.request_streaming and handler.response_streaming
    code, message = denial(handler)
    assert code == grpc.StatusCode.UNAUTHENTICATED and SECRET not in message
    _, handler = intercept("ModelInfer", ("x-api-key-bin", b"k-good"))
    assert denial(handler)[0] == grpc.StatusCode.UNAUTHENTICATED


def test_grpc_health_rpcs_stay_open():
    for method in ("ServerLive", "ServerReady", "ModelReady"):
        original, handler = intercept(method)
        assert handler is original
    assert intercept("ServerMetadata")[1] is not intercept("ServerMetadata")[0]
