"""Reading a Hugging Face style model directory (no weights): limits and end-of-sequence tokens."""

from __future__ import annotations

import json
import os
from typing import Any

from tokenizers import Tokenizer

DEFAULT_CONTEXT_LENGTH = 8192


def _read_json(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return {}
    return data if isinstance(data, dict) else {}


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def context_length(model_path: str) -> int:
    """The model's context window from config.json (``max_position_embeddings`` and friends)."""
    config = _read_json(os.path.join(model_path, "config.json"))
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        if isinstance(config.get(key), int):
            return config[key]
    return DEFAULT_CONTEXT_LENGTH


def eos_token_ids(model_path: str, tokenizer: Tokenizer) -> list[int]:
    """End-of-sequence ids: generation_config.json's ``eos_token_id`` plus tokenizer_config's ``eos_token``."""
    ids: list[int] = []
    generation = _read_json(os.path.join(model_path, "generation_config.json"))
    configured = generation.get("eos_token_id")
    if isinstance(configured, int):
        ids.append(configured)
    elif isinstance(configured, list):
        ids.extend(i for i in configured if isinstance(i, int))
    text = _token_text(_read_json(os.path.join(model_path, "tokenizer_config.json")).get("eos_token"))
    token_id = tokenizer.token_to_id(text) if text else None
    if token_id is not None and token_id not in ids:
        ids.append(token_id)
    return ids


def load_tokenizer(model_path: str) -> Tokenizer:
    """The model's fast tokenizer (tokenizer.json), without the padding and truncation a tokenizer.json may
    configure for batches (sentence-transformers models pad to a fixed length): a prompt is its own tokens,
    and the frontend checks lengths against the context window itself."""
    tokenizer = Tokenizer.from_file(os.path.join(model_path, "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer
