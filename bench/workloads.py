"""Workloads: what to send. Every workload is a list of sessions; a single request is a session of one turn.

* synthetic: independent single-turn requests, prompt lengths ~ N(isl, isl_stddev) in exact tokens;
* sessions: ``--num-sessions`` conversations of ``--session-turns`` turns that all start with the same
  ``--shared-prefix-length``-token system prompt; each turn resends the whole history (system prompt, every
  earlier user message and the server's earlier answers), as chat clients do;
* trace: Mooncake-style JSONL replay (see ``bench.trace``).

Output lengths ~ N(osl, osl_stddev) are sent as ``max_tokens`` (with ``ignore_eos`` unless disabled).
"""

from __future__ import annotations

import random

import msgspec

from .config import ProfileConfig
from .prompts import PromptText

MAX_UNIQUE_PROMPTS = 10_000  # a longer run cycles through this many distinct prompts
WARMUP_SEED_OFFSET = 1_000_003  # warm-up prompts differ from the profiled ones (no cache hits from warm-up)


class Turn(msgspec.Struct, frozen=True):
    """One user message of a session and the output length asked for it."""

    text: str
    tokens: int                     # tokens of ``text`` by the client tokenizer
    max_tokens: int | None = None   # None: let the server decide


class Session(msgspec.Struct, frozen=True):
    """A conversation; turn k is sent after turn k-1 has been answered."""

    id: int
    turns: list[Turn]
    system: str = ""                # system prompt (the shared prefix), "" for none
    system_tokens: int = 0
    timestamp_ms: float | None = None  # fixed-schedule send time of the first turn, from the trace's start


class Workload(msgspec.Struct, frozen=True):
    """The sessions to send, and what kind of workload made them."""

    kind: str
    sessions: list[Session]

    def turn_inputs(self) -> dict[tuple[int, int], int]:
        """(session, turn) -> new input tokens of that turn (the system prompt counts on turn 0)."""
        inputs = {}
        for session in self.sessions:
            for index, turn in enumerate(session.turns):
                inputs[(session.id, index)] = turn.tokens + (session.system_tokens if index == 0 else 0)
        return inputs

    @property
    def request_total(self) -> int:
        return sum(len(session.turns) for session in self.sessions)


def sample_length(rng: random.Random, mean: float, stddev: float) -> int:
    """A normally distributed length, rounded, at least 1 (exactly ``mean`` when ``stddev`` is 0)."""
    if stddev <= 0:
        return max(1, round(mean))
    return max(1, round(rng.gauss(mean, stddev)))


def make_turn(prompts: PromptText, rng: random.Random, config: ProfileConfig) -> Turn:
    length = sample_length(rng, config.isl, config.isl_stddev)
    max_tokens = sample_length(rng, config.osl, config.osl_stddev) if config.osl is not None else None
    return Turn(text=prompts.exact(length, rng), tokens=length, max_tokens=max_tokens)


def shared_prefix(prompts: PromptText, config: ProfileConfig, rng: random.Random) -> tuple[str, int]:
    """The system prompt every session starts with (``--shared-prefix-length`` tokens)."""
    if config.shared_prefix_length <= 0:
        return "", 0
    return prompts.exact(config.shared_prefix_length, rng), config.shared_prefix_length


def synthetic(prompts: PromptText, config: ProfileConfig, count: int, seed_offset: int = 0) -> Workload:
    """``count`` independent single-turn requests (all with the shared prefix, if one is set)."""
    rng = random.Random(config.random_seed + seed_offset)
    system, system_tokens = shared_prefix(prompts, config, rng)
    sessions = [Session(id=i, turns=[make_turn(prompts, rng, config)], system=system, system_tokens=system_tokens)
                for i in range(count)]
    return Workload(kind="synthetic", sessions=sessions)


def multi_turn(prompts: PromptText, config: ProfileConfig, sessions: int, seed_offset: int = 0) -> Workload:
    """``sessions`` conversations of ``--session-turns`` turns behind one shared system prompt."""
    rng = random.Random(config.random_seed + seed_offset)
    system, system_tokens = shared_prefix(prompts, config, rng)
    built = [Session(id=i, turns=[make_turn(prompts, rng, config) for _ in range(config.session_turns)],
                     system=system, system_tokens=system_tokens)
             for i in range(sessions)]
    return Workload(kind="sessions", sessions=built)


def build(prompts: PromptText, config: ProfileConfig, warmup: bool = False) -> Workload:
    """The profiling workload (or, with ``warmup``, a distinct one of ``--warmup-request-count`` requests)."""
    offset = WARMUP_SEED_OFFSET if warmup else 0
    if config.input_file and not warmup:
        from .trace import load_trace

        return load_trace(config.input_file, prompts, config)
    if config.num_sessions:
        count = config.num_sessions if not warmup else max(1, config.warmup_request_count // config.session_turns)
        return multi_turn(prompts, config, count, offset)
    if warmup:
        count = config.warmup_request_count
    elif config.request_count is not None:
        count = min(config.request_count, MAX_UNIQUE_PROMPTS)
    else:
        count = config.num_dataset_entries
    return synthetic(prompts, config, max(1, count), offset)
