"""Picking a worker instance for a request: round-robin or random (KV-aware routing plugs in here)."""

from __future__ import annotations

import os
import random

from ..errors import ServiceUnavailable


class Router:
    """Chooses an instance among a model's live instances; one Router per gateway process."""

    def __init__(self, mode: str) -> None:
        if mode not in ("round_robin", "random"):
            raise ValueError(f"unknown router mode {mode!r}")
        self.mode = mode
        self._next: dict[str, int] = {}

    def pick(self, model: str, instance_ids: list[str]) -> str:
        if not instance_ids:
            raise ServiceUnavailable(f"no live worker serves model `{model}`")
        if self.mode == "random":
            return random.choice(instance_ids)
        index = self._next.get(model, os.getpid())  # processes start at different workers
        self._next[model] = index + 1
        return instance_ids[index % len(instance_ids)]
