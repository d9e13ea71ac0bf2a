"""The console table printed at the end of a run (AIPerf's layout: one row per metric, stats as columns)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from .metrics import RECORD_METRICS, MetricResult, Summary

STAT_COLUMNS = ("avg", "min", "max", "p99", "p90", "p50", "std")
SCALARS = {
    "output_token_throughput": "Output Token Throughput",
    "total_token_throughput": "Total Token Throughput",
    "request_throughput": "Request Throughput",
    "goodput": "Goodput",
    "request_count": "Request Count",
    "error_request_count": "Error Request Count",
    "benchmark_duration": "Benchmark Duration",
}
EXTRA_DISTRIBUTIONS = {"replay_send_lag": "Replay Send Lag"}
FILE_WIDTH = 160  # columns when the output is not a terminal (CI logs, pipes)


def make_console() -> Console:
    """A console that does not squeeze tables to 80 columns when writing to a file or pipe."""
    console = Console()
    return console if console.is_terminal else Console(width=FILE_WIDTH)


def cell(value: float | None) -> str:
    return "N/A" if value is None else f"{value:,.2f}"


def metrics_table(metrics: dict[str, MetricResult], title: str) -> Table:
    """A rich table of every distribution, then every scalar, that the run has."""
    table = Table(title=title, title_style="bold")
    table.add_column("Metric", justify="right", style="cyan")
    for column in STAT_COLUMNS:
        table.add_column(column, justify="right")
    headers = {tag: info.header for tag, (info, _) in RECORD_METRICS.items()} | EXTRA_DISTRIBUTIONS
    for tag, header in headers.items():
        if tag in metrics:
            result = metrics[tag]
            table.add_row(f"{header} ({result.unit})", *(cell(getattr(result, c)) for c in STAT_COLUMNS))
    for tag, header in SCALARS.items():
        if tag in metrics:
            result = metrics[tag]
            table.add_row(f"{header} ({result.unit})", cell(result.avg), *("N/A" for _ in STAT_COLUMNS[1:]))
    return table


def print_summary(summary: Summary, title: str, console: Console | None = None) -> None:
    """Print the metrics table and the errors by type."""
    console = console or make_console()
    console.print(metrics_table(summary.metrics, title))
    for entry in summary.error_summary[:10]:
        details = entry["error_details"]
        console.print(f"[red]{entry['count']} x {details['type']}[/red] {details['message']}")  # type: ignore[index]
    if summary.cancelled:
        console.print(f"{summary.cancelled} requests still in flight after the grace period were cancelled")
