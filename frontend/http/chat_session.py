"""A chat request from validation to a running generation with its output parsers.

Shared by the three chat front doors: ``/v1/chat/completions`` decodes the client's body, ``/v1/responses``
and ``/v1/messages`` translate theirs into a :class:`ChatCompletionRequest` first. The session validates the
tool fields, renders and tokenizes the prompt, picks the model's parsers (``ApiSettings.parsers_for``),
builds the engine request (a JSON schema for forced tool calls, the reasoning budget) and starts the
:class:`Generation`. :func:`collect` reads a whole generation for the unary answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Awaitable, Mapping

import msgspec

from ..discovery import ServedModel
from ..errors import EngineError, InvalidRequest, ServiceUnavailable
from ..gateway import Gateway
from ..generation import Generation, engine_request, pinned_instance, reject_unsupported
from ..parsers.base import CONTENT, TOOL_CALL, Segment, content, merge
from ..parsers.chain import ParseChain
from ..parsers.context import ParserContext
from ..parsers.forced import forced_response_format
from ..parsers.registry import build_chain
from ..protocol.engine import TokenLogprob
from ..protocol.openai import ChatCompletionRequest, Usage

PROMPT_TAIL_TOKENS = 16  # decoded for the reasoning parsers: did the template open a thinking block?


@dataclass(frozen=True)
class ToolChoice:
    """What the request's ``tools`` / ``tool_choice`` ask for."""

    active: bool = False  # tools are offered to the model (and its output is parsed for calls)
    forced: bool = False  # ``required`` or a named function
    function: str | None = None  # the named function
    definitions: list[dict[str, Any]] = field(default_factory=list)


def tool_choice_of(request: ChatCompletionRequest) -> ToolChoice:
    """Validate ``tools`` and ``tool_choice`` (400 naming the field)."""
    definitions = [msgspec.to_builtins(tool.function) for tool in request.tools or []]
    choice = request.tool_choice
    if choice is None:
        choice = "auto" if definitions else "none"
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            raise InvalidRequest("tool_choice must be none, auto, required or a named function",
                                 param="tool_choice")
        if choice == "required" and not definitions:
            raise InvalidRequest("tool_choice required needs tools", param="tool_choice")
        return ToolChoice(bool(definitions) and choice != "none", choice == "required", None, definitions)
    function = choice.get("function") if choice.get("type") == "function" else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str):
        raise InvalidRequest('a named tool_choice is {"type": "function", "function": {"name": ...}}',
                             param="tool_choice")
    if name not in {definition["name"] for definition in definitions}:
        raise InvalidRequest(f"tool_choice names function `{name}`, which is not in tools", param="tool_choice")
    return ToolChoice(True, True, name, definitions)


class ChatSession:
    """One running chat generation and what its answer needs (parsers, ids, model name)."""

    def __init__(self, generation: Generation, model: ServedModel, request_id: str,
                 chain: ParseChain | None) -> None:
        self.generation = generation
        self.model = model
        self.request_id = request_id
        self.chain = chain

    @property
    def stop_sequence(self) -> str | None:
        """The stop string that ended the output, if one did."""
        pipeline = self.generation.pipeline
        return pipeline.stop.stopped_by if pipeline.stopped_by_string and pipeline.stop is not None else None

    def finish_reason(self, reason: str) -> str:
        """The engine's reason, as ``tool_calls`` when the output ended with calls."""
        if reason == "stop" and self.chain is not None and self.chain.tool_calls:
            return "tool_calls"
        return reason

    def usage(self) -> Usage:
        return self.generation.usage()


