"""Bounded cost of hostile input (issue 13 items 1, 2 and 6): deeply nested JSON, huge or many stop strings, the
per-request limits of README "Limits", and a client that hangs up mid-body.

Every refusal is a 400 in the API's own shape whose message (and, for OpenAI's shape, ``param``) names the
field; the ``dyn-http`` process's memory stays bounded.
"""

from __future__ import annotations

import json
import os
import socket
import time

import pytest
from e2e_support import EXTRA_MODELS, MODEL, Daemon, error_of, wait_until

from frontend.config.sections import LimitsConfig
from frontend.protocol.limits import MAX_JSON_DEPTH, MAX_STOP_TOKEN_IDS

DEEP = 10_000
LIMITS = LimitsConfig()
MESSAGES = [{"role": "user", "content": "Say something."}]
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
ANTHROPIC_TOOL = {"name": "f", "input_schema": {"type": "object", "properties": {}}}
RESPONSES_TOOL = {"type": "function", "name": "f", "parameters": {"type": "object", "properties": {}}}
BODIES = {  # a valid request of each endpoint
    "/v1/chat/completions": {"model": MODEL, "messages": MESSAGES, "max_tokens": 2},
    "/v1/completions": {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 2},
    "/v1/responses": {"model": MODEL, "input": "Say something.", "max_output_tokens": 2},
    "/v1/messages": {"model": MODEL, "messages": MESSAGES, "max_tokens": 2},
    "/v1/embeddings": {"model": EXTRA_MODELS["embedding"], "input": "a sentence"},
    "/tokenize": {"model": MODEL, "messages": MESSAGES},
}
TOOLS_OF = {"/v1/chat/completions": TOOL, "/v1/responses": RESPONSES_TOOL, "/v1/messages": ANTHROPIC_TOOL,
            "/tokenize": TOOL}


def deep_json(depth: int, kind: str) -> str:
    """A JSON value ``depth`` levels deep: arrays or objects."""
    return "[" * depth + "]" * depth if kind == "array" else '{"a":' * depth + "1" + "}" * depth


def with_deep_value(path: str, where: str, kind: str, depth: int = DEEP) -> bytes:
    """The endpoint's valid body with a ``depth``-deep value in an unknown field, in ``chat_template_kwargs`` or
    in a tool's parameters (a placeholder replaced in the JSON text: json.dumps itself would recurse)."""
    body = dict(BODIES[path])
    if where == "unknown":
        body["x_unknown"] = "@DEEP@"
    elif where == "chat_template_kwargs":
        body["chat_template_kwargs"] = {"k": "@DEEP@"}
    else:
        tool = json.loads(json.dumps(TOOLS_OF.get(path, TOOL)))
        schema = tool.get("function", tool)
        schema = schema.get("parameters", schema.get("input_schema"))
        schema["properties"]["p"] = "@DEEP@"
        body["tools"] = [tool]
    return json.dumps(body).replace('"@DEEP@"', deep_json(depth, kind)).encode()


def anthropic_error(response) -> dict:
    """Anthropic's error object, checking its shape."""
    body = response.json()
    assert set(body) == {"type", "error"} and body["type"] == "error", body
    assert set(body["error"]) == {"type", "message"}, body
    return body["error"]


def post(daemon: Daemon, path: str, body: dict | bytes):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return daemon.http.post(path, content=content, headers={"content-type": "application/json"})


# ---- item 1: nesting ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(BODIES))
def test_deep_nesting_is_a_400_on_every_endpoint(daemon, path):
    for where in ("unknown", "chat_template_kwargs", "tool parameters"):
        for kind in ("array", "object"):
            response = post(daemon, path, with_deep_value(path, where, kind))
            assert response.status_code == 400, (where, kind, response.text[:300])
            if path == "/v1/messages":
                error = anthropic_error(response)
                assert error["type"] == "invalid_request_error", error
            else:
                error = error_of(response)
            assert f"more than {MAX_JSON_DEPTH} levels deep" in error["message"], error
    assert daemon.http.get("/health").status_code == 200


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"])
def test_nesting_within_the_limit_is_served(daemon, path):
    body = with_deep_value(path, "unknown", "array", MAX_JSON_DEPTH - 1)  # the body itself is one level
    response = post(daemon, path, body)
    assert response.status_code == 200, response.text[:300]


