"""The settings of one profile run, and the parsers for the flag values that are not plain numbers."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

ENDPOINT_PATHS = {
    "chat": "/v1/chat/completions",
    "completions": "/v1/completions",
    "embeddings": "/v1/embeddings",
}
RATE_MODES = ("poisson", "constant")


class ProfileConfig(msgspec.Struct, kw_only=True):
    """Everything ``python -m bench profile`` was asked to do (written to the export as ``input_config``)."""

    url: str = "http://127.0.0.1:8000"
    model: str
    endpoint_type: str = "chat"
    endpoint: str | None = None            # path override; default from ENDPOINT_PATHS
    streaming: bool = False
    concurrency: int | None = None
    request_rate: float | None = None
    request_rate_mode: str = "poisson"
    request_count: int | None = None
    benchmark_duration: float | None = None
    benchmark_grace_period: float = 30.0
    warmup_request_count: int = 0
    request_timeout: float = 600.0
    isl: int = 550
    isl_stddev: float = 0.0
    osl: int | None = None
    osl_stddev: float = 0.0
    ignore_eos: bool = True
    tokenizer: str | None = None
    prompt_corpus: str | None = None
    random_seed: int = 0
    num_dataset_entries: int = 100
    num_sessions: int | None = None
    session_turns: int = 1
    shared_prefix_length: int = 0
    input_file: str | None = None
    fixed_schedule: bool = False
    trace_block_size: int = 512
    artifact_dir: str = "artifacts/bench"
    goodput: dict[str, float] = {}
    extra_inputs: dict[str, object] = {}
    headers: dict[str, str] = {}
    workers: int = 1
    plots: bool = True
    progress: bool = True

    @property
    def path(self) -> str:
        return self.endpoint or ENDPOINT_PATHS[self.endpoint_type]

    @property
    def target(self) -> str:
        return self.url.rstrip("/") + self.path

    @property
    def produces_tokens(self) -> bool:
        return self.endpoint_type != "embeddings"

    @property
    def artifact_path(self) -> Path:
        return Path(self.artifact_dir)


def validate(config: ProfileConfig) -> None:
    """Raise ValueError for settings that contradict each other."""
    if config.endpoint_type not in ENDPOINT_PATHS:
        raise ValueError(f"--endpoint-type must be one of {', '.join(ENDPOINT_PATHS)}")
    if config.request_rate_mode not in RATE_MODES:
        raise ValueError(f"--request-rate-mode must be one of {', '.join(RATE_MODES)}")
    if config.fixed_schedule and not config.input_file:
        raise ValueError("--fixed-schedule replays a trace: give --input-file")
    if config.streaming and config.endpoint_type == "embeddings":
        raise ValueError("embeddings do not stream: drop --streaming")
    if config.request_rate is not None and config.request_rate <= 0:
        raise ValueError("--request-rate must be > 0")
    if config.concurrency is not None and config.concurrency < 1:
        raise ValueError("--concurrency must be >= 1")
    if config.workers < 1:
        raise ValueError("--workers must be >= 1")
    if config.concurrency is not None and config.concurrency < config.workers and not config.fixed_schedule:
        raise ValueError("--concurrency must be at least --workers (each client process needs a share)")
    if config.request_count is not None and config.request_count < 1:
        raise ValueError("--request-count must be >= 1")
    if config.isl < 1 or (config.osl is not None and config.osl < 1):
        raise ValueError("--isl and --osl must be >= 1")
    if config.session_turns < 1:
        raise ValueError("--session-turns must be >= 1")


def parse_pairs(items: list[str], what: str) -> dict[str, str]:
    """``["a:1", "b:x:y"]`` -> ``{"a": "1", "b": "x:y"}`` (split at the first colon)."""
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition(":")
        if not sep or not key.strip():
            raise ValueError(f"{what} must look like key:value, got {item!r}")
        pairs[key.strip()] = value.strip()
    return pairs


def parse_extra_inputs(items: list[str]) -> dict[str, object]:
    """``--extra-inputs`` values: JSON when the value parses as JSON (numbers, true, objects), else a string."""
    parsed: dict[str, object] = {}
    for key, value in parse_pairs(items, "--extra-inputs").items():
        try:
            parsed[key] = json.loads(value)
        except json.JSONDecodeError:
            parsed[key] = value
    return parsed


def parse_goodput(spec: str | None, known: set[str]) -> dict[str, float]:
    """``"time_to_first_token:200 inter_token_latency:20"`` -> SLO thresholds in the metrics' display units."""
    if not spec:
        return {}
    slos = {}
    for tag, value in parse_pairs(spec.split(), "--goodput").items():
        if tag not in known:
            raise ValueError(f"--goodput: unknown metric {tag!r}; use one of {', '.join(sorted(known))}")
        try:
            slos[tag] = float(value)
        except ValueError:
            raise ValueError(f"--goodput: {tag} needs a number, got {value!r}") from None
    return slos
