"""Settings of the chat-derived APIs (parsers, Responses store, Anthropic) as the HTTP workers get them."""

from __future__ import annotations

import os
from typing import Any

import msgspec

from ..parsers.registry import parser_map
from ..protocol.registry import ModelCard

STORE_FILE = "responses.sqlite3"


class ApiSettings(msgspec.Struct, frozen=True):
    """Parser overrides by model name ("*": every model), Anthropic on/off, where stored responses live."""

    tool_call_parsers: dict[str, str] = {}
    reasoning_parsers: dict[str, str] = {}
    anthropic_api: bool = True
    responses_store_path: str = ""  # "": responses are not stored
    responses_store_ttl_s: float = 30 * 86400.0
    responses_store_max_bytes: int = 256 * 1024 * 1024
    nvext: bool = True  # --disable-nvext: requests' nvext and the worker-pinning headers are ignored

    @classmethod
    def from_config(cls, config: Any, run_dir: str) -> "ApiSettings":
        """From the daemon's resolved configuration; the store defaults to a file in the run directory."""
        path = ""
        if config.responses_store:
            path = config.responses_store_path or os.path.join(run_dir, STORE_FILE)
        return cls(parser_map(config.tool_call_parser), parser_map(config.reasoning_parser),
                   config.enable_anthropic_api, path, config.responses_store_ttl_s,
                   int(config.responses_store_max_mb * 1024 * 1024), not config.disable_nvext)

    def parsers_for(self, card: ModelCard) -> tuple[str, str]:
        """(tool-call parser, reasoning parser) of a model: a flag for it, a flag for all, else its card's."""
        return (_pick(self.tool_call_parsers, card, "tool_call_parser"),
                _pick(self.reasoning_parsers, card, "reasoning_parser"))


def _pick(overrides: dict[str, str], card: ModelCard, key: str) -> str:
    name = overrides.get(card.name) or overrides.get("*") or card.runtime_config.get(key)
    return name if isinstance(name, str) else ""
