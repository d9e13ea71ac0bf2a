"""Every daemon option, declared once: flag, env var, config-file key, type, default and help.

The flag is ``--name-with-dashes``, the env var ``DYN_NAME_IN_CAPS`` (plus any ``env_aliases``, e.g. Dynamo's own
name for the setting) and the TOML key ``name_with_underscores``.
Precedence: command line > environment > config file > default (see ``loader.py``).
Each option's ``group`` names the typed section of ``FrontendConfig`` it lands in (``sections.py``).
The worker commands declare their flags with the same ``Option`` (``frontend/worker/cli.py``), with an
``env_prefix`` of their own (``DYN_MOCKER_``, ...).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from ..protocol.errors import ConfigError
from .log_spec import log_spec_problem
from .parser_names import check_reasoning_parsers, check_tool_parsers


@dataclass(frozen=True)
class Option:
    """One configurable setting of the daemon (or, with an ``env_prefix`` of its own, of a worker command)."""

    name: str
    kind: type
    default: Any
    help: str
    group: str = ""  # the daemon's: the FrontendConfig section (and --help group); workers leave it empty
    choices: tuple[str, ...] | None = None
    aliases: dict[str, str] = field(default_factory=dict)  # value aliases, e.g. round-robin -> round_robin
    validate: Callable[[Any], str | None] | None = None
    env_aliases: tuple[str, ...] = ()  # more env vars read when <env_prefix><NAME> is not set, in order
    env_prefix: str = "DYN_"
    flag_aliases: tuple[str, ...] = ()  # more flags for the same option, e.g. --kv-block-size
    repeatable: bool = False  # a str option whose flag may be given several times (values joined with commas)
    secret: bool = False  # never shown: "***" in --dump-config and in error messages
    none_is_default: bool = False  # the value "None" (Dynamo's way to unset a threshold) means the default (off)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env_var(self) -> str:
        return self.env_prefix + self.name.upper()

    @property
    def env_vars(self) -> tuple[str, ...]:
        """Every env var of the option, the one that wins first."""
        return (self.env_var, *self.env_aliases)

    @property
    def help_text(self) -> str:
        """The ``--help`` entry: the help, the choices, the env var(s) and the default."""
        choices = f" One of: {', '.join(self.choices)}." if self.choices else ""
        return f"{self.help}{choices} [env {' or '.join(self.env_vars)}; default {self.default!r}]"

    def from_environ(self, environ: Mapping[str, str]) -> tuple[bool, Any]:
        """``(True, value)`` from the first of ``env_vars`` that is set, else ``(False, None)``."""
        for env_var in self.env_vars:
            if env_var in environ:
                return True, self.parse(environ[env_var], f"env {env_var}")
        return False, None

    def parse(self, raw: Any, source: str) -> Any:
        """Convert a raw value (a string from the CLI or env, or a TOML value) and validate it.

        A repeatable option also takes a list of strings (the flag given several times, a TOML array): joined
        with commas. A secret option's value is never in an error message."""
        if self.repeatable and isinstance(raw, list) and all(isinstance(item, str) for item in raw):
            raw = ",".join(raw)
        if self.none_is_default and isinstance(raw, str) and raw.strip().lower() == "none":
            return self.default
        shown = "***" if self.secret else repr(raw)
        try:
            value = _convert(self.kind, raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{self.flag} ({source}): expected {self.kind.__name__}, got {shown}") from None
        if isinstance(value, str):
            value = self.aliases.get(value, value)
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"{self.flag} ({source}): {shown} is not one of {', '.join(self.choices)}")
        problem = self.validate(value) if self.validate else None
        if problem:
            raise ConfigError(f"{self.flag} ({source}): {problem}")
        return value


def _convert(kind: type, raw: Any) -> Any:
    if not isinstance(raw, str):  # a TOML value: its type must already be right
        return _check_toml_type(kind, raw)
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(raw)
    if kind is int and isinstance(raw, float):
        raise ValueError(raw)
    return kind(raw)


def _check_toml_type(kind: type, raw: Any) -> Any:
    if isinstance(raw, bool) != (kind is bool):
        raise TypeError(raw)
    if kind is float and isinstance(raw, (int, float)):
        return float(raw)
    if not isinstance(raw, kind):
        raise TypeError(raw)
    return raw


