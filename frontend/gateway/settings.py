"""What an HTTP worker process is configured with: the daemon hands it ``GatewaySettings`` as JSON in
``SETTINGS_ENV``; ``ApiSettings`` are the chat-derived APIs' part (parsers, Responses store, Anthropic)."""

from __future__ import annotations

import os
from typing import Any

import msgspec

from ..config.parser_names import parser_map
from ..config.topology import Endpoints
from ..protocol.registry import ModelCard
from ..router.select import RouterSettings
from ..stores.media import MediaSettings

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


SETTINGS_ENV = "FRONTEND_GATEWAY_SETTINGS"  # how the daemon hands GatewaySettings to the HTTP processes


class GatewaySettings(msgspec.Struct, frozen=True):
    """The part of the daemon config an HTTP worker needs, plus the derived endpoints."""

    endpoints: Endpoints
    router: RouterSettings
    namespace: str
    body_limit_bytes: int
    max_concurrent_requests: int
    log_level: str
    log_format: str
    http_ready_dir: str
    draining_flag: str
    metrics_dir: str
    metrics_prefix: str = "dynamo_frontend"
    apis: ApiSettings = ApiSettings()  # parsers, Responses store, Anthropic (above)
    media: MediaSettings = MediaSettings()  # generated images and videos served by URL (frontend/stores/media.py)
