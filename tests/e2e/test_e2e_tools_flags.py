"""Frontend flags of the parsers group on a daemon of its own: per-model and global parser overrides (the
built-in mock workers' cards name no parser), enable_thinking with a force-reasoning parser, the responses
store at a given path shared by two HTTP processes, and --no-enable-anthropic-api."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import httpx
import pytest
from e2e_support import MODEL, Daemon
from scripted_support import TOOLS, script_file

RULES = [
    {"match": "<think>\n\n</think>", "output": "Just the answer."},  # the prompt closed thinking
    {"match": "weather in Paris",
     "output": 'Thinking about tools.</think>\n\n<tool_call>\n{"name": "get_weather", "arguments": '
               '{"city": "Paris"}}\n</tool_call>'},
    {"match": "", "output": "Plain thinking.</think>\n\nAnswer."},
]


@pytest.fixture(scope="module")
def flagged(tmp_path_factory):
    store = tmp_path_factory.mktemp("store") / "responses.db"
    server = Daemon("--workers", "2", "--tool-call-parser", f"{MODEL}=hermes,other=mistral",
                    "--reasoning-parser", "deepseek_r1", "--responses-store-path", str(store),
                    "--no-enable-anthropic-api",
                    env={"DYN_MOCKER_SCRIPT": script_file("flags", RULES)})
    try:
        yield server.wait_ready(), store
    finally:
        server.close()


def test_overrides_and_force_reasoning(flagged):
    server, _ = flagged
    with server.client() as client:
        called = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content":
                                                                        "What is the weather in Paris?"}], tools=TOOLS)
        message = called.choices[0].message
        assert message.reasoning_content == "Thinking about tools."
        assert json.loads(message.tool_calls[0].function.arguments) == {"city": "Paris"}
        plain = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}])
        assert (plain.choices[0].message.reasoning_content, plain.choices[0].message.content) == \
            ("Plain thinking.", "Answer.")
        off = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}],
                                             extra_body={"chat_template_kwargs": {"enable_thinking": False}})
        assert off.choices[0].message.reasoning_content is None
        assert off.choices[0].message.content == "Just the answer."


def test_store_path_shared_by_http_processes(flagged):
    server, store = flagged
    with server.client() as client:
        created = client.responses.create(model=MODEL, input="Hi")
    assert created.output_text == "Answer."
    for _ in range(8):  # new connections: Granian spreads them over both HTTP processes
        with httpx.Client(base_url=server.base_url) as fresh:
            assert fresh.get(f"/v1/responses/{created.id}").json()["id"] == created.id
    with sqlite3.connect(store) as db:
        assert db.execute("SELECT count(*) FROM responses WHERE id = ?", (created.id,)).fetchone() == (1,)
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_anthropic_api_can_be_disabled(flagged):
    server, _ = flagged
    response = server.http.post("/v1/messages", json={"model": MODEL, "max_tokens": 5,
                                                      "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"


def test_unknown_parser_name_is_a_config_error():
    result = subprocess.run([sys.executable, "-m", "frontend", "--tool-call-parser", "nope", "--dump-config"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "--tool-call-parser" in result.stderr and "hermes" in result.stderr
