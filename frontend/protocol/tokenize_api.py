"""``POST /tokenize`` and ``POST /detokenize``: vLLM's request and response shapes (as Dynamo serves them).

A tokenize request has either ``prompt`` (plain text; special tokens added by default) or ``messages``
(rendered with the model's chat template first, as a chat request would be; no special tokens added on
top by default). ``model`` may be left out when exactly one model has a tokenizer.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .openai import TokenId


class TokenizeRequest(msgspec.Struct, kw_only=True):
    """POST /tokenize: exactly one of ``prompt`` and ``messages``."""

    model: str | None = None
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    add_special_tokens: bool | None = None  # default: true with prompt, false with messages
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    chat_template_kwargs: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    return_token_strs: bool = False


class TokenizeResponse(msgspec.Struct, omit_defaults=True):
    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None = None


class DetokenizeRequest(msgspec.Struct, kw_only=True):
    """POST /detokenize."""

    tokens: list[TokenId]
    model: str | None = None


class DetokenizeResponse(msgspec.Struct):
    prompt: str
