"""Start vLLM, describe it in a model card, serve it through the worker SDK until told to stop."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os

import vllm
import zmq
from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.v1.engine.async_llm import AsyncLLM

from ...protocol.errors import FrontendError
from ...protocol.registry import ModelCard
from ...worker import WorkerRuntime
from ...worker.cli import runtime_kwargs
from ...worker.load_publisher import LoadPublisher
from .disaggregation import configure_disaggregation
from .engine import LoadStatLogger, VllmEngine
from .kv_events import KvEventRelay

log = logging.getLogger(__name__)


class EngineStartError(FrontendError):
    """vLLM could not start (bad model directory, bad engine arguments, not enough memory ...)."""


async def serve(args: argparse.Namespace) -> bool:
    """Run the worker until SIGTERM/SIGINT or the engine's death; True when the engine died."""
    engine_args = AsyncEngineArgs.from_cli_args(args)
    if not os.path.isdir(engine_args.model):
        raise EngineStartError(f"--model {engine_args.model!r} is not a directory: the frontend reads the "
                               f"model's tokenizer and chat template from the same path")
    configure_disaggregation(engine_args, args.disaggregation_mode, args.host)
    relay = KvEventRelay(args.host) if args.kv_events == "on" and engine_args.kv_events_config is None else None
    if relay is not None:
        engine_args.kv_events_config = relay.vllm_config()
    context = zmq.Context.instance()  # one context for the load publisher and the worker runtime
    load = LoadPublisher(context, host=args.host)
    stats = LoadStatLogger(load)
    engine_args.disable_log_stats = True  # no periodic log lines; the stat logger below still runs
    try:
        llm = AsyncLLM.from_engine_args(engine_args, stat_loggers=[stats.factory()])
    except Exception as exc:
        _close(relay, load)
        raise EngineStartError(f"vLLM failed to start: {type(exc).__name__}: {exc}") from exc
    stats.total_blocks = llm.vllm_config.cache_config.num_gpu_blocks or 0
    engine = VllmEngine(llm, stats.prompt_tokens)
    runtime = WorkerRuntime(engine, registry_endpoint=args.registry_endpoint, namespace=args.namespace,
                            host=args.host, context=context, **runtime_kwargs(args))
    load.start(asyncio.get_running_loop())
    watcher = asyncio.create_task(engine.watch_engine())
    try:
        await runtime.serve(model_card(args, llm, relay, load), drain_timeout_s=args.drain_timeout_s,
                           until=engine.dead)
    finally:
        watcher.cancel()
        llm.shutdown()
        _close(relay, load)
    return engine.dead.done()


def model_card(args: argparse.Namespace, llm: AsyncLLM, relay: KvEventRelay | None, load: LoadPublisher) -> ModelCard:
    """The model card of the running engine: its real context length, block size and KV capacity."""
    config = llm.vllm_config
    model_path = os.path.abspath(config.model_config.model)
    served = config.model_config.served_model_name
    name = served[0] if isinstance(served, (list, tuple)) else served
    runtime_config: dict = {
        "engine": "vllm", "engine_version": vllm.__version__,
        "total_kv_blocks": config.cache_config.num_gpu_blocks or 0,
        "max_num_seqs": config.scheduler_config.max_num_seqs,
        "max_num_batched_tokens": config.scheduler_config.max_num_batched_tokens,
        **load.runtime_config_entries(),
    }
    if relay is not None:
        runtime_config.update(relay.runtime_config_entries())
    if args.dyn_tool_call_parser:
        runtime_config["tool_call_parser"] = args.dyn_tool_call_parser
    if args.dyn_reasoning_parser:
        runtime_config["reasoning_parser"] = args.dyn_reasoning_parser
    return ModelCard(name=name if name and name != config.model_config.model else os.path.basename(model_path),
                     model_path=model_path, model_types=["chat", "completions"],
                     context_length=config.model_config.max_model_len, kv_block_size=config.cache_config.block_size,
                     runtime_config=runtime_config, disaggregation_mode=args.disaggregation_mode)


def _close(relay: KvEventRelay | None, load: LoadPublisher) -> None:
    if relay is not None:
        relay.close()
    load.close()
