"""``python -m bench profile`` end to end: workload, warm-up, load, metrics, files, plots, console table."""

from __future__ import annotations

import time
from pathlib import Path

import msgspec
from rich.console import Console

from . import export, plots, report, workloads
from .config import ProfileConfig, validate
from .metrics import Summary, summarize
from .prompts import PromptText, TextTokenizer, resolve_tokenizer_dir
from .records import finalize_token_counts
from .report import make_console
from .runner import ProcessResult, run_phase

CLIENT_BUSY_WARNING = 0.9  # a client process this busy may have delayed requests or reads


class ProfileResult(msgspec.Struct):
    """What a profile run produced."""

    summary: Summary
    files: dict[str, Path]
    client: export.ClientStats


def client_stats(results: list[ProcessResult]) -> export.ClientStats:
    return export.ClientStats(processes=len(results), cpu_seconds=[r.cpu_seconds for r in results],
                              wall_seconds=max(r.wall_seconds for r in results))


def profile(config: ProfileConfig, console: Console | None = None) -> ProfileResult:
    """Run one profile as configured and write its artifacts; returns the summary and file paths."""
    validate(config)
    console = console or make_console()
    tokenizer = TextTokenizer(resolve_tokenizer_dir(config.tokenizer))
    prompts = PromptText.from_files(tokenizer, config.prompt_corpus)
    workload = workloads.build(prompts, config)
    if config.warmup_request_count > 0:
        run_phase(config, workloads.build(prompts, config, warmup=True), "warmup")
    start_epoch = time.time_ns()
    results = run_phase(config, workload, "profiling")
    end_epoch = time.time_ns()
    records = [record for result in results for record in result.records]
    finalize_token_counts(records, workload.turn_inputs(), tokenizer.count)
    summary = summarize(records, config.streaming, config.produces_tokens, config.goodput)
    client = client_stats(results)
    directory = config.artifact_path
    files = export.write_all(directory, config, records, summary, client, start_epoch, end_epoch)
    if config.plots:
        for path in plots.write_plots(directory, records, summary, config.streaming):
            files[path.stem] = path
    report.print_summary(summary, f"bench profile | {config.endpoint_type} | {config.url}", console)
    if client.busiest_utilization > CLIENT_BUSY_WARNING:
        console.print(f"[yellow]a client process was {client.busiest_utilization:.0%} busy: the client may have "
                      "limited this run; add --workers[/yellow]")
    console.print(f"Artifacts: {directory}")
    return ProfileResult(summary=summary, files=files, client=client)
