"""Dynamo's ``nvext`` request extensions on chat and text completions, and the response's ``nvext``.

:func:`extensions` resolves a request's ``nvext`` once, before any work is done (400 on a bad value):

* ``greed_sampling: true``: greedy decoding (temperature 0; top_p, top_k, min_p and the penalties dropped).
* ``use_raw_prompt: true``: no chat template; the text of the messages, concatenated in order, is the prompt
  (special-token markup in it is recognised). On completions: the prompt is tokenized as given, without the
  tokenizer's added special tokens (BOS).
* ``token_data: [ids]``: the prompt, already tokenized; no tokenization at all (with or without a pinned
  instance, unlike Dynamo, which uses it only together with ``backend_instance_id``). Ids must be in the
  model's vocabulary.
* ``backend_instance_id`` (or ``decode_worker_id``): pin the request to a worker instance (the
  ``x-worker-instance-id`` header wins); ``prefill_worker_id`` (header ``x-prefill-instance-id``): the prefill
  worker of a disaggregated request (``pipeline/disaggregation.py``).
* ``max_thinking_tokens``: the reasoning budget, passed to the engine.
* ``annotations``: out-of-band SSE events on streamed responses, each ``event: <name>`` with a JSON
  ``data:`` line, before the data they describe: ``request_id`` (a string), ``formatted_prompt`` (the
  rendered prompt) and ``token_ids`` (the prompt's ids) before the first chunk (one event per prompt of a
  batch, in order), ``llm_metrics`` (``{input_tokens, output_tokens, chunk_tokens, cached_tokens}`` of the
  choice: prompt length, output so far, tokens since the last event) before the chunks of every engine batch.
  Unknown names are ignored; unary responses carry none.
  (Dynamo puts the value in an SSE comment line; here it is the event's data, so standard SSE clients see
  it. The openai SDK cannot read named events: read such streams as raw SSE.)
* ``extra_fields``: ``worker_id`` and ``timing`` add a ``nvext`` object to the response (unary), or to each
  choice's final chunk (streamed); see :class:`~frontend.protocol.openai.ResponseNvExt`. Unknown names are
  ignored. With several choices the unary ``nvext`` describes choice 0.
* Dynamo's deprecated copies of root-level fields (``ignore_eos``, ``min_tokens``, ``top_k``,
  ``repetition_penalty``, ``include_stop_str_in_output``, ``guided_*``) apply when the root-level field is
  not set.

``--disable-nvext`` (env ``DYN_DISABLE_NVEXT`` or Dynamo's ``DYN_DISABLE_FRONTEND_NVEXT``) ignores every
``nvext`` field and the worker-pinning headers, as Dynamo does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

import msgspec

from ..protocol.errors import InvalidRequest
from ..protocol.openai import ChatCompletionRequest, CompletionRequest, NvExt, ResponseNvExt, TimingInfo, WorkerIdInfo
from .prepare import PREFILL_PIN_HEADERS, pin_of

if TYPE_CHECKING:
    from .generation import Generation

ANNOTATIONS = frozenset({"request_id", "formatted_prompt", "token_ids", "llm_metrics"})
EXTRA_FIELDS = frozenset({"worker_id", "timing"})


@dataclass(frozen=True, slots=True)
class Extensions:
    """A request's resolved ``nvext`` (``nvext`` is None when it has none or nvext is disabled)."""

    nvext: NvExt | None = None
    pinned: str | None = None
    pinned_prefill: str | None = None  # disaggregated serving: the prefill worker the client named
    greedy: bool = False
    raw_prompt: bool = False
    token_data: list[int] | None = None
    max_thinking_tokens: int | None = None
    annotations: frozenset[str] = frozenset()
    extra_fields: frozenset[str] = frozenset()

    @property
    def metrics_events(self) -> bool:
        return "llm_metrics" in self.annotations


NO_EXTENSIONS = Extensions()


def extensions(request: ChatCompletionRequest | CompletionRequest, headers: Mapping[str, str],
               enabled: bool = True) -> Extensions:
    """The request's nvext and pinned instance (headers first), validated; nothing when nvext is disabled."""
    if not enabled:
        return NO_EXTENSIONS
    nvext = request.nvext
    if nvext is not None and not isinstance(nvext, NvExt):
        nvext = as_nvext(nvext)
    if nvext is None:
        pinned, prefill = pin_of(headers), pin_of(headers, names=PREFILL_PIN_HEADERS)
        return Extensions(pinned=pinned, pinned_prefill=prefill) if pinned or prefill else NO_EXTENSIONS
    backend = nvext.backend_instance_id if nvext.backend_instance_id is not None else nvext.decode_worker_id
    pinned = pin_of(headers, backend)
    if nvext.token_data is not None and not nvext.token_data:
        raise InvalidRequest("nvext.token_data must not be empty", param="nvext.token_data")
    return Extensions(
        nvext, pinned, pin_of(headers, nvext.prefill_worker_id, PREFILL_PIN_HEADERS), bool(nvext.greed_sampling),
        bool(nvext.use_raw_prompt), nvext.token_data,
        nvext.max_thinking_tokens, ANNOTATIONS.intersection(nvext.annotations or ()),
        EXTRA_FIELDS.intersection(nvext.extra_fields or ()),
    )


