"""Publishing KV-cache events the way vLLM does, so the frontend's indexer can follow a worker's cache.

Sockets:
    send_to_indexers  PUB     bind  tcp://HOST:random   [topic, seq(8B BE), EventBatch]  (protocol.kv_events)
    recv_replays      ROUTER  bind  tcp://HOST:random   [b"", start_seq] -> batches since start_seq, end marker

Events queued during one engine step are sent as one batch by ``flush()``. The last ``buffer_steps``
batches are kept for replay. A real vLLM or SGLang engine publishes the same format itself; such a worker
advertises the engine's endpoints in its model card instead (see ``runtime_config_entries``).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

import zmq

from ..protocol import kv_events as wire
from ..protocol.kv_events import AllBlocksCleared, BlockRemoved, BlockStored, KvEvent
from ..transport.sockets import KV_EVENTS_HWM, bind_random_port, open_socket
from ..transport.zmqloop import SocketDrainer


class KvEventPublisher:
    """Queues events during a step and publishes them as one sequenced batch."""

    def __init__(self, context: zmq.Context, *, host: str = "127.0.0.1", topic: str = "kv-events",
                 encoding: str = "array", buffer_steps: int = 10_000) -> None:
        if encoding not in ("array", "map"):
            raise ValueError(f"encoding must be 'array' or 'map', not {encoding!r}")
        self.topic = topic.encode()
        self.encoding = encoding
        self._pub = open_socket(context, zmq.PUB, sndhwm=KV_EVENTS_HWM)
        self.endpoint = bind_random_port(self._pub, host)
        self._replay = open_socket(context, zmq.ROUTER)
        self.replay_endpoint = bind_random_port(self._replay, host)
        self._replay_drainer: SocketDrainer | None = None
        self._buffer: deque[tuple[int, bytes]] = deque(maxlen=buffer_steps)
        self._pending: list[KvEvent] = []
        self.seq = 0

    def runtime_config_entries(self) -> dict[str, str]:
        """What the model card's runtime_config advertises so the indexer can subscribe."""
        return {"kv_events_endpoint": self.endpoint, "kv_events_replay_endpoint": self.replay_endpoint,
                "kv_events_topic": self.topic.decode()}

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Serve replay requests from ``loop``."""
        self._replay_drainer = SocketDrainer(loop, self._replay, self._serve_replay)

    def stored(self, block_hashes: list[int], parent: int | None, token_ids: list[int], block_size: int) -> None:
        self._pending.append(BlockStored(block_hashes, parent, token_ids, block_size))

    def removed(self, block_hashes: list[int]) -> None:
        self._pending.append(BlockRemoved(block_hashes))

    def cleared(self) -> None:
        self._pending.append(AllBlocksCleared())

    def flush(self) -> None:
        """Publish the events queued since the last flush as one batch (nothing when there are none)."""
        if not self._pending:
            return
        payload = wire.encode_batch(time.time(), self._pending, encoding=self.encoding)
        self._pending = []
        self._buffer.append((self.seq, payload))
        self._pub.send_multipart([self.topic, wire.encode_seq(self.seq), payload])
        self.seq += 1

    def _serve_replay(self, frames: list[bytes]) -> None:
        # the drain loop reads again after these sends, so the descriptor's edge cannot be lost here
        if len(frames) != 3:
            return
        identity, _, start = frames
        try:
            start_seq = wire.decode_seq(start)
        except wire.EventDecodeError:
            return
        for seq, payload in self._buffer:
            if seq >= start_seq:
                self._replay.send_multipart([identity, b"", wire.encode_seq(seq), payload])
        self._replay.send_multipart([identity, b"", wire.END_OF_REPLAY, b""])

    def close(self) -> None:
        self._pub.close(0)
        if self._replay_drainer is not None:
            self._replay_drainer.close()  # and the socket
            self._replay_drainer = None
        else:
            self._replay.close(0)
