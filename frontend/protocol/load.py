"""Load channel: a worker reports its own load, so routers see what the engine knows.

Sockets:
    worker PUB  bind     tcp://HOST:random (``load_endpoint`` in the model card's runtime_config)
    indexer SUB connect  that endpoint; stores the latest report in the shared index for every router

Framing: one MessagePack frame per report (``LoadReport``, array-like). A worker publishes when its load
changes (at most once per engine step) and at least once a second, so a new subscriber catches up.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

Count = Annotated[int, msgspec.Meta(ge=0, le=2**40)]  # a report out of range is malformed, never stored


class LoadReport(msgspec.Struct, array_like=True, gc=False):
    """Requests the engine is running and holding in its queue, and KV-cache blocks in use."""

    running: Count
    waiting: Count
    kv_blocks_used: Count


decoder = msgspec.msgpack.Decoder(LoadReport)
encoder = msgspec.msgpack.Encoder()
