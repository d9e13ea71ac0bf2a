"""A worker serving the bundled model as a chat-only model (``model_types: ["chat"]``), for the gRPC tests.

Usage: python tests/e2e/grpc_chat_worker.py REGISTRY_ENDPOINT MODEL_NAME
Its engine answers every request with one token and finish reason "stop"; it runs until SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from frontend.config.options import BUNDLED_MODEL_PATH
from frontend.worker import Engine, GenerateRequest, ModelCard, TokenSink, WorkerRuntime


class OneToken(Engine):
    def add_request(self, request: GenerateRequest, sink: TokenSink) -> None:
        sink.send([42], finish_reason="stop")


async def main(registry_endpoint: str, name: str) -> None:
    runtime = WorkerRuntime(OneToken(), registry_endpoint=registry_endpoint)
    await runtime.register_model(ModelCard(name=name, model_path=os.path.normpath(BUNDLED_MODEL_PATH),
                                           model_types=["chat"]))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    heartbeats = asyncio.create_task(runtime.keep_alive())
    await stop.wait()
    heartbeats.cancel()
    await runtime.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
