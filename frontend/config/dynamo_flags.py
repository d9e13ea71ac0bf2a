"""NVIDIA Dynamo 1.6.1 frontend flags this daemon accepts and ignores, each with the reason.

A Dynamo command line (``python -m dynamo.frontend ...``) and its environment start this daemon: Dynamo's
spellings of the settings we have are aliases of our options (``options.py``: ``flag_aliases``,
``env_aliases``); the flags below name Dynamo features this daemon does not have (NATS, Kubernetes
discovery, the AISimulate perf model, Dynamo's newer router cost terms...). They are parsed (so that a value
after them is not taken for a stray argument) and the daemon logs one warning naming those that were given, on
the command line or as their env var. A flag neither table knows is still an error.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Mapping, Sequence

_PLANES = "requests and responses travel on this frontend's own TCP connections, KV events over ZeroMQ"
_NATS = "no NATS here: " + _PLANES
_TCP_TLS = ("this frontend's request plane is its own TCP protocol, without TLS; Dynamo's TCP request-plane TLS "
            "does not apply")
_COST = "Dynamo's newer KV cost terms: this router weighs overlap with --kv-overlap-score-weight"
_TRACKING = "active blocks and prefill tokens are always tracked (in shared memory)"
_QUEUE = "no router queue: a request is routed at once, or refused when every worker is busy"
_DISAGG = ("disaggregation is decided by the registered worker roles: every request of a model with a reachable "
           "prefill worker is disaggregated, with the router's own prefill and decode selection")
_AIS = "no AISimulate perf model"


@dataclass(frozen=True)
class IgnoredFlag:
    """One accepted-and-ignored Dynamo flag: ``--name`` (``--no-name`` too when ``boolean``) and its env var."""

    name: str
    why: str
    boolean: bool = False
    env: str = ""  # Dynamo's env var when it is not DYN_<NAME>
    aliases: tuple[str, ...] = ()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env_var(self) -> str:
        return self.env or "DYN_" + self.name.upper()


def _ais(name: str) -> IgnoredFlag:
    return IgnoredFlag("ais_" + name, _AIS, env="DYN_AIS_" + name.upper(), aliases=("--aic-" + name.replace("_", "-"),))


IGNORED: tuple[IgnoredFlag, ...] = (
    IgnoredFlag("interactive", "no text REPL: use any OpenAI client against the HTTP port", boolean=True,
                aliases=("-i",)),
    IgnoredFlag("serve_indexer", "the KV index lives in shared memory inside this daemon", boolean=True),
    *(IgnoredFlag(f"tcp_tls_{part}", _TCP_TLS) for part in ("cert_path", "key_path", "ca_cert_path",
                                                            "client_cert_path", "client_key_path",
                                                            "client_ca_cert_path")),
    IgnoredFlag("nats_tls_ca_cert_path", _NATS, env="NATS_TLS_CA_CERT_PATH"),
    IgnoredFlag("nats_tls_insecure", _NATS, boolean=True, env="NATS_TLS_INSECURE"),
    IgnoredFlag("nats_tls_client_cert_path", _NATS, env="NATS_TLS_CLIENT_CERT_PATH"),
    IgnoredFlag("nats_tls_client_key_path", _NATS, env="NATS_TLS_CLIENT_KEY_PATH"),
    IgnoredFlag("enforce_disagg", "deprecated in Dynamo as well: " + _DISAGG, boolean=True),
    IgnoredFlag("router_min_initial_workers", "a model is served as soon as one of its workers registers"),
    IgnoredFlag("router_session_affinity_ttl_secs", "no session affinity"),
    IgnoredFlag("router_session_affinity_mode", "no session affinity"),
    IgnoredFlag("load_aware", "Dynamo's load-aware preset: use --router-mode least_loaded, or kv with "
                "--kv-overlap-score-weight 0", boolean=True, env="DYN_ROUTER_LOAD_AWARE"),
    *(IgnoredFlag(name, _COST) for name in ("router_kv_overlap_score_credit", "router_kv_overlap_score_credit_decay",
                                            "router_prefill_load_scale", "router_decode_active_request_weight",
                                            "router_host_cache_hit_weight", "router_disk_cache_hit_weight")),
    IgnoredFlag("router_replica_sync", "the HTTP processes of one daemon always share their routing load; there "
                "is no second frontend to sync with yet", boolean=True),
    *(IgnoredFlag(name, _TRACKING, boolean=True, aliases=(f"--{name[7:].replace('_', '-')}",))
      for name in ("router_track_active_blocks", "router_track_output_blocks", "router_assume_kv_reuse")),
    IgnoredFlag("router_track_prefill_tokens", _TRACKING, boolean=True),
    *(IgnoredFlag(name, "routing decisions carry no router-derived identities")
      for name in ("router_tracking_hash", "router_tracking_key_file", "router_tracking_key_id")),
    IgnoredFlag("router_prefill_load_model", _AIS),
    IgnoredFlag("router_approximate_cache_policy", "approximate mode (--no-kv-events) keeps prefixes for "
                "--router-ttl-s"),
    *(IgnoredFlag(name, _QUEUE) for name in ("router_queue_threshold", "router_queue_policy",
                                             "router_policy_config")),
    IgnoredFlag("router_conditional_disagg", _DISAGG, boolean=True),
    *(IgnoredFlag(name, _DISAGG) for name in ("router_conditional_disagg_config", "router_prefill_policy",
                                              "router_decode_policy")),
    IgnoredFlag("router_event_threads", "one indexer process applies every KV event"),
    IgnoredFlag("use_remote_indexer", "the KV index lives in shared memory inside this daemon", boolean=True),
    IgnoredFlag("enable_session_prefix_index", "no session prefix index", boolean=True),
    *(IgnoredFlag(name, "no external shared KV cache") for name in ("shared_cache_multiplier", "shared_cache_type")),
    _ais("perf_config"), _ais("backend"), _ais("system"), _ais("backend_version"), _ais("tp_size"),
    _ais("model_path"), _ais("moe_tp_size"), _ais("moe_ep_size"), _ais("attention_dp_size"), _ais("nextn"),
    _ais("nextn_accept_rates"), _ais("mtp_seed"),
    IgnoredFlag("grpc_metrics_port", "the gRPC server's metrics are on the HTTP port's /metrics"),
    IgnoredFlag("frontend_route_extension", "no route extensions", env="DYN_FRONTEND_ROUTE_EXTENSIONS"),
    *(IgnoredFlag(name, _PLANES) for name in ("request_plane", "response_plane", "event_plane")),
    IgnoredFlag("strip_anthropic_preamble", "the system prompt is passed as sent", boolean=True),
    IgnoredFlag("enable_streaming_tool_dispatch", "no early tool_call_dispatch events: tool calls stream as "
                "OpenAI deltas", boolean=True),
    IgnoredFlag("enable_streaming_reasoning_dispatch", "no reasoning_dispatch event: reasoning streams as "
                "reasoning_content deltas", boolean=True),
    IgnoredFlag("reasoning_field_name", "reasoning is always in reasoning_content"),
    IgnoredFlag("exclude_tools_when_tool_choice_none", "tool_choice none always leaves the tools out of the "
                "template", boolean=True),
    IgnoredFlag("dyn_chat_processor", "templates and parsers are this frontend's own", env="DYN_CHAT_PROCESSOR"),
    IgnoredFlag("dyn_debug_perf", "profile with py-spy instead", boolean=True, env="DYN_DEBUG_PERF"),
    IgnoredFlag("dyn_preprocess_workers", "use --tokenizer-workers", env="DYN_PREPROCESS_WORKERS"),
    IgnoredFlag("tokenizer", "tokenization is HuggingFace tokenizers"),
    IgnoredFlag("tokenizer_fallback", "tokenization is HuggingFace tokenizers", boolean=True),
    IgnoredFlag("trust_remote_code", "tokenizers load from tokenizer.json: no remote code runs", boolean=True),
)

_DEST_PREFIX = "dynamo_ignored__"


def add_ignored_flags(parser: argparse.ArgumentParser) -> None:
    """Add every ignored flag to ``parser``, in a ``--help`` group of its own that gives each one's reason."""
    group = parser.add_argument_group("NVIDIA Dynamo flags accepted and ignored (a warning names those given)")
    for flag in IGNORED:
        names = (flag.flag, *flag.aliases)
        help_text = f"Ignored: {flag.why}. [env {flag.env_var}]"
        dest = _DEST_PREFIX + flag.name
        if flag.boolean:
            group.add_argument(*names, dest=dest, action=argparse.BooleanOptionalAction, help=help_text)
        else:
            group.add_argument(*names, dest=dest, metavar="VALUE", help=help_text)


def pop_ignored(cli: dict[str, object]) -> list[str]:
    """Remove the ignored flags from parsed ``vars(namespace)``; the flags that were given."""
    given = [key for key in cli if key.startswith(_DEST_PREFIX)]
    for key in given:
        del cli[key]
    names = {key[len(_DEST_PREFIX):] for key in given}
    return [flag.flag for flag in IGNORED if flag.name in names]


def ignored_settings(given_flags: Sequence[str], environ: Mapping[str, str]) -> list[str]:
    """``"--flag (why)"`` for each ignored flag given on the command line or through its env var."""
    return [f"{flag.flag} ({flag.why})" for flag in IGNORED
            if flag.flag in given_flags or flag.env_var in environ]
