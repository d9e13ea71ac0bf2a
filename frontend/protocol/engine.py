"""Request plane between a gateway process and a backend worker.

Connections: each worker listens on one TCP port (its advertised ``endpoint``, ``tcp://HOST:PORT``); every
gateway process opens one connection per worker instance. Framing (``transport/framing.py``): a 4-byte length,
then MessagePack of a tagged Struct, per frame. A gateway writes the requests it submitted in one event-loop turn
together (one send, one wake-up of the worker, for all of them).

    gateway  --[GenerateRequest | AbortRequest | PauseRequest]-->  worker
    gateway  <--[OutputBatch]--------------------------------------  worker

A worker sends one OutputBatch per engine step per gateway connection, holding the new tokens of every request of
that gateway that advanced in the step, so that one socket read serves many streams.

Requests that produce one result instead of a token stream ("unary": embeddings, images, videos) travel on
the same connections:

    gateway  --[EmbedRequest | ImageRequest | VideoRequest | AbortRequest]-->  worker
    gateway  <--[MediaProgress]* then [EmbedResult | MediaResult | UnaryError]--  worker

Heartbeats: a gateway sends ``Ping`` on every connection each second and a worker answers ``Pong``; a gateway
that hears nothing from a worker for 3 s drops the connection (a stopped process, a lost host), and a worker
drops a gateway it has not heard from for 10 s, aborting that gateway's requests (as when its connection closes).

Requests are map-encoded like GenerateRequest; replies are array-like like OutputBatch (one msgspec union
per direction: ``to_worker_decoder`` and ``from_worker_decoder``).
"""

from __future__ import annotations

import msgspec


class GuidedDecoding(msgspec.Struct, omit_defaults=True, gc=False):
    """Structured output the engine must produce (guided / constrained decoding); exactly one of ``json``,
    ``regex``, ``choice`` and ``grammar`` is set (the frontend validated it: a JSON Schema object, a regex that
    compiles, a non-empty list of strings, a non-empty grammar). ``response_format: json_object`` arrives as
    ``json={"type": "object"}``; tool_choice required / named as the JSON Schema of the call(s)."""

    json: dict | None = None  # a JSON Schema (an object)
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None  # EBNF / Lark grammar text, as the engine's guided-decoding backend reads it
    backend: str | None = None  # guided_decoding_backend, passed through (e.g. xgrammar, outlines)
    whitespace_pattern: str | None = None


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
    guided: GuidedDecoding | None = None


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
    # W3C trace context (traceparent, tracestate) of the gateway's request span, set only while tracing is on
    # (frontend/observability/tracing.py): a worker that traces opens its span as a child of it
    trace_context: dict[str, str] | None = None
    # disaggregated serving (frontend/pipeline/disaggregation.py): ``remote_decode`` marks the prefill leg (compute
    # the prompt's KV, keep it for a decode worker, answer one output carrying ``kv_transfer_params``); on the
    # decode leg ``kv_transfer_params`` is that answer, copied verbatim (opaque to the frontend: the engine's KV
    # connector reads it, e.g. vLLM's NixlConnector)
    remote_decode: bool = False
    kv_transfer_params: dict | None = None


class AbortRequest(msgspec.Struct, tag="abort", gc=False):
    """Stop generating for this request (client went away or a stop string matched)."""

    request_id: str


class PauseRequest(msgspec.Struct, tag="pause", gc=False):
    """Stop (``paused``) or resume sending this request's outputs: its client reads too slowly. An engine that
    can, stops generating for it; otherwise the worker holds its outputs until it is resumed."""

    request_id: str
    paused: bool


