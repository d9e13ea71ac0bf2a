"""POST /v1/completions: unary and streamed (SSE) text completions.

``prompt`` is a string, token ids, or a batch: a list of strings or of token-id lists. Every prompt gets
``n`` choices, each its own generation; choice ``prompt_index * n + i`` is the i-th of prompt
``prompt_index`` (OpenAI's numbering). Usage counts every prompt once and the output of every choice.
``echo`` puts each choice's prompt before its text (streamed: as the choice's first chunk); ``logprobs: N``
gives the generated tokens' logprobs with ``text_offset`` into the returned text (echoed prompt included).
``suffix`` (fill-in-the-middle) is a 400: no served engine can do it.
"""

from __future__ import annotations

import asyncio
import time

import msgspec

from ..gateway.state import Gateway
from ..kv import block_hashes
from ..pipeline.generation import MAX_CHOICES, Choices, collect_all, engine_request, reject_unsupported
from ..pipeline.guided import guided_decoding
from ..pipeline.nvext import Extensions, MetricsEvents, check_token_ids, extensions, prompt_annotations, response_nvext
from ..pipeline.prepare import check_limits, served_model
from ..protocol.errors import InvalidRequest
from ..protocol.openai import Completion, CompletionChoice, CompletionRequest
from .logprobs import completion_logprobs
from .reply import SSE_DONE, SSE_HEADERS, TEXT_SLOT, TextEvent, send_json, sse_error, sse_event
from .streaming import StreamEnd, StreamWriter, decode_request, open_stream, stream_deltas

_decoder = msgspec.json.Decoder(CompletionRequest)
_BATCH_HINT = "prompt must be a string, a list of strings, a list of token ids or a list of token-id lists"


def prompts_of(prompt: str | list) -> list[str | list[int]]:
    """The request's prompts: strings or token-id lists (400 on an empty or mixed prompt)."""
    if isinstance(prompt, str):
        return [prompt]
    if not prompt:
        raise InvalidRequest("prompt must not be empty", param="prompt")
    kinds = {type(item) for item in prompt}
    if len(kinds) != 1:
        raise InvalidRequest(_BATCH_HINT, param="prompt")
    if kinds == {int}:
        return [prompt]
    return list(prompt)


async def handle(gateway: Gateway, scope, proto, body: bytes) -> None:
    request: CompletionRequest = decode_request(_decoder, body)
    check_limits(request, gateway.settings.limits, len(body))
    ext = extensions(request, scope.headers, gateway.settings.apis.nvext)
    reject_unsupported(request)
    guided = guided_decoding(request, ext.nvext)
    prompts = [list(ext.token_data)] if ext.token_data is not None else prompts_of(request.prompt)
    if len(prompts) * request.n > MAX_CHOICES:
        raise InvalidRequest(f"prompts x n is {len(prompts) * request.n}; at most {MAX_CHOICES} choices per request",
                             param="n")
    model = served_model(gateway, request.model, "completions")
    tokenized = await asyncio.gather(*(_tokenize(gateway, model, request, body, prompt, ext, len(prompts) > 1)
                                       for prompt in prompts))
    prompt_ids = [ids for ids, _ in tokenized]
    choices = Choices(proto.client_disconnect).start(
        gateway, model, request, prompt_ids, [hashes for _, hashes in tokenized],
        lambda ids, i: engine_request(gateway, request, model, ids, request.max_tokens, request.logprobs, ext=ext,
                                      guided=guided, choice=i),
        pinned=ext.pinned, ext=ext)
    async with choices:
        echoes = [model.tokenizer.decode(ids, skip_special_tokens=False) if request.echo else "" for ids in prompt_ids]
        run = _Run(choices, request.n, echoes, ext, "cmpl-" + choices.all[0].stream.request_id, model.name)
        if request.stream:
            include_usage = request.stream_options is not None and request.stream_options.include_usage
            await run.stream(open_stream(gateway, scope, proto, SSE_HEADERS), include_usage, prompt_ids)
        else:
            await run.unary(proto)


