"""The model-files checksum a worker puts in its model card, so that the registry can refuse a second
worker that serves the same model name with another tokenizer or chat template (as Dynamo's model-card
checksum does).

The digest is XXH3-64 over tokenizer.json's bytes and every chat template of the directory (by name, as
the tokenizer pool loads them), so two copies of the same files anywhere give the same checksum.
"""

from __future__ import annotations

import os

import xxhash

from ..tokenizer.template_files import template_sources

TOKENIZER_FILE = "tokenizer.json"


def model_checksum(model_path: str) -> str:
    """Hex digest of the tokenizer and chat templates of ``model_path`` (missing files count as empty)."""
    digest = xxhash.xxh3_64()
    digest.update(_section(TOKENIZER_FILE, _read_bytes(os.path.join(model_path, TOKENIZER_FILE))))
    if os.path.isdir(model_path):
        for name, source in sorted(template_sources(model_path).items()):
            digest.update(_section("template:" + name, source.encode()))
    return digest.hexdigest()


def _section(label: str, data: bytes) -> bytes:
    """Length-prefixed, so that moving bytes between sections changes the digest."""
    return f"{label}\0{len(data)}\0".encode() + data


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return b""
