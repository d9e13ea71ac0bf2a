"""``python -m bench sweep``: one profile per concurrency (or request rate), one table, one curve.

Each point runs in ``<artifact-dir>/concurrency_<N>`` (or ``request_rate_<R>``) with every other flag as
given; the sweep writes ``sweep.csv``, ``sweep.json`` and ``sweep_curve.png`` (output token throughput
against TTFT, ITL and request latency percentiles, each point labelled with its load) into the artifact dir.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from .export import write_json  # noqa: E402
from .metrics import MetricResult  # noqa: E402
from .report import make_console  # noqa: E402

COLUMNS = [("output_token_throughput", "avg"), ("request_throughput", "avg"), ("time_to_first_token", "p50"),
           ("time_to_first_token", "p99"), ("inter_token_latency", "p50"), ("inter_token_latency", "p99"),
           ("request_latency", "p50"), ("request_latency", "p99"), ("goodput", "avg"),
           ("error_request_count", "avg")]


def parse_points(text: str, kind: type) -> list:
    try:
        points = [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"sweep values must be a comma list of numbers, got {text!r}") from None
    if not points:
        raise ValueError("give at least one sweep value")
    return points


def sweep_points(args: argparse.Namespace) -> tuple[str, list]:
    """("concurrency" | "request_rate", values) from the flags; exactly one of them must be a list."""
    if (args.concurrency is None) == (args.request_rate is None):
        raise ValueError("sweep needs exactly one of --concurrency LIST or --request-rate LIST")
    if args.concurrency is not None:
        return "concurrency", parse_points(args.concurrency, int)
    return "request_rate", parse_points(args.request_rate, float)


def row_of(load: str, point: float, metrics: dict[str, MetricResult]) -> dict[str, object]:
    row: dict[str, object] = {load: point}
    for tag, stat in COLUMNS:
        result = metrics.get(tag)
        row[f"{tag}.{stat}"] = getattr(result, stat) if result is not None else None
    return row


def curve_plot(path: Path, load: str, rows: list[dict[str, object]]) -> Path:
    """Latency percentiles against output token throughput, one marker per sweep point."""
    x = [row["output_token_throughput.avg"] or 0.0 for row in rows]
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for axis, tag in zip(axes, ("time_to_first_token", "inter_token_latency", "request_latency")):
        for stat, style in (("p50", "o-"), ("p99", "s--")):
            axis.plot(x, [row[f"{tag}.{stat}"] for row in rows], style, label=stat)
        for xi, row in zip(x, rows):
            axis.annotate(f"{row[load]:g}", (xi, row[f"{tag}.p50"] or 0), textcoords="offset points",
                          xytext=(4, 4), fontsize=8)
        axis.set(title=tag.replace("_", " "), xlabel="output tokens/s", ylabel="ms")
        axis.legend()
    figure.suptitle(f"throughput vs latency ({load.replace('_', ' ')} sweep)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def print_table(load: str, rows: list[dict[str, object]], console: Console) -> None:
    table = Table(title=f"sweep over {load}")
    for key in rows[0]:
        table.add_column(key.replace("_", " "), justify="right")
    for row in rows:
        table.add_row(*("N/A" if v is None else f"{v:,.2f}" if isinstance(v, float) else str(v)
                        for v in row.values()))
    console.print(table)


def sweep(args: argparse.Namespace) -> list[dict[str, object]]:
    """Run every sweep point, then write the table and curve; returns the table rows."""
    from .cli import config_from
    from .profiling import profile

    load, points = sweep_points(args)
    base = Path(args.artifact_dir)
    console = make_console()
    rows = []
    for point in points:
        directory = base / f"{load}_{point:g}"
        config = config_from(args, **{load: point, "artifact_dir": str(directory)})
        console.rule(f"{load} = {point:g}")
        rows.append(row_of(load, point, profile(config, console).summary.metrics))
    base.mkdir(parents=True, exist_ok=True)
    with (base / "sweep.csv").open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    write_json(base / "sweep.json", {"load": load, "points": rows})
    curve_plot(base / "sweep_curve.png", load, rows)
    print_table(load, rows, console)
    return rows
