"""Scripted mock workers for the tool-call, reasoning, Responses and Anthropic end-to-end tests.

Each model is an external ``python -m frontend.mocker`` on the shared daemon, started once per session, with
the parsers its card names and a script (``frontend/engines/mocker/script.py``) whose answers carry the markup of
that parser family. Prompts no rule matches get the mock's corpus text.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from pathlib import Path

from e2e_support import Daemon

QWEN = "tiny-qwen"  # hermes tool calls + qwen3 reasoning
HARMONY = "tiny-harmony"  # gpt-oss channels: harmony tool calls + gpt_oss reasoning

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
TIME_TOOL = {"type": "function", "function": {
    "name": "get_time", "description": "Current time in a time zone.",
    "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}}}
TOOLS = [WEATHER_TOOL, TIME_TOOL]

KV_BLOCKS = 64  # 1,024 tokens of KV cache on the QWEN worker
LONG_REASONING = " ".join(f"step{i}" for i in range(40))


def _hermes(name: str, arguments: dict) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}) + "\n</tool_call>"


QWEN_RULES = [
    {"match": "</tool_response>",
     "output": "<think>\nThe tool answered.\n</think>\n\nIt is 21 degrees and sunny in Paris."},
    {"match": "time in Tokyo",
     "output": "<think>\nTwo tools at once.\n</think>\n\nChecking both.\n" + _hermes("get_weather", {"city": "Paris"})
     + "\n" + _hermes("get_time", {"tz": "Asia/Tokyo"})},
    {"match": "weather in Paris",
     "output": "<think>\nI should call the weather tool.\n</think>\n\n" + _hermes("get_weather", {"city": "Paris"})},
    {"match": "Think hard",
     "output": "<think>\n" + LONG_REASONING + "\n</think>\n\nThe answer is 42."},
    {"match": "broken tool",
     "output": 'Here: <tool_call>{"name": "get_weather", "arguments": {oops}</tool_call> sorry.'},
    {"match": "Write forever",  # longer than the worker's KV cache: the worker fails the request mid-stream
     "output": "word " * 1200},
    {"match": "Say hello",
     "output": "<think>\nA greeting.\n</think>\n\nHello! How can I help you today?"},
]

HARMONY_RULES = [
    {"match": "</tool_response>",
     "output": "<|channel|>analysis<|message|>The tool says sunny.<|end|><|start|>assistant<|channel|>final"
               "<|message|>Sunny in Paris.<|return|>"},
    {"match": "weather in Paris",
     "output": "<|channel|>analysis<|message|>Need the weather tool.<|end|><|start|>assistant<|channel|>commentary "
               'to=functions.get_weather <|constrain|>json<|message|>{"city":"Paris"}<|call|>'},
    {"match": "",
     "output": "<|channel|>analysis<|message|>Simple question.<|end|><|start|>assistant<|channel|>final"
               "<|message|>Hi there.<|return|>"},
]

_started: dict[int, bool] = {}
_script_dir = Path(tempfile.mkdtemp(prefix="e2e-scripts-"))
atexit.register(shutil.rmtree, _script_dir, True)


def script_file(name: str, rules: list[dict]) -> str:
    path = _script_dir / f"{name}.json"
    path.write_text(json.dumps(rules))
    return str(path)


def start_scripted_models(daemon: Daemon) -> None:
    """Register the scripted models with ``daemon`` (once) and wait until they are served."""
    if _started.get(id(daemon)):
        return
    daemon.start_mocker("--model-name", QWEN, "--tool-call-parser", "hermes", "--reasoning-parser", "qwen3",
                        "--script", script_file(QWEN, QWEN_RULES), "--num-gpu-blocks", str(KV_BLOCKS))
    daemon.start_mocker("--model-name", HARMONY, "--dyn-tool-call-parser", "harmony",
                        "--dyn-reasoning-parser", "gpt_oss", "--script", script_file(HARMONY, HARMONY_RULES))
    daemon.wait_model(QWEN)
    daemon.wait_model(HARMONY)
    _started[id(daemon)] = True