async def open_session(gateway: Gateway, request: ChatCompletionRequest, body: bytes, headers: Mapping[str, str],
                       disconnected: Awaitable[None] | None) -> ChatSession:
    """Validate, tokenize and start the generation; ``body`` is the request as JSON for the tokenizer."""
    reject_unsupported(request)
    if not request.messages:
        raise InvalidRequest("messages must contain at least one message", param="messages")
    tools = tool_choice_of(request)
    if tools.forced and request.response_format is not None:
        raise InvalidRequest("response_format cannot be combined with tool_choice required or a named function",
                             param="response_format")
    model = gateway.model(request.model)
    if "chat" not in model.card.model_types:
        raise InvalidRequest(f"model `{model.name}` does not serve chat completions", param="model")
    if not model.instance_ids:  # 503 before tokenizing
        raise ServiceUnavailable(f"no live worker serves model `{model.name}`")
    prompt_ids, block_hashes = await gateway.tokenizer.tokenize(model.card.model_path, "chat", body,
                                                                model.block_size)
    logprobs = (request.top_logprobs or 0) if request.logprobs else None
    engine_req = engine_request(gateway, request, model, prompt_ids,
                                request.max_completion_tokens or request.max_tokens, logprobs)
    if tools.forced:  # for engines with guided decoding
        engine_req.sampling.response_format = forced_response_format(
            tools.definitions, tools.function, request.parallel_tool_calls is not False)
    chain = _parse_chain(gateway, model, request, tools, prompt_ids)
    generation = Generation(gateway, model, request, engine_req, block_hashes, pinned=pinned_instance(request, headers),
                            disconnected=disconnected, parser=chain)
    return ChatSession(generation, model, engine_req.request_id, chain)


def _parse_chain(gateway: Gateway, model: ServedModel, request: ChatCompletionRequest, tools: ToolChoice,
                 prompt_ids: list[int]) -> ParseChain | None:
    tool_parser, reasoning_parser = gateway.settings.apis.parsers_for(model.card)
    if not reasoning_parser and not (tools.active and (tool_parser or tools.forced)):
        return None  # nothing to parse: the plain fast path
    kwargs = request.chat_template_kwargs or {}
    thinking = kwargs.get("enable_thinking")
    tail = model.tokenizer.decode(prompt_ids[-PROMPT_TAIL_TOKENS:], skip_special_tokens=False) \
        if reasoning_parser else ""
    context = ParserContext(tools.definitions, tail, thinking if isinstance(thinking, bool) else None)
    return build_chain(tool_parser, reasoning_parser, context, tools_active=tools.active, forced=tools.forced,
                       forced_function=tools.function, parallel_tool_calls=request.parallel_tool_calls is not False)


@dataclass
class ChatOutcome:
    """A whole generation: merged segments, mapped finish reason, logprobs, stop string, usage."""

    segments: list[Segment]
    finish_reason: str
    logprobs: list[TokenLogprob]
    stop_sequence: str | None
    usage: Usage

    @property
    def text(self) -> str:
        return "".join(segment.text for segment in self.segments if segment.kind == CONTENT)

    def joined(self, kind: int) -> str:
        return "".join(segment.text for segment in self.segments if segment.kind == kind)

    @property
    def tool_calls(self) -> list[Segment]:
        return [segment for segment in self.segments if segment.kind == TOOL_CALL]


async def collect(session: ChatSession) -> ChatOutcome | None:
    """Run the generation to its end (EngineError on a worker error); None when the client went away."""
    segments: list[Segment] = []
    logprobs: list[TokenLogprob] = []
    finish_reason = "stop"
    async for delta in session.generation.deltas():
        if delta.error:
            raise EngineError(delta.error)
        segments.extend(segments_of(delta.segments, delta.text))
        if delta.logprobs:
            logprobs.extend(delta.logprobs)
        if delta.finish_reason is not None:
            finish_reason = delta.finish_reason
    if session.generation.client_gone:
        return None
    return ChatOutcome(merge(segments), session.finish_reason(finish_reason), logprobs, session.stop_sequence,
                       session.usage())


def segments_of(segments: list[Segment] | None, text: str) -> list[Segment]:
    """A delta's segments; a delta without a parser is all content."""
    if segments is not None:
        return segments
    return [content(text)] if text else []
