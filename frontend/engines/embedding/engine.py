"""A sentence-transformers model as an SDK engine: token ids in (the frontend tokenized them with the model's
own tokenizer.json), unit vectors out.

Inputs are sorted by length and run in sub-batches of at most ``max_batch`` so that padding stays small;
each sub-batch is one forward pass of the model's modules (transformer, pooling, normalization) on the given
ids with an attention mask, in a worker thread, one request at a time. Torch is imported here only, so the
rest of the package never needs it.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Sequence

import torch
from sentence_transformers import SentenceTransformer

from ...protocol.engine import EmbedRequest
from ...worker import Engine, InvalidInput


class SentenceTransformerEngine(Engine):
    """Embeds token-id inputs with a sentence-transformers model on the CPU (or ``device``)."""

    def __init__(self, model_path: str, *, device: str = "cpu", max_batch: int = 32) -> None:
        self.model = SentenceTransformer(model_path, device=device)
        self.model.eval()
        self.max_batch = max_batch
        self.max_length = max_seq_length(model_path)
        self.dimensions = self.model.get_sentence_embedding_dimension()
        names = getattr(self.model.tokenizer, "model_input_names", ())
        self._token_types = "token_type_ids" in names
        self._lock = asyncio.Lock()

    async def embed(self, request: EmbedRequest) -> Sequence[bytes]:
        too_long = [i for i, ids in enumerate(request.inputs) if len(ids) > self.max_length]
        if too_long:
            raise InvalidInput(f"input[{too_long[0]}] has {len(request.inputs[too_long[0]])} tokens; this model "
                               f"takes at most {self.max_length}")
        async with self._lock:  # one forward pass at a time: torch already uses the threads it is given
            return await asyncio.to_thread(self._encode, request.inputs)

    def _encode(self, inputs: list[list[int]]) -> list[bytes]:
        order = sorted(range(len(inputs)), key=lambda i: len(inputs[i]))
        vectors: list[bytes] = [b""] * len(inputs)
        for start in range(0, len(order), self.max_batch):
            batch = order[start:start + self.max_batch]
            embeddings = self._forward([inputs[i] for i in batch])
            for index, row in zip(batch, embeddings):
                vectors[index] = row.astype("<f4").tobytes()
        return vectors

    def _forward(self, batch: list[list[int]]):
        width = max(len(ids) for ids in batch)
        input_ids = torch.tensor([ids + [0] * (width - len(ids)) for ids in batch], dtype=torch.long)
        mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in batch], dtype=torch.long)
        features = {"input_ids": input_ids, "attention_mask": mask}
        if self._token_types:
            features["token_type_ids"] = torch.zeros_like(input_ids)
        with torch.inference_mode():
            output = self.model(features)["sentence_embedding"]
        return output.float().cpu().numpy()


def max_seq_length(model_path: str) -> int:
    """The model's input limit: sentence_bert_config.json's ``max_seq_length``, else config.json's positions."""
    for name, key in (("sentence_bert_config.json", "max_seq_length"), ("config.json", "max_position_embeddings")):
        try:
            with open(os.path.join(model_path, name), encoding="utf-8") as handle:
                value = json.load(handle).get(key)
        except (OSError, ValueError):
            continue
        if isinstance(value, int) and value > 0:
            return value
    return 512
