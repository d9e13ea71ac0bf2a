"""What every generating API shares (HTTP chat/completions, gRPC): request to engine request, and running it.

A :class:`Generation` owns one engine request's life on a worker: submit (route and stream, one
:class:`~frontend.gateway.submission.Submission`), read output batches through the output pipeline, abort the
worker when the client leaves or a stop string matches, release the submission; continue on another worker
when its worker goes away or fails it with a retryable error (migration). It knows nothing of HTTP: the caller
passes the pinned instance, if any, and an awaitable that completes when the client goes away.

Several choices (``n > 1``, or a batch of completion prompts) are one engine request each, all started
before the first is read (:class:`Choices`): choice ``i`` of a request with a ``seed`` gets the seed
``seed + i``, so choice 0 is what the same request with ``n = 1`` answers; without a seed the choices are
independent samples (identical under greedy decoding). They share one disconnect watch and one metrics
observer (the request counts once); :func:`choice_batches` interleaves their deltas as they come, and
:func:`collect` / :func:`collect_all` read whole generations for unary answers.

Owners release by construction: ``Generation``, ``Choices`` (and ``ChatSession`` over them) are async context
managers whose exit releases every submission not released yet, so a front door that leaves early (client
gone before the first byte, an exception) cannot leave load counters raised or a worker generating.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import aclosing
from typing import AsyncIterator, Callable, Protocol

import msgspec

from ..gateway.discovery import ServedModel
from ..gateway.state import Gateway
from ..gateway.submission import Submission
from ..kv import block_hashes
from ..observability.metrics import GenerationObserver, WorkerTiming
from ..observability.tracing import CURRENT_TRACE, TracedObserver
from ..parsers.base import OutputParser, Segment, merge
from ..postprocess.pipeline import Delta, OutputPipeline
from ..postprocess.plain_tokens import PlainTokens
from ..protocol.engine import (GenerateRequest, GuidedDecoding, RequestOutput, SamplingOptions, StopConditions,
                               TokenLogprob)
from ..protocol.errors import ContextLengthExceeded, InvalidRequest, RequestError, WorkerGone
from ..protocol.openai import ChatCompletionRequest, CompletionRequest, PromptTokensDetails, Usage
from ..router.select import Route
from ..transport.end_of_turn import TurnWriter
from .disaggregation import first_submission, prefill_result
from .disconnect import DisconnectSource, DisconnectWatch
from .nvext import NO_EXTENSIONS, Extensions

MAX_CHOICES = 1024  # prompts x n of one request

log = logging.getLogger(__name__)

AnyRequest = ChatCompletionRequest | CompletionRequest


def reject_unsupported(request: AnyRequest) -> None:
    """Known fields whose feature is not available are a clear 400, never silently dropped."""
    if request.logit_bias:
        raise InvalidRequest("logit_bias is not supported by this server yet", param="logit_bias")
    if isinstance(request, ChatCompletionRequest):
        if request.top_logprobs and not request.logprobs:
            raise InvalidRequest("top_logprobs needs logprobs: true", param="top_logprobs")
    else:
        if request.best_of not in (None, 1):
            raise InvalidRequest("best_of > 1 is not supported by this server yet", param="best_of")
        if request.suffix:
            raise InvalidRequest("suffix (fill-in-the-middle) is not supported: the served engines cannot insert "
                                 "text between a prompt and a suffix", param="suffix")


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
                                    f"has {prompt_len} tokens.", prompt_param, prompt_tokens=prompt_len,
                                    context_length=context, requested=requested)
    if requested is None:
        requested = context - prompt_len
    elif prompt_len + requested > context:
        raise ContextLengthExceeded(f"This model's maximum context length is {context} tokens. However, you "
                                    f"requested {prompt_len + requested} tokens ({prompt_len} in the prompt, "
                                    f"{requested} for the completion). Please reduce the length of the prompt "
                                    f"or the maximum number of tokens.", prompt_param, prompt_tokens=prompt_len,
                                    context_length=context, requested=requested)
    if min_tokens > requested:
        raise InvalidRequest(f"min_tokens ({min_tokens}) is greater than max_tokens ({requested})",
                             param="min_tokens")
    return requested


def engine_request(gateway: Gateway, request: AnyRequest, model: ServedModel, prompt_ids: list[int],
                   max_tokens: int | None, logprobs: int | None, *, ext: Extensions = NO_EXTENSIONS,
                   guided: GuidedDecoding | None = None, choice: int = 0) -> GenerateRequest:
    """The engine request of one choice (``choice`` > 0 derives its seed); budget checked (400)."""
    nvext = ext.nvext
    min_tokens = request.min_tokens
    top_k, repetition_penalty, ignore_eos = request.top_k, request.repetition_penalty, request.ignore_eos
    if nvext is not None:  # Dynamo's deprecated nvext copies of root-level fields: the root wins
        min_tokens = nvext.min_tokens if min_tokens is None else min_tokens
        top_k = nvext.top_k if top_k is None else top_k
        repetition_penalty = nvext.repetition_penalty if repetition_penalty is None else repetition_penalty
        ignore_eos = ignore_eos or bool(nvext.ignore_eos)
    min_tokens = min_tokens or 0
    prompt_param = "messages" if isinstance(request, ChatCompletionRequest) else "prompt"
    budget = max_new_tokens(max_tokens, len(prompt_ids), model, min_tokens, prompt_param)
    seed = request.seed
    if seed is not None and choice:
        seed = (seed + choice + 2**63) % 2**64 - 2**63  # stays a signed 64-bit integer
    if ext.greedy:
        sampling = SamplingOptions(temperature=0.0, seed=seed, guided=guided)
    else:
        sampling = SamplingOptions(
            temperature=request.temperature, top_p=request.top_p, top_k=top_k, min_p=request.min_p, seed=seed,
            presence_penalty=request.presence_penalty, frequency_penalty=request.frequency_penalty,
            repetition_penalty=repetition_penalty, guided=guided,
        )
    stop = StopConditions(max_tokens=budget, min_tokens=min_tokens, stop_token_ids=request.stop_token_ids or [],
                          ignore_eos=ignore_eos, max_thinking_tokens=ext.max_thinking_tokens)
    return GenerateRequest(gateway.new_request_id(), prompt_ids, stop, sampling,
                           [] if ignore_eos else model.eos_token_ids, logprobs, model.name)


def new_observer(gateway: Gateway, model: ServedModel, stream: bool) -> GenerationObserver | TracedObserver:
    """A request's metrics observer; with tracing on, one that also gives the request's trace its first token and
    totals (``observability.tracing.TracedObserver``)."""
    observer = GenerationObserver(gateway.metrics, model.name, stream)
    trace = CURRENT_TRACE.get()
    return observer if trace is None else trace.observe(observer, model.name)


class PlainEvent(Protocol):
    """A streamed text delta's event: ``prefix``, the text as a JSON string, ``suffix`` (``http/reply.TextEvent``)."""

    prefix: bytes
    suffix: bytes


