"""``python -m frontend.vllm --model PATH [vLLM engine arguments]``: a vLLM worker for this frontend.

Runs vLLM's ``AsyncLLM`` in this process (its engine core in a child process), registers the model with the
frontend's registry and serves token-id requests until SIGTERM/SIGINT, then drains and unregisters. Every
vLLM engine argument is accepted as vLLM's own CLI takes it (``--max-model-len``, ``--block-size``,
``--served-model-name``, ``--enable-prefix-caching``, ...). The worker's own flags are below; each has an env
var ``DYN_VLLM_<FLAG>`` (flags win).

Exit codes: 0 after a clean shutdown, 1 when the vLLM engine died, 2 when vLLM failed to start, 3 when the
registry refused or did not answer.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ...config.options import Option, one_of
from ...protocol.registry import DISAGGREGATION_MODES
from ...worker.cli import RUNTIME_FLAGS, add_flags, start_worker_process, worker_flags

log = logging.getLogger("frontend.vllm")

EXIT_ENGINE_DIED, EXIT_START_FAILED, EXIT_REGISTRATION = 1, 2, 3

FLAGS = worker_flags(
    "DYN_VLLM_",
    Option("registry_endpoint", str, "tcp://127.0.0.1:5570", "The frontend's registry (ZeroMQ endpoint)."),
    Option("namespace", str, "dynamo", "Namespace to register in."),
    *RUNTIME_FLAGS,
    Option("host", str, "127.0.0.1", "Address the request-plane, KV-event and load sockets bind to."),
    Option("dyn_tool_call_parser", str, "", "Tool-call parser named in the model card (e.g. hermes).",
           flag_aliases=("--tool-call-parser",)),
    Option("dyn_reasoning_parser", str, "", "Reasoning parser named in the model card (e.g. qwen3)."),
    Option("kv_events", str, "on", "Publish vLLM's KV events for KV-aware routing: on | off.",
           validate=one_of("on", "off")),
    Option("disaggregation_mode", str, "agg", "The worker's role in disaggregated serving: agg (whole requests) | "
           "prefill (prefill legs: vLLM's NixlConnector keeps their KV for a decode worker) | decode (decode legs, "
           "whose prompt KV it pulls from the prefill worker, recomputing it when that fails; and whole requests). "
           "prefill and decode use --kv-transfer-config when given; see frontend/engines/vllm/disaggregation.py "
           "(UCX on a machine without RDMA: UCX_TLS=tcp,self UCX_NET_DEVICES=lo).",
           validate=one_of(*DISAGGREGATION_MODES)),
    Option("drain_timeout_s", float, 30.0, "After SIGTERM/SIGINT, how long requests in flight may take to finish."),
    Option("dyn_log_level", str, "warning", "The worker's own log level: debug | info | warning | error."),
    Option("dyn_log_format", str, "text", "The worker's own log format: text | json."),
)


def parse_args(argv: list[str] | None):
    """vLLM's engine arguments plus the worker's own."""
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(prog="python -m frontend.vllm", description=__doc__,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
    add_flags(parser.add_argument_group("frontend worker"), FLAGS)
    AsyncEngineArgs.add_cli_args(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from ...worker import RegistrationError
    from .worker import EngineStartError, serve

    args = parse_args(argv)
    start_worker_process("dyn-vllm", "vllm-worker", args.dyn_log_level, args.dyn_log_format, args.exit_with_parent)
    try:
        import uvloop
        engine_died = uvloop.run(serve(args))
    except EngineStartError as exc:
        print(f"vllm worker: {exc}", file=sys.stderr)
        return EXIT_START_FAILED
    except RegistrationError as exc:
        print(f"vllm worker: {exc}", file=sys.stderr)
        return EXIT_REGISTRATION
    return EXIT_ENGINE_DIED if engine_died else 0


if __name__ == "__main__":  # vLLM spawns its engine core: the guard keeps the child from running main()
    sys.exit(main())
