"""Request plane between a gateway process and a backend worker.

Sockets: each worker binds one ROUTER (its advertised ``endpoint``, tcp); every gateway process connects one
DEALER per worker instance. Framing: one frame per message, MessagePack of a tagged Struct.

    gateway DEALER  --[GenerateRequest | AbortRequest]-->  worker ROUTER
    gateway DEALER  <--[OutputBatch]----------------------  worker ROUTER (addressed by the gateway's identity)

A worker sends one OutputBatch per engine step per gateway, holding the new tokens of every request of that
gateway that advanced in the step, so that one socket read serves many streams.
"""

from __future__ import annotations

import msgspec


class SamplingOptions(msgspec.Struct, omit_defaults=True, gc=False):
    """How the engine picks tokens. None means the engine's default."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    response_format: dict | None = None


class StopConditions(msgspec.Struct, omit_defaults=True, gc=False):
    """When the engine stops. Stop strings are the frontend's job; the engine sees token ids only."""

    max_tokens: int
    min_tokens: int = 0
    stop_token_ids: list[int] = []
    ignore_eos: bool = False
    max_thinking_tokens: int | None = None  # reasoning budget: an engine that supports it ends reasoning there


class GenerateRequest(msgspec.Struct, tag="generate", omit_defaults=True, gc=False):
    """A preprocessed request: the prompt as token ids plus sampling and stop settings."""

    request_id: str
    token_ids: list[int]
    stop: StopConditions
    sampling: SamplingOptions = msgspec.field(default_factory=SamplingOptions)
    eos_token_ids: list[int] = []
    logprobs: int | None = None  # None: no logprobs; N >= 0: the chosen token's plus N alternatives
    model: str = ""


class AbortRequest(msgspec.Struct, tag="abort", gc=False):
    """Stop generating for this request (client went away or a stop string matched)."""

    request_id: str


class TokenLogprob(msgspec.Struct, array_like=True, gc=False):
    """Log-probability of a generated token and its best alternatives as (token_id, logprob) pairs."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]] = []


class RequestOutput(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):
    """New tokens of one request; ``finish_reason`` set on the last one (stop | length | abort | error)."""

    request_id: str
    token_ids: list[int]
    finish_reason: str | None = None
    logprobs: list[TokenLogprob] | None = None
    error: str | None = None
    cached_tokens: int = 0


class OutputBatch(msgspec.Struct, tag="outputs", array_like=True, gc=False):
    """Everything one engine step produced for one gateway."""

    outputs: list[RequestOutput]


ToWorker = GenerateRequest | AbortRequest

to_worker_decoder = msgspec.msgpack.Decoder(ToWorker)
batch_decoder = msgspec.msgpack.Decoder(OutputBatch)
encoder = msgspec.msgpack.Encoder()
