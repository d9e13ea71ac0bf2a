"""What an HTTP worker process is configured with: the daemon hands it ``GatewaySettings`` as JSON in
``SETTINGS_ENV``; ``ApiSettings`` are the chat-derived APIs' part (parsers, Responses store, Anthropic)."""

from __future__ import annotations

import os

import msgspec

from ..config.parser_names import parser_map
from ..config.sections import FrontendConfig, LimitsConfig, ParsersConfig, PreprocessConfig
from ..config.topology import Endpoints
from ..protocol.registry import ModelCard
from ..router.select import RouterSettings
from ..stores.media import MediaSettings
from .auth import ApiKeys

STORE_FILE = "responses.sqlite3"
# in the daemon's run directory:
HTTP_READY_DIR = "http-ready"  # one file per HTTP process that is serving
DRAINING_FLAG = "draining"  # exists once the daemon is shutting down
BUSY_THRESHOLDS_FILE = "busy-thresholds.json"  # per-model thresholds set through the admin API
METRICS_DIR = "metrics"  # metrics snapshots of the serving processes


class ApiSettings(msgspec.Struct, frozen=True):
    """Parser overrides by model name ("*": every model), Anthropic on/off, where stored responses live (the
    PostgreSQL URL if one is given, else the SQLite file; neither: not stored)."""

    tool_call_parsers: dict[str, str] = {}
    reasoning_parsers: dict[str, str] = {}
    anthropic_api: bool = True
    responses_store_path: str = ""  # "": responses are not stored
    responses_store_url: str = ""  # --responses-store-url: PostgreSQL instead of the file (stores/responses_pg.py)
    responses_store_ttl_s: float = ParsersConfig().responses_store_ttl_s
    responses_store_max_bytes: int = ParsersConfig().responses_store_max_bytes
    nvext: bool = True  # --disable-nvext: requests' nvext and the worker-pinning headers are ignored

    @classmethod
    def from_config(cls, parsers: ParsersConfig, preprocess: PreprocessConfig, run_dir: str) -> "ApiSettings":
        """From the daemon's ``parsers`` and ``preprocess`` sections; the store defaults to a file in the run
        directory."""
        path = url = ""
        if parsers.responses_store and parsers.responses_store_url:
            url = parsers.responses_store_url
        elif parsers.responses_store:
            path = parsers.responses_store_path or os.path.join(run_dir, STORE_FILE)
        return cls(tool_call_parsers=parser_map(parsers.tool_call_parser),
                   reasoning_parsers=parser_map(parsers.reasoning_parser), anthropic_api=parsers.enable_anthropic_api,
                   responses_store_path=path, responses_store_url=url,
                   responses_store_ttl_s=parsers.responses_store_ttl_s,
                   responses_store_max_bytes=parsers.responses_store_max_bytes, nvext=not preprocess.disable_nvext)

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
    api_keys: ApiKeys = ApiKeys()  # digests of --api-key / --api-key-file (gateway/auth.py); empty: no check
    limits: LimitsConfig = LimitsConfig()  # what one request may hold (pipeline/prepare.check_limits)
    stream_coalesce: bool = False  # --stream-coalesce: a stream that falls behind folds its queue into one event
    io_thread_sched_batch: bool = True  # --io-thread-sched-batch: Granian's runtime threads under SCHED_BATCH
    tokenize_inline_max_bytes: int = 0  # --tokenize-inline-max-bytes: shorter request bodies tokenized in-process
    fast_bpe: bool = True  # --fast-bpe: byte-level BPE encoded by tiktoken where exact (tokenizer/fast_bpe.py)
    busy_thresholds_path: str = ""  # run-time busy thresholds per model (router/thresholds.py); "": none
    admin_api: bool = True  # GET/POST /busy_threshold (off: DYN_DISABLE_FRONTEND_ADMIN_API)
    local_model: tuple[str, str] = ("", "")  # --model-name, --model-path: that model's files are read from there
    kv_cache_block_size: int = 0  # --kv-cache-block-size: every model's block size for routing (0: its card's)
    otel_export_enabled: bool = False  # --otel-export-enabled: OpenTelemetry traces (observability/tracing.py)

    @classmethod
    def from_config(cls, config: FrontendConfig, endpoints: Endpoints, run_dir: str) -> "GatewaySettings":
        """From the daemon's typed sections, the endpoints and the run directory (where the HTTP processes
        mark themselves ready, find the draining flag and write their metrics). Reads ``--api-key-file``
        (ConfigError when it cannot)."""
        general = config.general
        return cls(
            endpoints=endpoints, router=RouterSettings.from_config(config.router),
            namespace=config.discovery.worker_namespace, body_limit_bytes=config.http.http_body_limit_bytes,
            max_concurrent_requests=config.http.max_concurrent_requests, log_level=general.log_level,
            log_format=general.log_format, http_ready_dir=os.path.join(run_dir, HTTP_READY_DIR),
            draining_flag=os.path.join(run_dir, DRAINING_FLAG), metrics_dir=os.path.join(run_dir, METRICS_DIR),
            metrics_prefix=general.metrics_prefix,
            apis=ApiSettings.from_config(config.parsers, config.preprocess, run_dir),
            media=MediaSettings.from_config(config.media, run_dir),
            api_keys=ApiKeys.from_config(config.auth),
            limits=config.limits, stream_coalesce=config.http.stream_coalesce,
            io_thread_sched_batch=config.http.io_thread_sched_batch,
            tokenize_inline_max_bytes=config.preprocess.tokenize_inline_max_bytes,
            fast_bpe=config.preprocess.fast_bpe,
            busy_thresholds_path=os.path.join(run_dir, BUSY_THRESHOLDS_FILE),
            admin_api=not config.router.disable_frontend_admin_api,
            local_model=(config.discovery.served_model_name, config.discovery.model_path),
            kv_cache_block_size=config.discovery.kv_cache_block_size,
            otel_export_enabled=general.otel_export_enabled,
        )
