"""What every generating API shares (HTTP chat/completions, gRPC): request to engine request, and running it.

A :class:`Generation` owns one request's life on a worker: route and submit, read output batches through
the output pipeline, abort the worker when the client leaves or a stop string matches, release the stream
and the routing load. It knows nothing of HTTP: the caller passes the pinned instance, if any, and an
awaitable that completes when the client goes away.
"""

from __future__ import annotations

import asyncio
from typing import AsyncIterator, Awaitable, Mapping

from .discovery import ServedModel
from .engine_client import RequestStream
from .errors import ContextLengthExceeded, InvalidRequest
from .gateway import Gateway
from .metrics import GenerationObserver
from .parsers.base import OutputParser
from .postprocess.pipeline import Delta, OutputPipeline
from .protocol.engine import GenerateRequest, RequestOutput, SamplingOptions, StopConditions
from .protocol.openai import ChatCompletionRequest, CompletionRequest, PromptTokensDetails, Usage

CLIENT_GONE = "client_disconnected"

AnyRequest = ChatCompletionRequest | CompletionRequest


def reject_unsupported(request: AnyRequest) -> None:
    """Known fields whose feature is not available are a clear 400, never silently dropped."""
    if request.n != 1:
        raise InvalidRequest("n > 1 is not supported by this server yet", param="n")
    if request.logit_bias:
        raise InvalidRequest("logit_bias is not supported by this server yet", param="logit_bias")
    if isinstance(request, CompletionRequest):
        if request.best_of not in (None, 1):
            raise InvalidRequest("best_of > 1 is not supported by this server yet", param="best_of")
        if request.suffix:
            raise InvalidRequest("suffix is not supported by this server yet", param="suffix")


def stop_strings(request: AnyRequest) -> list[str]:
    stop = request.stop
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else [s for s in stop if s]


def max_new_tokens(requested: int | None, prompt_len: int, model: ServedModel, min_tokens: int,
                   prompt_param: str = "messages") -> int:
    """The generation budget; 400 when prompt plus budget exceed the context window."""
    context = model.card.context_length
    if prompt_len >= context:
        raise ContextLengthExceeded(f"This model's maximum context length is {context} tokens, but the prompt "
                                    f"has {prompt_len} tokens.", prompt_param)
    if requested is None:
        requested = context - prompt_len
    elif prompt_len + requested > context:
        raise ContextLengthExceeded(f"This model's maximum context length is {context} tokens. However, you "
                                    f"requested {prompt_len + requested} tokens ({prompt_len} in the prompt, "
                                    f"{requested} for the completion). Please reduce the length of the prompt "
                                    f"or the maximum number of tokens.", prompt_param)
    if min_tokens > requested:
        raise InvalidRequest(f"min_tokens ({min_tokens}) is greater than max_tokens ({requested})",
                             param="min_tokens")
    return requested


def engine_request(gateway: Gateway, request: AnyRequest, model: ServedModel, prompt_ids: list[int],
                   max_tokens: int | None, logprobs: int | None) -> GenerateRequest:
    min_tokens = request.min_tokens or 0
    prompt_param = "messages" if isinstance(request, ChatCompletionRequest) else "prompt"
    budget = max_new_tokens(max_tokens, len(prompt_ids), model, min_tokens, prompt_param)
    sampling = SamplingOptions(
        temperature=request.temperature, top_p=request.top_p, top_k=request.top_k, min_p=request.min_p,
        seed=request.seed, presence_penalty=request.presence_penalty,
        frequency_penalty=request.frequency_penalty, repetition_penalty=request.repetition_penalty,
        response_format=request.response_format,
    )
    stop = StopConditions(max_tokens=budget, min_tokens=min_tokens, stop_token_ids=request.stop_token_ids or [],
                          ignore_eos=request.ignore_eos, max_thinking_tokens=thinking_budget(request))
    return GenerateRequest(gateway.new_request_id(), prompt_ids, stop, sampling,
                           [] if request.ignore_eos else model.eos_token_ids, logprobs, model.name)