def positive(value: float) -> str | None:
    return None if value > 0 else "must be greater than 0"


def _postgres_url(value: str) -> str | None:
    return None if not value or value.startswith(("postgresql://", "postgres://")) else \
        "must be a postgresql:// URL"


def _non_negative(value: float) -> str | None:
    return None if value >= 0 else "must be 0 or more"


def _port(value: int) -> str | None:
    return None if 0 < value < 65536 else "must be a TCP port (1-65535)"


def one_of(*values: str) -> Callable[[Any], str | None]:
    """A validator for a value from a fixed list whose help text lists the values already (no "One of:")."""
    expected = f"{', '.join(values[:-1])} or {values[-1]}" if len(values) > 1 else values[0]
    return lambda value: None if value in values else f"must be {expected}"


def split_list(value: str) -> list[str]:
    """The items of a comma-separated option value, stripped, empty ones dropped (``--api-key a,b``)."""
    return [item.strip() for item in value.split(",") if item.strip()]


SECRET_MASK = "***"  # what --dump-config prints for a secret option's value


def api_key_problem(key: str) -> str | None:
    """What is wrong with one API key (``--api-key``, a line of ``--api-key-file``); the key is never quoted."""
    if key == SECRET_MASK:
        return f"{SECRET_MASK!r} is the mask --dump-config prints, not a key: put the real key back"
    if not key.isprintable() or any(char.isspace() or char == "," for char in key):
        return "a key may not contain spaces, commas or control characters"
    return None


def _api_keys(value: str) -> str | None:
    return next(filter(None, map(api_key_problem, split_list(value))), None)


def _paths(value: str) -> str | None:
    wrong = [path for path in split_list(value) if not path.startswith("/")]
    return f"every path must start with /, not {', '.join(wrong)}" if wrong else None


def _zmq_endpoint(value: str) -> str | None:
    return None if value.startswith(("tcp://", "ipc://")) else "must be a ZeroMQ endpoint such as tcp://127.0.0.1:5570"


BUNDLED_MODEL_PATH = os.path.join(os.path.dirname(__file__), "..", "..", "config", "models", "tiny")
# --mock-extra-models: model type -> the name its mock worker serves
MOCK_EXTRA_MODELS = {"embedding": "tiny-embed", "images": "tiny-image", "videos": "tiny-video"}


def mock_extra_types(value: str) -> list[str]:
    """The model types of ``--mock-extra-models`` ("none" or "": none)."""
    return [] if value.strip() in ("", "none") else [kind.strip() for kind in value.split(",") if kind.strip()]


def _mock_extras(value: str) -> str | None:
    unknown = [kind for kind in mock_extra_types(value) if kind not in MOCK_EXTRA_MODELS]
    return f"unknown type(s) {', '.join(unknown)}; use some of {', '.join(MOCK_EXTRA_MODELS)}, or none" \
        if unknown else None

# --discovery-backend: Dynamo's values of a single-machine discovery mean the embedded registry here
DISCOVERY_BACKEND_ALIASES = {"mem": "embedded", "file": "embedded"}


def _discovery_backend(value: str) -> str | None:
    return None if value in ("embedded", "etcd") else \
        f"{value!r} is not supported: use embedded (also mem, file) or etcd"


def etcd_endpoints_problem(value: str) -> str | None:
    """What is wrong with an ``--etcd-endpoints`` value: comma-separated http(s)://host:port, one scheme."""
    items = split_list(value)
    if not items:
        return "needs at least one http(s)://host:port"
    for item in items:
        parts = urlsplit(item)
        try:
            port = parts.port
        except ValueError:
            port = None
        if parts.scheme not in ("http", "https") or not parts.hostname or port is None or parts.path not in ("", "/"):
            return f"{item!r} is not http(s)://host:port"
    return "mixes http and https endpoints" if len({urlsplit(item).scheme for item in items}) > 1 else None


