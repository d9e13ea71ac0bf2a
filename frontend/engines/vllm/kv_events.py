"""Pointing vLLM's own KV-event publisher at the frontend's indexers.

vLLM binds its PUB socket only for a wildcard (``tcp://*:PORT``) or an ipc endpoint and connects otherwise,
so to publish on the worker's advertised host alone, vLLM's engine core binds an ipc socket in a private
directory and :class:`KvEventRelay` forwards every message, frames untouched, to a PUB bound on
``tcp://HOST:random``. vLLM binds its replay ROUTER itself, on ``tcp://HOST:PORT`` (a free port chosen here,
outside the ephemeral range: ``transport/ports.py``).

Sockets (in the worker process, one relay thread):
    recv_from_engine  XSUB  connect  ipc://RUN_DIR/kv-events     vLLM's PUB (engine-core process)
    send_to_indexers  XPUB  bind     tcp://HOST:random           [topic, seq, EventBatch] as vLLM sent them
    (vLLM's replay    ROUTER bind    tcp://HOST:PORT             served by the engine core itself)
"""

from __future__ import annotations

import os
import tempfile
import threading

import zmq
from vllm.config import KVEventsConfig

from ...transport.ports import port_for_later_bind
from ...transport.sockets import KV_EVENTS_HWM, bind_random_port, open_socket

TOPIC = "kv-events"


class KvEventRelay:
    """Forwards vLLM's KV events from an ipc endpoint to a TCP PUB on ``host``."""

    def __init__(self, host: str, *, buffer_steps: int = 10_000) -> None:
        self._dir = tempfile.mkdtemp(prefix="dyn-vllm-")
        self.engine_endpoint = f"ipc://{os.path.join(self._dir, 'kv-events')}"
        self.replay_endpoint = f"tcp://{host}:{port_for_later_bind(host)}"  # the engine binds it after loading
        self.buffer_steps = buffer_steps
        self._context = zmq.Context()
        self._recv = open_socket(self._context, zmq.XSUB, connect=self.engine_endpoint)
        self._send = open_socket(self._context, zmq.XPUB, sndhwm=KV_EVENTS_HWM)
        self.endpoint = bind_random_port(self._send, host)
        control = f"inproc://kv-relay-control-{id(self)}"
        self._control = open_socket(self._context, zmq.PAIR, bind=control)
        relay_control = open_socket(self._context, zmq.PAIR, connect=control)
        self._thread = threading.Thread(target=self._run, args=(relay_control,), name="kv-event-relay",
                                        daemon=True)
        self._thread.start()

    def vllm_config(self) -> KVEventsConfig:
        """The ``kv_events_config`` that makes vLLM publish into this relay (with its replay endpoint)."""
        return KVEventsConfig(enable_kv_cache_events=True, publisher="zmq", endpoint=self.engine_endpoint,
                              replay_endpoint=self.replay_endpoint, buffer_steps=self.buffer_steps, topic=TOPIC)

    def runtime_config_entries(self) -> dict[str, str]:
        """What the model card's runtime_config advertises so the indexer can subscribe."""
        return {"kv_events_endpoint": self.endpoint, "kv_events_replay_endpoint": self.replay_endpoint,
                "kv_events_topic": TOPIC}

    def _run(self, control: zmq.Socket) -> None:
        try:
            zmq.proxy_steerable(self._recv, self._send, None, control)
        except zmq.ContextTerminated:
            pass
        finally:
            control.close(0)

    def close(self) -> None:
        """Stop the relay thread and remove the ipc directory."""
        self._control.send(b"TERMINATE")
        self._thread.join(timeout=2.0)
        for sock in (self._control, self._recv, self._send):
            sock.close(0)
        self._context.term()
        try:
            os.unlink(os.path.join(self._dir, "kv-events"))
        except FileNotFoundError:
            pass
        os.rmdir(self._dir)
