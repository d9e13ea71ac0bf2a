"""The tool-call and reasoning parser names the configuration accepts (Dynamo's ``--dyn-tool-call-parser`` /
``--dyn-reasoning-parser`` names); ``frontend/parsers/registry.py`` maps each to its parser."""

from __future__ import annotations

from typing import Callable

HARMONY_TOOLS = "harmony"
HARMONY_REASONING = "gpt_oss"
TOOL_PARSER_NAMES = ("hermes", "qwen3_coder", "llama3_json", "pythonic", "mistral", "deepseek_v3", "kimi_k2",
                     HARMONY_TOOLS)
REASONING_PARSER_NAMES = ("deepseek_r1", "qwen3", "granite", HARMONY_REASONING)


def parser_map(value: str) -> dict[str, str]:
    """``NAME`` (every model) or ``MODEL=NAME,MODEL=NAME`` as {model or "*": parser name}."""
    mapping: dict[str, str] = {}
    for entry in value.split(","):
        model, sep, name = entry.strip().rpartition("=")
        if name.strip():
            mapping[model.strip() if sep else "*"] = name.strip()
    return mapping


def _checker(known: tuple[str, ...]) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        unknown = sorted(set(parser_map(value).values()) - set(known))
        if unknown:
            return f"unknown parser {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        return None

    return check


check_tool_parsers = _checker(TOOL_PARSER_NAMES)
check_reasoning_parsers = _checker(REASONING_PARSER_NAMES)
