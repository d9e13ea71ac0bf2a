"""The one place ZeroMQ sockets are made: every process opens its sockets through :func:`open_socket`.

Defaults, the same for every socket unless a caller passes another value (and says why at the call):

- ``LINGER`` 0 (:data:`LINGER_MS`): closing a socket, or the process, never waits for unsent messages. Nothing
  here needs delivery after close: every request/reply on these sockets is awaited before a socket closes
  (registry Acks, snapshot scrapes), publishers repeat their state (registry snapshots, load reports,
  indexer status) and KV events have sequence numbers and a replay. ZeroMQ's own default (wait forever) can
  hang ``Context.term()`` and a process's exit on a peer that went away.
- High-water marks: ZeroMQ's default (:data:`DEFAULT_HWM`, 1,000 messages per pipe) unless the caller passes
  one of the named constants below. A PUB drops and a PUSH/DEALER blocks (or raises ``zmq.Again`` with
  ``NOBLOCK``) past it.
- ``subscribe`` (SUB only) is set before connecting, so the subscription travels with the first handshake.

Options are set before ``bind``/``connect`` (ZeroMQ applies HWMs to the pipes those create); a failed bind or
connect closes the socket before the error propagates.
"""

from __future__ import annotations

from typing import Iterable

import zmq

LINGER_MS = 0
DEFAULT_HWM = 1_000  # ZeroMQ's own default, per pipe; ``None`` below leaves it
# KV-event streams (worker PUB -> indexer SUB, the vLLM relay's XPUB): one message per engine step, bursty; a
# message dropped at the HWM is a sequence gap that costs the indexer a replay.
KV_EVENTS_HWM = 100_000
# Routing decisions (gateway PUSH -> indexer PULL, ``RoutedBlocks``): one per routed request; past the HWM the
# gateway drops them (NOBLOCK) rather than blocking its event loop.
ROUTED_BLOCKS_HWM = 10_000

Endpoints = str | Iterable[str] | None


def open_socket(context: zmq.Context, kind: int, *, bind: Endpoints = None, connect: Endpoints = None,
                linger: int = LINGER_MS, sndhwm: int | None = None, rcvhwm: int | None = None,
                subscribe: bytes | str | None = None) -> zmq.Socket:
    """A ``kind`` socket (``zmq.ROUTER``, ``zmq.SUB`` ...) of ``context`` with the options above, bound to
    ``bind`` and connected to ``connect`` (an endpoint or several). ``subscribe`` is a topic prefix (``b""``
    for every message) and only for SUB sockets."""
    if subscribe is not None and kind != zmq.SUB:
        raise ValueError("subscribe is only for SUB sockets")
    sock = context.socket(kind)
    try:
        sock.setsockopt(zmq.LINGER, linger)
        if sndhwm is not None:
            sock.setsockopt(zmq.SNDHWM, sndhwm)
        if rcvhwm is not None:
            sock.setsockopt(zmq.RCVHWM, rcvhwm)
        if subscribe is not None:
            sock.setsockopt(zmq.SUBSCRIBE, subscribe.encode() if isinstance(subscribe, str) else subscribe)
        for endpoint in _endpoints(bind):
            sock.bind(endpoint)
        for endpoint in _endpoints(connect):
            sock.connect(endpoint)
    except BaseException:
        sock.close(0)
        raise
    return sock


def bind_random_port(sock: zmq.Socket, host: str) -> str:
    """Bind ``sock`` to a free TCP port on ``host``; the endpoint to advertise, ``tcp://HOST:PORT``."""
    return f"tcp://{host}:{sock.bind_to_random_port(f'tcp://{host}')}"


def _endpoints(endpoints: Endpoints) -> Iterable[str]:
    if endpoints is None:
        return ()
    if isinstance(endpoints, str):
        return (endpoints,)
    return endpoints