def thinking_budget(request: AnyRequest) -> int | None:
    """``nvext.max_thinking_tokens``: the reasoning budget the engine enforces, if any."""
    value = request.nvext.get("max_thinking_tokens") if request.nvext else None
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidRequest("nvext.max_thinking_tokens must be an integer >= 0", param="nvext.max_thinking_tokens")
    return value


PIN_HEADERS = ("x-worker-instance-id", "x-dynamo-worker-instance-id")


def pinned_instance(request: AnyRequest, headers: Mapping[str, str]) -> str | None:
    """A worker instance the client asked for: a header first, else ``nvext.backend_instance_id``."""
    for name in PIN_HEADERS:
        value = headers.get(name)
        if value:
            return value
    if request.nvext:
        value = request.nvext.get("backend_instance_id")
        if value is not None:
            return str(value)
    return None


class Generation:
    """One request running on a worker, read as a sequence of :class:`Delta`."""

    def __init__(self, gateway: Gateway, model: ServedModel, request: AnyRequest, engine_req: GenerateRequest,
                 block_hashes: bytes, *, pinned: str | None = None,
                 disconnected: Awaitable[None] | None = None, parser: OutputParser | None = None) -> None:
        self.gateway = gateway
        self.tokenizer = model.tokenizer
        self.prompt_tokens = len(engine_req.token_ids)
        self.pipeline = OutputPipeline(
            model.tokenizer, stop=stop_strings(request),
            include_stop_str_in_output=request.include_stop_str_in_output,
            skip_special_tokens=request.skip_special_tokens, prompt_tail=engine_req.token_ids[-5:], parser=parser,
        )
        self.stream, self.route = gateway.submit(model, engine_req, block_hashes, pinned)
        self.observer = GenerationObserver(gateway.metrics, model.name, request.stream)
        self._prefilled = False
        self.client_gone = False
        self._watcher: asyncio.Future | None = None
        if disconnected is not None:
            self._watcher = asyncio.ensure_future(disconnected)
            self._watcher.add_done_callback(self._on_disconnect)

    def _on_disconnect(self, task: asyncio.Future) -> None:
        if not task.cancelled():
            self.cancel()

    def cancel(self) -> None:
        """The client went away: stop reading and abort the request on the worker."""
        if not self.client_gone:
            self.client_gone = True
            self.stream.push(RequestOutput(self.stream.request_id, [], CLIENT_GONE))

    def usage(self) -> Usage:
        """Token counts so far (final once the request finished)."""
        pipeline = self.pipeline
        details = PromptTokensDetails(pipeline.cached_tokens) if pipeline.cached_tokens else None
        return Usage(self.prompt_tokens, pipeline.completion_tokens,
                     self.prompt_tokens + pipeline.completion_tokens, details)

    async def deltas(self) -> AsyncIterator[Delta]:
        """Deltas until the request finishes; always releases the worker side, aborting if unfinished."""
        finished = error = False
        try:
            while not finished:
                outputs = await self.stream.next()
                if self.client_gone:
                    return
                if not self._prefilled:
                    self._prefilled = True
                    self.gateway.router.first_token(self.route)
                before = self.pipeline.completion_tokens
                delta = self.pipeline.feed(outputs)
                if self.pipeline.completion_tokens > before:
                    self.observer.tokens(self.pipeline.completion_tokens - before)
                finished = delta.finish_reason is not None
                error = delta.error is not None
                yield delta
        finally:
            if self._watcher is not None:
                self._watcher.cancel()
            worker_done = finished and not self.pipeline.stopped_by_string
            self.gateway.engines.release(self.stream, abort=not worker_done)
            self.gateway.router.finish(self.route)
            pipeline = self.pipeline
            self.observer.finished(self.prompt_tokens, pipeline.completion_tokens, pipeline.cached_tokens,
                                   cancelled=self.client_gone or not finished, error=error)
