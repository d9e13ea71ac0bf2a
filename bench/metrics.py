"""Metrics with AIPerf's names and definitions (``docs/BENCHMARKS.md`` maps them to vLLM's and GuideLLM's).

Per request (valid = no error; times from the request start, in ms):

* ``request_latency``: last content chunk (or the unary response) - start
* ``time_to_first_token``: first content chunk - start                          (streaming)
* ``time_to_second_token``: second content chunk - first content chunk          (streaming)
* ``inter_token_latency``: (request_latency - TTFT) / (OSL - 1), OSL >= 2        (streaming)
* ``inter_chunk_latency``: every gap between consecutive content chunks, pooled (streaming)
* ``output_token_throughput_per_user``: 1 / ITL in tokens/s                     (streaming)
* ``output_sequence_length`` / ``input_sequence_length``: tokens

Per run: ``benchmark_duration`` = last response - first request start (valid requests),
``request_throughput`` = valid requests / duration, ``output_token_throughput`` = total OSL / duration,
``goodput`` = requests meeting every ``--goodput`` SLO / duration, error counts by type, and for a
fixed-schedule replay ``replay_send_lag`` (actual - scheduled send time). Statistics are
avg/min/max/std (population) and linearly interpolated p1..p99, as AIPerf computes them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import msgspec
import numpy as np

from .records import RequestRecord

PERCENTILES = (1, 5, 10, 25, 50, 75, 90, 95, 99)
MS = 1e6  # ns per ms


class MetricResult(msgspec.Struct, omit_defaults=True):
    """One metric in ``profile_export.json``: a scalar has only unit and avg."""

    unit: str
    avg: float
    p1: float | None = None
    p5: float | None = None
    p10: float | None = None
    p25: float | None = None
    p50: float | None = None
    p75: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None
    min: float | None = None
    max: float | None = None
    std: float | None = None
    count: int | None = None
    sum: float | None = None


class MetricInfo(msgspec.Struct, frozen=True):
    header: str
    unit: str
    streaming_only: bool = False
    tokens_only: bool = False
    larger_is_better: bool = False


def latency(r: RequestRecord) -> float | None:
    return (r.chunk_ns[-1] - r.start_ns) / MS if r.chunk_ns else None


def ttft(r: RequestRecord) -> float | None:
    return (r.chunk_ns[0] - r.start_ns) / MS if r.chunk_ns else None


def ttst(r: RequestRecord) -> float | None:
    return (r.chunk_ns[1] - r.chunk_ns[0]) / MS if len(r.chunk_ns) >= 2 else None


def itl(r: RequestRecord) -> float | None:
    osl = r.output_tokens
    if not r.chunk_ns or osl is None or osl < 2:
        return None
    return (r.chunk_ns[-1] - r.chunk_ns[0]) / MS / (osl - 1)


def icl(r: RequestRecord) -> list[float] | None:
    if len(r.chunk_ns) < 2:
        return None
    return (np.diff(np.asarray(r.chunk_ns, dtype=np.int64)) / MS).tolist()


def tps_per_user(r: RequestRecord) -> float | None:
    value = itl(r)
    return 1000.0 / value if value else None


def osl(r: RequestRecord) -> float | None:
    return r.output_tokens


def isl(r: RequestRecord) -> float | None:
    return r.input_tokens


RECORD_METRICS: dict[str, tuple[MetricInfo, Callable[[RequestRecord], object]]] = {
    "request_latency": (MetricInfo("Request Latency", "ms"), latency),
    "time_to_first_token": (MetricInfo("Time to First Token", "ms", streaming_only=True), ttft),
    "time_to_second_token": (MetricInfo("Time to Second Token", "ms", streaming_only=True), ttst),
    "inter_token_latency": (MetricInfo("Inter Token Latency", "ms", streaming_only=True, tokens_only=True), itl),
    "inter_chunk_latency": (MetricInfo("Inter Chunk Latency", "ms", streaming_only=True), icl),
    "output_token_throughput_per_user": (
        MetricInfo("Output Token Throughput Per User", "tokens/sec/user", streaming_only=True, tokens_only=True,
                   larger_is_better=True), tps_per_user),
    "output_sequence_length": (MetricInfo("Output Sequence Length", "tokens", tokens_only=True), osl),
    "input_sequence_length": (MetricInfo("Input Sequence Length", "tokens"), isl),
}
GOODPUT_TAGS = {tag for tag in RECORD_METRICS if tag != "inter_chunk_latency"}


def applicable(streaming: bool, produces_tokens: bool) -> list[str]:
    """The per-request metric tags that make sense for this endpoint type and mode."""
    return [tag for tag, (info, _) in RECORD_METRICS.items()
            if (streaming or not info.streaming_only) and (produces_tokens or not info.tokens_only)]


def record_values(record: RequestRecord, tags: list[str]) -> dict[str, object]:
    """The per-request metric values of a valid record (metrics without a value are left out)."""
    values = {}
    for tag in tags:
        value = RECORD_METRICS[tag][1](record)
        if value is not None:
            values[tag] = value
    return values


def stats(values: list[float] | np.ndarray, unit: str) -> MetricResult:
    """avg/min/max/population std/count/sum and linear-interpolation percentiles (as numpy and AIPerf)."""
    array = np.asarray(values, dtype=np.float64)
    p = np.percentile(array, PERCENTILES)
    return MetricResult(
        unit=unit, avg=float(array.mean()), p1=float(p[0]), p5=float(p[1]), p10=float(p[2]), p25=float(p[3]),
        p50=float(p[4]), p75=float(p[5]), p90=float(p[6]), p95=float(p[7]), p99=float(p[8]),
        min=float(array.min()), max=float(array.max()), std=float(array.std()), count=int(array.size),
        sum=float(array.sum()))


def is_good(values: dict[str, object], slos: dict[str, float]) -> bool:
    """A request meets every SLO (``<=``, or ``>=`` for larger-is-better metrics); a missing value fails."""
    for tag, threshold in slos.items():
        value = values.get(tag)
        if value is None:
            return False
        larger = RECORD_METRICS[tag][0].larger_is_better
        if (value < threshold) if larger else (value > threshold):  # type: ignore[operator]
            return False
    return True


def duration_s(valid: list[RequestRecord]) -> float:
    """First request start to last response of the valid requests, in seconds."""
    start = min(r.start_ns for r in valid)
    end = max(r.chunk_ns[-1] for r in valid)
    return (end - start) / 1e9


class Summary(msgspec.Struct):
    """Everything computed from a run's records."""

    metrics: dict[str, MetricResult]
    per_request: list[dict[str, object]]        # metric values per valid record, in record order
    error_summary: list[dict[str, object]]
    error_counts: dict[str, int]
    cancelled: int


