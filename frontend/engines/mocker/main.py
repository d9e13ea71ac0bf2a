"""``python -m frontend.mocker``: a mock-engine worker that registers with a frontend and serves requests.

Every flag has an env var ``DYN_MOCKER_<FLAG>``; flags win.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

import uvloop
import zmq

from ...config.options import BUNDLED_MODEL_PATH, Option, one_of
from ...protocol.registry import DISAGGREGATION_MODES, ModelCard
from ...tokenizer.hub_files import ModelFilesUnavailable, local_model_dir
from ...tokenizer.model_files import context_length, load_tokenizer
from ...worker import RegistrationError, WorkerRuntime
from ...worker.cli import RUNTIME_FLAGS, add_flags, runtime_kwargs, start_worker_process, worker_flags
from ...worker.kv_publisher import KvEventPublisher
from ...worker.load_publisher import LoadPublisher
from .corpus import Corpus
from .engine import EngineSettings, MockEngine
from .modalities import MockWorker, parse_model_types
from .script import Script

log = logging.getLogger("frontend.mocker")

FLAGS = worker_flags(
    "DYN_MOCKER_",
    Option("model_path", str, os.path.normpath(BUNDLED_MODEL_PATH), "Model directory (tokenizer + config, no "
           "weights), or a Hugging Face repository id whose small files come from the hub cache (HF_HOME, "
           "HF_HUB_OFFLINE); the card advertises the id, as a vLLM worker's does."),
    Option("model_name", str, "", "Name to serve the model under (default: the directory name, or the "
           "repository id)."),
    Option("registry_endpoint", str, "tcp://127.0.0.1:5570", "The frontend's registry (ZeroMQ endpoint)."),
    Option("namespace", str, "dynamo", "Namespace to register in."),
    *RUNTIME_FLAGS,
    Option("host", str, "127.0.0.1", "Address the request-plane and KV-event sockets bind to."),
    Option("speedup_ratio", float, 1.0, "Divides simulated prefill/decode time (1e6 = no delay)."),
    Option("max_num_seqs", int, 256, "Requests decoded together in one step."),
    Option("max_num_batched_tokens", int, 8192, "Token budget of one step (decode tokens + prefill chunks)."),
    Option("block_size", int, 16, "KV cache block size in tokens (also --kv-block-size).",
           flag_aliases=("--kv-block-size",)),
    Option("num_gpu_blocks", int, 65536, "KV cache capacity in blocks (the default holds 1 Mi tokens at the default "
           "block size, as Dynamo's mocker's 16384 blocks of 64: decode time grows with the share in use)."),
    Option("kv_events", str, "array", "Publish KV events: array | map (vLLM's two encodings) | off.",
           validate=one_of("array", "map", "off")),
    Option("context_length", int, 0, "Context window (0 = from config.json)."),
    Option("log_level", str, "warning", "debug | info | warning | error."),
    Option("log_format", str, "text", "text | json."),
    Option("tool_call_parser", str, "", "Tool-call parser named in the model card (e.g. hermes).",
           flag_aliases=("--dyn-tool-call-parser",)),
    Option("reasoning_parser", str, "", "Reasoning parser named in the model card (e.g. qwen3).",
           flag_aliases=("--dyn-reasoning-parser",)),
    Option("script", str, "", "JSON file of scripted answers, [{match, output}] (for tests; "
           "frontend/engines/mocker/script.py)."),
    Option("model_types", str, "chat,completions", "Model types to serve, comma-separated: chat, completions, "
           "embedding, images, videos (frontend/engines/mocker/modalities.py)."),
    Option("embedding_dim", int, 384, "Length of the mock embedding vectors."),
    Option("disaggregation_mode", str, "agg", "The worker's role in disaggregated serving: agg (whole requests) | "
           "prefill (only prefill legs: their KV is kept for a decode worker) | decode (decode legs, whose prompt "
           "KV is transferred, and whole requests).", validate=one_of(*DISAGGREGATION_MODES)),
    Option("kv_transfer_bandwidth", float, 64.0, "GB/s at which a decode worker receives a prompt's KV from a "
           "prefill worker (simulated transfer time).", validate=lambda gbps: None if gbps > 0 else "must be > 0"),
    Option("kv_bytes_per_token", int, 131072, "KV bytes of one token, for the simulated transfer time.",
           validate=lambda size: None if size >= 0 else "must be >= 0"),
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m frontend.mocker", description=__doc__)
    add_flags(parser, FLAGS)
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    """Build the engine, register the model and serve until SIGTERM/SIGINT."""
    # a directory here (advertised by its absolute path), or a hub repository id (advertised as it is, as vLLM
    # takes one; the files come from the Hugging Face cache or hub)
    advertised = os.path.abspath(args.model_path) if os.path.isdir(args.model_path) else args.model_path
    try:
        model_path = local_model_dir(advertised, args.model_name or advertised)
    except ModelFilesUnavailable as exc:
        raise SystemExit(str(exc)) from None
    try:
        model_types = parse_model_types(args.model_types)
    except ValueError as exc:
        raise SystemExit(f"--model-types: {exc}") from None
    tokenizer = load_tokenizer(model_path)
    settings = EngineSettings(args.speedup_ratio, args.max_num_seqs, args.max_num_batched_tokens,
                              args.num_gpu_blocks, args.block_size, args.kv_bytes_per_token, args.kv_transfer_bandwidth)
    publisher = None
    context = zmq.Context.instance()  # one context for the publishers and the worker runtime
    if args.kv_events != "off":
        publisher = KvEventPublisher(context, host=args.host, encoding=args.kv_events)
        publisher.attach(asyncio.get_running_loop())
    script = Script.from_file(args.script, tokenizer) if args.script else None
    load = LoadPublisher(context, host=args.host)
    load.start(asyncio.get_running_loop())
    engine = MockEngine(Corpus(tokenizer), settings, publisher, script, load)
    worker = MockWorker(engine, model_types, args.speedup_ratio, args.embedding_dim)
    runtime = WorkerRuntime(worker, registry_endpoint=args.registry_endpoint, namespace=args.namespace,
                            host=args.host, context=context, **runtime_kwargs(args))
    runtime_config = {"total_kv_blocks": args.num_gpu_blocks, "max_num_seqs": args.max_num_seqs,
                      "max_num_batched_tokens": args.max_num_batched_tokens, **load.runtime_config_entries()}
    if publisher is not None:
        runtime_config.update(publisher.runtime_config_entries())
    for key in ("tool_call_parser", "reasoning_parser"):  # as Dynamo's --dyn-tool-call-parser does
        if getattr(args, key):
            runtime_config[key] = getattr(args, key)
    card = ModelCard(
        name=args.model_name or (os.path.basename(advertised.rstrip("/")) if os.path.isdir(advertised) else advertised),
        model_path=advertised,
        model_types=model_types,
        context_length=args.context_length or context_length(model_path),
        kv_block_size=args.block_size,
        runtime_config=runtime_config,
        disaggregation_mode=args.disaggregation_mode,
    )
    scheduler = asyncio.create_task(engine.run())
    try:
        await runtime.serve(card)
    finally:
        scheduler.cancel()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start_worker_process("dyn-mocker", "mocker", args.log_level, args.log_format, args.exit_with_parent)
    try:
        uvloop.run(serve(args))
    except RegistrationError as exc:
        log.error("registration failed", extra={"error": str(exc)})
        print(f"mocker: {exc}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
