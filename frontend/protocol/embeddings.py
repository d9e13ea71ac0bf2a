"""OpenAI's embeddings API (``POST /v1/embeddings``): request and response types.

``input`` is a string, a list of strings, a list of token ids, or a list of token-id lists (the handler
checks that a list is of one kind). Unknown fields are ignored; ``nvext.backend_instance_id`` pins a worker.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from .openai import PositiveInt, TokenId


class EmbeddingRequest(msgspec.Struct, kw_only=True):
    """POST /v1/embeddings."""

    model: str
    input: str | list[str | TokenId | list[TokenId]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: PositiveInt | None = None  # the first N dimensions, normalized again to unit length
    user: str | None = None
    nvext: dict[str, Any] | None = None


class Embedding(msgspec.Struct):
    """One input's vector: floats, or base64 of its little-endian float32 bytes."""

    index: int
    embedding: list[float] | str
    object: str = "embedding"


class EmbeddingUsage(msgspec.Struct):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(msgspec.Struct):
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
    object: str = "list"