class TokenLogprob(msgspec.Struct, array_like=True, gc=False):
    """Log-probability of a generated token and its best alternatives as (token_id, logprob) pairs."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]] = []


class RequestOutput(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):
    """New tokens of one request; ``finish_reason`` set on the last one (stop | length | abort | error).

    With finish reason ``error``: ``error`` says what went wrong, and ``invalid`` that the request was at fault
    (the engine refused a value: the client gets a 400 with the message, else a 502); ``retryable`` that another
    worker may continue it (this one's engine failed, not the request: the gateway migrates it). The last output
    of a prefill leg (``GenerateRequest.remote_decode``) carries ``kv_transfer_params``: where a decode worker
    finds the prompt's KV."""

    request_id: str
    token_ids: list[int]
    finish_reason: str | None = None
    logprobs: list[TokenLogprob] | None = None
    error: str | None = None
    cached_tokens: int = 0
    invalid: bool = False
    retryable: bool = False
    kv_transfer_params: dict | None = None


class OutputBatch(msgspec.Struct, tag="outputs", array_like=True, gc=False):
    """Everything one engine step produced for one gateway."""

    outputs: list[RequestOutput]


# ---- unary requests: one result per request (embeddings, images, videos) ---------------------------------


class EmbedRequest(msgspec.Struct, tag="embed", omit_defaults=True, gc=False):
    """Embed each input (token ids, tokenized by the frontend with the model's tokenizer)."""

    request_id: str
    inputs: list[list[int]]
    model: str = ""


class ImageRequest(msgspec.Struct, tag="image", omit_defaults=True, gc=False):
    """Generate ``n`` images of ``prompt``. 0 / None / "auto" mean the engine's default."""

    request_id: str
    prompt: str
    model: str = ""
    n: int = 1
    width: int = 0
    height: int = 0
    output_format: str = "png"  # png | jpeg | webp
    output_compression: int | None = None  # 0-100, jpeg and webp
    quality: str = "auto"
    background: str = "auto"  # auto | opaque | transparent (png and webp only)
    negative_prompt: str | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    seed: int | None = None


class VideoRequest(msgspec.Struct, tag="video", omit_defaults=True, gc=False):
    """Generate one video of ``prompt``; ``num_frames`` wins over ``seconds`` x ``fps``."""

    request_id: str
    prompt: str
    model: str = ""
    width: int = 0
    height: int = 0
    seconds: float | None = None
    fps: int | None = None
    num_frames: int | None = None
    output_format: str = ""  # a hint (mp4, webp, gif); the result says what was made
    negative_prompt: str | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    seed: int | None = None
    stream_frames: bool = False  # send every frame as a JPEG in MediaProgress as it is made


class EmbedResult(msgspec.Struct, tag="embedded", array_like=True, gc=False):
    """One vector per input, in order, each as little-endian float32 bytes."""

    request_id: str
    vectors: list[bytes]


class MediaItem(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):
    """One generated image or video file."""

    data: bytes
    format: str  # png | jpeg | webp | gif | mp4
    revised_prompt: str | None = None
    fps: int | None = None


class MediaResult(msgspec.Struct, tag="media", array_like=True, gc=False):
    """The generated files of an ImageRequest or VideoRequest."""

    request_id: str
    items: list[MediaItem]


class MediaProgress(msgspec.Struct, tag="progress", array_like=True, omit_defaults=True, gc=False):
    """Progress of a media request in percent; with ``stream_frames``, a new frame as JPEG bytes."""

    request_id: str
    percent: int
    frame: bytes = b""


class UnaryError(msgspec.Struct, tag="failed", array_like=True, omit_defaults=True, gc=False):
    """A unary request failed; ``invalid``: the request was at fault (the client gets a 400, else a 502)."""

    request_id: str
    message: str
    invalid: bool = False


class Ping(msgspec.Struct, tag="ping", gc=False):
    """A gateway's heartbeat; the worker answers :class:`Pong` at once."""


class Pong(msgspec.Struct, tag="pong", array_like=True, gc=False):
    """A worker's answer to :class:`Ping`."""


UnaryRequest = EmbedRequest | ImageRequest | VideoRequest
UnaryReply = EmbedResult | MediaResult | UnaryError
ToWorker = GenerateRequest | AbortRequest | PauseRequest | EmbedRequest | ImageRequest | VideoRequest | Ping
FromWorker = OutputBatch | EmbedResult | MediaResult | MediaProgress | UnaryError | Pong

to_worker_decoder = msgspec.msgpack.Decoder(ToWorker)
from_worker_decoder = msgspec.msgpack.Decoder(FromWorker)
encoder = msgspec.msgpack.Encoder()
