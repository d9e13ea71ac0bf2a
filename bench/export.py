"""Files a profile run writes into its artifact directory.

* ``profile_export.json``: the same top-level metric keys and stat fields as AIPerf's
  ``profile_export_aiperf.json`` (``time_to_first_token: {unit, avg, p1, ..., p99, min, max, std, count,
  sum}``; scalars as ``{unit, avg}``), plus ``error_summary``, ``input_config``, ``start_time``/``end_time``
  and ``client`` (processes and their CPU use);
* ``profile_export.jsonl``: one line per request, AIPerf-style ``{"metadata", "metrics", "error"}``;
* ``profile_export.csv``: one row per request (times in ms from the first request start).
"""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from .config import ProfileConfig
from .metrics import MS, RECORD_METRICS, Summary, applicable, record_values
from .records import RequestRecord

JSON_NAME = "profile_export.json"
JSONL_NAME = "profile_export.jsonl"
CSV_NAME = "profile_export.csv"
SCHEMA_VERSION = "1.4"  # the AIPerf export schema whose keys this file follows


class ClientStats(msgspec.Struct):
    """CPU use of the client processes over the profiling phase (to see whether the client kept up)."""

    processes: int
    cpu_seconds: list[float]
    wall_seconds: float

    @property
    def busiest_utilization(self) -> float:
        return max(self.cpu_seconds) / self.wall_seconds if self.wall_seconds > 0 else 0.0


def iso(epoch_ns: int) -> str:
    return datetime.fromtimestamp(epoch_ns / 1e9, tz=UTC).isoformat()


def profile_json(config: ProfileConfig, summary: Summary, client: ClientStats, start_epoch_ns: int,
                 end_epoch_ns: int) -> dict[str, object]:
    """The ``profile_export.json`` document."""
    document: dict[str, object] = {"schema_version": SCHEMA_VERSION, "generator": "python -m bench"}
    document.update({tag: msgspec.to_builtins(result) for tag, result in summary.metrics.items()})
    document.update({
        "error_summary": summary.error_summary,
        "error_counts_by_type": summary.error_counts,
        "cancelled_request_count": summary.cancelled,
        "input_config": msgspec.to_builtins(config),
        "client": {"processes": client.processes, "cpu_seconds": client.cpu_seconds,
                   "wall_seconds": client.wall_seconds, "busiest_cpu_utilization": client.busiest_utilization},
        "start_time": iso(start_epoch_ns),
        "end_time": iso(end_epoch_ns),
        "was_cancelled": False,
        "is_complete": True,
    })
    return document


def write_json(path: Path, document: dict[str, object]) -> None:
    path.write_bytes(msgspec.json.format(msgspec.json.encode(document), indent=2) + b"\n")


def request_lines(records: list[RequestRecord], tags: list[str]) -> list[dict[str, object]]:
    """AIPerf-style per-request objects: metadata, metric values with units, and the error if any."""
    lines = []
    for record in records:
        values = record_values(record, tags) if record.ok and record.chunk_ns else {}
        lines.append({
            "metadata": {"index": record.index, "worker": record.worker, "session": record.session,
                         "turn": record.turn, "conversation": record.conversation,
                         "request_start_ns": record.start_ns, "request_end_ns": record.end_ns,
                         "scheduled_ns": record.scheduled_ns, "status": record.status,
                         "usage_prompt_tokens": record.usage_prompt_tokens,
                         "usage_completion_tokens": record.usage_completion_tokens},
            "metrics": {tag: {"value": value, "unit": RECORD_METRICS[tag][0].unit} for tag, value in values.items()},
            "error": None if record.ok else {"code": record.status or None, "type": record.error_type,
                                             "message": record.error_message},
        })
    return lines


CSV_COLUMNS = ["index", "worker", "session", "turn", "start_ms", "status", "error_type", "input_sequence_length",
               "output_sequence_length", "usage_prompt_tokens", "content_chunks", "request_latency",
               "time_to_first_token", "time_to_second_token", "inter_token_latency",
               "output_token_throughput_per_user", "replay_send_lag"]


def csv_rows(records: list[RequestRecord], tags: list[str]) -> list[dict[str, object]]:
    """One flat row per request (metric columns empty when they have no value)."""
    origin = min((r.start_ns for r in records), default=0)
    rows = []
    for record in records:
        values = record_values(record, tags) if record.ok and record.chunk_ns else {}
        row: dict[str, object] = {
            "index": record.index, "worker": record.worker, "session": record.session, "turn": record.turn,
            "start_ms": round((record.start_ns - origin) / MS, 3), "status": record.status,
            "error_type": record.error_type or "", "input_sequence_length": record.input_tokens,
            "output_sequence_length": record.output_tokens if record.output_tokens is not None else "",
            "usage_prompt_tokens": record.usage_prompt_tokens if record.usage_prompt_tokens is not None else "",
            "content_chunks": len(record.chunk_ns),
            "replay_send_lag": round((record.start_ns - record.scheduled_ns) / MS, 3)
            if record.scheduled_ns is not None else "",
        }
        for tag in ("request_latency", "time_to_first_token", "time_to_second_token", "inter_token_latency",
                    "output_token_throughput_per_user"):
            value = values.get(tag)
            row[tag] = round(value, 4) if isinstance(value, float) else ""
        rows.append(row)
    return rows


def write_all(directory: Path, config: ProfileConfig, records: list[RequestRecord], summary: Summary,
              client: ClientStats, start_epoch_ns: int, end_epoch_ns: int) -> dict[str, Path]:
    """Write the JSON, JSONL and CSV exports; returns their paths by kind."""
    directory.mkdir(parents=True, exist_ok=True)
    tags = applicable(config.streaming, config.produces_tokens)
    ordered = sorted(records, key=lambda r: (r.start_ns, r.worker, r.index))
    paths = {"json": directory / JSON_NAME, "jsonl": directory / JSONL_NAME, "csv": directory / CSV_NAME}
    write_json(paths["json"], profile_json(config, summary, client, start_epoch_ns, end_epoch_ns))
    encoder = msgspec.json.Encoder()
    with paths["jsonl"].open("wb") as out:
        for line in request_lines(ordered, tags):
            out.write(encoder.encode(line) + b"\n")
    with paths["csv"].open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(csv_rows(ordered, tags))
    return paths


def read_metrics(path: Path) -> dict[str, dict[str, object]]:
    """The metric entries (``{unit, avg, ...}`` objects) of a profile export, ours or AIPerf's."""
    document = msgspec.json.decode(path.read_bytes())
    return {key: value for key, value in document.items()
            if isinstance(value, dict) and "unit" in value and "avg" in value}


def find_export(directory: Path) -> Path:
    """The profile export JSON in an artifact directory (ours, else AIPerf's)."""
    for name in (JSON_NAME, "profile_export_aiperf.json"):
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(f"{directory}: no {JSON_NAME} or profile_export_aiperf.json")