# The daemon's etcd options; the worker commands take the same (frontend/worker/cli.py RUNTIME_FLAGS).
ETCD_OPTIONS: tuple[Option, ...] = (
    Option("discovery_backend", str, "embedded", "Where workers register: embedded (this daemon's registry; "
           "Dynamo's mem and file mean the same) or etcd (--etcd-endpoints; several frontends and workers on many "
           "machines).", "discovery", aliases=DISCOVERY_BACKEND_ALIASES, validate=_discovery_backend),
    Option("etcd_endpoints", str, "http://127.0.0.1:2379", "etcd client URLs, comma-separated http(s)://host:port "
           "(host names resolve to IPv4).", "discovery", validate=etcd_endpoints_problem,
           env_aliases=("ETCD_ENDPOINTS",)),
    Option("etcd_ca_path", str, "", "PEM CA bundle that signed etcd's server certificate (https endpoints; "
           "default: the system's).", "discovery", env_aliases=("ETCD_AUTH_CA",)),
    Option("etcd_cert_path", str, "", "PEM client certificate for etcd (mutual TLS).", "discovery",
           env_aliases=("ETCD_AUTH_CLIENT_CERT",)),
    Option("etcd_key_path", str, "", "PEM private key of --etcd-cert-path.", "discovery",
           env_aliases=("ETCD_AUTH_CLIENT_KEY",)),
    Option("etcd_username", str, "", "etcd user (with --etcd-password; prefer the env var).", "discovery",
           env_aliases=("ETCD_USERNAME", "ETCD_AUTH_USERNAME"), secret=True),
    Option("etcd_password", str, "", "Password of --etcd-username (prefer the env var: a flag shows in ps).",
           "discovery", env_aliases=("ETCD_PASSWORD", "ETCD_AUTH_PASSWORD"), secret=True),
)