class Generation:
    """One request running on a worker, read as a sequence of :class:`Delta`.

    It owns its :class:`~frontend.gateway.submission.Submission` (route and stream) and releases it once, when
    ``deltas()`` ends or when its owner leaves (``async with``, ``Choices.close``), whichever comes first.
    """

    __slots__ = ("gateway", "model", "request", "tokenizer", "prompt_tokens", "pipeline", "submission", "stream",
                 "observer", "timing", "started", "first_token_at", "finished_at", "_prefilled", "_worker_prefilled",
                 "client_gone", "_watcher", "_errored", "_released", "output_ids", "migrations", "_prefill",
                 "prefill_worker", "_direct_ready", "_direct_write", "_direct_end", "_plain")

    def __init__(self, gateway: Gateway, model: ServedModel, request: AnyRequest, engine_req: GenerateRequest,
                 block_hashes: bytes, *, pinned: str | None = None,
                 disconnected: DisconnectSource | None = None, parser: OutputParser | None = None,
                 ext: Extensions = NO_EXTENSIONS, observer: GenerationObserver | None = None) -> None:
        self.gateway = gateway
        self.model = model
        self.request = engine_req
        self.tokenizer = model.tokenizer
        self.prompt_tokens = len(engine_req.token_ids)
        # the tokens generated so far, kept only while the request may migrate to another worker
        self.output_ids: list[int] | None = [] if self._may_migrate() else None
        self.migrations = 0
        include_stop = request.include_stop_str_in_output
        if ext.nvext is not None and not include_stop:  # Dynamo's deprecated nvext copy
            include_stop = bool(ext.nvext.include_stop_str_in_output)
        self.pipeline = OutputPipeline(
            model.tokenizer, stop=stop_strings(request), include_stop_str_in_output=include_stop,
            skip_special_tokens=request.skip_special_tokens, prompt_tail=engine_req.token_ids[-5:], parser=parser,
        )
        # a disaggregated request starts with its prefill leg (pipeline/disaggregation.py); None: served whole, or
        # its decode leg is on
        self.submission, self._prefill = first_submission(gateway, model, engine_req, block_hashes, pinned,
                                                          ext.pinned_prefill)
        self.stream = self.submission.stream
        self.prefill_worker: str | None = None  # the prefill worker whose KV the decode leg took
        self.observer = observer or new_observer(gateway, model, request.stream)
        self.started = self.observer.started  # perf_counter() when the HTTP request arrived
        self.first_token_at = 0.0
        self.finished_at = 0.0
        self.timing = WorkerTiming(gateway.metrics, self.started, self.prompt_tokens)  # per-worker last TTFT, ITL
        self._prefilled = self._worker_prefilled = False
        self.client_gone = False
        self._errored = self._released = False
        self._watcher = (DisconnectWatch(gateway.loop, disconnected, self.cancel) if disconnected is not None
                         else None)
        self._direct_ready: Callable[[], bool] | None = None  # see write_directly
        self._direct_write: Callable[[Delta], bool] | None = None
        self._direct_end: list[Delta] = []  # a delta the direct path made that ends the stream, for batches()
        self._plain: PlainTokens | None = None  # the direct path's native writer of plain text outputs

    @property
    def route(self) -> Route:
        return self.submission.route

    async def __aenter__(self) -> "Generation":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()

    def cancel(self) -> None:
        """The client went away: stop reading and abort the request on the worker."""
        if not self.client_gone:
            self.client_gone = True
            self.stream.plain = None
            self.stream.wake()

    def usage(self) -> Usage:
        """Token counts so far (final once the request finished)."""
        pipeline = self.pipeline
        cached = min(pipeline.cached_tokens, self.prompt_tokens)  # a migrated request's worker counts its output
        details = PromptTokensDetails(cached) if cached else None
        return Usage(self.prompt_tokens, pipeline.completion_tokens,
                     self.prompt_tokens + pipeline.completion_tokens, details)

    def write_directly(self, ready: Callable[[], bool], write: Callable[[Delta], bool],
                       plain_event: PlainEvent | None = None, writer: TurnWriter | None = None) -> None:
        """Have :meth:`batches` (``per_output``) leave plain outputs to ``write``, called where they arrive (the
        socket callback) while its reader waits with nothing queued: no task wake-up, no generator frames per
        token. An output goes this way when ``ready()`` (the writer need not wait for a slow client), it is not
        the first of its worker (time to first token), it ends nothing (no finish reason, no failure) and no
        prefill leg is running; everything else is read by :meth:`batches` as before, in order. A stop string that
        matches there ends the stream through :meth:`batches`; ``write`` returning False (the client left)
        cancels the generation.

        ``plain_event`` (the event's bytes around the JSON string of the text, when that is all ``write`` makes of
        a delta of text alone) and ``writer`` (the response's, which ``ready`` and ``write`` use) let a choice with
        no stop strings, text stages, output parser or logprobs, whose tokenizer has a piece table, have such
        outputs written by the gateway in one native call each (``RequestStream.plain``,
        ``postprocess/plain_tokens``: the same bytes, counters and metrics)."""
        self._direct_ready, self._direct_write = ready, write
        if (plain_event is not None and writer is not None and self.pipeline.plain_text
                and type(self.observer) is GenerationObserver):
            self._plain = PlainTokens(self.pipeline, self.observer, self.timing, plain_event.prefix,
                                      plain_event.suffix, writer, self.output_ids, self.cancel)

    def _direct_output(self, output: RequestOutput) -> bool:
        """``RequestStream.direct``: handle ``output`` here (True) or leave it to :meth:`batches` (False)."""
        pipeline = self.pipeline
        if pipeline.finish_reason is not None:
            return True  # what a worker sends after a stop string matched here is dropped, as batches() would
        if (output.finish_reason is not None or output.retryable or self.client_gone or self._prefill is not None
                or not self._worker_prefilled or not self._direct_ready()):
            return False
        try:
            if self.output_ids is not None:
                self.output_ids += output.token_ids
            before = pipeline.completion_tokens
            delta = pipeline.feed([output])
            self._count_tokens(pipeline.completion_tokens - before)
            if delta.finish_reason is not None:  # a stop string matched
                self._direct_end.append(delta)
                self.stream.wake()
            elif not self._direct_write(delta):
                self.cancel()
        except Exception:  # a bug fails this stream only, not the other streams of the worker's message
            log.exception("streaming an output failed", extra={"request_id": self.request.request_id})
            self.cancel()
        return True

    def _count_tokens(self, count: int) -> None:
        if count:
            self.observer.tokens(count)
            self.timing.tokens(self.submission.route.instance_id, count)

    async def deltas(self) -> AsyncIterator[Delta]:
        """One delta per wake-up: everything that arrived since the last one, folded (for readers that do not
        stream events: unary answers, gRPC). See :meth:`batches`."""
        async with aclosing(self.batches(per_output=False)) as batches:
            async for batch in batches:
                yield batch[0]

    async def batches(self, *, per_output: bool) -> AsyncIterator[list[Delta]]:
        """The deltas of every engine output that arrived since the last batch, until the request finishes or
        the client leaves: one delta per engine output with ``per_output``, else one delta for them all. The
        worker's failure is raised as a :class:`~frontend.protocol.errors.RequestError` (``WorkerGone``,
        ``EngineError``, or ``InvalidRequest`` when the engine refused the request) after the deltas of the
        outputs before it. Always releases the worker side (:meth:`release`)."""
        finished = False
        pipeline = self.pipeline
        try:
            while not finished:
                stream = self.stream  # another one after a migration or a prefill leg
                stream.direct = self._direct_output if per_output and self._direct_write is not None else None
                # the gateway writes plain outputs itself once this worker's first output was read here
                stream.plain = (self._plain if per_output and self._worker_prefilled and self._prefill is None
                                and not self.client_gone else None)
                try:
                    outputs = await stream.next()
                except WorkerGone:
                    if self.client_gone:
                        raise
                    if not (self._prefill_failed("worker_gone") if self._prefill is not None
                            else self._migrate("worker_gone")):
                        raise
                    continue
                if self.client_gone:
                    return
                if self._direct_end:  # the direct path's stop string match ends the stream
                    deltas, self._direct_end = self._direct_end, []
                    self.finished_at = time.perf_counter()
                    yield deltas
                    return
                if self._prefill is not None:
                    self._prefill_outputs(outputs)
                    continue
                if not self._worker_prefilled:
                    self._first_output()
                if self.output_ids is not None:
                    for output in outputs:
                        self.output_ids += output.token_ids
                    if outputs[-1].retryable and self._migrate("engine_error"):
                        outputs = _without_failure(outputs)
                        if not outputs:
                            continue
                before = pipeline.completion_tokens
                deltas = pipeline.feed_each(outputs) if per_output and len(outputs) > 1 else [pipeline.feed(outputs)]
                self._count_tokens(pipeline.completion_tokens - before)
                last = deltas[-1]
                if last.finish_reason is not None:
                    finished = True
                    self.finished_at = time.perf_counter()
                if last.error is not None:
                    error = last.error
                    if len(deltas) > 1:
                        yield deltas[:-1]
                    deltas = last = None
                    try:
                        raise error
                    finally:
                        error = None  # no cycle through this frame: the error's traceback holds it
                yield deltas
        except RequestError:
            self._errored = True
            raise
        finally:
            self.release()

    def _prefill_outputs(self, outputs: list[RequestOutput]) -> None:
        """Outputs of the prefill leg (its token is dropped): at its end, the decode leg starts with its KV transfer
        parameters, or the prefill is tried again, or the request is served whole (``PrefillLeg.failed``)."""
        last = outputs[-1]
        if last.finish_reason is None:
            return
        prefill = self._prefill
        params, reason, error = prefill_result(last)
        if params is not None:
            self._prefill = None
            self.prefill_worker = self.submission.route.instance_id
            self._switch_to(prefill.decode(params))
        elif reason == "invalid" or not self._prefill_failed(reason):
            try:
                raise error
            finally:
                error = None  # no cycle through this frame: the error's traceback holds it

    def _prefill_failed(self, reason: str) -> bool:
        """Go on after a failed prefill leg (``PrefillLeg.failed``); False when the request cannot."""
        prefill = self._prefill
        submission = prefill.failed(reason)
        if submission is None:
            return False
        self._switch_to(submission)
        if submission.route.instance_id not in prefill.tried:
            self._prefill = None  # served whole by a decode worker
        return True

    def _switch_to(self, submission: Submission) -> None:
        """Read on from ``submission``; the one before ended on its worker (or its worker is gone)."""
        self.stream.direct = self.stream.plain = None
        self.submission.release(abort=False)
        self.submission, self.stream = submission, submission.stream
        self._worker_prefilled = False

    def _first_output(self) -> None:
        self._worker_prefilled = True
        self.submission.first_token()
        self.timing.serving(self.submission.route.instance_id)  # the direct path's outputs are this worker's
        if not self._prefilled:
            self._prefilled = True
            self.first_token_at = time.perf_counter()

    def _may_migrate(self) -> bool:
        """Migration is on and can serve this request (structured output cannot resume mid-document)."""
        return self.gateway.settings.router.migration_limit > 0 and self.request.sampling.guided is None

    def _migrate(self, reason: str) -> bool:
        """The worker went away before the end, or its engine failed the request with a retryable error:
        continue on another live worker with the prompt plus the tokens generated so far, the remaining budget
        and the same sampling (seed advanced), reading on into the same output pipeline, so that the client
        sees one stream. False when it cannot (limit reached, too long, no other worker): the caller reports
        the worker's failure."""
        settings = self.gateway.settings.router
        generated = self.output_ids
        if generated is None or self.migrations >= settings.migration_limit:
            return False
        request = self.request
        token_ids = request.token_ids + generated
        remaining = request.stop.max_tokens - len(generated)
        if remaining <= 0 or (settings.migration_max_seq_len and len(token_ids) > settings.migration_max_seq_len):
            return False
        seed = request.sampling.seed
        if seed is not None:
            seed = (seed + len(generated) + 2**63) % 2**64 - 2**63
        moved = msgspec.structs.replace(
            request, request_id=self.gateway.new_request_id(), token_ids=token_ids,
            stop=msgspec.structs.replace(request.stop, max_tokens=remaining,
                                         min_tokens=max(0, request.stop.min_tokens - len(generated))),
            sampling=msgspec.structs.replace(request.sampling, seed=seed))
        try:
            submission = self.gateway.submit(self.model, moved, prompt_tokens=len(token_ids),
                                             block_hashes=block_hashes(token_ids, self.model.block_size).tobytes(),
                                             avoid=(self.submission.route.instance_id,))
        except RequestError:
            return False  # no other live worker: the original failure stands
        self._switch_to(submission)
        self.migrations += 1
        self.gateway.metrics.inc("model_migration_total", (("model", self.model.name), ("reason", reason)))
        log.info("request migrated", extra={"model": self.model.name, "to": submission.route.instance_id,
                                            "generated": len(generated), "migration": self.migrations})
        return True

    def release(self) -> None:
        """Release the worker side, once: stop watching the client, release the submission (aborting the
        worker unless it finished there), record the metrics. ``deltas()`` calls it when it ends; so does the
        owner of a generation that may never be read (its client left before the first byte)."""
        if self._released:
            return
        self._released = True
        self._stop_watching()
        self._stop_direct()
        finished = self.finished_at != 0.0
        self.submission.release(abort=not finished or self.pipeline.stopped_by_string)
        pipeline = self.pipeline
        self.observer.finished(self.prompt_tokens, pipeline.completion_tokens, pipeline.cached_tokens,
                               cancelled=self.client_gone or not finished, error=self._errored)

    def _stop_watching(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()

    def _stop_direct(self) -> None:
        """Drop the direct path's references (its writer holds the response stream, which Granian ends only once
        it is freed)."""
        self.stream.direct = self.stream.plain = None
        self._direct_ready = self._direct_write = None
        self._plain = None

    def abandon(self) -> None:
        """Release a generation that will never be read (a later choice of its request failed to start)."""
        if self._released:
            return
        self._released = True
        self._stop_watching()
        self.submission.release()
        self.observer.finished(self.prompt_tokens, 0, 0, cancelled=False, error=False)


def _without_failure(outputs: list[RequestOutput]) -> list[RequestOutput]:
    """A batch whose last output is a retryable failure, without the failure (its tokens, if any, kept)."""
    failed = outputs[-1]
    kept = outputs[:-1]
    if failed.token_ids:
        kept.append(RequestOutput(failed.request_id, failed.token_ids, logprobs=failed.logprobs,
                                  cached_tokens=failed.cached_tokens))
    return kept


# ---- several choices -----------------------------------------------------------------------------------


class SharedObserver:
    """One request's metrics observer shared by its choices: tokens of every choice count, and the request
    is finished once, when its last choice is (input tokens: each prompt once)."""

    __slots__ = ("observer", "started", "pending", "prompt_tokens", "output_tokens", "cached_tokens",
                 "cancelled", "error")

    def __init__(self, observer: GenerationObserver | TracedObserver, choices: int, prompt_tokens: int) -> None:
        self.observer = observer
        self.started = observer.started
        self.pending = choices
        self.prompt_tokens = prompt_tokens
        self.output_tokens = self.cached_tokens = 0
        self.cancelled = self.error = False

    def tokens(self, count: int) -> None:
        self.observer.tokens(count)

    def finished(self, prompt_tokens: int, output_tokens: int, cached_tokens: int, *, cancelled: bool,
                 error: bool) -> None:
        self.output_tokens += output_tokens
        self.cached_tokens = max(self.cached_tokens, cached_tokens)
        self.cancelled |= cancelled
        self.error |= error
        self.drop(1)

    def drop(self, count: int) -> None:
        """``count`` choices are over (or will never start)."""
        self.pending -= count
        if self.pending == 0:
            self.observer.finished(self.prompt_tokens, self.output_tokens, self.cached_tokens,
                                   cancelled=self.cancelled, error=self.error)


class Choices:
    """The generations of one request's choices, started together; ``groups[p]`` are prompt ``p``'s ``n``
    choices and choice ``p * n + i`` is ``groups[p][i]``, as OpenAI numbers them."""

    def __init__(self, disconnected: DisconnectSource | None) -> None:
        self._disconnected = disconnected
        self._shared: DisconnectWatch | None = None
        self.groups: list[list[Generation]] = []

    @property
    def all(self) -> list[Generation]:
        return [generation for group in self.groups for generation in group]

    def start(self, gateway: Gateway, model: ServedModel, request: AnyRequest, prompts: list[list[int]],
              hashes: list[bytes], make_request: Callable[[list[int], int], GenerateRequest], *,
              pinned: str | None, ext: Extensions = NO_EXTENSIONS,
              parser: Callable[[], OutputParser | None] | None = None) -> "Choices":
        """Submit ``request.n`` engine requests per prompt; on any failure release those already started."""
        n = request.n
        if n == 1 and len(prompts) == 1:  # the common case, kept short
            self.groups.append([Generation(gateway, model, request, make_request(prompts[0], 0), hashes[0],
                                           pinned=pinned, disconnected=self._disconnected,
                                           parser=parser() if parser else None, ext=ext)])
            return self
        observer = SharedObserver(new_observer(gateway, model, request.stream), len(prompts) * n,
                                  sum(len(ids) for ids in prompts))
        started = 0
        try:
            for ids, block_hashes in zip(prompts, hashes):
                group: list[Generation] = []
                self.groups.append(group)
                for i in range(n):
                    engine_req = make_request(ids, i)
                    group.append(Generation(
                        gateway, model, request, engine_req, block_hashes, pinned=pinned, ext=ext,
                        parser=parser() if parser else None, observer=observer))  # type: ignore[arg-type]
                    started += 1
        except BaseException:
            for generation in self.all:
                generation.abandon()
            observer.drop(len(prompts) * n - started)
            raise
        if self._disconnected is not None:  # one watch for all the choices
            self._shared = DisconnectWatch(gateway.loop, self._disconnected, self._cancel_all)
        return self

    def _cancel_all(self) -> None:
        for generation in self.all:
            generation.cancel()

    def usage(self) -> Usage:
        """Every prompt once, every choice's output."""
        return combined_usage(self.groups)

    def close(self) -> None:
        """The request is over: stop watching for the client's disconnect and release every generation not
        released yet (one whose stream was never read: the client left before the first byte)."""
        if self._shared is not None:
            self._shared.stop()
        for generation in self.all:
            generation.release()

    async def __aenter__(self) -> "Choices":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


def combined_usage(groups: list[list[Generation]]) -> Usage:
    """Usage of several choices: each prompt counted once, the completion tokens of every choice summed."""
    if len(groups) == 1 and len(groups[0]) == 1:
        return groups[0][0].usage()
    prompt = sum(group[0].prompt_tokens for group in groups)
    completion = sum(generation.pipeline.completion_tokens for group in groups for generation in group)
    cached = sum(max(generation.pipeline.cached_tokens for generation in group) for group in groups)
    return Usage(prompt, completion, prompt + completion, PromptTokensDetails(cached) if cached else None)


async def choice_batches(generations: list[Generation], *, per_output: bool
                         ) -> AsyncIterator[tuple[int, list[Delta]]]:
    """``(choice index, deltas)`` of one or several generations as they come (see :meth:`Generation.batches`; a
    worker's failure raised). Read it inside ``contextlib.aclosing``: closing it stops the generations still
    running, which aborts them on their workers."""
    if len(generations) == 1:
        async with aclosing(generations[0].batches(per_output=per_output)) as batches:
            async for batch in batches:
                yield 0, batch
        return
    queue: asyncio.Queue[tuple[int, list[Delta] | BaseException | None]] = asyncio.Queue()

    async def pump(index: int, generation: Generation) -> None:
        try:
            async for batch in generation.batches(per_output=per_output):
                queue.put_nowait((index, batch))
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # the worker's failure (or a bug): re-raised by the reader
            queue.put_nowait((index, exc))
        finally:
            queue.put_nowait((index, None))

    tasks = [asyncio.ensure_future(pump(index, generation)) for index, generation in enumerate(generations)]
    running = len(tasks)
    try:
        while running:
            index, item = await queue.get()
            if item is None:
                running -= 1
            elif isinstance(item, BaseException):
                try:
                    raise item
                finally:
                    item = None  # no cycle through this frame: the error's traceback holds it
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()


class Collected(msgspec.Struct):
    """A whole generation: its text, its parsed segments (merged; None without a parser), logprobs and
    finish reason."""

    text: str
    segments: list[Segment] | None
    logprobs: list[TokenLogprob]
    finish_reason: str


async def collect(generation: Generation) -> Collected | None:
    """Run a generation to its end (the worker's failure raised); None when the client went away."""
    parts: list[str] = []
    segments: list[Segment] | None = None
    logprobs: list[TokenLogprob] = []
    finish_reason = "stop"
    async with aclosing(generation.deltas()) as deltas:
        async for delta in deltas:
            parts.append(delta.text)
            if delta.segments is not None:
                segments = (segments or []) + delta.segments
            if delta.logprobs:
                logprobs.extend(delta.logprobs)
            if delta.finish_reason is not None:
                finish_reason = delta.finish_reason
    if generation.client_gone:
        return None
    return Collected("".join(parts), None if segments is None else merge(segments), logprobs, finish_reason)


async def collect_all(generations: list[Generation]) -> list[Collected] | None:
    """Every generation to its end, concurrently (the first failure cancels the others); None when the
    client went away."""
    if len(generations) == 1:
        collected = await collect(generations[0])
        return None if collected is None else [collected]
    tasks = [asyncio.ensure_future(collect(generation)) for generation in generations]
    try:
        results = await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
    return None if any(result is None for result in results) else results
