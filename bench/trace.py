"""Mooncake-style trace replay input.

Each JSONL line is one request::

    {"timestamp": 27482, "input_length": 6955, "output_length": 52, "hash_ids": [46, 47, 48, ...]}

``timestamp`` is the send time in milliseconds from the start of the trace, ``hash_ids`` name the prompt's
blocks of ``--trace-block-size`` (512) tokens: equal ids mean equal blocks, so two requests whose lists share
a first id share a 512-token prefix (what a KV-aware router can exploit). The prompt is the concatenation of
the blocks' token ids, cut to ``input_length``; a block's ids are a corpus window chosen by hashing its id
with the seed, so the same id always yields the same text. Without ``hash_ids`` every request gets its own
blocks. With ``--fixed-schedule`` each request is sent at its timestamp (shifted so the first is at 0);
otherwise the trace is a dataset played at ``--concurrency`` or ``--request-rate``.
"""

from __future__ import annotations

import random
from pathlib import Path

import msgspec

from .config import ProfileConfig
from .prompts import PromptText
from .workloads import Session, Turn, Workload


class TraceEntry(msgspec.Struct, frozen=True):
    """One line of a Mooncake trace."""

    input_length: int
    output_length: int | None = None
    timestamp: float | None = None
    hash_ids: list[int] = []


def read_entries(path: str | Path) -> list[TraceEntry]:
    """Parse a JSONL trace (blank lines skipped); raises ValueError naming the bad line."""
    decoder = msgspec.json.Decoder(TraceEntry)
    entries = []
    for number, line in enumerate(Path(path).read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entries.append(decoder.decode(line))
        except msgspec.ValidationError as exc:
            raise ValueError(f"{path}:{number}: {exc}") from None
    if not entries:
        raise ValueError(f"{path}: no trace entries")
    return entries


class BlockText:
    """Token ids of numbered blocks: the same (seed, id) always gives the same corpus window."""

    def __init__(self, prompts: PromptText, block_size: int, seed: int) -> None:
        self.prompts = prompts
        self.block_size = block_size
        self.seed = seed
        self._cache: dict[int, list[int]] = {}

    def ids(self, block_id: int) -> list[int]:
        if block_id not in self._cache:
            start = random.Random(f"{self.seed}:{block_id}").randrange(len(self.prompts.corpus_ids))
            self._cache[block_id] = self.prompts.window(start, self.block_size)
        return self._cache[block_id]

    def prompt_ids(self, hash_ids: list[int], length: int) -> list[int]:
        ids: list[int] = []
        for block_id in hash_ids:
            ids += self.ids(block_id)
        return ids[:length]


def unique_block_ids(entries: list[TraceEntry], block_size: int) -> list[list[int]]:
    """Each entry's block ids, inventing fresh ids (above every id in the trace) where a line has none."""
    next_id = 1 + max((max(e.hash_ids) for e in entries if e.hash_ids), default=0)
    result = []
    for entry in entries:
        blocks = list(entry.hash_ids)
        needed = -(-entry.input_length // block_size)
        while len(blocks) < needed:
            blocks.append(next_id)
            next_id += 1
        result.append(blocks)
    return result


def load_trace(path: str | Path, prompts: PromptText, config: ProfileConfig) -> Workload:
    """The trace as single-turn sessions with their send times (first timestamp shifted to 0)."""
    entries = read_entries(path)
    blocks = BlockText(prompts, config.trace_block_size, config.random_seed)
    first = min((e.timestamp for e in entries if e.timestamp is not None), default=0.0)
    block_lists = unique_block_ids(entries, config.trace_block_size)
    texts = [prompts.text_of(blocks.prompt_ids(ids, e.input_length)) for e, ids in zip(entries, block_lists)]
    counts = prompts.tokenizer.count_many(texts)
    sessions = []
    for index, (entry, text, tokens) in enumerate(zip(entries, texts, counts)):
        timestamp = entry.timestamp - first if entry.timestamp is not None else None
        turn = Turn(text=text, tokens=tokens, max_tokens=entry.output_length)
        sessions.append(Session(id=index, turns=[turn], timestamp_ms=timestamp))
    if config.fixed_schedule and any(s.timestamp_ms is None for s in sessions):
        raise ValueError(f"{path}: --fixed-schedule needs a timestamp on every line")
    return Workload(kind="trace", sessions=sessions)