def as_nvext(value: Any) -> NvExt | None:
    """The typed nvext (the Responses and Anthropic translations may hand over a plain dict)."""
    if value is None or isinstance(value, NvExt):
        return value
    try:
        return msgspec.convert(value, NvExt)
    except msgspec.ValidationError as exc:
        message = str(exc)
        param = "nvext"
        if " - at `$." in message:
            param += "." + message.rsplit(" - at `$.", 1)[1].rstrip("`")
        raise InvalidRequest(f"invalid nvext: {message}", param=param) from None


def raw_chat_prompt(request: ChatCompletionRequest) -> str:
    """``use_raw_prompt``: the messages' text, concatenated in order, instead of the chat template."""
    parts = []
    for message in request.messages:
        content = message.content
        if isinstance(content, str):
            parts.append(content)
        elif content:
            parts.extend(part.text for part in content if hasattr(part, "text"))
    return "".join(parts)


def check_token_ids(ids: list[int], vocab_size: int, param: str) -> None:
    """400 unless every id is in the vocabulary."""
    if not ids:
        raise InvalidRequest(f"{param} must not be empty", param=param)
    highest = max(ids)
    if highest >= vocab_size:
        raise InvalidRequest(f"{param}: token id {highest} is outside the vocabulary (size {vocab_size})",
                             param=param)


# ---- SSE annotations -------------------------------------------------------------------------------------

_encode = msgspec.json.encode


def annotation(name: str, value: Any) -> bytes:
    """One annotation event: ``event: <name>`` and the value as JSON."""
    return b"event: " + name.encode() + b"\ndata: " + _encode(value) + b"\n\n"


def prompt_annotations(ext: Extensions, request_id: str, prompts: list[list[int]], tokenizer) -> bytes:
    """The events asked for before the first chunk (formatted_prompt and token_ids once per prompt)."""
    wanted = ext.annotations
    out = b""
    if "request_id" in wanted:
        out += annotation("request_id", request_id)
    if "formatted_prompt" in wanted:
        out += b"".join(annotation("formatted_prompt", tokenizer.decode(ids, skip_special_tokens=False))
                        for ids in prompts)
    if "token_ids" in wanted:
        out += b"".join(annotation("token_ids", ids) for ids in prompts)
    return out


class MetricsEvents:
    """``llm_metrics`` events of one choice: cumulative output tokens and the tokens of each chunk."""

    __slots__ = ("generation", "reported")

    def __init__(self, generation: Generation) -> None:
        self.generation = generation
        self.reported = 0

    def event(self) -> bytes:
        pipeline = self.generation.pipeline
        total = pipeline.completion_tokens
        chunk, self.reported = total - self.reported, total
        return annotation("llm_metrics", {"input_tokens": self.generation.prompt_tokens, "output_tokens": total,
                                          "chunk_tokens": chunk, "cached_tokens": pipeline.cached_tokens})


# ---- response nvext --------------------------------------------------------------------------------------


def response_nvext(ext: Extensions, generation: Generation) -> ResponseNvExt | msgspec.UnsetType:
    """The response's ``nvext`` for ``extra_fields`` (UNSET: the field is left out)."""
    fields = ext.extra_fields
    if not fields:
        return msgspec.UNSET
    worker = timing = None
    if "worker_id" in fields:
        instance = generation.route.instance_id
        worker = WorkerIdInfo(generation.prefill_worker or instance, instance)
    if "timing" in fields:
        started = generation.started
        received_ms = int((time.time() - (time.perf_counter() - started)) * 1000)
        first, last = generation.first_token_at, generation.finished_at
        ttft = (first - started) * 1000 if first else None
        total = (last - started) * 1000 if last else None
        tokens = generation.pipeline.completion_tokens
        itl = (last - first) * 1000 / (tokens - 1) if first and last and tokens > 1 else None
        timing = TimingInfo(received_ms, _ms(ttft), _ms(total), _ms(itl))
    return ResponseNvExt(worker, timing)


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
