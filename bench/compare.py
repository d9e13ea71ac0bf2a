"""``python -m bench compare DIR_A DIR_B ...``: several runs side by side (ours or AIPerf's exports).

Reads ``profile_export.json`` (or AIPerf's ``profile_export_aiperf.json``) from each directory, prints one
table with a column per run plus each run's difference from the first, and writes ``compare.csv`` and
``compare.png`` (grouped bars of the headline metrics) into ``--output``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from .export import find_export, read_metrics  # noqa: E402
from .report import make_console  # noqa: E402

ROWS = [("time_to_first_token", "avg"), ("time_to_first_token", "p50"), ("time_to_first_token", "p99"),
        ("time_to_second_token", "avg"), ("inter_token_latency", "avg"), ("inter_token_latency", "p50"),
        ("inter_token_latency", "p99"), ("inter_chunk_latency", "avg"), ("request_latency", "avg"),
        ("request_latency", "p99"), ("output_token_throughput_per_user", "avg"), ("output_sequence_length", "avg"),
        ("input_sequence_length", "avg"), ("request_throughput", "avg"), ("output_token_throughput", "avg"),
        ("goodput", "avg"), ("request_count", "avg"), ("error_request_count", "avg"),
        ("benchmark_duration", "avg")]
PLOTTED = [("time_to_first_token", "avg"), ("inter_token_latency", "avg"), ("request_latency", "avg"),
           ("request_throughput", "avg"), ("output_token_throughput", "avg")]


def value(metrics: dict[str, dict[str, object]], tag: str, stat: str) -> float | None:
    entry = metrics.get(tag)
    number = entry.get(stat) if entry else None
    return float(number) if isinstance(number, (int, float)) else None


def unit(runs: list[dict[str, dict[str, object]]], tag: str) -> str:
    return next((str(m[tag]["unit"]) for m in runs if tag in m), "")


def relative(a: float | None, b: float | None) -> str:
    if a is None or b is None or a == 0:
        return ""
    return f"{(b - a) / abs(a):+.1%}"


def table_rows(labels: list[str], runs: list[dict[str, dict[str, object]]]) -> list[dict[str, object]]:
    """One row per (metric, stat) present in any run: values per run and their change from the first."""
    rows = []
    for tag, stat in ROWS:
        values = [value(m, tag, stat) for m in runs]
        if all(v is None for v in values):
            continue
        row: dict[str, object] = {"metric": f"{tag} {stat} ({unit(runs, tag)})"}
        row.update({label: v for label, v in zip(labels, values)})
        row.update({f"{label} vs {labels[0]}": relative(values[0], v) for label, v in zip(labels[1:], values[1:])})
        rows.append(row)
    return rows


def bar_plot(path: Path, labels: list[str], runs: list[dict[str, dict[str, object]]]) -> Path:
    """One panel per headline metric, one bar per run."""
    figure, axes = plt.subplots(1, len(PLOTTED), figsize=(3.4 * len(PLOTTED), 4))
    positions = np.arange(len(labels))
    for axis, (tag, stat) in zip(axes, PLOTTED):
        heights = [value(m, tag, stat) or 0.0 for m in runs]
        axis.bar(positions, heights, color=plt.cm.tab10(positions % 10))
        axis.set_xticks(positions, labels, rotation=20, ha="right")
        axis.set_title(f"{tag.replace('_', ' ')}\n({unit(runs, tag)})", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def compare(dirs: list[Path], labels: list[str] | None, output: Path,
            console: Console | None = None) -> list[dict[str, object]]:
    """Print and write the comparison of the runs in ``dirs``; returns the table rows."""
    labels = labels or [d.name for d in dirs]
    if len(labels) != len(dirs):
        raise ValueError("--labels needs one name per directory")
    runs = [read_metrics(find_export(d)) for d in dirs]
    rows = table_rows(labels, runs)
    table = Table(title="bench compare")
    for key in rows[0] if rows else ["metric"]:
        table.add_column(key, justify="right")
    for row in rows:
        table.add_row(*(f"{v:,.2f}" if isinstance(v, float) else "N/A" if v is None else str(v)
                        for v in row.values()))
    (console or make_console()).print(table)
    output.mkdir(parents=True, exist_ok=True)
    with (output / "compare.csv").open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else ["metric"])
        writer.writeheader()
        writer.writerows(rows)
    bar_plot(output / "compare.png", labels, runs)
    return rows