def test_deep_guided_json_string_is_a_400(daemon):
    body = {**BODIES["/v1/chat/completions"], "guided_json": deep_json(DEEP, "object")}
    error = error_of(post(daemon, "/v1/chat/completions", body))
    assert error["param"] == "guided_json" and "levels deep" in error["message"], error


# ---- item 2: stop strings and the other per-request limits -----------------------------------------------------


def test_a_megabyte_stop_string_is_a_400_naming_stop(daemon):
    for path in ("/v1/chat/completions", "/v1/completions"):
        for stop in ("x" * (1 << 20), ["ok", "x" * (1 << 20)]):
            response = post(daemon, path, {**BODIES[path], "stop": stop})
            assert response.status_code == 400, response.text[:300]
            error = error_of(response)
            assert error["param"] == ("stop" if isinstance(stop, str) else "stop[1]"), error
            assert f"at most {LIMITS.max_stop_string_length}" in error["message"], error


def test_too_many_stop_strings_are_a_400_naming_the_field(daemon):
    many = [f"stop{i}" for i in range(LIMITS.max_stop_strings + 1)]
    for path in ("/v1/chat/completions", "/v1/completions"):
        error = error_of(post(daemon, path, {**BODIES[path], "stop": many}))
        assert error["param"] == "stop" and f"at most {LIMITS.max_stop_strings}" in error["message"], error
    response = post(daemon, "/v1/messages", {**BODIES["/v1/messages"], "stop_sequences": many})
    assert response.status_code == 400
    assert "stop_sequences" in anthropic_error(response)["message"]
    response = post(daemon, "/v1/messages", {**BODIES["/v1/messages"], "stop_sequences": ["y" * (1 << 20)]})
    assert response.status_code == 400 and "stop_sequences[0]" in anthropic_error(response)["message"]


def test_stop_strings_at_the_limits_are_served(daemon):
    stops = ["\x00" * LIMITS.max_stop_string_length] * (LIMITS.max_stop_strings - 1) + ["Ω" * 1000]
    response = post(daemon, "/v1/chat/completions", {**BODIES["/v1/chat/completions"], "stop": stops})
    assert response.status_code == 200, response.text[:300]


def test_each_limit_is_a_400_naming_its_field(daemon):
    chat = BODIES["/v1/chat/completions"]
    big_schema = {"type": "object", "description": "d" * LIMITS.max_tool_schema_bytes, "properties": {}}
    cases = [
        ("/v1/chat/completions", {**chat, "messages": MESSAGES * (LIMITS.max_messages + 1)}, "messages"),
        ("/v1/chat/completions", {**chat, "tools": [TOOL] * (LIMITS.max_tools + 1)}, "tools"),
        ("/v1/chat/completions", {**chat, "tools": [TOOL, {"type": "function", "function": {
            "name": "g", "parameters": big_schema}}]}, "tools[1]"),
        ("/v1/chat/completions", {**chat, "stop_token_ids": [1] * (MAX_STOP_TOKEN_IDS + 1)}, "stop_token_ids"),
        ("/v1/completions", {**BODIES["/v1/completions"], "stop_token_ids": [1] * (MAX_STOP_TOKEN_IDS + 1)},
         "stop_token_ids"),
        ("/v1/responses", {**BODIES["/v1/responses"], "input": [{"role": "user", "content": "x"}]
                           * (LIMITS.max_messages + 1)}, "input"),
        ("/v1/responses", {**BODIES["/v1/responses"], "tools": [RESPONSES_TOOL] * (LIMITS.max_tools + 1)}, "tools"),
    ]
    for path, body, field in cases:
        response = post(daemon, path, body)
        assert response.status_code == 400, (field, response.text[:300])
        error = error_of(response)
        assert error["param"] == field and field in error["message"], error
    response = post(daemon, "/v1/messages", {**BODIES["/v1/messages"], "tools": [ANTHROPIC_TOOL]
                                             * (LIMITS.max_tools + 1)})
    assert response.status_code == 400 and "tools has" in anthropic_error(response)["message"]