def summarize(records: list[RequestRecord], streaming: bool, produces_tokens: bool,
              slos: dict[str, float]) -> Summary:
    """All metrics of a run (records need their token counts finalized first)."""
    tags = applicable(streaming, produces_tokens)
    cancelled = sum(1 for r in records if r.error_type == "cancelled")
    errors = [r for r in records if not r.ok and r.error_type != "cancelled"]
    valid = [r for r in records if r.ok and r.chunk_ns]
    per_request = [record_values(r, tags) for r in valid]
    metrics: dict[str, MetricResult] = {}
    for tag in tags:
        unit = RECORD_METRICS[tag][0].unit
        column = [v[tag] for v in per_request if tag in v]
        flat = [x for chunk in column for x in chunk] if tag == "inter_chunk_latency" else column
        if flat:
            metrics[tag] = stats(flat, unit)  # type: ignore[arg-type]
    metrics.update(run_metrics(valid, per_request, errors, produces_tokens, slos))
    lags = [(r.start_ns - r.scheduled_ns) / MS for r in records if r.scheduled_ns is not None and r.start_ns]
    if lags:
        metrics["replay_send_lag"] = stats(lags, "ms")
    return Summary(metrics=metrics, per_request=per_request, error_summary=error_summary(errors),
                   error_counts=dict(Counter(r.error_type for r in errors)), cancelled=cancelled)


def run_metrics(valid: list[RequestRecord], per_request: list[dict[str, object]], errors: list[RequestRecord],
                produces_tokens: bool, slos: dict[str, float]) -> dict[str, MetricResult]:
    """Counts, duration and throughputs."""
    out = {"request_count": MetricResult(unit="requests", avg=float(len(valid))),
           "error_request_count": MetricResult(unit="requests", avg=float(len(errors)))}
    if not valid:
        return out
    seconds = duration_s(valid)
    total_isl = float(sum(r.input_tokens for r in valid))
    out["benchmark_duration"] = MetricResult(unit="sec", avg=seconds)
    out["total_isl"] = MetricResult(unit="tokens", avg=total_isl)
    if seconds > 0:
        out["request_throughput"] = MetricResult(unit="requests/sec", avg=len(valid) / seconds)
    if produces_tokens:
        total_osl = float(sum(r.output_tokens or 0 for r in valid))
        out["total_output_tokens"] = MetricResult(unit="tokens", avg=total_osl)
        out["total_osl"] = MetricResult(unit="tokens", avg=total_osl)
        if seconds > 0:
            out["output_token_throughput"] = MetricResult(unit="tokens/sec", avg=total_osl / seconds)
            out["total_token_throughput"] = MetricResult(unit="tokens/sec", avg=(total_isl + total_osl) / seconds)
    if slos:
        good = sum(1 for values in per_request if is_good(values, slos))
        out["good_request_count"] = MetricResult(unit="requests", avg=float(good))
        if seconds > 0:
            out["goodput"] = MetricResult(unit="requests/sec", avg=good / seconds)
    return out


def error_summary(errors: list[RequestRecord]) -> list[dict[str, object]]:
    """AIPerf's ``error_summary``: distinct (code, type, message) with counts, most frequent first."""
    counts = Counter((r.status or None, r.error_type, r.error_message or "") for r in errors)
    return [{"error_details": {"code": code, "type": kind, "message": message}, "count": count}
            for (code, kind, message), count in counts.most_common()]
