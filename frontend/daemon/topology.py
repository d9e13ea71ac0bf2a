"""Where every socket lives, derived once from the config and a per-launch run directory."""

from __future__ import annotations

import os

import msgspec


class Endpoints(msgspec.Struct, frozen=True):
    """ZeroMQ endpoints of one daemon launch (ipc paths are unique to its run directory)."""

    registry: str  # ROUTER, workers connect (tcp, from --registry-endpoint)
    registry_pub: str  # PUB of registry snapshots, gateways subscribe (ipc)
    tokenizers: list[str]  # one ROUTER per tokenizer process, gateways connect (ipc)

    @classmethod
    def derive(cls, registry_endpoint: str, run_dir: str, tokenizer_workers: int) -> "Endpoints":
        return cls(
            registry=registry_endpoint,
            registry_pub=f"ipc://{os.path.join(run_dir, 'registry-pub')}",
            tokenizers=[f"ipc://{os.path.join(run_dir, f'tokenizer-{i}')}" for i in range(tokenizer_workers)],
        )
