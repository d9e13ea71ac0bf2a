"""PNG plots of a profile run (matplotlib, Agg backend: no display needed).

* ``ttft_distribution.png``: histogram of time to first token;
* ``itl_distribution.png``: histograms of inter-token latency (per request) and inter-chunk latency (gaps);
* ``throughput_over_time.png``: output tokens/s and finished requests/s in time buckets (a chunk's tokens are
  its request's OSL spread evenly over the request's content chunks);
* ``latency_over_time.png``: request latency and TTFT of each request against its start time.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402

from .metrics import MS, Summary  # noqa: E402
from .records import RequestRecord  # noqa: E402

DPI = 110
TARGET_BUCKETS = 40
MIN_BUCKET_S = 0.5


def _save(figure: plt.Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    return path


def histogram(path: Path, series: dict[str, list[float]], title: str, xlabel: str) -> Path:
    """One histogram panel per non-empty series, side by side."""
    shown = {name: values for name, values in series.items() if values}
    figure, axes = plt.subplots(1, max(1, len(shown)), figsize=(5.5 * max(1, len(shown)), 4), squeeze=False)
    for axis, (name, values) in zip(axes[0], shown.items()):
        axis.hist(values, bins=min(60, max(10, len(values) // 4)), color="tab:blue", alpha=0.8)
        p50, p99 = np.percentile(values, [50, 99])
        axis.axvline(p50, color="black", linestyle="--", label=f"p50 {p50:.2f}")
        axis.axvline(p99, color="tab:red", linestyle=":", label=f"p99 {p99:.2f}")
        axis.set(title=name, xlabel=xlabel, ylabel="count")
        axis.legend()
    figure.suptitle(title)
    return _save(figure, path)


def bucket_seconds(span_s: float) -> float:
    return max(MIN_BUCKET_S, span_s / TARGET_BUCKETS)


def throughput_series(records: list[RequestRecord], origin_ns: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bucket start s, output tokens/s, finished requests/s) over the run."""
    valid = [r for r in records if r.ok and r.chunk_ns]
    ends = np.array([(r.chunk_ns[-1] - origin_ns) / 1e9 for r in valid])
    span = float(ends.max()) if ends.size else 1.0
    width = bucket_seconds(span)
    edges = np.arange(0.0, span + width, width)
    chunk_times = [(t - origin_ns) / 1e9 for r in valid for t in r.chunk_ns]
    chunk_tokens = [(r.output_tokens or 0) / len(r.chunk_ns) for r in valid for _ in r.chunk_ns]
    tokens, _ = np.histogram(chunk_times, bins=edges, weights=chunk_tokens)
    finished, _ = np.histogram(ends, bins=edges)
    return edges[:-1], tokens / width, finished / width


def throughput_plot(path: Path, records: list[RequestRecord], origin_ns: int) -> Path:
    starts, tokens, requests = throughput_series(records, origin_ns)
    figure, token_axis = plt.subplots(figsize=(9, 4))
    token_axis.step(starts, tokens, where="post", color="tab:blue", label="output tokens/s")
    token_axis.set(xlabel="seconds from the first request", ylabel="output tokens/s", title="Throughput over time")
    request_axis = token_axis.twinx()
    request_axis.step(starts, requests, where="post", color="tab:orange", label="requests/s")
    request_axis.set_ylabel("finished requests/s")
    handles = token_axis.get_legend_handles_labels()[0] + request_axis.get_legend_handles_labels()[0]
    token_axis.legend(handles=handles, loc="lower right")
    return _save(figure, path)


def latency_plot(path: Path, records: list[RequestRecord], origin_ns: int, streaming: bool) -> Path:
    valid = [r for r in records if r.ok and r.chunk_ns]
    starts = [(r.start_ns - origin_ns) / 1e9 for r in valid]
    figure, axis = plt.subplots(figsize=(9, 4))
    axis.scatter(starts, [(r.chunk_ns[-1] - r.start_ns) / MS for r in valid], s=8, label="request latency")
    if streaming:
        axis.scatter(starts, [(r.chunk_ns[0] - r.start_ns) / MS for r in valid], s=8, label="TTFT")
    axis.set(xlabel="request start (s from the first request)", ylabel="ms", title="Latency over time")
    axis.legend()
    return _save(figure, path)


def write_plots(directory: Path, records: list[RequestRecord], summary: Summary, streaming: bool) -> list[Path]:
    """Write every plot that has data; returns the files written."""
    valid = [r for r in records if r.ok and r.chunk_ns]
    if not valid:
        return []
    origin = min(r.start_ns for r in valid)
    def column(tag: str) -> list:
        return [values[tag] for values in summary.per_request if tag in values]

    written = []
    if streaming:
        written.append(histogram(directory / "ttft_distribution.png",
                                 {"time to first token": column("time_to_first_token")}, "TTFT", "ms"))
        chunks = [gap for gaps in column("inter_chunk_latency") for gap in gaps]  # type: ignore[union-attr]
        written.append(histogram(directory / "itl_distribution.png",
                                 {"inter-token latency (per request)": column("inter_token_latency"),
                                  "inter-chunk latency (every gap)": chunks}, "ITL and ICL", "ms"))
    written.append(throughput_plot(directory / "throughput_over_time.png", records, origin))
    written.append(latency_plot(directory / "latency_over_time.png", records, origin, streaming))
    return written
