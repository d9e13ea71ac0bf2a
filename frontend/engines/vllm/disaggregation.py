"""A vLLM worker's role in disaggregated serving (``--disaggregation-mode prefill|decode``): vLLM's NixlConnector.

A prefill worker is a KV producer: it prefills a prompt, keeps its KV blocks and names them in the leg's last
output (``kv_transfer_params``). A decode worker is a KV consumer: it pulls those blocks from the prefill worker
over NIXL before decoding; when they cannot be read (the prefill worker died, its lease on the blocks expired),
it recomputes the prompt itself (``kv_load_failure_policy="recompute"``) rather than failing the request.
A ``--kv-transfer-config`` given on the command line is used as it is.

NIXL's side channel (the handshake between the two workers) listens on ``VLLM_NIXL_SIDE_CHANNEL_HOST:PORT``;
workers on one host need distinct ports, so when the port is not set a free one is picked on ``--host``.

NIXL moves the blocks with UCX, which picks its transports itself. On a machine without RDMA or GPUs, UCX may
need to be told to use TCP on loopback: ``UCX_TLS=tcp,self UCX_NET_DEVICES=lo`` (both workers on one host) or
the interface the workers share. The worker leaves UCX's settings alone.
"""

from __future__ import annotations

import os
from typing import MutableMapping

from vllm.config import KVTransferConfig
from vllm.engine.arg_utils import AsyncEngineArgs

from ...transport.ports import port_for_later_bind

KV_ROLES = {"prefill": "kv_producer", "decode": "kv_consumer"}
SIDE_CHANNEL_HOST, SIDE_CHANNEL_PORT = "VLLM_NIXL_SIDE_CHANNEL_HOST", "VLLM_NIXL_SIDE_CHANNEL_PORT"


def configure_disaggregation(engine_args: AsyncEngineArgs, mode: str, host: str,
                             environ: MutableMapping[str, str] = os.environ) -> None:
    """Set up vLLM for the worker's role (nothing for ``agg``): the NixlConnector unless the user configured a
    KV connector, and a side-channel address of its own. Call before the engine starts (its processes read
    ``environ``)."""
    if mode == "agg":
        return
    if engine_args.kv_transfer_config is None:
        engine_args.kv_transfer_config = nixl_transfer_config(mode)
    if SIDE_CHANNEL_PORT not in environ:
        environ.setdefault(SIDE_CHANNEL_HOST, host)
        environ[SIDE_CHANNEL_PORT] = str(port_for_later_bind(host))


def nixl_transfer_config(mode: str) -> KVTransferConfig:
    """vLLM's NixlConnector for a prefill (producer) or decode (consumer) worker; vLLM names the engine and
    keeps the KV buffers on the platform's device (the host memory on the CPU build)."""
    policy = "recompute" if mode == "decode" else "fail"  # fail: vLLM's default; a producer loads no KV
    return KVTransferConfig(kv_connector="NixlConnector", kv_role=KV_ROLES[mode], kv_load_failure_policy=policy)