async def _tokenize(gateway: Gateway, model, request: CompletionRequest, body: bytes, prompt: str | list[int],
                    ext: Extensions, batch: bool) -> tuple[list[int], bytes]:
    """One prompt's token ids and block hashes (token ids are checked against the vocabulary)."""
    if isinstance(prompt, str):
        if ext.raw_prompt:
            single = msgspec.json.encode({"prompt": prompt, "add_special_tokens": False})
        else:
            single = body if not batch and isinstance(request.prompt, str) else msgspec.json.encode({"prompt": prompt})
        ids, hashes = await gateway.tokenizer.tokenize(model.files_path, "completion", single, model.block_size)
        if not ids:
            raise InvalidRequest("prompt must not be empty", param="prompt")
        return ids, hashes
    param = "nvext.token_data" if ext.token_data is not None else "prompt"
    check_token_ids(prompt, model.tokenizer.get_vocab_size(), param)
    return list(prompt), block_hashes(prompt, model.block_size).tobytes()


class _Run:
    """The choices of one completion request and how they are answered."""

    def __init__(self, choices: Choices, n: int, echoes: list[str], ext: Extensions, response_id: str,
                 model: str) -> None:
        self.choices = choices
        self.generations = choices.all
        self.n = n
        self.echoes = echoes
        self.ext = ext
        self.response_id = response_id
        self.model = model

    def echo(self, index: int) -> str:
        return self.echoes[index // self.n]

    async def unary(self, proto) -> None:
        collected = await collect_all(self.generations)
        if collected is None:
            return  # the client went away
        choices = []
        for index, (generation, whole) in enumerate(zip(self.generations, collected)):
            echo = self.echo(index)
            logprobs = completion_logprobs(generation.tokenizer, whole.logprobs, len(echo)) if whole.logprobs else None
            choices.append(CompletionChoice(index, echo + whole.text, whole.finish_reason, logprobs))
        send_json(proto, 200, Completion(self.response_id, int(time.time()), self.model, choices,
                                         self.choices.usage(), nvext=response_nvext(self.ext, self.generations[0])))

    async def stream(self, writer: StreamWriter, include_usage: bool, prompts: list[list[int]]) -> None:
        created = int(time.time())
        generations = self.generations
        tokenizer = generations[0].tokenizer
        offsets = [len(self.echo(index)) for index in range(len(generations))]
        metrics = [MetricsEvents(g) for g in generations] if self.ext.metrics_events else None

        def chunk(index: int, text: str, finish_reason: str | None, logprobs=None, nvext=msgspec.UNSET) -> bytes:
            choice = CompletionChoice(index, text, finish_reason, logprobs)
            return sse_event(Completion(self.response_id, created, self.model, [choice], None, nvext=nvext))

        text_events = [TextEvent(Completion(self.response_id, created, self.model,
                                            [CompletionChoice(index, TEXT_SLOT, None)], None))
                       for index in range(len(generations))]

        def feed(index: int, delta) -> bytes:
            if not (delta.text or delta.logprobs or delta.finish_reason):
                return b""
            if delta.finish_reason is None and not delta.logprobs and metrics is None:  # the common case
                offsets[index] += len(delta.text)
                return text_events[index](delta.text)
            logprobs = completion_logprobs(tokenizer, delta.logprobs, offsets[index]) if delta.logprobs else None
            offsets[index] += len(delta.text)
            nvext = msgspec.UNSET
            if delta.finish_reason is not None:
                nvext = response_nvext(self.ext, generations[index])
            out = chunk(index, delta.text, delta.finish_reason, logprobs, nvext)
            return metrics[index].event() + out if metrics is not None else out

        head = b"".join(chunk(index, self.echo(index), None) for index in range(len(generations))
                        if self.echo(index))
        if self.ext.annotations:
            head = prompt_annotations(self.ext, generations[0].stream.request_id, prompts, tokenizer) + head
        if head:
            await writer.send(head)
        # a text delta's event, when feed makes nothing more of it (no metrics events, no logprobs offsets to keep)
        plain = text_events[0] if metrics is None and generations[0].request.logprobs is None else None
        if await stream_deltas(writer, generations, feed, sse_error, plain_event=plain) is StreamEnd.CLIENT_GONE:
            return
        tail = b""
        if include_usage:
            tail = sse_event(Completion(self.response_id, created, self.model, [], self.choices.usage()))
        await writer.send(tail + SSE_DONE)
