"""Channel between gateway processes and the tokenizer pool.

Sockets: every tokenizer process binds a ROUTER on its own ipc endpoint; every gateway process connects one
DEALER to all of them, so requests round-robin across the pool and replies come back to the sender.
Framing: one MessagePack frame per message.

    gateway DEALER  --[TokenizeRequest]-->  tokenizer ROUTER
    gateway DEALER  <--[TokenizeResult]---  tokenizer ROUTER

The request carries the client's raw JSON body: the tokenizer decodes only the fields it needs (messages,
tools, template kwargs), so the gateway never re-encodes them.
"""

from __future__ import annotations

import msgspec


class TokenizeRequest(msgspec.Struct, tag="tokenize", array_like=True, gc=False):
    """Render (chat) or take (completion) the prompt of ``body``, tokenize it, and hash its KV blocks."""

    request_id: int
    model_path: str
    kind: str  # "chat" | "completion"
    body: bytes
    block_size: int = 0  # 0: no block hashes wanted


class TokenizeResult(msgspec.Struct, tag="result", array_like=True, omit_defaults=True, gc=False):
    """Token ids and chained block hashes of the prompt, or the client-facing error message."""

    request_id: int
    token_ids: list[int] = []
    block_hashes: bytes = b""  # u64 native-endian sequence hashes (array('Q') bytes), read zero-copy
    error: str | None = None


request_decoder = msgspec.msgpack.Decoder(TokenizeRequest)
result_decoder = msgspec.msgpack.Decoder(TokenizeResult)
encoder = msgspec.msgpack.Encoder()
