"""The resolved daemon configuration, typed: one frozen Struct per option group of ``options.OPTIONS``.

Each section's fields are the options of its group, with the option's name, type and default, in table order
(``tests/unit/test_config_sections.py`` holds the two to each other). ``FrontendConfig`` has one field per
group, named like the group: ``config.http.http_port``, ``config.router.kv_events``. A process gets the
section(s) it needs, never the whole untyped bag of options. Sizes given in MiB are converted to bytes here
only (the ``*_bytes`` properties).
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import msgspec

from .etcd_settings import EtcdSettings
from .options import BUNDLED_MODEL_PATH, DEFAULT_HTTP_WORKERS, MOCK_EXTRA_MODELS, OPTIONS_BY_NAME, mock_extra_types

MIB = 1024 * 1024


def mib_to_bytes(mib: float) -> int:
    """A size option given in MiB, in bytes (the only MiB -> bytes conversion)."""
    return int(mib * MIB)


class GeneralConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Group ``general``: config file, logging, metrics names, run directory."""

    config: str = ""
    dump_config_to: str = ""
    metrics_prefix: str = "dynamo_frontend"
    log_level: str = "warning"
    log_format: str = "text"
    otel_export_enabled: bool = False
    run_dir: str = ""


class HttpConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Group ``http``: the HTTP server (Granian), its TLS and its limits."""

    http_host: str = "0.0.0.0"
    http_port: int = 8000
    workers: int = DEFAULT_HTTP_WORKERS
    http_body_limit_mb: float = 192.0
    tls_cert_path: str = ""
    tls_key_path: str = ""
    tls_client_ca_path: str = ""
    tls_min_version: str = "1.2"
    graceful_shutdown_timeout: float = 30.0
    access_log: bool = False
    max_concurrent_requests: int = 0
    io_thread_sched_batch: bool = True  # transport/process.py batch_schedule_helper_threads
    stream_coalesce: bool = False  # http/streaming.py

    @property
    def http_body_limit_bytes(self) -> int:
        """Largest accepted request body (HTTP) or request message (KServe gRPC), in bytes."""
        return mib_to_bytes(self.http_body_limit_mb)


class LimitsConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Group ``limits``: what one request may hold (``pipeline/prepare.check_limits``; 400 above). The HTTP and
    gRPC processes get this section as it is (``GatewaySettings.limits``)."""

    max_stop_strings: int = 16
    max_stop_string_length: int = 1024
    max_tools: int = 128
    max_tool_schema_bytes: int = 65536
    max_messages: int = 16384
    max_stream_backlog_mb: float = 4.0  # http/client_backlog.py
    max_queued_tokens: int = 512  # gateway/engine_client.py
    slow_reader_timeout_s: float = 30.0


class AuthConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Group ``auth``: API keys of the HTTP and gRPC front doors (``config/api_keys.py`` reads them)."""

    api_key: str = ""
    api_key_file: str = ""
    api_key_exempt: str = "/live,/health,/metrics,/docs,/openapi.json"


class PreprocessConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Group ``preprocess``: the tokenizer pool and nvext."""

    tokenizer_workers: int = 1
    tokenize_inline_max_bytes: int = 4096  # tokenizer/client.py
    fast_bpe: bool = True  # tokenizer/fast_bpe.py
    disable_nvext: bool = False


class RouterConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Group ``router``: worker selection (HTTP processes) and the shared KV index (the indexer process)."""

    router_mode: str = "round_robin"
    kv_overlap_score_weight: float = 1.0
    router_temperature: float = 0.0
    kv_events: bool = True
    router_ttl_s: float = 120.0
    router_pending_ttl_s: float = 0.0
    active_decode_blocks_threshold: float = 0.0
    active_prefill_tokens_threshold: int = 0
    active_prefill_tokens_threshold_frac: float = 0.0
    overload_status_code: int = 529
    disable_frontend_admin_api: bool = False
    kv_index_capacity_blocks: int = 262144
    kv_index_max_workers: int = 64
    migration_limit: int = 3
    migration_max_seq_len: int = 0
    decode_fallback: bool = True

    @property
    def prediction_ttl_s(self) -> float:
        """How long a routed prefix counts as cached: until events confirm it, or for the approximate TTL."""
        return self.router_pending_ttl_s if self.kv_events else self.router_ttl_s


class NamespaceFilter(NamedTuple):
    """The worker namespaces a daemon serves: ``prefix`` (when set) wins over ``exact``; neither: every one."""

    exact: str = ""
    prefix: str = ""

    def accepts(self, namespace: str) -> bool:
        if self.prefix:
            return namespace.startswith(self.prefix)
        return not self.exact or namespace == self.exact

    def describe(self) -> str:
        if self.prefix:
            return f"namespaces starting with {self.prefix!r}"
        return f"namespace {self.exact!r}" if self.exact else "every namespace"


class DiscoveryConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Group ``discovery``: the registry workers register with."""

    namespace: str = ""
    namespace_prefix: str = ""
    model_name: str = ""
    model_path: str = ""
    kv_cache_block_size: int = 0
    registry_endpoint: str = "tcp://127.0.0.1:5570"
    lease_ttl_s: float = 10.0
    discovery_backend: str = "embedded"
    etcd_endpoints: str = "http://127.0.0.1:2379"
    etcd_ca_path: str = ""
    etcd_cert_path: str = ""
    etcd_key_path: str = ""
    etcd_username: str = ""
    etcd_password: str = ""

    @property
    def etcd(self) -> EtcdSettings | None:
        """How to reach etcd with ``--discovery-backend etcd``; None with the embedded registry."""
        if self.discovery_backend != "etcd":
            return None
        return EtcdSettings(endpoints=self.etcd_endpoints, ca_path=self.etcd_ca_path, cert_path=self.etcd_cert_path,
                            key_path=self.etcd_key_path, username=self.etcd_username, password=self.etcd_password)

    @property
    def namespaces(self) -> NamespaceFilter:
        """Which worker namespaces the registry accepts."""
        return NamespaceFilter(self.namespace, self.namespace_prefix)

    @property
    def worker_namespace(self) -> str:
        """The namespace the built-in mock workers register in: one the registry accepts."""
        return self.namespace_prefix or self.namespace or "dynamo"

    @property
    def served_model_name(self) -> str:
        """The name ``--model-path``'s model is served under (empty without ``--model-path``)."""
        if not self.model_path:
            return ""
        return self.model_name or os.path.basename(os.path.normpath(self.model_path))


class MockerConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Group ``mocker``: mock-engine workers the daemon starts itself."""

    mock_workers: int = 0
    mock_prefill_workers: int = 0
    mock_speedup_ratio: float = 1.0
    mock_model_path: str = os.path.normpath(BUNDLED_MODEL_PATH)
    mock_model_name: str = ""
    mock_extra_models: str = ",".join(MOCK_EXTRA_MODELS)

    @property
    def extra_types(self) -> list[str]:
        """The model types of ``--mock-extra-models`` (each gets one mock worker when mock_workers > 0)."""
        return mock_extra_types(self.mock_extra_models) if self.mock_workers else []


class MediaConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Group ``media``: generated images and videos served by URL (``frontend/stores/media.py``)."""

    media_store_path: str = ""
    media_store_ttl_s: float = 3600.0
    media_store_max_mb: float = 1024.0
    media_public_url: str = ""

    @property
    def media_store_max_bytes(self) -> int:
        return mib_to_bytes(self.media_store_max_mb)


class KserveConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Group ``kserve``: the KServe v2 / Triton gRPC server (``frontend/grpc/``)."""

    kserve_grpc_server: bool = False
    kserve_grpc_host: str = ""
    kserve_grpc_port: int = 8787
    kserve_grpc_workers: int = 1
    grpc_initial_stream_window_size: int = 0


class ParsersConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Group ``parsers``: tool calls, reasoning, the Responses and Anthropic APIs."""

    tool_call_parser: str = ""
    reasoning_parser: str = ""
    enable_anthropic_api: bool = True
    responses_store: bool = True
    responses_store_path: str = ""
    responses_store_url: str = ""
    responses_store_ttl_s: float = 30 * 86400.0
    responses_store_max_mb: float = 256.0

    @property
    def responses_store_max_bytes(self) -> int:
        return mib_to_bytes(self.responses_store_max_mb)


class FrontendConfig(msgspec.Struct, frozen=True, kw_only=True):
    """The daemon's resolved configuration: one typed section per option group (``options.Option.group``)."""

    general: GeneralConfig = GeneralConfig()
    http: HttpConfig = HttpConfig()
    limits: LimitsConfig = LimitsConfig()
    auth: AuthConfig = AuthConfig()
    preprocess: PreprocessConfig = PreprocessConfig()
    router: RouterConfig = RouterConfig()
    discovery: DiscoveryConfig = DiscoveryConfig()
    mocker: MockerConfig = MockerConfig()
    media: MediaConfig = MediaConfig()
    kserve: KserveConfig = KserveConfig()
    parsers: ParsersConfig = ParsersConfig()

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> "FrontendConfig":
        """From a value for every option name (what the loader resolved), each put into its group's section."""
        by_group: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
        for name, value in values.items():
            by_group[OPTIONS_BY_NAME[name].group][name] = value
        sections: dict[str, Any] = {group: SECTIONS[group](**fields) for group, fields in by_group.items()}
        return cls(**sections)

    def value(self, name: str) -> Any:
        """The value of an option by its name (for generic code: dumping, tests); code reads the sections."""
        return getattr(getattr(self, OPTIONS_BY_NAME[name].group), name)


SECTIONS: dict[str, type[msgspec.Struct]] = {
    field.name: field.type for field in msgspec.structs.fields(FrontendConfig)
}
