"""Command line: ``python -m bench profile | sweep | compare | soak`` (flag names follow AIPerf's)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import ENDPOINT_PATHS, RATE_MODES, ProfileConfig, parse_extra_inputs, parse_goodput, parse_pairs
from .metrics import GOODPUT_TAGS
from .soak import add_soak_parser

DESCRIPTION = "Load generator and benchmark for OpenAI-compatible inference servers (AIPerf-compatible flags)."


def add_endpoint_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("endpoint")
    group.add_argument("--url", "-u", default="http://127.0.0.1:8000", help="server base URL")
    group.add_argument("--model", "-m", required=True, help="model name sent in every request")
    group.add_argument("--endpoint-type", choices=list(ENDPOINT_PATHS), default="chat")
    group.add_argument("--endpoint", "--custom-endpoint", help="path override, e.g. /v2/chat")
    group.add_argument("--streaming", action="store_true", help="stream responses (needed for TTFT and ITL)")
    group.add_argument("--extra-inputs", action="append", default=[], metavar="KEY:VALUE",
                       help="extra body field (JSON value when it parses), repeatable")
    group.add_argument("--header", "-H", action="append", default=[], metavar="NAME:VALUE", help="HTTP header")
    group.add_argument("--request-timeout-seconds", type=float, default=600.0, dest="request_timeout")


def add_load_arguments(parser: argparse.ArgumentParser, sweep: bool) -> None:
    group = parser.add_argument_group("load")
    kind = str if sweep else None
    group.add_argument("--concurrency", type=kind or int,
                       help="comma list of concurrencies to sweep" if sweep else "requests in flight (closed loop)")
    group.add_argument("--request-rate", type=kind or float,
                       help="comma list of rates to sweep" if sweep else "requests/s (open loop)")
    group.add_argument("--request-rate-mode", "--arrival-pattern", choices=RATE_MODES, default="poisson")
    group.add_argument("--request-count", "--num-requests", type=int, help="requests to send (default 10)")
    group.add_argument("--benchmark-duration", type=float, help="seconds to keep sending")
    group.add_argument("--benchmark-grace-period", type=float, default=30.0,
                       help="seconds in-flight requests get after --benchmark-duration")
    group.add_argument("--warmup-request-count", "--num-warmup-requests", type=int, default=0)
    group.add_argument("--workers", type=int, default=1, help="client processes (each one asyncio loop)")


def add_workload_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("workload")
    group.add_argument("--isl", "--synthetic-input-tokens-mean", type=int, default=550)
    group.add_argument("--isl-stddev", "--synthetic-input-tokens-stddev", type=float, default=0.0)
    group.add_argument("--osl", "--output-tokens-mean", type=int,
                       help="max_tokens (with ignore_eos) of every request")
    group.add_argument("--osl-stddev", "--output-tokens-stddev", type=float, default=0.0)
    group.add_argument("--no-ignore-eos", action="store_true", help="do not send ignore_eos with max_tokens")
    group.add_argument("--tokenizer", help="local Hugging Face tokenizer dir, or 'qwen2.5' (built offline); "
                                           "default: the bundled config/models/tiny")
    group.add_argument("--prompt-corpus", help="text file prompts are cut from")
    group.add_argument("--random-seed", type=int, default=0)
    group.add_argument("--num-dataset-entries", "--num-prompts", type=int, default=100,
                       help="distinct prompts of a --benchmark-duration run")
    group.add_argument("--num-sessions", "--num-conversations", type=int, help="multi-turn sessions")
    group.add_argument("--session-turns", "--session-turns-mean", type=int, default=1)
    group.add_argument("--shared-prefix-length", "--shared-system-prompt-length", type=int, default=0,
                       help="tokens of the system prompt every request starts with")
    group.add_argument("--input-file", help="Mooncake-style JSONL trace to replay")
    group.add_argument("--custom-dataset-type", choices=["mooncake_trace"], default="mooncake_trace",
                       help="format of --input-file (only mooncake_trace; accepted for AIPerf compatibility)")
    group.add_argument("--fixed-schedule", action="store_true", help="send trace requests at their timestamps")
    group.add_argument("--trace-block-size", "--prompt-input-tokens-block-size", type=int, default=512)


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output")
    group.add_argument("--artifact-dir", "--output-artifact-dir", default="artifacts/bench")
    group.add_argument("--goodput", help='SLOs, e.g. "time_to_first_token:200 inter_token_latency:20" (ms)')
    group.add_argument("--no-plots", action="store_true")
    group.add_argument("--no-progress", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, sweep, text in (("profile", False, "run one benchmark"),
                              ("sweep", True, "run a concurrency or request-rate sweep")):
        sub = commands.add_parser(name, help=text, description=text)
        add_endpoint_arguments(sub)
        add_load_arguments(sub, sweep)
        add_workload_arguments(sub)
        add_output_arguments(sub)
    compare = commands.add_parser("compare", help="compare the exports of several runs (ours or AIPerf's)")
    compare.add_argument("dirs", nargs="+", type=Path, help="artifact directories")
    compare.add_argument("--labels", help="comma-separated names for the runs (default: directory names)")
    compare.add_argument("--output", type=Path, default=Path("artifacts/compare"), help="where to write")
    add_soak_parser(commands)
    return parser


def config_from(args: argparse.Namespace, **overrides: object) -> ProfileConfig:
    """The ProfileConfig the parsed flags describe (``overrides`` replace fields, for sweeps)."""
    fields = dict(
        url=args.url, model=args.model, endpoint_type=args.endpoint_type, endpoint=args.endpoint,
        streaming=args.streaming, concurrency=args.concurrency, request_rate=args.request_rate,
        request_rate_mode=args.request_rate_mode, request_count=args.request_count,
        benchmark_duration=args.benchmark_duration, benchmark_grace_period=args.benchmark_grace_period,
        warmup_request_count=args.warmup_request_count, request_timeout=args.request_timeout,
        isl=args.isl, isl_stddev=args.isl_stddev, osl=args.osl, osl_stddev=args.osl_stddev,
        ignore_eos=not args.no_ignore_eos, tokenizer=args.tokenizer, prompt_corpus=args.prompt_corpus,
        random_seed=args.random_seed, num_dataset_entries=args.num_dataset_entries, num_sessions=args.num_sessions,
        session_turns=args.session_turns, shared_prefix_length=args.shared_prefix_length,
        input_file=args.input_file, fixed_schedule=args.fixed_schedule, trace_block_size=args.trace_block_size,
        artifact_dir=args.artifact_dir, goodput=parse_goodput(args.goodput, GOODPUT_TAGS),
        extra_inputs=parse_extra_inputs(args.extra_inputs), headers=parse_pairs(args.header, "--header"),
        workers=args.workers, plots=not args.no_plots, progress=not args.no_progress)
    fields.update(overrides)
    return ProfileConfig(**fields)  # type: ignore[arg-type]


def run(args: argparse.Namespace) -> int:
    if args.command == "profile":
        from .profiling import profile

        profile(config_from(args))
        return 0
    if args.command == "sweep":
        from .sweep import sweep

        sweep(args)
        return 0
    if args.command == "soak":
        from .soak import soak

        return soak(args)
    from .compare import compare

    labels = args.labels.split(",") if args.labels else None
    compare(args.dirs, labels, args.output)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bench`` and the ``dyn-bench`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
