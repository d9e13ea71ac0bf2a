"""Where every socket lives, derived once from the config and a per-launch run directory."""

from __future__ import annotations

import os
import uuid

import msgspec


class Endpoints(msgspec.Struct, frozen=True):
    """ZeroMQ endpoints of one daemon launch (ipc paths are unique to its run directory)."""

    registry: str  # ROUTER, workers connect (tcp, from --registry-endpoint)
    registry_pub: str  # PUB of registry snapshots, gateways subscribe (ipc)
    tokenizers: list[str]  # one ROUTER per tokenizer process, gateways connect (ipc)
    indexer_routed: str  # PULL of routing decisions, gateways connect (ipc)
    indexer_status: str  # PUB of indexer status, gateways subscribe (ipc)
    kv_index_name: str  # shared-memory segment of the KV block index and per-worker load

    @classmethod
    def derive(cls, registry_endpoint: str, run_dir: str, tokenizer_workers: int) -> "Endpoints":
        def ipc(name: str) -> str:
            return f"ipc://{os.path.join(run_dir, name)}"

        return cls(
            registry=registry_endpoint,
            registry_pub=ipc("registry-pub"),
            tokenizers=[ipc(f"tokenizer-{i}") for i in range(tokenizer_workers)],
            indexer_routed=ipc("indexer-routed"),
            indexer_status=ipc("indexer-status"),
            kv_index_name=f"dyn-kvindex-{os.getpid()}-{uuid.uuid4().hex[:8]}",
        )
