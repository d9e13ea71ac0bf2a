"""A worker whose KV events use another block size than its model card says (for the /health warning test).

Usage: python tests/apps/mismatched_worker.py REGISTRY_ENDPOINT MODEL_NAME
Registers MODEL_NAME with kv_block_size 16, then publishes a BlockStored event with block_size 32 every
0.2 s until terminated. It serves no requests.
"""

from __future__ import annotations

import asyncio
import os
import sys

import zmq

from frontend.config.options import BUNDLED_MODEL_PATH
from frontend.worker import Engine, ModelCard, WorkerRuntime
from frontend.worker.kv_publisher import KvEventPublisher


class SilentEngine(Engine):
    def add_request(self, request, sink) -> None:
        sink.send([], "error", error="this test worker serves no requests")


async def main(registry: str, name: str) -> None:
    publisher = KvEventPublisher(zmq.Context.instance())
    runtime = WorkerRuntime(SilentEngine(), registry_endpoint=registry)
    card = ModelCard(name=name, model_path=os.path.abspath(BUNDLED_MODEL_PATH), kv_block_size=16,
                     runtime_config=publisher.runtime_config_entries())
    await runtime.register_model(card)
    heartbeats = asyncio.create_task(runtime.keep_alive())
    block = 0
    while not heartbeats.done():
        publisher.stored([1000 + block], None, list(range(32)), 32)
        publisher.flush()
        block += 1
        await asyncio.sleep(0.2)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
