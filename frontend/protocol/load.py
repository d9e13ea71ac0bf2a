"""Load channel: a worker reports its own load, so routers see what the engine knows.

Sockets:
    worker PUB  bind     tcp://HOST:random (``load_endpoint`` in the model card's runtime_config)
    indexer SUB connect  that endpoint; stores the latest report in the shared index for every router

Framing: one MessagePack frame per report (``LoadReport``, array-like). A worker publishes when its load
changes (at most once per engine step) and at least once a second, so a new subscriber catches up.
"""

from __future__ import annotations

import msgspec


class LoadReport(msgspec.Struct, array_like=True, gc=False):
    """Requests the engine is running and holding in its queue, and KV-cache blocks in use."""

    running: int
    waiting: int
    kv_blocks_used: int


decoder = msgspec.msgpack.Decoder(LoadReport)
encoder = msgspec.msgpack.Encoder()