DEFAULT_HTTP_WORKERS = max(1, (os.cpu_count() or 2) // 2)
"""Measured on 2 cores with the mock workers (bench notes of issue 14; 2026-12-04): 1 HTTP process used up to ~10 %
less CPU per request and ~15 % less per streamed token than 2 (each engine step reaches one process in one message
instead of two halves) and streamed 5-10 % more tokens/s; 2 served 20-40 % more unary requests/s, since 1 caps the
frontend at one core."""

OPTIONS: tuple[Option, ...] = (
    Option("config", str, "", "TOML config file; its keys are the option names with underscores.", "general"),
    Option("http_host", str, "0.0.0.0", "Address the HTTP server binds to.", "http"),
    Option("http_port", int, 8000, "HTTP port.", "http", validate=_port),
    Option("workers", int, DEFAULT_HTTP_WORKERS, "Granian HTTP worker processes (default: half the CPUs: each keeps "
           "about two threads busy, its event loop and its I/O runtime, and every engine step's outputs are split "
           "into one message per process).", "http", validate=positive),
    Option("http_body_limit_mb", float, 192.0, "Largest accepted request body, in MiB (413 above).", "http",
           validate=positive),
    Option("tls_cert_path", str, "", "PEM certificate (chain) for HTTPS; needs --tls-key-path.", "http"),
    Option("tls_key_path", str, "", "PEM private key of --tls-cert-path.", "http"),
    Option("tls_client_ca_path", str, "", "PEM CA bundle: clients must present a certificate it signed (mutual "
           "TLS).", "http", flag_aliases=("--tls-client-ca-cert-path",), env_aliases=("DYN_TLS_CLIENT_CA_CERT_PATH",)),
    Option("tls_min_version", str, "1.2", "Oldest TLS version accepted.", "http", choices=("1.2", "1.3")),
    Option("graceful_shutdown_timeout", float, 30.0, "On SIGTERM/SIGINT, seconds in-flight requests get to "
           "finish before the HTTP workers are killed.", "http", validate=_non_negative,
           env_aliases=("DYN_HTTP_GRACEFUL_SHUTDOWN_TIMEOUT_SECS",)),
    Option("access_log", bool, False, "Log every HTTP request (Granian's access log).", "http"),
    Option("max_concurrent_requests", int, 0,
           "Requests one HTTP worker process serves at once; more get 503 (0 = no limit).", "http",
           validate=_non_negative),
    Option("io_thread_sched_batch", bool, True, "Run each HTTP process's I/O threads (Granian's runtime, which writes "
           "the responses) under Linux's SCHED_BATCH policy, so that handing them a write does not preempt the "
           "event loop: the writes of one loop turn then go out in one wake-up of the I/O thread instead of one "
           "each (streaming at engine pace: about half the context switches per token). Off: plain SCHED_OTHER.",
           "http"),
    Option("stream_coalesce", bool, False, "Overload behaviour: a stream that falls behind its worker sends what "
           "it has queued as one SSE event (several engine outputs' tokens in one chunk: fewer, larger events). "
           "Off: one event per engine output, whatever the load.", "http"),
    # ---- per-request limits (frontend/pipeline/prepare.py check_limits; README "Limits") ----
    Option("max_stop_strings", int, 16, "Stop strings one request may give (stop; Anthropic's stop_sequences; the "
           "KServe stop input); more are a 400.", "limits", validate=positive),
    Option("max_stop_string_length", int, 1024, "Longest stop string, in characters; longer is a 400.", "limits",
           validate=positive),
    Option("max_tools", int, 128, "Tools one chat, Responses or Messages request may offer; more are a 400.",
           "limits", validate=positive),
    Option("max_tool_schema_bytes", int, 65536, "Largest parameters schema of one tool, in bytes of JSON; larger "
           "is a 400.", "limits", validate=positive),
    Option("max_messages", int, 16384, "Messages of one chat request (Messages API: after mapping; Responses: "
           "input items plus the stored conversation); more are a 400.", "limits", validate=positive),
    Option("max_stream_backlog_mb", float, 4.0, "Bytes of one streamed response (MiB) the client may leave unread "
           "(held by the HTTP process and the kernel's send buffer); above it the stream stops taking tokens from "
           "the worker until the client catches up (0 = no bound).", "limits", validate=_non_negative),
    Option("max_queued_tokens", int, 512, "Tokens of one request the gateway may hold from its worker before "
           "the stream takes them (a stream waiting for a slow client); above it the worker pauses the request until "
           "they are taken.", "limits", validate=positive),
    Option("slow_reader_timeout_s", float, 30.0, "How long a stream may stay above --max-stream-backlog-mb before "
           "the request is aborted (a 408 timeout_error event ends the stream).", "limits", validate=positive),
    # ---- API keys (frontend/gateway/auth.py) ----
    Option("api_key", str, "", "An API key clients must send (Authorization: Bearer KEY; the Anthropic routes "
           "also take x-api-key: KEY; gRPC the same in metadata). Repeat the flag or separate keys with commas; a "
           "flag replaces DYN_API_KEY (a key on the command line shows in ps: prefer the env var or "
           "--api-key-file). Any key configured turns the check on.", "auth",
           validate=_api_keys, repeatable=True, secret=True),
    Option("api_key_file", str, "", "File of API keys, one per line (blank lines and lines starting with # "
           "skipped); added to --api-key. Read at start-up.", "auth"),
    Option("api_key_exempt", str, "/live,/health,/metrics,/docs,/openapi.json", "HTTP paths open without a key "
           "when keys are configured, comma-separated; each also opens the paths below it (/docs: Swagger UI's "
           "files). gRPC health RPCs (ServerLive, ServerReady, ModelReady) are always open.", "auth",
           validate=_paths),
    Option("tokenizer_workers", int, 1, "Tokenizer processes (chat template + tokenization).", "preprocess",
           validate=positive),
    Option("tokenize_inline_max_bytes", int, 4096, "Requests whose body is at most this many bytes are templated "
           "and tokenized in the HTTP process (no hop to the tokenizer pool: lower latency and CPU for short prompts; "
           "each HTTP process then holds the model's tokenizer); larger ones go to the pool, so that a long prompt "
           "never stalls the streams of an HTTP process (0 = always the pool).", "preprocess",
           validate=_non_negative),
    Option("fast_bpe", bool, True, "Encode prompts of byte-level BPE tokenizers (GPT-2, Llama 3, Qwen, DeepSeek "
           "style) with tiktoken's BPE instead of the tokenizers library: the same ids, about 3x faster. Taken per "
           "model only when its tokenizer.json has that structure and both give the same ids on a built-in sample "
           "at load (otherwise, and with --no-fast-bpe, the tokenizers library encodes).", "preprocess"),
    Option("disable_nvext", bool, False, "Ignore the nvext object of chat and completion requests and the "
           "worker-pinning headers (x-worker-instance-id), as Dynamo's DYN_DISABLE_FRONTEND_NVEXT does.",
           "preprocess", env_aliases=("DYN_DISABLE_FRONTEND_NVEXT",)),
    Option("router_mode", str, "round_robin", "How a worker is picked for a request: round_robin and random "
           "spread requests; kv weighs each worker's cached prefix against its load; least_loaded takes the worker "
           "with the fewest active requests; power_of_two the less loaded of two drawn at random; direct only the "
           "worker the request names (x-worker-instance-id header or nvext.backend_instance_id; 400 without one).",
           "router", choices=("round_robin", "random", "kv", "least_loaded", "power_of_two", "direct"),
           aliases={"round-robin": "round_robin", "least-loaded": "least_loaded", "power-of-two": "power_of_two"}),
    Option("kv_overlap_score_weight", float, 1.0,
           "KV routing: weight of the prefill cost against the decode cost (0 = load balancing only).", "router",
           validate=_non_negative, flag_aliases=("--router-kv-overlap-score-weight",),
           env_aliases=("DYN_ROUTER_KV_OVERLAP_SCORE_WEIGHT", "DYN_OVERLAP_SCORE_WEIGHT")),
    Option("router_temperature", float, 0.0,
           "KV routing: 0 picks the cheapest worker; above 0 samples from softmax(-cost/T).", "router",
           validate=_non_negative),
    Option("kv_events", bool, True,
           "KV routing: follow the workers' KV events (--no-kv-events: only the router's own decisions, "
           "each remembered for --router-ttl-s).", "router", flag_aliases=("--router-kv-events",),
           env_aliases=("DYN_ROUTER_USE_KV_EVENTS",)),
    Option("router_ttl_s", float, 120.0, "Approximate mode (--no-kv-events): how long a routed prefix "
           "counts as cached.", "router", validate=positive, flag_aliases=("--router-ttl-secs",),
           env_aliases=("DYN_ROUTER_TTL_SECS",)),
    Option("router_pending_ttl_s", float, 0.0, "KV routing with events (predict-on-route): how long a routed "
           "prefix counts as cached on its worker before the worker's events confirm it; 0 = off, as in Dynamo "
           "(a burst of requests sharing a new prefix then spreads until the first one's events arrive).", "router",
           validate=_non_negative, flag_aliases=("--router-predicted-ttl-secs",),
           env_aliases=("DYN_ROUTER_PREDICTED_TTL_SECS",), none_is_default=True),
    Option("active_decode_blocks_threshold", float, 0.0, "A worker whose active blocks exceed this fraction of "
           "its KV blocks gets no new requests (0 or None = off); all workers busy is --overload-status-code.",
           "router", validate=_non_negative, none_is_default=True),
    Option("active_prefill_tokens_threshold", int, 0, "A worker with more active prefill tokens than this gets "
           "no new requests (0 or None = off); all workers busy is --overload-status-code.", "router",
           validate=_non_negative, none_is_default=True),
    Option("active_prefill_tokens_threshold_frac", float, 0.0, "A worker with more active prefill tokens than this "
           "fraction of its max_num_batched_tokens (from its model card) gets no new requests (0 or None = off).",
           "router", validate=_non_negative, none_is_default=True),
    Option("overload_status_code", int, 529, "HTTP status of a request refused because every worker of its model "
           "is busy (Dynamo's DYN_HTTP_OVERLOAD_STATUS_CODE; 529 = overloaded, 503 is the other common choice). A "
           "model with no live worker at all is a 503.", "router", env_aliases=("DYN_HTTP_OVERLOAD_STATUS_CODE",),
           validate=lambda v: None if 400 <= v <= 599 else "must be an HTTP error status (400-599)"),
    Option("disable_frontend_admin_api", bool, False, "Turn off the admin endpoint GET/POST /busy_threshold "
           "(reads and changes the busy thresholds per model at run time).", "router",
           env_aliases=("DYN_DISABLE_FRONTEND_ADMIN_API",)),
    Option("kv_index_capacity_blocks", int, 262144, "Blocks the shared KV index can hold (memory is fixed: "
           "about 100 bytes per block).", "router", validate=positive),
    Option("kv_index_max_workers", int, 64, "Worker instances the shared KV index can track (up to 256).",
           "router", validate=lambda v: None if 0 < v <= 256 else "must be 1-256"),
    Option("migration_limit", int, 3, "Times a request whose worker went away mid-generation continues on "
           "another live worker (prompt plus the tokens already generated; the client sees one stream); 0 = off. "
           "Not for structured output.", "router", validate=_non_negative),
    Option("migration_max_seq_len", int, 0, "Longest prompt + generated sequence that migrates (0 = any).",
           "router", validate=_non_negative),
    Option("decode_fallback", bool, True, "Disaggregated serving (a model with prefill workers): when a request's "
           "prefill fails on every prefill worker it was tried on, the decode worker computes the prompt itself "
           "rather than the request failing. Requests arriving while no prefill worker is reachable are always "
           "served whole by the decode workers. On by default (Dynamo's --decode-fallback is off by default).",
           "router"),
    Option("namespace", str, "", "Only workers registering in this namespace are served (empty: every "
           "namespace, as in Dynamo).", "discovery"),
    Option("namespace_prefix", str, "", "Only workers whose namespace starts with this are served; takes "
           "precedence over --namespace.", "discovery"),
    Option("model_name", str, "", "With --model-path: the name that model is served under (default: the "
           "directory's name). Built-in mock workers serve it.", "discovery"),
    Option("model_path", str, "", "A local model directory (config, tokenizer, chat template): the model named "
           "--model-name reads its files from here rather than from the path in its workers' model card (workers "
           "on other machines); built-in mock workers serve it.", "discovery"),
    Option("kv_cache_block_size", int, 0, "KV block size the router hashes prompts with, for every model (0 = each "
           "model card's own; must equal the workers' block size for KV routing to find their blocks).",
           "discovery", validate=_non_negative),
    Option("registry_endpoint", str, "tcp://127.0.0.1:5570",
           "ZeroMQ endpoint of the registry where workers register and heartbeat.", "discovery",
           validate=_zmq_endpoint),
    Option("lease_ttl_s", float, 10.0, "A worker whose last heartbeat is older than this is removed (etcd: the "
           "TTL of the lease each worker keeps alive).", "discovery",
           validate=positive),
    # ---- etcd discovery (frontend/transport/etcd_keys.py; README "Running on many machines") ----
    *ETCD_OPTIONS,
    Option("mock_workers", int, 0, "Mock-engine workers to start as child processes (0 = external workers only).",
           "mocker", validate=_non_negative),
    Option("mock_prefill_workers", int, 0, "Disaggregated serving with mocks: also start this many mock prefill "
           "workers; the --mock-workers then run as decode workers (0 = every mock worker serves whole requests).",
           "mocker", validate=_non_negative),
    Option("mock_speedup_ratio", float, 1.0,
           "Divides the mock engine's simulated prefill/decode time (1 = realistic, 1e6 = no delay).", "mocker",
           validate=positive),
    Option("mock_model_path", str, os.path.normpath(BUNDLED_MODEL_PATH), "Model directory the mock workers serve.",
           "mocker"),
    Option("mock_model_name", str, "", "Model name the mock workers register (default: the directory name).",
           "mocker"),
    Option("mock_extra_models", str, ",".join(MOCK_EXTRA_MODELS), "With --mock-workers above 0, also start one "
           "mock worker per listed model type: embedding (model tiny-embed), images (tiny-image), videos "
           "(tiny-video); none for none.", "mocker", validate=_mock_extras),
    Option("dump_config_to", str, "", "Write the resolved configuration as TOML to this file at start-up, then "
           "serve (--dump-config prints it and exits).", "general"),
    Option("metrics_prefix", str, "dynamo_frontend", "Prefix of every Prometheus metric name on /metrics.",
           "general", validate=lambda v: None if v.replace("_", "a").isalnum() else "letters, digits and _ only"),
    Option("log_level", str, "warning", "Log level of every process: debug, info, warning or error (trace and "
           "warn as in Dynamo), optionally followed by per-logger levels as Dynamo's DYN_LOG takes them: "
           "info,frontend.router=debug (a Rust-style target a::b means logger a.b).", "general",
           validate=log_spec_problem, env_aliases=("DYN_LOG",)),
    Option("log_format", str, "text", "Log lines as logfmt-style text or JSON (DYN_LOGGING_JSONL=1 means json).",
           "general", choices=("text", "json"), env_aliases=("DYN_LOGGING_JSONL",),
           aliases={"1": "json", "true": "json", "0": "text", "false": "text"}),
    Option("otel_export_enabled", bool, False, "Export OpenTelemetry traces of requests over OTLP (endpoint, "
           "protocol, service name, sampler from the standard OTEL_* variables; README \"Tracing\").", "general",
           env_aliases=("OTEL_EXPORT_ENABLED",)),
    Option("run_dir", str, "", "Directory for IPC sockets (default: a new private temporary directory).", "general"),
    # ---- generated images and videos served by URL (frontend/stores/media.py) ----
    Option("media_store_path", str, "", "Directory of generated images and videos answered by URL, shared by "
           "all HTTP processes (default: media/ in the run directory).", "media"),
    Option("media_store_ttl_s", float, 3600.0, "A generated file's URL works this long.", "media",
           validate=positive),
    Option("media_store_max_mb", float, 1024.0, "Size limit of the media store; the oldest files go first.",
           "media", validate=positive),
    Option("media_public_url", str, "", "Base of media URLs, e.g. https://api.example.com behind a proxy "
           "(default: the request's scheme and Host header).", "media"),
    # ---- KServe v2 / Triton gRPC front door (frontend/grpc/) ----
    Option("kserve_grpc_server", bool, False, "Also serve the KServe v2 / Triton gRPC inference protocol "
           "(inference.GRPCInferenceService) on --kserve-grpc-port.", "kserve"),
    Option("kserve_grpc_host", str, "", "Address the gRPC server binds to (default: --http-host).", "kserve"),
    Option("kserve_grpc_port", int, 8787, "KServe gRPC port.", "kserve", validate=_port),
    Option("kserve_grpc_workers", int, 1, "gRPC server processes; several share the port (SO_REUSEPORT) and "
           "each client connection stays on one.", "kserve", validate=positive),
    Option("grpc_initial_stream_window_size", int, 0, "gRPC HTTP/2 initial stream window in bytes, fixed "
           "(0 = gRPC's automatic sizing by bandwidth-delay probing); raise it for long prompts. The connection "
           "window follows from it.", "kserve", validate=_non_negative),
    # ---- tool calls, reasoning, Responses and Anthropic APIs (frontend/parsers/, frontend/http/) ----
    Option("tool_call_parser", str, "", "Tool-call parser for every model (NAME) or per model "
           "(MODEL=NAME,...); overrides the parser the worker's model card names.", "parsers",
           validate=check_tool_parsers),
    Option("reasoning_parser", str, "", "Reasoning parser for every model (NAME) or per model "
           "(MODEL=NAME,...); overrides the parser the worker's model card names.", "parsers",
           validate=check_reasoning_parsers),
    Option("enable_anthropic_api", bool, True, "Serve the Anthropic Messages API on /v1/messages (on by "
           "default; the flag is accepted for Dynamo compatibility).", "parsers"),
    Option("responses_store", bool, True, "Keep /v1/responses with store: true (OpenAI's default) for "
           "previous_response_id, GET and DELETE (--no-responses-store: stateless).", "parsers"),
    Option("responses_store_path", str, "", "SQLite file of stored responses, shared by all HTTP processes "
           "(default: responses.sqlite3 in the run directory).", "parsers"),
    Option("responses_store_url", str, "", "PostgreSQL database of stored responses instead of the SQLite file, "
           "shared by several frontends: postgresql://user:password@host:port/db (needs the postgres extra).",
           "parsers", validate=_postgres_url, secret=True),
    Option("responses_store_ttl_s", float, 30 * 86400.0, "Stored responses older than this are deleted.",
           "parsers", validate=positive),
    Option("responses_store_max_mb", float, 256.0, "Size limit of the responses store; the oldest responses "
           "go first.", "parsers", validate=positive),
)

OPTIONS_BY_NAME = {option.name: option for option in OPTIONS}