# ---- the matcher inside the server: a 1 MB stop string where an operator allows it -------------------------------


def descendants(pid: int) -> dict[int, str]:
    """Every descendant process of ``pid``: pid -> kernel name (``dyn-http``, ``dyn-mocker``, ...)."""
    found: dict[int, str] = {}
    parents = {pid}
    while parents:
        children = set()
        for parent in parents:
            try:
                with open(f"/proc/{parent}/task/{parent}/children") as f:
                    children |= {int(child) for child in f.read().split()}
            except OSError:
                continue
        for child in children:
            try:
                with open(f"/proc/{child}/comm") as f:
                    found[child] = f.read().strip()
            except OSError:
                pass
        parents = children
    return found


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_a_megabyte_stop_string_allowed_by_the_operator_keeps_the_http_process_small(start_daemon):
    """With the length limit raised to 2 MB, a 1 MB stop string is served (the prefix table would hold ~500 GB);
    the HTTP process's RSS grows by tens of MB at most over several such requests (about 10 MB each: the body,
    the decoded string and the automaton, until the garbage collector frees the finished request)."""
    server = start_daemon("--max-stop-string-length", str(2 << 20), mock_workers=1)
    http_pids = [pid for pid, name in descendants(server.pid).items() if name == "dyn-http"]
    assert len(http_pids) == 1, descendants(server.pid)
    before = rss_bytes(http_pids[0])
    stop = "never in the output " + "z" * (1 << 20)
    for stream in (False, True, False):
        response = post(server, "/v1/chat/completions", {"model": MODEL, "messages": MESSAGES, "max_tokens": 64,
                                                          "stop": [stop, "also never"], "stream": stream})
        assert response.status_code == 200, response.text[:300]
    grown = rss_bytes(http_pids[0]) - before
    assert grown < 96 << 20, f"dyn-http grew by {grown >> 20} MiB"


# ---- item 6: a client that hangs up mid-body -------------------------------------------------------------------


def test_client_gone_mid_body_is_not_logged_as_an_error(daemon):
    before = daemon.log_text(10**7).count("unhandled error")
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", daemon.http_port)) as raw:
            raw.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                        b"\r\nContent-Length: 100000\r\n\r\n{\"model\": \"tiny\", \"messages\": [")
            time.sleep(0.05)
    wait_until(lambda: daemon.http.get("/health").status_code == 200, 5, "the daemon to answer")
    time.sleep(0.3)  # the body reads fail when the hang-ups arrive
    log = daemon.log_text(10**7)
    assert log.count("unhandled error") == before, log[-3000:]
    assert "RSGIProtocolClosed" not in log[-20000:], log[-3000:]


def test_integers_beyond_64_bits_in_a_schema_are_a_400(daemon):
    """The worker wire (MessagePack) carries 64-bit integers: a JSON schema bound of 2**64 is the client's error."""
    response = daemon.http.post("/v1/chat/completions", json={
        "model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 5,
        "guided_json": {"type": "integer", "maximum": 2**64}})
    assert response.status_code == 400, response.text
    assert "64-bit" in error_of(response)["message"]
    assert daemon.http.post("/v1/chat/completions", json={
        "model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 2}).status_code == 200


def test_count_tokens_needs_a_chat_model(daemon):
    response = daemon.http.post("/v1/messages/count_tokens", json={
        "model": EXTRA_MODELS["images"], "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 400, response.text
    assert response.json()["type"] == "error" and "does not serve chat" in response.json()["error"]["message"]
